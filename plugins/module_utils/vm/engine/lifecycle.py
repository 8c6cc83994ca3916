# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start, stop, pause and resume one VM's QEMU process.

Start: QEMU is spawned paused (-S) and daemonized, checked over QMP, then let run with
`cont`. Stop: ACPI power button (`system_powerdown`), then, only with force, `quit` and
SIGKILL. Every file QEMU makes for a VM is journaled in the store before it exists and
dropped from the journal after it is gone. A transition has finished when a method returns.

What only a start needs (argv, TAPs and pyroute2, firmware, key descriptors, the firewall) is
imported where it is used: a task that only reads or stops a VM does not load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import DEFAULT_NVRAM_DIR
from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    InfinivirtError,
    QemuError,
    QemuUnresponsive,
    QmpError,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.liveness import start_ticks
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    kill_vm_process,
    process_runs_vm,
    process_state,
    read_pidfile,
    run_daemonized,
    vm_processes,
    wait_until_gone,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import (
    HostPaths,
    probe,
    resolve_accel,
    resolve_cpu,
    save_probe,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import PciPassthrough
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import queue_count
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord, firewall_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    CRASHED,
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
    fold_status,
)

# A journal note, not a file: the VM was stopped by a task that must start it again as
# the note says (running or paused); the next such task does it if this one was cut off.
RESUME = "resume"
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the trailing NUL
POWERDOWN_RESEND = 5.0  # a guest still booting has not opened its power button yet
QUIT_GRACE = 5.0
DYING_GRACE = 2.0  # how long a QEMU that refused QMP may take to be gone, when it is ending
UNRESPONSIVE = "unresponsive"  # a live QEMU that does not answer QMP (query_status raised)
STOPPED_STATES = ("T", "t")  # /proc/PID/stat: stopped by a signal or traced


@dataclasses.dataclass(frozen=True)
class VmPaths:
    pidfile: str
    qmp_socket: str
    serial_log: str
    console_socket: str
    events_socket: str  # the host monitor's own QMP monitor
    event_log: str  # QEMU's events in a file (<event_log>.out), see EVENT_LOG_INPUT

    @classmethod
    def for_vm(cls, run_dir: str, uuid: str) -> "VmPaths":
        base = os.path.join(run_dir, uuid)
        paths = cls(
            pidfile=base + ".pid",
            qmp_socket=base + ".qmp",
            serial_log=base + ".serial.log",
            console_socket=base + ".console",
            events_socket=base + ".evt",  # as short as .qmp: no run_dir that worked stops working
            event_log=base + ".evlog",
        )
        longest = max((paths.qmp_socket, paths.events_socket), key=len)
        if len(longest.encode()) > SOCKET_PATH_MAX:
            reason = "%s is too long: the socket path %s exceeds the %d-byte limit of a UNIX socket" % (
                run_dir,
                longest,
                SOCKET_PATH_MAX,
            )
            raise SpecError("run_dir", reason)
        return paths

    def journal(self, console: bool = False) -> List[tuple]:
        files = [
            ("pidfile", self.pidfile),
            ("qmp_socket", self.qmp_socket),
            ("events_socket", self.events_socket),
            ("serial_log", self.serial_log),
            ("event_log", self.event_log + ".in"),
            ("event_log", self.event_log + ".out"),
        ]
        return files + ([("console_socket", self.console_socket)] if console else [])


@dataclasses.dataclass(frozen=True)
class StartInputs:
    """What a start needs besides the record (VmService.start_vm gathers it)."""

    paused: bool = False
    graphics_password: Optional[str] = None
    disk_keys: Dict[str, str] = dataclasses.field(default_factory=dict)  # disk_id -> LUKS passphrase
    nic_bridges: Dict[str, str] = dataclasses.field(default_factory=dict)  # MAC -> bridge of its TAP
    host_devices: Tuple[PciPassthrough, ...] = ()  # host PCI devices, checked against sysfs
    events: Tuple[Dict[str, Any], ...] = ()  # the caller's (see add_events), written with the row that says it runs


@dataclasses.dataclass(frozen=True)
class _Launch:
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


