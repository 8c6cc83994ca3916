# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the infinivirt_vm module does, without Ansible (infinivirt_vm_info: vm/info.py).

``ensure_vm`` plans first (so check mode predicts exactly what a real run does), then
applies the plan under the VM's lock. What only some tasks do (host checks, hot-plug, the
firewall, disk keys) is imported where it is used, so a no-op loads none of it.
"""

from __future__ import annotations

import dataclasses
import os
import uuid as uuidlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    ClaimConflict,
    InfinivirtError,
    QemuError,
    QemuUnresponsive,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import HostPaths
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import MASK
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.store.claims import CLAIM_CPU
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_name
from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import UNRESPONSIVE
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import (
    GRAPHICS_PASSWORD,
    running_as_recorded,
    spec_digest,
    vm_result,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import (
    Desired,
    Live,
    VmPlan,
    plan_summary,
    plan_vm,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord, firewall_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    VmSpec,
    diff_view,
    merge_params,
    stop_timeout,
    validate,
    validate_graphics_password,
    validate_kept_password,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    ABSENT,
    PAUSED,
    RUNNING,
    STARTING,
    STATES,
    STOPPED,
    fold_status,
    recorded_state,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import option_names, option_view


@dataclasses.dataclass
class Outcome:
    changed: bool = False
    vm: Dict[str, Any] = dataclasses.field(default_factory=dict)
    diff: Dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: List[str] = dataclasses.field(default_factory=list)
    actions: List[str] = dataclasses.field(default_factory=list)
    plan: Dict[str, Any] = dataclasses.field(default_factory=dict)  # vm.model.plan.plan_summary
    waiter: Any = None  # vm.readiness.Waiter of a task that waits (wait_for)

    def result(self) -> Dict[str, Any]:
        """The module result (the binding drops ``diff`` outside diff mode)."""
        return dict(changed=self.changed, vm=self.vm, plan=self.plan, warnings=self.warnings, diff=self.diff)


def _view(
    rec: Optional[VmRecord], state: str, password_set: bool = False, password_changed: bool = False
) -> Dict[str, Any]:
    """What the diff shows: the user-visible spec plus the run state; a password only as
    a mask that tells whether it changed."""
    if rec is None:
        return {"state": "absent"}
    mask = MASK + (" (new)" if password_changed else "") if password_set else None
    view = option_view(diff_view(rec.spec), mask)
    view["state"] = state
    return view


# Plans with these actions store the desired spec or hand it to QEMU: the host must take it.
HOST_CHECKED_ACTIONS = {
    "create",
    "update",
    "start",
    "hotplug_disks",
    "hotplug_nics",
    "hotplug_usb",
    "hotplug_cpus",
    "hotplug_memory",
    "pin_cpus",
}
# The states that may end a QEMU that does not answer, with force: true (it is killed).
FORCED_STATES = ("stopped", "restarted", "absent")


@dataclasses.dataclass
class Request:
    """A task's validated request and what applying it needs besides the plan."""

    desired: Desired
    password: Optional[str] = None  # a new display password (None: keep the stored one)
    had_password: bool = False
    stored_token: Optional[str] = None  # the sealed display password the task found
    bridges: Dict[str, str] = dataclasses.field(default_factory=dict)  # MAC -> bridge
    cloud_init: Optional[Dict[str, Any]] = None  # a new cloud_init to seal ({}: remove; None: keep)
    clones: List[Any] = dataclasses.field(default_factory=list)  # vm/disk_clones.py Clone: disks to make
    warnings: List[str] = dataclasses.field(default_factory=list)
    unattend: Optional[Dict[str, Any]] = None  # new unattend files to seal, likewise


