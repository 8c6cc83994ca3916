# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The unattend option through infinivirt_vm's service, on a real store and real files (no
QEMU: tests/integration/test_unattend_cdrom.py starts one): the spec keeps a keyed digest,
the store the sealed files, a start's ISO holds Autounattend.xml byte for byte and the extra
files, bad input changes nothing, and a key rotation changes no digest."""

from __future__ import annotations

import glob
import io
import os
import stat
import subprocess

import pycdlib
import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import MissingLibrary, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host import iso
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.rotation import rotate_key
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.vm import unattend_media
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import unattend
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.sealed_files import files_digest, is_digest

PASSWORD = "Adm1n-Pa55-in-the-xml"
SCRIPT_SECRET = "join-domain-token-42"
XML = (
    '<?xml version="1.0" encoding="utf-8"?>\r\n<unattend xmlns="urn:schemas-microsoft-com:unattend">\r\n'
    '<settings pass="oobeSystem"><Value>%s</Value><Note>caf\u00e9 \u2603</Note></settings>\r\n</unattend>\r\n'
) % PASSWORD


@pytest.fixture
def driver(tmp_path):
    path = tmp_path / "src" / "viostor.sys"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 4)  # binary: only src carries such a file
    return str(path)


def option(driver, **extra):
    files = [
        {"path": "$OEM$/$1/Setup/join.ps1", "content": "Add-Computer -Token %s" % SCRIPT_SECRET},
        {"path": "drivers/viostor/viostor.sys", "src": driver},
    ]
    return dict({"autounattend": XML, "files": files}, **extra)


def ensure(svc, check_mode=False, **params):
    return svc.ensure(dict({"name": "win01", "state": "present", "memory_mb": 128}, **params), check_mode)


def db_bytes(db_url):
    if db_url.startswith("sqlite"):
        path = db_url[len("sqlite:///") :]
        return b"".join(open(p, "rb").read() for p in glob.glob(path + "*") if os.path.isfile(p))
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    return subprocess.run([pg_dump, db_url], capture_output=True, check=True).stdout


def read_iso(path):
    """{path: bytes} by Joliet name (what Windows reads), and the volume label."""
    disc = pycdlib.PyCdlib()
    disc.open(path)
    try:
        out = {}
        for top, _dirs, files in disc.walk(joliet_path="/"):
            for name in files:
                full = (top.rstrip("/") + "/" + name).lstrip("/")
                buf = io.BytesIO()
                disc.get_file_from_iso_fp(buf, joliet_path="/" + full)
                out[full] = buf.getvalue()
        return out, disc.pvd.volume_identifier.decode().rstrip()
    finally:
        disc.close()


@pytest.mark.both_backends  # what the database holds is the subject
def test_the_spec_keeps_a_keyed_digest_and_the_store_the_sealed_files(svc, db_url, driver, tmp_path):
    predicted = ensure(svc, check_mode=True, unattend=option(driver))
    assert predicted.changed and is_digest(predicted.vm["unattend_digest"])
    assert records.load(svc.store, "win01") is None and not (tmp_path / "secret.key").exists()  # check mode
    made = ensure(svc, unattend=option(driver))
    digest = made.vm["unattend_digest"]
    assert made.changed and is_digest(digest)
    rec = records.load(svc.store, "win01")
    assert rec.spec.unattend_digest == digest
    token = svc.store.get_secret(rec.uuid, unattend_media.UNATTEND)
    dump = db_bytes(db_url)
    assert token and token.encode() in dump  # the dump is the database: the sealed files are in it
    for secret in (PASSWORD, SCRIPT_SECRET, "urn:schemas-microsoft-com:unattend"):
        assert secret.encode() not in dump and secret.encode("utf-16-le") not in dump
        assert secret not in repr(made.result())
    # The digest is not the sha256 of the files: without the sealed salt it tests no guess.
    files = {"Autounattend.xml": XML.encode(), "$OEM$/$1/Setup/join.ps1": b"x", "drivers/viostor/viostor.sys": b""}
    assert digest != files_digest(b"", files)


def test_the_same_option_is_no_change_and_a_new_one_is(svc, driver):
    first = ensure(svc, unattend=option(driver))
    again = ensure(svc, unattend=option(driver))
    assert not again.changed and again.plan["actions"] == []
    assert not ensure(svc).changed  # left unset: the stored files stay
    check = ensure(svc, check_mode=True, unattend=option(driver, autounattend=XML.replace(PASSWORD, "other")))
    assert check.changed and check.plan["changes"] == {"unattend": "next_start"}
    assert records.load(svc.store, "win01").spec.unattend_digest == first.vm["unattend_digest"]
    changed = ensure(svc, unattend=option(driver, autounattend=XML.replace(PASSWORD, "other")))
    assert changed.changed and changed.vm["unattend_digest"] == check.vm["unattend_digest"]  # same salt
    with open(driver, "ab") as fh:  # a src file's content is part of the ISO
        fh.write(b"v2")
    assert ensure(svc, unattend=option(driver, autounattend=XML.replace(PASSWORD, "other"))).changed
    removed = ensure(svc, unattend={})
    assert removed.changed and removed.vm["unattend_digest"] is None
    assert svc.store.get_secret(records.load(svc.store, "win01").uuid, unattend_media.UNATTEND) is None


def test_a_start_writes_the_iso_once_per_content_and_removal_deletes_it(svc, driver, tmp_path):
    made = ensure(svc, unattend=option(driver))
    rec = records.load(svc.store, "win01")
    path = unattend_media.media_iso(svc.engine, rec)
    assert path == str(tmp_path / "nvram" / (made.vm["uuid"] + ".unattend.iso"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ("unattend", path) in svc.store.journal_list(rec.uuid)
    files, label = read_iso(path)
    assert label == "UNATTEND"
    assert files == {
        "Autounattend.xml": XML.encode("utf-8"),  # byte for byte: CRLF, the declaration, UTF-8
        "$OEM$/$1/Setup/join.ps1": ("Add-Computer -Token %s" % SCRIPT_SECRET).encode(),
        "drivers/viostor/viostor.sys": open(driver, "rb").read(),
    }
    inode = os.stat(path).st_ino
    assert unattend_media.media_iso(svc.engine, rec) == path and os.stat(path).st_ino == inode  # kept
    ensure(svc, unattend={"autounattend": XML.replace(PASSWORD, "changed")})
    unattend_media.media_iso(svc.engine, records.load(svc.store, "win01"))
    assert read_iso(path)[0] == {"Autounattend.xml": XML.replace(PASSWORD, "changed").encode()}
    svc.engine.resources.release_files(rec, keep_serial_log=False)  # a stop keeps it
    assert os.path.exists(path)
    ensure(svc, state="absent")
    assert not os.path.exists(path) and os.listdir(tmp_path / "nvram") == []


def test_a_key_rotation_changes_no_digest(svc, driver, tmp_path):
    made = ensure(svc, unattend=option(driver))
    new_key = str(tmp_path / "new.key")
    assert rotate_key(svc.store, str(tmp_path / "secret.key"), new_key, False)["rotated"] == 1
    svc.ctx.secret_key_file, svc.ctx._secret_box = new_key, None  # the service now holds the new key
    again = ensure(svc, unattend=option(driver))
    assert not again.changed and again.vm["unattend_digest"] == made.vm["unattend_digest"]
    assert read_iso(unattend_media.media_iso(svc.engine, records.load(svc.store, "win01")))[0]["Autounattend.xml"]


def test_sealed_files_that_do_not_match_the_digest_are_refused(svc, driver, tmp_path):
    ensure(svc, unattend=option(driver))
    rec = records.load(svc.store, "win01")
    forged = {"salt": "00" * 32, "files": {"Autounattend.xml": "PHVuYXR0ZW5kLz4="}}
    svc.store.set_secret(rec.uuid, unattend_media.UNATTEND, unattend_media.seal(svc.secret_box(), rec.uuid, forged))
    with pytest.raises(StateError) as err:
        unattend_media.media_iso(svc.engine, rec)
    assert "set unattend again" in str(err.value) and not (tmp_path / "nvram").exists()


def test_without_pycdlib_a_start_with_unattend_fails_naming_it(svc, driver, monkeypatch, tmp_path):
    ensure(svc, unattend=option(driver))  # defining the VM needs no pycdlib
    monkeypatch.setattr(iso, "HAS_PYCDLIB", False)
    with pytest.raises(MissingLibrary) as err:
        unattend_media.media_iso(svc.engine, records.load(svc.store, "win01"))
    assert err.value.library == "pycdlib" and "unattend" in str(err.value)
    assert not (tmp_path / "nvram").exists()


def _fifo(tmp_path):
    os.mkfifo(str(tmp_path / "fifo"))
    return str(tmp_path / "fifo")


def _big(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\0" * (unattend.MAX_FILE + 1))
    return str(tmp_path / "big.bin")


def _environ_link(tmp_path):
    os.symlink("/proc/self/environ", str(tmp_path / "env"))
    return str(tmp_path / "env")


@pytest.mark.parametrize(
    "make_src, phrase",
    [
        (lambda t: str(t / "missing.xml"), "does not exist"),
        (str, "not a regular file"),  # the directory itself
        (_fifo, "not a regular file"),
        (lambda t: "/dev/zero", "not in /proc, /sys or /dev"),
        (_environ_link, "not in /proc, /sys or /dev"),  # the module's environment stays home
        (_big, "larger than %d bytes" % unattend.MAX_FILE),
    ],
)
def test_a_bad_src_names_it_and_leaves_nothing(svc, tmp_path, make_src, phrase):
    src = make_src(tmp_path)
    with pytest.raises(SpecError) as err:
        ensure(svc, unattend={"autounattend": XML, "files": [{"path": "a.bin", "src": src}]})
    assert err.value.field == "unattend.files[0].src" and phrase in str(err.value)
    assert records.load(svc.store, "win01") is None
    assert not (tmp_path / "nvram").exists() and not (tmp_path / "secret.key").exists()


@pytest.mark.parametrize(
    "value, field",
    [
        ({"autounattend": "<unattend xmlns='urn:schemas-microsoft-com:unattend'>"}, "unattend.autounattend"),
        ({"autounattend": ""}, "unattend.autounattend"),
        ({"autounattend": XML, "files": [{"path": "../x", "content": "y"}]}, "unattend.files[0].path"),
        ({"files": [{"path": "x", "content": "y"}]}, "unattend.autounattend"),
    ],
)
def test_bad_input_on_an_existing_vm_changes_nothing(svc, driver, value, field):
    made = ensure(svc, unattend=option(driver))
    rec = records.load(svc.store, "win01")
    token = svc.store.get_secret(rec.uuid, unattend_media.UNATTEND)
    with pytest.raises(SpecError) as err:
        ensure(svc, unattend=value)
    assert err.value.field == field and PASSWORD not in str(err.value)
    assert records.load(svc.store, "win01").spec.unattend_digest == made.vm["unattend_digest"]
    assert svc.store.get_secret(rec.uuid, unattend_media.UNATTEND) == token
    assert svc.secret_box().decrypt(token, secret_context(rec.uuid, unattend_media.UNATTEND))


def test_the_largest_option_the_bounds_allow_seals_and_opens(svc):
    # 256 files 8 levels deep, every name as long as it may be in 3-byte characters (the most
    # bytes a path can have), and 384 KiB in all: the sealed token must stay under SecretBox's
    # 1 MiB, or the VM could never start.
    size = (unattend.MAX_TOTAL - len(XML.encode())) // unattend.MAX_FILES
    files = [
        {"path": "/".join(["\u20ac" * 21] * 7) + "/%03d%s" % (i, "\u20ac" * 20), "content": "y" * size}
        for i in range(unattend.MAX_FILES)
    ]
    assert all(len(unattend.check_path("f", f["path"]).encode()) == 8 * 63 + 7 for f in files)
    ensure(svc, unattend={"autounattend": XML, "files": files})
    rec = records.load(svc.store, "win01")
    assert len(svc.store.get_secret(rec.uuid, unattend_media.UNATTEND)) < 1 << 20
    got, _label = read_iso(unattend_media.media_iso(svc.engine, rec))
    assert len(got) == unattend.MAX_FILES + 1 and got[files[-1]["path"]] == b"y" * size


def test_a_payload_over_what_one_token_holds_is_refused(svc, monkeypatch):
    monkeypatch.setattr(unattend_media, "MAX_SEALED_BYTES", 1000)  # a guard the bounds keep unreachable
    with pytest.raises(SpecError) as err:
        ensure(svc, unattend={"autounattend": XML, "files": [{"path": "a.txt", "content": "z" * 1000}]})
    assert err.value.field == "unattend.files" and records.load(svc.store, "win01") is None
