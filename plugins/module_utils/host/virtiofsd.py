# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""virtiofsd processes (one per shared directory of a VM): found, started on a socket, ended.

A daemon is known by its ``--socket-path=<socket>`` argument (the socket is the VM's and the
share's own), so no pidfile is needed. It ends by itself when its QEMU disconnects; ``stop``
ends one that is left (a start that failed before QEMU connected).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import stat
import subprocess
import tempfile
import time
from typing import Callable, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    process_carries,
    processes_carrying,
    wait_until_gone,
)

# The Rust daemon first (Debian 13 and later), then QEMU 7.2's C one (Debian 12).
BINARIES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000
# mount_setattr(2) (Linux 5.12; one number on every architecture since 5.1's table merge):
# read-only for a mount and every mount below it, in one call.
_SYS_MOUNT_SETATTR, _AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def binary(candidates: Sequence[str] = BINARIES) -> str:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise QemuError(
        "shared_dirs needs virtiofsd (%s); install the virtiofsd package, or qemu-system-common "
        "on Debian 12" % " or ".join(candidates)
    )


def marker(socket_path: str) -> str:
    return "--socket-path=%s" % socket_path


def start(argv: List[str], socket_path: str, readonly_source: Optional[str] = None) -> int:
    """Run virtiofsd in a session of its own and wait until its socket listens; its PID.
    ``readonly_source``: serve that directory through a read-only bind mount in a mount
    namespace of the daemon's own (for a daemon with no read-only mode)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    preexec = _readonly_bind(readonly_source) if readonly_source else None
    with tempfile.TemporaryFile() as errors:  # unlinked: nothing left behind, read on failure
        try:
            proc = subprocess.Popen(  # noqa: PLW1509 - preexec only makes a mount namespace
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise QemuError("cannot run %s: %s" % (argv[0], exc)) from exc
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and not _is_socket(socket_path):
            if time.monotonic() > deadline:
                stop(socket_path)
                raise QemuError("virtiofsd made no socket %s within %g s" % (socket_path, START_TIMEOUT))
            time.sleep(0.01)
        if proc.poll() is not None:
            errors.seek(0)
            text = errors.read(4096).decode("utf-8", "replace").strip()
            raise QemuError("virtiofsd exited (status %s): %s" % (proc.returncode, text or "no message"))
        return proc.pid


def stop(socket_path: str, timeout: float = STOP_TIMEOUT) -> List[int]:
    """End every virtiofsd of this socket (SIGTERM, then SIGKILL) and remove the socket.
    Looked for again after each round: QEMU 7.2's C daemon is a parent and its sandboxed
    child, and one seen in the middle of its exit or fork was missed by a single look."""
    token, ended = marker(socket_path), []
    for _round in range(3):
        found = processes_carrying(token)
        if not found:
            break
        ended += [pid for pid in _end_all(found, token, timeout) if pid not in ended]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    return ended


def _end_all(pids: List[int], token: str, timeout: float) -> List[int]:
    ended = []
    for pid in pids:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not process_carries(pid, token):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if wait_until_gone(pid, token, timeout, owned=process_carries):
                break
        else:
            raise QemuError("virtiofsd (PID %d) did not exit after SIGKILL" % pid)
        with contextlib.suppress(ChildProcessError):  # started by this process: no zombie left
            os.waitpid(pid, os.WNOHANG)
        ended.append(pid)
    return ended


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _readonly_bind(source: str) -> Callable[[], None]:
    """For the child before exec: a private mount namespace where ``source`` is a read-only
    bind mount of itself, the mounts below it read-only too (a share's read-only must not
    stop at a file system mounted inside it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    attr = _MountAttr(attr_set=_MOUNT_ATTR_RDONLY)  # made before the fork: the child only calls

    def preexec() -> None:
        path = os.fsencode(source)
        steps = (
            lambda: libc.unshare(_CLONE_NEWNS),
            lambda: libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None),
            lambda: libc.mount(path, path, None, _MS_BIND | _MS_REC, None),
            lambda: libc.syscall(  # typed: syscall(2) is variadic, the size a full size_t
                ctypes.c_long(_SYS_MOUNT_SETATTR),
                ctypes.c_int(_AT_FDCWD),
                path,
                ctypes.c_uint(_AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
        )
        for step in steps:
            if step() != 0:
                err = ctypes.get_errno()
                raise OSError(err, "read-only bind mount of %s: %s" % (source, os.strerror(err)))

    return preexec