class VmService:
    """What infinivirt_vm does: validate, check the host, plan (pure), then apply the plan
    under the VM's lock. ``start_vm`` is the one way to start a VM."""

    def __init__(self, ctx: HostContext, host_paths: HostPaths = HostPaths()):
        self.ctx = ctx
        self.store = ctx.store
        self.lock_timeout = ctx.lock_timeout
        self.hostname = ctx.host_id
        self.storage_roots = ctx.storage_roots
        self.engine = acting_engine(ctx, host_paths)
        self._pci = None

    @property
    def firewall(self):
        return self.engine.resources.firewall()

    @property
    def pci(self):
        """Host PCI devices (infinivirt_gpu), made (and imported) when first needed."""
        if self._pci is None:
            from ansible_collections.infinivirt.core.plugins.module_utils.host.pci import SysfsRoot
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import PciService

            self._pci = PciService(self.engine, SysfsRoot(self.ctx.sysfs_root))
        return self._pci

    @classmethod
    def open(
        cls,
        db_url: str,
        run_dir: str,
        hostname: Optional[str] = None,
        job_id: Optional[str] = None,
        host_paths: HostPaths = HostPaths(),
        **options: Any,
    ) -> "VmService":
        """A service on a context of its own (tests, benchmarks); ``close`` closes it."""
        return cls(HostContext.open(db_url, run_dir, host_id=hostname, job_id=job_id, **options), host_paths=host_paths)

    def close(self) -> None:
        self.ctx.close()

    def secret_box(self):
        return self.ctx.secret_box()

    # -- what a start needs (vm/power.py) ----------------------------------------------------
    def _decrypt(self, rec: VmRecord, token: str) -> str:
        return power.decrypt_password(self.engine, rec, token)

    def layered(self, rec: VmRecord) -> List[str]:
        """Base paths of the disks that have external snapshots."""
        return sorted({layer["base_path"] for layer in self.store.list_layers(rec.uuid)})

    def start_vm(
        self,
        rec: VmRecord,
        paused: bool = False,
        bridges: Optional[Dict[str, str]] = None,
        events: Sequence[Dict[str, Any]] = (),
    ) -> List[str]:
        """power.start_vm, with this service's PCI view (its sysfs may be another root)."""
        return power.start_vm(self.engine, rec, paused, bridges, events, pci=self.pci)

    # -- infinivirt_vm ------------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool, wait: bool = True) -> Outcome:
        """Converge the VM, then (``wait_for``, not in check mode) wait until it is ready,
        without its lock. ``wait=False``: the outcome's ``waiter`` is left for the caller
        (infinivirt_vms waits for all its VMs together, vm/readiness.py)."""
        name = validate_name(params.get("name"))
        state = params.get("state") or "present"
        if state not in STATES:
            raise SpecError("state", "must be one of %s, got %r" % (", ".join(STATES), state))
        stop_timeout(params)  # a bad value fails before anything is done
        wait_spec = None
        if params.get("wait_for") is not None or params.get("wait_timeout") is not None:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.readiness import parse_wait

            wait_spec = parse_wait(params)  # a bad value fails before anything is done
        out = self._converge(name, state, params, check_mode, wait_spec)
        if out.waiter is not None and wait:
            self.wait_ready([out])
            if out.waiter.error is not None:
                raise out.waiter.error
        return out

    def wait_ready(self, outcomes: Sequence[Outcome]) -> None:
        """Wait for the outcomes' VMs together; fill each VM entry (``ready``, ``guest``).
        A failure is left on its outcome's ``waiter.error`` (vm/readiness.py NotReady: its
        result carries the console tail, ``changed`` and the VM entry)."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.readiness import wait_all

        waiting = [out for out in outcomes if out.waiter is not None]
        wait_all(self.engine, [out.waiter for out in waiting])
        for out in waiting:
            if out.waiter.error is None:
                out.waiter.fill(self.engine, out.vm)
            else:
                out.waiter.error.result.update(changed=out.changed, vm=out.vm)

    def _converge(
        self, name: str, state: str, params: Dict[str, Any], check_mode: bool, wait_spec: Any = None
    ) -> Outcome:
        # One QMP connection serves the whole task (session.QmpSessions.one_session says when it closes).
        with self.store.vm_lock(name, self.lock_timeout), self.engine.sessions.one_session():
            rec = records.load(self.store, name)
            self._check_digest(rec, name, params.get("digest"))
            foreign = rec is not None and rec.host != self.hostname
            live = self._live(rec, foreign, forced_stop=bool(params.get("force")) and state in FORCED_STATES)
            if rec is not None and not foreign and not check_mode and not live.half_started:
                self.engine.reconcile(rec, live.state)
            new_uuid = str(uuidlib.uuid4())  # before the request: a new VM's cloud_init seed names it
            request = self._request(rec, state, params, new_uuid)
            plan = plan_vm(rec, live, request.desired, self.hostname, new_uuid=new_uuid)
            self._plan_clones(rec, request, plan)
            self._check_host(request, plan)
            waiter = self._waiter(wait_spec, plan, params, check_mode) if wait_spec is not None else None
            warnings = list(plan.warnings) + request.warnings
            if check_mode:
                if "start" in plan.actions:
                    warnings.extend(self.engine.plan_launch(plan.record)[3])
            else:
                warnings.extend(self._apply(rec, plan, request, params, live))
            out = self._outcome(rec, plan, request, warnings, check_mode, params)
            out.waiter = waiter
            return out

    def _waiter(self, wait_spec: Any, plan: VmPlan, params: Dict[str, Any], check_mode: bool) -> Any:
        """A VM that ends up running is waited for (never in check mode); whether it can
        be is checked first, before anything is done. Leases held before a start do not
        count as the new boot's address."""
        if plan.after_state != RUNNING:
            return None
        from ansible_collections.infinivirt.core.plugins.module_utils.vm import readiness

        started = "start" in plan.actions
        readiness.check_running(plan.record, wait_spec, self.hostname, started)
        sources = readiness.check_wait(self.engine, plan.record.spec, wait_spec)
        if check_mode:
            return None
        baseline = readiness.lease_baseline(sources) if started else {}
        return readiness.Waiter(plan.record, wait_spec, sources, baseline, started, params)

    def _live(self, rec: Optional[VmRecord], foreign: bool, forced_stop: bool = False) -> Live:
        """What runs now. A QEMU that does not answer fails the task, unless the task stops
        it by force (it is then killed)."""
        if rec is None:
            return Live(ABSENT)
        if foreign:  # its process cannot be seen from here: the row stands for it
            return Live(recorded_state(rec.status))
        try:
            # QMP only when the row and the process disagree (or cannot be compared).
            qemu_status = "running" if running_as_recorded(rec, self.engine) else self.engine.sessions.query_status(rec)
        except QemuUnresponsive:
            if not forced_stop:
                raise
            qemu_status = UNRESPONSIVE
        if rec.status == STARTING and qemu_status == "prelaunch":  # a start cut off half-way
            return Live(STOPPED, qemu_status, half_started=True)
        state = fold_status(qemu_status)
        # Disk hot-plug is planned only for a running VM with disks: read its layers only then.
        plugging = state == RUNNING and rec.running_spec is not None and (rec.running_spec.disks or rec.spec.disks)
        return Live(state, qemu_status, tuple(self.layered(rec)) if plugging else ())

    def _check_digest(self, rec: Optional[VmRecord], name: str, digest: Optional[str]) -> None:
        if digest is None:
            return
        if rec is None:
            raise StateError("VM %s does not exist, so it cannot match digest %s" % (name, digest))
        current = spec_digest(rec, (self.store.get_secret(rec.uuid, GRAPHICS_PASSWORD),))
        if digest != current:
            raise StateError(
                "VM %s was changed since digest %s was read (it is now %s); read "
                "the VM again and retry" % (name, digest, current)
            )

    def _request(self, rec: Optional[VmRecord], state: str, params: Dict[str, Any], new_uuid: str = "") -> Request:
        """Validate the task's options into a Desired, check them against this host, and
        gather what applying needs. Reads the store; writes nothing."""
        restart_on_change = bool(params.get("restart_on_change"))
        if state == ABSENT:
            return Request(Desired(state))
        password = (params.get("graphics") or {}).get("password")
        stored_token = self.store.get_secret(rec.uuid, GRAPHICS_PASSWORD) if rec else None
        # Other VMs' NICs matter only when this task sets NICs (stored ones were checked).
        others = (
            [vm for vm in records.load_all(self.store) if rec is None or vm.uuid != rec.uuid]
            if params.get("nics") is not None
            else []
        )
        desired = merge_params(
            params, rec.spec if rec else None, taken_macs=[n.mac for vm in others for n in vm.spec.nics]
        )
        desired = dataclasses.replace(
            desired,
            graphics_password_set=(
                desired.graphics_type != "none" and (password is not None or stored_token is not None)
            ),
        )
        seal = None
        if params.get("cloud_init") is not None:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import plan_seed, stored_salt

            digest, seal = plan_seed(
                params["cloud_init"],
                rec.uuid if rec else new_uuid,
                desired.cloud_init_digest,
                lambda: stored_salt(self.engine, rec.uuid) if rec else None,
            )
            desired = dataclasses.replace(desired, cloud_init_digest=digest)
        warnings: List[str] = []
        if any(d.clone_from is not None for d in desired.disks + (rec.spec.disks if rec else ())):
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.clones import settle_origins

            disks, warnings = settle_origins(rec.spec.disks if rec else None, desired.disks, desired.name)
            desired = dataclasses.replace(desired, disks=disks)
        desired, media = self._plan_unattend(params, rec.uuid if rec else new_uuid, desired)
        validate(desired)
        if desired.cpu_pinning or desired.emulator_cpus or desired.iothread_cpus:
            _check_pins_against(
                desired, [vm for vm in records.load_all(self.store) if vm.name != desired.name], self.hostname
            )
        _check_nics_against(desired, others)
        validate_graphics_password(desired, password, stored=stored_token is not None)
        if password is None and stored_token is not None and rec.spec.graphics_type != desired.graphics_type:
            validate_kept_password(desired, self._decrypt(rec, stored_token), rec.spec.graphics_type)
        changed = password is not None and (stored_token is None or self._decrypt(rec, stored_token) != password)
        return Request(
            Desired(state, desired, changed, restart_on_change),
            password=password if changed else None,
            had_password=stored_token is not None,
            stored_token=stored_token,
            cloud_init=seal,
            warnings=warnings,
            unattend=media,
        )

    def _plan_clones(self, rec: Optional[VmRecord], request: Request, plan: VmPlan) -> None:
        """The disks first added by this task that are to be made from a template
        (infinivirt_disk's checks, nothing written): the plan's first action."""
        spec = request.desired.spec
        if spec is None or not any(d.clone_from is not None for d in spec.disks):
            return
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.disk_clones import CLONE_DISKS, DiskCloner
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.clones import new_clones

        request.clones = DiskCloner(self.ctx).plan(new_clones(rec.spec.disks if rec else None, spec.disks))
        if request.clones:
            plan.actions.insert(0, CLONE_DISKS)

    def _plan_unattend(self, params: Dict[str, Any], uuid: str, desired: VmSpec) -> Tuple[VmSpec, Optional[Dict]]:
        """The spec with the unattend option's digest, and the files to seal (None: keep)."""
        if params.get("unattend") is None:
            return desired, None
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.unattend_media import plan_media

        digest, media = plan_media(self.engine, params["unattend"], uuid, desired.unattend_digest)
        return dataclasses.replace(desired, unattend_digest=digest), media

    def _check_host(self, request: Request, plan: VmPlan) -> None:
        """Check the desired spec against this host (files, storage roots, netns, CPUs,
        vhost-net, networks) when the plan stores it or gives it to QEMU. Stopping, pausing
        and removing act on what runs, whatever today's host says of the stored spec."""
        if not HOST_CHECKED_ACTIONS & set(plan.actions):
            return
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import (
            host_memory_mb,
            preflight,
        )

        try:
            caps = self.engine.capabilities()
        except QemuError:
            caps = None  # no usable QEMU here: a start says so; a definition may still be stored
        preflight(
            request.desired.spec,
            storage_roots=self.storage_roots,
            caps=caps,
            available_memory_mb=host_memory_mb(self.engine.host_paths.proc),
            sys_root=self.engine.host_paths.sys,
            made_here=[clone.disk.path for clone in request.clones],
        )
        # Hugepages of a start from stopped: the mount and enough free pages (check mode too;
        # a restart is checked by the start itself, once the old process has given its pages).
        if "start" in plan.actions and "stop" not in plan.actions:
            self.engine.resources.admit_memory(plan.record)
        request.bridges = power.nic_bridges(self.engine, request.desired.spec)  # each network must exist

    def _apply(
        self, before: Optional[VmRecord], plan: VmPlan, request: Request, params: Dict[str, Any], live: Live
    ) -> List[str]:
        """Carry out ``plan``; on failure a VM this task created is not kept."""
        if plan.after_state == ABSENT:
            if "abort_start" in plan.actions:
                self.engine.abort_start(before)
            if plan.changed:
                self._remove(before, plan, params, live)
            return []
        rec = plan.record
        warnings: List[str] = []
        created = "create" in plan.actions
        made = self._make_clones(request)  # before the row: it never lists a disk not made
        try:
            self._store_record(before, rec, plan)
        except Exception:
            self._drop_clones(made)
            raise
        if request.password is not None:
            self.store.set_secret(
                rec.uuid,
                GRAPHICS_PASSWORD,
                self.secret_box().encrypt(request.password, secret_context(rec.uuid, GRAPHICS_PASSWORD)),
            )
        if request.cloud_init is not None:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import CLOUD_INIT, seal

            self.store.set_secret(rec.uuid, CLOUD_INIT, seal(self.secret_box(), rec.uuid, request.cloud_init))
        if request.unattend is not None:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm import unattend_media

            self.store.set_secret(
                rec.uuid, unattend_media.UNATTEND, unattend_media.seal(self.secret_box(), rec.uuid, request.unattend)
            )
        try:
            for action in plan.actions:
                warnings.extend(self._do(action, rec, plan, request, params, live))
            if plan.sync_firewall:
                self.engine.resources.sync_firewall(rec)
        except Exception as exc:
            if "start" in plan.actions and isinstance(exc, InfinivirtError):  # before its log goes
                from ansible_collections.infinivirt.core.plugins.module_utils.vm.readiness import with_console_tail

                with_console_tail(exc, self.engine, rec, params)
            if created:  # a VM that never ran is not kept
                self.engine.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
                self.firewall.forget_vm(firewall_vm(rec))
                self.store.delete_vm(rec.uuid)
                self._drop_clones(made)  # a VM that is not kept keeps no disk it cloned
            raise
        return warnings

    def _make_clones(self, request: Request) -> List[str]:
        if not request.clones:
            return []
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.disk_clones import DiskCloner

        return DiskCloner(self.ctx).make(request.clones)

    def _drop_clones(self, made: List[str]) -> None:
        if made:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.disk_clones import DiskCloner

            DiskCloner(self.ctx).remove(made)

    def _do(
        self, action: str, rec: VmRecord, plan: VmPlan, request: Request, params: Dict[str, Any], live: Live
    ) -> List[str]:
        """One action of a plan; returns its warnings (clone_disks ran before the row: _make_clones)."""
        lc = self.engine
        if action == "abort_start":
            lc.abort_start(rec)
        elif action == "set_password":
            lc.sessions.set_graphics_password(rec, request.password)
        elif action == "hotplug_disks":
            self._hotplug().disks(rec, plan.disk_plug, power.disk_keys(lc, plan.disk_plug.add))
        elif action == "hotplug_nics":
            self._hotplug().nics(rec, plan.nic_plug, request.bridges)
        elif action == "hotplug_usb":
            self._hotplug().usb(rec, plan.usb_plug)
        elif action == "hotplug_cpus":
            lc.tuner().plug_cpus(rec)
        elif action == "hotplug_memory":
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import hugepage_path

            lc.tuner().plug_memory(rec, hugepage_path(rec.spec, lc.host_paths.proc))
        elif action == "set_balloon":
            lc.tuner().set_balloon(rec)
        elif action == "pin_cpus":
            lc.tuner().pin(rec)
        elif action == "stop":
            return power.stop_vm(self.engine, rec, params, live.qemu_status)
        elif action == "start":
            return self.start_vm(rec, paused=plan.after_state == PAUSED, bridges=request.bridges)
        elif action == "pause":
            lc.pause(rec)
        elif action == "resume":
            lc.resume(rec)
        return []

    def _store_record(self, before: Optional[VmRecord], rec: VmRecord, plan: VmPlan) -> None:
        """Claim the host CPUs the spec pins, then write the row; a new VM whose row
        could not be written leaves no claim behind. A VM that pins nothing, now or before,
        has no claim to take or drop: no store transaction for it."""
        if HOST_CHECKED_ACTIONS & set(plan.actions) and _pins_cpus(before, rec):
            # A start moves a stopped VM to this host (start_vm); otherwise it stays where it is.
            self._claim_cpus(rec, self.hostname if "start" in plan.actions else rec.host)
        try:
            if "create" in plan.actions:
                records.insert(self.store, rec)
            elif "update" in plan.actions:
                records.save(self.store, rec)
        except Exception:
            if "create" in plan.actions:
                self.store.release_host_claims(rec.uuid)
            raise

    def _claim_cpus(self, rec: VmRecord, host: str) -> None:
        """The pinned host CPUs become this VM's claim on ``host`` (exclusive with
        cpu_pinning_exclusive), checked against every other VM's in one serialized store
        transaction: _check_pins_against reads stored specs, which another VM's task may
        be about to change (issue 18). No pins: the VM's claim is dropped."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import pinned_host_cpus

        exclusive = bool(rec.spec.cpu_pinning_exclusive)
        values = {str(cpu): exclusive for cpu in pinned_host_cpus(rec.spec)}
        try:
            self.store.claim_host(host, CLAIM_CPU, rec.uuid, rec.name, values)
        except ClaimConflict as exc:
            raise _pin_conflict(rec.spec, [int(v) for v in exc.values], exc.holder, exc.holder_exclusive) from None

    def _hotplug(self):
        return self.engine.hotplug()

    def _remove(self, rec: VmRecord, plan: VmPlan, params: Dict[str, Any], live: Live) -> None:
        if plan.before_state != STOPPED:
            power.stop_vm(self.engine, rec, params, live.qemu_status)
        self.engine.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
        self.pci.release_all(rec)  # host drivers back to the devices of managed assignments
        for layer in self.store.list_layers(rec.uuid):  # external snapshot overlays
            if os.path.exists(layer["overlay"]):
                os.unlink(layer["overlay"])
        self.firewall.forget_vm(firewall_vm(rec))
        self.store.delete_vm(rec.uuid)

    def _outcome(
        self,
        before: Optional[VmRecord],
        plan: VmPlan,
        request: Request,
        warnings: List[str],
        check_mode: bool,
        params: Dict[str, Any],
    ) -> Outcome:
        out = Outcome(changed=plan.changed, actions=list(plan.actions), plan=plan_summary(plan), warnings=warnings)
        if request.clones:
            out.plan["disk_clones"] = [clone.summary() for clone in request.clones]
        before_view = _view(before, plan.before_state, request.had_password)
        if plan.after_state == ABSENT:
            out.diff = {"before": before_view, "after": {"state": "absent"}}
            out.vm = (
                {"name": before.name, "uuid": before.uuid, "status": "absent"}
                if before
                else {"name": params["name"], "status": "absent"}
            )
            return out
        rec = plan.record
        out.diff = {
            "before": before_view,
            "after": _view(rec, plan.after_state, rec.spec.graphics_password_set, request.desired.password_changed),
        }
        # The token read under the lock still holds unless this task stored a new one.
        known = {"graphics_token": request.stored_token} if request.password is None else {}
        out.vm = vm_result(rec, plan.after_state, self.engine, **known)
        if check_mode:  # nothing ran: say what the plan leaves pending
            out.vm["pending_restart"] = option_names(plan.pending)
        return out

    # -- volumes (for infinivirt_disk) ------------------------------------------------------
    def resize_attached_disk(self, path: str, size: int) -> Optional[str]:
        """See volume.live_resize.resize_attached_disk."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.live_resize import resize_attached_disk

        return resize_attached_disk(self.ctx, path, size, self.engine.host_paths.proc)


