# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Devices of a running VM: disks and NICs plugged and unplugged, disks grown, over QMP.

Each step is recorded in the row's running spec as soon as it is done, so a failure half-way
leaves the row telling what the VM really has.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QmpError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.disks import (
    SPARE_ROOT_PORTS,
    DiskSpec,
    HotplugPlan,
    blockdevs,
    device,
    device_id,
    node_names,
    secret_id,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import (
    NicHotplugPlan,
    NicSpec,
    pcie_slot,
    use_vhost,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import device as nic_device
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import netdev as nic_netdev
from ansible_collections.infinivirt.core.plugins.module_utils.vm.preflight import check_vhost
from ansible_collections.infinivirt.core.plugins.module_utils.vm.record import VmRecord

UNPLUG_TIMEOUT = 30.0  # the guest's PCIe hot-plug driver takes ~5 s (attention button delay)


class Hotplug:
    """Hot-plug for the VMs a Lifecycle runs (its QMP, store, TAPs and firewall hook)."""

    def __init__(self, lifecycle):
        self.lifecycle = lifecycle

    def disks(self, rec: VmRecord, plan: HotplugPlan, disk_keys: Optional[Dict[str, str]] = None) -> None:
        """Unplug, then plug, as the plan says; the running spec follows each step, so a
        failure half-way leaves the row telling what the VM really has. An encrypted disk's
        key goes to QEMU inside QMP (object-add), never through argv or a file."""
        disk_keys = disk_keys or {}
        running = list(rec.running_spec.disks)
        for disk in plan.remove:
            with self.lifecycle.session(rec) as qmp:
                # The guest must let go of the device: wait for QEMU to say it is gone.
                qmp.execute_and_wait(
                    "device_del",
                    {"id": device_id(disk)},
                    "DEVICE_DELETED",
                    {"device": device_id(disk)},
                    timeout=UNPLUG_TIMEOUT,
                )
                for node in reversed(node_names(disk)):
                    qmp.execute("blockdev-del", {"node-name": node}, timeout=self.lifecycle.qmp_timeout)
                if any(
                    o.get("name") == secret_id(disk)
                    for o in qmp.execute("qom-list", {"path": "/objects"}, timeout=self.lifecycle.qmp_timeout)
                ):
                    qmp.execute("object-del", {"id": secret_id(disk)}, timeout=self.lifecycle.qmp_timeout)
            running = [d for d in running if d.path != disk.path]
            self._record_running_disks(rec, running)
        for disk in plan.add:
            with self.lifecycle.session(rec) as qmp:
                bus = self._free_root_port(qmp) if rec.spec.machine_type == "q35" and disk.bus == "virtio" else None
                key = disk_keys.get(disk.disk_id)
                if key is not None:
                    qmp.execute(
                        "object-add",
                        {"qom-type": "secret", "id": secret_id(disk), "format": "raw", "data": key},
                        timeout=self.lifecycle.qmp_timeout,
                    )
                for node in blockdevs(disk, encrypted=key is not None):
                    qmp.execute("blockdev-add", node, timeout=self.lifecycle.qmp_timeout)
                qmp.execute("device_add", device(disk, bus), timeout=self.lifecycle.qmp_timeout)
            running.append(disk)
            self._record_running_disks(rec, running)

    def _free_root_port(self, qmp: QmpSession) -> str:
        for bus in qmp.execute("query-pci", timeout=self.lifecycle.qmp_timeout):
            for dev in bus.get("devices", []):
                bridge = dev.get("pci_bridge")
                if dev.get("qdev_id", "").startswith("rp") and bridge is not None and not bridge.get("devices"):
                    return dev["qdev_id"]
        raise StateError(
            "no free PCIe slot is left for another disk or NIC; restart the VM to get %d new ones" % SPARE_ROOT_PORTS
        )

    def _record_running_disks(self, rec: VmRecord, disks: List[DiskSpec]) -> None:
        rec.running_spec = dataclasses.replace(rec.running_spec, disks=tuple(disks))
        self.lifecycle.store.update_vm(rec)

    # -- NICs while running ---------------------------------------------------------------
    def nics(self, rec: VmRecord, plan: NicHotplugPlan, bridges: Dict[str, str]) -> None:
        """Unplug, then plug (netdev_add + device_add on a free root port); the running
        spec follows each step, like hotplug_disks."""
        vhost = check_vhost(rec.spec)
        running = list(rec.running_spec.nics)
        netns = rec.running_spec.netns
        for nic in plan.remove:
            with self.lifecycle.session(rec) as qmp:
                qmp.execute_and_wait(
                    "device_del",
                    {"id": nic.device_id},
                    "DEVICE_DELETED",
                    {"device": nic.device_id},
                    timeout=UNPLUG_TIMEOUT,
                )
                qmp.execute("netdev_del", {"id": nic.netdev_id}, timeout=self.lifecycle.qmp_timeout)
            self.lifecycle.drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
            running = [n for n in running if n.mac != nic.mac]
            self._record_running_nics(rec, running)
        vcpus = rec.running_spec.vcpus
        for nic in plan.add:
            self.lifecycle.make_taps(rec, [nic], bridges)
            try:  # a NIC that did not make it leaves no TAP behind
                with self.lifecycle.session(rec) as qmp:
                    bus = self._free_root_port(qmp) if pcie_slot(nic, rec.running_spec.machine_type) else None
                    qmp.execute(
                        "netdev_add", nic_netdev(nic, vcpus, use_vhost(nic, vhost)), timeout=self.lifecycle.qmp_timeout
                    )
                    try:
                        qmp.execute("device_add", nic_device(nic, vcpus, bus), timeout=self.lifecycle.qmp_timeout)
                    except QmpError:
                        qmp.execute("netdev_del", {"id": nic.netdev_id}, timeout=self.lifecycle.qmp_timeout)
                        raise
            except InfinivirtError:
                self.lifecycle.drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
                raise
            running.append(nic)
            self._record_running_nics(rec, running)
        self.lifecycle.sync_firewall(rec)

    def _record_running_nics(self, rec: VmRecord, nics: List[NicSpec]) -> None:
        rec.running_spec = dataclasses.replace(rec.running_spec, nics=tuple(nics))
        self.lifecycle.store.update_vm(rec)
