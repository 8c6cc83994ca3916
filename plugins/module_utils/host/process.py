# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU processes on this host: start daemonized, tell whether one is alive, end it.

A VM counts as running only when its pidfile names a live qemu-system process started with
``-uuid`` and the VM's UUID: PIDs are reused, another program may mention the UUID, and on
hosts where PID 1 reaps slowly an exited QEMU lingers as a zombie, which counts as dead. Only
such a process is ever signalled.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from typing import Callable, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError

DEAD_STATES = ("Z", "X", "x")
PIDFD_RECHECK = 0.25  # wait_until_gone looks at /proc at least this often


def read_pidfile(path: str) -> Optional[int]:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_pidfile(path: str) -> Tuple[Optional[int], Optional[int]]:
    """Make this process the one holder of ``path`` (a long-lived service such as the host
    monitor): (fd, None) with an exclusive flock held on the fd for as long as it stays open
    and the file saying {"pid", "cmdline"}, or (None, holder's PID) when a live process holds
    it. The lock, not the PID, says who runs; the command line lets another program (the
    role's supervisor) check a PID before it signals it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = json.loads(os.read(fd, 65536).decode("utf-8", "replace")).get("pid")
        except (ValueError, AttributeError):
            holder = None  # still being written
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None, holder
        raise
    cmdline = [arg.decode("utf-8", "surrogateescape") for arg in _cmdline(os.getpid(), "/proc")]
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "cmdline": cmdline}).encode("utf-8", "surrogateescape"), 0)
    return fd, None


def process_state(pid: int, proc_root: str = "/proc") -> Optional[str]:
    """The one-letter state from /proc/PID/stat, or None when there is no such process."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat")) as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0] or None


def _threads_left(pid: int, proc_root: str) -> bool:
    """A zombie leader may still have threads tearing down, holding QEMU's sockets and
    image locks for some milliseconds."""
    try:
        tasks = os.listdir(os.path.join(proc_root, str(pid), "task"))
    except OSError:
        return False
    return any(task != str(pid) for task in tasks)


def _holds(pid: Optional[int], proc_root: str, match: Callable[[int, List[bytes]], bool]) -> bool:
    """Whether ``pid`` is a live process whose arguments ``match``. A zombie's cmdline reads
    empty; while its threads live it still holds its resources, so it counts."""
    if not pid:
        return False
    state = process_state(pid, proc_root)
    if state is None:
        return False
    if state in DEAD_STATES:
        return _threads_left(pid, proc_root)
    return match(pid, _cmdline(pid, proc_root))


def process_carries(pid: Optional[int], marker: str, proc_root: str = "/proc") -> bool:
    """Whether a live process carries ``marker`` as one of its arguments (how dnsmasq of a
    network is known)."""
    return _holds(pid, proc_root, lambda _pid, args: marker.encode() in args)


def _is_qemu(pid: int, args: List[bytes], proc_root: str) -> bool:
    """The executable is a qemu-system binary (by /proc/PID/exe; by argv[0] where the link
    cannot be read)."""
    try:
        exe = os.readlink(os.path.join(proc_root, str(pid), "exe"))
    except OSError:
        exe = args[0].decode("utf-8", "replace") if args else ""
    return os.path.basename(exe.replace(" (deleted)", "")).startswith("qemu-system")


def process_runs_vm(pid: Optional[int], uuid: str, proc_root: str = "/proc") -> bool:
    """Whether ``pid`` is this VM's QEMU: a qemu-system executable started with ``-uuid
    UUID``. Anything else (another program, or one that merely mentions the UUID) is not."""
    wanted = uuid.encode()

    def match(live_pid: int, args: List[bytes]) -> bool:
        has_uuid = any(a == b"-uuid" and b == wanted for a, b in zip(args, args[1:]))
        return has_uuid and _is_qemu(live_pid, args, proc_root)

    return _holds(pid, proc_root, match)


def vm_processes(uuid: str, proc_root: str = "/proc", pidfile: Optional[str] = None) -> List[int]:
    """Every live QEMU started for this VM; with ``pidfile``, only those started to write it
    (``-pidfile PATH``): this host's, when a migration target on the same machine runs the
    same UUID from another run dir."""
    found = [int(e) for e in os.listdir(proc_root) if e.isdigit() and process_runs_vm(int(e), uuid, proc_root)]
    if pidfile is None:
        return found
    wanted = [b"-pidfile", pidfile.encode()]
    return [pid for pid in found if _has_pair(_cmdline(pid, proc_root), wanted)]


