# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qemu-storage-daemon with a QMP socket: the block layer of QEMU without a guest, so a
stopped VM's images get the same QMP block jobs (and persistent dirty bitmaps) as a
running one's. Block nodes and secrets go in as JSON ``--blockdev``/``--object``; a key
file is a descriptor the daemon inherits (host/secret_fd.py), never argv."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any, Dict, Iterator, List, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession

START_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _binary() -> str:
    found = shutil.which("qemu-storage-daemon") or (
        "/usr/bin/qemu-storage-daemon" if os.path.exists("/usr/bin/qemu-storage-daemon") else None
    )
    if found is None:
        raise QemuError("qemu-storage-daemon is not installed on this host (Debian/Ubuntu package qemu-system-common)")
    return found


@contextlib.contextmanager
def storage_daemon(
    socket_path: str,
    name: str,
    blockdevs: Sequence[Dict[str, Any]],
    objects: Sequence[Dict[str, Any]] = (),
    pass_fds: Sequence[int] = (),
) -> Iterator[QmpSession]:
    """A daemon serving ``blockdevs`` and a QMP session with it; on the way out it is asked
    to quit (persistent bitmaps are written to the images as the nodes close) and waited for."""
    argv: List[str] = [_binary()]
    for obj in objects:
        argv += ["--object", json.dumps(obj)]
    for node in blockdevs:
        argv += ["--blockdev", json.dumps(node)]
    argv += ["--chardev", "socket,id=qmp,path=%s,server=on,wait=off" % _escape(socket_path), "--monitor", "chardev=qmp"]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    proc = subprocess.Popen(  # noqa: S603  # an argv list
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=tuple(pass_fds),
        preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509  # only prctl and getppid run in the child
    )
    try:
        _wait_socket(proc, socket_path)
        with QmpSession(socket_path, name, START_TIMEOUT) as qmp:
            yield qmp
            qmp.execute("quit")
        proc.wait(timeout=60)
        if proc.returncode:
            raise QemuError("qemu-storage-daemon for %s ended with status %d" % (name, proc.returncode))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


def _die_with(parent: int):
    """A preexec function: the daemon gets SIGKILL when the task's process ends, also when
    that is killed (SIGKILL), so no daemon is left holding the images' locks."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before prctl
            os._exit(1)

    return child


def _accepts(socket_path: str) -> bool:
    if not os.path.exists(socket_path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socket_path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _escape(value: str) -> str:
    """A value inside QEMU's key=value,... syntax: commas doubled."""
    return value.replace(",", ",,")


def _wait_socket(proc: "subprocess.Popen[bytes]", socket_path: str) -> None:
    """Until the daemon accepts on its QMP socket: the file exists from bind(), a moment
    before listen(), and a connect in between is refused."""
    deadline = time.monotonic() + START_TIMEOUT
    while not _accepts(socket_path):
        if proc.poll() is not None:
            err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
            raise QemuError("qemu-storage-daemon could not start: %s" % (" ".join(err.split()) or proc.returncode))
        if time.monotonic() > deadline:
            raise QemuError("qemu-storage-daemon did not open its QMP socket within %g s" % START_TIMEOUT)
        time.sleep(0.02)
