# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's rows as the store keeps them: ``vms`` (what runs) and ``machine_configuration`` (the
definition), as plain values. The store does not know the VM model: vm/engine/records.py turns a
``VmRow`` into a ``VmRecord`` and back, so a module that reads no VM does not ship the model."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

# machine_configuration columns holding JSON text (NULL stays None): the VM definition's list and
# dict fields (store/test_vms.py holds the two together).
JSON_COLUMNS = (
    "cpu_flags",
    "disks",
    "nics",
    "memory_hotplug",
    "cpu_topology",
    "numa",
    "cpu_pinning",
    "iothreads",
    "defaulted",
    "usb",
    "tags",
    "labels",
    "tpm",
    "rng",
    "watchdog",
    "smbios",
    "vsock",
    "shared_dirs",
)
# machine_configuration columns that are not part of the definition a VmRow carries.
NOT_SPEC_COLUMNS = ("vm_uuid", "graphics_password", "cloud_init", "unattend")  # the key; sealed secrets (get_secret)


@dataclasses.dataclass
class VmRow:
    """One VM: the ``vms`` columns, ``spec`` (machine_configuration's columns without the key,
    JSON decoded) and ``running_spec`` (the definition its process started with, decoded)."""

    uuid: str
    name: str
    host: str
    status: str
    spec: Dict[str, Any]
    version: int = 1
    qemu_pid: Optional[int] = None
    qmp_socket_path: Optional[str] = None
    serial_log_path: Optional[str] = None
    running_spec: Optional[Dict[str, Any]] = None
    launch_accel: Optional[str] = None
    launch_cpu: Optional[str] = None
    created_at: str = ""
    updated_at: str = ""
    pidfile_path: Optional[str] = None
    launch_graphics_port: Optional[int] = None
    qemu_started: Optional[int] = None  # the QEMU PID's start time (clock ticks since boot)
    machine_resolved: Optional[str] = None  # the versioned machine type of its first start


# The vms table's columns: a VmRow's fields but the definition (machine_configuration's).
VM_COLUMNS = tuple(f.name for f in dataclasses.fields(VmRow) if f.name != "spec")


def row_from_select(row: Dict[str, Any]) -> VmRow:
    """A VmRow from ``SELECT v.*, c.*`` of vms joined with machine_configuration."""
    spec = {}
    for column, value in row.items():
        if column in VM_COLUMNS or column in NOT_SPEC_COLUMNS:
            continue
        spec[column] = json.loads(value) if column in JSON_COLUMNS and value is not None else value
    values = {column: row[column] for column in VM_COLUMNS}
    running = values.pop("running_spec")
    return VmRow(spec=spec, running_spec=json.loads(running) if running else None, **values)


def vm_values(row: VmRow) -> Tuple[Any, ...]:
    """The ``vms`` columns of a row, in VM_COLUMNS order."""
    values = dataclasses.asdict(row)
    running = values["running_spec"]
    values["running_spec"] = json.dumps(running) if running is not None else None
    return tuple(values[column] for column in VM_COLUMNS)


def spec_columns(row: VmRow) -> Dict[str, Any]:
    """The machine_configuration columns of a row (without the key), JSON encoded."""
    return {
        column: json.dumps(value, sort_keys=True) if column in JSON_COLUMNS and value is not None else value
        for column, value in row.spec.items()
        if column != "name"
    }
