# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM planner through a table of states, without QEMU: every asked state against absent,
stopped, running, paused, crashed and foreign-host records, with and without pending changes."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_summary, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import STATES

HOST = "hv-a"
SPEC = VmSpec(name="vm", vcpus=1, memory_mb=256)
BIGGER = dataclasses.replace(SPEC, memory_mb=512)  # needs a restart to take effect


def record(status, running_spec=None, host=HOST, spec=SPEC):
    return VmRecord(
        uuid="u-1",
        name="vm",
        host=host,
        status=status,
        spec=spec,
        running_spec=running_spec,
        qemu_pid=42 if running_spec else None,
    )


# (record, live state) for each kind of VM the planner meets.
KINDS = {
    "absent": (None, "absent"),
    "stopped": (record("stopped"), "stopped"),
    "running": (record("running", SPEC), "running"),
    "paused": (record("paused", SPEC), "paused"),
    # The row says running but the process is gone (check mode sees it before reconcile).
    "crashed": (record("running", SPEC), "stopped"),
}

# Expected actions for an unchanged spec: KIND -> {asked state: actions}.
EXPECTED = {
    "absent": {
        "present": ["create"],
        "running": ["create", "start"],
        "stopped": ["create"],
        "paused": ["create", "start"],
        "restarted": ["create", "start"],
        "absent": [],
    },
    "stopped": {
        "present": [],
        "running": ["start"],
        "stopped": [],
        "paused": ["start"],
        "restarted": ["start"],
        "absent": ["delete"],
    },
    "running": {
        "present": [],
        "running": [],
        "stopped": ["stop"],
        "paused": ["pause"],
        "restarted": ["stop", "start"],
        "absent": ["delete"],
    },
    "paused": {
        "present": [],
        "running": ["resume"],
        "stopped": ["stop"],
        "paused": [],
        "restarted": ["stop", "start"],
        "absent": ["delete"],
    },
    "crashed": {
        "present": [],
        "running": ["start"],
        "stopped": [],
        "paused": ["start"],
        "restarted": ["start"],
        "absent": ["delete"],
    },
}
AFTER = {
    "present": None,
    "running": "running",
    "stopped": "stopped",
    "paused": "paused",
    "restarted": "running",
    "absent": "absent",
}


