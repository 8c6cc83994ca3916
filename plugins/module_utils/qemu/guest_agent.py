# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A client of the QEMU guest agent (qemu-ga) on the UNIX socket of its virtio-serial port.

The protocol is QMP's JSON, one object per line, without a greeting or capabilities. The
channel keeps whatever an earlier client or a restarted agent left in it, so every session
starts with ``guest-sync-delimited``: the agent answers with a 0xFF byte, then the reply with
our random id; everything before is discarded. Each command has a deadline: a guest without
an agent (or a busy one) never answers, and nobody should wait for it longer than asked.
"""

from __future__ import annotations

import json
import random
import socket
import time
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError

DEFAULT_TIMEOUT = 3.0
_DELIMITER = b"\xff"
_LINE_MAX = 1 << 20  # a reply larger than this is not an agent's


class GuestAgentError(InfinivirtError):
    """The agent answered with an error, or said something that is not the protocol."""


class AgentNotAnswering(GuestAgentError):
    """No connection to the channel, or no reply within the deadline."""


class GuestAgent:
    """One session: connect, resync, then commands. Use as a context manager. ``timeout``:
    the most one command may take; ``total``: the most the whole session may take."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT, total: Optional[float] = None):
        self.path = path
        self.timeout = timeout
        self._end = None if total is None else time.monotonic() + total
        self._sock: Optional[socket.socket] = None
        self._buf = b""

    def __enter__(self) -> "GuestAgent":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.001, self._deadline() - time.monotonic()))
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise AgentNotAnswering("cannot connect to the guest agent channel %s: %s" % (self.path, exc)) from None
        self._sock = sock
        try:
            self.sync()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- the protocol ---------------------------------------------------------------------
    def sync(self) -> None:
        """Resynchronize: a 0xFF makes the agent drop a half-read command; its reply to
        guest-sync-delimited starts with 0xFF, so what came before it is stale."""
        token = random.randint(1, 2**31 - 1)
        deadline = self._deadline()
        self._send(_DELIMITER + _encode("guest-sync-delimited", {"id": token}))
        while _DELIMITER not in self._buf:
            self._buf = b""  # stale: before the delimiter
            self._recv(deadline)
        self._buf = self._buf[self._buf.index(_DELIMITER) + 1 :]
        while True:  # lines after the delimiter that are not our reply: stale, skipped
            reply = _decode(self._line(deadline))
            if reply is not None and reply.get("return") == token:
                return

    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None) -> Any:
        """Run one command; its ``return`` value. An agent error raises GuestAgentError."""
        deadline = self._deadline()
        self._send(_encode(command, arguments))
        while True:
            reply = _decode(self._line(deadline))
            if reply is None:
                continue  # a garbage line (a guest console writing to the port, say)
            if "error" in reply:
                error = reply["error"] if isinstance(reply["error"], dict) else {}
                raise GuestAgentError("guest agent: %s failed: %s" % (command, error.get("desc", reply["error"])))
            if "return" in reply:
                return reply["return"]

    def send_only(self, command: str, arguments: Optional[Dict[str, Any]] = None) -> None:
        """A command the agent does not answer when it succeeds (guest-shutdown)."""
        self._send(_encode(command, arguments))

    # -- the commands ---------------------------------------------------------------------
    def ping(self) -> None:
        self.execute("guest-ping")

    def host_name(self) -> str:
        return self.execute("guest-get-host-name")["host-name"]

    def osinfo(self) -> Dict[str, Any]:
        return self.execute("guest-get-osinfo")

    def interfaces(self) -> List[Dict[str, Any]]:
        return self.execute("guest-network-get-interfaces")

    def shutdown(self, mode: str = "powerdown") -> None:
        """guest-shutdown, which the agent answers only when it fails. A guest-ping follows:
        QEMU drops what a client sent if the client hangs up at once, and the ping's answer
        says the agent has taken the shutdown (an error before it: the shutdown failed). No
        answer at all is fine: the agent may already be going down with the guest."""
        self.send_only("guest-shutdown", {"mode": mode})
        try:
            self.execute("guest-ping")
        except AgentNotAnswering:
            pass
        except GuestAgentError as exc:
            raise GuestAgentError(str(exc).replace("guest-ping failed", "guest-shutdown failed")) from None

    def fsfreeze_status(self) -> str:
        return self.execute("guest-fsfreeze-status")

    def fsfreeze_freeze(self) -> int:
        """Freeze every file system; how many were frozen."""
        return self.execute("guest-fsfreeze-freeze")

    def fsfreeze_thaw(self) -> int:
        return self.execute("guest-fsfreeze-thaw")

    # -- the wire -------------------------------------------------------------------------
    def _deadline(self) -> float:
        deadline = time.monotonic() + self.timeout
        return deadline if self._end is None else min(deadline, self._end)

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise AgentNotAnswering("guest agent channel %s: %s" % (self.path, exc)) from None

    def _recv(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AgentNotAnswering("the guest agent did not answer within %g s" % self.timeout)
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(65536)
        except socket.timeout:
            raise AgentNotAnswering("the guest agent did not answer within %g s" % self.timeout) from None
        except OSError as exc:
            raise AgentNotAnswering("guest agent channel %s: %s" % (self.path, exc)) from None
        if not data:
            raise AgentNotAnswering("the guest agent channel %s was closed" % self.path)
        self._buf += data
        if len(self._buf) > _LINE_MAX:
            raise GuestAgentError("the guest agent sent a line longer than %d bytes" % _LINE_MAX)

    def _line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            self._recv(deadline)
        line, self._buf = self._buf.split(b"\n", 1)
        return line


def _encode(command: str, arguments: Optional[Dict[str, Any]]) -> bytes:
    message: Dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    return json.dumps(message).encode() + b"\n"


def _decode(line: bytes) -> Optional[Dict[str, Any]]:
    """A reply object, or None for a line that is not one."""
    try:
        value = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
