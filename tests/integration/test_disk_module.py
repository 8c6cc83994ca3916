# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_disk with real qemu-img on real files in private storage roots, on both
backends: create, grow, shrink, linked clones, convert, LUKS, removal, bad input, and the
module through ansible-playbook."""

from __future__ import annotations

import base64
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from queue import Empty

import pytest
from helpers import run_playbook, vm_list
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import QemuImgError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]

MIB = 1 << 20
HOST = "hv-disk-test"
# A file name that QemuOpts would split (',' and '=') and a shell would choke on (quotes).
ODD = "v,file=x'y\"z.img"


@dataclasses.dataclass
class Env:
    service: VmService
    disks: DiskService
    db_url: str
    work: str
    root: str
    outside: str
    key_file: str

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def make_disks(service: VmService, root: str, **kwargs) -> DiskService:
    """Wired as the module wires it."""
    kwargs.setdefault("live_resize", service.resize_attached_disk)
    return DiskService(service.store, service.secret_box, service.hostname, [root], lock_timeout=30, **kwargs)


@pytest.fixture
def env(db_url, monkeypatch):
    monkeypatch.delenv("INFINIVIRT_SECRET_KEY", raising=False)
    work = tempfile.mkdtemp(prefix="iv,d=")
    root, outside = os.path.join(work, "images"), os.path.join(work, "outside")
    os.makedirs(root)
    os.makedirs(outside)
    key_file = os.path.join(work, "keys", "secret.key")
    service = VmService.open(
        db_url,
        os.path.join(work, "run"),
        hostname=HOST,
        secret_key_file=key_file,
        storage_roots=[root],
        lock_timeout=30,
    )
    yield Env(service, make_disks(service, root), db_url, work, root, outside, key_file)
    for vm in vm_list(service):
        service.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
    service.close()
    leaked = kill_leftovers(work)
    shutil.rmtree(work, ignore_errors=True)
    assert leaked == [], "QEMU processes outlived the test"


def ensure(env: Env, check_mode: bool = False, **params):
    return env.disks.ensure(params, check_mode)


def qemu_info(path, fmt=None):
    args = ["qemu-img", "info", "--output=json", "-U"] + (["-f", fmt] if fmt else []) + [path]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def snapshot(*dirs):
    """Every file under ``dirs`` with its size and mtime: proof that nothing changed."""
    seen = {}
    for top in dirs:
        for base, _dirs, files in os.walk(top):
            for name in files:
                full = os.path.join(base, name)
                st = os.lstat(full)
                seen[full] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return seen


def database_bytes(db_url):
    """The whole database as bytes: the SQLite files, or a pg_dump."""
    if db_url.startswith("sqlite"):
        path = db_url[len("sqlite:///") :]
        return b"".join(open(p, "rb").read() for p in glob.glob(path + "*") if os.path.isfile(p))
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    return subprocess.run([pg_dump, db_url], capture_output=True, check=True).stdout


def qemu_io(path, driver, command, key=None):
    """Run a qemu-io command on an image (an encrypted one opened with ``key``)."""
    args = ["qemu-io"]
    with tempfile.TemporaryDirectory() as tmp:
        if key is not None:
            key_path = os.path.join(tmp, "k")
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
                fh.write(key)
            node = {"driver": driver, "file": {"driver": "file", "filename": path}}
            if driver == "luks":
                node["key-secret"] = "k0"
            else:
                node["encrypt"] = {"key-secret": "k0"}
            args += [
                "--object",
                json.dumps({"qom-type": "secret", "id": "k0", "file": key_path}),
                "json:" + json.dumps(node),
            ]
        else:
            args += ["-f", driver, path]
        done = subprocess.run(args + ["-c", command], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "error" not in done.stdout.lower() + done.stderr.lower(), done.stdout + done.stderr
    return done.stdout


def write_pattern(path, driver, key=None):
    qemu_io(path, driver, "write -P 0xa5 1M 64k", key)


def has_pattern(path, driver, key=None):
    out = qemu_io(path, driver, "read -P 0xa5 1M 64k", key)
    return "Pattern verification failed" not in out


# -- create, idempotence, check mode --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_create_is_predicted_then_idempotent(env, fmt):
    path = env.path("new-%s.img" % fmt)
    params = dict(path=path, format=fmt, size="64M")
    predicted = ensure(env, True, **params)
    assert predicted["changed"] and not os.path.exists(path)
    assert env.service.store.get_volume(path) is None, "check mode wrote no row"
    assert predicted["volume"]["virtual_size"] == 64 * MIB and predicted["volume"]["actual_size"] is None

    made = ensure(env, **params)
    assert made["changed"] and made["diff"] == predicted["diff"]
    assert made["diff"]["before"] == {"path": path, "state": "absent"}
    assert made["diff"]["after"] == {
        "path": path,
        "state": "present",
        "format": fmt,
        "size": 64 * MIB,
        "encrypted": False,
        "backing_file": None,
        "backing_format": None,
        "managed": True,
    }
    info = qemu_info(path)
    assert (info["format"], info["virtual-size"]) == (fmt, 64 * MIB)
    assert made["volume"]["info"]["virtual-size"] == 64 * MIB and made["volume"]["host"] == HOST
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    row = env.service.store.get_volume(path)
    assert (row.format, row.encrypted, row.host) == (fmt, False, HOST)

    for check_mode in (True, False):
        again = ensure(env, check_mode, **params)
        assert not again["changed"] and again["diff"]["before"] == again["diff"]["after"]
    # Unset options keep the volume as it is.
    assert not ensure(env, path=path)["changed"]


def test_default_format_is_qcow2_and_preallocation_is_honoured(env):
    path = env.path("full.qcow2")
    made = ensure(env, path=path, size="8M", preallocation="full")
    assert made["volume"]["format"] == "qcow2" and qemu_info(path)["format"] == "qcow2"
    assert made["volume"]["actual_size"] >= 8 * MIB, "full preallocation wrote the data out"
    raw = env.path("falloc.raw")
    ensure(env, path=raw, format="raw", size="8M", preallocation="falloc")
    assert os.stat(raw).st_blocks * 512 >= 8 * MIB
    assert not ensure(env, path=path, size="8M", preallocation="off")["changed"], "preallocation alone is not a change"


# -- grow and shrink ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_grow_and_shrink(env, fmt):
    path = env.path("grow.%s" % fmt)
    ensure(env, path=path, format=fmt, size="64M")
    write_pattern(path, fmt)

    predicted = ensure(env, True, path=path, size="128M")
    assert predicted["changed"] and qemu_info(path)["virtual-size"] == 64 * MIB
    assert predicted["diff"]["before"]["size"] == 64 * MIB and predicted["diff"]["after"]["size"] == 128 * MIB
    grown = ensure(env, path=path, size="128M")
    assert grown["changed"] and grown["diff"] == predicted["diff"]
    assert qemu_info(path)["virtual-size"] == 128 * MIB and grown["volume"]["virtual_size"] == 128 * MIB
    assert grown["volume"]["attached_to"] is None, "no VM has it: grown offline"
    assert not ensure(env, True, path=path, size="128M")["changed"]
    assert not ensure(env, path=path, size="0.125G")["changed"], "same size, other spelling"

    before = snapshot(env.root)
    with pytest.raises(SpecError) as err:
        ensure(env, path=path, size="32M")
    assert err.value.field == "size" and "force: true" in str(err.value) and "128M" in str(err.value)
    assert snapshot(env.root) == before

    assert ensure(env, True, path=path, size="96M", force=True)["changed"]
    assert qemu_info(path)["virtual-size"] == 128 * MIB
    shrunk = ensure(env, path=path, size="96M", force=True)
    assert shrunk["changed"] and qemu_info(path)["virtual-size"] == 96 * MIB
    assert any("data beyond the new end is lost" in w for w in shrunk["warnings"])
    assert has_pattern(path, fmt), "data below the new end survived"
    assert not ensure(env, path=path, size="96M", force=True)["changed"]


# -- linked clones ----------------------------------------------------------------------------


def test_linked_clone(env):
    base = env.path("base,os=1.qcow2")
    ensure(env, path=base, size="32M")
    write_pattern(base, "qcow2")
    clone = env.path("clone.qcow2")

    predicted = ensure(env, True, path=clone, backing_file=base)
    assert predicted["changed"] and not os.path.exists(clone)
    made = ensure(env, path=clone, backing_file=base)
    assert made["diff"] == predicted["diff"]
    info = qemu_info(clone)
    assert info["full-backing-filename"] == base and info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 32 * MIB, "the size comes from the backing file"
    assert made["volume"]["backing_file"] == base and made["volume"]["backing_format"] == "qcow2"
    assert has_pattern(clone, "qcow2"), "the clone reads the base's data"
    assert not ensure(env, path=clone, backing_file=base)["changed"]
    assert not ensure(env, path=clone, backing_file=base, backing_format="qcow2")["changed"]

    # A bigger clone, and a raw base.
    big = ensure(env, path=env.path("big.qcow2"), backing_file=base, size="64M")
    assert big["volume"]["virtual_size"] == 64 * MIB
    raw_base = env.path("base.raw")
    ensure(env, path=raw_base, format="raw", size="16M")
    raw_clone = ensure(env, path=env.path("rawclone.qcow2"), backing_file=raw_base)
    assert raw_clone["volume"]["backing_format"] == "raw"

    other = env.path("other.qcow2")
    ensure(env, path=other, size="1M")
    before = snapshot(env.root)
    with pytest.raises(SpecError) as err:
        ensure(env, path=clone, backing_file=other)
    assert err.value.field == "backing_file" and "cannot be changed" in str(err.value)
    with pytest.raises(SpecError) as err:
        ensure(env, path=clone, backing_file=base, backing_format="raw")
    assert err.value.field == "backing_format"
    # The base cannot go while a clone uses it.
    with pytest.raises(StateError, match="backing file of .*clone.qcow2"):
        ensure(env, path=base, state="absent")
    assert snapshot(env.root) == before


@pytest.mark.parametrize(
    "params,field,phrase",
    [
        ({"backing_file": "ROOT/missing.qcow2"}, "backing_file", "does not exist"),
        ({"backing_file": "OUTSIDE/base.qcow2"}, "backing_file", "outside the storage roots"),
        ({"backing_file": "ROOT/link-out.qcow2"}, "backing_file", "resolves to"),
        ({"backing_file": "ROOT/base.qcow2", "format": "raw"}, "backing_file", "needs format qcow2"),
        ({"backing_file": "ROOT/base.qcow2", "encrypt": True}, "encrypt", "backing_file"),
        ({"backing_file": "ROOT/base.qcow2", "preallocation": "full"}, "preallocation", "linked clone"),
        ({"backing_file": "ROOT/new.qcow2"}, "backing_file", "does not exist"),
        ({"backing_format": "qcow2", "size": "1M"}, "backing_format", "needs backing_file"),
    ],
)
def test_bad_clones_change_nothing(env, params, field, phrase):
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(env.outside, "base.qcow2"), "1M"], check=True
    )
    ensure(env, path=env.path("base.qcow2"), size="1M")
    os.symlink(os.path.join(env.outside, "base.qcow2"), env.path("link-out.qcow2"))
    params = {
        k: v.replace("ROOT", env.root).replace("OUTSIDE", env.outside) if isinstance(v, str) else v
        for k, v in params.items()
    }
    before = snapshot(env.root, env.outside)
    rows = env.service.store.list_volumes()
    with pytest.raises(SpecError) as err:
        ensure(env, path=env.path("new.qcow2"), **params)
    assert err.value.field == field and phrase in str(err.value), str(err.value)
    assert snapshot(env.root, env.outside) == before
    assert env.service.store.list_volumes() == rows


# -- convert ----------------------------------------------------------------------------------


def test_convert_in_place(env):
    path = env.path(ODD)
    ensure(env, path=path, size="16M")
    write_pattern(path, "qcow2")
    os.chmod(path, 0o640)
    before = snapshot(env.root)
    with pytest.raises(SpecError) as err:
        ensure(env, path=path, format="raw")
    assert err.value.field == "format" and "convert: true" in str(err.value)
    predicted = ensure(env, True, path=path, format="raw", convert=True)
    assert predicted["changed"] and snapshot(env.root) == before
    converted = ensure(env, path=path, format="raw", convert=True)
    assert converted["diff"] == predicted["diff"]
    assert converted["diff"]["before"]["format"] == "qcow2" and converted["diff"]["after"]["format"] == "raw"
    assert qemu_info(path)["format"] == "raw" and qemu_info(path)["virtual-size"] == 16 * MIB
    assert has_pattern(path, "raw")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, "the mode survives the rename"
    assert os.listdir(env.root) == [ODD], "no temporary file is left"
    assert env.service.store.get_volume(path).format == "raw"
    assert not ensure(env, path=path, format="raw", convert=True)["changed"]

    # Back to qcow2 and grown, in one task.
    both = ensure(env, path=path, format="qcow2", convert=True, size="32M")
    assert both["changed"] and qemu_info(path)["format"] == "qcow2"
    assert qemu_info(path)["virtual-size"] == 32 * MIB and has_pattern(path, "qcow2")


def test_converting_a_clone_flattens_it(env):
    base = env.path("base.qcow2")
    ensure(env, path=base, size="8M")
    write_pattern(base, "qcow2")
    clone = env.path("clone.qcow2")
    ensure(env, path=clone, backing_file=base)
    flat = ensure(env, path=clone, format="raw", convert=True)
    assert flat["volume"]["backing_file"] is None and any("backing file" in w for w in flat["warnings"])
    assert has_pattern(clone, "raw")
    ensure(env, path=base, state="absent")  # no clone needs it any more
    assert has_pattern(clone, "raw")


# -- LUKS -------------------------------------------------------------------------------------

QEMU_IMG_LOGGER = r"""#!%(python)s
import json, os, stat, sys, hashlib
record = {"argv": sys.argv[1:], "cmdline": open("/proc/self/cmdline", "rb").read().decode("utf-8", "replace"),
          "secrets": []}
