# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's disks: the spec of one disk, its validation, and the QEMU objects it becomes.

Every disk is two -blockdev nodes (file, then format) and one -device, all written as
JSON, so a path needs no escaping. Names derive from the path, so a disk keeps its names
across restarts and hot-plug. On q35, each PCI disk sits on its own pcie-root-port (the
root bus has no hot-plug), and a few spare ports are kept free for disks added later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS  # image formats
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    check_choice,
    check_int,
    validate_abs_path,
)

BUSES = ("virtio", "scsi", "sata", "ide")
CACHE_MODES = ("none", "writeback", "writethrough", "directsync", "unsafe")
AIO_MODES = ("threads", "native", "io_uring")
MEDIA = ("disk", "cdrom")
SPARE_ROOT_PORTS = 4  # q35: free slots for disks and NICs plugged in while running
SATA_PORTS = 6  # q35's built-in AHCI controller
_SERIAL_RE = re.compile(r"[A-Za-z0-9._-]{1,20}")
_IOTHREAD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
IOTHREADS_MAX = 64
# Throttle limits: option -> QEMU's ThrottleLimits member. A total and its read/write pair
# exclude each other (QEMU refuses both).
LIMITS = {
    "iops": "iops-total",
    "iops_read": "iops-read",
    "iops_write": "iops-write",
    "bps": "bps-total",
    "bps_read": "bps-read",
    "bps_write": "bps-write",
}
LIMIT_MAX = 10**15  # QEMU's THROTTLE_VALUE_MAX

