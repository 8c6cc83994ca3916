# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the host monitor reads a QEMU's last events and what it does then."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.monitor.policy import (
    CRASH,
    HOST_SHUTDOWN,
    POWEROFF,
    autostart_order,
    ending,
    log_entry,
    respond,
)
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.qmp_events import read_event_log
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec


def shutdown(guest, reason):
    return {"event": "SHUTDOWN", "data": {"guest": guest, "reason": reason}}


@pytest.mark.parametrize(
    "events, how",
    [
        ([], CRASH),
        ([{"event": "RESUME"}], CRASH),
        ([shutdown(True, "guest-shutdown")], POWEROFF),
        ([shutdown(False, "host-qmp-quit")], HOST_SHUTDOWN),
        ([shutdown(False, "host-signal")], HOST_SHUTDOWN),
        ([{"event": "GUEST_PANICKED", "data": {}}, shutdown(False, "host-signal")], CRASH),
    ],
)
def test_how_a_qemu_ended(events, how):
    assert ending(events) == how


@pytest.mark.parametrize(
    "how, on_crash, on_poweroff, status, restart",
    [
        (CRASH, "destroy", "restart", "crashed", False),
        (CRASH, "restart", "stop", "crashed", True),
        (CRASH, "preserve", "stop", "crashed", False),
        (POWEROFF, "restart", "stop", "stopped", False),
        (POWEROFF, "destroy", "restart", "stopped", True),
        (HOST_SHUTDOWN, "restart", "restart", "stopped", False),
    ],
)
def test_the_policy_table(how, on_crash, on_poweroff, status, restart):
    response = respond(how, on_crash, on_poweroff)
    assert (response.status, response.restart) == (status, restart)


def test_only_known_events_are_logged():
    assert log_entry({"event": "VNC_CONNECTED", "data": {}}) is None
    assert log_entry({"event": "RESET", "data": {"guest": True}}) == {"kind": "reset", "detail": {"guest": True}}
    # A watchdog that expired (issue 25): what QEMU did is in the detail.
    expired = {"event": "WATCHDOG", "data": {"action": "pause"}}
    assert log_entry(expired) == {"kind": "watchdog", "detail": {"action": "pause"}}


@dataclasses.dataclass
class Vm:
    name: str
    spec: VmSpec


def test_autostart_order_then_name_and_only_autostart_vms():
    vms = [
        Vm("b", VmSpec(name="b", autostart=True, autostart_order=1)),
        Vm("a", VmSpec(name="a", autostart=True, autostart_order=1)),
        Vm("z", VmSpec(name="z", autostart=True, autostart_order=-5)),
        Vm("m", VmSpec(name="m")),
    ]
    assert [vm.name for vm in autostart_order(vms)] == ["z", "a", "b"]


def test_the_event_log_qemu_wrote_tells_how_it_ended(tmp_path):
    """As QEMU 7.2 writes it (greeting, the capabilities reply, one event a line); a line
    cut by a QEMU that died mid-write is skipped; no file is None (memory is used)."""
    path = tmp_path / "vm.evlog.out"
    path.write_text(
        '{"QMP": {"version": {}, "capabilities": ["oob"]}}\n{"return": {}}\n'
        '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\n'
        '{"timestamp": {"seconds": 3, "microseconds": 4}, "event": "SHUTDOWN", '
        '"data": {"guest": true, "reason": "guest-shutdown"}}\n{"timestamp": {"sec'
    )
    events = read_event_log(str(path))
    assert [e["event"] for e in events] == ["RESUME", "SHUTDOWN"]
    assert ending(events) == POWEROFF
    assert read_event_log(str(tmp_path / "absent.out")) is None
