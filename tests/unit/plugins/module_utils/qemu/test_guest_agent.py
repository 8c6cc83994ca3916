# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The guest agent client against a scripted agent on a real UNIX socket (a test double of
the guest side; tests/integration/test_guest_agent_live.py talks to a real qemu-ga)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.guest_agent import (
    AgentNotAnswering,
    GuestAgent,
    GuestAgentError,
)


class FakeAgent:
    """Listens on ``path``; answers each command from ``replies`` (command -> reply object,
    or None for no reply). ``before_sync``: bytes sent ahead of the sync reply's 0xFF (what a
    channel holds from an earlier session); ``after_sync``: lines between 0xFF and the reply."""

    def __init__(self, path, replies=None, before_sync=b"", after_sync=b"", silent=False):
        self.path = path
        self.replies = replies or {}
        self.before_sync, self.after_sync, self.silent = before_sync, after_sync, silent
        self.received = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _addr = self.server.accept()
        with conn, contextlib.suppress(OSError):  # the client may hang up before a reply
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if self.silent:
                        continue
                    message = json.loads(line.lstrip(b"\xff"))
                    self.received.append(message)
                    conn.sendall(self._answer(message))

    def _answer(self, message):
        command = message["execute"]
        if command == "guest-sync-delimited":
            token = message["arguments"]["id"]
            return self.before_sync + b"\xff" + self.after_sync + json.dumps({"return": token}).encode() + b"\n"
        reply = self.replies.get(command, {"error": {"class": "CommandNotFound", "desc": "no " + command}})
        return b"" if reply is None else json.dumps(reply).encode() + b"\n"

    def close(self):
        self.server.close()


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "vm.qga")


def test_resyncs_past_stale_lines_and_garbage(sock_path):
    agent = FakeAgent(
        sock_path,
        {"guest-get-host-name": {"return": {"host-name": "web01"}}},
        before_sync=b'{"return": {"host-name": "stale"}}\nnot json at all\n{"ret',
        after_sync=b'garbage line\n{"return": 7}\n',
    )
    try:
        with GuestAgent(sock_path, timeout=2) as client:
            assert client.host_name() == "web01"
        assert [m["execute"] for m in agent.received] == ["guest-sync-delimited", "guest-get-host-name"]
    finally:
        agent.close()


