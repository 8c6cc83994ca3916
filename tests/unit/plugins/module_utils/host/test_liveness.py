# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Liveness without QMP (issue 20): the recorded PID, its start time, the UUID, and QEMU's
event log, against real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid as uuidlib

import pytest
from qemu_child import spawn  # a real qemu-system-x86_64 (-machine none) with -uuid

from ansible_collections.infinivirt.core.plugins.module_utils.host.liveness import (
    EVENT_LOG_TAIL,
    last_run_event,
    process_stat,
    runs_as_recorded,
    settled_running,
    start_ticks,
)


def _field22(pid):
    """The start time as proc(5) documents it, read independently of the code under test."""
    with open("/proc/%d/stat" % pid) as fh:
        text = fh.read()
    return int(text.rsplit(")", 1)[1].split()[19])


def _event(name):
    return json.dumps({"timestamp": {"seconds": 1, "microseconds": 2}, "event": name})


def _write_run(tmp_path, pid, events):
    base = tmp_path / "vm"
    (tmp_path / "vm.pid").write_text("%d\n" % pid)
    (tmp_path / "vm.evlog.out").write_text("".join(line + "\n" for line in events))
    return str(base) + ".pid"


def test_start_time_of_a_real_child_and_of_none(tmp_path):
    # A program whose name holds ') ' and spaces: the fields are found after the last ')'.
    odd = tmp_path / "x) 1 2 (y"
    os.symlink("/bin/sleep", str(odd))
    child = subprocess.Popen([str(odd), "60"])
    try:
        time.sleep(0.05)
        ticks = start_ticks(child.pid)
        assert ticks == _field22(child.pid)
        assert ticks >= _field22(os.getpid())  # started after this test's interpreter
        assert process_stat(child.pid)[0] in ("S", "R")
    finally:
        child.kill()
        child.wait()
    assert start_ticks(child.pid) is None  # reaped: no such process
    assert start_ticks(None) is None


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_the_recorded_qemu_counts_only_with_its_pid_start_time_and_uuid(tmp_path):
    marker = str(uuidlib.uuid4())
    qemu = spawn(marker)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        started = start_ticks(qemu.pid)
        pidfile = _write_run(tmp_path, qemu.pid, [])
        assert runs_as_recorded(pidfile, qemu.pid, started, marker)
        assert not runs_as_recorded(pidfile, qemu.pid, started + 1, marker), "another start time: a reused PID"
        assert not runs_as_recorded(pidfile, qemu.pid, None, marker), "no start time recorded: cannot tell"
        assert not runs_as_recorded(pidfile, qemu.pid, started, str(uuidlib.uuid4())), "another VM's UUID"
        # The PID now belongs to another program (here: a sleep), with its own start time.
        other = _write_run(tmp_path, sleeper.pid, [])
        assert not runs_as_recorded(other, sleeper.pid, start_ticks(sleeper.pid), marker)
        assert not runs_as_recorded(other, qemu.pid, started, marker), "the pidfile names another process"
        qemu.send_signal(signal.SIGSTOP)  # cannot answer QMP: not settled
        time.sleep(0.05)
        assert not runs_as_recorded(pidfile, qemu.pid, started, marker)
        qemu.send_signal(signal.SIGCONT)
    finally:
        for proc in (qemu, sleeper):
            proc.kill()
            proc.wait()
    assert not runs_as_recorded(pidfile, qemu.pid, started, marker)


def test_the_last_run_state_event_of_the_log(tmp_path):
    log = tmp_path / "vm.evlog.out"
    assert last_run_event(str(log)) is None  # no file: a VM started without one
    log.write_text('{"return": {}}\n')
    assert last_run_event(str(log)) is None  # no event yet
    log.write_text("\n".join([_event("RESUME"), _event("RTC_CHANGE"), _event("NIC_RX_FILTER_CHANGED")]) + "\n")
    assert last_run_event(str(log)) == "RESUME"
    log.write_text("\n".join([_event("RESUME"), _event("STOP"), '{"timestamp": {"sec']))  # one being written
    assert last_run_event(str(log)) == "STOP"
    log.write_text(_event("STOP") + "\n" + _event("RESUME") + "\n" + _event("GUEST_PANICKED") + "\n")
    assert last_run_event(str(log)) == "GUEST_PANICKED"
    # Only the tail is read: a RESUME pushed out of it by other events is not an answer.
    filler = _event("RTC_CHANGE") + "\n"
    log.write_text(_event("RESUME") + "\n" + filler * (EVENT_LOG_TAIL // len(filler) + 1))
    assert last_run_event(str(log)) is None


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_settled_running_needs_the_process_and_a_resume(tmp_path):
    marker = str(uuidlib.uuid4())
    qemu = spawn(marker)
    try:
        started = start_ticks(qemu.pid)
        pidfile = _write_run(tmp_path, qemu.pid, [_event("RESUME")])
        assert settled_running(pidfile, qemu.pid, started, marker)
        _write_run(tmp_path, qemu.pid, [_event("RESUME"), _event("STOP")])  # paused outside a task
        assert not settled_running(pidfile, qemu.pid, started, marker)
        os.unlink(str(tmp_path / "vm.evlog.out"))
        assert not settled_running(pidfile, qemu.pid, started, marker)
    finally:
        qemu.kill()
        qemu.wait()
