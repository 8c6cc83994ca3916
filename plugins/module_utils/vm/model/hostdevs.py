# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host PCI devices given to a VM through VFIO: addresses, the request's validation, and the
``vfio-pci`` devices QEMU gets (pure; host/pci.py reads and changes sysfs).

A multi-function device (a GPU and its HDMI audio) keeps its functions together: each goes
to the same slot of one PCIe root port, function 0 with ``multifunction=on``, so the guest
sees one device, as on the host.

``plan_assign`` decides an assignment (infinivirt_gpu state=present) from what the store and
sysfs say, as plain data: the functions and IOMMU group members, their drivers, the rows held
on this host (``HeldPci``) and the VM's status; vm/passthrough.py gathers those and applies
the ``AssignPlan`` (claim, update, rebind, hot-plug).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import PAUSED, RUNNING

VFIO_DRIVER = "vfio-pci"
# Drivers a device of an IOMMU group may have while another device of the group is handed
# to a VM: the kernel (VFIO's viability check) accepts these and none.
HARMLESS_DRIVERS = (VFIO_DRIVER, "pci-stub")
BRIDGE_CLASS_PREFIX = "0x0604"  # PCI-to-PCI bridges stay with the host (pcieport)
_ADDRESS_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
FUNCTIONS_ALL = "all"
VLAN_MAX = 4094
NUM_VFS_MAX = 256


def parse_address(field: str, value: Any) -> str:
    """A PCI address as sysfs writes it: DDDD:BB:SS.F (domain, bus, slot, function), in
    lower case."""
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value.lower()):
        raise SpecError(field, "%r is not a PCI address DDDD:BB:SS.F (for example 0000:01:00.0)" % (value,))
    return value.lower()


def slot_of(address: str) -> str:
    return address.rsplit(".", 1)[0]


def function_of(address: str) -> int:
    return int(address.rsplit(".", 1)[1])


def parse_functions(value: Any) -> Union[None, str, Tuple[int, ...]]:
    """None (the address's own function), ``all``, or a list of function numbers 0-7."""
    if value is None or value == FUNCTIONS_ALL:
        return value
    items = value if isinstance(value, (list, tuple)) else None
    if not items:
        raise SpecError("functions", "must be %s or a non-empty list of function numbers 0-7" % FUNCTIONS_ALL)
    numbers = []
    for item in items:
        try:
            number = int(str(item), 10)
        except ValueError:
            number = -1
        if isinstance(item, bool) or not 0 <= number <= 7:
            raise SpecError("functions", "%r is not a function number 0-7" % (item,))
        if number in numbers:
            raise SpecError("functions", "function %d is listed twice" % number)
        numbers.append(number)
    return tuple(sorted(numbers))


