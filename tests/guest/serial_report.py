# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parse what the infinivirt test guest prints on its serial console.

The guest's /init (init.sh) prints lines ``INFINIVIRT <event> key=value ...``;
see README.md for the protocol.  Kernel messages may be interleaved on the same
console, so lines are found with a regex search and everything else is ignored.

Standard library only, Python 3.9+.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = [
    "GuestBootError",
    "GuestReport",
    "channel_command",
    "parse_report",
    "wait_for_event",
    "wait_for_ready",
]

# "INFINIVIRT " (not "INFINIVIRT-END"), an event word, then whitespace-separated tokens.
_LINE_RE = re.compile(r"INFINIVIRT ([a-z][a-z0-9_]*)((?:[ \t]+\S+)*)")
_END_RE = re.compile(r"INFINIVIRT-END rc=(-?\d+)")
_INT_KEYS = frozenset(
    {
        "size_bytes",
        "ro",
        "queues_rx",
        "queues_tx",
        "mtu",
        "count",
        "system_ram_kib",
        "memtotal_kib",
        "memfree_kib",
    }
)
_PANIC_RE = re.compile(r"Kernel panic - not syncing[^\n]*")


class GuestBootError(RuntimeError):
    """The guest reported an error (or panicked) instead of becoming ready."""