def _has_pair(args: List[bytes], pair: List[bytes]) -> bool:
    return any(args[i : i + 2] == pair for i in range(len(args) - 1))


def processes_carrying(marker: str, proc_root: str = "/proc") -> List[int]:
    """Every live process that carries ``marker`` as an argument (a network's dnsmasq)."""
    return [int(e) for e in os.listdir(proc_root) if e.isdigit() and process_carries(int(e), marker, proc_root)]


def _cmdline(pid: int, proc_root: str) -> List[bytes]:
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as fh:
            return [arg for arg in fh.read().split(b"\0") if arg]
    except OSError:
        return []


def _exists(pid: int, proc_root: str) -> bool:
    """Whether the process still holds anything: a zombie whose threads are gone does not."""
    state = process_state(pid, proc_root)
    if state is None:
        return False
    return _threads_left(pid, proc_root) if state in DEAD_STATES else True


def holds_file(pid: Optional[int], path: str, proc_root: str = "/proc") -> bool:
    """Whether process ``pid`` has the file at ``path`` (the entry itself, not followed)
    open, by any of its descriptors."""
    try:
        wanted = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    fd_dir = os.path.join(proc_root, str(pid), "fd")
    try:
        names = os.listdir(fd_dir) if pid else []
    except OSError:
        return False
    for name in names:
        try:
            held = os.stat(os.path.join(fd_dir, name))
        except OSError:
            continue  # closed meanwhile
        if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
            return True
    return False


def wait_until_gone(
    pid: int,
    uuid: str,
    timeout: float,
    proc_root: str = "/proc",
    interval: float = 0.005,
    owned: Callable[[int, str, str], bool] = process_runs_vm,
) -> bool:
    """Wait for a process known to be this VM's (``owned`` says how it is known) to end.
    Not by its command line: an exiting process reads an empty one before it becomes a
    zombie. On this host's /proc the kernel wakes the wait when the process ends (pidfd);
    elsewhere it polls every ``interval`` s."""
    # Another program only if its command line reads the same after the check: an exiting
    # QEMU's reads empty mid-check, and it must still be waited for.
    if _cmdline(pid, proc_root) and not owned(pid, uuid, proc_root) and _cmdline(pid, proc_root):
        return True  # the PID already belongs to another program
    deadline = time.monotonic() + timeout
    pidfd = _pidfd(pid) if proc_root == "/proc" else None
    try:
        while _exists(pid, proc_root):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if pidfd is None:
                time.sleep(min(interval, left))
            # Readable once every thread has exited, which is when _exists turns false. Each
            # wait is bounded so a state the two see differently is looked at again.
            elif _readable(pidfd, min(left, PIDFD_RECHECK)) and _exists(pid, proc_root):
                os.close(pidfd)  # it stays readable: poll from here on
                pidfd = None
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(1, int(timeout * 1000))))


def _pidfd(pid: int) -> Optional[int]:
    """A descriptor that becomes readable when ``pid`` ends; None where the kernel (before
    5.3) or Python has none, or the process is gone already."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def kill_vm_process(pid: int, uuid: str, proc_root: str = "/proc", timeout: float = 10.0) -> None:
    """SIGKILL the process if (and only if) it still is this VM's QEMU."""
    if process_runs_vm(pid, uuid, proc_root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if not wait_until_gone(pid, uuid, timeout, proc_root):
            raise QemuError("QEMU process %d did not exit after SIGKILL" % pid)


def run_daemonized(
    argv: List[str], timeout: float, preexec: Optional[Callable[[], None]] = None, pass_fds: Sequence[int] = ()
) -> Tuple[int, str]:
    """Run a command that daemonizes itself (QEMU -daemonize): it returns once the VM is
    set up, with stderr holding QEMU's own error message when it failed. ``preexec`` runs
    in the child before exec (e.g. to enter a network namespace); ``pass_fds`` stay open in
    it (secrets it reads as /proc/self/fd/N)."""
    try:
        done = subprocess.run(  # noqa: PLW1509
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
            preexec_fn=preexec,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired:
        return -1, "QEMU did not finish starting within %g s" % timeout
    except OSError as exc:
        return -1, str(exc)
    return done.returncode, done.stderr.decode("utf-8", "replace").strip()