def parse_mac(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise SpecError(field, "%r is not a MAC address like 52:54:00:12:34:56" % (value,))
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise SpecError(field, "%s is a multicast address" % mac)
    return mac


@dataclasses.dataclass(frozen=True)
class SriovRequest:
    """A virtual function of an SR-IOV physical function: made through sysfs when
    ``num_vfs`` asks for more than exist, its MAC and VLAN set on the PF."""

    pf: str
    vf: int
    num_vfs: Optional[int] = None
    mac: Optional[str] = None
    vlan: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def parse_sriov(value: Optional[Dict[str, Any]]) -> Optional[SriovRequest]:
    if value is None:
        return None
    pf = parse_address("sriov.pf", value.get("pf"))
    vf = value.get("vf")
    if isinstance(vf, bool) or not isinstance(vf, int) or not 0 <= vf < NUM_VFS_MAX:
        raise SpecError("sriov.vf", "must be a VF number from 0, got %r" % (vf,))
    num_vfs = value.get("num_vfs")
    if num_vfs is not None:
        if isinstance(num_vfs, bool) or not isinstance(num_vfs, int) or not 1 <= num_vfs <= NUM_VFS_MAX:
            raise SpecError("sriov.num_vfs", "must be 1 to %d, got %r" % (NUM_VFS_MAX, num_vfs))
        if vf >= num_vfs:
            raise SpecError("sriov.vf", "VF %d does not exist among num_vfs %d (they count from 0)" % (vf, num_vfs))
    mac = parse_mac("sriov.mac", value["mac"]) if value.get("mac") is not None else None
    vlan = value.get("vlan")
    if vlan is not None and (isinstance(vlan, bool) or not isinstance(vlan, int) or not 0 <= vlan <= VLAN_MAX):
        raise SpecError("sriov.vlan", "must be 0 (none) to %d, got %r" % (VLAN_MAX, vlan))
    return SriovRequest(pf, vf, num_vfs, mac, vlan)


def select_functions(address: str, functions: Union[None, str, Tuple[int, ...]], present: Sequence[str]) -> List[str]:
    """The host functions the VM gets, sorted. ``present``: the addresses sysfs lists."""
    if functions is None:
        return [address]
    slot = slot_of(address)
    on_slot = sorted(a for a in present if slot_of(a) == slot)
    if functions == FUNCTIONS_ALL:
        chosen = on_slot
    else:
        chosen = ["%s.%d" % (slot, n) for n in functions]
        missing = [a for a in chosen if a not in on_slot]
        if missing:
            raise SpecError("functions", "no PCI device %s on this host" % ", ".join(missing))
    if address not in chosen:
        raise SpecError("functions", "must include the function of address %s" % address)
    if len(chosen) > 1 and "%s.0" % slot not in chosen:
        raise SpecError("functions", "a multi-function device needs function 0 (%s.0) for the guest to see it" % slot)
    return chosen


def host_driver_offenders(devices: Sequence[Tuple[str, Optional[str], str]]) -> List[Tuple[str, str]]:
    """(address, driver) of each device of an IOMMU group that a host driver still holds;
    ``devices``: (address, driver or None, class) of every device of the group. Bridges stay
    with the host."""
    return [
        (address, driver)
        for address, driver, cls in devices
        if driver is not None and driver not in HARMLESS_DRIVERS and not cls.startswith(BRIDGE_CLASS_PREFIX)
    ]


@dataclasses.dataclass(frozen=True)
class PciPassthrough:
    """One assignment as QEMU gets it: the host functions (the first is the guest's
    function 0), the ROM and whether it is the primary VGA."""

    address: str  # the assignment's address (its rom_file and x_vga apply to it)
    functions: Tuple[str, ...]
    rom_file: Optional[str] = None
    x_vga: bool = False


def hostdev_id(address: str) -> str:
    """QEMU device id of a host function: stable across restarts and hot-plug."""
    return "hostdev-" + address.replace(":", "-").replace(".", "-")


def vfio_devices(dev: PciPassthrough, bus: Optional[str]) -> List[Dict[str, Any]]:
    """The -device/device_add objects of one assignment, function 0 first. On a root port
    each function keeps its number (one slot, ``multifunction=on`` on function 0); a lone
    function is the guest's function 0."""
    many = len(dev.functions) > 1
    devices = []
    for address in dev.functions:
        obj: Dict[str, Any] = {"driver": VFIO_DRIVER, "id": hostdev_id(address), "host": address}
        if bus is not None:
            obj["bus"] = bus
            obj["addr"] = "0.%d" % (function_of(address) if many else 0)
        if many and function_of(address) == 0:
            obj["multifunction"] = True
        if address == dev.address:
            if dev.rom_file is not None:
                obj["romfile"] = dev.rom_file
            if dev.x_vga:
                obj["x-vga"] = True
        devices.append(obj)
    return devices


def needs_vfio(driver: Optional[str], passed: bool) -> bool:
    """A function QEMU gets must be bound to vfio-pci; another device of its group may
    also be unbound (or pci-stub)."""
    return driver != VFIO_DRIVER if passed else driver not in HARMLESS_DRIVERS + (None,)


@dataclasses.dataclass(frozen=True)
class HeldPci:
    """A device this host has assigned (a pci_assignments row), as the plan needs it."""

    address: str
    vm_uuid: str
    vm_name: Optional[str]
    primary_address: str
    passed: bool  # QEMU gets it; else another device of an IOMMU group
    rom_file: Optional[str] = None
    x_vga: bool = False
    managed: bool = False


@dataclasses.dataclass
class AssignPlan:
    """What assigning ``dev`` to a VM takes, in order: claim rows for ``claim`` (members
    nobody holds yet), ``update`` the primary row's rom_file/x_vga/managed, rebind ``rebind``
    to vfio-pci, and, when ``plug`` (the VM runs here), hot-plug ``dev`` unless QEMU has it."""

    dev: PciPassthrough
    managed: bool
    members: List[str]
    claim: List[str]
    update: bool
    rebind: List[str]
    plug: bool
    actions: List[str]
    warnings: List[str]


def plan_assign(
    vm: Tuple[str, str],
    address: str,
    chosen: Sequence[str],
    members: Sequence[str],
    drivers: Dict[str, Optional[str]],
    held: Sequence[HeldPci],
    settings: Tuple[Optional[str], bool, bool],
    status: str,
    here: bool,
) -> AssignPlan:
    """``vm``: (name, uuid); ``chosen``: the functions QEMU gets; ``members``: every device of
    their IOMMU groups (bridges left out); ``drivers``: each member's driver now; ``held``: the
    rows of this host; ``settings``: (rom_file, x_vga, managed) asked; ``status``: the VM's;
    ``here``: the VM is on this host. Refuses a device another VM holds, or a change of
    functions or of assignment."""
    name, uuid = vm
    rom_file, x_vga, managed = settings
    by_address = {h.address: h for h in held}
    mine = _check_claims(name, uuid, address, chosen, members, by_address)
    primary = next((h for h in mine if h.address == address), None)
    update = primary is not None and (primary.rom_file, primary.x_vga, primary.managed) != settings
    claim = [m for m in members if m not in by_address]  # a member this VM holds keeps its row
    rebind = [m for m in members if needs_vfio(drivers.get(m), m in chosen)] if managed else []
    actions = [a for a, wanted in (("claim", claim), ("update", update), ("bind_vfio", rebind)) if wanted]
    plug = status in (RUNNING, PAUSED) and here
    warnings = []
    if plug and update and not claim:
        warnings.append(
            "VM %s runs with the earlier rom_file/x_vga of %s; they apply at its next start" % (name, address)
        )
    dev = PciPassthrough(address, tuple(chosen), rom_file, x_vga)
    return AssignPlan(dev, managed, list(members), claim, update, rebind, plug, actions, warnings)


def _check_claims(
    name: str,
    uuid: str,
    address: str,
    chosen: Sequence[str],
    members: Sequence[str],
    held: Dict[str, HeldPci],
) -> List[HeldPci]:
    """The rows of this VM's assignment of ``address``, once no other VM holds a member and the
    functions are those it has."""
    for member in members:
        claim = held.get(member)
        if claim is not None and claim.vm_uuid != uuid:
            raise StateError(
                "PCI device %s is assigned to VM %s%s; release it there first (infinivirt_gpu state=absent)"
                % (member, claim.vm_name or claim.vm_uuid, "" if member in chosen else " (it shares an IOMMU group)")
            )
    mine = [h for h in held.values() if h.vm_uuid == uuid and h.primary_address == address]
    if mine:
        old = sorted(h.address for h in mine if h.passed)
        if old != list(chosen):
            raise SpecError(
                "functions",
                "%s is assigned to VM %s with functions %s; release it (state: absent) before changing "
                "them" % (address, name, ", ".join(old)),
            )
    for function in chosen:
        claim = held.get(function)
        if claim is not None and claim.vm_uuid == uuid and claim.primary_address != address:
            raise SpecError(
                "address", "%s is already part of assignment %s of VM %s" % (function, claim.primary_address, name)
            )
    return mine