def test_the_commands(sock_path):
    interfaces = [{"name": "eth0", "hardware-address": "52:54:00:00:00:01", "ip-addresses": []}]
    agent = FakeAgent(
        sock_path,
        {
            "guest-ping": {"return": {}},
            "guest-get-osinfo": {"return": {"id": "debian", "version-id": "12"}},
            "guest-network-get-interfaces": {"return": interfaces},
            "guest-fsfreeze-status": {"return": "thawed"},
            "guest-fsfreeze-freeze": {"return": 2},
            "guest-fsfreeze-thaw": {"return": 2},
            "guest-shutdown": None,  # the agent does not answer it
        },
    )
    try:
        with GuestAgent(sock_path, timeout=2) as client:
            client.ping()
            assert client.osinfo()["id"] == "debian"
            assert client.interfaces() == interfaces
            assert client.fsfreeze_status() == "thawed"
            assert client.fsfreeze_freeze() == 2
            assert client.fsfreeze_thaw() == 2
            client.shutdown()
        # then a ping: its answer says the agent took the shutdown
        assert agent.received[-2:] == [
            {"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}},
            {"execute": "guest-ping"},
        ]
    finally:
        agent.close()


def test_an_agent_error_names_the_command(sock_path):
    agent = FakeAgent(sock_path, {"guest-fsfreeze-freeze": {"error": {"class": "GenericError", "desc": "busy"}}})
    try:
        with GuestAgent(sock_path, timeout=2) as client:
            with pytest.raises(GuestAgentError, match="guest-fsfreeze-freeze failed: busy"):
                client.fsfreeze_freeze()
    finally:
        agent.close()


def test_a_failed_shutdown_says_so(sock_path):
    """The agent answers guest-shutdown only with an error (no /sbin/shutdown, say)."""
    agent = FakeAgent(sock_path, {"guest-ping": {"return": {}}})
    agent.replies["guest-shutdown"] = {"error": {"class": "GenericError", "desc": "child process has failed"}}
    try:
        with GuestAgent(sock_path, timeout=2) as client:
            with pytest.raises(GuestAgentError, match="guest-shutdown failed: child process has failed"):
                client.shutdown()
    finally:
        agent.close()


def test_a_silent_agent_is_not_answering_within_the_timeout(sock_path):
    """The channel of a guest without an agent: QEMU accepts, nobody ever answers."""
    agent = FakeAgent(sock_path, silent=True)
    try:
        began = time.monotonic()
        with pytest.raises(AgentNotAnswering, match="did not answer within 0.3 s"):
            with GuestAgent(sock_path, timeout=0.3):
                pass
        assert time.monotonic() - began < 1.0
    finally:
        agent.close()


def test_total_bounds_the_whole_session(sock_path):
    """Each command has its own timeout, the session one bound: a slow-to-die session
    of many commands cannot take commands x timeout."""
    agent = FakeAgent(sock_path, {"guest-ping": {"return": {}}, "guest-get-host-name": None})
    try:
        began = time.monotonic()
        with pytest.raises(AgentNotAnswering):
            with GuestAgent(sock_path, timeout=5, total=0.4) as client:
                client.ping()
                client.host_name()  # never answered
        assert time.monotonic() - began < 1.5
    finally:
        agent.close()


def test_no_channel_is_not_answering(sock_path):
    assert not os.path.exists(sock_path)
    with pytest.raises(AgentNotAnswering, match="cannot connect"):
        with GuestAgent(sock_path, timeout=0.5):
            pass


# -- vm/guest.py's freeze around a live snapshot, against the same scripted agent -------------


def _agent_vm(run_dir):
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

    spec = VmSpec(name="frozen", guest_agent=True)
    return VmRecord(uuid="u1", name="frozen", host="h", status="running", spec=spec, running_spec=spec)


def _commands(agent, count):
    deadline = time.monotonic() + 2
    while len(agent.received) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [m["execute"] for m in agent.received]


FREEZE_REPLIES = {"guest-fsfreeze-freeze": {"return": 3}, "guest-fsfreeze-thaw": {"return": 3}}


def test_thawed_also_when_the_snapshot_fails(tmp_path):
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import frozen_filesystems

    agent = FakeAgent(str(tmp_path / "u1.qga"), FREEZE_REPLIES)
    try:
        with pytest.raises(RuntimeError, match="transaction failed"):
            with frozen_filesystems(str(tmp_path), _agent_vm(tmp_path)) as frozen:
                assert frozen == 3  # the agent's count
                raise RuntimeError("transaction failed")
        assert _commands(agent, 3) == ["guest-sync-delimited", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    finally:
        agent.close()


def test_a_failed_freeze_is_thawed_and_not_frozen(tmp_path):
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import frozen_filesystems

    replies = dict(FREEZE_REPLIES, **{"guest-fsfreeze-freeze": {"error": {"desc": "fsfreeze hook failed"}}})
    agent = FakeAgent(str(tmp_path / "u1.qga"), replies)
    try:
        with frozen_filesystems(str(tmp_path), _agent_vm(tmp_path)) as frozen:
            assert frozen is None
        # a freeze that failed half-way may have frozen some file systems
        assert _commands(agent, 3)[-1] == "guest-fsfreeze-thaw"
    finally:
        agent.close()


def test_no_agent_no_freeze(tmp_path):
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import frozen_filesystems

    with frozen_filesystems(str(tmp_path), _agent_vm(tmp_path)) as frozen:  # no socket
        assert frozen is None