for i, arg in enumerate(sys.argv):
    if arg == "--object":
        obj = json.loads(sys.argv[i + 1])
        entry = {"object": obj}
        if "file" in obj:
            entry.update(target=os.readlink(obj["file"]),
                         sha256=hashlib.sha256(open(obj["file"], "rb").read()).hexdigest())
        record["secrets"].append(entry)
with open(%(log)r, "a") as fh:
    fh.write(json.dumps(record) + "\n")
os.execv(%(real)r, ["qemu-img"] + sys.argv[1:])
"""


def logging_qemu_img(env):
    """A qemu-img that records its argv and the secret files it is handed, then runs the real one."""
    log = os.path.join(env.work, "qemu-img.log")
    wrapper = os.path.join(env.work, "qemu-img-logger")
    with open(wrapper, "w") as fh:
        fh.write(QEMU_IMG_LOGGER % {"python": sys.executable, "log": log, "real": shutil.which("qemu-img")})
    os.chmod(wrapper, 0o700)
    return wrapper, log


class CmdlineWatch:
    """Scan every process's /proc/PID/cmdline while a block runs, for a text."""

    def __init__(self, needle: str):
        self.needle = needle.encode()
        self.hits = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    with open(path, "rb") as fh:
                        if self.needle in fh.read():
                            self.hits.append(path)
                except OSError:
                    pass
            self.scans += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("fmt,driver", [("qcow2", "qcow2"), ("raw", "luks")])