def plan(kind, state, spec=SPEC, **desired):
    rec, live = KINDS[kind]
    return plan_vm(
        rec, Live(live), Desired(state, None if state == "absent" else spec, **desired), HOST, new_uuid="u-new"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("state", STATES)
def test_every_state_from_every_kind_of_vm(kind, state):
    result = plan(kind, state)
    assert result.actions == EXPECTED[kind][state]
    assert result.changed == bool(EXPECTED[kind][state])
    before = KINDS[kind][1]
    assert result.before_state == before
    expected_after = AFTER[state] or ("stopped" if before == "absent" else before)
    assert result.after_state == expected_after
    assert result.pending == [] and result.warnings == []
    if state == "absent":
        assert result.record is None
    else:
        assert result.record.spec == SPEC
        assert result.record.uuid == ("u-new" if kind == "absent" else "u-1")


@pytest.mark.parametrize(
    "kind,state,restart_on_change,actions,pending",
    [
        ("running", "running", False, ["update"], ["memory_mb"]),
        ("running", "present", False, ["update"], ["memory_mb"]),
        ("running", "running", True, ["update", "stop", "start"], []),
        ("running", "restarted", False, ["update", "stop", "start"], []),
        ("running", "stopped", False, ["update", "stop"], []),
        ("running", "stopped", True, ["update", "stop"], []),
        ("running", "absent", False, ["delete"], []),
        ("paused", "paused", False, ["update"], ["memory_mb"]),
        ("paused", "paused", True, ["update", "stop", "start"], []),
        ("paused", "running", False, ["update", "resume"], ["memory_mb"]),
        ("stopped", "running", False, ["update", "start"], []),
        ("stopped", "present", True, ["update"], []),
        ("crashed", "running", False, ["update", "start"], []),
        ("absent", "running", True, ["create", "start"], []),
    ],
)
def test_pending_changes(kind, state, restart_on_change, actions, pending):
    result = plan(kind, state, spec=BIGGER, restart_on_change=restart_on_change)
    assert result.actions == actions
    assert result.pending == pending
    assert bool(result.warnings) == bool(pending)
    if pending:
        assert "memory_mb" in result.warnings[0] and "restart" in result.warnings[0]
    assert result.restart == ("stop" in actions and "start" in actions)


def test_a_pending_change_is_kept_until_a_restart():
    # Stored already, not yet running: the next plain run changes nothing but still says so.
    rec = record("running", SPEC, spec=BIGGER)
    result = plan_vm(rec, Live("running"), Desired("running", BIGGER), HOST)
    assert result.actions == [] and result.pending == ["memory_mb"] and result.warnings


def test_disks_and_nics_are_plugged_live_when_they_can_be():
    disk = DiskSpec(path="/images/data.qcow2")
    nic = NicSpec(bridge="br0", mac="52:54:00:00:00:01")
    wanted = dataclasses.replace(SPEC, disks=(disk,), nics=(nic,))
    result = plan("running", "running", spec=wanted)
    assert result.actions == ["update", "hotplug_disks", "hotplug_nics"]
    assert result.disk_plug.add == (disk,) and result.nic_plug.add == (nic,)
    assert result.pending == []
    # A SATA disk cannot be hot-plugged: the change waits for a restart instead.
    sata = dataclasses.replace(SPEC, disks=(dataclasses.replace(disk, bus="sata"),))
    result = plan("running", "running", spec=sata)
    assert result.actions == ["update"] and result.pending == ["disks"] and result.disk_plug is None
    # A disk with external snapshots is unplugged by a restart only.
    rec = record("running", dataclasses.replace(SPEC, disks=(disk,)), spec=dataclasses.replace(SPEC, disks=(disk,)))
    result = plan_vm(rec, Live("running", "running", (disk.path,)), Desired("running", SPEC), HOST)
    assert result.actions == ["update"] and result.pending == ["disks"]
    # A paused VM takes no hot-plug: the change waits.
    result = plan("paused", "paused", spec=wanted)
    assert result.actions == ["update"] and set(result.pending) == {"disks", "nics"}
    # A restart plugs nothing live: the new process gets them all.
    result = plan("running", "restarted", spec=wanted)
    assert result.actions == ["update", "stop", "start"] and result.disk_plug is None
    # Nor does a stop: the next start gets them.
    result = plan("running", "stopped", spec=wanted)
    assert result.actions == ["update", "stop"] and result.disk_plug is None and result.nic_plug is None


def test_a_department_follows_a_running_vm_live():
    moved = dataclasses.replace(SPEC, department="web")
    result = plan("running", "running", spec=moved)
    assert result.actions == ["update"] and result.pending == [] and result.sync_firewall
    assert not plan("stopped", "present", spec=moved).sync_firewall
    assert not plan("stopped", "running", spec=moved).sync_firewall  # the start applies it


def test_a_new_display_password_reaches_a_running_display_at_once():
    vnc = dataclasses.replace(SPEC, graphics_type="vnc", graphics_password_set=True)
    rec = record("running", vnc, spec=vnc)
    result = plan_vm(rec, Live("running"), Desired("running", vnc, password_changed=True), HOST)
    assert result.actions == ["update", "set_password"]
    result = plan_vm(rec, Live("running"), Desired("restarted", vnc, password_changed=True), HOST)
    assert result.actions == ["update", "stop", "start"]  # the new process gets it at start
    result = plan_vm(record("stopped", spec=vnc), Live("stopped"), Desired("present", vnc, password_changed=True), HOST)
    assert result.actions == ["update"]


@pytest.mark.parametrize("state", STATES)
def test_a_vm_running_on_another_host_cannot_be_changed_here(state):
    rec = record("running", SPEC, host="hv-b")
    if EXPECTED["running"][state]:
        with pytest.raises(StateError, match="owned by host hv-b"):
            plan_vm(rec, Live("running"), Desired(state, None if state == "absent" else SPEC), HOST)
    else:
        assert plan_vm(rec, Live("running"), Desired(state, SPEC), HOST).actions == []
    with pytest.raises(StateError):  # nor can its definition
        plan_vm(rec, Live("running"), Desired("present", BIGGER), HOST)


def test_a_stopped_vm_of_another_host_can_be_started_here():
    rec = record("stopped", host="hv-b")
    assert plan_vm(rec, Live("stopped"), Desired("running", SPEC), HOST).actions == ["start"]
    assert plan_vm(rec, Live("stopped"), Desired("absent"), HOST).actions == ["delete"]


def test_the_planner_does_not_touch_the_record_it_was_given():
    rec = record("running", SPEC)
    before = dataclasses.asdict(rec)
    plan_vm(rec, Live("running"), Desired("restarted", BIGGER), HOST)
    assert dataclasses.asdict(rec) == before


@pytest.mark.parametrize(
    "state,actions",
    [
        ("present", ["abort_start"]),
        ("running", ["abort_start", "start"]),
        ("paused", ["abort_start", "start"]),
        ("restarted", ["abort_start", "start"]),
        ("stopped", ["abort_start"]),
        ("absent", ["abort_start", "delete"]),
    ],
)
def test_a_start_cut_off_half_way_is_never_resumed(state, actions):
    """Row 'starting', QEMU in prelaunch: no bare 'cont' ever; the half-made start goes."""
    rec = record("starting", SPEC)
    live = Live("stopped", "prelaunch", half_started=True)
    result = plan_vm(rec, live, Desired(state, None if state == "absent" else SPEC), HOST)
    assert result.actions == actions and "resume" not in result.actions
    assert result.changed


BALLOON = dataclasses.replace(SPEC, memory_balloon=True)
VNC = dataclasses.replace(SPEC, graphics_type="vnc", graphics_password_set=True)
DATA_DISK = DiskSpec(path="/images/data.qcow2")


@pytest.mark.parametrize(
    "rec,live,desired,actions,changes,restart_needed",
    [
        # no-op: nothing to do, nothing changes
        (record("running", SPEC), "running", Desired("running", SPEC), [], {}, False),
        # a running VM's balloon target is set over QMP
        (
            record("running", BALLOON, spec=BALLOON),
            "running",
            Desired("running", dataclasses.replace(BALLOON, memory_target_mb=128)),
            ["update", "set_balloon"],
            {"memory_target_mb": "live"},
            False,
        ),
        # more memory for a running VM: stored, pending the next restart
        (
            record("running", SPEC),
            "running",
            Desired("running", BIGGER),
            ["update"],
            {"memory_mb": "restart"},
            True,
        ),
        # ... unless the task restarts it
        (
            record("running", SPEC),
            "running",
            Desired("running", BIGGER, restart_on_change=True),
            ["update", "stop", "start"],
            {"memory_mb": "restart"},
            False,
        ),
        # a stopped VM takes the change when it starts, whether this task starts it or not
        (record("stopped"), "stopped", Desired("present", BIGGER), ["update"], {"memory_mb": "next_start"}, False),
        (
            record("stopped"),
            "stopped",
            Desired("running", BIGGER),
            ["update", "start"],
            {"memory_mb": "next_start"},
            False,
        ),
        # a running VM this task stops takes it at its next start
        (
            record("running", SPEC),
            "running",
            Desired("stopped", BIGGER),
            ["update", "stop"],
            {"memory_mb": "next_start"},
            False,
        ),
        # a virtio disk is plugged into the running VM
        (
            record("running", SPEC),
            "running",
            Desired("running", dataclasses.replace(SPEC, disks=(DATA_DISK,))),
            ["update", "hotplug_disks"],
            {"disks": "live"},
            False,
        ),
        # a new display password reaches the running display at once
        (
            record("running", VNC, spec=VNC),
            "running",
            Desired("running", VNC, password_changed=True),
            ["update", "set_password"],
            {"graphics": "live"},
            False,
        ),
    ],
)
def test_plan_summary(rec, live, desired, actions, changes, restart_needed):
    summary = plan_summary(plan_vm(rec, Live(live), desired, HOST))
    assert summary == {"actions": actions, "changes": changes, "restart_needed": restart_needed}


def test_plan_summary_of_a_new_vm_and_a_removed_one():
    summary = plan_summary(plan("absent", "running"))
    assert summary["actions"] == ["create", "start"] and not summary["restart_needed"]
    # every option is new, by the name the user writes, and applies as the VM starts
    assert {"name", "memory_mb", "disks", "graphics"} <= set(summary["changes"])
    assert not {"graphics_type", "graphics_password_set", "defaulted"} & set(summary["changes"])
    assert set(summary["changes"].values()) == {"next_start"}
    assert plan_summary(plan("running", "absent")) == {"actions": ["delete"], "changes": {}, "restart_needed": False}


def test_the_restart_warning_names_options_not_spec_fields():
    vnc = dataclasses.replace(SPEC, graphics_type="vnc")
    moved = dataclasses.replace(vnc, graphics_port=5907, graphics_listen="::1", memory_mb=512)
    result = plan_vm(record("running", vnc, spec=vnc), Live("running"), Desired("running", moved), HOST)
    assert result.actions == ["update"] and set(result.pending) == {"memory_mb", "graphics_listen", "graphics_port"}
    (warning,) = result.warnings
    assert "apply: memory_mb, graphics (" in warning, warning
    assert "graphics_" not in warning