@dataclasses.dataclass
class GuestReport:
    """The guest's report.  disks/nics are dicts of the line's key=value pairs,
    with numeric values (size_bytes, ro, queues_rx, queues_tx, mtu) as int."""

    kernel: str = ""
    cpus_online_count: int = 0
    cpus_online: str = ""
    cpus_present: str = ""
    cpus_possible: str = ""
    system_ram_kib: int = 0
    memtotal_kib: int = 0
    memfree_kib: int = 0
    firmware: str = ""
    disks: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    nics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    pcinics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # PCI network cards
    modules_loaded: List[str] = dataclasses.field(default_factory=list)
    modules_failed: List[str] = dataclasses.field(default_factory=list)
    channel: Optional[str] = None
    power_button: Optional[str] = None
    uptime_s: Optional[float] = None
    errors: List[str] = dataclasses.field(default_factory=list)
    ready: bool = False
    poweroff: bool = False
    raw: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def disk(self, name: Optional[str] = None, serial: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The first disk matching name and/or serial, else None."""
        for d in self.disks:
            if (name is None or d.get("name") == name) and (serial is None or d.get("serial") == serial):
                return d
        return None

    def nic(self, name: Optional[str] = None, mac: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The first NIC matching name and/or MAC (case-insensitive), else None."""
        for n in self.nics:
            if (name is None or n.get("name") == name) and (
                mac is None or str(n.get("mac", "")).lower() == mac.lower()
            ):
                return n
        return None


def _parse_line(line: str) -> Optional[Dict[str, Any]]:
    m = _LINE_RE.search(line)
    if not m:
        return None
    entry: Dict[str, Any] = {"event": m.group(1)}
    args: List[str] = []
    for token in m.group(2).split():
        key, sep, value = token.partition("=")
        if sep and key:
            entry[key] = value
        else:
            args.append(token)
    if args:
        entry["args"] = args
    return entry


def _typed(entry: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in entry.items():
        if k == "event":
            continue
        if k in _INT_KEYS and isinstance(v, str) and re.fullmatch(r"-?\d+", v):
            v = int(v)
        out[k] = v
    return out


def _upsert(items: List[Dict[str, Any]], item: Dict[str, Any]) -> None:
    for i, old in enumerate(items):
        if old.get("name") == item.get("name"):
            items[i] = item
            return
    items.append(item)


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def parse_report(text: str) -> GuestReport:
    """Parse the guest's INFINIVIRT lines out of console text.

    A "boot" line starts a new report (a later boot in the same log wins).
    Lines that appear more than once for the same disk/NIC name (e.g. a
    re-scan) update the earlier entry.
    """
    rep = GuestReport()
    for line in text.replace("\r", "\n").split("\n"):
        entry = _parse_line(line)
        if entry is None:
            continue
        ev = entry["event"]
        if ev == "boot":
            rep = GuestReport()
        rep.raw.append(entry)
        if ev == "boot":
            rep.kernel = entry.get("kernel", "")
        elif ev == "cpus":
            rep.cpus_online = entry.get("online", "")
            rep.cpus_present = entry.get("present", "")
            rep.cpus_possible = entry.get("possible", "")
            rep.cpus_online_count = _int(entry.get("count"))
        elif ev == "memory":
            rep.system_ram_kib = _int(entry.get("system_ram_kib"))
            rep.memtotal_kib = _int(entry.get("memtotal_kib"))
            rep.memfree_kib = _int(entry.get("memfree_kib"))
        elif ev == "firmware":
            rep.firmware = entry.get("type", "")
        elif ev == "disk":
            _upsert(rep.disks, _typed(entry))
        elif ev == "nic":
            _upsert(rep.nics, _typed(entry))
        elif ev == "pcinic":
            rep.pcinics.append(_typed(entry))
        elif ev == "modules":
            rep.modules_loaded = [m for m in entry.get("loaded", "").split(",") if m]
            rep.modules_failed = [m for m in entry.get("failed", "").split(",") if m]
        elif ev == "channel":
            rep.channel = entry.get("tty")
        elif ev == "power_button":
            rep.power_button = entry.get("dev")
        elif ev == "timing":
            try:
                rep.uptime_s = float(entry.get("uptime_s", ""))
            except ValueError:
                pass
        elif ev == "error":
            rep.errors.append(" ".join(entry.get("args", [])) or "unknown")
        elif ev == "ready":
            rep.ready = True
        elif ev == "poweroff":
            rep.poweroff = True
    return rep


def _read_complete_lines(path: Path) -> str:
    """The file's text up to its last newline ('' if missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    cut = data.rfind(b"\n")
    return data[: cut + 1].decode("utf-8", "replace") if cut >= 0 else ""


def _tail(text: str, n: int = 20) -> str:
    lines = text.replace("\r", "").splitlines()
    return "\n".join(lines[-n:])


def _pid_alive(pid: int) -> bool:
    """False once the process is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for_event(
    serial_log: Union[str, Path],
    event: str,
    timeout: float = 90,
    *,
    pid: Optional[int] = None,
    poll_interval: float = 0.05,
) -> GuestReport:
    """Poll serial_log until a complete "INFINIVIRT <event>" line is in the current boot.

    Raises TimeoutError (with the last 20 log lines) after timeout seconds, and
    GuestBootError at once if the guest prints "INFINIVIRT error ...", the kernel
    panics, or (when pid is given) the QEMU process exits first.
    """
    path = Path(serial_log)
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        text = _read_complete_lines(path)
        rep = parse_report(text)
        if any(e.get("event") == event for e in rep.raw):
            return rep
        if rep.errors:
            raise GuestBootError(
                "guest reported error %s; last lines of %s:\n%s" % (", ".join(rep.errors), path, _tail(text))
            )
        panic = _PANIC_RE.search(text)
        if panic:
            raise GuestBootError(
                "guest kernel panic (%s); last lines of %s:\n%s" % (panic.group(0).strip(), path, _tail(text))
            )
        if pid is not None and not _pid_alive(pid):
            text = _read_complete_lines(path)
            rep = parse_report(text)
            if any(e.get("event") == event for e in rep.raw):
                return rep
            raise GuestBootError(
                "QEMU (pid %d) exited before INFINIVIRT %s; last lines of %s:\n%s" % (pid, event, path, _tail(text))
            )
        if time.monotonic() >= deadline:
            raise TimeoutError(
                "no INFINIVIRT %s within %.0f s; last lines of %s:\n%s" % (event, timeout, path, _tail(text))
            )
        time.sleep(poll_interval)


def wait_for_ready(
    serial_log: Union[str, Path], timeout: float = 90, *, pid: Optional[int] = None, poll_interval: float = 0.05
) -> GuestReport:
    """Poll the serial log until "INFINIVIRT ready"; return the parsed report.

    TimeoutError (including the last 20 log lines) on timeout; GuestBootError
    early if the guest reports an error, panics, or QEMU (pid) exits.
    """
    return wait_for_event(serial_log, "ready", timeout, pid=pid, poll_interval=poll_interval)


def channel_command(
    sock_path: Union[str, Path], command: str, timeout: float = 30, sock: Optional[socket.socket] = None
) -> Tuple[int, str]:
    """Run one shell command in the guest over its ttyS1 channel; return (rc, output).

    sock_path is QEMU's `-chardev socket,path=...,server=on,wait=off` behind the
    guest's second serial port.  Pass an already connected `sock` to reuse a
    connection.  Only call after the guest reported ready.  Output lines are
    "\\n"-terminated (the guest sets the port raw).
    """
    if "\n" in command.rstrip("\n"):
        raise ValueError("one command line at a time")
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(sock_path))
        except OSError:
            sock.close()
            raise
    try:
        sock.settimeout(timeout)
        sock.sendall(command.rstrip("\n").encode() + b"\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while True:
            m = _END_RE.search(buf.decode("utf-8", "replace"))
            if m and buf.endswith(b"\n"):
                text = buf.decode("utf-8", "replace")
                return int(m.group(1)), text[: m.start()]
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    "no INFINIVIRT-END from the guest channel within %.0f s; got %r" % (timeout, buf[-2000:])
                )
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("guest channel closed; got %r" % buf[-2000:])
            buf += chunk
    finally:
        if own:
            sock.close()
