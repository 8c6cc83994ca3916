# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A no-op on a running VM opens no QMP connection (issue 20): the row, the pidfile, /proc
and QEMU's event log say it runs. QEMU is still asked when they disagree: a pause made
outside a task, a recorded start time that is not the process's, a QEMU that was killed.
Firmware-only VMs under TCG (no guest OS)."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import vm_list, wait_for

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_state
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

pytestmark = [pytest.mark.qemu]

FW = {"name": "quiet", "accel": "tcg", "memory_mb": 64, "vcpus": 1}
STOP = {"name": "quiet", "state": "stopped", "force": True, "stop_timeout": 0}


def _task(service, qmp_connections, **params):
    del qmp_connections[:]
    out = service.ensure(dict(FW, **params), False)
    return out.actions, len(qmp_connections), out.vm["status"]


def test_a_noop_on_a_running_vm_opens_no_qmp_connection(service, qmp_connections):
    assert _task(service, qmp_connections, state="running")[0] == ["create", "start"]
    assert _task(service, qmp_connections, state="running") == ([], 0, "running")
    assert _task(service, qmp_connections, state="present") == ([], 0, "running")
    del qmp_connections[:]
    vm = vm_list(service, "quiet")[0]
    assert (vm["status"], vm["qemu_status"], vm["crashed"], len(qmp_connections)) == ("running", "running", False, 0)
    # A changed spec that needs no live data (a restart later) still asks nothing.
    assert _task(service, qmp_connections, state="running", memory_mb=96)[:2] == (["update"], 0)
    # A paused VM is asked: the plan needs QEMU's own status (prelaunch, paused, io-error...).
    assert _task(service, qmp_connections, state="paused", memory_mb=96)[:2] == (["pause"], 1)
    assert _task(service, qmp_connections, state="paused", memory_mb=96)[:2] == ([], 1)
    service.ensure(STOP, False)


def test_a_pause_outside_a_task_is_seen_through_the_event_log(service, qmp_connections):
    service.ensure(dict(FW, state="running"), False)
    rec = records.load(service.store, "quiet")
    with QmpSession(rec.qmp_socket_path, "quiet") as qmp:  # an I/O error or a guest panic would do this
        qmp.execute("stop")
    assert records.load(service.store, "quiet").status == "running"  # no monitor runs: the row did not follow
    actions, connections, status = _task(service, qmp_connections, state="running")
    assert (actions, status) == (["resume"], "running") and connections == 1
    assert _task(service, qmp_connections, state="running") == ([], 0, "running")  # RESUME is logged
    service.ensure(STOP, False)


def test_a_recorded_start_time_that_is_not_the_processes_asks_qemu(service, qmp_connections):
    """Stands for a reused PID: the row's (PID, start time) is not the live process's."""
    service.ensure(dict(FW, state="running"), False)
    rec = records.load(service.store, "quiet")
    started = rec.qemu_started
    assert started is not None
    rec.qemu_started = started - 1
    records.save(service.store, rec)
    assert _task(service, qmp_connections, state="running") == ([], 1, "running")  # asked QEMU
    assert records.load(service.store, "quiet").qemu_started == started  # and the row follows the process
    assert _task(service, qmp_connections, state="running") == ([], 0, "running")
    service.ensure(STOP, False)


def test_a_killed_qemu_is_still_noticed(service, qmp_connections):
    service.ensure(dict(FW, state="running"), False)
    pid = records.load(service.store, "quiet").qemu_pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_state(pid) in (None, "Z", "X"))
    del qmp_connections[:]
    vm = vm_list(service, "quiet")[0]
    assert (vm["status"], vm["crashed"], vm["qemu_status"]) == ("stopped", True, None)
    assert {entry["kind"] for entry in vm["leftovers"]} >= {"pidfile", "qmp_socket"}
    actions, _connections, status = _task(service, qmp_connections, state="running")
    assert (actions, status) == (["start"], "running")  # the row said running; the task restarted it
    assert records.load(service.store, "quiet").qemu_pid != pid
    service.ensure(STOP, False)
