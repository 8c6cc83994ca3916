# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL going away: a clear error, and convergence once it is back."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import pytest
from helpers import assert_db_agrees
from monitor_proc import MonitorProcess
from pgtest import pg_server
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records, resources, session
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu, pytest.mark.postgres]

VM = {"name": "faulty", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


@pytest.fixture(scope="module")
def pg_admin_url():
    """A PostgreSQL cluster of this file's own (port 55433): these tests stop their server,
    which must not pull the shared one from under tests running beside them (xdist)."""
    saved = {k: os.environ.get(k) for k in ("INFINIVIRT_PG_PORT", "INFINIVIRT_PG_DIR")}
    os.environ.update(INFINIVIRT_PG_PORT="55433", INFINIVIRT_PG_DIR="/var/tmp/infinivirt-pg-faults")
    try:
        yield pg_server("start")
        pg_server("stop")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def run_dir():
    path = tempfile.mkdtemp(prefix="iv-fault")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cleanup(pg_url, run_dir):
    pg_server("start")
    service = VmService.open(pg_url, run_dir)
    service.ensure(dict(VM, state="absent"), False)
    service.close()


def test_database_down_before_a_task(pg_url, run_dir):
    service = VmService.open(pg_url, run_dir)
    pid = service.ensure(dict(VM, state="running"), False).vm["pid"]
    service.close()
    try:
        pg_server("stop")
        with pytest.raises(StoreError) as err:
            VmService.open(pg_url, run_dir).ensure(dict(VM, state="stopped"), False)
        message = str(err.value)
        assert message.startswith("cannot connect to the PostgreSQL state database")
        assert "infinivirt-test-pw" not in message and "********" in message
        pg_server("start")
        service = VmService.open(pg_url, run_dir)
        uuid = records.load(service.store, "faulty").uuid
        assert qemu_processes(uuid) == [pid], "the failed task must not have touched the VM"
        stopped = service.ensure(dict(VM, state="stopped"), False)
        assert stopped.changed and qemu_processes(uuid) == []
        assert assert_db_agrees(service, "faulty") == "stopped"
        assert len(records.load_all(service.store)) == 1
        service.close()
    finally:
        cleanup(pg_url, run_dir)


def test_database_lost_between_spawn_and_record(pg_url, run_dir, monkeypatch):
    # The last step before the final write: the guest runs (cont), firewall and display set.
    real_qmp = session.QmpSessions.qmp

    def cont_then_lose_database(self, rec, command, *args, **kwargs):
        result = real_qmp(self, rec, command, *args, **kwargs)
        if command == "cont":
            pg_server("stop")
        return result

    monkeypatch.setattr(session.QmpSessions, "qmp", cont_then_lose_database)
    service = VmService.open(pg_url, run_dir)
    service.ensure(dict(VM, state="stopped"), False)
    uuid = records.load(service.store, "faulty").uuid
    try:
        with pytest.raises(StoreError):
            service.ensure(dict(VM, state="running"), False)
        started = qemu_processes(uuid)
        assert len(started) == 1, "QEMU was spawned before the database went away"
        monkeypatch.setattr(session.QmpSessions, "qmp", real_qmp)
        pg_server("start")
        again = VmService.open(pg_url, run_dir)
        rerun = again.ensure(dict(VM, state="running"), False)
        assert not rerun.changed, "the VM was already running: nothing to do"
        assert qemu_processes(uuid) == started, "no second QEMU was started"
        assert assert_db_agrees(again, "faulty") == "running"
        assert len(records.load_all(again.store)) == 1
        again.close()
    finally:
        cleanup(pg_url, run_dir)


def test_database_lost_before_the_guest_runs(pg_url, run_dir, monkeypatch):
    # The database goes away after the firewall, before cont: the start is all or nothing,
    # so its QEMU is ended, and the next run starts exactly one.
    real_sync = resources.HostResources.sync_firewall

    def sync_then_lose_database(self, rec):
        real_sync(self, rec)
        if rec.running_spec is not None:
            pg_server("stop")

    monkeypatch.setattr(resources.HostResources, "sync_firewall", sync_then_lose_database)
    service = VmService.open(pg_url, run_dir)
    service.ensure(dict(VM, state="stopped"), False)
    uuid = records.load(service.store, "faulty").uuid
    try:
        with pytest.raises(StoreError):
            service.ensure(dict(VM, state="running"), False)
        assert qemu_processes(uuid) == [], "a start cut off before the guest ran leaves no QEMU"
        monkeypatch.setattr(resources.HostResources, "sync_firewall", real_sync)
        pg_server("start")
        again = VmService.open(pg_url, run_dir)
        assert again.ensure(dict(VM, state="running"), False).actions == ["start"]
        assert len(qemu_processes(uuid)) == 1
        assert assert_db_agrees(again, "faulty") == "running"
        again.close()
    finally:
        cleanup(pg_url, run_dir)


def test_the_monitor_rides_out_a_database_outage(pg_url, run_dir, tmp_path):
    """The host monitor on PostgreSQL: while the server is down it keeps reading QEMU's events
    (held in memory); once it is back, a VM that crashed meanwhile is cleaned up and every
    event is in the log."""
    service = VmService.open(pg_url, run_dir)
    monitor = MonitorProcess(pg_url, run_dir, service.hostname, str(tmp_path / "monitor.log"))
    try:
        crasher = service.ensure(dict(VM, name="crasher", state="running"), False).vm
        pauser = service.ensure(dict(VM, name="pauser", state="running"), False).vm
        service.close()
        monitor.start()
        assert monitor.wait_log("following VM pauser"), monitor.log()
        assert monitor.wait_log("following VM crasher"), monitor.log()
        pg_server("stop")
        qmp_execute(pauser["qmp_socket"], "pauser", "stop")  # QEMU's STOP event: held in memory
        os.kill(crasher["pid"], signal.SIGKILL)
        assert monitor.wait_log("state store failed"), monitor.log()
        time.sleep(1.0)
        assert monitor.proc.poll() is None, "the monitor outlived the outage"
        pg_server("start")
        service = VmService.open(pg_url, run_dir)
        deadline = time.monotonic() + 30
        while records.load(service.store, "crasher").status != "crashed":
            assert time.monotonic() < deadline, monitor.log()
            time.sleep(0.1)
        assert "state store back" in monitor.log()
        assert qemu_processes(crasher["uuid"]) == []
        deadline = time.monotonic() + 10
        while "stop" not in [e["kind"] for e in service.store.list_events(pauser["uuid"])]:
            assert time.monotonic() < deadline, monitor.log()
            time.sleep(0.1)
    finally:
        monitor.stop()
        pg_server("start")
        service = VmService.open(pg_url, run_dir)
        for name in ("crasher", "pauser"):
            service.ensure(dict(VM, name=name, state="absent"), False)
        service.close()
