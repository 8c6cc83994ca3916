# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the infinivirt_vm and infinivirt_vm_info modules do, without Ansible.

``ensure_vm`` plans first (so check mode predicts exactly what a real run does), then
applies the plan under the VM's lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import uuid as uuidlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import HostPaths
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import (
    MASK,
    SecretBox,
    SecretError,
    load_or_create_key,
)
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.records import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.disks import DiskSpec, plan_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.lifecycle import (
    DEFAULT_NVRAM_DIR,
    PAUSED,
    RUNNING,
    STOPPED,
    Lifecycle,
    VmPaths,
    fold_status,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import plan_nic_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.spec import (
    VmSpec,
    changed_fields,
    merge_params,
    validate,
    validate_graphic_password,
    validate_name,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key

STATES = ("present", "running", "stopped", "paused", "restarted", "absent")


@dataclasses.dataclass
class Outcome:
    changed: bool = False
    vm: Dict[str, Any] = dataclasses.field(default_factory=dict)
    diff: Dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    actions: List[str] = dataclasses.field(default_factory=list)


def _view(rec: Optional[VmRecord], state: str, password_set: bool = False,
          password_changed: bool = False) -> Dict[str, Any]:
    """What the diff shows: the user-visible spec plus the run state; a password only as
    a mask that tells whether it changed."""
    if rec is None:
        return {"state": "absent"}
    view = rec.spec.to_dict()
    view["state"] = state
    if password_set:
        view["graphic_password"] = MASK + (" (new)" if password_changed else "")
    return view


GRAPHIC_PASSWORD = "graphic_password"


def spec_digest(rec: VmRecord, secret_tokens: Tuple[Optional[str], ...] = ()) -> str:
    """A fingerprint of the stored definition, for optimistic concurrency (``digest``).
    Sealed secrets count by their token, so a new password changes it too."""
    canonical = json.dumps([rec.spec.to_dict(), list(secret_tokens)], sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def vm_result(rec: VmRecord, state: str, lifecycle: Lifecycle) -> Dict[str, Any]:
    alive = state != STOPPED
    pending = changed_fields(rec.running_spec, rec.spec) if alive and rec.running_spec else []
    result = rec.summary()
    result.update(rec.spec.to_dict())
    result.update({
        "status": state,
        "pid": rec.qemu_pid if alive else None,
        "qmp_socket": rec.qmp_socket_path if alive else None,
        "serial_log": rec.serial_log_path or VmPaths.for_vm(lifecycle.run_dir, rec.uuid).serial_log,
        "accel_in_use": rec.launch_accel if alive else None,
        "cpu_in_use": rec.launch_cpu if alive else None,
        "pending_restart": pending,
        "taps": [nic.tap_name for nic in rec.spec.nics],
        "nvram": lifecycle.nvram_path(rec) if rec.spec.firmware == "uefi" else None,
        "console_socket_path": (
            VmPaths.for_vm(lifecycle.run_dir, rec.uuid).console_socket
            if alive and rec.spec.console_socket else None),
        "digest": spec_digest(rec, (lifecycle.store.get_secret(rec.uuid, GRAPHIC_PASSWORD),)),
        "graphics": {
            "type": rec.spec.graphic_protocol,
            "listen": rec.spec.graphic_host,
            "port": rec.launch_graphic_port if alive and rec.launch_graphic_port else rec.spec.graphic_port,
            "password_set": rec.spec.graphic_password_set,
        },
    })
    return result


class VmService:
    def __init__(self, db_url: str, run_dir: str, qemu_binary: Optional[str] = None,
                 lock_timeout: float = 60.0, host_paths: HostPaths = HostPaths(),
                 hostname: Optional[str] = None, job_id: Optional[str] = None,
                 secret_key_file: Optional[str] = None,
                 storage_roots: Optional[Sequence[str]] = None,
                 nvram_dir: str = DEFAULT_NVRAM_DIR):
        self.store = open_store(db_url, job_id=job_id)
        self.lock_timeout = lock_timeout
        self.hostname = hostname or socket.gethostname()
        self.firewall = FirewallService(self.store, self.hostname, lock_timeout=lock_timeout)
        self.lifecycle = Lifecycle(self.store, run_dir, qemu_binary, host_paths, nvram_dir=nvram_dir,
                                   firewall=self.firewall)
        self.secret_key_file = secret_key_file
        self.storage_roots = storage_roots
        self._secret_box: Optional[SecretBox] = None

    def close(self) -> None:
        self.store.close()

    # -- secrets --------------------------------------------------------------------------
    def secret_box(self) -> SecretBox:
        """The key is read (or made) only when a secret is involved."""
        if self._secret_box is None:
            self._secret_box = SecretBox(load_or_create_key(self.secret_key_file))
        return self._secret_box

    def _decrypt(self, rec: VmRecord, token: str) -> str:
        try:
            return self.secret_box().decrypt(token, secret_context(rec.uuid, GRAPHIC_PASSWORD))
        except SecretError as exc:
            raise SecretError("cannot read the display password of VM %s: %s" % (rec.name, exc)) from None

    def _layered(self, rec: VmRecord) -> List[str]:
        """Base paths of the disks that have external snapshots."""
        return sorted({layer["base_path"] for layer in self.store.list_layers(rec.uuid)})

    def _disk_keys(self, disks: Sequence[DiskSpec]) -> Dict[str, str]:
        """LUKS passphrases of the encrypted volumes (made by infinivirt_disk) among disks."""
        keys = {}
        for disk in disks:
            volume = self.store.get_volume(os.path.realpath(disk.path))
            if volume is not None and volume.encrypted:
                key = read_luks_key(self.store, self.secret_box, volume.path)
                if key is None:
                    raise SecretError("volume %s is encrypted but its key is not in the database"
                                      % volume.path)
                keys[disk.disk_id] = key
        return keys

    def _graphic_password(self, rec: VmRecord) -> Optional[str]:
        if not rec.spec.graphic_password_set:
            return None
        token = self.store.get_secret(rec.uuid, GRAPHIC_PASSWORD)
        return self._decrypt(rec, token) if token else None

    # -- infinivirt_vm --------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Outcome:
        name = validate_name(params.get("name"))
        state = params.get("state") or "present"
        if state not in STATES:
            raise SpecError("state", "must be one of %s, got %r" % (", ".join(STATES), state))
        with self.store.vm_lock(name, self.lock_timeout):
            rec = self.store.get_vm(name)
            self._check_digest(rec, name, params.get("digest"))
            if rec is not None and rec.host != self.hostname:
                return self._ensure_foreign(rec, state, params, check_mode)
            qemu_status = self.lifecycle.query_status(rec) if rec else None
            before_state = fold_status(qemu_status) if rec else "absent"
            if rec is not None and not check_mode:
                self.lifecycle.reconcile(rec, before_state)
            return self._plan_and_apply(rec, before_state, qemu_status, state, params, check_mode)

    def _plan_and_apply(self, rec: Optional[VmRecord], before_state: str,
                        qemu_status: Optional[str], state: str, params: Dict[str, Any],
                        check_mode: bool) -> Outcome:
        if state == "absent":
            return self._ensure_absent(rec, before_state, qemu_status, params, check_mode)
        return self._ensure_present(rec, before_state, qemu_status, state, params, check_mode)

    def _check_digest(self, rec: Optional[VmRecord], name: str, digest: Optional[str]) -> None:
        if digest is None:
            return
        if rec is None:
            raise StateError("VM %s does not exist, so it cannot match digest %s" % (name, digest))
        current = spec_digest(rec, (self.store.get_secret(rec.uuid, GRAPHIC_PASSWORD),))
        if digest != current:
            raise StateError("VM %s was changed since digest %s was read (it is now %s); read "
                             "the VM again and retry" % (name, digest, current))

    def _ensure_foreign(self, rec: VmRecord, state: str, params: Dict[str, Any],
                        check_mode: bool) -> Outcome:
        """A VM another host owns. Its process cannot be seen from here, so the row's status
        stands for it; while it runs there, nothing may change it from here."""
        before_state = fold_status(rec.status if rec.status != STOPPED else None)
        plan = self._plan_and_apply(rec, before_state, None, state, params, check_mode=True)
        if before_state != STOPPED and plan.changed:
            raise StateError(
                "VM %s is owned by host %s, where it was last recorded %s (PID %s, at %s); run "
                "this task on %s, or stop the VM there first" % (
                    rec.name, rec.host, rec.status, rec.qemu_pid, rec.updated_at, rec.host))
        if check_mode or not plan.changed:
            return plan
        rec = self.store.get_vm(rec.name)  # planning edited the record in memory
        return self._plan_and_apply(rec, before_state, None, state, params, check_mode=False)

    def _ensure_present(self, rec: Optional[VmRecord], before_state: str,
                        qemu_status: Optional[str], state: str, params: Dict[str, Any],
                        check_mode: bool) -> Outcome:
        out = Outcome()
        desired, password, had_password, password_changed = self._desired_spec(rec, params)
        bridges = self.nic_bridges(desired)  # also checks each network exists, before any write
        spec_changes = changed_fields(rec.spec if rec else None, desired)
        before_view = _view(rec, before_state, had_password)

        if rec is None:
            out.actions.append("create")
            rec = VmRecord(uuid=str(uuidlib.uuid4()), name=desired.name, host=self.hostname,
                           status=STOPPED, spec=desired)
            if not check_mode:
                self.store.insert_vm(rec)
        elif spec_changes or password_changed:
            out.actions.append("update")
            rec.spec = desired
            if not check_mode:
                self.store.update_vm(rec)
        if password_changed and not check_mode:
            self.store.set_secret(rec.uuid, GRAPHIC_PASSWORD,
                                  self.secret_box().encrypt(password, secret_context(rec.uuid, GRAPHIC_PASSWORD)))

        if state == "present":
            target = STOPPED if before_state == "absent" else before_state
        else:
            target = {"running": RUNNING, "restarted": RUNNING, "stopped": STOPPED,
                      "paused": PAUSED}[state]
        pending = (changed_fields(rec.running_spec, rec.spec)
                   if before_state in (RUNNING, PAUSED) and rec.running_spec else [])
        # Disk changes a running VM takes by hot-plug need no restart.
        hotplug = (plan_hotplug(rec.running_spec.disks, rec.spec.disks, self._layered(rec))
                   if "disks" in pending and before_state == RUNNING else None)
        if hotplug is not None and hotplug.live:
            pending.remove("disks")
        nic_plug = (plan_nic_hotplug(rec.running_spec.nics, rec.spec.nics)
                    if "nics" in pending and before_state == RUNNING else None)
        if nic_plug is not None and nic_plug.live:
            pending.remove("nics")
        if "department" in pending:  # the firewall follows it live, no restart
            pending.remove("department")
        department_moved = "department" in spec_changes
        restart = state == "restarted" or (
            bool(pending) and target != STOPPED and params.get("restart_on_change"))
        if restart:
            hotplug = nic_plug = None  # the new process gets every disk and NIC anyway
        live_password = (password_changed and not restart and before_state in (RUNNING, PAUSED)
                         and rec.running_spec is not None and rec.running_spec.graphic_password_set)
        try:
            if live_password:  # a running display takes a new password at once
                out.actions.append("set_password")
                if not check_mode:
                    self.lifecycle.set_graphic_password(rec, password)
            if hotplug is not None and hotplug.live:
                out.actions.append("hotplug_disks")
                if not check_mode:
                    self.lifecycle.hotplug_disks(rec, hotplug, self._disk_keys(hotplug.add))
            if nic_plug is not None and nic_plug.live:
                out.actions.append("hotplug_nics")
                if not check_mode:
                    self.lifecycle.hotplug_nics(rec, nic_plug, bridges)
            self._transition(out, rec, before_state, qemu_status, target, restart, params,
                             check_mode, bridges)
            synced = {"start", "hotplug_nics"} & set(out.actions)  # those apply the firewall
            if department_moved and not synced and not check_mode and rec.running_spec is not None:
                self.lifecycle.sync_firewall(rec)
        except Exception:
            if "create" in out.actions and not check_mode:  # a VM that never ran is not kept
                self.lifecycle.release_files(rec, keep_serial_log=False, keep_nvram=False)
                self.firewall.forget_vm(rec)
                self.store.delete_vm(rec.uuid)
            raise

        after_state = target
        if pending and not restart and target != STOPPED:
            out.warnings.append(
                "VM %s runs with an older configuration; a restart is needed to apply: %s "
                "(set restart_on_change: true or state: restarted)" % (rec.name, ", ".join(pending)))
        out.changed = bool(out.actions)
        out.diff = {"before": before_view,
                    "after": _view(rec, after_state, rec.spec.graphic_password_set, password_changed)}
        out.vm = vm_result(rec, after_state, self.lifecycle)
        if check_mode:  # nothing ran: say what the plan leaves pending
            out.vm["pending_restart"] = [] if "start" in out.actions else pending
        return out

    def _desired_spec(self, rec: Optional[VmRecord],
                      params: Dict[str, Any]) -> Tuple[VmSpec, Optional[str], bool, bool]:
        """Validate the spec the task asks for. Returns it with the new display password
        (None: keep the stored one), whether one was stored, and whether it changes."""
        password = (params.get("graphics") or {}).get("password")
        stored_token = self.store.get_secret(rec.uuid, GRAPHIC_PASSWORD) if rec else None
        # Other VMs' NICs matter only when this task sets NICs (stored ones were checked).
        others = [vm for vm in self.store.list_vms() if rec is None or vm.uuid != rec.uuid] \
            if params.get("nics") is not None else []
        desired = merge_params(params, rec.spec if rec else None,
                               taken_macs=[n.mac for vm in others for n in vm.spec.nics])
        desired = dataclasses.replace(desired, graphic_password_set=(
            desired.graphic_protocol == "vnc" and (password is not None or stored_token is not None)))
        validate(desired, storage_roots=self.storage_roots)
        self._check_nics_against(desired, others)
        validate_graphic_password(desired, password, stored=stored_token is not None)
        changed = password is not None and (
            stored_token is None or self._decrypt(rec, stored_token) != password)
        return desired, password, stored_token is not None, changed

    def _check_nics_against(self, spec: VmSpec, others: Sequence[VmRecord]) -> None:
        """A MAC is unique among all VMs (two on one segment break both), and so is a TAP
        name within a namespace."""
        for index, nic in enumerate(spec.nics):
            for vm in others:
                for other in vm.spec.nics:
                    if other.mac == nic.mac:
                        raise SpecError("nics[%d].mac" % index, "%s is the MAC of a NIC of VM %s"
                                        % (nic.mac, vm.name))
                    if other.tap_name == nic.tap_name and vm.spec.netns == spec.netns:
                        raise SpecError("nics[%d].tap" % index, "TAP %s belongs to VM %s"
                                        % (nic.tap_name, vm.name))

    def nic_bridges(self, spec: VmSpec) -> Dict[str, str]:
        """MAC -> bridge of each NIC; a network must exist on this host, in the VM's namespace."""
        bridges = {}
        for index, nic in enumerate(spec.nics):
            if nic.bridge is not None:
                bridges[nic.mac] = nic.bridge
                continue
            row = self.store.get_network(nic.network, self.hostname)
            field = "nics[%d].network" % index
            if row is None:
                raise SpecError(field, "network %s does not exist on host %s (create it with "
                                "infinivirt.core.infinivirt_net)" % (nic.network, self.hostname))
            netns = row["spec"].get("netns")
            if netns != spec.netns:
                raise SpecError(field, "network %s is in network namespace %s, the VM in %s; set "
                                "netns to match" % (nic.network, netns or "(host)", spec.netns or "(host)"))
            bridges[nic.mac] = row["spec"]["bridge"]
        return bridges

    def _transition(self, out: Outcome, rec: VmRecord, current: str, qemu_status: Optional[str],
                    target: str, restart: bool, params: Dict[str, Any], check_mode: bool,
                    bridges: Dict[str, str]) -> None:
        stop_timeout = float(params.get("stop_timeout") or 60)
        force = bool(params.get("force"))
        lc = self.lifecycle
        if current == "absent":
            current = STOPPED
        if restart and current != STOPPED:
            out.actions.append("stop")
            if not check_mode:
                lc.stop(rec, stop_timeout, force, qemu_status)
            current = STOPPED
        if current == target:
            return
        if target == STOPPED:
            out.actions.append("stop")
            if not check_mode:
                lc.stop(rec, stop_timeout, force, qemu_status)
        elif current == STOPPED:
            out.actions.append("start")
            if not check_mode:
                rec.host = self.hostname  # a stopped VM moves to the host that starts it
                out.warnings.extend(lc.start(rec, paused=(target == PAUSED),
                                             graphic_password=self._graphic_password(rec),
                                             disk_keys=self._disk_keys(rec.spec.disks),
                                             nic_bridges=bridges))
            else:
                out.warnings.extend(lc.plan_launch(rec)[3])
        elif target == PAUSED:
            out.actions.append("pause")
            if not check_mode:
                lc.pause(rec)
        else:
            out.actions.append("resume")
            if not check_mode:
                lc.resume(rec)

    def _ensure_absent(self, rec: Optional[VmRecord], before_state: str,
                       qemu_status: Optional[str], params: Dict[str, Any],
                       check_mode: bool) -> Outcome:
        out = Outcome()
        if rec is None:
            out.diff = {"before": {"state": "absent"}, "after": {"state": "absent"}}
            out.vm = {"name": params["name"], "status": "absent"}
            return out
        out.actions.append("delete")
        if not check_mode:
            if before_state != STOPPED:
                self.lifecycle.stop(rec, float(params.get("stop_timeout") or 60),
                                    bool(params.get("force")), qemu_status)
            self.lifecycle.release_files(rec, keep_serial_log=False, keep_nvram=False)
            for layer in self.store.list_layers(rec.uuid):  # external snapshot overlays
                if os.path.exists(layer["overlay"]):
                    os.unlink(layer["overlay"])
            self.firewall.forget_vm(rec)
            self.store.delete_vm(rec.uuid)
        out.changed = True
        out.diff = {"before": _view(rec, before_state), "after": {"state": "absent"}}
        out.vm = {"name": rec.name, "uuid": rec.uuid, "status": "absent"}
        return out

    def _snapshots(self, rec: VmRecord) -> List[Dict[str, Any]]:
        if not rec.spec.disks:
            return []
        try:
            return list(SnapshotService(self).list(rec).values())
        except SpecError:  # no writable disk
            return []

    # -- volumes (for infinivirt_disk) ------------------------------------------------------
    def resize_attached_disk(self, path: str, size: int) -> Optional[str]:
        """Grow a volume through the running VM on this host that has it attached, so the
        guest sees the new size; return that VM's name, or None when no running VM has it."""
        real = os.path.realpath(path)

        def attached(rec: Optional[VmRecord]) -> Optional[DiskSpec]:
            if rec is None or rec.running_spec is None:
                return None
            return next((d for d in rec.running_spec.disks if os.path.realpath(d.path) == real), None)

        for rec in self.store.list_vms(host=self.hostname):
            if attached(rec) is None:
                continue
            with self.store.vm_lock(rec.name, self.lock_timeout):
                rec = self.store.get_vm(rec.name)
                disk = attached(rec)
                if disk is not None and disk.path in self._layered(rec):
                    raise StateError("volume %s has external snapshots in VM %s; delete them "
                                     "before growing it" % (path, rec.name))
                if disk is not None and self.lifecycle.is_alive(rec):
                    self.lifecycle.resize_disk(rec, disk, size)
                    return rec.name
        return None

    # -- infinivirt_vm_info ---------------------------------------------------------------
    def info(self, name: Optional[str] = None) -> List[Dict[str, Any]]:
        if name is not None:
            validate_name(name)
            rec = self.store.get_vm(name)
            records = [rec] if rec else []
        else:
            records = self.store.list_vms()
        result = []
        for rec in records:
            if rec.host == self.hostname:
                qemu_status = self.lifecycle.query_status(rec)
                state = fold_status(qemu_status)
            else:  # another host's VM: only its row can be read from here
                qemu_status = None
                state = fold_status(rec.status if rec.status != STOPPED else None)
            vm = vm_result(rec, state, self.lifecycle)
            vm["qemu_status"] = qemu_status
            vm["snapshots"] = self._snapshots(rec) if rec.host == self.hostname else []
            result.append(vm)
        return result
