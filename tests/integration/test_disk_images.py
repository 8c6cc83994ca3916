# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_disk making volumes from images and templates (issue 21 item 1): real qemu-img,
real HTTP from a server of the test's own on 127.0.0.1 (which can drop a connection half-way
and counts requests), real files in private storage roots; and the module through
ansible-playbook."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from typing import Dict, List

import pytest
from helpers import run_playbook

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]

HOST = "hv-image-test"


# -- an HTTP server of the test's own ------------------------------------------------------


class ImageServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1, honouring ``Range: bytes=N-``. A name
    in ``drop`` is cut off half-way (full Content-Length, half the body, connection closed)
    that many times. ``requests`` records (path, Range header) of each GET."""

    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.drop: Dict[str, int] = {}
        self.requests: List[tuple] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                name = self.path.split("?", 1)[0].lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes=") and ranged.endswith("-"):
                    start = int(ranged[len("bytes=") : -1])
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if server.drop.get(name):
                    server.drop[name] -= 1
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return "http://127.0.0.1:%d/%s" % (self.httpd.server_address[1], name)

    def gets(self, name: str) -> List[tuple]:
        return [r for r in self.requests if r[0].split("?", 1)[0] == "/" + name]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = ImageServer()
    yield srv
    srv.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the volumes' world ----------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    service: VmService
    disks: DiskService
    work: str
    root: str
    outside: str

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def ensure(self, check_mode: bool = False, **params):
        return self.disks.ensure(params, check_mode)

    def rows(self) -> List[str]:
        return [v.path for v in self.service.store.list_volumes(HOST)]

    def files(self) -> List[str]:
        """Every file under the root (directories left out), relative to it."""
        found = []
        for base, _dirs, names in os.walk(self.root):
            found += [os.path.relpath(os.path.join(base, n), self.root) for n in names]
        return sorted(found)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("INFINIVIRT_SECRET_KEY", raising=False)
    work = tempfile.mkdtemp(prefix="iv,i=")
    root, outside = os.path.join(work, "images"), os.path.join(work, "outside")
    os.makedirs(root)
    os.makedirs(outside)
    service = VmService.open(
        "sqlite:///%s/state.db" % work,
        os.path.join(work, "run"),
        hostname=HOST,
        secret_key_file=os.path.join(work, "keys", "secret.key"),
        storage_roots=[root],
        lock_timeout=30,
    )
    disks = DiskService(service.store, service.secret_box, HOST, [root], lock_timeout=30)
    yield Env(service, disks, work, root, outside)
    service.close()
    shutil.rmtree(work, ignore_errors=True)


def qemu_info(path):
    done = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def same_content(a, b) -> bool:
    done = subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, text=True, check=False)
    return done.returncode == 0


def qemu_io(path, fmt, command):
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, path], capture_output=True, check=True)


def make_image(path, size="8M", pattern=0x5A, backing=None):
    """A qcow2 image with data at 1 MiB (and with ``backing``, a backing file)."""
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-b", backing, "-F", "qcow2"]
    subprocess.run(args + [path, size], check=True)
    qemu_io(path, "qcow2", "write -P %d 1M 256k" % pattern)
    return path


def sha256(path) -> str:
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture
def image(env):
    """A qcow2 image with data, outside the roots (a source is only read), and its checksum."""
    path = make_image(os.path.join(env.work, "src.qcow2"), size="16M")
    return path, sha256(path)


# -- images from a URL -----------------------------------------------------------------------


def test_a_url_image_becomes_raw_and_qcow2_volumes_downloaded_once(env, server, image):
    src, digest = image
    with open(src, "rb") as fh:
        server.files["img.qcow2"] = fh.read()
    url = server.url("img.qcow2?token=secret-token")
    raw, qcow = env.path("from-url.img"), env.path("from-url.qcow2")

    check = env.ensure(True, path=raw, format="raw", source=url, checksum=digest)
    assert check["changed"] and check["volume"]["cached"] is False and check["volume"]["virtual_size"] is None
    assert server.requests == [] and env.files() == [] and env.rows() == []  # check mode fetched nothing

    first = env.ensure(path=raw, format="raw", source=url, checksum=digest)
    assert first["changed"] and first["volume"]["cached"] is False
    assert first["volume"]["source"] == server.url("img.qcow2")  # the token is not shown
    assert "secret-token" not in json.dumps(first)
    assert qemu_info(raw)["format"] == "raw" and same_content(src, raw)
    second = env.ensure(path=qcow, source=url, checksum=digest)
    assert second["changed"] and second["volume"]["cached"] is True
    assert qemu_info(qcow)["format"] == "qcow2" and same_content(src, qcow)
    assert qemu_info(qcow).get("backing-filename") is None
    assert len(server.gets("img.qcow2")) == 1, server.requests  # the second came from the cache
    assert sorted(env.rows()) == sorted([os.path.realpath(raw), os.path.realpath(qcow)])
    assert env.files() == [".infinivirt-images/sha256-" + digest[7:], "from-url.img", "from-url.qcow2"]

    again = env.ensure(path=raw, format="raw", source=url, checksum=digest)
    again_check = env.ensure(True, path=qcow, source=url, checksum=digest)
    assert not again["changed"] and not again_check["changed"]
    assert again["volume"]["source"] is None and again["volume"]["cached"] is None
    assert len(server.requests) == 1  # a rerun does not look at the source


def test_a_dropped_connection_is_resumed(env, server, image):
    src, digest = image
    with open(src, "rb") as fh:
        body = fh.read()
    server.files["drop.qcow2"] = body
    server.drop["drop.qcow2"] = 2  # two attempts end half-way
    done = env.ensure(path=env.path("resumed.qcow2"), source=server.url("drop.qcow2"), checksum=digest)
    assert done["changed"] and same_content(src, env.path("resumed.qcow2"))
    gets = server.gets("drop.qcow2")
    assert len(gets) == 3, gets
    assert gets[0][1] is None
    assert gets[1][1] == "bytes=%d-" % (len(body) // 2)  # resumed where the first one stopped
    assert gets[2][1] is not None and int(gets[2][1][6:-1]) > len(body) // 2


def test_a_changed_cache_entry_is_not_used(env, server, image):
    """The bytes copied are the bytes checked: a cache entry that no longer matches its
    digest fails the task (naming checksum), is removed, and the next run downloads again."""
    src, digest = image
    with open(src, "rb") as fh:
        server.files["img"] = fh.read()
    assert env.ensure(path=env.path("a.qcow2"), source=server.url("img"), checksum=digest)["changed"]
    entry = env.path(".infinivirt-images/sha256-" + digest[7:])
    with open(entry, "r+b") as fh:
        fh.seek(1 << 20)
        fh.write(b"\xff" * 512)
    with pytest.raises(SpecError) as caught:
        env.ensure(path=env.path("b.qcow2"), source=server.url("img"), checksum=digest)
    assert caught.value.field == "checksum" and "no longer has" in str(caught.value)
    assert not os.path.exists(entry) and not os.path.exists(env.path("b.qcow2"))
    assert env.rows() == [os.path.realpath(env.path("a.qcow2"))]
    again = env.ensure(path=env.path("b.qcow2"), source=server.url("img"), checksum=digest)
    assert again["changed"] and again["volume"]["cached"] is False and same_content(src, env.path("b.qcow2"))
    assert len(server.gets("img")) == 2


def test_an_image_cache_directory_of_ones_own(env, server, image):
    src, digest = image
    with open(src, "rb") as fh:
        server.files["c.qcow2"] = fh.read()
    cache = env.path("cache")
    done = env.ensure(path=env.path("c.qcow2"), source=server.url("c.qcow2"), checksum=digest, image_cache_dir=cache)
    assert done["changed"] and os.listdir(cache) == ["sha256-" + digest[7:]]
    assert os.stat(cache).st_mode & 0o777 == 0o700


# -- bad input ---------------------------------------------------------------------------------


def _outside_chain(env):
    """A qcow2 in the roots whose backing file lies outside them."""
    base = make_image(os.path.join(env.outside, "base.qcow2"))
    return make_image(os.path.join(env.work, "top.qcow2"), backing=base, pattern=0x11)


def _outside_extent(env):
    """A VMDK descriptor (itself anywhere) whose extent is a file outside the roots."""
    secret = os.path.join(env.outside, "secret.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", secret, "1M"], check=True)
    descriptor = os.path.join(env.work, "d.vmdk")
    with open(descriptor, "w") as fh:
        fh.write(
            '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
            'RW 2048 FLAT "%s" 0\nddb.adapterType = "ide"\n' % secret
        )
    return descriptor


def _outside_data_file(env):
    """A qcow2 whose external data file lies outside the roots."""
    path = os.path.join(env.work, "dq.qcow2")
    data = os.path.join(env.outside, "data.raw")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=" + data.replace(",", ",,"), path, "1M"],
        check=True,
    )
    return path


def _json_backing(env):
    """A qcow2 whose backing file is a json: name (any driver, any file) instead of a path."""
    path = os.path.join(env.work, "j.qcow2")
    backing = "json:" + json.dumps({"driver": "raw", "file": {"driver": "file", "filename": "/etc/hostname"}})
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", path, "1M"], check=True
    )
    return path


def _always_dropped(srv):
    srv.drop["img"] = 99
    return srv.url("img")


BAD = [
    # (what, params builder, field, phrase)
    (
        "checksum mismatch",
        lambda env, srv, img: {"source": srv.url("img"), "checksum": "sha256:" + "0" * 64},
        "checksum",
        "not the sha256:0000",
    ),
    (
        "unreachable URL",
        lambda env, srv, img: {"source": "http://127.0.0.1:%d/x.qcow2" % closed_port(), "checksum": img[1]},
        "source",
        "could not be downloaded (5 attempts)",
    ),
    ("HTTP 404", lambda env, srv, img: {"source": srv.url("nothing.qcow2"), "checksum": img[1]}, "source", "HTTP 404"),
    ("a URL without checksum", lambda env, srv, img: {"source": srv.url("img")}, "checksum", "is required with a URL"),
    (
        "a bad checksum string",
        lambda env, srv, img: {"source": srv.url("img"), "checksum": "md5:abc"},
        "checksum",
        'must be "sha256:"',
    ),
    (
        "a local file mismatch",
        lambda env, srv, img: {"source": img[0], "checksum": "sha256:" + "1" * 64},
        "checksum",
        "not the sha256:1111",
    ),
    (
        "a VMDK extent outside the roots",
        lambda env, srv, img: {"source": _outside_extent(env)},
        "source",
        "secret.raw (through",
    ),
    (
        "a data file outside the roots",
        lambda env, srv, img: {"source": _outside_data_file(env)},
        "source",
        "data.raw (through",
    ),
    ("a json: backing file", lambda env, srv, img: {"source": _json_backing(env)}, "source", "not a file path"),
    (
        "a connection that always drops",
        lambda env, srv, img: {"source": _always_dropped(srv), "checksum": img[1]},
        "source",
        "(5 attempts): the connection closed after",
    ),
    (
        "backing file outside the roots",
        lambda env, srv, img: {"source": _outside_chain(env)},
        "source",
        "outside the storage roots",
    ),
    (
        "an image_cache_dir outside the roots",
        lambda env, srv, img: {"source": srv.url("img"), "checksum": img[1], "image_cache_dir": env.outside},
        "image_cache_dir",
        "outside the storage roots",
    ),
    (
        "an image_cache_dir in a missing directory",
        lambda env, srv, img: {"source": srv.url("img"), "checksum": img[1], "image_cache_dir": env.path("no/cache")},
        "image_cache_dir",
        "is not a directory, nor can it be made",
    ),
    (
        "a missing local file",
        lambda env, srv, img: {"source": os.path.join(env.work, "nope.qcow2")},
        "source",
        "does not exist",
    ),
    (
        "an ftp URL",
        lambda env, srv, img: {"source": "ftp://127.0.0.1/x", "checksum": img[1]},
        "source",
        "only http:// and https://",
    ),
    (
        "credentials in the URL",
        lambda env, srv, img: {"source": "http://u:pw@127.0.0.1/x", "checksum": img[1]},
        "source",
        "user name or password",
    ),
    (
        "clone_from outside the roots",
        lambda env, srv, img: {"clone_from": img[0]},
        "clone_from",
        "outside the storage roots",
    ),
    (
        "clone_from missing",
        lambda env, srv, img: {"clone_from": env.path("no-template.qcow2")},
        "clone_from",
        "does not exist",
    ),
    (
        "clone_mode without clone_from",
        lambda env, srv, img: {"clone_mode": "full", "size": "8M"},
        "clone_mode",
        "needs clone_from",
    ),
    (
        "source and clone_from",
        lambda env, srv, img: {"source": img[0], "clone_from": img[0]},
        "clone_from",
        "cannot be combined",
    ),
]


@pytest.mark.parametrize("what,build,field,phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_input_leaves_nothing(env, server, image, what, build, field, phrase):
    with open(image[0], "rb") as fh:
        server.files["img"] = fh.read()
    params = build(env, server, image)
    # Check mode downloads nothing, so what only a download shows, it cannot know (below).
    downloaded = what in (
        "checksum mismatch",
        "unreachable URL",
        "HTTP 404",
        "a connection that always drops",
        "an image_cache_dir in a missing directory",  # found when the cache is first used
    )
    for check_mode in (False,) if downloaded else (True, False):
        with pytest.raises(SpecError) as caught:
            env.ensure(check_mode, path=env.path("bad.qcow2"), **params)
        assert caught.value.field == field and phrase in str(caught.value), str(caught.value)
        assert env.files() == [] and env.rows() == []


def test_check_mode_cannot_see_a_bad_download(env, server, image):
    """What a download would show (mismatch, unreachable) only shows in a real run."""
    done = env.ensure(True, path=env.path("v.qcow2"), source=server.url("img"), checksum="sha256:" + "0" * 64)
    assert done["changed"] and done["warnings"] and "check mode does not download" in done["warnings"][0]
    assert server.requests == []


# -- a task killed half-way -------------------------------------------------------------------


def _killed_at(env, target, name, params):
    """Run DiskService.ensure in a child that SIGKILLs itself in ``target``.``name`` (after the
    real one ran, when ``name`` is convert: the copy is complete but not under its name yet;
    before the second chunk is written, when it is the download's _write_all)."""
    pid = os.fork()
    if pid == 0:
        try:
            real = getattr(target, name)
            calls = []

            def killing(*args, **kwargs):
                calls.append(1)
                if name == "convert" or len(calls) > 1:
                    if name == "convert":
                        real(*args, **kwargs)
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*args, **kwargs)

            mp = pytest.MonkeyPatch()
            mp.setattr(target, name, killing)
            service = VmService.open(  # a store of the child's own (no connection shared over fork)
                "sqlite:///%s/state.db" % env.work,
                os.path.join(env.work, "run"),
                hostname=HOST,
                secret_key_file=os.path.join(env.work, "keys", "secret.key"),
                storage_roots=[env.root],
            )
            DiskService(service.store, service.secret_box, HOST, [env.root], lock_timeout=30).ensure(params, False)
        finally:
            os._exit(3)
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the kill point was not reached"


