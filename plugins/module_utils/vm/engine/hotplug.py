# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Devices of a running VM: disks, NICs, USB and host PCI devices plugged and unplugged,
disks grown, over QMP.

What QEMU has is looked at before each step, so a task killed half-way is finished by the
next run (see Hotplug).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Dict, List, Optional, Set

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QmpError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_vhost
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import (
    SPARE_ROOT_PORTS,
    DiskSpec,
    HotplugPlan,
    blockdevs,
    device,
    device_id,
    iothread_id,
    iothread_object,
    node_names,
    own_iothread,
    secret_id,
    throttle_group,
    throttle_group_id,
    throttle_node,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import (
    PciPassthrough,
    function_of,
    hostdev_id,
    vfio_devices,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import (
    NicHotplugPlan,
    NicSpec,
    pcie_slot,
    use_vhost,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import device as nic_device
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import netdev as nic_netdev
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import UsbHotplugPlan
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import device as usb_device

UNPLUG_TIMEOUT = 30.0  # the guest's PCIe hot-plug driver takes ~5 s (attention button delay)
UNPLUG_POLL = 0.1


class Hotplug:
    """Hot-plug for the VMs an engine.Engine runs (its QMP, store, TAPs and firewall hook).

    Every step first looks at what QEMU has (devices, block nodes, objects, descriptor
    sets), so a task killed half-way is finished by the next one: a device already there
    is only recorded, a leftover node or object of a plug that did not finish is removed
    before plugging again, and an unplug already asked for is waited for, not asked twice.
    The row is written once QEMU and the firewall agree with it."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def timeout(self) -> float:
        return self.engine.sessions.qmp_timeout

    def _session(self, rec: VmRecord):
        """The task's QMP session (one per task, see session.QmpSessions.session)."""
        return self.engine.sessions.session(rec)

    # -- what QEMU has --------------------------------------------------------------------
    def _devices(self, qmp: QmpSession) -> Set[str]:
        return {p["name"] for p in qmp.execute("qom-list", {"path": "/machine/peripheral"}, timeout=self.timeout)}

    def _objects(self, qmp: QmpSession) -> Set[str]:
        return {o["name"] for o in qmp.execute("qom-list", {"path": "/objects"}, timeout=self.timeout)}

    def _nodes(self, qmp: QmpSession) -> Set[str]:
        nodes = qmp.execute("query-named-block-nodes", {"flat": True}, timeout=self.timeout)
        return {n["node-name"] for n in nodes}

    def _fd_sets(self, qmp: QmpSession, opaque: str) -> List[int]:
        return [
            s["fdset-id"]
            for s in qmp.execute("query-fdsets", timeout=self.timeout)
            if any(fd.get("opaque") == opaque for fd in s.get("fds", []))
        ]

    def _unplug(self, qmp: QmpSession, dev_id: str) -> None:
        """Ask the guest to let go of ``dev_id`` and wait until QEMU says it is gone. An
        unplug asked for by a run that was cut off is waited for, not asked again."""
        if dev_id not in self._devices(qmp):
            return
        try:
            qmp.execute_and_wait("device_del", {"id": dev_id}, "DEVICE_DELETED", {"device": dev_id}, UNPLUG_TIMEOUT)
            return
        except QmpError as exc:
            if "DeviceNotFound" in exc.reason:  # a cut-off run's unplug ended after the look
                return
            if "process of unplug" not in exc.reason:
                raise
        deadline = time.monotonic() + UNPLUG_TIMEOUT
        while dev_id in self._devices(qmp):
            if time.monotonic() > deadline:
                raise QmpError(qmp.vm_name, "device_del", "%s was not released within %g s" % (dev_id, UNPLUG_TIMEOUT))
            time.sleep(UNPLUG_POLL)

    def _drop_disk_leftovers(self, qmp: QmpSession, disk: DiskSpec) -> None:
        """Block nodes, objects and descriptor sets of ``disk`` that no device uses."""
        nodes = self._nodes(qmp)
        for node in (throttle_node(disk),) + tuple(reversed(node_names(disk))):
            if node in nodes:
                qmp.execute("blockdev-del", {"node-name": node}, timeout=self.timeout)
        objects = self._objects(qmp)
        own = (iothread_id(disk),) if own_iothread(disk) else ()  # a shared one stays
        for obj in (secret_id(disk), throttle_group_id(disk)) + own:
            if obj in objects:
                qmp.execute("object-del", {"id": obj}, timeout=self.timeout)
        for fdset in self._fd_sets(qmp, disk.disk_id):
            qmp.execute("remove-fd", {"fdset-id": fdset}, timeout=self.timeout)

    # -- disks ----------------------------------------------------------------------------
    def disks(self, rec: VmRecord, plan: HotplugPlan, disk_keys: Optional[Dict[str, str]] = None) -> None:
        """Unplug, then plug, as the plan says. An encrypted disk's key goes to QEMU inside
        QMP (object-add), never through argv or a file; the image itself as descriptors
        opened confined to the storage roots (add-fd), never by name."""
        disk_keys = disk_keys or {}
        running = list(rec.running_spec.disks)
        try:
            with self._session(rec) as qmp:
                for disk in plan.remove:
                    self._unplug(qmp, device_id(disk))
                    self._drop_disk_leftovers(qmp, disk)
                    running = [d for d in running if d.path != disk.path]
                for disk in plan.add:
                    if device_id(disk) not in self._devices(qmp):
                        self._drop_disk_leftovers(qmp, disk)  # of a plug that was cut off
                        self._plug_disk(rec, qmp, disk, disk_keys.get(disk.disk_id))
                    running.append(disk)
                for disk in plan.throttle:
                    self._set_limits(qmp, disk)
                    running = [disk if d.path == disk.path else d for d in running]
        finally:  # what QEMU has now, also after a failure half-way
            rec.running_spec = dataclasses.replace(rec.running_spec, disks=tuple(running))
            records.save(self.engine.store, rec)

    def _plug_disk(self, rec: VmRecord, qmp: QmpSession, disk: DiskSpec, key: Optional[str]) -> None:
        q35_pci = rec.spec.machine_type == "q35" and disk.bus == "virtio"
        bus = self._free_root_port(qmp) if q35_pci else None
        opened_as = None
        with contextlib.ExitStack() as stack:
            if self.engine.resources.storage_roots:
                field = "disks[%d].path" % [d.path for d in rec.spec.disks].index(disk.path)
                fds = self.engine.resources.open_image(stack, disk, disk.path, field)
                opened_as = "/dev/fdset/%d" % qmp.add_fd_set(fds, disk.disk_id, timeout=self.timeout)
            if key is not None:
                secret = {"qom-type": "secret", "id": secret_id(disk), "format": "raw", "data": key}
                qmp.execute("object-add", secret, timeout=self.timeout)
            objects = self._objects(qmp)
            if disk.iothread and iothread_id(disk) not in objects:  # a shared one may exist
                qmp.execute("object-add", iothread_object(disk), timeout=self.timeout)
            if disk.throttled:
                qmp.execute("object-add", throttle_group(disk), timeout=self.timeout)
            for node in blockdevs(disk, encrypted=key is not None, opened_as=opened_as):
                qmp.execute("blockdev-add", node, timeout=self.timeout)
        qmp.execute("device_add", device(disk, bus), timeout=self.timeout)

    def _set_limits(self, qmp: QmpSession, disk: DiskSpec) -> None:
        """New limits for a disk that runs in its throttle group (every member: one that is
        left out would keep its old value)."""
        qmp.execute(
            "qom-set",
            {"path": "/objects/" + throttle_group_id(disk), "property": "limits", "value": disk.limits()},
            timeout=self.timeout,
        )

    def _free_root_port(self, qmp: QmpSession) -> str:
        for bus in qmp.execute("query-pci", timeout=self.timeout):
            for dev in bus.get("devices", []):
                bridge = dev.get("pci_bridge")
                if dev.get("qdev_id", "").startswith("rp") and bridge is not None and not bridge.get("devices"):
                    return dev["qdev_id"]
        raise StateError(
            "no free PCIe slot is left for another disk or NIC; restart the VM to get %d new ones" % SPARE_ROOT_PORTS
        )

    # -- NICs -----------------------------------------------------------------------------
    def nics(self, rec: VmRecord, plan: NicHotplugPlan, bridges: Dict[str, str]) -> None:
        """Unplug, then plug (netdev_add + device_add on a free root port). A new NIC's TAP
        gets its firewall rules before the guest sees the NIC."""
        vhost = check_vhost(rec.spec)
        netns = rec.running_spec.netns
        try:
            with self._session(rec) as qmp:
                for nic in plan.remove:
                    self._unplug(qmp, nic.device_id)
                    self._netdev_del(qmp, nic.netdev_id)
                    self.engine.resources.drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
                    self._set_running_nics(rec, [n for n in rec.running_spec.nics if n.mac != nic.mac])
                for nic in plan.add:
                    if nic.device_id in self._devices(qmp):  # plugged by a run that was cut off
                        self._set_running_nics(rec, list(rec.running_spec.nics) + [nic])
                        continue
                    self._netdev_del(qmp, nic.netdev_id)  # a leftover of a plug that was cut off
                    self.engine.resources.make_taps(rec, [nic], bridges)
                    self._set_running_nics(rec, list(rec.running_spec.nics) + [nic])
                    try:
                        self.engine.resources.sync_firewall(rec)
                        self._plug_nic(rec, qmp, nic, vhost)
                    except InfinivirtError:  # a NIC that did not make it leaves no TAP behind
                        self._set_running_nics(rec, [n for n in rec.running_spec.nics if n.mac != nic.mac])
                        self.engine.resources.drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
                        raise
            for nic in plan.rate:
                self._set_rate(rec, nic, netns)
        finally:  # the rules and the row follow what QEMU has now, also after a failure
            self.engine.resources.sync_firewall(rec)
            records.save(self.engine.store, rec)

    def _set_rate(self, rec: VmRecord, nic: NicSpec, netns) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import set_rate_limit

        set_rate_limit(nic.tap_name, nic.rate_limit_mbit, netns)
        self._set_running_nics(rec, [nic if n.mac == nic.mac else n for n in rec.running_spec.nics])

    def _plug_nic(self, rec: VmRecord, qmp: QmpSession, nic: NicSpec, vhost: bool) -> None:
        vcpus = rec.running_spec.vcpus
        bus = self._free_root_port(qmp) if pcie_slot(nic, rec.running_spec.machine_type) else None
        qmp.execute("netdev_add", nic_netdev(nic, vcpus, use_vhost(nic, vhost)), timeout=self.timeout)
        try:
            qmp.execute("device_add", nic_device(nic, vcpus, bus), timeout=self.timeout)
        except QmpError:
            qmp.execute("netdev_del", {"id": nic.netdev_id}, timeout=self.timeout)
            raise

    def _netdev_del(self, qmp: QmpSession, netdev_id: str) -> None:
        """Remove a netdev if QEMU has it (QMP cannot list netdevs in every QEMU version)."""
        try:
            qmp.execute("netdev_del", {"id": netdev_id}, timeout=self.timeout)
        except QmpError as exc:
            if "DeviceNotFound" not in exc.reason and "not found" not in exc.reason:
                raise

    @staticmethod
    def _set_running_nics(rec: VmRecord, nics: List[NicSpec]) -> None:
        rec.running_spec = dataclasses.replace(rec.running_spec, nics=tuple(nics))

    # -- USB ------------------------------------------------------------------------------
    def usb(self, rec: VmRecord, plan: UsbHotplugPlan) -> None:
        """Unplug, then plug usb-host devices on the VM's xHCI controller. QEMU takes a
        device that is not plugged into the host yet and attaches it when it appears."""
        desired = list(rec.spec.usb or ())
        plugged = {d.key: d for d in rec.running_spec.usb or ()}
        try:
            with self._session(rec) as qmp:
                for dev in plan.remove:
                    self._unplug(qmp, dev.device_id)
                    plugged.pop(dev.key, None)
                for dev in plan.add:
                    if dev.device_id not in self._devices(qmp):  # else plugged by a run cut off
                        qmp.execute("device_add", usb_device(dev), timeout=self.timeout)
                    plugged[dev.key] = dev
        finally:  # what QEMU has now, in the order asked for, also after a failure half-way
            order = [d for d in desired if d.key in plugged] + [d for k, d in plugged.items() if d not in desired]
            rec.running_spec = dataclasses.replace(rec.running_spec, usb=tuple(order))
            records.save(self.engine.store, rec)

    # -- host PCI devices -----------------------------------------------------------------
    def device_ids(self, rec: VmRecord) -> Set[str]:
        """The ids of the devices QEMU has (qom-list /machine/peripheral)."""
        with self._session(rec) as qmp:
            return self._devices(qmp)

    def pci_present(self, rec: VmRecord, dev: PciPassthrough) -> bool:
        with self._session(rec) as qmp:
            have = self._devices(qmp)
        return all(hostdev_id(a) in have for a in dev.functions)

    def pci_add(self, rec: VmRecord, dev: PciPassthrough) -> bool:
        """Plug an assignment on a free root port: the other functions first, function 0 last
        (the guest is told of the slot when function 0 arrives). Returns whether it plugged
        anything; a plug cut off half-way is removed and done again."""
        ids = [hostdev_id(a) for a in dev.functions]
        with self._session(rec) as qmp:
            have = self._devices(qmp)
            if all(i in have for i in ids):
                return False
            self._pci_del(qmp, dev, have)
            objs = vfio_devices(dev, self._free_root_port(qmp))
            added = []
            try:
                for obj in objs[1:] + objs[:1]:
                    qmp.execute("device_add", obj, timeout=self.timeout)
                    added.append(obj["id"])
            except InfinivirtError:
                if added:
                    self._pci_del(qmp, dev, self._devices(qmp))
                raise
        return True

    def pci_remove(self, rec: VmRecord, dev: PciPassthrough) -> bool:
        """Unplug an assignment (function 0 takes its slot's functions along) and wait for
        DEVICE_DELETED. Returns whether QEMU had any of it."""
        with self._session(rec) as qmp:
            have = self._devices(qmp)
            if not any(hostdev_id(a) in have for a in dev.functions):
                return False
            self._pci_del(qmp, dev, have)
        return True

    def _pci_del(self, qmp: QmpSession, dev: PciPassthrough, have: Set[str]) -> None:
        ordered = sorted(dev.functions, key=function_of)  # function 0 first: it holds the slot
        for address in ordered:
            if hostdev_id(address) in have:
                self._unplug(qmp, hostdev_id(address))
