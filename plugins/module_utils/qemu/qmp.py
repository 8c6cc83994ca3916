# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A synchronous QMP session on top of qemu.qmp: connect per call, a timeout per command.

QEMU accepts one client per monitor socket, so nothing keeps a connection open between
calls.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QmpError

# Found, not imported: asyncio and qemu.qmp load with the first QMP session, so a task that
# speaks no QMP (a stopped VM) does not pay for them. The modules that need QMP still fail
# up front with Ansible's missing-library message (ansible_binding.py requirements).
try:
    HAS_QEMU_QMP = importlib.util.find_spec("qemu.qmp") is not None
    QEMU_QMP_IMPORT_ERROR = None if HAS_QEMU_QMP else "ModuleNotFoundError: No module named 'qemu.qmp'"
except ImportError as _exc:  # no qemu package at all
    HAS_QEMU_QMP = False
    QEMU_QMP_IMPORT_ERROR = "%s: %s" % (type(_exc).__name__, _exc)

# Commands after which QEMU closes the connection by design.
_CLOSES_CONNECTION = ("quit",)


def _no_wire_messages(record: logging.LogRecord) -> bool:
    """qemu.qmp logs every message at DEBUG; some carry secrets (set_password, a LUKS key
    in object-add). Drop those records, whatever logging the caller set up."""
    return not str(record.msg).startswith(("-->", "<--"))


@functools.lru_cache(maxsize=None)
def _lib() -> Any:
    """asyncio and qemu.qmp, imported once, at the first session; ImportError if missing."""
    import asyncio
    import types

    from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError
    from qemu.qmp.models import Greeting
    from qemu.qmp.qmp_client import GreetingError, NegotiationError

    class Client(QMPClient):
        """QMPClient whose greeting and capabilities negotiation let events pass.

        QEMU may send an event (VNC_CONNECTED, say) between leaving capabilities mode and
        answering qmp_capabilities; qemu.qmp 0.0.6 then fails the whole connection
        (reproduced here: 118 of 300 connects while VNC clients came and went)."""

        def __init__(self, name: str):
            super().__init__(name)
            self.logger.addFilter(_no_wire_messages)  # the same function: added once

        async def _get_greeting(self) -> Any:
            for _skipped in range(1000):
                msg = await self._recv()
                if "event" in msg:
                    continue  # left over from the previous client's session
                try:
                    return Greeting(msg)
                except (KeyError, TypeError) as err:
                    raise GreetingError("Did not understand Greeting", err) from err
            raise GreetingError("Did not understand Greeting", ValueError("only events"))

        async def _negotiate(self) -> None:
            arguments: Dict[str, List[str]] = {}
            if self._greeting and "oob" in self._greeting.QMP.capabilities:
                arguments.setdefault("enable", []).append("oob")
            await self._send(self.make_execute_msg("qmp_capabilities", arguments=arguments))
            for _skipped in range(1000):
                reply = await self._recv()
                if "event" in reply:
                    continue  # not for us: the session has not started yet
                if "return" in reply and "error" not in reply:
                    return
                break
            raise NegotiationError("Negotiation failed", ValueError("unexpected reply"))

    return types.SimpleNamespace(
        asyncio=asyncio,
        Client=Client,
        ConnectError=ConnectError,
        EventListener=EventListener,
        ExecuteError=ExecuteError,
        QMPError=QMPError,
    )


class QmpSession:
    """``with QmpSession(sock, vm) as qmp: qmp.execute("query-status")``."""

    def __init__(self, socket_path: str, vm_name: str, connect_timeout: float = 5.0):
        try:
            self._lib = _lib()
        except ImportError as exc:
            raise QmpError(vm_name, "connect", "the Python library qemu.qmp cannot be imported: %s" % exc) from None
        self.socket_path = socket_path
        self.vm_name = vm_name
        self.connect_timeout = connect_timeout
        self._loop: Any = None  # an asyncio event loop while connected
        self._client: Any = None

    def __enter__(self) -> "QmpSession":
        self._loop = self._lib.asyncio.new_event_loop()
        self._client = self._lib.Client(self.vm_name)
        try:
            self._run(self._client.connect(self.socket_path), self.connect_timeout, "connect")
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._loop.run_until_complete(self._client.disconnect())
        except (self._lib.QMPError, OSError, EOFError):
            pass  # the peer may already be gone (after quit); nothing to release
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _run(self, coro: Any, timeout: float, command: str) -> Any:
        lib = self._lib
        try:
            return self._loop.run_until_complete(lib.asyncio.wait_for(coro, timeout))
        except lib.asyncio.TimeoutError:
            raise QmpError(self.vm_name, command, "no answer within %g s" % timeout) from None
        except lib.ExecuteError as exc:
            raise QmpError(self.vm_name, command, "%s: %s" % (exc.error_class, exc)) from exc
        except lib.ConnectError as exc:
            raise QmpError(self.vm_name, command, "cannot connect to %s: %s" % (self.socket_path, exc.exc)) from exc
        except (lib.QMPError, OSError, EOFError) as exc:
            raise QmpError(self.vm_name, command, str(exc) or type(exc).__name__) from exc

    def execute(self, command: str, arguments: Optional[Dict[str, Any]] = None, timeout: float = 10.0) -> Any:
        try:
            return self._run(self._client.execute(command, arguments), timeout, command)
        except QmpError:
            if command in _CLOSES_CONNECTION:
                return {}  # QEMU quit before or while answering: that is success
            raise

    def add_fd_set(self, fds: Sequence[int], opaque: str, timeout: float = 10.0) -> int:
        """Hand QEMU ``fds`` (SCM_RIGHTS, then add-fd) as one descriptor set; return its id,
        for /dev/fdset/N. ``opaque`` tells the set apart in query-fdsets."""
        fdset: Optional[int] = None
        for fd in fds:
            try:
                self._client.send_fd_scm(fd)
            except (self._lib.QMPError, OSError) as exc:
                raise QmpError(self.vm_name, "add-fd", "cannot pass a descriptor: %s" % exc) from exc
            arguments: Dict[str, Any] = {"opaque": opaque}
            if fdset is not None:
                arguments["fdset-id"] = fdset
            fdset = int(self.execute("add-fd", arguments, timeout=timeout)["fdset-id"])
        if fdset is None:
            raise ValueError("add_fd_set needs at least one descriptor")
        return fdset

    def execute_and_wait(
        self, command: str, arguments: Optional[Dict[str, Any]], event: str, match: Dict[str, Any], timeout: float
    ) -> Dict[str, Any]:
        """Run a command, then wait for an event whose data matches ``match`` (listening
        starts before the command, so a quick event is not missed)."""
        listener = self._lib.EventListener(names=(event,))

        async def run() -> Dict[str, Any]:
            with self._client.listen(listener):
                await self._client.execute(command, arguments)
                while True:
                    found = await listener.get()
                    data = found.get("data", {})
                    if all(data.get(k) == v for k, v in match.items()):
                        return dict(found)

        try:
            return self._run(run(), timeout, command)
        except QmpError as exc:
            if "no answer within" in exc.reason:
                raise QmpError(
                    self.vm_name,
                    command,
                    "no %s event within %g s (the guest did not release the device)" % (event, timeout),
                ) from None
            raise


def qmp_execute(
    socket_path: str, vm_name: str, command: str, arguments: Optional[Dict[str, Any]] = None, timeout: float = 10.0
) -> Any:
    """One command on its own connection."""
    with QmpSession(socket_path, vm_name, connect_timeout=timeout) as qmp:
        return qmp.execute(command, arguments, timeout=timeout)
