# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What an infinivirt_vm task must do: a pure function of the stored record, what runs now
and what the task asks for.

``plan_vm`` decides; ``vm.service`` applies the plan (check mode returns it unapplied), so
a check run and a real run can never disagree about ``changed``, the diff or the actions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import HotplugPlan, plan_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicHotplugPlan, plan_nic_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    BOOKKEEPING_FIELDS,
    VmSpec,
    changed_fields,
    pending_restart,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    ABSENT,
    PAUSED,
    RUNNING,
    STATES,
    STOPPED,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import (
    PINNING_FIELDS,
    cpu_hotplug_live,
    memory_hotplug_live,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import UsbHotplugPlan, plan_usb_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import option_name, option_names

# What each asked-for state means for the process (present keeps whatever runs).
_TARGETS = {"running": RUNNING, "restarted": RUNNING, "stopped": STOPPED, "paused": PAUSED}


@dataclasses.dataclass(frozen=True)
class Live:
    """What runs now: the folded state (absent, stopped, running, paused), QEMU's own status
    (None: no process), and the base paths of disks that have external snapshots.

    ``half_started``: a start was cut off before the guest ran (row ``starting``, QEMU in
    prelaunch): that QEMU is ended first (``abort_start``) and the VM counts as stopped, so a
    running VM only ever comes from a whole start (firewall, display password, keys)."""

    state: str
    qemu_status: Optional[str] = None
    layered: Tuple[str, ...] = ()
    half_started: bool = False


@dataclasses.dataclass(frozen=True)
class Desired:
    """A validated request. ``spec`` is None only for ``state: absent``."""

    state: str
    spec: Optional[VmSpec] = None
    password_changed: bool = False
    restart_on_change: bool = False


@dataclasses.dataclass
class VmPlan:
    before_state: str
    after_state: str
    record: Optional[VmRecord]  # the row as the plan leaves it (None: removed or never made)
    actions: List[str] = dataclasses.field(default_factory=list)
    restart: bool = False
    pending: List[str] = dataclasses.field(default_factory=list)  # fields awaiting a restart
    disk_plug: Optional[HotplugPlan] = None
    nic_plug: Optional[NicHotplugPlan] = None
    usb_plug: Optional[UsbHotplugPlan] = None
    # The department changed while the VM runs, and neither a start nor a NIC hot-plug
    # (which both apply the firewall) is planned.
    sync_firewall: bool = False
    warnings: List[str] = dataclasses.field(default_factory=list)
    spec_changes: List[str] = dataclasses.field(default_factory=list)  # stored fields that change
    password_changed: bool = False  # a new display password is stored

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def target_state(asked: str, before: str) -> str:
    if asked == "present":
        return STOPPED if before == ABSENT else before
    return _TARGETS[asked]


def plan_vm(rec: Optional[VmRecord], live: Live, desired: Desired, host_id: str, new_uuid: str = "") -> VmPlan:
    """The plan that takes ``rec`` (running as ``live`` says) to ``desired``.

    ``new_uuid`` names a VM that does not exist yet; ``host_id`` is the host applying it.
    Raises StateError when the plan would change a VM that runs on another host."""
    if desired.state not in STATES:
        raise ValueError("unknown state %r" % desired.state)
    if desired.state == ABSENT:
        return _plan_absent(rec, live, host_id)
    spec = desired.spec
    target_rec, spec_changes, actions = _record_actions(rec, live, desired, host_id, new_uuid)
    before = live.state
    target = target_state(desired.state, before)
    alive = before in (RUNNING, PAUSED)
    running_spec = target_rec.running_spec
    pending, disk_plug, nic_plug, usb_plug = _live_changes(running_spec if alive else None, spec, live)
    plugs = _tuning_plugs(running_spec if alive else None, spec, live)
    pending = [f for f in pending if f not in plugs]
    restart = desired.state == "restarted" or (bool(pending) and target != STOPPED and desired.restart_on_change)
    if restart or target == STOPPED:
        disk_plug = nic_plug = usb_plug = None  # the next process gets every device anyway
    if (
        desired.password_changed
        and not restart
        and alive
        and running_spec is not None
        and running_spec.graphics_password_set
    ):
        actions.append("set_password")  # a running display takes a new password at once
    for action, plug in (("hotplug_disks", disk_plug), ("hotplug_nics", nic_plug), ("hotplug_usb", usb_plug)):
        if plug is not None:
            actions.append(action)
    if alive and not restart and target != STOPPED:
        actions.extend(plugs.values())
        actions.extend(_live_tuning(rec, running_spec, spec, spec_changes))
    actions.extend(_transition(before, target, restart))

    plan = VmPlan(
        before_state=before,
        after_state=target,
        record=target_rec,
        actions=actions,
        restart=restart,
        disk_plug=disk_plug,
        nic_plug=nic_plug,
        usb_plug=usb_plug,
        spec_changes=list(spec_changes),
        password_changed=desired.password_changed,
    )
    _check_owner(rec, live, plan, host_id)
    _settle(plan, rec, spec_changes, pending)
    return plan


# How a task applies a changed option (plan_summary).
LIVE, RESTART, NEXT_START = "live", "restart", "next_start"


def plan_summary(plan: VmPlan) -> Dict[str, Any]:
    """The ``plan`` of a module result: the ordered actions; per changed option, how this task
    applies it (LIVE: to the running VM now; RESTART: stored, and taken at a restart, the one
    this task makes or a later one; NEXT_START: the VM does not run, or this task starts or stops it);
    and whether fields stay pending a restart after the task."""
    fields = [f for f in plan.spec_changes if f not in BOOKKEEPING_FIELDS]
    if plan.password_changed and "graphics_password_set" not in fields:
        fields.append("graphics_password_set")
    changes: Dict[str, str] = {}
    for field in fields:
        mode = _apply_mode(plan, field)
        name = option_name(field)
        if changes.get(name) not in (RESTART, NEXT_START):  # graphics: the most deferred of its fields
            changes[name] = mode
    return {"actions": list(plan.actions), "changes": changes, "restart_needed": bool(plan.pending)}


def _apply_mode(plan: VmPlan, field: str) -> str:
    if plan.before_state not in (RUNNING, PAUSED) or plan.after_state == STOPPED:
        return NEXT_START
    if plan.restart:
        return RESTART
    if field == "graphics_password_set" and plan.password_changed:
        # the running display takes a new password at once, unless it had none
        return LIVE if "set_password" in plan.actions else RESTART
    return RESTART if field in plan.pending else LIVE


def _record_actions(
    rec: Optional[VmRecord], live: Live, desired: Desired, host_id: str, new_uuid: str
) -> Tuple[VmRecord, List[str], List[str]]:
    """The record as it will be stored, the spec fields that change, and the first actions
    (finish a half-done start, create or update the row)."""
    spec = desired.spec
    actions: List[str] = ["abort_start"] if live.half_started else []
    if rec is None:
        actions.append("create")
        return (
            VmRecord(uuid=new_uuid, name=spec.name, host=host_id, status=STOPPED, spec=spec),
            list(spec.to_dict()),
            actions,
        )
    spec_changes = changed_fields(rec.spec, spec)
    if spec_changes or desired.password_changed:
        actions.append("update")
    return dataclasses.replace(rec, spec=spec), spec_changes, actions


def _settle(plan: VmPlan, rec: Optional[VmRecord], spec_changes: List[str], pending: List[str]) -> None:
    """Whether the firewall follows a department move, and what stays pending a restart."""
    running_spec = plan.record.running_spec
    plan.sync_firewall = (
        "department" in spec_changes
        and rec is not None
        and running_spec is not None
        and not {"start", "hotplug_nics"} & set(plan.actions)
    )
    if plan.restart or "start" in plan.actions or plan.after_state == STOPPED:
        plan.pending = []
    else:
        plan.pending = pending
    if plan.pending:
        options = ", ".join(option_names(plan.pending))
        plan.warnings.append(
            "VM %s runs with an older configuration; a restart is needed to apply: %s "
            "(set restart_on_change: true or state: restarted)" % (plan.record.spec.name, options)
        )


def _live_changes(
    running: Optional[VmSpec], spec: VmSpec, live: Live
) -> Tuple[List[str], Optional[HotplugPlan], Optional[NicHotplugPlan], Optional[UsbHotplugPlan]]:
    """Fields of a live VM (``running``: the spec its process got, None when none runs) that
    wait for a restart, and the disk, NIC and USB hot-plugs that can be done instead (only on
    a running VM, and only when every change of that kind can be done live)."""
    if running is None:
        return [], None, None, None
    pending = pending_restart(running, spec)
    disk_plug = nic_plug = None
    if "disks" in pending and live.state == RUNNING:
        disk_plug = plan_hotplug(running.disks, spec.disks, live.layered)
        disk_plug = disk_plug if disk_plug.live else None
    if "nics" in pending and live.state == RUNNING:
        nic_plug = plan_nic_hotplug(running.nics, spec.nics)
        nic_plug = nic_plug if nic_plug.live else None
    usb_plug = None
    if "usb" in pending and live.state == RUNNING:
        usb_plug = plan_usb_hotplug(running.usb, spec.usb)
        usb_plug = usb_plug if usb_plug.live else None
    plugged = ({"disks"} if disk_plug else set()) | ({"nics"} if nic_plug else set()) | ({"usb"} if usb_plug else set())
    return [f for f in pending if f not in plugged], disk_plug, nic_plug, usb_plug


def _tuning_plugs(running: Optional[VmSpec], spec: VmSpec, live: Live) -> Dict[str, str]:
    """Pending field -> the action that applies it live: vCPUs and DIMMs added."""
    if running is None or live.state != RUNNING:
        return {}
    plugs = {}
    if running.vcpus != spec.vcpus and cpu_hotplug_live(running, spec):
        plugs["vcpus"] = "hotplug_cpus"
    if running.memory_hotplug != spec.memory_hotplug and memory_hotplug_live(running, spec):
        plugs["memory_hotplug"] = "hotplug_memory"
    return plugs


def _live_tuning(rec: Optional[VmRecord], running: Optional[VmSpec], spec: VmSpec, changes: List[str]) -> List[str]:
    """Live fields a running VM takes over QMP or by affinity: the balloon target (when it
    has a balloon), the CPU pins."""
    if rec is None or running is None:
        return []
    actions = []
    if "memory_target_mb" in changes and running.memory_balloon and spec.memory_balloon:
        actions.append("set_balloon")
    if set(PINNING_FIELDS) & set(changes):
        actions.append("pin_cpus")
    return actions


def _transition(current: str, target: str, restart: bool) -> List[str]:
    """The process actions from ``current`` to ``target``."""
    actions = []
    if current == ABSENT:
        current = STOPPED
    if restart and current != STOPPED:
        actions.append("stop")
        current = STOPPED
    if current == target:
        return actions
    if target == STOPPED:
        actions.append("stop")
    elif current == STOPPED:
        actions.append("start")
    elif target == PAUSED:
        actions.append("pause")
    else:
        actions.append("resume")
    return actions


def _plan_absent(rec: Optional[VmRecord], live: Live, host_id: str) -> VmPlan:
    if rec is None:
        return VmPlan(before_state=ABSENT, after_state=ABSENT, record=None)
    plan = VmPlan(
        before_state=live.state,
        after_state=ABSENT,
        record=None,
        actions=(["abort_start"] if live.half_started else []) + ["delete"],
    )
    _check_owner(rec, live, plan, host_id)
    return plan


def _check_owner(rec: Optional[VmRecord], live: Live, plan: VmPlan, host_id: str) -> None:
    """Another host's VM may change here only while it is stopped (its process cannot be
    reached from here; starting it moves it to this host)."""
    if rec is not None and rec.host != host_id and live.state != STOPPED and plan.changed:
        raise StateError(
            "VM %s is owned by host %s, where it was last recorded %s (PID %s, at %s); run "
            "this task on %s, or stop the VM there first"
            % (rec.name, rec.host, rec.status, rec.qemu_pid, rec.updated_at, rec.host)
        )
