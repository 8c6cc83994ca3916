# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's network cards: the spec of one NIC, its validation, and the QEMU objects it becomes.

Each NIC is a TAP device on a Linux bridge (made by Infinivirt, see host/tap.py) plus a
``-netdev tap`` and a ``-device``. A NIC is known by its MAC: the MAC is generated once when
the user gives none and kept in the store, and the TAP and QEMU ids derive from it, so they
survive restarts, reordering and hot-plug.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.ports import Port
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice, check_int, validate_ifname

MODELS = ("virtio-net-pci", "e1000", "e1000e", "rtl8139")
VIRTIO = "virtio-net-pci"
MAX_QUEUES = 8  # a queue pair per vCPU, up to this many
RATE_LIMIT_MAX_MBIT = 32000  # tbf's 32-bit rate in bytes per second (pyroute2 has no 64-bit rate)
LOCAL_OUI = "52:54:00"  # QEMU/KVM's locally administered prefix
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclasses.dataclass(frozen=True)
class NicSpec:
    network: Optional[str] = None  # an infinivirt_net network on this host
    bridge: Optional[str] = None  # or a Linux bridge by name
    model: str = VIRTIO
    mac: Optional[str] = None  # None only before merge_nics gives it one
    queues: Optional[int] = None  # None: one per vCPU (virtio), capped at MAX_QUEUES
    vhost: Optional[bool] = None  # None: when /dev/vhost-net exists (virtio only)
    mtu: Optional[int] = None  # None: the bridge's
    tap: Optional[str] = None  # None: derived from the MAC
    ips: Tuple[str, ...] = ()  # addresses the guest is given (for anti-spoofing rules)
    rate_limit_mbit: Optional[int] = None  # traffic to the guest, shaped on the TAP (tbf)

    @property
    def nic_id(self) -> str:
        return (self.mac or "").replace(":", "")

    @property
    def tap_name(self) -> str:
        return self.tap or "iv" + self.nic_id

    @property
    def netdev_id(self) -> str:
        return "nd-" + self.nic_id

    @property
    def device_id(self) -> str:
        return "nic-" + self.nic_id

    @property
    def hotpluggable(self) -> bool:
        return self.model == VIRTIO

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ips"] = list(self.ips)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NicSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        if "mac" in values and isinstance(values["mac"], str):
            values["mac"] = values["mac"].lower()
        values["ips"] = tuple(values.get("ips") or ())
        return cls(**values)


def derived_mac(seed: str, index: int, attempt: int = 0) -> str:
    """A MAC in QEMU's prefix, derived from the VM's name and the NIC's position: check mode
    predicts the one a real run gives, and a VM made again gets its old MACs (and leases)."""
    digest = hashlib.sha256(("%s/%d/%d" % (seed, index, attempt)).encode()).digest()
    return LOCAL_OUI + "".join(":%02x" % byte for byte in digest[:3])


def merge_nics(
    items: Sequence[Mapping[str, Any]], stored: Sequence[NicSpec], taken_macs: Sequence[str] = (), seed: str = ""
) -> Tuple[NicSpec, ...]:
    """NICs from module params. A NIC without a MAC keeps the MAC of the stored NIC at
    the same position (so a rerun of the same task changes nothing), or gets one derived
    from ``seed`` (the VM's name) that no other NIC has."""
    used = {m.lower() for m in taken_macs} | {n.mac for n in stored if n.mac}
    used |= {str(i.get("mac")).lower() for i in items if i.get("mac")}
    nics = []
    for index, item in enumerate(items):
        nic = NicSpec.from_dict(item)
        if nic.mac is None:
            mac = stored[index].mac if index < len(stored) else None
            if (
                mac is None
                or any(n.mac == mac for n in nics)
                or any(str(i.get("mac") or "").lower() == mac for i in items)
            ):
                attempt = 0
                mac = derived_mac(seed, index)
                while mac in used:
                    attempt += 1
                    mac = derived_mac(seed, index, attempt)
            used.add(mac)
            nic = dataclasses.replace(nic, mac=mac)
        nics.append(nic)
    return tuple(nics)


def validate_mac(field: str, mac: Any) -> str:
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac.lower()):
        raise SpecError(field, "%r is not a MAC address like 52:54:00:12:34:56" % (mac,))
    first = int(mac[:2], 16)
    if first & 1:
        raise SpecError(field, "%s is a multicast address; a NIC needs a unicast MAC (even first byte)" % mac)
    if mac.lower() == "00:00:00:00:00:00":
        raise SpecError(field, "the all-zero MAC is not a valid address")
    return mac