# cache mode -> (O_DIRECT, ignore flushes, guest-visible write cache)
_CACHE = {
    "none": (True, False, True),
    "writeback": (False, False, True),
    "writethrough": (False, False, False),
    "directsync": (True, False, False),
    "unsafe": (False, True, True),
}


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    path: str
    format: str = "qcow2"
    bus: str = "virtio"
    cache: str = "writeback"
    aio: str = "threads"
    iothread: Union[bool, str] = False  # true: a thread of its own; a name: one of iothreads
    discard: bool = False
    serial: Optional[str] = None
    readonly: bool = False
    boot_order: Optional[int] = None
    media: str = "disk"
    iops: Optional[int] = None  # throttling (see LIMITS); None: no limit
    iops_read: Optional[int] = None
    iops_write: Optional[int] = None
    bps: Optional[int] = None
    bps_read: Optional[int] = None
    bps_write: Optional[int] = None
    # How the disk is made when it is first added and its path does not exist (vm/model/clones.py).
    clone_from: Optional[str] = None
    clone_mode: Optional[str] = None
    size: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The stored form: a disk not made from a template stores no clone fields."""
        data = dataclasses.asdict(self)
        for option in ("clone_from", "clone_mode", "size"):
            if data[option] is None:
                del data[option]
        return data

    @property
    def throttled(self) -> bool:
        return any(getattr(self, option) is not None for option in LIMITS)

    def limits(self) -> Dict[str, int]:
        """QEMU's ThrottleLimits of this disk: every member, 0 where there is no limit (a
        live change must clear a limit, not leave it)."""
        return {member: getattr(self, option) or 0 for option, member in LIMITS.items()}

    def without_limits(self) -> "DiskSpec":
        return dataclasses.replace(self, **{option: None for option in LIMITS})

    @property
    def disk_id(self) -> str:
        """Stable per path: node and device names survive reordering and restarts."""
        return "d" + hashlib.sha1(self.path.encode()).hexdigest()[:10]

    @property
    def hotpluggable(self) -> bool:
        return self.bus in ("virtio", "scsi")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiskSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})


def disks_from_params(items: Optional[Sequence[Mapping[str, Any]]]) -> Tuple[DiskSpec, ...]:
    return tuple(DiskSpec.from_dict(item) for item in items or ())


def validate_iothread_names(names: Sequence[str]) -> None:
    if len(names) > IOTHREADS_MAX:
        raise SpecError("iothreads", "at most %d I/O threads" % IOTHREADS_MAX)
    seen = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not _IOTHREAD_RE.fullmatch(name):
            raise SpecError(
                "iothreads[%d]" % index,
                "%r must be a letter, then up to 31 letters, digits, '_' or '-'" % (name,),
            )
        if name in seen:
            raise SpecError("iothreads[%d]" % index, "%s is listed twice" % name)
        seen.add(name)


def _validate_iothread(field: str, disk: DiskSpec, iothreads: Sequence[str]) -> None:
    if isinstance(disk.iothread, bool):
        if disk.iothread and disk.bus != "virtio":
            raise SpecError(field, "is available for bus virtio only")
        return
    if not isinstance(disk.iothread, str) or disk.iothread not in iothreads:
        raise SpecError(
            field,
            "%r is not one of iothreads (%s); name one, or give true for a thread of the disk's own"
            % (disk.iothread, ", ".join(iothreads) or "none are defined"),
        )
    if disk.bus != "virtio":
        raise SpecError(field, "is available for bus virtio only")


def _validate_limits(field: str, disk: DiskSpec) -> None:
    for option in LIMITS:
        value = getattr(disk, option)
        if value is not None:
            check_int("%s.%s" % (field, option), value, 1, LIMIT_MAX)
    for kind in ("iops", "bps"):
        both = [o for o in (kind + "_read", kind + "_write") if getattr(disk, o) is not None]
        if getattr(disk, kind) is not None and both:
            raise SpecError(
                "%s.%s" % (field, both[0]), "cannot be combined with %s (the total); give one or the other" % kind
            )


def validate_disks(disks: Sequence[DiskSpec], machine_type: str, iothreads: Sequence[str] = ()) -> None:
    seen_paths, seen_boot, sata = set(), set(), 0
    for index, disk in enumerate(disks):
        field = "disks[%d]" % index
        _validate_path(field + ".path", disk.path)
        if disk.path in seen_paths:
            raise SpecError(field + ".path", "%s is listed twice" % disk.path)
        seen_paths.add(disk.path)
        check_choice(field + ".format", disk.format, FORMATS)
        check_choice(field + ".bus", disk.bus, BUSES)
        check_choice(field + ".cache", disk.cache, CACHE_MODES)
        check_choice(field + ".aio", disk.aio, AIO_MODES)
        check_choice(field + ".media", disk.media, MEDIA)
        if disk.aio == "native" and not _CACHE[disk.cache][0]:
            raise SpecError(field + ".aio", "native needs O_DIRECT: use cache none or directsync")
        if disk.serial is not None and not _SERIAL_RE.fullmatch(disk.serial):
            raise SpecError(field + ".serial", "%r must be 1 to 20 letters, digits, '.', '_' or '-'" % (disk.serial,))
        _validate_iothread(field + ".iothread", disk, iothreads)
        _validate_limits(field, disk)
        if disk.clone_from is not None or disk.clone_mode is not None or disk.size is not None:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.clones import validate_clone

            validate_clone(field, disk, disks)
        if disk.media == "cdrom" and disk.bus == "virtio":
            raise SpecError(field + ".media", "a cdrom needs bus scsi, sata or ide")
        if disk.readonly and disk.media == "disk" and disk.bus in ("sata", "ide"):
            raise SpecError(
                field + ".readonly",
                "QEMU cannot attach a read-only %s hard disk; use media cdrom or bus virtio/scsi" % disk.bus,
            )
        if disk.boot_order is not None:
            if isinstance(disk.boot_order, bool) or not isinstance(disk.boot_order, int) or disk.boot_order < 1:
                raise SpecError(field + ".boot_order", "must be a positive integer")
            if disk.boot_order in seen_boot:
                raise SpecError(field + ".boot_order", "%d is used by another disk" % disk.boot_order)
            seen_boot.add(disk.boot_order)
        if disk.bus in ("sata", "ide"):
            sata += 1
            if machine_type == "pc" and disk.bus == "sata":
                raise SpecError(field + ".bus", "sata needs machine_type q35 (pc has IDE only)")
    if sata > (SATA_PORTS if machine_type == "q35" else 4):
        raise SpecError(
            "disks",
            "at most %d sata/ide disks fit on machine_type %s"
            % (SATA_PORTS if machine_type == "q35" else 4, machine_type),
        )


def _validate_path(field: str, path: Any) -> None:
    if not isinstance(path, str) or not path:
        raise SpecError(field, "is required")
    validate_abs_path(field, path)


# -- QEMU objects --------------------------------------------------------------------------


def node_names(disk: DiskSpec) -> Tuple[str, str]:
    """(file node, format node)."""
    return "f-" + disk.disk_id, "n-" + disk.disk_id


def throttle_node(disk: DiskSpec) -> str:
    return "t-" + disk.disk_id


def throttle_group_id(disk: DiskSpec) -> str:
    return "tg-" + disk.disk_id


def throttle_group(disk: DiskSpec) -> Dict[str, Any]:
    """The throttle-group object of a throttled disk (its limits can change live)."""
    limits = {member: value for member, value in disk.limits().items() if value}
    return {"qom-type": "throttle-group", "id": throttle_group_id(disk), "limits": limits}


def top_node(disk: DiskSpec) -> str:
    """The node the device reads: the throttle filter of a throttled disk, else its format node."""
    return throttle_node(disk) if disk.throttled else node_names(disk)[1]


def device_id(disk: DiskSpec) -> str:
    return "disk-" + disk.disk_id


def secret_id(disk: DiskSpec) -> str:
    """The QEMU secret object holding an encrypted disk's LUKS passphrase."""
    return "sec-" + disk.disk_id