def _check_nics_against(spec: VmSpec, others: Sequence[VmRecord]) -> None:
    """A MAC is unique among all VMs (two on one segment break both), and so is a TAP name
    within a namespace."""
    for index, nic in enumerate(spec.nics):
        for vm in others:
            for other in vm.spec.nics:
                if other.mac == nic.mac:
                    raise SpecError("nics[%d].mac" % index, "%s is the MAC of a NIC of VM %s" % (nic.mac, vm.name))
                if other.tap_name == nic.tap_name and vm.spec.netns == spec.netns:
                    raise SpecError("nics[%d].tap" % index, "TAP %s belongs to VM %s" % (nic.tap_name, vm.name))


def _pins_cpus(before: Optional[VmRecord], rec: VmRecord) -> bool:
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import pinned_host_cpus

    return any(pinned_host_cpus(r.spec) for r in (before, rec) if r is not None)


def _check_pins_against(spec: VmSpec, others: Sequence[VmRecord], host: str) -> None:
    """Host CPUs pinned exclusively (cpu_pinning_exclusive) belong to one VM of a host: no
    other VM there may pin to them, and an exclusive VM may not take CPUs another VM pins.
    VMs without pins float over all CPUs and are not counted."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import pinned_host_cpus

    mine = set(pinned_host_cpus(spec))
    for vm in others:
        if vm.host != host or not (spec.cpu_pinning_exclusive or vm.spec.cpu_pinning_exclusive):
            continue
        shared = mine & set(pinned_host_cpus(vm.spec))
        if shared:
            raise _pin_conflict(spec, shared, vm.name, bool(vm.spec.cpu_pinning_exclusive))


def _pin_conflict(spec: VmSpec, cpus: Iterable[int], holder: str, holder_exclusive: bool) -> SpecError:
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import format_cpu_list

    whose = "VM %s holds them exclusively" % holder if holder_exclusive else "VM %s pins them" % holder
    return SpecError(
        "cpu_pinning",
        "host CPU(s) %s cannot be pinned by VM %s: %s (cpu_pinning_exclusive)"
        % (format_cpu_list(cpus), spec.name, whose),
    )