@pytest.mark.both_backends  # the store is the subject
def test_luks_volume(env, fmt, driver):
    wrapper, log = logging_qemu_img(env)
    env.disks = make_disks(env.service, env.root, qemu_img=wrapper)
    path = env.path("secret,%s=1.img" % fmt)
    params = dict(path=path, format=fmt, size="32M", encrypt=True)

    assert ensure(env, True, **params)["changed"]
    assert not os.path.exists(path) and not os.path.exists(env.key_file), "check mode made no key"
    made = ensure(env, **params)
    key = read_luks_key(env.service.store, env.service.secret_box, path)
    assert key and len(key) == 44, "32 random bytes in base64"
    assert made["volume"]["encrypted"] is True and made["diff"]["after"]["encrypted"] is True
    info = qemu_info(path)
    assert info["format"] == driver and info["encrypted"] is True and info["virtual-size"] == 32 * MIB
    if fmt == "qcow2":
        assert info["format-specific"]["data"]["encrypt"]["format"] == "luks"
    write_pattern(path, driver, key)
    assert not ensure(env, **params)["changed"]

    # Grow offline with the key, then convert to the other format: same key, same data.
    with CmdlineWatch(key) as watch:
        grown = ensure(env, path=path, size="48M")
        other = "raw" if fmt == "qcow2" else "qcow2"
        converted = ensure(env, path=path, format=other, convert=True)
    assert grown["changed"] and converted["changed"] and watch.scans > 0
    assert watch.hits == [], "the LUKS key appeared on a command line"
    info = qemu_info(path)
    assert info["virtual-size"] == 48 * MIB and info["encrypted"] is True
    assert info["format"] == ("luks" if other == "raw" else "qcow2")
    assert has_pattern(path, "luks" if other == "raw" else "qcow2", key)
    assert read_luks_key(env.service.store, env.service.secret_box, path) == key

    # Every qemu-img run got the key only as an inherited memory-only descriptor: no file.
    runs = [json.loads(line) for line in open(log)]
    keyed = [r for r in runs if r["secrets"]]
    assert len(keyed) >= 3, runs  # create, resize, convert
    for run in runs:
        assert key not in run["cmdline"] and key not in json.dumps(run["argv"])
    for run in keyed:
        for secret in run["secrets"]:
            assert set(secret["object"]) == {"qom-type", "id", "file", "format"}, "never data="
            assert secret["object"]["file"].startswith("/proc/self/fd/")
            assert secret["target"].startswith(("/memfd:", "pipe:")), secret["target"]
            assert secret["sha256"] == hashlib.sha256(key.encode()).hexdigest()

    # The key is sealed in the database; neither it nor its bytes are there in the clear.
    dump = database_bytes(env.db_url)
    assert key.encode() not in dump and base64.b64decode(key) not in dump
    assert b"iv1:" in dump
    assert key not in repr(made) + repr(grown) + repr(converted)

    # Encryption cannot be switched off, nor on for a plain volume.
    plain = env.path("plain.qcow2")
    ensure(env, path=plain, size="1M")
    before = snapshot(env.root)
    with pytest.raises(SpecError) as err:
        ensure(env, path=path, encrypt=False)
    assert err.value.field == "encrypt" and "cannot be changed" in str(err.value)
    with pytest.raises(SpecError, match="encrypt: cannot be changed"):
        ensure(env, path=plain, encrypt=True)
    assert snapshot(env.root) == before

    # Removing the volume removes its key.
    ensure(env, path=path, state="absent")
    assert env.service.store.get_secret(path, "luks_key") is None and not os.path.exists(path)


