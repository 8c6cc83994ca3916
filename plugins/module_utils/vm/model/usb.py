# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""USB passthrough: the spec of one host USB device, its validation, and its QEMU device.

A device is named either by vendor and product id, or by the host bus and port it is plugged
into. Each becomes a ``usb-host`` device on the VM's xHCI controller (``qemu-xhci``, id
``xhci``). QEMU accepts a device that is not plugged in yet and attaches it when it
appears, as users of USB tokens expect. Ids derive from what names the device, so they are
the same after a restart and across hot-plug.

The controller exists when ``usb`` is set at all (an empty list too); a VM started without
it needs a restart before its first USB device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_int

XHCI_ID = "xhci"
XHCI_BUS = XHCI_ID + ".0"
_USB_ID_RE = re.compile(r"(0x)?[0-9a-fA-F]{4}")
_PORT_RE = re.compile(r"[1-9][0-9]{0,2}(\.[1-9][0-9]{0,2}){0,6}")  # 1, 1.2, 1.2.3 (hubs)
BUS_MAX = 255


@dataclasses.dataclass(frozen=True)
class UsbSpec:
    vendor_id: Optional[str] = None  # "0x046d" (normalized: 0x and four lower-case digits)
    product_id: Optional[str] = None
    bus: Optional[int] = None  # host bus number, as lsusb prints it
    port: Optional[str] = None  # host port path on that bus: "1", "1.4"

    @property
    def key(self) -> str:
        if self.vendor_id is not None:
            return "%s:%s" % (self.vendor_id, self.product_id)
        return "%s-%s" % (self.bus, self.port)

    @property
    def device_id(self) -> str:
        return "usb-" + hashlib.sha1(self.key.encode()).hexdigest()[:10]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UsbSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        for name in ("vendor_id", "product_id"):
            if isinstance(values.get(name), str) and _USB_ID_RE.fullmatch(values[name]):
                values[name] = normalize_id(values[name])
        return cls(**values)


def normalize_id(value: str) -> str:
    digits = value[2:] if value.lower().startswith("0x") else value
    return "0x" + digits.lower()


def usb_from_params(items: Optional[Sequence[Mapping[str, Any]]]) -> Optional[Tuple[UsbSpec, ...]]:
    if items is None:
        return None
    return tuple(item if isinstance(item, UsbSpec) else UsbSpec.from_dict(item) for item in items)


def validate_usb(devices: Optional[Sequence[UsbSpec]]) -> None:
    """Each entry names a device one way only, and no device twice."""
    seen: Dict[str, int] = {}
    for index, dev in enumerate(devices or ()):
        field = "usb[%d]" % index
        by_id = dev.vendor_id is not None or dev.product_id is not None
        by_port = dev.bus is not None or dev.port is not None
        if by_id and by_port:
            raise SpecError(field, "name a device by vendor_id and product_id, or by bus and port, not both")
        if not by_id and not by_port:
            raise SpecError(field, "needs vendor_id and product_id, or bus and port")
        if by_id:
            for name in ("vendor_id", "product_id"):
                value = getattr(dev, name)
                if value is None:
                    raise SpecError("%s.%s" % (field, name), "is required with %s" % _other(name))
                if not isinstance(value, str) or not _USB_ID_RE.fullmatch(value):
                    raise SpecError("%s.%s" % (field, name), "%r must be four hex digits, like 0x046d" % (value,))
        else:
            if dev.bus is None:
                raise SpecError(field + ".bus", "is required with port")
            if dev.port is None:
                raise SpecError(field + ".port", "is required with bus")
            check_int(field + ".bus", dev.bus, 1, BUS_MAX)
            if not isinstance(dev.port, str) or not _PORT_RE.fullmatch(dev.port):
                raise SpecError(field + ".port", "%r must be a port path like 1 or 1.4" % (dev.port,))
        if dev.key in seen:
            raise SpecError(field, "names the same device as usb[%d]" % seen[dev.key])
        seen[dev.key] = index


def _other(name: str) -> str:
    return "product_id" if name == "vendor_id" else "vendor_id"


def controller() -> Dict[str, Any]:
    return {"driver": "qemu-xhci", "id": XHCI_ID}


def device(dev: UsbSpec) -> Dict[str, Any]:
    """The usb-host device (JSON for -device and QMP device_add: ids are integers)."""
    obj: Dict[str, Any] = {"driver": "usb-host", "id": dev.device_id, "bus": XHCI_BUS}
    if dev.vendor_id is not None:
        obj["vendorid"] = int(dev.vendor_id, 16)
        obj["productid"] = int(dev.product_id, 16)
    else:
        obj["hostbus"] = dev.bus
        obj["hostport"] = dev.port
    return obj


@dataclasses.dataclass(frozen=True)
class UsbHotplugPlan:
    add: Tuple[UsbSpec, ...]
    remove: Tuple[UsbSpec, ...]
    live: bool  # False: the VM runs without an xHCI controller


def plan_usb_hotplug(running: Optional[Sequence[UsbSpec]], desired: Optional[Sequence[UsbSpec]]) -> UsbHotplugPlan:
    """Devices plugged and unplugged live; possible when the running VM has a controller."""
    before = {d.key for d in running or ()}
    after = {d.key for d in desired or ()}
    add = tuple(d for d in desired or () if d.key not in before)
    remove = tuple(d for d in running or () if d.key not in after)
    return UsbHotplugPlan(add, remove, running is not None and desired is not None)