def test_a_task_killed_half_way_leaves_no_partial_file_under_its_name(env, server, image):
    from ansible_collections.infinivirt.core.plugins.module_utils.host import download as download_mod
    from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import QemuImg

    src, digest = image
    with open(src, "rb") as fh:
        server.files["img"] = fh.read() + b"\0" * (4 << 20)  # more than one chunk
    digest = "sha256:" + hashlib.sha256(server.files["img"]).hexdigest()
    path = env.path("k.qcow2")
    params = {"path": path, "source": server.url("img"), "checksum": digest}

    _killed_at(env, download_mod, "_write_all", params)  # mid-download
    cache = env.path(".infinivirt-images")
    assert os.listdir(cache) == [".sha256-%s.part" % digest[7:]]  # never under its own name
    assert not os.path.exists(path)

    _killed_at(env, QemuImg, "convert", params)  # downloaded (cached), copied, not yet linked
    assert os.listdir(cache) == ["sha256-" + digest[7:]]
    assert not os.path.exists(path) and os.path.exists(env.path(".k.qcow2.infinivirt-make.tmp"))

    done = env.ensure(**params)  # the next run finishes the job and clears the leftovers
    assert done["changed"] and done["volume"]["cached"] is True and same_content(src, path)
    assert env.files() == [".infinivirt-images/sha256-" + digest[7:], "k.qcow2"]
    assert env.rows() == [os.path.realpath(path)]
    assert not env.ensure(**params)["changed"]