def test_a_foreign_encrypted_image_is_not_adopted(env):
    path = env.path("foreign.luks")
    with tempfile.TemporaryDirectory() as tmp:
        key = os.path.join(tmp, "k")
        with open(key, "w") as fh:
            fh.write("someone else's key")
        for _attempt in range(10):  # qemu 7.2's PBKDF timing check fails now and then
            done = subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "luks",
                    "--object",
                    "secret,id=s0,file=%s" % key,
                    "-o",
                    "key-secret=s0,iter-time=10",
                    path,
                    "1M",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                break
    assert os.path.exists(path), done.stderr
    with pytest.raises(SpecError, match="path: .*encrypted image that Infinivirt did not create"):
        ensure(env, path=path)
    assert env.service.store.list_volumes() == []


# -- odd paths, bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [ODD, "a,b.qcow2", "quote'd.img", 'dq"x.img', "k=v,driver=raw.img", "json:{x}.img", "sp ace.img"]
)
def test_odd_names_work(env, name):
    path = env.path(name)
    made = ensure(env, path=path, size="1M")
    assert made["volume"]["path"] == path and qemu_info(path)["virtual-size"] == MIB
    assert sorted(os.listdir(env.root)) == [name], "exactly that file, nothing else"
    assert ensure(env, path=path, size="2M")["changed"] and qemu_info(path)["virtual-size"] == 2 * MIB
    assert not ensure(env, path=path, size="2M")["changed"]
    ensure(env, path=path, state="absent")
    assert os.listdir(env.root) == []