def blockdevs(
    disk: DiskSpec,
    encrypted: bool = False,
    active_path: Optional[str] = None,
    opened_as: Optional[str] = None,
    backing_opened_as: Sequence[str] = (),
) -> List[Dict[str, Any]]:
    """The -blockdev / blockdev-add objects of a disk, file node first. An encrypted
    volume opens with the key in secret object ``secret_id(disk)``: LUKS inside qcow2, or
    a raw LUKS file. ``opened_as``: the name QEMU opens instead of the path (a descriptor
    set, /dev/fdset/N, of the image opened without following links).

    A disk with external snapshots runs on its top overlay (``active_path``). Its images
    below, base first, are given as ``backing_opened_as`` (descriptor sets): each becomes
    a read-only node and the one above names it as its backing, so QEMU opens no image of
    the chain by the name in an overlay's header. Without them the header is followed."""
    direct, no_flush, _wc = _CACHE[disk.cache]
    file_node, fmt_node = node_names(disk)
    readonly = disk.readonly or disk.media == "cdrom"
    discard = "unmap" if disk.discard else "ignore"
    cache = {"direct": direct, "no-flush": no_flush}
    layered = active_path is not None and active_path != disk.path
    nodes = _backing_nodes(disk, backing_opened_as if layered else (), cache)
    fmt: Dict[str, Any] = {
        "driver": "qcow2" if layered else disk.format,
        "file": file_node,
        "node-name": fmt_node,
        "cache": cache,
        "discard": discard,
        "read-only": readonly,
    }
    if nodes:
        fmt["backing"] = nodes[-1]["node-name"]
    if encrypted and disk.format == "qcow2":
        fmt["encrypt"] = {"format": "luks", "key-secret": secret_id(disk)}
    elif encrypted:
        fmt.update({"driver": "luks", "key-secret": secret_id(disk)})
    nodes += [
        {
            "driver": "file",
            "filename": opened_as or active_path or disk.path,
            "node-name": file_node,
            "aio": disk.aio,
            "cache": cache,
            "discard": discard,
            "read-only": readonly,
        },
        fmt,
    ]
    if disk.throttled:  # a filter above the format node, in the disk's throttle group
        nodes.append(
            {
                "driver": "throttle",
                "node-name": throttle_node(disk),
                "file": fmt_node,
                "throttle-group": throttle_group_id(disk),
                "read-only": readonly,
            }
        )
    return nodes


def _backing_nodes(disk: DiskSpec, opened_as: Sequence[str], cache: Dict[str, bool]) -> List[Dict[str, Any]]:
    """Read-only file and format nodes of the images below a disk's top overlay, base first:
    each format node names the one below it as its backing (the last one is the top's)."""
    nodes: List[Dict[str, Any]] = []
    below: Optional[str] = None
    for depth, name in enumerate(opened_as):
        lower_file, lower_fmt = "f%d-%s" % (depth, disk.disk_id), "n%d-%s" % (depth, disk.disk_id)
        nodes.append(
            {
                "driver": "file",
                "filename": name,
                "node-name": lower_file,
                "aio": disk.aio,
                "cache": cache,
                "read-only": True,
            }
        )
        lower = {
            "driver": disk.format if depth == 0 else "qcow2",
            "file": lower_file,
            "node-name": lower_fmt,
            "cache": cache,
            "read-only": True,
        }
        if below is not None:
            lower["backing"] = below
        nodes.append(lower)
        below = lower_fmt
    return nodes


