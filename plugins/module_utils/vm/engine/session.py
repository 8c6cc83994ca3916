# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The QMP sessions of a task with the VMs' QEMUs: commands, QEMU's run state, the display.

QEMU serves one QMP client per monitor: a task holds one connection (one_session) and
closes it before it waits for a guest, so that others may ask QEMU too.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuUnresponsive, QmpError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_state, wait_until_gone
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import QemuProcess
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import fold_status

DYING_GRACE = 2.0  # how long a QEMU that refused QMP may take to be gone, when it is ending
STOPPED_STATES = ("T", "t")  # /proc/PID/stat: stopped by a signal or traced


class QmpSessions:
    """QMP with the VMs ``process`` runs, within ``qmp_timeout`` unless told otherwise."""

    def __init__(self, process: QemuProcess, qmp_timeout: float = 10.0):
        self.process = process
        self.qmp_timeout = qmp_timeout
        self._holding = 0  # depth of one_session() blocks
        self._held: Optional[Tuple[str, QmpSession]] = None  # (socket path, open session)

    def query_status(self, rec: VmRecord, timeout: Optional[float] = None) -> Optional[str]:
        """QEMU's own run state (query-status), or None when no process runs. A live QEMU
        that cannot answer raises QemuUnresponsive at once when it is stopped (SIGSTOP, a
        debugger), else after ``timeout`` (default: qmp_timeout)."""
        pid = self.process.live_pid(rec)
        if pid is None:
            return None
        proc = self.process.host_paths.proc
        if process_state(pid, proc) in STOPPED_STATES:
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
            if wait_until_gone(pid, rec.uuid, DYING_GRACE, proc):
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

    # -- the display --------------------------------------------------------------------
    def setup_vnc(self, rec: VmRecord, password: Optional[str]) -> int:
        """Set the password (if any) and return the port QEMU listens on."""
        if password is not None:
            self.set_graphics_password(rec, password)
        return int(self.qmp(rec, "query-vnc")["service"])

    def setup_spice(self, rec: VmRecord, password: Optional[str]) -> int:
        """SPICE's like VNC's: the password (ticketing refuses everyone until it is set)."""
        if password is not None:
            self.set_graphics_password(rec, password)
        info = self.qmp(rec, "query-spice")
        return int(info.get("tls-port") or info["port"])

    def set_graphics_password(self, rec: VmRecord, password: str) -> None:
        """Also works live; open sessions keep going (QEMU cannot drop VNC clients). The
        protocol is the running display's."""
        protocol = (rec.running_spec or rec.spec).graphics_type
        self.qmp(rec, "set_password", {"protocol": protocol, "password": password})
