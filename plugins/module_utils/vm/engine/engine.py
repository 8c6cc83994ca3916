# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM engine of one host: start, stop, pause and resume a VM's QEMU, built from a
HostContext. Every service that acts on a VM (infinivirt_vm, snapshots, passthrough, info,
the host monitor) uses one.

Its parts: ``process`` (process.QemuProcess: pidfile, spawn, end), ``sessions``
(session.QmpSessions: QMP, run state, display password) and ``resources``
(resources.HostResources: journaled files, TAPs, images, firewall, memory admission).
Start: QEMU is spawned paused (-S) and daemonized (launch.py), checked over QMP, then let
run with ``cont``. A transition has finished when a method returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QemuError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.liveness import start_ticks
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import (
    HostPaths,
    probe,
    resolve_accel,
    resolve_cpu,
    save_probe,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import MIGRATED_AWAY, QemuProcess
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import HostResources
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.session import QmpSessions
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    CRASHED,
    PAUSED,
    RUNNING,
    STOPPED,
)

UNFINISHED = ("requested", "listening", "sent", "taking")  # vm/model/migration.py's states before an end

if TYPE_CHECKING:  # launch.py is start-only: a no-op task does not import it
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import StartInputs


class Engine:
    """The VMs of ``ctx``'s store on this host (``ctx.host_id``). ``firewall`` returns the
    firewall.service.FirewallService whose hooks follow the VMs' TAPs (acting.py makes it),
    or is None for an engine that only reads (vm/info.py): infinivirt_vm_info ships no
    firewall."""

    def __init__(
        self,
        ctx: HostContext,
        host_paths: HostPaths = HostPaths(),
        firewall: Optional[Callable[[], Any]] = None,
        start_timeout: float = 60.0,
        qmp_timeout: float = 10.0,
    ):
        self.ctx = ctx
        self.store = ctx.store
        self.host_id = ctx.host_id
        self.lock_timeout = ctx.lock_timeout
        self.run_dir = ctx.run_dir
        self.host_paths = host_paths
        self.qemu_binary = ctx.qemu_binary
        self._caps = None
        self._caps_cached = False  # whether probe-cache.json holds self._caps
        self.process = QemuProcess(ctx.run_dir, host_paths, start_timeout)
        self.sessions = QmpSessions(self.process, qmp_timeout)
        self.resources = HostResources(ctx.store, ctx.nvram_dir, host_paths, ctx.storage_roots, firewall, ctx.host_id)

    @classmethod
    def of(
        cls, ctx: HostContext, host_paths: HostPaths = HostPaths(), firewall: Optional[Callable[[], Any]] = None
    ) -> "Engine":
        return cls(ctx, host_paths, firewall)

    def close(self) -> None:
        self.ctx.close()

    def tuner(self):
        """vm.engine.tune.Tuner (pins, balloon, vCPU and DIMM hot-plug), imported when first used."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.tune import Tuner

        return Tuner(self)

    def hotplug(self):
        """vm.engine.hotplug.Hotplug (disks, NICs, USB, PCI), imported when first used."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.hotplug import Hotplug

        return Hotplug(self)

    # -- the host's QEMU --------------------------------------------------------------
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

    def keep_probe(self) -> None:
        """Save a probe made before run_dir existed, for the next task."""
        if not self._caps_cached:
            save_probe(self._caps, self._probe_cache())
            self._caps_cached = True

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

    # -- starting ---------------------------------------------------------------------
    def start(self, rec: VmRecord, inputs: StartInputs) -> List[str]:
        """Start the VM and return warnings. On failure nothing of it is left behind.
        The display password reaches QEMU over QMP while the guest is still paused.
        With ``inputs.incoming`` it is a migration target's start (start_incoming).
        A display port claimed free that QEMU then could not bind (something bound it in
        between: a program, a VM of another store) is skipped by a new start, twice at most."""
        busy: Set[int] = set()
        while True:
            try:
                return self._start_once(rec, inputs, busy)
            except _DisplayPortTaken as taken:
                busy.add(taken.port)
                if len(busy) >= DISPLAY_ATTEMPTS:
                    raise taken.error from None

    def _start_once(self, rec: VmRecord, inputs: StartInputs, busy: Set[int]) -> List[str]:
        if rec.spec.graphics_password_set and inputs.graphics_password is None:
            raise StateError("VM %s: its display password could not be read" % rec.name)
        if self.process.is_alive(rec):
            raise StateError("VM %s is already running as PID %s" % (rec.name, self.process.live_pid(rec)))
        self.sessions.close_session()  # one held with a QEMU of this VM that is gone
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import launch

        after_abort = CRASHED if rec.status == CRASHED else STOPPED  # a failed start keeps the crash mark
        hugepages = self.resources.admit_memory(rec)  # before anything is recorded or made
        plan = dataclasses.replace(launch.prepare(self, rec, inputs.incoming is not None), hugepage_path=hugepages)
        try:
            self.resources.make_taps(rec, rec.spec.nics, inputs.nic_bridges)
            if rec.spec.graphics_type != "none" or rec.spec.shared_dirs:
                plan = self._display_and_shares(rec, plan, busy)
            rc, stderr = launch.spawn(self, rec, plan, inputs)  # may refuse a swapped image
        except InfinivirtError:
            self.abort_start(rec, after_abort)
            raise
        try:
            self._bring_up(rec, rc, stderr, inputs, after_abort)
        except QemuError as exc:
            if plan.display_port is not None and rec.spec.graphics_port is None and _display_bind_failed(stderr):
                raise _DisplayPortTaken(plan.display_port, exc) from exc
            raise
        if inputs.incoming is not None:
            return plan.warnings  # the row is the source's until the handover
        rec.status = PAUSED if inputs.paused else RUNNING
        records.save(self.store, rec, list(inputs.events))
        return plan.warnings

    def _display_and_shares(self, rec: VmRecord, plan, busy: Set[int]):
        """The display's claimed port (VNC's and SPICE's: one pool, so a VNC start never takes
        the port a SPICE start just claimed) and the shares' virtiofsd sockets, before QEMU."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import display_port, virtiofs

        port = display_port.claim(self, rec, busy) if rec.spec.graphics_type != "none" else None
        return dataclasses.replace(plan, display_port=port, virtiofs_sockets=virtiofs.start_all(self, rec))

    def _bring_up(self, rec: VmRecord, rc: int, stderr: str, inputs: StartInputs, after_abort: str) -> None:
        """Check the paused QEMU, apply the firewall and the display password, then let the
        guest run (unless asked paused). Any failure ends the start with nothing left.
        A migration target's QEMU waits for the stream (``inmigrate``): it is told where to
        listen instead, and neither the row nor ``cont`` is its to do."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import launch

        qmp = self.sessions.qmp
        try:
            if rc != 0:
                raise QemuError(
                    "VM %s: QEMU failed to start (exit %d): %s%s"
                    % (rec.name, rc, stderr or "no message", launch.vfio_hint(stderr, inputs.host_devices))
                )
            rec.qemu_pid = self.process.live_pid(rec)
            rec.qemu_started = start_ticks(rec.qemu_pid, self.host_paths.proc)
            if rec.qemu_pid is None or rec.qemu_started is None:
                raise QemuError("VM %s: QEMU exited right after starting" % rec.name)
            status = qmp(rec, "query-status")["status"]
            expected = "prelaunch" if inputs.incoming is None else "inmigrate"
            if status != expected:
                raise QemuError("VM %s: expected QEMU in %s state, found %s" % (rec.name, expected, status))
            if inputs.incoming is None:
                launch.record_machine(qmp, rec)  # its first start: the machine version to keep
            self.resources.sync_firewall(rec)  # before the guest sends its first frame
            if rec.spec.graphics_type == "vnc":
                rec.launch_graphics_port = self.sessions.setup_vnc(rec, inputs.graphics_password)
            elif rec.spec.graphics_type == "spice":
                rec.launch_graphics_port = self.sessions.setup_spice(rec, inputs.graphics_password)
            spec = rec.spec
            if spec.memory_balloon or spec.cpu_pinning or spec.emulator_cpus or spec.iothread_cpus:
                self.tuner().at_start(rec)  # pins and balloon before the guest runs
            if inputs.incoming is not None:  # the row is the source's; the guest runs after the stream
                launch.listen_incoming(qmp, rec, inputs.incoming)
                return
            records.save(self.store, rec)  # PID and display port known even if we die after cont
            if not inputs.paused:
                qmp(rec, "cont")
        except (InfinivirtError, KeyError, TypeError, ValueError) as exc:
            self.abort_start(rec, after_abort)
            if isinstance(exc, InfinivirtError):
                raise
            raise QemuError("VM %s: unexpected QMP reply while starting: %r" % (rec.name, exc)) from exc

    def start_incoming(self, rec: VmRecord, inputs: StartInputs) -> VmRecord:
        """A migration target's start (issue 23): the same start as any (TAPs, firewall,
        display password, LUKS keys, hugepages, the recorded machine), QEMU waiting for the
        stream (``-incoming defer``, then ``migrate-incoming`` on ``inputs.incoming.uri``).
        ``rec`` is the source's row; the returned copy is the VM as this host runs it (its
        own run dir's files, this host). Nothing is written to the row, this side's files
        are journaled apart (HostResources.key) and the other side's are not touched."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import recorded_machine

        if inputs.incoming is None:
            raise ValueError("start_incoming needs inputs.incoming")
        if rec.spec.machine_type and recorded_machine(rec) is None:  # the alias may mean another version here
            raise StateError(
                "VM %s has no recorded machine version (a start from before version recording): "
                "restart it on %s once, then migrate it" % (rec.name, rec.host)
            )
        mine = dataclasses.replace(
            rec, host=self.host_id, pidfile_path=None, qmp_socket_path=None, serial_log_path=None
        )
        mine.qemu_pid = mine.qemu_started = None
        self.resources.apart.add(rec.uuid)
        self.start(mine, inputs)
        return mine

    def abort_start(self, rec: VmRecord, status: str = STOPPED) -> None:
        """End a start that did not finish: its QEMU (ours only), files, TAPs, row, rules.
        The last run's serial log (``.1``) stays: after a crash it is the evidence. The row
        says ``status`` (a crashed VM whose restart failed is still crashed)."""
        self.sessions.close_session()
        self.process.kill_all(rec)
        self.resources.release_files(rec, keep_serial_log=True)
        current = rec.serial_log_path
        if current and ("serial_log", current) in self.store.journal_list(self.resources.key(rec)):
            self.resources.remove_file(rec, "serial_log", current)  # or the next start rotates it over the .1
        if rec.uuid in self.resources.apart:
            self.abort_incoming(rec)
            return
        with contextlib.suppress(InfinivirtError):  # the start's own error is the one to report
            self._mark_stopped(rec, status)

    def abort_incoming(self, rec: VmRecord) -> None:
        """End a migration target's side (``rec`` as start_incoming returned it): its QEMU,
        files (NVRAM and seeds too: the source keeps the VM's), TAPs and rules; not the row,
        which is the source's, nor the source's journal entries."""
        self.sessions.close_session()
        self.process.kill_all(rec)
        self.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
        stopped = dataclasses.replace(rec, running_spec=None)
        self.resources.sync_firewall(stopped)  # its rules go with its TAPs
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.device_handover import (
            release_claims_here,
        )

        release_claims_here(self.store, rec.uuid, self.host_id)  # its display port and CID here, not the source's
        self.resources.apart.discard(rec.uuid)

    # -- stopping ---------------------------------------------------------------------
    def stop(self, rec: VmRecord, timeout: float, force: bool, qemu_status: Optional[str] = None) -> None:
        """Power the guest off through ACPI; with force, quit/kill it after the timeout.
        A timeout of 0 waits for nothing: forced, QEMU is ended at once (no power button);
        not forced, a guest that is not off fails at once, untouched.
        ``qemu_status`` saves a QMP round trip when the caller has just asked QEMU."""
        rec.qemu_pid = self.process.live_pid(rec)
        if rec.qemu_pid is not None:
            self.check_not_migrating(rec)  # shut_down lets a paused guest run to see the button
            self.process.shut_down(rec, timeout, force, qemu_status, self.sessions)
        self.resources.release_files(rec, keep_serial_log=True)
        self._mark_stopped(rec)

    def reconcile(self, rec: VmRecord, state: str) -> bool:
        """Bring the row in line with what runs (a guest that powered itself off, a run
        that could not save its result). Returns whether the row was rewritten."""
        pid = self.process.live_pid(rec) if state != STOPPED else None
        started = start_ticks(pid, self.host_paths.proc)
        if rec.status == state and rec.qemu_pid == pid and rec.qemu_started == started:
            return False
        if state == STOPPED and rec.status == CRASHED and rec.running_spec is None:
            return False  # the monitor cleaned it up and said why
        if state == STOPPED:
            self.resources.release_files(rec, keep_serial_log=True)
            self._mark_stopped(rec)  # a crashed VM's rules go with its TAPs
            return True
        rec.status, rec.qemu_pid, rec.qemu_started = state, pid, started
        records.save(self.store, rec)
        return True

    def clean_up_dead(self, rec: VmRecord, status: str, events: Optional[Callable[[], List[dict]]] = None) -> None:
        """After QEMU died (``status`` crashed) or its guest powered off (stopped): its files,
        TAPs and rules go, the serial log stays (it tells why), the row says ``status``.
        ``events()`` (the host monitor's) are written with the row, in one transaction."""
        self.resources.release_files(rec, keep_serial_log=True)
        self._mark_stopped(rec, status, events)

    def _mark_stopped(
        self, rec: VmRecord, status: str = STOPPED, events: Optional[Callable[[], List[dict]]] = None
    ) -> None:
        """The row says stopped (or crashed) last: a task killed before that leaves a row
        that still says running, so the next one finishes the job (files, TAPs, then the
        firewall)."""
        self.sessions.close_session()  # its QEMU is gone
        if (rec.running_spec or rec.spec).graphics_type != "none":
            self.store.release_host_claims(rec.uuid, "display port")  # display_port.CLAIM_DISPLAY
        rec.status = status
        rec.qemu_pid = rec.qemu_started = None
        rec.running_spec = None
        rec.launch_accel = rec.launch_cpu = rec.launch_graphics_port = None
        self.resources.sync_firewall(rec)  # the VM's rules go with its TAPs
        records.save(self.store, rec, events() if events is not None else None)

    def check_not_migrating(self, rec: VmRecord) -> None:
        """A guest a migration from here left unfinished (its task was cut off) must not run
        here again before the request is settled: the target may take it over meanwhile,
        and two running copies corrupt its disks. infinivirt_migrate settles it (one store
        read, on the acting paths only)."""
        found = self.store.get_handover(rec.uuid)
        if found is not None and found["source"] == self.host_id and found["state"] in UNFINISHED:
            raise StateError(
                "VM %s has an unfinished migration to %s (request %s, its task was cut off): run "
                "infinivirt.core.infinivirt_migrate on it again to finish or abort it first"
                % (rec.name, found["target"], found["state"])
            )

    # -- pausing ----------------------------------------------------------------------
    def pause(self, rec: VmRecord) -> None:
        self.sessions.qmp(rec, "stop")
        rec.status = PAUSED
        records.save(self.store, rec)

    def resume(self, rec: VmRecord) -> None:
        self.check_not_migrating(rec)
        status = self.sessions.query_status(rec)
        if status in MIGRATED_AWAY:  # only the migration's own recovery may (vm/engine/outgoing.py)
            raise StateError(
                "VM %s is paused by a migration (QEMU status %s): the guest may run on another host, or "
                "its memory may be split by a failed post-copy migration, so it is not resumed here; "
                "see its events (infinivirt_vm_info), then stop it (force: true) and start it again"
                % (rec.name, status)
            )
        self.sessions.qmp(rec, "cont")
        rec.status = RUNNING
        records.save(self.store, rec)


DISPLAY_ATTEMPTS = 3  # starts of one task when QEMU could not bind the claimed display port
# QEMU's words when the -vnc or -spice port is bound already.
_DISPLAY_BIND_ERRORS = ("Failed to find an available port", "Failed to open SPICE sockets")


def _display_bind_failed(stderr: str) -> bool:
    return any(words in (stderr or "") for words in _DISPLAY_BIND_ERRORS)


class _DisplayPortTaken(Exception):
    """A start that failed only because its claimed display port was bound meanwhile."""

    def __init__(self, port: int, error: Exception):
        super().__init__(str(error))
        self.port, self.error = port, error
