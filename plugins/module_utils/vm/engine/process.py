# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One VM's QEMU process: where its files are, whether it runs, spawning it and ending it.

A VM runs only if its pidfile names a live process whose command line carries the VM's
UUID (PID reuse is real). Ending it: ACPI power button (``system_powerdown``), then, only
with force, ``quit`` and SIGKILL.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    QemuUnresponsive,
    QmpError,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    kill_vm_process,
    process_runs_vm,
    read_pidfile,
    run_daemonized,
    vm_processes,
    wait_until_gone,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import HostPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the trailing NUL
POWERDOWN_RESEND = 5.0  # a guest still booting has not opened its power button yet
QUIT_GRACE = 5.0
# A guest a migration stream paused (the stream completed, or post-copy switched): it may
# run on another host, or its memory may be split between two; it never runs here again.
MIGRATED_AWAY = ("postmigrate", "finish-migrate")
UNRESPONSIVE = "unresponsive"  # a live QEMU that does not answer QMP (query_status raised)


@dataclasses.dataclass(frozen=True)
class VmPaths:
    pidfile: str
    qmp_socket: str
    serial_log: str
    console_socket: str
    events_socket: str  # the host monitor's own QMP monitor
    event_log: str  # QEMU's events in a file (<event_log>.out), see launch.EVENT_LOG_INPUT
    guest_agent_socket: str  # the guest agent's channel (guest_agent: true)

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
            guest_agent_socket=base + ".qga",  # as short as .qmp
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

    def journal(self, console: bool = False, agent: bool = False) -> List[tuple]:
        files = [
            ("pidfile", self.pidfile),
            ("qmp_socket", self.qmp_socket),
            ("events_socket", self.events_socket),
            ("serial_log", self.serial_log),
            ("event_log", self.event_log + ".in"),
            ("event_log", self.event_log + ".out"),
        ]
        files += [("guest_agent_socket", self.guest_agent_socket)] if agent else []
        return files + ([("console_socket", self.console_socket)] if console else [])


class QemuProcess:
    """The QEMU processes of the VMs under ``run_dir``, seen through ``host_paths.proc``."""

    def __init__(self, run_dir: str, host_paths: HostPaths = HostPaths(), start_timeout: float = 60.0):
        self.run_dir = run_dir
        self.host_paths = host_paths
        self.start_timeout = start_timeout

    def pidfile(self, rec: VmRecord) -> str:
        return rec.pidfile_path or VmPaths.for_vm(self.run_dir, rec.uuid).pidfile

    def live_pid(self, rec: VmRecord) -> Optional[int]:
        """The PID of this VM's QEMU, from its pidfile, if that process really is it."""
        pid = read_pidfile(self.pidfile(rec))
        return pid if process_runs_vm(pid, rec.uuid, self.host_paths.proc) else None

    def is_alive(self, rec: VmRecord) -> bool:
        return self.live_pid(rec) is not None

    def spawn(self, argv: List[str], preexec: Optional[Callable[[], None]], pass_fds: Sequence[int]) -> Tuple[int, str]:
        """Run QEMU daemonized; its exit code and stderr (host.process.run_daemonized)."""
        return run_daemonized(argv, self.start_timeout, preexec, pass_fds=pass_fds)

    def kill_all(self, rec: VmRecord) -> None:
        """Kill this VM's QEMU (ours only): every QEMU with the VM's UUID started to write this
        host's pidfile (``-pidfile`` in its command line), also one that timed out before it
        wrote it. What a pidfile says is not enough: the pidfile keeps a migration's other
        side apart, even on one machine (another run dir), so a target that gives up, or a
        source that cleans up after the handover, never kills the other host's QEMU."""
        for pid in vm_processes(rec.uuid, self.host_paths.proc, self.pidfile(rec)):
            kill_vm_process(pid, rec.uuid, self.host_paths.proc)

    def shut_down(self, rec: VmRecord, timeout: float, force: bool, qemu_status: Optional[str], sessions) -> None:
        """End the running QEMU ``rec.qemu_pid`` as engine.Engine.stop says, talking to it
        through ``sessions`` (session.QmpSessions)."""
        try:
            status = qemu_status or sessions.query_status(rec)
        except QemuUnresponsive:
            if not force:
                raise
            status = UNRESPONSIVE
        if status == UNRESPONSIVE:  # forced: it cannot quit when asked, so it is killed
            kill_vm_process(rec.qemu_pid, rec.uuid, self.host_paths.proc)
        elif status is None:
            pass  # it ended between our checks
        elif status == "prelaunch":  # the guest never ran: nothing to shut down
            self._quit(rec, sessions)
        elif status in MIGRATED_AWAY:  # never let it run here again to see the button
            self._quit(rec, sessions)
        elif timeout <= 0 and force:
            self._quit(rec, sessions)
        elif timeout <= 0:
            raise StateError(
                "VM %s is not off (QEMU status %s) and stop_timeout is 0, so the guest gets no "
                "time to power off; give stop_timeout the seconds it needs, or set force: true "
                "to end it at once" % (rec.name, status)
            )
        else:
            if status != "running":
                sessions.qmp(rec, "cont")  # a paused guest cannot see the power button
            if not self._powerdown(rec, timeout, sessions):
                if not force:
                    raise StateError(
                        "VM %s did not power off within stop_timeout=%g s after the ACPI "
                        "power button; raise stop_timeout, or set force: true to end it "
                        "anyway" % (rec.name, timeout)
                    )
                self._quit(rec, sessions)

    def _powerdown(self, rec: VmRecord, timeout: float, sessions) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sessions.qmp(rec, "system_powerdown")
            except QmpError:
                if not self.is_alive(rec):
                    return True  # it went away between our checks
                raise
            sessions.close_session()  # not held while the guest takes its time
            resend_at = min(deadline, time.monotonic() + POWERDOWN_RESEND)
            if wait_until_gone(rec.qemu_pid, rec.uuid, resend_at - time.monotonic(), self.host_paths.proc):
                return True
            if time.monotonic() >= deadline:
                return False

    def _quit(self, rec: VmRecord, sessions) -> None:
        try:
            sessions.qmp(rec, "quit")
        except QmpError:
            pass  # fall through to SIGKILL
        if not wait_until_gone(rec.qemu_pid, rec.uuid, QUIT_GRACE, self.host_paths.proc):
            kill_vm_process(rec.qemu_pid, rec.uuid, self.host_paths.proc)
