# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live migration (issue 23), the source half (vm/engine/outgoing.py) against real QEMU.

The guest boots once, under infinivirt (host A's run dir). Until the engine's incoming start
exists, each target is a QEMU started here by hand (migration_target.py: the source's own
command line in a second run dir, plus ``-incoming defer``): what the target host will run.
It is told where to listen and let run by vm/engine/incoming.py. Proved: a target killed
mid-stream and a timeout leave the source guest running; a completed stream the target did
not take over is taken back (``cont``) with the guest's uptime continuing; a completed stream
runs on the target as the same boot."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest
import serial_report
from helpers import wait_ready
from migration_target import HandTarget

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen, take_over
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed, recover, send
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import validate_request

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow]


def _uptime(sock):
    rc, out = serial_report.channel_command(sock, "cat /proc/uptime", timeout=60)
    assert rc == 0, out
    return float(out.strip().splitlines()[-1].split()[0])


def _target(source_pid, run_a, port, rec):
    """A hand-started target (migration_target.py) told where to listen by incoming.listen."""
    target = HandTarget(source_pid, run_a, port)
    target.rec = dataclasses.replace(rec, qmp_socket_path=target.qmp)  # the VM as the target sees it
    listen(target.call, target.rec, validate_request({"name": rec.name, "to": "hv-b"}, "hv-a"), target.uri)
    return target


@pytest.fixture
def source(service, guest_params, workdir):
    params = dict(guest_params, name="mover", state="running", memory_mb=128, console_socket=True)
    vm = service.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    rec = records.load(service.store, "mover")
    yield service, rec, vm
    service.ensure({"name": "mover", "state": "absent", "force": True, "stop_timeout": 0}, False)


def test_the_source_keeps_the_guest_until_a_target_runs_it(source, workdir):
    service, rec, vm = source
    qmp = service.engine.sessions.qmp
    run_a = os.path.dirname(rec.pidfile_path)
    sock = vm["console_socket_path"]
    before = _uptime(sock)

    # 1. The target QEMU is killed mid-stream (throttled to 8 Mbit/s so there is time).
    target = _target(vm["pid"], run_a, 47311, rec)
    slow = validate_request({"name": "mover", "to": "hv-b", "bandwidth_mbit": 8}, "hv-a")
    killer = threading.Timer(1.5, target.kill)
    killer.start()
    with pytest.raises(MigrationFailed) as err:
        send(qmp, rec, slow, target.uri, time.monotonic() + 60)
    killer.join()
    assert "failed" in str(err.value)
    assert qmp(rec, "query-status")["status"] == "running"
    assert _uptime(sock) > before, "the same boot goes on at the source"

    # 2. Out of time: cancelled, the source runs.
    target = _target(vm["pid"], run_a, 47312, rec)
    try:
        with pytest.raises(MigrationFailed) as err:
            send(qmp, rec, slow, target.uri, time.monotonic() + 1)
        assert "did not complete within timeout" in str(err.value)
        assert qmp(rec, "query-status")["status"] == "running"
    finally:
        target.kill()

    # 3. Completed, but the target does not take over: the source takes the guest back.
    target = _target(vm["pid"], run_a, 47313, rec)
    fast = validate_request({"name": "mover", "to": "hv-b"}, "hv-a")
    try:
        done = send(qmp, rec, fast, target.uri, time.monotonic() + 120)
        assert qmp(rec, "query-status")["status"] == "postmigrate"
        assert done["transferred_bytes"] > 1_000_000 and done["downtime_ms"] is not None
    finally:
        target.kill()
    with pytest.raises(MigrationFailed):
        take_over(target.call, target.rec, time.monotonic() + 5)  # its QEMU is gone: no take-over
    recover(qmp, rec)
    assert qmp(rec, "query-status")["status"] == "running"
    middle = _uptime(sock)
    assert middle > before

    # 4. Completed, and the target runs it: the same boot (uptime goes on, no new boot).
    target = _target(vm["pid"], run_a, 47314, rec)
    try:
        done = send(qmp, rec, fast, target.uri, time.monotonic() + 120)
        take_over(target.call, target.rec, time.monotonic() + 30)
        assert target.status() == "running"
        assert _uptime(target.console) > middle, "the guest's clock went on: no restart"
        with open(target.serial) as fh:
            assert "boot kernel=" not in fh.read(), "the target's console shows no new boot"
    finally:
        target.kill()
