# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's software TPM: one ``swtpm socket --tpm2`` per VM, daemonized before QEMU starts.

QEMU's tpm-emulator backend talks to swtpm over its control socket; ``--terminate`` ends
swtpm when QEMU closes that connection, and the VM engine ends it as well (a QEMU that never
connected). A swtpm is known by its pidfile argument (``file=<pidfile>``), so only this VM's
is ever signalled.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
from typing import List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    process_carries,
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
    log: str

    @property
    def marker(self) -> str:
        """The argument that names this swtpm in its command line."""
        return "file=" + self.pidfile


def argv(program: str, files: SwtpmFiles) -> List[str]:
    for path in (files.state_dir, files.socket, files.pidfile, files.log):
        if "," in path:  # swtpm's own key=value syntax has no escape
            raise SpecError("tpm", "swtpm cannot take a path with a comma: %s" % path)
    return [
        program,
        "socket",
        "--tpm2",
        "--tpmstate",
        "dir=%s,mode=0600" % files.state_dir,
        "--ctrl",
        "type=unixio,path=%s,mode=0600" % files.socket,
        "--pid",
        files.marker,
        "--log",
        "file=%s,level=1" % files.log,
        "--daemon",
        "--terminate",
    ]


def live_pid(files: SwtpmFiles) -> Optional[int]:
    pid = read_pidfile(files.pidfile)
    return pid if process_carries(pid, files.marker) else None


def start(files: SwtpmFiles, preexec=None) -> int:
    """Start the VM's swtpm (a stale one of a crashed run is ended first); its PID once its
    socket exists. QemuError with swtpm's message when it fails."""
    stop(files)
    program = binary()
    if program is None:
        raise SpecError("tpm", "this host has no swtpm (install the swtpm package)")
    for path in (files.socket, files.pidfile):
        if os.path.lexists(path):
            os.unlink(path)
    rc, stderr = run_daemonized(argv(program, files), START_TIMEOUT, preexec)
    pid = live_pid(files)
    if rc != 0 or pid is None or not os.path.exists(files.socket):
        raise QemuError("swtpm failed to start (exit %d): %s%s" % (rc, stderr or "no message", _log_tail(files.log)))
    return pid


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
        owned = lambda p, marker, _root: process_carries(p, marker)  # noqa: E731
        if wait_until_gone(pid, files.marker, timeout, owned=owned):
            return pid
    raise QemuError("swtpm process %d did not exit after SIGKILL" % pid)


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            text = handle.read()[-400:].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return " (log: %s)" % text if text else ""
