# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Internal qcow2 snapshots of a VM's disks, taken, reverted and deleted as one set.

A stopped VM's disks are handled with qemu-img. A running VM is snapshotted live: disks
only through one QMP transaction of blockdev-snapshot-internal-sync (atomic across disks),
or disks plus RAM and device state through the snapshot-save job, which snapshot-load
reverts without a restart. A disk-only snapshot of a running VM is reverted by stopping
the VM, reverting offline and starting it again. A UEFI VM's NVRAM is copied with each
snapshot and copied back on revert.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.disks import DiskSpec, node_names
from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.lifecycle import RUNNING, STOPPED
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.spec import validate_name
from ansible_collections.infinivirt.core.plugins.module_utils.storage import QemuImg

STATES = ("present", "absent", "reverted")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOB_TIMEOUT = 600.0


def validate_snapshot_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError("name", "%r must be 1 to 64 letters, digits, '.', '_' or '-', starting "
                        "with a letter or digit" % (name,))
    return name


def offline_snapshots(disk: DiskSpec) -> List[Dict[str, Any]]:
    """The snapshots in a qcow2 image (-U: a running QEMU may hold it)."""
    return QemuImg().info(disk.path, fmt="qcow2").get("snapshots", [])


class SnapshotService:
    """What infinivirt_snapshot does, on top of a VmService."""

    def __init__(self, vm_service):
        self.vms = vm_service
        self.lifecycle = vm_service.lifecycle
        self.store = vm_service.store

    def _qcow2_disks(self, rec) -> List[DiskSpec]:
        writable = [d for d in rec.spec.disks if not d.readonly and d.media == "disk"]
        raw = [d.path for d in writable if d.format != "qcow2"]
        if raw:
            raise SpecError("vm", "VM %s has raw disks (%s); internal snapshots need every "
                            "writable disk in qcow2" % (rec.name, ", ".join(raw)))
        if not writable:
            raise SpecError("vm", "VM %s has no writable disk to snapshot" % rec.name)
        return writable

    def list(self, rec) -> Dict[str, Dict[str, Any]]:
        """Snapshots present on every writable disk, by name (a partial set is not one)."""
        disks = self._qcow2_disks(rec)
        if self.lifecycle.is_alive(rec):
            nodes = {n["node-name"]: n for n in
                     self.lifecycle._qmp(rec, "query-named-block-nodes", {"flat": True})}
            per_disk = [nodes[node_names(d)[1]]["image"].get("snapshots", []) for d in disks]
        else:
            per_disk = [offline_snapshots(d) for d in disks]
        names = set.intersection(*({s["name"] for s in snaps} for snaps in per_disk))
        first = {s["name"]: s for s in per_disk[0]}
        return {name: {"name": name, "vm_state_size": first[name].get("vm-state-size", 0),
                       "date_sec": first[name].get("date-sec")} for name in sorted(names)}

    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        vm_name = validate_name(params.get("vm"))
        name = validate_snapshot_name(params.get("name"))
        state = params.get("state") or "present"
        if state not in STATES:
            raise SpecError("state", "must be one of %s, got %r" % (", ".join(STATES), state))
        with self.store.vm_lock(vm_name, self.vms.lock_timeout):
            rec = self.store.get_vm(vm_name)
            if rec is None:
                raise SpecError("vm", "VM %s does not exist" % vm_name)
            if rec.host != self.vms.hostname:
                raise StateError("VM %s is owned by host %s; manage its snapshots there"
                                 % (vm_name, rec.host))
            existing = self.list(rec)
            live = self.lifecycle.live_state(rec)
            action = self._plan(state, name, existing, live, params)
            if action and not check_mode:
                getattr(self, "_" + action)(rec, name, live, params)
            after = self.list(rec) if action and not check_mode else existing
        return {"changed": bool(action), "action": action, "snapshots": list(after.values()),
                "diff": {"before": {"snapshots": sorted(existing)},
                         "after": {"snapshots": sorted(after if not check_mode else
                                                       _predicted(existing, name, action))}}}

    @staticmethod
    def _plan(state: str, name: str, existing: Dict[str, Any], live: str,
              params: Dict[str, Any]) -> Optional[str]:
        if state == "present":
            if name in existing:
                return None
            if params.get("memory") and live != RUNNING:
                raise SpecError("memory", "a snapshot with memory state needs a running VM")
            return "create"
        if state == "absent":
            return "delete" if name in existing else None
        if name not in existing:
            raise SpecError("name", "VM has no snapshot %r to revert to" % name)
        return "revert"  # always a change: whether the disks still match is not known

    # -- NVRAM: a UEFI VM's variable store is a raw file; its snapshot is a copy ----------
    def _nvram_copy(self, rec, name: str) -> Optional[str]:
        if rec.spec.firmware != "uefi":
            return None
        return "%s.snapshot-%s" % (self.lifecycle.nvram_path(rec), name)

    def _save_nvram(self, rec, name: str) -> None:
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(self.lifecycle.nvram_path(rec)):
            self.store.journal_add(rec.uuid, "nvram", copy)  # removed with the VM
            shutil.copyfile(self.lifecycle.nvram_path(rec), copy)
            os.chmod(copy, 0o600)

    def _restore_nvram(self, rec, name: str) -> None:
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(copy):
            shutil.copyfile(copy, self.lifecycle.nvram_path(rec))

    def _drop_nvram(self, rec, name: str) -> None:
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(copy):
            os.unlink(copy)
            self.store.journal_remove(rec.uuid, "nvram", copy)

    # -- actions --------------------------------------------------------------------------
    def _create(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        self._save_nvram(rec, name)
        disks = self._qcow2_disks(rec)
        if live == STOPPED:
            for disk in disks:
                QemuImg().snapshot("create", name, disk.path)
        elif params.get("memory"):
            nodes = [node_names(d)[1] for d in disks]
            self._job(rec, "snapshot-save", {"tag": name, "vmstate": nodes[0], "devices": nodes})
        else:
            actions = [{"type": "blockdev-snapshot-internal-sync",
                        "data": {"device": node_names(d)[1], "name": name}} for d in disks]
            self.lifecycle._qmp(rec, "transaction", {"actions": actions})

    def _delete(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        self._drop_nvram(rec, name)
        disks = self._qcow2_disks(rec)
        if live == STOPPED:
            for disk in disks:
                QemuImg().snapshot("delete", name, disk.path)
        else:
            for disk in disks:
                self.lifecycle._qmp(rec, "blockdev-snapshot-delete-internal-sync",
                                    {"device": node_names(disk)[1], "name": name})

    def _revert(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        disks = self._qcow2_disks(rec)
        snapshot = self.list(rec)[name]
        if live != STOPPED and snapshot["vm_state_size"]:
            nodes = [node_names(d)[1] for d in disks]
            self._job(rec, "snapshot-load", {"tag": name, "vmstate": nodes[0], "devices": nodes})
            self._restore_nvram(rec, name)  # the loaded RAM holds the flash as it was then
            return
        was_running = live != STOPPED
        timeout, force = float(params.get("stop_timeout") or 60), bool(params.get("force"))
        if was_running:  # disks only: they cannot change under a running guest
            self.lifecycle.stop(rec, timeout, force)
        for disk in disks:
            QemuImg().snapshot("apply", name, disk.path)
        self._restore_nvram(rec, name)
        if was_running:
            self.lifecycle.start(rec, graphic_password=self.vms._graphic_password(rec))

    def _job(self, rec, command: str, arguments: Dict[str, Any]) -> None:
        """Run a QMP job to its end and report its error, if any."""
        job_id = "infinivirt-%s" % command
        with QmpSession(rec.qmp_socket_path, rec.name, self.lifecycle.qmp_timeout) as qmp:
            qmp.execute_and_wait(command, dict(arguments, **{"job-id": job_id}), "JOB_STATUS_CHANGE",
                                 {"id": job_id, "status": "concluded"}, timeout=JOB_TIMEOUT)
            job = next((j for j in qmp.execute("query-jobs") if j["id"] == job_id), {})
            qmp.execute("job-dismiss", {"id": job_id})
        if job.get("error"):
            raise QemuError("VM %s: %s failed: %s" % (rec.name, command, job["error"]))


def _predicted(existing: Dict[str, Any], name: str, action: Optional[str]) -> List[str]:
    names = set(existing)
    if action == "create":
        names.add(name)
    elif action == "delete":
        names.discard(name)
    return sorted(names)