def validate_nics(nics: Sequence[NicSpec]) -> None:
    seen_macs, seen_taps = set(), set()
    for index, nic in enumerate(nics):
        field = "nics[%d]" % index
        if (nic.network is None) == (nic.bridge is None):
            raise SpecError(
                field, "needs exactly one of network (an infinivirt_net network) or bridge (a Linux bridge)"
            )
        if nic.network is not None:
            validate_ifname(field + ".network", nic.network, reserved_ok=True)
        if nic.bridge is not None:
            validate_ifname(field + ".bridge", nic.bridge)
        check_choice(field + ".model", nic.model, MODELS)
        validate_mac(field + ".mac", nic.mac)
        if nic.mac in seen_macs:
            raise SpecError(field + ".mac", "%s is used by another NIC of this VM" % nic.mac)
        seen_macs.add(nic.mac)
        if nic.tap is not None:
            validate_ifname(field + ".tap", nic.tap)
        if nic.tap_name in seen_taps:
            raise SpecError(field + ".tap", "%s is used by another NIC of this VM" % nic.tap_name)
        seen_taps.add(nic.tap_name)
        if nic.queues is not None:
            check_int(field + ".queues", nic.queues, 1, MAX_QUEUES)
            if nic.queues > 1 and nic.model != VIRTIO:
                raise SpecError(field + ".queues", "multi-queue needs model %s" % VIRTIO)
        if nic.vhost and nic.model != VIRTIO:
            raise SpecError(field + ".vhost", "vhost-net needs model %s" % VIRTIO)
        if nic.mtu is not None:
            check_int(field + ".mtu", nic.mtu, 68, 65535)
        if nic.rate_limit_mbit is not None:
            check_int(field + ".rate_limit_mbit", nic.rate_limit_mbit, 1, RATE_LIMIT_MAX_MBIT)
        for ip_index, address in enumerate(nic.ips):
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                raise SpecError(
                    "%s.ips[%d]" % (field, ip_index),
                    "%r is not an IP address (give it without a prefix length)" % (address,),
                ) from None
            if ip.is_multicast or ip.is_unspecified:
                raise SpecError("%s.ips[%d]" % (field, ip_index), "%s cannot be a NIC's address" % ip)


def queue_count(nic: NicSpec, vcpus: int) -> int:
    if nic.model != VIRTIO:
        return 1
    return nic.queues if nic.queues is not None else max(1, min(vcpus, MAX_QUEUES))


def use_vhost(nic: NicSpec, available: bool) -> bool:
    """vhost-net moves the packet path into the host kernel; by default only where the
    host has it (an explicit vhost: true on a host without it is refused at start)."""
    if nic.model != VIRTIO:
        return False
    return nic.vhost if nic.vhost is not None else available


def pcie_slot(nic: NicSpec, machine_type: str) -> bool:
    """On q35 a virtio NIC gets a root port of its own (hot-pluggable); the emulated
    cards are conventional PCI devices and sit on the root bus."""
    return machine_type == "q35" and nic.model == VIRTIO


def netdev(nic: NicSpec, vcpus: int, vhost: bool) -> Dict[str, Any]:
    """The -netdev / netdev_add object: the TAP Infinivirt made, no scripts."""
    obj: Dict[str, Any] = {
        "type": "tap",
        "id": nic.netdev_id,
        "ifname": nic.tap_name,
        "script": "no",
        "downscript": "no",
    }
    queues = queue_count(nic, vcpus)
    if queues > 1:
        obj["queues"] = queues
    if nic.model == VIRTIO:
        obj["vhost"] = vhost
    return obj


def device(nic: NicSpec, vcpus: int, bus: Optional[str]) -> Dict[str, Any]:
    dev: Dict[str, Any] = {"driver": nic.model, "id": nic.device_id, "netdev": nic.netdev_id, "mac": nic.mac}
    if bus:
        dev["bus"] = bus
    queues = queue_count(nic, vcpus)
    if queues > 1:  # a vector per queue, per direction, plus config and control
        dev.update({"mq": True, "vectors": 2 * queues + 2})
    if nic.mtu is not None and nic.model == VIRTIO:
        dev["host_mtu"] = nic.mtu
    return dev


@dataclasses.dataclass(frozen=True)
class NicHotplugPlan:
    add: Tuple[NicSpec, ...]
    remove: Tuple[NicSpec, ...]
    live: bool  # False: some change needs a restart, so nothing is done live
    rate: Tuple[NicSpec, ...] = ()  # NICs whose rate limit changes live (desired specs)


def plan_nic_hotplug(running: Sequence[NicSpec], desired: Sequence[NicSpec]) -> NicHotplugPlan:
    """NICs added or removed, and rate limits changed (tc on the TAP), while running (known
    by MAC), if all of it can be done live: a NIC whose other settings changed, or an
    emulated (non-virtio) card, needs a restart."""
    before = {n.mac: n for n in running}
    after = {n.mac: n for n in desired}
    add = tuple(n for n in desired if n.mac not in before)
    remove = tuple(n for n in running if n.mac not in after)
    kept = [m for m in before if m in after]
    changed = any(
        dataclasses.replace(before[m], rate_limit_mbit=None) != dataclasses.replace(after[m], rate_limit_mbit=None)
        for m in kept
    )
    rate = tuple(after[m] for m in kept if before[m].rate_limit_mbit != after[m].rate_limit_mbit)
    live = not changed and all(n.hotpluggable for n in add + remove)
    return NicHotplugPlan(add, remove, live, rate)


def ports(nics: Sequence[NicSpec]) -> List[Port]:
    return [Port(tap=n.tap_name, mac=n.mac or "", ips=n.ips) for n in nics]
