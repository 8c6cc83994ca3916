# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""shutdown_mode: agent on the stops a task makes besides infinivirt_vm's own: an offline
snapshot revert (infinivirt_snapshot) and exclusive (infinivirt_vms). A firmware-only VM has
the agent's channel and nobody behind it, so the agent never answers: the stop warns and
presses the ACPI power button, which QEMU's own event log shows (POWERDOWN, emitted for
QMP system_powerdown). The firmware never powers off, so force ends it after stop_timeout.
The real agent's side of these stops is in test_guest_agent_live.py (one cloud guest)."""

from __future__ import annotations

import os

import pytest
from helpers import make_image, qemu_event_log, qemu_events, vm_list

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

pytestmark = [pytest.mark.qemu]

FALLBACK = "shutdown_mode agent: the guest agent did not answer within 2 s; the ACPI power button was used instead"
# agent: at most 2 s (half the timeout), then the power button, then forced
STOP = {"shutdown_mode": "agent", "stop_timeout": 4, "force": True}


def event_names(handle):
    return [e["event"] for e in qemu_events(handle)]


def test_snapshot_and_exclusive_stops_fall_back_to_acpi(disk_service, images):
    svc = disk_service
    disk = make_image(os.path.join(images, "mute.qcow2"), "qcow2", 8)
    params = {
        "name": "mute",
        "accel": "tcg",
        "memory_mb": 64,
        "vcpus": 1,
        "guest_agent": True,
        "disks": [{"path": disk}],
        "state": "running",
    }
    first = svc.ensure(params, False).vm
    snaps = SnapshotService(svc.engine)
    taken = snaps.ensure({"vm": "mute", "name": "s1"}, False)
    assert taken["changed"] and taken["frozen"] is False and taken["frozen_filesystems"] == 0

    # A bad mode fails before anything is done: the VM keeps running, the snapshot stays.
    with pytest.raises(SpecError) as err:
        snaps.ensure({"vm": "mute", "name": "s1", "state": "reverted", "shutdown_mode": "poweroff"}, False)
    assert err.value.field == "shutdown_mode"
    assert vm_list(svc, "mute")[0]["pid"] == first["pid"]

    # The revert of a disk-only snapshot stops the VM: the agent is asked, then ACPI.
    with qemu_event_log(svc, first) as events_file:
        reverted = snaps.ensure(dict(STOP, vm="mute", name="s1", state="reverted"), False)
        names = event_names(events_file)
    assert reverted["changed"] and reverted["action"] == "revert"
    assert reverted["warnings"] == ["VM mute: " + FALLBACK], reverted["warnings"]
    assert "POWERDOWN" in names, names
    again = vm_list(svc, "mute")[0]
    assert again["status"] == "running" and again["pid"] != first["pid"]  # started again

    # exclusive with defaults.shutdown_mode: agent stops the unlisted VM the same way.
    spec = vm_argument_spec()
    prepared = prepare([], STOP, lambda entry, path: validate_options(spec, entry, path))
    assert prepared.problems == [] and prepared.stop_params["shutdown_mode"] == "agent"
    batch = VmBatch(svc.ctx, lambda: pytest.fail("one VM needs no worker context"), parallel=1)
    with qemu_event_log(svc, again) as events_file:
        result = batch.converge(
            [], False, exclusive_state="stopped", stop_params=prepared.stop_params, allow_empty=True
        )
        names = event_names(events_file)
    assert "failed" not in result, result.get("msg")
    (unlisted,) = result["unlisted"]
    assert unlisted["changed"] and unlisted["vm"]["status"] == "stopped"
    assert unlisted["warnings"] == ["VM mute: " + FALLBACK]
    assert result["warnings"] == ["mute: VM mute: " + FALLBACK]
    assert "POWERDOWN" in names, names
    assert vm_list(svc, "mute")[0]["status"] == "stopped"
