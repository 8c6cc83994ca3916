# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Grow a volume through the running VM that has it attached (QMP block_resize), so the guest
sees the new size at once. Kept apart from the VM engine: infinivirt_disk needs only this of
it, and speaks QMP (needs qemu.qmp) only when a running VM really has the volume."""

from __future__ import annotations

import os
from typing import Optional

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_runs_vm, read_pidfile
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec, node_names
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

QMP_TIMEOUT = 10.0


def _attached(rec: Optional[VmRecord], real: str) -> Optional[DiskSpec]:
    if rec is None or rec.running_spec is None:
        return None
    return next((d for d in rec.running_spec.disks if os.path.realpath(d.path) == real), None)


def _alive(rec: VmRecord, proc: str) -> bool:
    """The row's pidfile names a live process that carries the VM's UUID (PID reuse is real)."""
    pid = read_pidfile(rec.pidfile_path) if rec.pidfile_path else None
    return process_runs_vm(pid, rec.uuid, proc)


def resize_attached_disk(ctx: HostContext, path: str, size: int, proc: str = "/proc") -> Optional[str]:
    """Grow ``path`` through the running VM on this host that has it attached and return
    that VM's name, or None when no running VM here has it (grow it offline then). Takes the
    VM's lock (after the caller's volume lock)."""
    real = os.path.realpath(path)
    for rec in records.load_all(ctx.store, host=ctx.host_id):
        if _attached(rec, real) is None:
            continue
        with ctx.store.vm_lock(rec.name, ctx.lock_timeout):
            rec = records.load(ctx.store, rec.name)
            disk = _attached(rec, real)
            if disk is not None and any(layer["base_path"] == disk.path for layer in ctx.store.list_layers(rec.uuid)):
                raise StateError(
                    "volume %s has external snapshots in VM %s; delete them before growing it" % (path, rec.name)
                )
            if disk is not None and _alive(rec, proc):
                with QmpSession(rec.qmp_socket_path, rec.name, QMP_TIMEOUT) as qmp:
                    qmp.execute("block_resize", {"node-name": node_names(disk)[1], "size": size}, timeout=QMP_TIMEOUT)
                return rec.name
    return None