# -- templates -----------------------------------------------------------------------------------


def test_linked_and_full_clones(env, image):
    src = image[0]
    template = env.path("template.qcow2")
    assert env.ensure(path=template, source=src)["changed"]
    before = sha256(template)

    check = env.ensure(True, path=env.path("linked.qcow2"), clone_from=template)
    assert check["changed"] and check["volume"]["backing_file"] == template and env.files() == ["template.qcow2"]
    linked = env.ensure(path=env.path("linked.qcow2"), clone_from=template, size="32M")
    assert linked["changed"] and linked["volume"]["backing_file"] == template
    assert linked["volume"]["virtual_size"] == 32 << 20 and linked["volume"]["source"] == template
    info = qemu_info(env.path("linked.qcow2"))
    assert info["backing-filename"] == template and info["backing-filename-format"] == "qcow2"
    assert same_content(src, env.path("linked.qcow2"))  # what lies beyond the image reads as zeros
    qemu_io(env.path("linked.qcow2"), "qcow2", "read -P 0x5a 1M 256k")
    qemu_io(env.path("linked.qcow2"), "qcow2", "write -P 0x77 1M 64k")
    assert sha256(template) == before  # the clone's writes stay in the clone
    assert not env.ensure(path=env.path("linked.qcow2"), clone_from=template, size="32M")["changed"]

    full = env.ensure(path=env.path("full.img"), clone_from=template, clone_mode="full", format="raw")
    assert full["changed"] and full["volume"]["backing_file"] is None
    assert qemu_info(env.path("full.img")).get("backing-filename") is None
    assert same_content(template, env.path("full.img"))
    assert not env.ensure(path=env.path("full.img"), clone_from=template, clone_mode="full", format="raw")["changed"]
    assert not env.ensure(True, path=env.path("full.img"), clone_from=template, clone_mode="full")["changed"]

    with pytest.raises(Exception, match="backing file of"):  # the template stays while clones use it
        env.ensure(path=template, state="absent")
    assert sorted(env.files()) == ["full.img", "linked.qcow2", "template.qcow2"]