def overlay_nodes(disk: DiskSpec, seq: int) -> Tuple[str, str]:
    """(file node, format node) of the overlay a live external snapshot ``seq`` adds."""
    return "fx%d-%s" % (seq, disk.disk_id), "x%d-%s" % (seq, disk.disk_id)


def overlay_blockdevs(disk: DiskSpec, seq: int, opened_as: str) -> List[Dict[str, Any]]:
    """The blockdev-add objects of a live snapshot's new overlay, file node first, with the
    disk's cache settings. It has no backing yet (blockdev-snapshot attaches the image it
    goes on), so QEMU opens no image by the name in its header."""
    direct, no_flush, _wc = _CACHE[disk.cache]
    cache = {"direct": direct, "no-flush": no_flush}
    discard = "unmap" if disk.discard else "ignore"
    file_node, fmt_node = overlay_nodes(disk, seq)
    return [
        {
            "driver": "file",
            "filename": opened_as,
            "node-name": file_node,
            "aio": disk.aio,
            "cache": cache,
            "discard": discard,
        },
        {
            "driver": "qcow2",
            "file": file_node,
            "node-name": fmt_node,
            "cache": cache,
            "discard": discard,
            "backing": None,
        },
    ]


def iothread_id(disk: DiskSpec) -> str:
    """The disk's I/O thread: its own (iothread: true) or a shared, named one."""
    if isinstance(disk.iothread, str):
        return named_iothread_id(disk.iothread)
    return "io-" + disk.disk_id


def named_iothread_id(name: str) -> str:
    return "iot-" + name


def iothread_object(disk: DiskSpec) -> Dict[str, Any]:
    return {"qom-type": "iothread", "id": iothread_id(disk)}


def own_iothread(disk: DiskSpec) -> bool:
    """Whether the disk has an I/O thread of its own (made and removed with it)."""
    return disk.iothread is True


def device(disk: DiskSpec, bus: Optional[str], ide_slot: Optional[Tuple[str, Optional[int]]] = None) -> Dict[str, Any]:
    """The -device / device_add object. ``bus``: the root port (q35 PCI disks) or None
    (pc: QEMU picks a slot on pci.0); ``ide_slot``: (bus, unit) for sata/ide."""
    _direct, _nf, write_cache = _CACHE[disk.cache]
    dev: Dict[str, Any] = {"id": device_id(disk), "drive": top_node(disk)}
    if disk.bus == "virtio":
        dev["driver"] = "virtio-blk-pci"
        if bus:
            dev["bus"] = bus
        if disk.iothread:
            dev["iothread"] = iothread_id(disk)
    elif disk.bus == "scsi":
        dev["driver"] = "scsi-cd" if disk.media == "cdrom" else "scsi-hd"
        dev["bus"] = SCSI_CONTROLLER + ".0"
    else:
        dev["driver"] = "ide-cd" if disk.media == "cdrom" else "ide-hd"
        dev["bus"], unit = ide_slot
        if unit is not None:
            dev["unit"] = unit
    if disk.media == "disk":
        dev["write-cache"] = "on" if write_cache else "off"
    if disk.serial:
        dev["serial"] = disk.serial
    if disk.boot_order is not None:
        dev["bootindex"] = disk.boot_order
    return dev


SCSI_CONTROLLER = "scsi0"


def ide_slots(machine_type: str) -> List[Tuple[str, Optional[int]]]:
    if machine_type == "q35":
        return [("ide.%d" % n, None) for n in range(SATA_PORTS)]
    return [("ide.0", 0), ("ide.0", 1), ("ide.1", 0), ("ide.1", 1)]


@dataclasses.dataclass(frozen=True)
class DiskLayout:
    """Where everything goes at start: root ports, controllers, devices."""

    root_ports: List[Dict[str, Any]]
    controllers: List[Dict[str, Any]]
    objects: List[Dict[str, Any]]
    blockdevs: List[Dict[str, Any]]
    devices: List[Dict[str, Any]]
    nic_ports: List[Optional[str]] = dataclasses.field(default_factory=list)


def root_port(index: int) -> Dict[str, Any]:
    return {"driver": "pcie-root-port", "id": "rp%d" % index, "bus": "pcie.0", "chassis": index, "port": index}