def test_odd_names_work_encrypted_and_as_backing_file(env):
    base = env.path("b,x=1'\"q.qcow2")
    ensure(env, path=base, size="1M")
    clone = ensure(env, path=env.path("c,y=2.qcow2"), backing_file=base)
    assert qemu_info(clone["volume"]["path"])["full-backing-filename"] == base
    enc = env.path("e,driver=raw,file.filename=x.img")
    ensure(env, path=enc, size="1M", encrypt=True)
    assert ensure(env, path=enc, size="2M")["changed"]
    assert qemu_info(enc)["virtual-size"] == 2 * MIB
    assert sorted(os.listdir(env.root)) == sorted(os.path.basename(p) for p in (base, clone["volume"]["path"], enc))


@pytest.mark.parametrize(
    "params,field,phrase",
    [
        ({"path": "OUTSIDE/x.qcow2", "size": "1M"}, "path", "outside the storage roots"),
        ({"path": "ROOT/../outside/x.qcow2", "size": "1M"}, "path", "outside the storage roots"),
        ({"path": "ROOT/../images-2/x.qcow2", "size": "1M"}, "path", "outside the storage roots"),
        ({"path": "ROOT/out-dir/x.qcow2", "size": "1M"}, "path", "resolves to"),
        ({"path": "ROOT/out-file.qcow2", "size": "1M"}, "path", "resolves to"),
        ({"path": "images/x.qcow2", "size": "1M"}, "path", "absolute path"),
        ({"path": "ROOT/x\n.qcow2", "size": "1M"}, "path", "control characters"),
        ({"path": "ROOT/", "size": "1M"}, "path", "must name a file"),
        ({"path": "ROOT/nodir/x.qcow2", "size": "1M"}, "path", "does not exist"),
        ({"path": "ROOT/x.qcow2"}, "size", "is required"),
        ({"path": "ROOT/x.qcow2", "size": "10X"}, "size", "must be a size"),
        ({"path": "ROOT/x.qcow2", "size": "1000"}, "size", "multiple of 512"),
        ({"path": "ROOT/x.qcow2", "size": "0"}, "size", "greater than zero"),
        ({"path": "ROOT/x.qcow2", "size": "1M", "format": "vmdk"}, "format", "must be one of qcow2, raw"),
        ({"path": "ROOT/x.qcow2", "size": "1M", "preallocation": "sparse"}, "preallocation", "must be one of"),
        (
            {"path": "ROOT/x.raw", "size": "1M", "format": "raw", "preallocation": "metadata"},
            "preallocation",
            "metadata needs format qcow2",
        ),
        ({"path": "ROOT/x.qcow2", "size": "1M", "state": "gone"}, "state", "must be one of"),
        ({"path": "ROOT/x.qcow2", "size": "1M", "encrypt": "yes"}, "encrypt", "true or false"),
    ],
)
def test_bad_input_changes_nothing(env, params, field, phrase):
    os.symlink(env.outside, env.path("out-dir"))
    os.symlink(os.path.join(env.outside, "target.qcow2"), env.path("out-file.qcow2"))
    os.makedirs(os.path.join(env.work, "images-2"))
    params = {
        k: v.replace("ROOT", env.root).replace("OUTSIDE", env.outside) if isinstance(v, str) else v
        for k, v in params.items()
    }
    before = snapshot(env.work)
    with pytest.raises(SpecError) as err:
        ensure(env, **params)
    assert err.value.field == field and phrase in str(err.value), str(err.value)
    assert str(err.value).startswith(field + ": ")
    assert snapshot(env.work) == before
    assert env.service.store.list_volumes() == []
    assert not os.path.exists(env.key_file)


@pytest.mark.parametrize("roots", [[], ["relative"], ["/nonexistent/iv-root"]])
def test_bad_storage_roots(env, roots):
    disks = DiskService(env.service.store, env.service.secret_box, HOST, roots)
    with pytest.raises(SpecError) as err:
        disks.ensure({"path": env.path("x.qcow2"), "size": "1M"}, False)
    assert err.value.field == "storage_roots"
    assert os.listdir(env.root) == []


def test_changes_to_an_existing_volume_that_are_refused(env):
    path = env.path("v.qcow2")
    ensure(env, path=path, size="4M")
    before = snapshot(env.root)
    for params, field in [
        ({"format": "raw"}, "format"),
        ({"size": "2M"}, "size"),
        ({"encrypt": True}, "encrypt"),
        ({"backing_file": env.path("v.qcow2")}, "backing_file"),
        ({"format": "raw", "convert": True, "preallocation": "metadata"}, "preallocation"),
    ]:
        with pytest.raises(SpecError) as err:
            ensure(env, path=path, **params)
        assert err.value.field == field, (params, str(err.value))
    assert snapshot(env.root) == before
    assert env.service.store.get_volume(path).format == "qcow2"


# -- absent, adoption, other hosts -----------------------------------------------------------


