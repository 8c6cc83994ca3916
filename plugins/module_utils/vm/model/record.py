# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM as the engine sees it: its spec and what its running process was started with.

The store keeps it as a plain row (store/vms.py ``VmRow``); ``record_from_row`` and
``row_values`` convert (vm/engine/records.py reads and writes through them).
``firewall_vm`` is what the firewall is told of the VM (firewall/ports.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.firewall.ports import FirewallVm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import ports
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import SPEC_FIELDS, VmSpec


@dataclasses.dataclass
class VmRecord:
    uuid: str
    name: str
    host: str
    status: str  # what the last operation left: stopped, running, paused
    spec: VmSpec
    version: int = 1
    qemu_pid: Optional[int] = None
    qemu_started: Optional[int] = None  # the PID's start time (host/liveness.py): PIDs are reused
    qmp_socket_path: Optional[str] = None
    serial_log_path: Optional[str] = None
    running_spec: Optional[VmSpec] = None  # the spec the live process was started with
    launch_accel: Optional[str] = None  # accelerator and -cpu the live process really got
    launch_cpu: Optional[str] = None
    pidfile_path: Optional[str] = None
    launch_graphics_port: Optional[int] = None
    # machine_type as QEMU resolved it at the first start (vm/model/machine.py), kept across
    # stops: every later start, here or on a migration target, runs the same version
    machine_resolved: Optional[str] = None
    created_at: str = ""
    updated_at: str = ""

    def summary(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "host": self.host,
            "status": self.status,
            "version": self.version,
        }


# The VmRecord fields a store row carries as they are (spec and running_spec are converted).
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(VmRecord) if f.name not in ("spec", "running_spec"))


def record_from_row(row: Any) -> VmRecord:
    """A VmRecord from a store row (store/vms.py VmRow). A NULL column (a row older than the
    column) takes the spec's default."""
    spec = {f: v for f, v in row.spec.items() if f in SPEC_FIELDS and v is not None}
    spec["name"] = row.name
    running = VmSpec.from_dict(row.running_spec) if row.running_spec else None
    return VmRecord(spec=VmSpec.from_dict(spec), running_spec=running, **{f: getattr(row, f) for f in ROW_FIELDS})


def row_values(rec: VmRecord) -> Dict[str, Any]:
    """The keyword arguments of a store row (store/vms.py VmRow) for ``rec``."""
    values = {f: getattr(rec, f) for f in ROW_FIELDS}
    values["spec"] = rec.spec.to_dict()
    values["running_spec"] = rec.running_spec.to_dict() if rec.running_spec else None
    return values


def firewall_vm(rec: VmRecord) -> FirewallVm:
    """What the firewall needs of the VM: its NICs' ports while it runs, in their namespace."""
    running = rec.running_spec
    return FirewallVm(
        uuid=rec.uuid,
        name=rec.name,
        host=rec.host,
        department=rec.spec.department,
        running=running is not None,
        netns=running.netns if running is not None else rec.spec.netns,
        ports=tuple(ports(running.nics)) if running is not None else (),
    )
