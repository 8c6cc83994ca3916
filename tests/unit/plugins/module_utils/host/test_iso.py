# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ISO volumes with real pycdlib: written, then read back with pycdlib; label, names, mode,
and the same bytes for the same input (whatever the clock or the time zone)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import time

import pycdlib
import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.host.iso import iso_bytes, tree_iso_bytes, write_iso

FILES = {
    "user-data": b"#cloud-config\nhostname: web01\n",
    "meta-data": b"instance-id: 6f1c2a3e\n",
    "network-config": b"version: 2\n",
    "vendor-data": b"#cloud-config\n{}\n",
}


def read_back(path):
    """{label, names per namespace, contents by Rock Ridge and Joliet name} as pycdlib reads it."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        out = {"label": iso.pvd.volume_identifier.decode().rstrip(), "rr": {}, "joliet": {}, "iso9660": []}
        for child in iso.list_children(iso_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            out["iso9660"].append(child.file_identifier().decode())
            rr = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + rr)
            out["rr"][rr] = buf.getvalue()
        for child in iso.list_children(joliet_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.file_identifier().decode("utf-16-be").split(";")[0]
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path="/" + name)
            out["joliet"][name] = buf.getvalue()
        return out
    finally:
        iso.close()


def test_a_seed_reads_back_with_its_label_and_names(tmp_path):
    path = str(tmp_path / "seed.iso")
    digest = write_iso(path, FILES)
    got = read_back(path)
    assert got["label"] == "CIDATA"
    assert got["rr"] == FILES  # Rock Ridge: the real names, as Linux mounts it
    assert got["joliet"] == FILES  # Joliet: the real names, as Windows reads it
    # ISO 9660 names past 8.3: interchange level 3 (level 1 would refuse NETWORK_CONFIG)
    assert sorted(got["iso9660"]) == ["META_DATA.;1", "NETWORK_CONFIG.;1", "USER_DATA.;1", "VENDOR_DATA.;1"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == digest
    assert os.listdir(str(tmp_path)) == ["seed.iso"]  # no temp file left


def test_the_same_input_gives_the_same_bytes_later_and_in_another_time_zone(monkeypatch):
    first = iso_bytes(FILES)
    time.sleep(1.1)  # pycdlib would stamp a new second into every record
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # and a +05:30 offset into every date
    time.tzset()
    try:
        second = iso_bytes(dict(reversed(list(FILES.items()))))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert first == second
    assert time.time() != 0.0  # the fixed clock stayed inside pycdlib
    assert iso_bytes(dict(FILES, **{"user-data": b"#cloud-config\nhostname: web02\n"})) != first


def test_a_rewrite_replaces_the_file_whole(tmp_path):
    path = str(tmp_path / "seed.iso")
    write_iso(path, FILES)
    write_iso(path, {"user-data": b"#cloud-config\n", "meta-data": b"instance-id: x\n"})
    assert sorted(read_back(path)["rr"]) == ["meta-data", "user-data"]


@pytest.mark.parametrize(
    "files,label,message",
    [
        ({"../user-data": b""}, "CIDATA", "ISO file name"),
        ({"user-data": b"", "user_data": b""}, "CIDATA", "are the same in ISO 9660"),
        ({"a" * 40: b""}, "CIDATA", "longer than 30"),
        ({"user-data": b""}, "cidata", "volume label"),
    ],
)
def test_bad_names_write_nothing(tmp_path, files, label, message):
    path = str(tmp_path / "seed.iso")
    with pytest.raises(ValueError, match=message):
        write_iso(path, files, label)
    assert os.listdir(str(tmp_path)) == []


TREE = {
    "Autounattend.xml": b"<unattend/>",
    "$OEM$/$1/Setup/first-logon.ps1": b"one",
    "$OEM$/$1/Setup/first_logon.ps1": b"two",  # the same name in ISO 9660
    "A name longer than thirty characters, with spaces.txt": b"long",
    "a/b/c/d/e/f/g/deep.txt": b"eight levels",
}


def test_a_tree_reads_back_by_its_real_names(tmp_path):
    path = str(tmp_path / "unattend.iso")
    write_iso(path, TREE, "UNATTEND", tree=True)
    disc = pycdlib.PyCdlib()
    disc.open(path)
    try:
        assert disc.pvd.volume_identifier.decode().rstrip() == "UNATTEND"
        for name, data in TREE.items():
            for kind in ("joliet_path", "rr_path"):  # what Windows reads, what Linux mounts
                buf = io.BytesIO()
                disc.get_file_from_iso_fp(buf, **{kind: "/" + name})
                assert buf.getvalue() == data, (kind, name)
        iso_names = [
            (top, f) for top, dirs, files in disc.walk(iso_path="/") for f in files + dirs
        ]  # ISO 9660: made-up d-character names, unique per directory
        assert ("/_OEM_/_1/SETUP", "FIRST_LOGON.PS1;1") in iso_names
        assert ("/_OEM_/_1/SETUP", "FIRST_LOGON_1.PS1;1") in iso_names
        assert all(len(f.split(";")[0]) <= 31 for _top, f in iso_names)
    finally:
        disc.close()
    assert tree_iso_bytes(dict(reversed(list(TREE.items()))), "UNATTEND") == open(path, "rb").read()


def test_a_tree_refuses_dot_dot():
    with pytest.raises(ValueError, match="'..'"):
        tree_iso_bytes({"a/../b": b""}, "UNATTEND")