def test_absent(env):
    path = env.path("gone.qcow2")
    ensure(env, path=path, size="1M")
    predicted = ensure(env, True, path=path, state="absent")
    assert predicted["changed"] and os.path.exists(path) and env.service.store.get_volume(path)
    removed = ensure(env, path=path, state="absent")
    assert removed["changed"] and removed["diff"] == predicted["diff"]
    assert removed["diff"]["before"]["state"] == "present" and removed["diff"]["after"]["state"] == "absent"
    assert not os.path.exists(path) and env.service.store.get_volume(path) is None
    assert removed["volume"] == {"path": path, "state": "absent"}
    for check_mode in (True, False):
        assert not ensure(env, check_mode, path=path, state="absent")["changed"]

    # A file Infinivirt did not create, and a row whose file is gone.
    stray = env.path("stray.img")
    open(stray, "wb").close()
    assert ensure(env, path=stray, state="absent")["changed"] and not os.path.exists(stray)
    ghost = env.path("ghost.qcow2")
    ensure(env, path=ghost, size="1M")
    os.unlink(ghost)
    assert ensure(env, path=ghost, state="absent")["changed"] and env.service.store.get_volume(ghost) is None
    # Outside the roots: refused before anything is looked at.
    victim = os.path.join(env.outside, "keep.img")
    open(victim, "wb").close()
    with pytest.raises(SpecError, match="^path: "):
        ensure(env, path=os.path.join(env.root, "..", "outside", "keep.img"), state="absent")
    assert os.path.exists(victim)


def test_an_existing_image_is_adopted(env):
    path = env.path("byhand.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "8M"], check=True)
    predicted = ensure(env, True, path=path)
    assert predicted["changed"] and env.service.store.get_volume(path) is None
    assert predicted["diff"]["before"]["managed"] is False and predicted["diff"]["after"]["managed"] is True
    adopted = ensure(env, path=path)
    assert adopted["changed"] and adopted["diff"] == predicted["diff"]
    assert env.service.store.get_volume(path).format == "qcow2"
    assert not ensure(env, path=path, size="8M", format="qcow2")["changed"]

    # Another format is imported with convert: true.
    vmdk = env.path("import.vmdk")
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", vmdk, "4M"], check=True)
    with pytest.raises(SpecError, match="format: .* is a vmdk image"):
        ensure(env, path=vmdk)
    imported = ensure(env, path=vmdk, format="qcow2", convert=True)
    assert imported["changed"] and qemu_info(vmdk)["format"] == "qcow2"
    assert env.service.store.get_volume(vmdk).format == "qcow2"


def test_a_volume_of_another_host(env):
    path = env.path("shared.qcow2")
    ensure(env, path=path, size="1M")
    other = DiskService(env.service.store, env.service.secret_box, "hv-other", [env.root])
    assert not other.ensure({"path": path, "size": "1M"}, False)["changed"], "reading is fine"
    for params in ({"path": path, "size": "2M"}, {"path": path, "state": "absent"}):
        with pytest.raises(StateError, match="recorded for host %s" % HOST):
            other.ensure(params, False)
    assert qemu_info(path)["virtual-size"] == MIB and os.path.exists(path)


def _create_in_child(db_url, root, key_file, path, queue):
    service = VmService.open(
        db_url,
        os.path.join(os.path.dirname(root), "run"),
        hostname=HOST,
        secret_key_file=key_file,
        storage_roots=[root],
        lock_timeout=60,
    )
    try:
        result = make_disks(service, root).ensure({"path": path, "size": "4M", "encrypt": True}, False)
        queue.put(("ok", result["changed"]))
    except Exception as exc:  # reported to the parent
        queue.put(("error", repr(exc)))
    finally:
        service.close()


@pytest.mark.both_backends  # the store is the subject
def test_concurrent_creates_make_one_volume_with_one_key(env):
    path = env.path("race.img")
    env.service.secret_box()  # make the key file once, as a first run would
    queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_create_in_child, args=(env.db_url, env.root, env.key_file, path, queue))
        for _i in range(6)
    ]
    for proc in procs:
        proc.start()
    results, deadline = [], time.monotonic() + 300
    while len(results) < len(procs):  # fail fast if a child dies without a word
        try:
            results.append(queue.get(timeout=1))
        except Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            assert not dead and time.monotonic() < deadline, "children failed: %s" % dead
    for proc in procs:
        proc.join(30)
    assert all(kind == "ok" for kind, _c in results), results
    assert sorted(changed for _k, changed in results) == [False] * 5 + [True]
    key = read_luks_key(env.service.store, env.service.secret_box, path)
    qemu_io(path, "qcow2", "read 0 512", key)  # the file opens with the one stored key
    assert len(env.service.store.list_volumes()) == 1


# -- check and use the same file (issue 10) ---------------------------------------------------


class _Swapper:
    """Swaps ``root/sub`` between the real directory and a symlink to ``outside`` (os.rename of
    prepared entries; each swap leaves a short gap with no ``sub``), until stopped or after
    ``limit`` swaps or ``seconds``, whichever comes first. Ends with the real directory back."""

    def __init__(self, root, outside, limit=200000, seconds=90.0):
        self.sub = os.path.join(root, "sub")
        self.parked_dir = os.path.join(root, "sub.dir")
        self.parked_link = os.path.join(root, "sub.link")
        os.symlink(outside, self.parked_link)
        self.limit, self.seconds, self.swaps = limit, seconds, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.seconds
        rng = random.Random(10)
        while not self._stop.is_set() and self.swaps < self.limit and time.monotonic() < deadline:
            os.rename(self.sub, self.parked_dir)
            os.rename(self.parked_link, self.sub)  # sub -> outside, briefly
            time.sleep(rng.uniform(0, 0.002))
            os.rename(self.sub, self.parked_link)
            os.rename(self.parked_dir, self.sub)  # sub is the real directory again, longer
            self.swaps += 1
            time.sleep(rng.uniform(0.001, 0.02))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


CLEAR_RACE_ERRORS = ("changed while in use", "outside the storage roots", "does not exist")


