# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Storage copy during a migration, the pure part (vm/model/storage_copy.py): each disk's
fate on the target, the refusals naming the disk, the QMP arguments of both sides, and the
answer's encoding."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import storage_copy as sc

DISK = sc.DiskFacts(
    field="disks[0].path", path="/srv/vm/a.qcow2", disk_id="d0123456789", format="qcow2", virtual_size=1 << 30
)


def test_facts_from_qemu_img_info():
    info = {
        "format": "qcow2",
        "virtual-size": 8 << 20,
        "backing-filename": "base.qcow2",
        "full-backing-filename": "/srv/base.qcow2",
        "backing-filename-format": "qcow2",
    }
    facts = sc.facts_from_info("disks[1].path", "/srv/c.qcow2", "d0000000001", info, False, False, True)
    assert (facts.format, facts.virtual_size, facts.backing, facts.backing_format) == (
        "qcow2",
        8 << 20,
        "/srv/base.qcow2",
        "qcow2",
    )
    assert sc.mirror_sync(facts) == "top", "a linked clone's top image only"
    assert sc.mirror_sync(DISK) == "full"
    assert sc.DiskFacts.from_dict(dict(facts.__dict__, unknown=1)) == facts, "stored as a dict, read back"


@pytest.mark.parametrize(
    "storage, shared, exists, fate, words",
    [
        ("auto", True, True, "shared", None),
        ("shared", True, True, "shared", None),
        ("copy", True, True, "refuse", "same file on both hosts"),
        ("auto", False, False, "copy", None),
        ("copy", False, False, "copy", None),
        ("shared", False, True, "refuse", "not the same file on both hosts"),
        ("auto", False, True, "refuse", "exists on this host but is not the source's file"),
    ],
)
def test_each_disk_is_shared_copied_or_refused_by_name(storage, shared, exists, fate, words):
    got, why = sc.decide(storage, DISK, shared, exists)
    assert got == fate
    if words:
        assert words in why and "disks[0].path" in why and DISK.path in why


def test_a_cdrom_is_never_copied():
    iso = sc.DiskFacts("disks[1].path", "/srv/x.iso", "d0000000002", "raw", 0, copyable=False)
    assert sc.decide("copy", iso, False, True) == ("shared", None), "there: used as is"
    assert sc.decide("copy", iso, True, True) == ("shared", None), "not refused as 'copied onto itself'"
    fate, why = sc.decide("auto", iso, False, False)
    assert fate == "refuse" and "never copied" in why and "disks[1].path" in why


@pytest.mark.parametrize(
    "change, backing_here, words",
    [
        ({"encrypted": True}, True, "encrypted (LUKS)"),
        ({"layered": True}, True, "external snapshots"),
        ({"backing": "/srv/base.qcow2"}, False, "linked clone of /srv/base.qcow2"),
    ],
)
def test_what_cannot_be_copied_is_refused_naming_the_disk(change, backing_here, words):
    disk = dataclasses.replace(DISK, **change)
    why = sc.copy_refusal(disk, backing_here)
    assert words in why and "disks[0].path" in why, why
    assert sc.copy_refusal(DISK, True) is None
    assert sc.copy_refusal(dataclasses.replace(DISK, backing="/srv/b"), True) is None


def test_qmp_arguments_of_both_sides():
    assert sc.nbd_server_start("10.77.0.2", 4445) == {
        "addr": {"type": "inet", "data": {"host": "10.77.0.2", "port": "4445"}}
    }
    assert sc.export_add("d0123456789") == {
        "type": "nbd",
        "id": "mig-d0123456789",
        "node-name": "n-d0123456789",
        "name": "d0123456789",
        "writable": True,
    }
    assert sc.nbd_node("d0123456789", "10.77.0.2", 4445) == {
        "driver": "nbd",
        "node-name": "mig-d0123456789",
        "server": {"type": "inet", "host": "10.77.0.2", "port": "4445"},
        "export": "d0123456789",
    }
    assert sc.mirror(DISK) == {
        "job-id": "mig-d0123456789",
        "device": "n-d0123456789",
        "target": "mig-d0123456789",
        "sync": "full",
        "on-target-error": "report",
    }
    assert sc.mirror(DISK, 1_000_000)["speed"] == 1_000_000, "bandwidth_mbit limits the copy too"
    with pytest.raises(ValueError):
        sc.export_add("../x")


def test_mirror_jobs_ready_failed_or_copying():
    ids = ["d0000000001", "d0000000002"]
    one = {"device": "mig-d0000000001", "ready": True, "offset": 100, "status": "ready", "io-status": "ok"}
    two = {"device": "mig-d0000000002", "ready": False, "offset": 50, "status": "running", "io-status": "ok"}
    assert sc.jobs_state([one, two], ids) == (False, None, 150)
    assert sc.jobs_state([one, dict(two, ready=True)], ids) == (True, None, 150)
    ready, error, _n = sc.jobs_state([one], ids)
    assert not ready and "disk d0000000002 failed" in error, "a job gone failed"
    _r, error, _n = sc.jobs_state([one, dict(two, status="concluded", error="Connection reset")], ids)
    assert "Connection reset" in error
    _r, error, _n = sc.jobs_state([one, dict(two, **{"io-status": "failed"})], ids)
    assert "I/O failed" in error


def test_the_answer_carries_the_nbd_server_and_the_copied_disks():
    assert sc.encode_answer("tcp:10.77.0.2:4444") == "tcp:10.77.0.2:4444"
    assert sc.decode_answer("tcp:10.77.0.2:4444") == ("tcp:10.77.0.2:4444", None, [])
    text = sc.encode_answer("tcp:10.77.0.2:4444", "10.77.0.2", 4445, ["d0000000001", "d0000000002"])
    assert sc.decode_answer(text) == ("tcp:10.77.0.2:4444", ("10.77.0.2", 4445), ["d0000000001", "d0000000002"])
    six = sc.encode_answer("tcp:[fd00::2]:4444", "fd00::2", 4445, ["d0000000001"])
    assert sc.decode_answer(six) == ("tcp:[fd00::2]:4444", ("fd00::2", 4445), ["d0000000001"])
    with pytest.raises(ValueError):
        sc.decode_answer("tcp:h:1 nbd=h:2/evil")
    assert sc.mode([]) == "shared" and sc.mode(["d0000000001"]) == "copy"


def test_the_marker_is_named_by_a_fresh_token_only():
    assert sc.marker_name("ab" * 16) == ".infinivirt-migration-" + "ab" * 16
    for bad in ("", "../x", "AB" * 16, "ab"):
        with pytest.raises(ValueError):
            sc.marker_name(bad)
