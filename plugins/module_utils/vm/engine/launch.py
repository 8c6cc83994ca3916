# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The first half of a start (engine.Engine.start): prepare what QEMU needs, then spawn it
paused (-S).

What only a start needs (argv, TAPs, firmware, key descriptors) is imported where it is
used: a task that only reads or stops a VM does not load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import PciPassthrough
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import STARTING

# QEMU's "pipe" chardev opens <path>.in and <path>.out: given regular files, the monitor on
# it reads this one command (then end of file) and writes every event to .out from then on.
EVENT_LOG_INPUT = b'{"execute": "qmp_capabilities"}\n'


@dataclasses.dataclass(frozen=True)
class Incoming:
    """A migration target's start (engine.Engine.start_incoming): where QEMU listens for the
    stream (``tcp:<address>:<port>``), and whether post-copy is on (at both ends)."""

    uri: str
    postcopy: bool = False


@dataclasses.dataclass(frozen=True)
class StartInputs:
    """What a start needs besides the record (vm/starting.py start_vm gathers it)."""

    paused: bool = False
    graphics_password: Optional[str] = None
    disk_keys: Dict[str, str] = dataclasses.field(default_factory=dict)  # disk_id -> LUKS passphrase
    nic_bridges: Dict[str, str] = dataclasses.field(default_factory=dict)  # MAC -> bridge of its TAP
    host_devices: Tuple[PciPassthrough, ...] = ()  # host PCI devices, checked against sysfs
    events: Tuple[Dict[str, Any], ...] = ()  # the caller's (see add_events), written with the row that says it runs
    cloud_init_iso: Optional[str] = None  # the NoCloud seed (vm/cloud_seed.py), written before the start
    unattend_iso: Optional[str] = None  # Windows Setup's answer file ISO (vm/unattend_media.py), likewise
    incoming: Optional[Incoming] = None  # a migration target: QEMU waits for the stream, no row written


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this start runs QEMU, resolved before QEMU exists."""

    paths: VmPaths
    binary: str
    accel: str
    cpu: str
    vhost: bool
    code: Optional[str]  # OVMF code image (UEFI)
    nvram: Optional[str]  # the VM's NVRAM copy (UEFI)
    warnings: List[str]
    hugepage_path: Optional[str] = None  # the hugetlbfs mount for the guest's RAM
    tpm_socket: Optional[str] = None  # the VM's swtpm (vm/engine/platform.py), when tpm is set
    vsock_cid: Optional[int] = None  # the guest CID claimed for this start, when vsock is set
    display_port: Optional[int] = None  # the display's claimed port (vm/engine/display_port.py)
    virtiofs_sockets: Tuple[str, ...] = ()  # shared_dirs' virtiofsd sockets (vm/engine/virtiofs.py)


def systemd_scope_prefix(
    uuid: str, name: str, systemd_dir: str = "/run/systemd/system", runner: Optional[str] = None
) -> List[str]:
    """Where systemd is PID 1, run QEMU in its own scope so systemd tracks it and does not
    kill it with the session that started it."""
    runner = runner or shutil.which("systemd-run")
    if not os.path.isdir(systemd_dir) or runner is None:
        return []
    return [
        runner,
        "--scope",
        "--quiet",
        "--collect",
        "--unit=infinivirt-%s" % uuid,
        "--slice=infinivirt.slice",
        "--description=Infinivirt VM %s" % name,
        "--property=KillMode=process",
    ]


def vfio_hint(stderr: str, host_devices: Sequence[PciPassthrough]) -> str:
    """What to check when QEMU could not open an assigned PCI device."""
    if not host_devices or "vfio" not in (stderr or ""):
        return ""
    return (
        " (QEMU could not take a host PCI device through VFIO: the device must exist, be bound "
        "to vfio-pci with its whole IOMMU group, and /dev/vfio/<group> must be there; see "
        "infinivirt_gpu, and the host role for the IOMMU kernel arguments and vfio modules)"
    )


def prepare(engine, rec: VmRecord, incoming: bool = False) -> Launch:
    """Resolve how QEMU runs here, journal its files and record the start, all before
    QEMU exists: if the database is lost mid-start, the next run finds the process
    through the recorded pidfile instead of starting a second one. A migration target's
    start (``incoming``) records nothing in the row, which is the source's; its files are
    journaled under this side's key (HostResources.key)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.firmware import (
        ensure_nvram,
        firmware_files,
    )
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_vhost

    paths = VmPaths.for_vm(engine.run_dir, rec.uuid)
    vhost = check_vhost(rec.spec)
    devices = None
    if rec.spec.tpm is not None or rec.spec.vsock is not None:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform as devices

        devices.check_host(rec.spec)  # before anything is made
    ensure_private_dir(engine.run_dir, "run_dir")
    accel, cpu, binary, warnings = engine.plan_launch(rec)
    engine.keep_probe()  # probed before run_dir existed: kept for the next task
    key = engine.resources.key(rec)
    engine.resources.release_files(rec, keep_serial_log=True)  # leftovers of a crashed run (this side's)
    engine.resources.rotate_serial_log(rec, paths)
    engine.store.journal_add_many(key, paths.journal(rec.spec.console_socket, rec.spec.guest_agent))
    code = template = nvram = None
    if rec.spec.firmware == "uefi":  # before anything is recorded: OVMF may be missing
        code, template = firmware_files(rec.spec.secure_boot, rec.spec.uefi_firmware)
    cid = tpm_socket = None
    if devices is not None:  # the swtpm is journaled: an abort or the next start ends it
        cid = devices.claim_vsock(engine.store, engine.host_id, rec, incoming)
        tpm_socket = devices.start_tpm(engine, rec)
    rec.status, rec.qemu_pid, rec.qemu_started = STARTING, None, None
    rec.pidfile_path, rec.qmp_socket_path, rec.serial_log_path = (paths.pidfile, paths.qmp_socket, paths.serial_log)
    rec.running_spec, rec.launch_accel, rec.launch_cpu = rec.spec, accel, cpu
    if not incoming:
        records.save(engine.store, rec)
    if template is not None:
        nvram = engine.resources.nvram_path(rec)
        engine.store.journal_add(key, "nvram", nvram)  # kept until the VM is removed
        ensure_nvram(nvram, template)
    return Launch(paths, binary, accel, cpu, vhost, code, nvram, warnings, tpm_socket=tpm_socket, vsock_cid=cid)