def test_a_linked_clone_of_a_writable_vm_disk_is_refused(env, image):
    template = env.path("busy.qcow2")
    env.ensure(path=template, source=image[0])
    env.service.ensure(
        {"name": "holder", "state": "stopped", "memory": 64, "disks": [{"path": template}]}, check_mode=False
    )
    with pytest.raises(SpecError) as caught:
        env.ensure(path=env.path("c.qcow2"), clone_from=template)
    assert caught.value.field == "clone_from" and "writable disk of VM holder" in str(caught.value)
    assert env.ensure(path=env.path("c.qcow2"), clone_from=template, clone_mode="full")["changed"]
    env.service.ensure({"name": "holder", "state": "absent"}, check_mode=False)


# -- the module, through ansible-playbook ----------------------------------------------------


def test_playbook_imports_an_image_from_a_url_and_clones_it(tmp_path, server, image):
    src, digest = image
    with open(src, "rb") as fh:
        server.files["pb.qcow2"] = fh.read()
    work = tempfile.mkdtemp(prefix="iv,pbi=")
    try:
        root = os.path.join(work, "images")
        os.makedirs(root)
        done = run_playbook(
            "disk_images.yml",
            {
                "db_url": "sqlite:///%s/pb.db" % work,
                "run_dir": os.path.join(work, "run"),
                "key_file": str(tmp_path / "secret.key"),
                "root": root,
                "url": server.url("pb.qcow2"),
                "checksum": digest,
            },
            verbosity=1,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "DISK_IMAGES_OK" in done.stdout and "failed=0" in done.stdout
        # One download for the image (the rerun and the clone fetch nothing), one for the task
        # with the wrong checksum (cached under its own digest, so not found).
        assert len(server.gets("pb.qcow2")) == 2
        assert same_content(src, os.path.join(root, "base.qcow2"))
        assert qemu_info(os.path.join(root, "clone.qcow2"))["backing-filename"] == os.path.join(root, "base.qcow2")
    finally:
        shutil.rmtree(work, ignore_errors=True)
