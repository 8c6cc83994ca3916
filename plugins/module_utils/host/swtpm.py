# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's software TPM: one ``swtpm socket --tpm2`` per VM, daemonized before QEMU starts.

QEMU's tpm-emulator backend talks to swtpm over its control socket; ``--terminate`` ends
swtpm when QEMU closes that connection, and the VM engine ends it as well (a QEMU that never
connected). swtpm's option syntax has no escape for a comma, so no path reaches its argv:
the socket is bound here and handed over (``fd=``), the pidfile likewise, and the state
directory is an open descriptor (``dir=/proc/self/fd/N``). A swtpm is known as this VM's by
its executable and that directory held open, so only this VM's is ever signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
from typing import List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    holds_file,
    process_state,
    read_pidfile,
    run_daemonized,
    wait_until_gone,
)

SWTPM = "/usr/bin/swtpm"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def binary() -> Optional[str]:
    return SWTPM if os.access(SWTPM, os.X_OK) else shutil.which("swtpm")


@dataclasses.dataclass(frozen=True)
class SwtpmFiles:
    state_dir: str  # the TPM's persistent state (kept with the VM, 0700)
    socket: str  # control socket QEMU connects to
    pidfile: str


def argv(program: str, state_fd: int, ctrl_fd: int, pid_fd: int) -> List[str]:
    return [
        program,
        "socket",
        "--tpm2",
        "--tpmstate",
        "dir=/proc/self/fd/%d,mode=0600" % state_fd,
        "--ctrl",
        "type=unixio,fd=%d" % ctrl_fd,
        "--pid",
        "fd=%d" % pid_fd,
        "--daemon",
        "--terminate",
    ]


def is_ours(pid: Optional[int], state_dir: str) -> bool:
    """A live swtpm that holds ``state_dir`` open."""
    if not pid or process_state(pid) in (None, "Z", "X", "x"):
        return False
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return False
    return os.path.basename(exe.replace(" (deleted)", "")) == "swtpm" and holds_file(pid, state_dir)


def live_pid(files: SwtpmFiles) -> Optional[int]:
    pid = read_pidfile(files.pidfile)
    return pid if is_ours(pid, files.state_dir) else None


def start(files: SwtpmFiles) -> int:
    """Start the VM's swtpm (a stale one of a crashed run is ended first); its PID, its
    socket listening. QemuError with swtpm's message when it fails."""
    stop(files)
    program = binary()
    if program is None:
        raise SpecError("tpm", "this host has no swtpm (install the swtpm package)")
    for path in (files.socket, files.pidfile):
        if os.path.lexists(path):
            os.unlink(path)
    try:
        rc, stderr = _spawn(program, files)
    except OSError as exc:
        raise QemuError("swtpm cannot start: %s" % exc) from exc
    pid = live_pid(files)
    if rc != 0 or pid is None:
        raise QemuError("swtpm failed to start (exit %d): %s" % (rc, stderr or "no message"))
    return pid


def _spawn(program: str, files: SwtpmFiles):
    with contextlib.ExitStack() as stack:
        state_fd = os.open(files.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        stack.callback(os.close, state_fd)
        pid_fd = os.open(files.pidfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        stack.callback(os.close, pid_fd)
        ctrl = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        ctrl.bind(files.socket)
        os.chmod(files.socket, 0o600)
        ctrl.listen(1)
        fds = (state_fd, ctrl.fileno(), pid_fd)
        return run_daemonized(argv(program, *fds), START_TIMEOUT, pass_fds=fds)


def stop(files: SwtpmFiles, timeout: float = STOP_TIMEOUT) -> Optional[int]:
    """End this VM's swtpm if one runs (SIGTERM, then SIGKILL); the PID it had, or None."""
    pid = live_pid(files)
    if pid is None:
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        if wait_until_gone(pid, files.state_dir, timeout, owned=lambda p, state, _root: is_ours(p, state)):
            return pid
    raise QemuError("swtpm process %s did not exit after SIGKILL" % pid)