def _outside_state(outside):
    """What is outside the roots: names, and the decoy's bytes (hashed) and mtime."""
    state = {}
    for name in sorted(os.listdir(outside)):
        full = os.path.join(outside, name)
        st = os.lstat(full)
        with open(full, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        state[name] = (digest, st.st_mtime_ns, st.st_size)
    return state


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_symlink_swap_race_never_reaches_outside_the_roots(env):
    """Someone who can write in a storage root swaps a directory on the volume's path for a
    symlink to a directory outside the roots, again and again, while volumes are created and
    removed under it: each operation either works inside the root or fails with a clear error,
    and nothing outside the roots is created, changed or removed."""
    sub = os.path.join(env.root, "sub")
    os.makedirs(sub)
    decoy = os.path.join(env.outside, "decoy.img")
    with open(decoy, "wb") as fh:
        fh.write(b"not an image, must stay as it is\n" * 100)
    os.utime(decoy, ns=(10**18, 10**18))
    original = _outside_state(env.outside)
    real_dir = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)  # the real directory, wherever it is parked
    disks = make_disks(env.service, env.root, live_resize=None)
    ops, ok, refused, unclear, escapes, seen, missed_absent = 0, 0, [], [], [], original, 0
    started = time.monotonic()
    try:
        with _Swapper(env.root, env.outside) as swapper:
            for i in range(100):
                name = "decoy.img" if i % 2 == 0 else "v%d.qcow2" % i
                path = os.path.join(sub, name)
                for params in ({"path": path, "size": "1M"}, {"path": path, "state": "absent"}):
                    ops += 1
                    try:
                        disks.ensure(params, False)
                    except Exception as exc:  # noqa: BLE001 - sorted into clear and unclear below
                        message = str(exc)
                        clear = (
                            isinstance(exc, (SpecError, StateError))
                            and getattr(exc, "field", "path") == "path"
                            and (path in message or sub in message)
                            and any(phrase in message for phrase in CLEAR_RACE_ERRORS)
                        )
                        (refused if clear else unclear).append("%s: %s" % (type(exc).__name__, message))
                    else:
                        ok += 1
                        present = name in os.listdir(real_dir)
                        if params.get("state") == "absent" and present:
                            # Known limit: in the instant between two renames 'sub' does not
                            # exist, which reads as "no such volume" (as a missing directory
                            # always has); the file stays inside the root, untouched.
                            missed_absent += 1
                        elif present != (params.get("state") != "absent"):
                            unclear.append("%r reported done but not done inside the root" % params)
                    now = _outside_state(env.outside)
                    if now != seen:
                        escapes.append((ops, params.get("state", "present"), name))
                        seen = now
        swaps = swapper.swaps
    finally:
        os.close(real_dir)
    elapsed = time.monotonic() - started
    report = (
        "%d operations, %d swaps in %.1f s: %d done (%d absent while sub was missing), %d refused, "
        "%d unclear %s, %d reached outside the roots %s"
        % (
            ops,
            swaps,
            elapsed,
            ok,
            missed_absent,
            len(refused),
            len(unclear),
            unclear[:3],
            len(escapes),
            escapes[:10],
        )
    )
    print(report)
    assert escapes == [] and _outside_state(env.outside) == original, report
    assert unclear == [], report
    assert swaps > 20 and ok > 0, report  # the race did run, and not everything was refused


# -- with a running VM ----------------------------------------------------------------------