def layout(
    disks: Sequence[DiskSpec],
    machine_type: str,
    secret_files: Optional[Mapping[str, str]] = None,
    active_paths: Optional[Mapping[str, str]] = None,
    pcie_nics: int = 0,
    opened_as: Optional[Mapping[str, str]] = None,
    backing_opened_as: Optional[Mapping[str, Sequence[str]]] = None,
    iothreads: Sequence[str] = (),
) -> DiskLayout:
    """``secret_files``: disk_id -> 0600 file with the LUKS passphrase of an encrypted
    volume (QEMU reads it once at start; the key never enters argv). ``pcie_nics``: how
    many NICs (after the disks) get a root port of their own, in ``nic_ports``."""
    q35 = machine_type == "q35"
    ports: List[Dict[str, Any]] = []

    def next_port() -> Optional[str]:
        if not q35:
            return None
        ports.append(root_port(len(ports) + 1))
        return ports[-1]["id"]

    controllers, objects, nodes, devices = [], [], [], []
    if any(d.bus == "scsi" for d in disks):
        ctrl: Dict[str, Any] = {"driver": "virtio-scsi-pci", "id": SCSI_CONTROLLER}
        port = next_port()
        if port:
            ctrl["bus"] = port
        controllers.append(ctrl)
    slots = iter(ide_slots(machine_type))
    secret_files = secret_files or {}
    for name in iothreads:  # shared threads, whether or not a disk uses one yet
        objects.append({"qom-type": "iothread", "id": named_iothread_id(name)})
    for disk in disks:
        objects.extend(_disk_objects(disk, secret_files.get(disk.disk_id)))
        nodes.extend(
            blockdevs(
                disk,
                encrypted=disk.disk_id in secret_files,
                active_path=(active_paths or {}).get(disk.disk_id),
                opened_as=(opened_as or {}).get(disk.disk_id),
                backing_opened_as=(backing_opened_as or {}).get(disk.disk_id, ()),
            )
        )
        if disk.bus == "virtio":
            devices.append(device(disk, next_port()))
        elif disk.bus == "scsi":
            devices.append(device(disk, None))
        else:
            devices.append(device(disk, None, next(slots)))
    nic_ports = [next_port() for _nic in range(pcie_nics)]
    if q35:
        for _spare in range(SPARE_ROOT_PORTS):
            next_port()
    return DiskLayout(ports, controllers, objects, nodes, devices, nic_ports)


def _disk_objects(disk: DiskSpec, secret_file: Optional[str]) -> List[Dict[str, Any]]:
    """The -object entries a disk needs: its throttle group, LUKS key secret, own I/O thread."""
    objects: List[Dict[str, Any]] = []
    if disk.throttled:
        objects.append(throttle_group(disk))
    if secret_file is not None:
        objects.append({"qom-type": "secret", "id": secret_id(disk), "format": "raw", "file": secret_file})
    if own_iothread(disk):
        objects.append(iothread_object(disk))
    return objects


@dataclasses.dataclass(frozen=True)
class HotplugPlan:
    add: Tuple[DiskSpec, ...]
    remove: Tuple[DiskSpec, ...]
    live: bool  # False: some change needs a restart, so nothing is done live
    throttle: Tuple[DiskSpec, ...] = ()  # disks whose limits change live (desired specs)


def plan_hotplug(running: Sequence[DiskSpec], desired: Sequence[DiskSpec], layered: Sequence[str] = ()) -> HotplugPlan:
    """Disks added or removed, and limits changed, while running, if all of it can be done
    live: a disk whose other settings changed, one that gets its first limit (it has no
    throttle group yet), or one on sata/ide, needs a restart; so does the first SCSI disk (the
    controller exists only if the VM started with one), and removing a disk that has
    external snapshots (``layered``: their base paths)."""
    before = {d.path: d for d in running}
    after = {d.path: d for d in desired}
    add = tuple(d for d in desired if d.path not in before)
    remove = tuple(d for d in running if d.path not in after)
    kept = [p for p in before if p in after]
    # Limits change live on a disk that runs with a throttle group (it started with one).
    changed = any(before[p].without_limits() != after[p].without_limits() for p in kept)
    throttle = tuple(after[p] for p in kept if before[p] != after[p])
    changed = changed or any(not before[d.path].throttled for d in throttle)
    has_scsi = any(d.bus == "scsi" for d in running)
    live = (
        not changed
        and all(d.hotpluggable for d in add + remove)
        and all(has_scsi for d in add if d.bus == "scsi")
        and not any(d.path in layered for d in remove)
    )  # an overlay chain is unplugged by a restart
    return HotplugPlan(add, remove, live, throttle)
