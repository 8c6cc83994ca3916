# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target side's answers that need no QEMU (monitor/receiving.py): each refusal says why
in the request row, and moves nothing else."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.monitor.receiving import Receiver, free_port
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

UUID = "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11"


@pytest.fixture
def target(hv_b, tmp_path):
    """Host hv-b's engine (storage root: tmp_path/shared) and a VM of hv-a in the store."""
    ctx, _shared = hv_b
    disk = DiskSpec(path=str(tmp_path / "local" / "web.qcow2"))
    spec = VmSpec(name="web", disks=(disk,))
    records.insert(ctx.store, VmRecord(uuid=UUID, name="web", host="hv-a", status="running", spec=spec))
    return Engine.of(ctx)


def _answer(engine, address):
    events = []
    engine.store.open_handover(UUID, "web", "hv-a", "hv-b", {"name": "web", "to": "hv-b", "storage": "auto"})
    Receiver(address, logging.getLogger("test"), lambda *event: events.append(event)).poll(engine)
    return engine.store.get_handover(UUID), events


def test_a_monitor_without_an_address_refuses_saying_so(target):
    found, events = _answer(target, None)
    assert found["state"] == "refused" and "no --migration-address" in found["error"], found
    assert [e[1] for e in events] == ["migration_refused"]
    assert records.load(target.store, "web").host == "hv-a", "the row stays the source's"


def test_a_disk_outside_the_storage_roots_is_refused_before_anything_starts(target):
    found, _events = _answer(target, "127.0.0.1")
    assert found["state"] == "refused", found
    assert "storage auto: disks[0].path" in found["error"] and "on host hv-b" in found["error"], found["error"]
    assert os.listdir(target.run_dir) == [], "no start was tried"
    assert target.store.journal_list(UUID + "@hv-b") == []


def test_a_vm_that_left_its_source_is_refused(target):
    rec = records.load(target.store, "web")
    rec.host = "hv-c"
    records.save(target.store, rec)
    found, _events = _answer(target, "127.0.0.1")
    assert found["state"] == "refused" and "is not on hv-a any more" in found["error"], found


def test_free_port_gives_a_port_one_can_listen_on():
    port = free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
