# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_gpu: host PCI devices (GPUs with their audio, NICs, NVMe drives, SR-IOV VFs)
given to a VM through vfio-pci, and taken back.

An assignment is rows in ``pci_assignments`` (store/hostdevs.py): the functions QEMU gets
and the other devices of their IOMMU groups, each held by one VM at most, claimed in one
transaction. A VM starts with its devices through the one start path (vm/power.py ``start_vm``
asks ``devices_for_start``, which checks sysfs again); a running VM gets them hot-plugged.
All sysfs access goes through host/pci.py's ``SysfsRoot``.

Order, so that a task cut off is finished by the next run: assign = claim rows, rebind
(``managed``), plug; release = unplug, give drivers back, drop rows. A failed assign takes
back what this task did.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.pci import (
    VFIO_DRIVER,
    SysfsRoot,
    check_rom_file,
    check_vfio_ready,
)
from ansible_collections.infinivirt.core.plugins.module_utils.store.hostdevs import ROLE_DEVICE, ROLE_GROUP, PciClaim
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    PRESENT_ABSENT,
    check_choice,
    validate_name,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import (
    BRIDGE_CLASS_PREFIX,
    AssignPlan,
    HeldPci,
    PciPassthrough,
    SriovRequest,
    host_driver_offenders,
    hostdev_id,
    needs_vfio,
    parse_address,
    parse_functions,
    parse_sriov,
    plan_assign,
    select_functions,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    PAUSED,
    RUNNING,
    STOPPED,
    fold_status,
    recorded_state,
)

DEFAULT_ROM_DIR = "/var/lib/infinivirt/roms"