def spawn(engine, rec: VmRecord, launch: Launch, inputs: StartInputs) -> Tuple[int, str]:
    """Run QEMU paused (-S, daemonized, in the VM's netns); its exit code and stderr.
    Each LUKS key reaches QEMU's secret object as a memory-only descriptor it inherits
    (host.secret_fd): no key file exists, even if this process is killed."""
    from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
    from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv

    paths = launch.paths
    make_event_log(rec, paths.event_log)  # journaled by prepare; removed by an abort
    with contextlib.ExitStack() as stack:
        keys = {disk_id: stack.enter_context(secret_fd(key)) for disk_id, key in inputs.disk_keys.items()}
        images, backing_images = engine.resources.open_images(stack, rec)
        ctx = LaunchContext(
            binary=launch.binary,
            uuid=rec.uuid,
            accel=launch.accel,
            cpu=launch.cpu,
            vhost_available=launch.vhost,
            hugepage_path=launch.hugepage_path,
            firmware_code=launch.code,
            nvram=launch.nvram,
            disk_secret_files={disk_id: key.path for disk_id, key in keys.items()},
            disk_active_paths=engine.resources.active_paths(rec),
            disk_fds=images,
            disk_backing_fds=backing_images,
            pidfile=paths.pidfile,
            qmp_socket=paths.qmp_socket,
            serial_log=paths.serial_log,
            console_socket=paths.console_socket if rec.spec.console_socket else None,
            guest_agent_socket=paths.guest_agent_socket if rec.spec.guest_agent else None,
            events_socket=paths.events_socket,
            event_log=paths.event_log,
            host_devices=inputs.host_devices,
            cloud_init_iso=inputs.cloud_init_iso,
            unattend_iso=inputs.unattend_iso,
            machine=recorded_machine(rec),
            tpm_socket=launch.tpm_socket,
            vsock_cid=launch.vsock_cid,
            display_port=launch.display_port,
            virtiofs_sockets=launch.virtiofs_sockets,
            incoming=inputs.incoming is not None,
        )
        argv = systemd_scope_prefix(rec.uuid, rec.name) + build_argv(rec.spec, ctx)
        return engine.process.spawn(
            argv,
            nsutil.preexec(rec.spec.netns),
            [k.fd for k in keys.values()]
            + [fd for fds in images.values() for fd in fds]
            + [fd for chain in backing_images.values() for fds in chain for fd in fds],
        )


def listen_incoming(qmp, rec: VmRecord, incoming: Incoming) -> None:
    """A migration target's QEMU, checked and set up, starts listening for the stream."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen_on

    listen_on(qmp, rec, incoming.uri, incoming.postcopy)


def recorded_machine(rec: VmRecord) -> Optional[str]:
    """The versioned machine type this start asks for: the one recorded at the first start
    (None then, or after machine_type changed: QEMU resolves the alias)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.machine import belongs

    return rec.machine_resolved if belongs(rec.spec.machine_type, rec.machine_resolved) else None


def record_machine(qmp, rec: VmRecord) -> None:
    """At a start without a recorded machine version, keep what QEMU resolved the alias to
    (``query-machines``: one QMP round trip, at such starts only). The caller saves the row."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.machine import resolve_alias

    if recorded_machine(rec) is None:
        rec.machine_resolved = resolve_alias(rec.spec.machine_type, qmp(rec, "query-machines"))


def make_event_log(rec: VmRecord, base: str) -> None:
    """The event log's two files, made fresh (0600, no link followed) before QEMU opens them."""
    for suffix, text in ((".in", EVENT_LOG_INPUT), (".out", b"")):
        path = base + suffix
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text)
        except OSError as exc:
            raise QemuError("VM %s: cannot create its event log %s: %s" % (rec.name, path, exc)) from exc