def test_a_volume_attached_to_a_running_vm(env):
    path = env.path("attached,x=1.qcow2")
    ensure(env, path=path, size="16M")
    vm = {"name": "holder", "state": "paused", "accel": "tcg", "memory_mb": 32, "disks": [{"path": path}]}
    env.service.ensure(vm, False)

    # Grow: live, through the VM's QMP, and the guest-visible size changes.
    grown = ensure(env, path=path, size="32M")
    assert grown["changed"] and grown["volume"]["attached_to"] == "holder"
    assert grown["volume"]["used_by"] == ["holder"]
    rec = records.load(env.service.store, "holder")
    blocks = env.service.engine.sessions.qmp(rec, "query-block")
    # QEMU opened the image through a descriptor set (/dev/fdset/N), not by its name.
    opened = {"/dev/fdset/%d" % s["fdset-id"] for s in env.service.engine.sessions.qmp(rec, "query-fdsets")}
    sizes = [b["inserted"]["image"]["virtual-size"] for b in blocks if b.get("inserted", {}).get("file") in opened]
    assert sizes == [32 * MIB]
    assert qemu_info(path)["virtual-size"] == 32 * MIB
    assert not ensure(env, path=path, size="32M")["changed"]

    # Offline operations are refused: named VM, or QEMU's image lock.
    before = snapshot(env.root)
    with pytest.raises(StateError, match="VM holder"):
        ensure(env, path=path, format="raw", convert=True)
    with pytest.raises(StateError, match="VM holder"):
        ensure(env, path=path, state="absent")
    with pytest.raises(QemuImgError, match="in use by another process"):
        ensure(env, path=path, size="16M", force=True)
    assert snapshot(env.root) == before and qemu_info(path)["virtual-size"] == 32 * MIB

    # Without the VM, the same shrink works.
    env.service.ensure({"name": "holder", "state": "absent", "force": True, "stop_timeout": 1}, False)
    shrunk = ensure(env, path=path, size="16M", force=True)
    assert shrunk["changed"] and shrunk["volume"]["used_by"] == [] and qemu_info(path)["virtual-size"] == 16 * MIB

    # A process Infinivirt does not know holds an image: removal is refused too.
    loose = env.path("loose.qcow2")
    ensure(env, path=loose, size="1M")
    # -pidfile is a whole argument, so the test's dir (with ',' and '=') can mark the process.
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "q35,accel=tcg",
            "-blockdev",
            json.dumps({"driver": "qcow2", "node-name": "d0", "file": {"driver": "file", "filename": loose}}),
            "-device",
            "virtio-blk-pci,drive=d0",
            "-pidfile",
            os.path.join(env.work, "loose.pid"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # until QEMU holds the image lock
            assert proc.poll() is None, proc.stderr.read()
            probe = subprocess.run(["qemu-img", "info", "-f", "qcow2", loose], capture_output=True, check=False)
            if probe.returncode != 0:
                break
            assert time.monotonic() < deadline, "QEMU never locked the image"
            time.sleep(0.1)
        with pytest.raises(StateError, match="in use by another process"):
            ensure(env, path=loose, state="absent")
        assert os.path.exists(loose)
    finally:
        proc.kill()
        proc.wait()
    assert ensure(env, path=loose, state="absent")["changed"]


# -- the module, through ansible-playbook ----------------------------------------------------


def test_module_four_step_pattern(tmp_path):
    work = tempfile.mkdtemp(prefix="iv,pb=")
    try:
        root = os.path.join(work, "images")
        os.makedirs(root)
        done = run_playbook(
            "disk_volume.yml",
            {
                "db_url": "sqlite:///%s/pb.db" % work,
                "run_dir": os.path.join(work, "run"),
                "key_file": str(tmp_path / "secret.key"),
                "root": root,
                "volume": os.path.join(root, "pb,x='1'.qcow2"),
                "outside": os.path.join(work, "escape.qcow2"),
            },
            verbosity=1,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "DISK_PLAYBOOK_OK" in done.stdout and "failed=0" in done.stdout
        assert os.listdir(root) == [] and not os.path.exists(os.path.join(work, "escape.qcow2"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_an_adopted_overlay_with_a_relative_backing_name_grows_and_flattens(env):
    """Volumes are reached by descriptor (/proc/self/fd/N), next to which a relative backing
    name in the header would not be found: the chain is given explicitly or not needed."""
    base, overlay = env.path("rel-base.qcow2"), env.path("rel-over.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "8M"], check=True)
    write_pattern(base, "qcow2")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.basename(base), "-F", "qcow2", overlay],
        check=True,
        cwd=os.path.dirname(overlay),
    )
    grown = ensure(env, path=overlay, size="16M")
    assert grown["changed"] and qemu_info(overlay)["virtual-size"] == 16 * MIB
    assert qemu_info(overlay)["backing-filename"] == os.path.basename(base), "the header keeps its name"
    flat = ensure(env, path=overlay, format="raw", convert=True)
    assert flat["changed"] and flat["volume"]["backing_file"] is None
    assert has_pattern(overlay, "raw"), "the backing image's data came along"


def _killed_at(env, method, params):
    """Run DiskService.ensure in a child that SIGKILLs itself when QemuImg.``method`` runs
    (after the sealed key is stored, before or while qemu-img writes the image)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.qemu import img as img_mod

    pid = os.fork()
    if pid == 0:
        try:
            mp = pytest.MonkeyPatch()
            mp.setattr(img_mod.QemuImg, method, lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
            service = VmService.open(
                env.db_url,
                os.path.join(env.work, "run"),
                hostname=HOST,
                secret_key_file=env.key_file,
                storage_roots=[env.root],
            )
            make_disks(service, env.root).ensure(params, False)
        finally:
            os._exit(3)
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the kill point was not reached"


@pytest.mark.parametrize(
    "method,params",
    [
        ("create", {"size": "8M", "encrypt": True}),
        ("resize", {"size": "16M"}),
        ("convert", {"format": "raw", "convert": True}),
    ],
)
def test_an_encrypted_volume_task_killed_midway_is_finished_by_the_next_run(env, method, params):
    path = env.path("killed.qcow2")
    if method != "create":
        ensure(env, path=path, size="8M", encrypt=True)
        write_pattern(path, "qcow2", read_luks_key(env.service.store, env.service.secret_box, path))
    _killed_at(env, method, dict(params, path=path))
    done = ensure(env, path=path, **params)
    assert done["changed"] or method == "create" and os.path.exists(path)
    key = read_luks_key(env.service.store, env.service.secret_box, path)
    assert key, "the key of the volume is kept"
    driver = "luks" if params.get("format") == "raw" else "qcow2"
    assert qemu_info(path)["encrypted"] is True
    if method != "create":
        assert has_pattern(path, driver, key), "the data survived"
    assert not ensure(env, path=path, **params)["changed"]
    leftovers = [f for f in os.listdir(env.root) if f != "killed.qcow2"]
    assert leftovers == [], leftovers
    assert glob.glob("/dev/shm/infinivirt-key-*") == [] and not glob.glob(os.path.join(env.work, "run", "*.key"))