class PciService:
    """``engine``: the vm.engine.engine.Engine whose store, lock, QMP and hot-plug this uses."""

    def __init__(self, engine, sysfs: SysfsRoot):
        self.engine = engine
        self.sysfs = sysfs

    @classmethod
    def of(cls, engine) -> "PciService":
        """infinivirt_gpu's service: on ``engine`` (vm.engine.acting.acting_engine), and the
        sysfs of its context."""
        return cls(engine, SysfsRoot(engine.ctx.sysfs_root))

    @property
    def store(self):
        return self.engine.store

    @property
    def host(self) -> str:
        return self.engine.host_id

    # -- infinivirt_gpu -------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        try:
            vm_name = validate_name(params.get("vm"))
        except SpecError as exc:
            raise SpecError("vm", exc.reason) from None
        state = check_choice("state", params.get("state") or "present", PRESENT_ABSENT)
        sriov = parse_sriov(params.get("sriov"))
        if sriov is not None and params.get("address") is not None:
            raise SpecError("address", "give address or sriov, not both")
        if sriov is None and params.get("address") is None:
            raise SpecError("address", "is required (or sriov, to name a VF)")
        address = parse_address("address", params["address"]) if sriov is None else None
        functions = parse_functions(params.get("functions"))
        if sriov is not None and functions is not None:
            raise SpecError("functions", "does not go with sriov (a VF is one function)")
        with self.store.vm_lock(vm_name, self.engine.lock_timeout):
            rec = records.load(self.store, vm_name)
            if rec is None:
                raise SpecError("vm", "there is no VM %s; create it with infinivirt_vm first" % vm_name)
            status = self._status(rec)
            actions: List[str] = []
            if state == "absent":
                return self._release(rec, address, sriov, status, check_mode)
            if sriov is not None:
                address = self._vf(sriov, check_mode, actions)
                if address is None:  # check mode: the VF does not exist yet
                    return self._result(rec, None, [], actions, changed=True)
            return self._assign(rec, address, functions, sriov, params, status, check_mode, actions)

    def _status(self, rec: VmRecord) -> str:
        if rec.host != self.host:  # another host's VM: its row stands for it
            return recorded_state(rec.status)
        return fold_status(self.engine.sessions.query_status(rec))

    # -- SR-IOV ---------------------------------------------------------------------------
    def _vf(self, req: SriovRequest, check_mode: bool, actions: List[str]) -> Optional[str]:
        """The VF's address; VFs are made first when num_vfs asks for more than exist, and
        its MAC and VLAN set on the PF."""
        pf = req.pf
        if not self.sysfs.exists(pf):
            raise SpecError("sriov.pf", "no PCI device %s on this host" % pf)
        total = self.sysfs.sriov_totalvfs(pf)
        if total is None:
            raise SpecError("sriov.pf", "%s is not an SR-IOV physical function (no sriov_totalvfs)" % pf)
        current = self.sysfs.sriov_numvfs(pf)
        if req.vf >= current:
            if req.num_vfs is None:
                raise SpecError(
                    "sriov.vf",
                    "%s has %d VFs, so VF %d does not exist; set sriov.num_vfs to make them" % (pf, current, req.vf),
                )
            if req.num_vfs > total:
                raise SpecError("sriov.num_vfs", "%s supports at most %d VFs" % (pf, total))
            if current and self._vfs_held(pf, current):
                raise StateError("%s has %d VFs and some are assigned; release them before making more" % (pf, current))
            actions.append("create_vfs")
            if check_mode:
                return None
            self.sysfs.set_numvfs(pf, req.num_vfs)
        address = self.sysfs.virtfn(pf, req.vf)
        if address is None:
            raise StateError("VF %d of %s did not appear in sysfs" % (req.vf, pf))
        if req.mac is not None or req.vlan is not None:
            netdevs = self.sysfs.netdevs(pf)
            if not netdevs:
                raise StateError("%s has no network interface to set its VFs' MAC or VLAN on" % pf)
            have = self.sysfs.vf_settings(netdevs[0], req.vf)
            mac = req.mac if req.mac is not None and (have["mac"] or "").lower() != req.mac else None
            vlan = req.vlan if req.vlan is not None and have["vlan"] != req.vlan else None
            if mac is not None or vlan is not None:
                actions.append("set_vf")
                if not check_mode:
                    self.sysfs.set_vf(netdevs[0], req.vf, mac, vlan)
        return address

    def _vfs_held(self, pf: str, count: int) -> bool:
        vfs = {self.sysfs.virtfn(pf, n) for n in range(count)}
        return any(c.address in vfs for c in self.store.list_pci(host=self.host))

    # -- assign -----------------------------------------------------------------------------
    def _assign(
        self,
        rec: VmRecord,
        address: str,
        functions: Any,
        sriov: Optional[SriovRequest],
        params: Dict[str, Any],
        status: str,
        check_mode: bool,
        actions: List[str],
    ) -> Dict[str, Any]:
        if rec.host != self.host and status != STOPPED:
            raise StateError(
                "VM %s runs on host %s; assign host devices on the host that runs it, or stop it first"
                % (rec.name, rec.host)
            )
        if rec.spec.machine_type != "q35":
            raise SpecError(
                "vm", "VM %s has machine_type %s; PCI passthrough needs q35" % (rec.name, rec.spec.machine_type)
            )
        managed = bool(params.get("managed"))
        x_vga = bool(params.get("x_vga"))
        rom_dir = params.get("rom_dir") or DEFAULT_ROM_DIR
        check_vfio_ready(self.sysfs, address)
        chosen = select_functions(address, functions, self.sysfs.devices())
        for function in chosen:
            check_vfio_ready(self.sysfs, function, "functions")
        rom_file = check_rom_file(params.get("rom_file"), rom_dir)
        members = self._group_members(chosen)
        self._check_drivers(chosen, members, managed)
        held = {c.address: c for c in self.store.list_pci(host=self.host)}
        drivers = {m: self.sysfs.driver(m) for m in members}
        plan = plan_assign(
            (rec.name, rec.uuid),
            address,
            chosen,
            members,
            drivers,
            [_held(c) for c in held.values()],
            (rom_file, x_vga, managed),
            status,
            here=rec.host == self.host,
        )
        actions += plan.actions
        if plan.plug and not self.engine.hotplug().pci_present(rec, plan.dev):
            actions.append("hotplug")
        if not check_mode and actions:
            claims = [self._claim(rec, plan, m, drivers[m], rom_dir, sriov) for m in plan.claim]
            self._apply_assign(rec, plan, claims, held.get(address), rom_dir, "hotplug" in actions)
        return self._result(rec, plan.dev, members, actions, warnings=plan.warnings)

    def _claim(
        self,
        rec: VmRecord,
        plan: AssignPlan,
        member: str,
        driver: Optional[str],
        rom_dir: str,
        sriov: Optional[SriovRequest],
    ) -> PciClaim:
        """The row that claims ``member`` for the plan's assignment."""
        dev = plan.dev
        primary = member == dev.address
        return PciClaim(
            host=self.host,
            address=member,
            vm_uuid=rec.uuid,
            primary_address=dev.address,
            role=ROLE_DEVICE if member in dev.functions else ROLE_GROUP,
            managed=plan.managed,
            original_driver=driver,
            rom_file=dev.rom_file if primary else None,
            rom_dir=rom_dir if primary and dev.rom_file else None,
            x_vga=dev.x_vga and primary,
            sriov=sriov.to_dict() if sriov is not None and primary else None,
        )

    def _apply_assign(
        self,
        rec: VmRecord,
        plan: AssignPlan,
        claims: List[PciClaim],
        primary: Optional[PciClaim],
        rom_dir: str,
        hotplug: bool,
    ) -> None:
        """Claim, update, rebind, plug; a failure takes back the claims and drivers."""
        rebound: List[Tuple[str, Optional[str]]] = []
        try:
            self.store.claim_pci(claims)
            if primary is not None and plan.update:
                primary.rom_file, primary.x_vga, primary.managed = plan.dev.rom_file, plan.dev.x_vga, plan.managed
                primary.rom_dir = rom_dir if plan.dev.rom_file else None
                self.store.update_pci(primary)
            for member in plan.rebind:
                before = self.sysfs.driver(member)
                self.sysfs.bind_to(member, VFIO_DRIVER)
                rebound.append((member, before))
            if hotplug:
                self.engine.hotplug().pci_add(rec, plan.dev)
        except InfinivirtError:
            self._undo(rec, claims, rebound)
            raise

    def _undo(self, rec: VmRecord, claims: Sequence[PciClaim], rebound: Sequence[Tuple[str, Optional[str]]]) -> None:
        """Take back what a failed assign did: drivers first, then the rows it made."""
        for member, driver in reversed(rebound):
            self.sysfs.restore_driver(member, driver)
        self.store.release_pci(self.host, rec.uuid, [c.address for c in claims])

    def _group_members(self, functions: Sequence[str]) -> List[str]:
        """Every device of the functions' IOMMU groups but bridges (they stay with the host)."""
        members = set(functions)
        for group in {self.sysfs.iommu_group(f) for f in functions}:
            members.update(self.sysfs.group_devices(group))
        return sorted(m for m in members if m in functions or not self._is_bridge(m))

    def _is_bridge(self, address: str) -> bool:
        return (self.sysfs.attr(address, "class") or "").startswith(BRIDGE_CLASS_PREFIX)

    def _needs_vfio(self, address: str, passed: bool) -> bool:
        return needs_vfio(self.sysfs.driver(address), passed)

    def _check_drivers(self, functions: Sequence[str], members: Sequence[str], managed: bool) -> None:
        if managed:
            return
        unbound = [f for f in functions if self.sysfs.driver(f) is None]
        offenders = host_driver_offenders(
            [(m, self.sysfs.driver(m), self.sysfs.attr(m, "class") or "") for m in members]
        )
        if offenders or unbound:
            listed = ["%s (%s)" % (a, d) for a, d in offenders] + ["%s (no driver)" % a for a in unbound]
            groups = sorted({self.sysfs.iommu_group(m) or "?" for m in members}, key=str)
            raise StateError(
                "IOMMU group %s: %s must be bound to vfio-pci (the devices QEMU gets) or to no driver "
                "(the rest of the group); bind them to vfio-pci, or set managed: true to have them "
                "rebound (their drivers come back on release)" % (", ".join(groups), ", ".join(listed))
            )

    # -- release ----------------------------------------------------------------------------
    def _release(
        self, rec: VmRecord, address: Optional[str], sriov: Optional[SriovRequest], status: str, check_mode: bool
    ) -> Dict[str, Any]:
        claims = self.store.list_pci(host=self.host, vm_uuid=rec.uuid)
        if sriov is not None:
            address = self.sysfs.virtfn(sriov.pf, sriov.vf)
            if address is None:  # the VF is gone: find it by what was asked
                address = next(
                    (c.address for c in claims if c.sriov and (c.sriov["pf"], c.sriov["vf"]) == (sriov.pf, sriov.vf)),
                    None,
                )
        mine = [c for c in claims if c.primary_address == address]
        if not mine:
            return self._result(rec, None, [], [], address=address)
        dev = _passthrough(mine)
        actions = []
        if status in (RUNNING, PAUSED) and rec.host == self.host and self.engine.hotplug().pci_present(rec, dev):
            if status == PAUSED:
                raise StateError("VM %s is paused; resume it so its guest can let go of %s" % (rec.name, address))
            actions.append("unplug")
        restore = [
            c
            for c in mine
            if c.managed and self.sysfs.exists(c.address) and self.sysfs.driver(c.address) != c.original_driver
        ]
        if restore:
            actions.append("restore_drivers")
        actions.append("release")
        if check_mode:
            return self._result(rec, dev, [c.address for c in mine], actions)
        if "unplug" in actions:
            self.engine.hotplug().pci_remove(rec, dev)
        for claim in restore:
            self.sysfs.restore_driver(claim.address, claim.original_driver)
        self.store.release_pci(self.host, rec.uuid, [c.address for c in mine])
        return self._result(rec, dev, [c.address for c in mine], actions)

    def release_all(self, rec: VmRecord) -> None:
        """A VM being removed (its QEMU gone): every assignment on this host let go, host
        drivers given back."""
        claims = self.store.list_pci(host=self.host, vm_uuid=rec.uuid)
        for claim in claims:
            if (
                claim.managed
                and self.sysfs.exists(claim.address)
                and self.sysfs.driver(claim.address) != claim.original_driver
            ):
                self.sysfs.restore_driver(claim.address, claim.original_driver)
        self.store.release_pci(self.host, rec.uuid, [c.address for c in claims])

    # -- the start path ---------------------------------------------------------------------
    def devices_for_start(self, rec: VmRecord) -> Tuple[PciPassthrough, ...]:
        """The VM's assignments, checked against sysfs now (devices there, IOMMU on, groups
        held by vfio-pci or nothing; managed ones rebound, as after a host reboot), ROMs
        checked again. A VM whose devices are another host's does not start here."""
        claims = self.store.list_pci(vm_uuid=rec.uuid)
        if not claims:
            return ()
        elsewhere = sorted({c.host for c in claims if c.host != self.host})
        if elsewhere:
            raise StateError(
                "VM %s has host PCI devices assigned on %s; start it there, or release them "
                "(infinivirt_gpu state=absent) first" % (rec.name, ", ".join(elsewhere))
            )
        devices = []
        for address in sorted({c.primary_address for c in claims}):
            rows = [c for c in claims if c.primary_address == address]
            dev = _passthrough(rows)
            primary = next((c for c in rows if c.address == address), rows[0])
            for function in dev.functions:
                check_vfio_ready(self.sysfs, function)
            members = sorted(c.address for c in rows)
            if primary.managed:
                for member in members:
                    if self.sysfs.exists(member) and self._needs_vfio(member, member in dev.functions):
                        self.sysfs.bind_to(member, VFIO_DRIVER)
            else:
                self._check_drivers(dev.functions, members, managed=False)
            if primary.rom_file is not None:
                check_rom_file(primary.rom_file, primary.rom_dir or DEFAULT_ROM_DIR)
            devices.append(dev)
        return tuple(devices)

    # -- reporting --------------------------------------------------------------------------
    def inventory(self) -> Dict[str, Any]:
        """This host's PCI devices that a VM could take (bridges left out), with their IOMMU
        groups, drivers and holders, for infinivirt_vm_info."""
        held = {c.address: c for c in self.store.list_pci(host=self.host)}
        devices = []
        for address in self.sysfs.devices():
            if self._is_bridge(address) or (self.sysfs.attr(address, "class") or "").startswith("0x0600"):
                continue  # bridges and host bridges stay with the host
            entry = self.sysfs.describe(address)
            group = entry["iommu_group"]
            entry["iommu_group_devices"] = self.sysfs.group_devices(group) if group is not None else []
            entry["sriov_totalvfs"] = self.sysfs.sriov_totalvfs(address)
            entry["sriov_numvfs"] = self.sysfs.sriov_numvfs(address) if entry["sriov_totalvfs"] is not None else None
            entry["physfn"] = self.sysfs.physfn(address)
            claim = held.get(address)
            entry["assigned_to"] = (claim.vm_name or claim.vm_uuid) if claim is not None else None
            devices.append(entry)
        return {
            "iommu_enabled": self.sysfs.iommu_enabled(),
            "vfio_loaded": self.sysfs.driver_loaded(VFIO_DRIVER),
            "devices": devices,
        }

    def _result(
        self,
        rec: VmRecord,
        dev: Optional[PciPassthrough],
        members: Sequence[str],
        actions: List[str],
        changed: Optional[bool] = None,
        warnings: Optional[List[str]] = None,
        address: Optional[str] = None,
    ) -> Dict[str, Any]:
        assignment: Dict[str, Any] = {"vm": rec.name, "address": dev.address if dev else address}
        if dev is not None:
            assignment.update(
                {
                    "functions": list(dev.functions),
                    "device_ids": [hostdev_id(a) for a in dev.functions],
                    "group_devices": [m for m in members if m not in dev.functions],
                    "drivers": {m: self.sysfs.driver(m) for m in members},
                    "rom_file": dev.rom_file,
                    "x_vga": dev.x_vga,
                }
            )
        return {
            "changed": bool(actions) if changed is None else changed,
            "assignment": assignment,
            "actions": actions,
            "warnings": warnings or [],
        }


def _held(row: PciClaim) -> HeldPci:
    return HeldPci(
        row.address,
        row.vm_uuid,
        row.vm_name,
        row.primary_address,
        row.role == ROLE_DEVICE,
        row.rom_file,
        row.x_vga,
        row.managed,
    )


def _passthrough(rows: Sequence[PciClaim]) -> PciPassthrough:
    address = rows[0].primary_address
    primary = next((c for c in rows if c.address == address), rows[0])
    functions = tuple(sorted(c.address for c in rows if c.role == ROLE_DEVICE))
    return PciPassthrough(address, functions, primary.rom_file, primary.x_vga)


class _Reader:
    """What PciService.inventory reads besides sysfs: the store and this host's id."""

    def __init__(self, store, host_id: str):
        self.store = store
        self.host_id = host_id


def host_inventory(ctx) -> Dict[str, Any]:
    """infinivirt_vm_info's host_devices, without the VM engine."""
    return PciService(_Reader(ctx.store, ctx.host_id), SysfsRoot(ctx.sysfs_root)).inventory()
