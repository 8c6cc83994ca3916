# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live migration (issue 23), the source half (vm/engine/outgoing.py) against real QEMU.

The guest boots once, under infinivirt (host A's run dir). Until the engine's incoming start
exists, each target is a QEMU started here by hand with the source's own command line
(its run dir paths moved to a second run dir, plus ``-incoming defer``): what the target host
will run. Proved: a target killed mid-stream and a timeout leave the source guest running;
a completed stream the target did not take over is taken back (``cont``) with the guest's
uptime continuing; a completed stream runs on the target as the same boot. The target QEMU is told where to
listen and let run by vm/engine/incoming.py."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import serial_report
from helpers import wait_for, wait_ready
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen, take_over
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed, recover, send
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import validate_request

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow]


def _uptime(sock):
    rc, out = serial_report.channel_command(sock, "cat /proc/uptime", timeout=60)
    assert rc == 0, out
    return float(out.strip().splitlines()[-1].split()[0])


class Target:
    """A target QEMU waiting for the stream: the source's argv in another run dir."""

    def __init__(self, source_pid, run_a, port, rec):
        self.dir = tempfile.mkdtemp(prefix="iv-mig-b")
        with open("/proc/%d/cmdline" % source_pid, "rb") as fh:
            argv = [a.decode() for a in fh.read().split(b"\0") if a]
        if "qemu-system" not in os.path.basename(argv[0]):  # a systemd-run scope prefix
            argv = argv[next(i for i, a in enumerate(argv) if "qemu-system" in os.path.basename(a)) :]
        argv = [a.replace(run_a.replace(",", ",,"), self.dir).replace(run_a, self.dir) for a in argv]
        for arg in argv:  # QEMU's event log: a pipe chardev on <path>.in/.out made beforehand
            if arg.startswith("pipe,"):
                base = arg.split("path=")[-1].split(",")[0]
                with open(base + ".in", "wb") as fh:
                    fh.write(b'{"execute": "qmp_capabilities"}\n')
                open(base + ".out", "wb").close()
        self.qmp = re.search(r"path=([^,]+\.qmp)", " ".join(argv)).group(1)
        self.console = next(a for a in (x.split("path=")[-1].split(",")[0] for x in argv) if a.endswith(".console"))
        self.serial = next(a.split("path=")[-1].split(",")[0] for a in argv if a.startswith("file,id=serial0"))
        done = subprocess.run(argv + ["-incoming", "defer"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        self.pid = int(open(argv[argv.index("-pidfile") + 1]).read())
        self.uri = "tcp:127.0.0.1:%d" % port
        self.rec = dataclasses.replace(rec, qmp_socket_path=self.qmp)  # the VM as the target sees it
        listen(self.call, self.rec, validate_request({"name": rec.name, "to": "hv-b"}, "hv-a"), self.uri)

    def call(self, _rec, command, arguments=None):
        return qmp_execute(self.qmp, "target", command, arguments)

    def status(self):
        return qmp_execute(self.qmp, "target", "query-status")["status"]

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: self.pid not in qemu_processes(self.dir), 10)
        shutil.rmtree(self.dir, ignore_errors=True)


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
    target = Target(vm["pid"], run_a, 47311, rec)
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
    target = Target(vm["pid"], run_a, 47312, rec)
    try:
        with pytest.raises(MigrationFailed) as err:
            send(qmp, rec, slow, target.uri, time.monotonic() + 1)
        assert "did not complete within timeout" in str(err.value)
        assert qmp(rec, "query-status")["status"] == "running"
    finally:
        target.kill()

    # 3. Completed, but the target does not take over: the source takes the guest back.
    target = Target(vm["pid"], run_a, 47313, rec)
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
    target = Target(vm["pid"], run_a, 47314, rec)
    try:
        done = send(qmp, rec, fast, target.uri, time.monotonic() + 120)
        take_over(target.call, target.rec, time.monotonic() + 30)
        assert target.status() == "running"
        assert _uptime(target.console) > middle, "the guest's clock went on: no restart"
        with open(target.serial) as fh:
            assert "boot kernel=" not in fh.read(), "the target's console shows no new boot"
        print("migration: %s" % done)
    finally:
        target.kill()
