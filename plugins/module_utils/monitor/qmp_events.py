# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's event monitor (the second QMP socket each VM gets at start), read without a QMP
library: connect, take the greeting, leave capabilities mode, then read one JSON event per
line until QEMU closes it, which it does exactly when the process ends."""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, List, Optional

HANDSHAKE_TIMEOUT = 2.0
READ_SIZE = 65536
LINE_MAX = 1 << 20  # a QMP message longer than this is not an event we understand


class EventsUnavailable(Exception):
    """The socket is not there or QEMU did not answer the handshake."""


class EventConnection:
    """One VM's event stream; ``fileno`` for a selector, ``read`` when it is readable."""

    def __init__(self, path: str, uuid: str, pid: Optional[int]):
        self.uuid = uuid
        self.pid = pid
        self.events: List[Dict[str, Any]] = []  # since connecting, oldest first
        self._buffer = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(HANDSHAKE_TIMEOUT)
            self.sock.connect(path)
            self._handshake()
            self.sock.setblocking(False)
        except (OSError, ValueError) as exc:
            self.sock.close()
            raise EventsUnavailable("%s: %s" % (path, exc)) from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _handshake(self) -> None:
        greeting = self._next_blocking()
        if "QMP" not in greeting:
            raise ValueError("no QMP greeting")
        self.sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        while True:
            reply = self._next_blocking()
            if "event" in reply:
                self.events.append(reply)
            elif "return" in reply:
                return
            else:
                raise ValueError("capabilities refused: %r" % (reply,))

    def _next_blocking(self) -> Dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise ValueError("closed during the handshake")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def read(self) -> List[Dict[str, Any]]:
        """The events that arrived; raises EOFError once QEMU closed the monitor."""
        try:
            chunk = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            raise EOFError(self.uuid)
        self._buffer += chunk
        fresh = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "event" in message:
                fresh.append(message)
        if len(self._buffer) > LINE_MAX:
            self._buffer = b""
        self.events.extend(fresh)
        del self.events[:-50]  # how it ended is in the last few; keep memory flat
        return fresh


EVENT_LOG_TAIL = 256 * 1024  # how a QEMU ended is in its last events


def read_event_log(path: str) -> Optional[List[Dict[str, Any]]]:
    """The events QEMU wrote to its event log file (oldest first, the file's last
    EVENT_LOG_TAIL bytes), or None when there is no such file (a VM started without one)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - EVENT_LOG_TAIL))
            data = handle.read()
    except OSError:  # not there (a VM started without one), or unreadable: memory only
        return None
    events = []
    for line in data.split(b"\n"):
        try:
            message = json.loads(line)
        except ValueError:
            continue  # the cut first line, or a last one QEMU did not finish
        if isinstance(message, dict) and "event" in message:
            events.append(message)
    return events
