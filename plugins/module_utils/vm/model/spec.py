# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Desired state of a VM: a typed, validated dataclass.

Validation happens here, before anything touches the host, so bad input changes nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    CONTROL_RE,
    check_choice,
    check_int,
    validate_abs_path,
    validate_label,
    validate_name,
    validate_netns_name,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import presets
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.devices import merge_devices, validate_devices
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import (
    DiskSpec,
    validate_disks,
    validate_iothread_names,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.metadata import validate_labels, validate_tags
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec, merge_nics, validate_nics
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import (
    normalize_cpu_set,
    normalize_numa,
    normalize_pinning,
    normalize_topology,
    validate_tuning,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import UsbSpec, usb_from_params, validate_usb

MEMORY_MIN_MB = 16
KERNEL_CMDLINE_MAX = 2048  # x86 COMMAND_LINE_SIZE

MACHINE_TYPES = ("q35", "pc")
GRAPHICS_TYPES = ("none", "vnc", "spice")
FIRMWARES = ("bios", "uefi")
VNC_BASE_PORT = 5900
# What the host monitor does when a VM's QEMU dies without a shutdown (or the guest panics),
# and when its guest powers itself off.
ON_CRASH = ("destroy", "restart", "preserve")
ON_POWEROFF = ("stop", "restart")
AUTOSTART_DELAY_MAX = 3600
VNC_PASSWORD_MAX = 8  # VNC authentication compares only the first 8 bytes
ACCELS = ("auto", "kvm", "tcg")
VIDEO_MODELS = ("vga", "virtio", "cirrus", "bochs", "qxl", "ramfb", "none")
RTC_BASES = ("utc", "localtime")
DEFAULT_STOP_TIMEOUT = 60.0
# Model names as QEMU prints them in -cpu help: letters, digits, '-', '_', '.'.
_CPU_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# '+feature', '-feature', or a property with a plain value ('hv-spinlocks=0x1fff'): no ',' or
# second '=' can reach the -cpu option string.
_CPU_FLAG_RE = re.compile(
    r"(?:[+-][a-z0-9][a-z0-9_.-]{0,63}|[a-z0-9][a-z0-9_.-]{0,63}=[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
)


@dataclasses.dataclass(frozen=True)
class VmSpec:
    """What the user asked for. Field names are the options' names (graphics.<x> becomes
    graphics_<x>) and the store's column names; results say graphics.<x> (vm/model/vocabulary.py)."""

    name: str
    vcpus: int = 1
    memory_mb: int = 512
    machine_type: str = "q35"
    cpu_model: str = "auto"  # auto: host under KVM, max under TCG
    cpu_flags: Tuple[str, ...] = ()
    accel: str = "auto"
    kernel: Optional[str] = None
    initrd: Optional[str] = None
    kernel_cmdline: Optional[str] = None
    # Remote display. The password is a secret kept apart from the spec (see secrets.py).
    graphics_type: str = "none"
    graphics_listen: str = "127.0.0.1"
    graphics_port: Optional[int] = None  # None: the first free port from 5900
    graphics_password_set: bool = False  # set by the service from the stored secret
    graphics_tls_dir: Optional[str] = None  # SPICE only: x509 directory; the port is then TLS
    firmware: str = "bios"  # or uefi (OVMF)
    secure_boot: bool = False
    uefi_firmware: Optional[str] = None  # OVMF code image; None: Debian's default
    disks: Tuple[DiskSpec, ...] = ()
    console_socket: bool = False  # a second serial port (ttyS1) on a UNIX socket
    nics: Tuple[NicSpec, ...] = ()
    netns: Optional[str] = None  # network namespace of QEMU and its TAPs; None: the host's
    department: Optional[str] = None  # firewall department (infinivirt_firewall)
    # Host monitor policies (monitor/); a running VM follows them without a restart.
    on_crash: str = "destroy"
    on_poweroff: str = "stop"
    autostart: bool = False  # started by the monitor once per host boot
    autostart_order: int = 0  # lower first; equal orders by name
    autostart_delay: int = 0  # seconds to wait after starting this VM before the next
    # Host USB devices on an xHCI controller; None: no controller (an empty list has one).
    usb: Optional[Tuple[UsbSpec, ...]] = None
    # Memory and CPU tuning (vm/model/tuning.py): the balloon, memory backing and hot-plug.
    memory_balloon: bool = False  # virtio-balloon-pci, free page reporting, guest statistics
    memory_target_mb: Optional[int] = None  # balloon target; None: all of the memory
    hugepages: Optional[str] = None  # 2M or 1G: guest RAM on hugetlbfs, preallocated
    memory_shared: bool = False  # guest RAM shared (memfd, or share=on on hugetlbfs)
    memory_max_mb: Optional[int] = None  # hot-plug ceiling (-m maxmem); None: no hot-plug
    memory_slots: Optional[int] = None  # DIMM slots (default 8 with memory_max_mb)
    memory_hotplug: Tuple[int, ...] = ()  # sizes (MiB) of DIMMs beyond memory_mb
    vcpus_max: Optional[int] = None  # hot-plug ceiling (-smp maxcpus)
    cpu_topology: Dict[str, int] = dataclasses.field(default_factory=dict)  # sockets/dies/cores/threads
    numa: Tuple[Dict[str, Any], ...] = ()  # guest NUMA nodes (tuning.normalize_numa's form)
    cpu_pinning: Dict[str, str] = dataclasses.field(default_factory=dict)  # vCPU index -> host CPUs
    emulator_cpus: Optional[str] = None  # host CPUs of QEMU's other threads
    iothread_cpus: Optional[str] = None  # host CPUs of the disks' I/O threads
    cpu_pinning_exclusive: bool = False  # no other VM on the host may pin to these host CPUs
    # I/O threads shared by disks (disks[].iothread names one; true: a thread of its own).
    iothreads: Tuple[str, ...] = ()
    # A preset (vm/model/presets.py) fills what the task leaves unset; these four are its VM-level
    # options, always stored with their effective value.
    preset: Optional[str] = None
    video_model: str = "vga"  # the card a VNC display shows
    rtc_base: str = "utc"
    hpet: bool = True
    hyperv: bool = False  # the Hyper-V enlightenments (presets.HYPERV_FLAGS) as CPU flags
    # cloud-init's NoCloud seed (the cloud_init option): only the sha256 of its files is in the
    # spec (a change is seen, and is a pending restart); the content is sealed in the store's
    # cloud_init column (vm/cloud_seed.py). None: no seed.
    cloud_init_digest: Optional[str] = None
    # Windows Setup's answer file ISO (the unattend option): only a keyed digest of its files is
    # in the spec; the files are sealed in the store's unattend column (vm/unattend_media.py).
    unattend_digest: Optional[str] = None
    # A virtio-serial port org.qemu.guest_agent.0 on a socket in run_dir (vm/guest.py asks it).
    guest_agent: bool = False
    # A USB tablet (the pointer follows the client's); None: on when a display is on.
    usb_tablet: Optional[bool] = None
    # Host directories shared over virtiofs (vm/model/shares.py), each {source, tag, readonly}.
    shared_dirs: Tuple[Dict[str, Any], ...] = ()
    # Metadata (vm/model/metadata.py): what inventories group the VM by; never a restart.
    tags: Tuple[str, ...] = ()
    labels: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Platform devices (vm/model/devices.py), each a dict in normal form or None (off):
    # {version}, {max_bytes, period_ms}, {model, action}, {type1, type3}, {cid}.
    tpm: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None
    watchdog: Optional[Dict[str, Any]] = None
    smbios: Optional[Dict[str, Any]] = None
    vsock: Optional[Dict[str, Any]] = None
    # Bookkeeping, not an option: which options the task left unset (filled from the preset
    # or the built-in default), so the next task resolves them again (presets.fill).
    defaulted: Tuple[str, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        # Plain lists and dicts of its own, not dataclasses.asdict: asdict's deep copy of
        # every value was most of a bulk no-op's cost per VM.
        return {name: _plain(getattr(self, name)) for name in SPEC_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VmSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["cpu_flags"] = tuple(values.get("cpu_flags") or ())
        values["iothreads"] = tuple(values.get("iothreads") or ())
        values["defaulted"] = tuple(values.get("defaulted") or ())
        values["tags"] = tuple(values.get("tags") or ())
        values["labels"] = dict(values.get("labels") or {})
        for field in presets.VM_DEFAULTS:  # unset (not yet resolved): the built-in default
            if values.get(field, 0) is None:
                del values[field]
        values["disks"] = tuple(
            d if isinstance(d, DiskSpec) else DiskSpec.from_dict(d) for d in values.get("disks") or ()
        )
        values["nics"] = tuple(n if isinstance(n, NicSpec) else NicSpec.from_dict(n) for n in values.get("nics") or ())
        values["usb"] = usb_from_params(values.get("usb"))
        values["memory_hotplug"] = tuple(values.get("memory_hotplug") or ())
        values["numa"] = tuple(dict(node) for node in values.get("numa") or ())
        values["shared_dirs"] = tuple(dict(share) for share in values.get("shared_dirs") or ())
        values["cpu_topology"] = dict(values.get("cpu_topology") or {})
        values["cpu_pinning"] = dict(values.get("cpu_pinning") or {})
        for f in dataclasses.fields(cls):  # databases hand booleans back as 0/1
            if isinstance(f.default, bool) and f.name in values:
                values[f.name] = bool(values[f.name])
        if values.get("usb_tablet") is not None:
            values["usb_tablet"] = bool(values["usb_tablet"])
        return cls(**values)


# Fields a running VM follows without a restart (the firewall applies a department live;
# the monitor reads its policies from the row).
# The balloon target and the CPU pins are applied over QMP and with sched_setaffinity.
# A preset's name is live too: what it fills in is in the other fields.
LIVE_FIELDS = (
    "department",
    "on_crash",
    "on_poweroff",
    "autostart",
    "autostart_order",
    "autostart_delay",
    "memory_target_mb",
    "cpu_pinning",
    "emulator_cpus",
    "iothread_cpus",
    "cpu_pinning_exclusive",
    "preset",
    "tags",
    "labels",
)

# Bookkeeping fields: stored, never a change of their own (see VmSpec.defaulted).
BOOKKEEPING_FIELDS = ("defaulted",)


def _plain(value: Any) -> Any:
    """A spec value as stored: tuples become lists, dicts are copied, a disk, NIC or USB
    device becomes its own to_dict."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if to_dict is not None else value


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(VmSpec))


def validate(spec: VmSpec) -> VmSpec:
    """Check every field on its own; raise SpecError naming the first bad one. What needs the
    host (files, namespaces, CPU count, storage roots) is vm.engine.preflight's."""
    validate_name(spec.name)
    check_int("vcpus", spec.vcpus, 1)
    check_int("memory_mb", spec.memory_mb, MEMORY_MIN_MB)
    check_choice("machine_type", spec.machine_type, MACHINE_TYPES)
    check_choice("accel", spec.accel, ACCELS)
    _validate_cpu(spec)
    _validate_boot(spec)
    _validate_graphics(spec)
    validate_iothread_names(spec.iothreads)
    validate_disks(spec.disks, spec.machine_type, spec.iothreads)
    validate_nics(spec.nics)
    validate_usb(spec.usb)
    validate_netns_name("netns", spec.netns)
    if spec.department is not None:
        validate_label("department", spec.department)
    check_choice("on_crash", spec.on_crash, ON_CRASH)
    check_choice("on_poweroff", spec.on_poweroff, ON_POWEROFF)
    check_int("autostart_order", spec.autostart_order, -1000000, 1000000)
    check_int("autostart_delay", spec.autostart_delay, 0, AUTOSTART_DELAY_MAX)
    validate_tuning(spec, MEMORY_MIN_MB)
    if spec.preset is not None:
        check_choice("preset", spec.preset, presets.PRESETS)
    check_choice("video_model", spec.video_model, VIDEO_MODELS)
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import display, shares

    display.validate_display(spec)
    shares.validate_shares(spec.shared_dirs, spec.memory_shared)
    check_choice("rtc_base", spec.rtc_base, RTC_BASES)
    validate_tags(spec.tags)
    validate_labels(spec.labels)
    validate_devices(spec)
    for field in ("hpet", "hyperv", "guest_agent"):
        if not isinstance(getattr(spec, field), bool):
            raise SpecError(field, "must be true or false")
    if spec.unattend_digest is not None:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import unattend

        unattend.check_cdrom_slot(spec.machine_type, sum(d.bus in ("sata", "ide") for d in spec.disks))
    return spec


def _validate_cpu(spec: VmSpec) -> None:
    if not isinstance(spec.cpu_model, str) or not _CPU_MODEL_RE.fullmatch(spec.cpu_model):
        raise SpecError(
            "cpu_model",
            "%r is not a CPU model name (letters, digits, '.', '_', '-'); put feature flags "
            "in cpu_flags" % (spec.cpu_model,),
        )
    for flag in spec.cpu_flags:
        if not isinstance(flag, str) or not _CPU_FLAG_RE.fullmatch(flag):
            raise SpecError(
                "cpu_flags",
                "%r must look like '+feature', '-feature' or 'property=value' (value: letters, "
                "digits, '.', '_', '-')" % (flag,),
            )


def _validate_boot(spec: VmSpec) -> None:
    """Direct kernel boot and firmware."""
    if spec.kernel is not None:
        validate_abs_path("kernel", spec.kernel)
    if spec.initrd is not None:
        validate_abs_path("initrd", spec.initrd)
        if spec.kernel is None:
            raise SpecError("initrd", "needs kernel to be set as well")
    if spec.kernel_cmdline is not None:
        if spec.kernel is None:
            raise SpecError("kernel_cmdline", "needs kernel to be set as well")
        if CONTROL_RE.search(spec.kernel_cmdline):
            raise SpecError("kernel_cmdline", "must not contain control characters (newlines)")
        if len(spec.kernel_cmdline) > KERNEL_CMDLINE_MAX:
            raise SpecError("kernel_cmdline", "must be at most %d characters" % KERNEL_CMDLINE_MAX)
    check_choice("firmware", spec.firmware, FIRMWARES)
    if spec.secure_boot and (spec.firmware != "uefi" or spec.machine_type != "q35"):
        raise SpecError("secure_boot", "needs firmware uefi and machine_type q35")
    if spec.uefi_firmware is not None:
        if spec.firmware != "uefi":
            raise SpecError("uefi_firmware", "needs firmware uefi")
        validate_abs_path("uefi_firmware", spec.uefi_firmware)


def _validate_graphics(spec: VmSpec) -> None:
    check_choice("graphics.type", spec.graphics_type, GRAPHICS_TYPES)
    try:
        ipaddress.ip_address(spec.graphics_listen)
    except ValueError:
        raise SpecError("graphics.listen", "%r is not an IP address" % (spec.graphics_listen,)) from None
    if spec.graphics_port is not None:
        check_int("graphics.port", spec.graphics_port, VNC_BASE_PORT, 65535)


def validate_graphics_password(spec: VmSpec, password: Optional[str], stored: bool) -> None:
    """A VNC password must mean what it says; off loopback, one is required."""
    if password is not None:
        if spec.graphics_type == "none":
            raise SpecError("graphics.password", "needs graphics.type vnc or spice")
        if not password:
            raise SpecError("graphics.password", "must not be empty (an empty password lets anyone in)")
        if spec.graphics_type == "vnc" and len(password.encode()) > VNC_PASSWORD_MAX:
            raise SpecError(
                "graphics.password",
                "VNC checks only the first %d bytes of a "
                "password; use at most %d" % (VNC_PASSWORD_MAX, VNC_PASSWORD_MAX),
            )
    has_password = password is not None or stored
    if spec.graphics_type != "none" and not has_password and not ipaddress.ip_address(spec.graphics_listen).is_loopback:
        raise SpecError(
            "graphics.password", "is required when the display listens on %s, beyond this host" % spec.graphics_listen
        )


def validate_kept_password(spec: VmSpec, kept: str, was: str) -> None:
    """A password kept from a ``was`` display (none given now) must suit the new type too:
    VNC would check only its first bytes."""
    if spec.graphics_type == "vnc" and len(kept.encode()) > VNC_PASSWORD_MAX:
        raise SpecError(
            "graphics.password",
            "the password kept from the %s display is longer than the %d bytes VNC checks; "
            "give graphics.password anew (at most %d bytes) with graphics.type vnc"
            % (was, VNC_PASSWORD_MAX, VNC_PASSWORD_MAX),
        )


# The graphics option's suboptions and the spec fields they set: graphics.<x> -> graphics_<x>
# (graphics.password is a secret, kept in the graphics_password column; see store.base).
GRAPHICS_FIELDS = {"type": "graphics_type", "listen": "graphics_listen", "port": "graphics_port"}


def merge_params(params: Mapping[str, Any], stored: Optional[VmSpec], taken_macs: Sequence[str] = ()) -> VmSpec:
    """Build the desired spec from module params.

    An option left unset (None) keeps the stored value of an existing VM, and takes the
    default for a new one, so `state: stopped` with only a name does not reset the VM.
    Options a preset governs (vm/model/presets.py) that the task leaves unset, and that were
    unset when stored, come from the preset (or the built-in default) again, so a preset
    change shows as a spec change. ``taken_macs``: MACs of other VMs, which a generated MAC
    must not repeat.
    """
    base = stored.to_dict() if stored is not None else VmSpec(name=params["name"]).to_dict()
    if stored is not None:
        presets.forget_defaulted(base, stored.defaulted)
    else:
        for field in presets.VM_DEFAULTS:
            base[field] = None
    for field in SPEC_FIELDS:
        value = params.get(field)
        if value is not None and field not in ("disks", "nics", "defaulted"):
            base[field] = value
    if params.get("disks") is not None:
        base["disks"] = [_disk_item(item) for item in params["disks"]]
    for field in ("netns", "department", "preset"):  # "" goes back to none
        if params.get(field) == "":
            base[field] = None
    if params.get("usb") is not None:
        base["usb"] = usb_from_params(params["usb"])
    _merge_tuning(params, base)
    merge_devices(params, base)
    if base.get("preset") is not None:  # before it fills anything
        check_choice("preset", base["preset"], presets.PRESETS)
    defaulted = presets.fill_vm(base, base.get("preset"))
    if params.get("nics") is not None:
        items, unset = presets.fill_nic_items(params["nics"], base.get("preset"))
        nics = merge_nics(items, stored.nics if stored else (), taken_macs, seed=params["name"])
        defaulted += [presets.nic_key(nics[index].mac, "model") for index in unset]
        base["nics"] = [n.to_dict() for n in nics]
    else:
        for nic in base.get("nics") or ():
            defaulted += presets.fill("nic", nic, base.get("preset"), _nic_key_of(nic.get("mac")))
    for option, field in GRAPHICS_FIELDS.items():
        value = (params.get("graphics") or {}).get(option)
        if value is not None:
            base[field] = value
    tls = (params.get("graphics") or {}).get("tls")
    if tls is not None:  # {} or cert_dir "" turns TLS off
        base["graphics_tls_dir"] = tls.get("cert_dir") or None
    if params.get("shared_dirs") is not None:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.shares import normalize_shares

        base["shared_dirs"] = normalize_shares(params["shared_dirs"])
    base["name"] = params["name"]
    base["defaulted"] = sorted(defaulted)
    spec = VmSpec.from_dict(base)
    return spec


# Options whose "off" value clears the stored setting: 0 for sizes and counts, "none" or "".
_CLEARED_BY = {"memory_target_mb": 0, "memory_max_mb": 0, "memory_slots": 0, "vcpus_max": 0, "hugepages": "none"}


def _merge_tuning(params: Mapping[str, Any], base: Dict[str, Any]) -> None:
    """The tuning options in their stored form (lists and dicts canonical, so an equal
    request is no change)."""
    for field, off in _CLEARED_BY.items():
        if params.get(field) is not None and params.get(field) == off:
            base[field] = None
    if params.get("hugepages") == "":
        base["hugepages"] = None
    if params.get("cpu_topology") is not None:
        base["cpu_topology"] = normalize_topology(params["cpu_topology"])
    if params.get("numa") is not None:
        base["numa"] = normalize_numa(params["numa"])
    if params.get("cpu_pinning") is not None:
        base["cpu_pinning"] = normalize_pinning(params["cpu_pinning"])
    for field in ("emulator_cpus", "iothread_cpus"):
        if params.get(field) is not None:
            base[field] = normalize_cpu_set(field, params[field])


_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def _disk_item(item: Mapping[str, Any]) -> Dict[str, Any]:
    """A disk's params without unset options; iothread 'yes'/'no' as a boolean (type raw:
    a name or a boolean)."""
    disk = {k: v for k, v in dict(item).items() if v is not None}
    iothread = disk.get("iothread")
    if isinstance(iothread, str) and iothread.lower() in _TRUE + _FALSE:
        disk["iothread"] = iothread.lower() in _TRUE
    return disk


def _nic_key_of(mac: Optional[str]):
    def key(option: str) -> str:
        return presets.nic_key(mac or "", option)

    return key


def to_diffable(spec: Optional[VmSpec]) -> Dict[str, Any]:
    return spec.to_dict() if spec is not None else {}


def diff_view(spec: VmSpec) -> Dict[str, Any]:
    """The spec as the diff shows it: effective values, plus ``preset_filled`` (option ->
    value, what the preset filled in) instead of the bookkeeping."""
    view = spec.to_dict()
    del view["defaulted"]
    filled = presets.preset_filled(spec.preset, spec.defaulted, view)
    if filled:
        view["preset_filled"] = filled
    return view


def pending_restart(running: VmSpec, spec: VmSpec) -> List[str]:
    """Fields the process (started with ``running``) has not taken and will take only when
    restarted; those it follows live (LIVE_FIELDS) are not among them."""
    return [f for f in changed_fields(running, spec) if f not in LIVE_FIELDS]


def changed_fields(before: Optional[VmSpec], after: VmSpec) -> List[str]:
    if before is None:
        return list(SPEC_FIELDS)
    # Field by field, not through to_dict: a no-op task asks this several times per VM, and
    # dataclasses.asdict of two whole specs was most of a bulk no-op's cost per VM.
    return [f for f in SPEC_FIELDS if f not in BOOKKEEPING_FIELDS and not _same(getattr(before, f), getattr(after, f))]


def _same(before: Any, after: Any) -> bool:
    """Equal as to_dict would make them: a list and a tuple of equal items are the same."""
    if isinstance(before, (list, tuple)) and isinstance(after, (list, tuple)):
        return list(before) == list(after)
    return before == after


SHUTDOWN_MODES = ("acpi", "agent")  # how a stop powers the guest off (vm/power.py stop_vm)


def shutdown_mode(params: Mapping[str, Any]) -> str:
    """A task's shutdown_mode: unset is acpi (the power button), agent is guest-shutdown
    through the guest agent, with the power button when the agent does not answer."""
    value = params.get("shutdown_mode")
    if value is None:
        return SHUTDOWN_MODES[0]
    if value not in SHUTDOWN_MODES:
        raise SpecError("shutdown_mode", "must be one of %s, got %r" % (", ".join(SHUTDOWN_MODES), value))
    return value


def stop_timeout(params: Mapping[str, Any]) -> float:
    """A task's stop_timeout in seconds: unset is the default, 0 means no wait at all
    (vm.engine.engine.Engine.stop says what that does); negative or endless is an error."""
    value = params.get("stop_timeout")
    if value is None:
        return DEFAULT_STOP_TIMEOUT
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SpecError("stop_timeout", "must be a number of seconds, got %r" % (value,)) from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise SpecError("stop_timeout", "must be 0 (no wait) or more seconds, got %r" % (value,))
    return seconds
