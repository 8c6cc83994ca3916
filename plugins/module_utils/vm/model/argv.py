# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The QEMU command line: a pure function of the spec and the launch context.

Every value that lands inside a QEMU ``key=value,...`` option string goes through
``opt_value``; values QEMU takes whole (``-kernel``, ``-append``, ``-pidfile``) are passed as
their own argv element, so no user string can add an option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import CONTROL_RE
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.devices import platform_args
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import ide_slots, layout, root_port
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import PciPassthrough, vfio_devices
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import device as nic_device
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import netdev as nic_netdev
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import pcie_slot, use_vhost
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.presets import hyperv_flags
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VNC_BASE_PORT, VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import (
    RAM_BACKEND_ID,
    balloon_device,
    dimm_device,
    dimm_ids,
    memory_backend,
    memory_option,
    needs_ram_backend,
    numa_args,
    smp_option,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import controller as usb_controller
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import device as usb_device

# video_model -> the -device driver of the display's card
VIDEO_DEVICES = {
    "vga": "VGA",
    "virtio": "virtio-vga",
    "cirrus": "cirrus-vga",
    "bochs": "bochs-display",
    "qxl": "qxl-vga",
    "ramfb": "ramfb",
}


@dataclasses.dataclass(frozen=True)
class LaunchContext:
    """Everything besides the spec that the command line depends on."""

    binary: str
    uuid: str
    accel: str  # resolved: kvm or tcg
    cpu: str  # resolved model plus flags, e.g. "max" or "host,-arch-capabilities"
    pidfile: str
    qmp_socket: str
    serial_log: str
    console_socket: Optional[str] = None  # ttyS1 on a UNIX socket, when the spec asks for it
    guest_agent_socket: Optional[str] = None  # the guest agent's channel, when the spec asks for it
    events_socket: Optional[str] = None  # a second QMP monitor, the host monitor's own
    event_log: Optional[str] = None  # a third, on files <event_log>.in/.out: QEMU's own record
    firmware_code: Optional[str] = None  # UEFI: OVMF code image and this VM's NVRAM
    nvram: Optional[str] = None
    disk_secret_files: Optional[Dict[str, str]] = None  # disk_id -> LUKS passphrase file
    disk_active_paths: Optional[Dict[str, str]] = None  # disk_id -> top external-snapshot overlay
    # disk_id -> descriptors of its (top) image, opened without following links; QEMU gets
    # them as a descriptor set (-add-fd) and opens /dev/fdset/N, never the name.
    disk_fds: Optional[Dict[str, Tuple[int, ...]]] = None
    # disk_id -> descriptors of each image below the top overlay, base first (the same way)
    disk_backing_fds: Optional[Dict[str, Tuple[Tuple[int, ...], ...]]] = None
    vhost_available: bool = False  # /dev/vhost-net exists on this host
    # Host PCI devices (infinivirt_gpu), checked against sysfs by the start.
    host_devices: Tuple[PciPassthrough, ...] = ()
    hugepage_path: Optional[str] = None  # the hugetlbfs mount of the spec's page size
    cloud_init_iso: Optional[str] = None  # the VM's NoCloud seed (vm/cloud_seed.py), read-only
    unattend_iso: Optional[str] = None  # Windows Setup's answer file ISO (vm/unattend_media.py), read-only
    machine: Optional[str] = None  # the recorded versioned machine type (vm/model/machine.py); None: the spec's
    incoming: bool = False  # a migration target: QEMU waits for migrate-incoming (vm/engine/incoming.py)
    tpm_socket: Optional[str] = None  # the VM's swtpm control socket (vm/engine/swtpm.py), when tpm is set
    vsock_cid: Optional[int] = None  # the guest CID this start holds (vm/engine/vsock.py), when vsock is set
    display_port: Optional[int] = None  # VNC or SPICE: the port the start claimed (vm/engine/display_port.py)
    virtiofs_sockets: Tuple[str, ...] = ()  # each shared_dirs entry's virtiofsd socket, in order


def pflash_blockdevs(code: str, nvram: str) -> List[Dict[str, Any]]:
    """Nodes for -machine pflash0=fw-code,pflash1=fw-vars (JSON: paths need no escaping)."""
    return [
        {"driver": "file", "filename": code, "node-name": "fw-code-file", "read-only": True},
        {"driver": "raw", "file": "fw-code-file", "node-name": "fw-code", "read-only": True},
        {"driver": "file", "filename": nvram, "node-name": "fw-vars-file"},
        {"driver": "raw", "file": "fw-vars-file", "node-name": "fw-vars"},
    ]


def opt_value(field: str, value: str) -> str:
    """Escape a value for QEMU's QemuOpts syntax (a comma is written as two commas)."""
    if CONTROL_RE.search(value):
        raise SpecError(field, "must not contain control characters")
    return value.replace(",", ",,")


def vnc_option(spec: VmSpec, port: Optional[int] = None) -> str:
    """-vnc takes a display number (port - 5900): the port the start claimed
    (vm/engine/display_port.py), else graphics.port; with neither, QEMU takes the first free
    one from 5900 to 5999. The password itself goes over QMP, never in argv."""
    host = spec.graphics_listen
    if ipaddress.ip_address(host).version == 6:
        host = "[%s]" % host
    port = port if port is not None else spec.graphics_port
    if port is None:
        value = "%s:0,to=99" % host
    else:
        value = "%s:%d" % (host, port - VNC_BASE_PORT)
    return value + (",password=on" if spec.graphics_password_set else "")


def machine_option(spec: VmSpec, machine: Optional[str] = None) -> str:
    value = "type=%s" % opt_value("machine_type", machine or spec.machine_type)  # machine: read from the store
    if spec.firmware == "uefi":
        value += ",pflash0=fw-code,pflash1=fw-vars"
    if spec.secure_boot:
        value += ",smm=on"
    if needs_ram_backend(spec):
        value += ",memory-backend=%s" % RAM_BACKEND_ID
    if not spec.hpet:
        value += ",hpet=off"
    return value


def memory_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """Memory backends (boot RAM, each NUMA node's, each DIMM's), the NUMA nodes, the DIMMs
    and the balloon."""
    if spec.hugepages is not None and not ctx.hugepage_path:
        raise SpecError("hugepages", "no hugetlbfs mount for %s pages was found" % spec.hugepages)
    path = ctx.hugepage_path  # a JSON value: no escaping, but no control characters either
    if path is not None and CONTROL_RE.search(path):
        raise SpecError("hugepages", "the hugetlbfs mount path holds control characters")
    argv: List[str] = []
    if needs_ram_backend(spec):
        argv += ["-object", as_json(memory_backend(spec, RAM_BACKEND_ID, spec.memory_mb, path))]
    for index, node in enumerate(spec.numa):
        backend = memory_backend(spec, "mem-node%d" % index, node["memory_mb"], path, node)
        argv += ["-object", as_json(backend)]
    argv += numa_args(spec)
    for index, size in enumerate(spec.memory_hotplug):
        argv += ["-object", as_json(memory_backend(spec, dimm_ids(index)[0], size, path))]
        argv += ["-device", as_json(dimm_device(index))]
    if spec.memory_balloon:
        argv += ["-device", as_json(balloon_device())]
    return argv


def cpu_option(spec: VmSpec, ctx: LaunchContext) -> str:
    """The resolved CPU plus the Hyper-V enlightenments (those the accelerator can give;
    vm.engine.engine.Engine.plan_launch warns about the ones left out). They are not user
    cpu_flags: QEMU takes them as key=value properties."""
    if not spec.hyperv:
        return ctx.cpu
    return ",".join([ctx.cpu] + hyperv_flags(ctx.accel)[0])


def as_json(obj: Dict[str, Any]) -> str:
    """-device/-blockdev/-object accept JSON: values need no escaping."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def device_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """Disks and NICs; on q35 each PCI disk and virtio NIC has a root port of its own."""
    pcie_nics = [nic for nic in spec.nics if pcie_slot(nic, spec.machine_type)]
    # One descriptor set per image: the top one of each disk, then those below it.
    fd_sets: List[Tuple[str, Tuple[int, ...]]] = sorted((ctx.disk_fds or {}).items())
    for disk_id, chain in sorted((ctx.disk_backing_fds or {}).items()):
        fd_sets += [("%s.%d" % (disk_id, depth), fds) for depth, fds in enumerate(chain)]
    set_of = {opaque: index for index, (opaque, _fds) in enumerate(fd_sets, 1)}
    plan = layout(
        spec.disks,
        spec.machine_type,
        ctx.disk_secret_files,
        ctx.disk_active_paths,
        pcie_nics=len(pcie_nics),
        opened_as={disk_id: "/dev/fdset/%d" % set_of[disk_id] for disk_id in ctx.disk_fds or {}},
        backing_opened_as={
            disk_id: ["/dev/fdset/%d" % set_of["%s.%d" % (disk_id, depth)] for depth in range(len(chain))]
            for disk_id, chain in (ctx.disk_backing_fds or {}).items()
        },
        iothreads=spec.iothreads,
    )
    argv: List[str] = []
    for opaque, fds in fd_sets:
        for fd in fds:
            argv += ["-add-fd", "fd=%d,set=%d,opaque=%s" % (fd, set_of[opaque], opt_value("disks", opaque))]
    for obj in plan.objects:
        argv += ["-object", as_json(obj)]
    for dev in plan.root_ports + plan.controllers:
        argv += ["-device", as_json(dev)]
    for node in plan.blockdevs:
        argv += ["-blockdev", as_json(node)]
    for dev in plan.devices:
        argv += ["-device", as_json(dev)]
    ports = dict(zip([nic.mac for nic in pcie_nics], plan.nic_ports))
    for nic in spec.nics:
        argv += [
            "-netdev",
            as_json(nic_netdev(nic, spec.vcpus, use_vhost(nic, ctx.vhost_available))),
            "-device",
            as_json(nic_device(nic, spec.vcpus, ports.get(nic.mac))),
        ]
    # Host PCI devices after everything else (the slots of the devices above stay where they
    # were), each on a root port of its own with its functions on one slot.
    for index, dev in enumerate(ctx.host_devices, len(plan.root_ports) + 1):
        port = root_port(index)
        argv += ["-device", as_json(port)]
        for obj in vfio_devices(dev, port["id"]):
            argv += ["-device", as_json(obj)]
    if spec.usb is not None:  # the controller even when no device is listed yet
        argv += ["-device", as_json(usb_controller())]
        for dev in spec.usb:
            argv += ["-device", as_json(usb_device(dev))]
    return argv


def build_argv(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """Return the full argv that starts this VM paused (-S) and daemonized."""
    return (
        _process_args(spec, ctx)
        + _monitor_args(ctx)
        + _firmware_args(spec, ctx)
        + _console_args(spec, ctx)
        + memory_args(spec, ctx)
        + device_args(spec, ctx)
        + cloud_init_args(ctx)
        + unattend_args(spec, ctx)
        + guest_agent_args(spec, ctx)
        + platform_args(spec, ctx.tpm_socket, ctx.vsock_cid)
        + _display_args(spec, ctx)
        + _boot_args(spec)
        + (["-incoming", "defer"] if ctx.incoming else [])
        + ["-msg", "timestamp=on", "-S", "-pidfile", ctx.pidfile, "-daemonize"]
    )


def _process_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """The machine, CPUs, memory size, the task's QMP socket and the serial log."""
    return [
        ctx.binary,
        "-name",
        "guest=%s,debug-threads=on" % opt_value("name", spec.name),
        "-uuid",
        ctx.uuid,
        "-nodefaults",
        "-no-user-config",
        "-machine",
        machine_option(spec, ctx.machine),
        "-accel",
        ctx.accel,
        "-cpu",
        cpu_option(spec, ctx),
        "-smp",
        smp_option(spec),
        "-m",
        memory_option(spec),
        "-display",
        "none",
        "-chardev",
        "socket,id=qmp,path=%s,server=on,wait=off" % opt_value("run_dir", ctx.qmp_socket),
        "-mon",
        "chardev=qmp,mode=control",
        "-chardev",
        "file,id=serial0,path=%s" % opt_value("run_dir", ctx.serial_log),
        "-serial",
        "chardev:serial0",
        # A guest kernel panic becomes QEMU's GUEST_PANICKED event (and pauses the guest),
        # so the host monitor can apply on_crash instead of a hung VM looking alive.
        "-device",
        "pvpanic",
    ]


def _monitor_args(ctx: LaunchContext) -> List[str]:
    argv: List[str] = []
    if ctx.events_socket:  # QMP allows one client per monitor: the task's own stays free
        argv += [
            "-chardev",
            "socket,id=events,path=%s,server=on,wait=off" % opt_value("run_dir", ctx.events_socket),
            "-mon",
            "chardev=events,mode=control",
        ]
    if ctx.event_log:  # how QEMU ended, written by QEMU itself: it outlives the host monitor
        argv += [
            "-chardev",
            "pipe,id=evlog,path=%s" % opt_value("run_dir", ctx.event_log),
            "-mon",
            "chardev=evlog,mode=control",
        ]
    return argv


def _firmware_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    argv: List[str] = []
    if spec.firmware == "uefi":
        for node in pflash_blockdevs(ctx.firmware_code, ctx.nvram):
            argv += ["-blockdev", as_json(node)]
        if spec.secure_boot:  # only SMM code may write the variable store
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return argv


def _console_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    if not (spec.console_socket and ctx.console_socket):
        return []
    return [
        "-chardev",
        "socket,id=console0,path=%s,server=on,wait=off" % opt_value("run_dir", ctx.console_socket),
        "-serial",
        "chardev:console0",
    ]


# IDs of the cloud-init seed's controller, nodes and CD-ROM: apart from the disks' (scsi0),
# so the seed never moves a disk, and works on cloud kernels without AHCI.
CIDATA_ID = "cidata"


def cloud_init_args(ctx: LaunchContext) -> List[str]:
    """The seed ISO as a read-only SCSI CD-ROM on a virtio-scsi controller of its own."""
    if not ctx.cloud_init_iso:
        return []
    file_node = {
        "driver": "file",
        "filename": ctx.cloud_init_iso,
        "node-name": CIDATA_ID + "-file",
        "read-only": True,
        "auto-read-only": False,
    }
    raw_node = {"driver": "raw", "file": CIDATA_ID + "-file", "node-name": CIDATA_ID, "read-only": True}
    return [
        "-device",
        as_json({"driver": "virtio-scsi-pci", "id": CIDATA_ID + "-scsi"}),
        "-blockdev",
        as_json(file_node),
        "-blockdev",
        as_json(raw_node),
        "-device",
        as_json({"driver": "scsi-cd", "bus": CIDATA_ID + "-scsi.0", "drive": CIDATA_ID, "id": CIDATA_ID}),
    ]


# The port name the QEMU guest agent opens in the guest (its udev rule starts it on this name).
GUEST_AGENT_PORT = "org.qemu.guest_agent.0"


def guest_agent_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """A virtio-serial controller with the agent's port on a socket QEMU listens on. After
    every other PCI device, so adding the agent moves no disk or NIC to another slot."""
    if not (spec.guest_agent and ctx.guest_agent_socket):
        return []
    return [
        "-chardev",
        "socket,id=qga0,path=%s,server=on,wait=off" % opt_value("run_dir", ctx.guest_agent_socket),
        "-device",
        as_json({"driver": "virtio-serial-pci", "id": "qga-serial"}),
        "-device",
        as_json({"driver": "virtserialport", "bus": "qga-serial.0", "chardev": "qga0", "name": GUEST_AGENT_PORT}),
    ]


# IDs of the answer file's nodes and CD-ROM: apart from the disks' and the seed's.
UNATTEND_ID = "unattend"


def unattend_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    """The answer file ISO as a read-only CD-ROM on the machine's own SATA (q35: AHCI) or IDE
    (pc) controller, in its last slot (the disks fill slots from the first, so none moves).
    Windows Setup has drivers for AHCI and IDE built in, not for virtio-scsi (where the
    cloud-init seed sits), and searches the root of every CD for Autounattend.xml."""
    if not ctx.unattend_iso:
        return []
    file_node = {
        "driver": "file",
        "filename": ctx.unattend_iso,
        "node-name": UNATTEND_ID + "-file",
        "read-only": True,
        "auto-read-only": False,
    }
    raw_node = {"driver": "raw", "file": UNATTEND_ID + "-file", "node-name": UNATTEND_ID, "read-only": True}
    bus, unit = ide_slots(spec.machine_type)[-1]
    device = {"driver": "ide-cd", "bus": bus, "drive": UNATTEND_ID, "id": UNATTEND_ID}
    if unit is not None:
        device["unit"] = unit
    return ["-blockdev", as_json(file_node), "-blockdev", as_json(raw_node), "-device", as_json(device)]


def _display_args(spec: VmSpec, ctx: LaunchContext) -> List[str]:
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import display, shares

    argv: List[str] = []
    if spec.graphics_type != "none" and spec.video_model != "none":
        # -nodefaults leaves no video card: without one a client sees no screen.
        argv += ["-device", as_json({"driver": VIDEO_DEVICES[spec.video_model], "id": "video0"})]
    if spec.graphics_type == "vnc":
        argv += ["-vnc", vnc_option(spec, ctx.display_port)]
    elif spec.graphics_type == display.SPICE:
        port = ctx.display_port if ctx.display_port is not None else spec.graphics_port
        argv += ["-spice", display.spice_option(spec, port, opt_value)]
    for device in display.tablet_devices(spec):
        argv += ["-device", as_json(device)]
    for chardev, device in shares.share_devices(spec.shared_dirs, ctx.virtiofs_sockets, opt_value):
        argv += ["-chardev", chardev, "-device", as_json(device)]
    if spec.rtc_base != "utc":
        argv += ["-rtc", "base=%s" % spec.rtc_base]
    return argv


def _boot_args(spec: VmSpec) -> List[str]:
    """Direct kernel boot: each value is an argv element of its own, never escaped."""
    argv: List[str] = []
    if spec.kernel is not None:
        argv += ["-kernel", spec.kernel]
    if spec.initrd is not None:
        argv += ["-initrd", spec.initrd]
    if spec.kernel_cmdline is not None:
        argv += ["-append", spec.kernel_cmdline]
    return argv