class Lifecycle:
    def __init__(
        self,
        store,
        run_dir: str,
        qemu_binary: Optional[str] = None,
        host_paths: HostPaths = HostPaths(),
        start_timeout: float = 60.0,
        qmp_timeout: float = 10.0,
        nvram_dir: str = DEFAULT_NVRAM_DIR,
        firewall: Optional[Callable[[], Any]] = None,
        storage_roots: Optional[Sequence[str]] = None,
    ):
        self.store = store
        self.storage_roots = storage_roots  # disk images are opened confined to these
        self._caps = None
        self._caps_cached = False  # whether probe-cache.json holds self._caps
        # Returns the firewall.service.FirewallService (built on first use), or None: no firewall.
        self.firewall = firewall
        self._holding = 0  # depth of one_session() blocks
        self._held: Optional[Tuple[str, QmpSession]] = None  # (socket path, open session)
        self.run_dir = run_dir
        self.nvram_dir = nvram_dir
        self.qemu_binary = qemu_binary
        self.host_paths = host_paths
        self.start_timeout = start_timeout
        self.qmp_timeout = qmp_timeout

    # -- observing --------------------------------------------------------------------
    def pidfile(self, rec: VmRecord) -> str:
        return rec.pidfile_path or VmPaths.for_vm(self.run_dir, rec.uuid).pidfile

    def live_pid(self, rec: VmRecord) -> Optional[int]:
        """The PID of this VM's QEMU, from its pidfile, if that process really is it."""
        pid = read_pidfile(self.pidfile(rec))
        return pid if process_runs_vm(pid, rec.uuid, self.host_paths.proc) else None

    def is_alive(self, rec: VmRecord) -> bool:
        return self.live_pid(rec) is not None

    def query_status(self, rec: VmRecord, timeout: Optional[float] = None) -> Optional[str]:
        """QEMU's own run state (query-status), or None when no process runs. A live QEMU
        that cannot answer raises QemuUnresponsive at once when it is stopped (SIGSTOP, a
        debugger), else after ``timeout`` (default: qmp_timeout)."""
        pid = self.live_pid(rec)
        if pid is None:
            return None
        if process_state(pid, self.host_paths.proc) in STOPPED_STATES:
            raise QemuUnresponsive(
                rec.name,
                "query-status",
                "QEMU (PID %s) is stopped (SIGSTOP or a debugger) and cannot answer; set force: true to end it" % pid,
            )
        try:
            return self.qmp(rec, "query-status", timeout=timeout)["status"]
        except QmpError as exc:
            # A QEMU that is ending (crashed, or killed) resets the connection; its threads
            # may outlive the refusal by some milliseconds. One that stays is really broken.
            if wait_until_gone(pid, rec.uuid, DYING_GRACE, self.host_paths.proc):
                return None
            raise QemuUnresponsive(rec.name, "query-status", "%s; set force: true to end it" % exc.reason) from None

    def live_state(self, rec: VmRecord) -> str:
        return fold_status(self.query_status(rec))

    def qmp(self, rec: VmRecord, command: str, arguments: Optional[dict] = None, timeout: Optional[float] = None):
        timeout = self.qmp_timeout if timeout is None else timeout
        with self.session(rec, timeout) as qmp:
            result = qmp.execute(command, arguments, timeout=timeout)
        if command == "quit":  # QEMU closes the connection
            self.close_session()
        return result

    @contextlib.contextmanager
    def one_session(self) -> Iterator[None]:
        """Within this block QMP commands to a VM share one connection, so a task pays for
        one handshake. It is closed at the end, when the QEMU ends, and before any wait for
        the guest: QEMU serves one client at a time, and others may want to ask it."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding:
                self.close_session()

    def close_session(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held[1].__exit__(None, None, None)

    @contextlib.contextmanager
    def session(self, rec: VmRecord, timeout: Optional[float] = None) -> Iterator[QmpSession]:
        """A QMP session with the VM's QEMU: inside one_session() the shared one, else its own."""
        timeout = self.qmp_timeout if timeout is None else timeout
        if not self._holding:
            with QmpSession(rec.qmp_socket_path, rec.name, timeout) as qmp:
                yield qmp
            return
        if self._held is not None and self._held[0] != rec.qmp_socket_path:
            self.close_session()
        if self._held is None:
            self._held = (rec.qmp_socket_path, QmpSession(rec.qmp_socket_path, rec.name, timeout).__enter__())
        try:
            yield self._held[1]
        except BaseException:
            self.close_session()  # one that failed (a timeout mid-reply, say) is not reused
            raise

    def reconcile(self, rec: VmRecord, state: str) -> bool:
        """Bring the row in line with what runs (a guest that powered itself off, a run
        that could not save its result). Returns whether the row was rewritten."""
        pid = self.live_pid(rec) if state != STOPPED else None
        started = start_ticks(pid, self.host_paths.proc)
        if rec.status == state and rec.qemu_pid == pid and rec.qemu_started == started:
            return False
        if state == STOPPED and rec.status == CRASHED and rec.running_spec is None:
            return False  # the monitor cleaned it up and said why
        if state == STOPPED:
            self.release_files(rec, keep_serial_log=True)
            self._mark_stopped(rec)  # a crashed VM's rules go with its TAPs
            return True
        rec.status, rec.qemu_pid, rec.qemu_started = state, pid, started
        records.save(self.store, rec)
        return True

    # -- starting ---------------------------------------------------------------------
    def capabilities(self):
        """What this host's QEMU offers (cached in run_dir once it exists), probed once per
        task: the host check and the start both need it."""
        if self._caps is None:
            cache = self._probe_cache() if os.path.isdir(self.run_dir) else None
            self._caps = probe(self.qemu_binary, cache, self.host_paths)
            self._caps_cached = cache is not None
        return self._caps

    def _probe_cache(self) -> str:
        return os.path.join(self.run_dir, "probe-cache.json")

    def plan_launch(self, rec: VmRecord) -> tuple:
        """Resolve accelerator and CPU for this host: (accel, cpu, binary, warnings).
        Writes nothing but the probe cache, and that only once run_dir exists."""
        caps = self.capabilities()
        accel, warnings = resolve_accel(rec.spec.accel, caps)
        cpu, cpu_warnings = resolve_cpu(rec.spec.cpu_model, rec.spec.cpu_flags, accel, caps)
        if rec.spec.hyperv:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.presets import hyperv_flags

            dropped = hyperv_flags(accel)[1]
            if dropped:
                cpu_warnings.append(
                    "VM %s runs under %s: the Hyper-V enlightenments %s need KVM and are left out"
                    % (rec.name, accel.upper(), ", ".join(dropped))
                )
        return accel, cpu, caps.binary, warnings + cpu_warnings

    def start(self, rec: VmRecord, inputs: StartInputs) -> List[str]:
        """Start the VM and return warnings. On failure nothing of it is left behind.
        The display password reaches QEMU over QMP while the guest is still paused."""
        if rec.spec.graphics_password_set and inputs.graphics_password is None:
            raise StateError("VM %s: its display password could not be read" % rec.name)
        if self.is_alive(rec):
            raise StateError("VM %s is already running as PID %s" % (rec.name, self.live_pid(rec)))
        self.close_session()  # one held with a QEMU of this VM that is gone
        after_abort = CRASHED if rec.status == CRASHED else STOPPED  # a failed start keeps the crash mark
        hugepages = self.admit_memory(rec)  # before anything is recorded or made
        launch = dataclasses.replace(self._prepare(rec), hugepage_path=hugepages)
        try:
            self.make_taps(rec, rec.spec.nics, inputs.nic_bridges)
            rc, stderr = self._spawn(rec, launch, inputs)  # may refuse a swapped image
        except InfinivirtError:
            self.abort_start(rec, after_abort)
            raise
        self._bring_up(rec, rc, stderr, inputs, after_abort)
        rec.status = PAUSED if inputs.paused else RUNNING
        records.save(self.store, rec, list(inputs.events))
        return launch.warnings

    def admit_memory(self, rec: VmRecord) -> Optional[str]:
        """A VM on hugepages starts only with its hugetlbfs mount and enough free pages
        (SpecError naming hugepages, with the count missing). Returns the mount."""
        if rec.spec.hugepages is None:
            return None
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import (
            check_hugepages,
            hugepage_path,
        )

        path = hugepage_path(rec.spec, self.host_paths.proc)
        check_hugepages(rec.spec, self.host_paths.sys)
        return path

    def tuner(self):
        """vm.engine.tune.Tuner (pins, balloon, vCPU and DIMM hot-plug), imported when first used."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.tune import Tuner

        return Tuner(self)

    def _prepare(self, rec: VmRecord) -> "_Launch":
        """Resolve how QEMU runs here, journal its files and record the start, all before
        QEMU exists: if the database is lost mid-start, the next run finds the process
        through the recorded pidfile instead of starting a second one."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.firmware import (
            ensure_nvram,
            firmware_files,
        )
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_vhost

        paths = VmPaths.for_vm(self.run_dir, rec.uuid)
        vhost = check_vhost(rec.spec)
        ensure_private_dir(self.run_dir, "run_dir")
        accel, cpu, binary, warnings = self.plan_launch(rec)
        if not self._caps_cached:  # probed before run_dir existed: keep it for the next task
            save_probe(self._caps, self._probe_cache())
            self._caps_cached = True
        self.release_files(rec, keep_serial_log=True)  # leftovers of a crashed run
        self._rotate_serial_log(rec, paths)
        self.store.journal_add_many(rec.uuid, paths.journal(rec.spec.console_socket))
        code = template = nvram = None
        if rec.spec.firmware == "uefi":  # before anything is recorded: OVMF may be missing
            code, template = firmware_files(rec.spec.secure_boot, rec.spec.uefi_firmware)
        rec.status, rec.qemu_pid, rec.qemu_started = STARTING, None, None
        rec.pidfile_path, rec.qmp_socket_path, rec.serial_log_path = (paths.pidfile, paths.qmp_socket, paths.serial_log)
        rec.running_spec, rec.launch_accel, rec.launch_cpu = rec.spec, accel, cpu
        records.save(self.store, rec)
        if template is not None:
            nvram = self.nvram_path(rec)
            self.store.journal_add(rec.uuid, "nvram", nvram)  # kept until the VM is removed
            ensure_nvram(nvram, template)
        return _Launch(paths, binary, accel, cpu, vhost, code, nvram, warnings)

    def _spawn(self, rec: VmRecord, launch: "_Launch", inputs: StartInputs) -> Tuple[int, str]:
        """Run QEMU paused (-S, daemonized, in the VM's netns); its exit code and stderr.
        Each LUKS key reaches QEMU's secret object as a memory-only descriptor it inherits
        (host.secret_fd): no key file exists, even if this process is killed."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
        from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv

        paths = launch.paths
        _make_event_log(rec, paths.event_log)  # journaled by _prepare; removed by an abort
        with contextlib.ExitStack() as stack:
            keys = {disk_id: stack.enter_context(secret_fd(key)) for disk_id, key in inputs.disk_keys.items()}
            images, backing_images = self._open_images(stack, rec)
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
                disk_active_paths=self.active_paths(rec),
                disk_fds=images,
                disk_backing_fds=backing_images,
                pidfile=paths.pidfile,
                qmp_socket=paths.qmp_socket,
                serial_log=paths.serial_log,
                console_socket=paths.console_socket if rec.spec.console_socket else None,
                events_socket=paths.events_socket,
                event_log=paths.event_log,
                host_devices=inputs.host_devices,
            )
            argv = systemd_scope_prefix(rec.uuid, rec.name) + build_argv(rec.spec, ctx)
            return run_daemonized(
                argv,
                self.start_timeout,
                nsutil.preexec(rec.spec.netns),
                pass_fds=[k.fd for k in keys.values()]
                + [fd for fds in images.values() for fd in fds]
                + [fd for chain in backing_images.values() for fds in chain for fd in fds],
            )

    def _open_images(
        self, stack: contextlib.ExitStack, rec: VmRecord
    ) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, Tuple[Tuple[int, ...], ...]]]:
        """Descriptors of each disk's top image, and of the images below it (base first) for
        a disk with external snapshots (see open_image). Nothing when no roots are set."""
        if not self.storage_roots:
            return {}, {}
        chains = self.image_chains(rec)
        tops, below = {}, {}
        for index, disk in enumerate(rec.spec.disks):
            field = "disks[%d].path" % index
            chain = chains.get(disk.disk_id, [disk.path])
            tops[disk.disk_id] = self.open_image(stack, disk, chain[-1], field)
            if len(chain) > 1:
                below[disk.disk_id] = tuple(self.open_image(stack, disk, path, field) for path in chain[:-1])
        return tops, below

    def open_image(self, stack: contextlib.ExitStack, disk, path: str, field: str) -> Tuple[int, ...]:
        """Descriptors of ``path``, resolved inside the storage roots now and opened without
        following any link, so QEMU gets the file that was checked (a symlink swapped in
        since fails the task). Read-write and read-only, as QEMU picks from a descriptor set
        by access mode. They stay open until ``stack`` closes."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import open_confined, resolve_in_roots

        real = resolve_in_roots(path, self.storage_roots, field)
        modes = (os.O_RDONLY,) if disk.readonly or disk.media == "cdrom" else (os.O_RDWR, os.O_RDONLY)
        try:
            return tuple(stack.enter_context(open_confined(real, mode, field=field)).fd for mode in modes)
        except FileNotFoundError:
            raise SpecError(field, "%s does not exist" % real) from None

    def _bring_up(self, rec: VmRecord, rc: int, stderr: str, inputs: StartInputs, after_abort: str) -> None:
        """Check the paused QEMU, apply the firewall and the display password, then let the
        guest run (unless asked paused). Any failure ends the start with nothing left."""
        try:
            if rc != 0:
                raise QemuError(
                    "VM %s: QEMU failed to start (exit %d): %s%s"
                    % (rec.name, rc, stderr or "no message", vfio_hint(stderr, inputs.host_devices))
                )
            rec.qemu_pid = self.live_pid(rec)
            rec.qemu_started = start_ticks(rec.qemu_pid, self.host_paths.proc)
            if rec.qemu_pid is None or rec.qemu_started is None:
                raise QemuError("VM %s: QEMU exited right after starting" % rec.name)
            status = self.qmp(rec, "query-status")["status"]
            if status != "prelaunch":
                raise QemuError("VM %s: expected QEMU in prelaunch state, found %s" % (rec.name, status))
            self.sync_firewall(rec)  # before the guest sends its first frame
            if rec.spec.graphics_type == "vnc":
                rec.launch_graphics_port = self._setup_vnc(rec, inputs.graphics_password)
            spec = rec.spec
            if spec.memory_balloon or spec.cpu_pinning or spec.emulator_cpus or spec.iothread_cpus:
                self.tuner().at_start(rec)  # pins and balloon before the guest runs
            records.save(self.store, rec)  # PID and display port known even if we die after cont
            if not inputs.paused:
                self.qmp(rec, "cont")
        except (InfinivirtError, KeyError, TypeError, ValueError) as exc:
            self.abort_start(rec, after_abort)
            if isinstance(exc, InfinivirtError):
                raise
            raise QemuError("VM %s: unexpected QMP reply while starting: %r" % (rec.name, exc)) from exc

    def make_taps(self, rec: VmRecord, nics, bridges: Dict[str, str]) -> None:
        """Each NIC's TAP, journaled before it exists, on its bridge."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
        from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import (
            TapSpec,
            create_tap,
            set_rate_limit,
        )

        for nic in nics:
            self.store.journal_add(rec.uuid, "tap", nsutil.ns_ref(rec.spec.netns, nic.tap_name))
            create_tap(
                TapSpec(
                    name=nic.tap_name,
                    bridge=bridges[nic.mac],
                    multi_queue=queue_count(nic, rec.spec.vcpus) > 1,
                    mtu=nic.mtu,
                ),
                rec.spec.netns,
            )
            if nic.rate_limit_mbit is not None:
                set_rate_limit(nic.tap_name, nic.rate_limit_mbit, rec.spec.netns)

    def drop_tap(self, rec: VmRecord, ref: str) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
        from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
        from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import remove_tap

        netns, tap = nsutil.parse_ns_ref(ref)
        try:
            remove_tap(tap, netns)
        except (NetError, nsutil.NetnsError, SpecError):
            pass  # its namespace is gone, and the TAP with it
        self.store.journal_remove(rec.uuid, "tap", ref)

    def image_chains(self, rec: VmRecord) -> Dict[str, List[str]]:
        """disk_id -> its images, base first, of each disk that has external snapshots."""
        chains: Dict[str, List[str]] = {}
        by_path = {d.path: d for d in rec.spec.disks}
        for layer in self.store.list_layers(rec.uuid):  # ordered by seq
            disk = by_path.get(layer["base_path"])
            if disk is not None:
                chains.setdefault(disk.disk_id, [disk.path]).append(layer["overlay"])
        return chains

    def active_paths(self, rec: VmRecord) -> Dict[str, str]:
        """disk_id -> the top overlay of each disk that has external snapshots."""
        return {disk_id: chain[-1] for disk_id, chain in self.image_chains(rec).items()}

    def _setup_vnc(self, rec: VmRecord, password: Optional[str]) -> int:
        """Set the password (if any) and return the port QEMU listens on."""
        if password is not None:
            self.set_graphics_password(rec, password)
        return int(self.qmp(rec, "query-vnc")["service"])

    def set_graphics_password(self, rec: VmRecord, password: str) -> None:
        """Also works live; open sessions keep going (QEMU cannot drop VNC clients)."""
        self.qmp(rec, "set_password", {"protocol": "vnc", "password": password})

    def abort_start(self, rec: VmRecord, status: str = STOPPED) -> None:
        """End a start that did not finish: its QEMU (ours only), files, TAPs, row, rules.
        The last run's serial log (``.1``) stays: after a crash it is the evidence. The row
        says ``status`` (a crashed VM whose restart failed is still crashed)."""
        self.close_session()
        # By pidfile, and by UUID too: a QEMU that timed out may not have written it yet.
        pids = set(vm_processes(rec.uuid, self.host_paths.proc))
        pid = read_pidfile(self.pidfile(rec))
        if pid:
            pids.add(pid)
        for pid in pids:
            kill_vm_process(pid, rec.uuid, self.host_paths.proc)
        self.release_files(rec, keep_serial_log=True)
        current = rec.serial_log_path
        if current and ("serial_log", current) in self.store.journal_list(rec.uuid):
            self._remove_file(rec, "serial_log", current)  # or the next start rotates it over the .1
        with contextlib.suppress(InfinivirtError):  # the start's own error is the one to report
            self._mark_stopped(rec, status)

    def sync_firewall(self, rec: VmRecord) -> None:
        """The VM's nftables state follows its TAPs: there while it runs, gone when not."""
        if self.firewall is not None:
            self.firewall().sync_vm(firewall_vm(rec))

    # -- stopping ---------------------------------------------------------------------
    def stop(self, rec: VmRecord, timeout: float, force: bool, qemu_status: Optional[str] = None) -> None:
        """Power the guest off through ACPI; with force, quit/kill it after the timeout.
        A timeout of 0 waits for nothing: forced, QEMU is ended at once (no power button);
        not forced, a guest that is not off fails at once, untouched.
        ``qemu_status`` saves a QMP round trip when the caller has just asked QEMU."""
        rec.qemu_pid = self.live_pid(rec)
        if rec.qemu_pid is not None:
            try:
                status = qemu_status or self.query_status(rec)
            except QemuUnresponsive:
                if not force:
                    raise
                status = UNRESPONSIVE
            if status == UNRESPONSIVE:  # forced: it cannot quit when asked, so it is killed
                kill_vm_process(rec.qemu_pid, rec.uuid, self.host_paths.proc)
            elif status is None:
                pass  # it ended between our checks
            elif status == "prelaunch":  # the guest never ran: nothing to shut down
                self._quit(rec)
            elif timeout <= 0 and force:
                self._quit(rec)
            elif timeout <= 0:
                raise StateError(
                    "VM %s is not off (QEMU status %s) and stop_timeout is 0, so the guest gets no "
                    "time to power off; give stop_timeout the seconds it needs, or set force: true "
                    "to end it at once" % (rec.name, status)
                )
            else:
                if status != "running":
                    self.qmp(rec, "cont")  # a paused guest cannot see the power button
                if not self._powerdown(rec, timeout):
                    if not force:
                        raise StateError(
                            "VM %s did not power off within stop_timeout=%g s after the ACPI "
                            "power button; raise stop_timeout, or set force: true to end it "
                            "anyway" % (rec.name, timeout)
                        )
                    self._quit(rec)
        self.release_files(rec, keep_serial_log=True)
        self._mark_stopped(rec)

    def _powerdown(self, rec: VmRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.qmp(rec, "system_powerdown")
            except QmpError:
                if not self.is_alive(rec):
                    return True  # it went away between our checks
                raise
            self.close_session()  # not held while the guest takes its time
            resend_at = min(deadline, time.monotonic() + POWERDOWN_RESEND)
            if wait_until_gone(rec.qemu_pid, rec.uuid, resend_at - time.monotonic(), self.host_paths.proc):
                return True
            if time.monotonic() >= deadline:
                return False

    def _quit(self, rec: VmRecord) -> None:
        try:
            self.qmp(rec, "quit")
        except QmpError:
            pass  # fall through to SIGKILL
        if not wait_until_gone(rec.qemu_pid, rec.uuid, QUIT_GRACE, self.host_paths.proc):
            kill_vm_process(rec.qemu_pid, rec.uuid, self.host_paths.proc)

    def clean_up_dead(self, rec: VmRecord, status: str, events: Optional[Callable[[], List[dict]]] = None) -> None:
        """After QEMU died (``status`` crashed) or its guest powered off (stopped): its files,
        TAPs and rules go, the serial log stays (it tells why), the row says ``status``.
        ``events()`` (the host monitor's) are written with the row, in one transaction."""
        self.release_files(rec, keep_serial_log=True)
        self._mark_stopped(rec, status, events)

    def _mark_stopped(
        self, rec: VmRecord, status: str = STOPPED, events: Optional[Callable[[], List[dict]]] = None
    ) -> None:
        """The row says stopped (or crashed) last: a task killed before that leaves a row
        that still says running, so the next one finishes the job (files, TAPs, then the
        firewall)."""
        self.close_session()  # its QEMU is gone
        rec.status = status
        rec.qemu_pid = rec.qemu_started = None
        self._clear_launch(rec)
        self.sync_firewall(rec)  # the VM's rules go with its TAPs
        records.save(self.store, rec, events() if events is not None else None)

    @staticmethod
    def _clear_launch(rec: VmRecord) -> None:
        rec.running_spec = None
        rec.launch_accel = rec.launch_cpu = rec.launch_graphics_port = None

    # -- pausing ----------------------------------------------------------------------
    def pause(self, rec: VmRecord) -> None:
        self.qmp(rec, "stop")
        rec.status = PAUSED
        records.save(self.store, rec)

    def resume(self, rec: VmRecord) -> None:
        self.qmp(rec, "cont")
        rec.status = RUNNING
        records.save(self.store, rec)

    # -- host resources ---------------------------------------------------------------
    def nvram_path(self, rec: VmRecord) -> str:
        return os.path.join(self.nvram_dir, rec.uuid + ".fd")

    def _rotate_serial_log(self, rec: VmRecord, paths: VmPaths) -> None:
        """QEMU truncates the serial log it opens: the last run's (which may tell why it
        crashed) is kept as ``.1``, one back, and removed with the VM."""
        if os.path.lexists(paths.serial_log):
            older = paths.serial_log + ".1"
            self.store.journal_add(rec.uuid, "serial_log", older)
            os.replace(paths.serial_log, older)

    def release_files(self, rec: VmRecord, keep_serial_log: bool, keep_nvram: bool = True) -> None:
        """Remove the journaled files and TAPs of a VM whose process is gone. The NVRAM
        outlives the process (it is the VM's firmware settings) until the VM is removed.
        Entries of the files removed leave the journal in one transaction, after the files."""
        gone: List[Tuple[str, str]] = []
        try:
            for kind, ref in self.store.journal_list(rec.uuid):
                if (keep_serial_log and kind == "serial_log") or (keep_nvram and kind in ("nvram", RESUME)):
                    continue
                if kind == "tap":
                    self.drop_tap(rec, ref)
                    continue
                if kind != RESUME:  # a note, not a file
                    _unlink(rec, kind, ref)
                gone.append((kind, ref))
        finally:
            self.store.journal_remove_many(rec.uuid, gone)

    def _remove_file(self, rec: VmRecord, kind: str, ref: str) -> None:
        """One journaled file, then its journal entry."""
        _unlink(rec, kind, ref)
        self.store.journal_remove(rec.uuid, kind, ref)


def _unlink(rec: VmRecord, kind: str, ref: str) -> None:
    try:
        os.unlink(ref)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise QemuError("VM %s: cannot remove %s %s: %s" % (rec.name, kind, ref, exc)) from exc


# QEMU's "pipe" chardev opens <path>.in and <path>.out: given regular files, the monitor on
# it reads this one command (then end of file) and writes every event to .out from then on.
EVENT_LOG_INPUT = b'{"execute": "qmp_capabilities"}\n'


def _make_event_log(rec: VmRecord, base: str) -> None:
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
