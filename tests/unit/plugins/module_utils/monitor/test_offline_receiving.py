# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target side of offline migrations, where no QEMU is needed
(monitor/offline_receiving.py, through the Receiver): refusals name the disk and leave
nothing; disks it sees (the source's marker beside them) are confirmed and nothing is made."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.monitor.receiving import Receiver
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import DiskFacts, marker_name

UUID = "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a12"
TOKEN = "ab" * 16


@pytest.fixture
def target(hv_b, tmp_path):
    """Host hv-b's engine (storage root: tmp_path/shared) and a stopped VM of hv-a."""
    ctx, shared = hv_b
    spec = VmSpec(name="cold", disks=(DiskSpec(path=str(shared / "cold.qcow2")),))
    records.insert(ctx.store, VmRecord(uuid=UUID, name="cold", host="hv-a", status="stopped", spec=spec))
    return Engine.of(ctx)


def _request(engine, path, storage="auto", copyable=True):
    facts = DiskFacts("disks[0].path", path, "d0123456789", "qcow2", 1 << 20, copyable=copyable)
    options = {"name": "cold", "to": "hv-b", "storage": storage, "marker": TOKEN, "offline": True}
    options["disks"] = [dataclasses.asdict(facts)]
    events = []
    engine.store.open_handover(UUID, "cold", "hv-a", "hv-b", options)
    Receiver("127.0.0.1", logging.getLogger("test"), lambda *event: events.append(event)).poll(engine)
    return engine.store.get_handover(UUID), [e[1] for e in events]


def test_a_disk_outside_the_storage_roots_is_refused_by_name_and_nothing_is_made(target, tmp_path):
    found, kinds = _request(target, str(tmp_path / "local" / "cold.qcow2"))
    assert found["state"] == "refused" and "disks[0].path" in found["error"], found
    assert kinds == ["migration_refused"] and os.listdir(target.run_dir) == []
    assert target.store.journal_list(UUID + "@hv-b") == [] and records.load(target.store, "cold").host == "hv-a"


def test_a_missing_cdrom_is_refused_naming_it(target, tmp_path):
    found, _kinds = _request(target, str(tmp_path / "shared" / "install.iso"), copyable=False)
    assert found["state"] == "refused" and "is read-only or a CD-ROM" in found["error"], found


def test_a_disk_seen_beside_the_marker_is_confirmed_and_nothing_is_copied(target, tmp_path):
    disk = tmp_path / "shared" / "cold.qcow2"
    disk.write_bytes(b"")
    (tmp_path / "shared" / marker_name(TOKEN)).write_bytes(b"")
    found, kinds = _request(target, str(disk))
    assert (found["state"], found["uri"]) == ("listening", "offline"), found
    assert kinds == ["migration_listening"] and target.store.journal_list(UUID + "@hv-b") == []
    assert sorted(os.listdir(tmp_path / "shared")) == sorted(["cold.qcow2", marker_name(TOKEN)]), "nothing made"


def test_a_monitor_restarted_while_listening_gives_up_and_removes_the_disk_it_made(target, tmp_path):
    made = tmp_path / "shared" / "cold.qcow2"
    made.write_bytes(b"half a copy")
    target.store.journal_add(UUID + "@hv-b", "migrated_disk", str(made))
    options = {"name": "cold", "to": "hv-b", "marker": TOKEN, "offline": True, "disks": []}
    target.store.open_handover(UUID, "cold", "hv-a", "hv-b", options)
    assert target.store.move_handover(UUID, "requested", "listening", uri="offline")
    Receiver("127.0.0.1", logging.getLogger("test"), lambda *event: None).poll(target)  # a fresh monitor's
    found = target.store.get_handover(UUID)
    assert found["state"] == "refused" and "restarted" in found["error"], found
    assert not made.exists() and target.store.journal_list(UUID + "@hv-b") == []
    assert records.load(target.store, "cold").host == "hv-a"
