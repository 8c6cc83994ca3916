# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_migrate's two sides together (issue 23): the source task (vm/migration.py)
and the target host's real monitor (monitor/receiving.py, as a process), two hosts on one
PostgreSQL store with their own run dirs, the stream on loopback. The VMs are
firmware-only (no guest kernel: QEMU starts in about a second); the guest's own view of a
move (its console and uptime going on) is test_migration.py's."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from helpers import make_image, qemu_event_log, qemu_events, run_playbook
from migration_target import HandTarget
from monitor_proc import MonitorProcess
from qemu_procs import qemu_processes
from return_docs import return_problems
from vnc_client import vnc_auth

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.receiving import free_port
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen, take_over
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed, recover, send
from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import POSTCOPY_SWITCHED, MigrationService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import validate_request
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.postgres]

PASSWORD = "Pw-8x!Qz"  # eight bytes, as VNC allows
VM = {"name": "mover", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


@contextlib.contextmanager
def _hosts(pg_url, b_root, bind=None):
    """Host A (this process: VmService and the migration task) and host B (its monitor, a
    process, receiving on 127.0.0.1); each with its own run dir, as on two machines. The
    storage dir has ``shared``, ``local`` and ``b-local``; B's storage root is ``b_root``.
    ``bind`` (a, b): B's monitor (and its QEMUs) runs in a mount namespace of its own where
    ``<storage>/a`` is a bind mount of ``<storage>/b``."""
    dirs = [tempfile.mkdtemp(prefix="iv-mig") for _n in range(3)]  # run dirs of A and B, storage
    for name in ("shared", "local", "b-local"):
        os.mkdir(os.path.join(dirs[2], name))
    key = os.path.join(dirs[2], "secret.key")  # hosts sharing a store share its key
    a = VmService.open(pg_url, dirs[0], hostname="hv-a", nvram_dir=os.path.join(dirs[0], "nvram"), secret_key_file=key)
    monitor = MonitorProcess(
        pg_url,
        dirs[1],
        "hv-b",
        os.path.join(dirs[1], "monitor.log"),
        key_file=key,
        roots=[os.path.join(dirs[2], b_root)],
        extra=["--migration-address", "127.0.0.1"],
    )
    if bind:
        mount = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        over, source = (os.path.join(dirs[2], name) for name in bind)
        monitor.argv = [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            mount,
            "sh",
            source,
            over,
        ] + monitor.argv
    monitor.start()
    try:
        yield a, monitor, dirs
    finally:
        monitor.stop()
        for pid in {pid for d in dirs for pid in qemu_processes(d)}:  # the VMs on either host (monitor stopped)
            os.kill(pid, 9)
        a.close()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def two_hosts(pg_url):
    """A and B sharing ``<storage>/shared`` (B sees the shared storage only)."""
    with _hosts(pg_url, "shared") as hosts:
        yield hosts


def _qemus(uuid, run_dir):
    """The VM's QEMUs started from ``run_dir`` (the host monitor's argv names run_dir too)."""
    return sorted(set(qemu_processes(uuid)) & set(qemu_processes(run_dir)))


def _hand_target(source_pid, run_a, rec):
    """A target QEMU started by hand from the source's command line, told to listen."""
    target = HandTarget(source_pid, run_a, free_port("127.0.0.1"))
    target.rec = dataclasses.replace(rec, qmp_socket_path=target.qmp)  # the VM as the target sees it
    listen(target.call, target.rec, validate_request({"name": rec.name, "to": "hv-b"}, "hv-a"), target.uri)
    return target


def _journal(store, uuid):
    return {key: store.journal_list(key) for key in (uuid, uuid + "@hv-a", uuid + "@hv-b") if store.journal_list(key)}


def test_a_running_vm_moves_to_the_target_and_a_failed_move_changes_nothing(two_hosts):
    a, monitor, (run_a, run_b, storage) = two_hosts
    disk = make_image(os.path.join(storage, "shared", "mover.qcow2"), "qcow2", 8)
    vm = a.ensure(dict(VM, state="running", disks=[{"path": disk}]), False).vm
    uuid, pid_a = vm["uuid"], vm["pid"]
    migrate = MigrationService(a.engine)

    # 1. Check mode: the plan, nothing done.
    checked = migrate.migrate({"name": "mover", "to": "hv-b"}, True)
    assert checked["changed"] and checked["plan"]["how"] == "live" and checked["plan"]["to"] == "hv-b"
    assert a.store.get_handover(uuid) is None, "check mode writes no request"

    # 2. The source half against a target QEMU started by hand (migration_target.py): out of
    # time, cancelled; completed but never taken over, taken back. The guest runs here after each.
    rec = records.load(a.store, "mover")
    qmp = a.engine.sessions.qmp
    target = _hand_target(pid_a, run_a, rec)
    try:
        slow = validate_request({"name": "mover", "to": "hv-b", "bandwidth_mbit": 1}, "hv-a")
        with pytest.raises(MigrationFailed) as err:
            send(qmp, rec, slow, target.uri, time.monotonic() + 1)
        assert "did not complete within timeout" in str(err.value)
        assert qmp(rec, "query-status")["status"] == "running"
    finally:
        target.kill()
    target = _hand_target(pid_a, run_a, rec)
    try:
        done = send(
            qmp, rec, validate_request({"name": "mover", "to": "hv-b"}, "hv-a"), target.uri, time.monotonic() + 60
        )
        assert qmp(rec, "query-status")["status"] == "postmigrate" and done["transferred_bytes"] > 0, done
    finally:
        target.kill()
    with pytest.raises(StateError) as err:  # only the migration's own recovery lets it run here again
        a.engine.resume(rec)
    assert "is paused by a migration (QEMU status postmigrate)" in str(err.value), err.value
    assert qmp(rec, "query-status")["status"] == "postmigrate"
    with pytest.raises(MigrationFailed):
        take_over(target.call, target.rec, time.monotonic() + 5)  # its QEMU is gone: no take-over
    recover(qmp, rec)
    assert qmp(rec, "query-status")["status"] == "running" and _qemus(uuid, run_a) == [pid_a], "the same QEMU runs"

    # 3. No monitor answers for hv-c; hv-b refuses a VM whose disk it does not have.
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-c", "timeout": 2}, False)
    assert "host hv-c did not answer the migration request within 2 s" in str(err.value)
    assert a.store.get_handover(uuid)["state"] == "aborted"
    local = make_image(os.path.join(storage, "local", "stray.qcow2"), "qcow2", 8)
    a.ensure(dict(VM, name="stray", state="running", disks=[{"path": local}]), False)
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "stray", "to": "hv-b", "timeout": 30}, False)
    assert "host hv-b refused: storage auto: disks[0].path" in str(err.value), err.value
    assert "runs on hv-a as before" in str(err.value)
    assert records.load(a.store, "stray").host == "hv-a"
    a.ensure(dict(VM, name="stray", state="absent"), False)
    with pytest.raises(InfinivirtError) as err:  # B sees the marker beside the shared disk
        migrate.migrate({"name": "mover", "to": "hv-b", "storage": "copy", "timeout": 30}, False)
    assert "storage copy: disks[0].path (%s) is the same file on both hosts" % disk in str(err.value), err.value
    assert not [f for f in os.listdir(os.path.dirname(disk)) if f.startswith(".infinivirt-migration-")], "no marker"

    # 4. A task cut off right after its request: hv-b listens for a stream that never comes;
    # the next task aborts that request (hv-b cleans up) and makes its own.
    a.store.open_handover(uuid, "mover", "hv-a", "hv-b", {"name": "mover", "to": "hv-b", "timeout": 60})
    deadline = time.monotonic() + 20
    while a.store.get_handover(uuid)["state"] == "requested" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.store.get_handover(uuid)["state"] == "listening", monitor.log()
    assert len(_qemus(uuid, run_b)) == 1, "hv-b waits for the stream"
    with pytest.raises(InfinivirtError) as err:  # a stop would let a paused source guest run here
        a.ensure(dict(VM, state="stopped"), False)
    assert "has an unfinished migration to hv-b (request listening" in str(err.value), err.value
    assert _qemus(uuid, run_a) == [pid_a], "untouched"

    # 5. The target's QEMU is killed mid-stream (throttled to 1 Mbit/s: 32 MiB take minutes).
    stale = set(_qemus(uuid, run_b))

    def kill_target():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not set(_qemus(uuid, run_b)) - stale:
            time.sleep(0.05)
        time.sleep(0.5)  # the stream is under way
        for pid in set(_qemus(uuid, run_b)) - stale:
            os.kill(pid, 9)

    killer = threading.Thread(target=kill_target)
    killer.start()
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-b", "bandwidth_mbit": 1, "timeout": 60}, False)
    killer.join()
    assert "was not migrated and runs on hv-a as before" in str(err.value), monitor.log()
    assert "the migration to tcp:127.0.0.1:" in str(err.value) and "failed" in str(err.value), err.value
    rec = records.load(a.store, "mover")
    assert (rec.host, rec.qemu_pid) == ("hv-a", pid_a), "the row still names A and its QEMU"
    assert a.engine.sessions.query_status(rec) == "running", "the source guest runs"
    assert a.store.get_handover(uuid)["state"] in ("aborted", "refused")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (uuid + "@hv-b") in _journal(a.store, uuid):
        time.sleep(0.1)
    assert list(_journal(a.store, uuid)) == [uuid], "B's side is cleaned up: %s" % monitor.log()
    assert _qemus(uuid, run_b) == [] and not any(uuid in f for f in os.listdir(run_b)), os.listdir(run_b)

    # 6. The move: the row names B and B's QEMU; nothing of the VM is left on A.
    try:
        moved = migrate.migrate({"name": "mover", "to": "hv-b", "max_downtime_ms": 100}, False)
    except InfinivirtError as exc:
        raise AssertionError("%s\n%s" % (exc, monitor.log())) from None
    assert moved["changed"] and moved["vm"]["host"] == "hv-b", moved
    numbers = moved["migration"]
    assert numbers["transferred_bytes"] > 0 and numbers["downtime_ms"] is not None, numbers
    assert numbers["total_time_ms"] < 3000, "step 2's 1 Mbit/s limit must not stay in QEMU: %s" % numbers
    rec = records.load(a.store, "mover")
    assert rec.host == "hv-b" and rec.pidfile_path.startswith(run_b), rec
    assert _qemus(uuid, run_b) == [rec.qemu_pid], "B's QEMU is the row's"
    assert _qemus(uuid, run_a) == [], "A's QEMU is gone"
    assert not any(uuid in f for f in os.listdir(run_a)), os.listdir(run_a)
    assert list(_journal(a.store, uuid)) == [uuid] and all(
        ref.startswith(run_b) for _k, ref in a.store.journal_list(uuid)
    ), _journal(a.store, uuid)
    kinds = [e["kind"] for e in a.store.list_events(uuid, limit=20)]
    for kind in ("migration_started", "migration_failed", "migration_listening", "migrated_in", "migrated"):
        assert kind in kinds, kinds
    print("migration: %s" % numbers)

    # 6b. With a LUKS disk (shared) and a VNC password: B's QEMU opens the disk with the key
    # from the store and takes the password over QMP; neither is in its command line.
    vault_disk = os.path.join(storage, "shared", "vault.qcow2")
    disks = DiskService(a.store, a.secret_box, "hv-a", [os.path.join(storage, "shared")], lock_timeout=30)
    disks.ensure({"path": vault_disk, "format": "qcow2", "size": "16M", "encrypt": True}, False)
    vault = dict(VM, name="vault", state="running", disks=[{"path": vault_disk}], graphics={"type": "vnc"})
    a.ensure(dict(vault, graphics={"type": "vnc", "password": PASSWORD}), False)
    assert migrate.migrate({"name": "vault", "to": "hv-b"}, False)["vm"]["host"] == "hv-b", monitor.log()
    there = records.load(a.store, "vault")
    assert there.host == "hv-b" and _qemus(there.uuid, run_b) == [there.qemu_pid]
    blocks = qmp_execute(there.qmp_socket_path, "vault", "query-block")
    assert [b["inserted"]["encrypted"] for b in blocks if b.get("inserted")] == [True], blocks
    assert vnc_auth("127.0.0.1", there.launch_graphics_port, PASSWORD) == "ok"
    assert vnc_auth("127.0.0.1", there.launch_graphics_port, "wrong-pw") != "ok"
    key = read_luks_key(a.store, a.secret_box, os.path.realpath(vault_disk))
    argv = open("/proc/%d/cmdline" % there.qemu_pid, "rb").read().decode()
    assert PASSWORD not in argv and key not in argv, "secrets stay out of the target's argv"

    # 7. A task cut off after "done" left files of A's side (journaled under <uuid>@hv-a): the
    # next task on the VM from A removes them, and never B's QEMU, which the row names now.
    leftover = os.path.join(run_a, uuid + ".pid")
    with open(leftover, "w") as fh:
        fh.write("%d\n" % rec.qemu_pid)  # even naming B's QEMU
    a.store.journal_add(uuid + "@hv-a", "pidfile", leftover)
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-c"}, False)
    assert "runs on host hv-b" in str(err.value), err.value
    assert not os.path.exists(leftover) and a.store.journal_list(uuid + "@hv-a") == []
    assert _qemus(uuid, run_b) == [rec.qemu_pid], "B's QEMU is not A's to end"

    # 8. Again to B: nothing to do.
    assert not migrate.migrate({"name": "mover", "to": "hv-b"}, False)["changed"]

    # 9. A stopped VM moves offline: ownership only, no monitor asked.
    parked = a.ensure(dict(VM, name="parked", state="stopped"), False).vm
    checked = migrate.migrate({"name": "parked", "to": "hv-b"}, True)
    assert checked["changed"] and checked["plan"]["how"] == "offline" and checked["vm"]["host"] == "hv-b"
    assert records.load(a.store, "parked").host == "hv-a", "check mode moves nothing"
    offline = migrate.migrate({"name": "parked", "to": "hv-b"}, False)
    assert offline["changed"] and offline["vm"]["host"] == "hv-b" and a.store.get_handover(parked["uuid"]) is None
    assert records.load(a.store, "parked").host == "hv-b"
    assert "migrated" in [e["kind"] for e in a.store.list_events(parked["uuid"], limit=5)]
    again = migrate.migrate({"name": "parked", "to": "hv-b"}, False)
    assert not again["changed"]

    # 10. A stopped VM with disks asks B, which checks them: outside B's storage roots is refused
    # by name (nothing moves); on shared storage B sees the marker: nothing is copied, the row moves.
    local = make_image(os.path.join(storage, "local", "cold.qcow2"), "qcow2", 1)
    shared = make_image(os.path.join(storage, "shared", "cold.qcow2"), "qcow2", 16)
    cold = a.ensure(dict(VM, name="cold", state="stopped", disks=[{"path": shared}, {"path": local}]), False).vm
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "cold", "to": "hv-b", "timeout": 30}, False)
    assert "refused" in str(err.value) and "disks[1].path" in str(err.value), err.value
    assert records.load(a.store, "cold").host == "hv-a" and a.store.get_handover(cold["uuid"])["state"] == "refused"
    a.ensure(dict(VM, name="cold", state="stopped", disks=[{"path": shared}]), False)
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "cold", "to": "hv-b", "storage": "copy", "timeout": 30}, False)
    assert "disks[0].path (%s) is the same file on both hosts" % shared in str(err.value), err.value
    cold_moved = migrate.migrate({"name": "cold", "to": "hv-b"}, False)
    assert cold_moved["migration"]["storage"] == "shared" and "copied_disks" not in cold_moved["migration"], cold_moved
    assert records.load(a.store, "cold").host == "hv-b" and a.store.get_handover(cold["uuid"])["state"] == "done"
    assert [n for n in os.listdir(os.path.join(storage, "shared")) if n.startswith(".infinivirt")] == [], "no marker"
    results = [checked, moved, offline, again, cold_moved]
    assert not return_problems("infinivirt_migrate", results, complete=False), "RETURN documents what it returns"


@pytest.mark.playbook
def test_a_source_left_by_a_failed_post_copy_switch_never_runs_again(two_hosts):
    """The stream completed to a target that then died after a post-copy switch (its event,
    as send's switch writes it; test_migration.py proves the real switch writes it): the next
    task refuses instead of resuming the guest, a resume is refused, and a stop quits QEMU
    without letting the guest run once more; then the VM starts afresh."""
    a, _monitor, (run_a, _run_b, _storage) = two_hosts
    vm = a.ensure(dict(VM, state="running"), False).vm
    uuid, migrate = vm["uuid"], MigrationService(a.engine)
    rec = records.load(a.store, "mover")
    events = qemu_event_log(a, vm)
    target = _hand_target(vm["pid"], run_a, rec)
    request = validate_request({"name": "mover", "to": "hv-c"}, "hv-a")
    try:
        send(a.engine.sessions.qmp, rec, request, target.uri, time.monotonic() + 60)
    finally:
        target.kill()
    a.store.open_handover(uuid, "mover", "hv-a", "hv-c", {"name": "mover", "to": "hv-c"})
    migrate._event(rec, "migration_started", {"to": "hv-c"})
    migrate._event(rec, POSTCOPY_SWITCHED, {"to": "hv-c"})
    assert a.store.move_handover(uuid, "requested", "refused", error="hv-c's QEMU died after the switch")
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-b"}, False)
    assert "failed after the post-copy switch" in str(err.value) and "cannot run again here" in str(err.value)
    with pytest.raises(InfinivirtError) as err:
        a.ensure(dict(VM, state="running"), False)
    assert "paused by a migration (QEMU status postmigrate)" in str(err.value), err.value
    assert a.engine.sessions.query_status(rec) == "postmigrate"
    stopped = a.ensure(dict(VM, state="stopped", force=False, stop_timeout=30), False)
    assert stopped.changed and _qemus(uuid, run_a) == []
    seen = [e["event"] for e in qemu_events(events)]
    assert "RESUME" not in seen[seen.index("STOP") :], "the guest ran again after the migration: %s" % seen
    assert a.ensure(dict(VM, state="running"), False).vm["status"] == "running", "it starts afresh"


def test_the_drain_playbook_moves_every_running_vm(two_hosts, pg_url):
    """playbooks/drain.yml on host A: both running VMs move to B together; a stopped one stays."""
    a, monitor, (run_a, run_b, _storage) = two_hosts
    uuids = [a.ensure(dict(VM, name=name, state="running"), False).vm["uuid"] for name in ("d1", "d2")]
    a.ensure(dict(VM, name="d3", state="stopped"), False)
    options = {"db_url": pg_url, "run_dir": run_a, "host_id": "hv-a"}
    done = run_playbook(
        "../../../playbooks/drain.yml",
        {"drain_hosts": "localhost", "drain_to": "hv-b", "drain_parallel": 2, "drain_options": options},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:] + monitor.log()
    for name, uuid in zip(("d1", "d2"), uuids):
        rec = records.load(a.store, name)
        assert rec.host == "hv-b" and _qemus(uuid, run_b) == [rec.qemu_pid], name
        assert _qemus(uuid, run_a) == [], name
        assert '"name": "%s"' % name in done.stdout, done.stdout[-3000:]
    assert done.stdout.count('"host": "hv-b"') == 2 and '"transferred_bytes"' in done.stdout, "each one reported"
    assert records.load(a.store, "d3").host == "hv-a", "a stopped VM is not drained"


@pytest.fixture
def unshared_hosts(pg_url):
    """A and B whose ``<storage>/local`` has the same path and different files, as on two
    machines (B's is a bind mount of ``<storage>/b-local``)."""
    with _hosts(pg_url, "local", bind=("local", "b-local")) as hosts:
        yield hosts


def test_storage_copy_moves_a_local_disk_and_a_failed_copy_leaves_nothing(unshared_hosts):
    """storage copy on firmware-only VMs (the guest's own view of its disk is test_migration.py's)."""
    a, monitor, (run_a, run_b, storage) = unshared_hosts
    disk = make_image(os.path.join(storage, "local", "data.qcow2"), "qcow2", 64)
    written = subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 12M", disk], capture_output=True, check=False)
    assert written.returncode == 0, written.stderr
    vm = a.ensure(dict(VM, state="running", disks=[{"path": disk}]), False).vm
    uuid, pid_a = vm["uuid"], vm["pid"]
    migrate = MigrationService(a.engine)
    on_b = os.path.join(storage, "b-local", "data.qcow2")  # B's file at the same path

    print("T", time.monotonic())
    # 1. storage shared: B does not see the source's marker beside the disk: refused by name.
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-b", "storage": "shared", "timeout": 30}, False)
    assert "storage shared: disks[0].path (%s) is not the same file on both hosts" % disk in str(err.value), err.value
    assert os.listdir(os.path.join(storage, "b-local")) == [] and os.listdir(os.path.join(storage, "local")) == [
        "data.qcow2"
    ], "no marker or file left on either side"

    print("T", time.monotonic())

    # 2. B's QEMU is killed during the mirror (1 MB/s: 12 MiB take seconds): A runs on, B has no file.
    def kill_target():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (a.store.get_handover(uuid) or {}).get("state") != "listening":
            time.sleep(0.05)
        time.sleep(0.5)  # the source polls every 0.1 s, then starts the mirror (12 MiB at 1 MB/s)
        for pid in _qemus(uuid, run_b):
            os.kill(pid, 9)

    killer = threading.Thread(target=kill_target)
    killer.start()
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "mover", "to": "hv-b", "storage": "copy", "bandwidth_mbit": 8, "timeout": 60}, False)
    killer.join()
    assert "was not migrated and runs on hv-a as before" in str(err.value), monitor.log()
    assert "the storage copy stopped: host hv-b gave up: the target QEMU" in str(err.value) or "storage mirror" in str(
        err.value
    ), err.value
    rec = records.load(a.store, "mover")
    assert (rec.host, rec.qemu_pid) == ("hv-a", pid_a) and a.engine.sessions.query_status(rec) == "running"
    assert a.engine.sessions.qmp(rec, "query-block-jobs") == [], "no mirror job left on A"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (os.path.exists(on_b) or (uuid + "@hv-b") in _journal(a.store, uuid)):
        time.sleep(0.1)
    assert not os.path.exists(on_b) and list(_journal(a.store, uuid)) == [uuid], monitor.log()
    assert _qemus(uuid, run_b) == [], "nothing of it on B"

    print("T", time.monotonic())
    # 3. The move with storage auto: the disk is copied (B has no marker), the row names B.
    checked = migrate.migrate({"name": "mover", "to": "hv-b"}, True)  # check mode: the plan, B decides later
    assert checked["plan"]["storage"] == "auto" and "migration" not in checked
    try:
        moved = migrate.migrate({"name": "mover", "to": "hv-b", "max_downtime_ms": 100}, False)
    except InfinivirtError as exc:
        raise AssertionError("%s\n%s" % (exc, monitor.log())) from None
    print("T", time.monotonic())
    numbers = moved["migration"]
    assert numbers["storage"] == "copy" and numbers["copied_disks"] == [disk], numbers
    assert numbers["storage_bytes"] >= 12 << 20, numbers
    assert any("data.qcow2 copied to hv-b" in w for w in moved["warnings"]), moved
    rec = records.load(a.store, "mover")
    assert rec.host == "hv-b" and _qemus(uuid, run_b) == [rec.qemu_pid] and _qemus(uuid, run_a) == []
    same = subprocess.run(["qemu-img", "compare", "-U", disk, on_b], capture_output=True, text=True, check=False)
    assert same.returncode == 0, "B's disk holds the guest's data: %s %s" % (same.stdout, same.stderr)
    assert a.store.journal_list(uuid) and ("migrated_disk", on_b) not in a.store.journal_list(uuid), (
        "B's disk is the VM's now, not a leftover a stop would remove"
    )
    kinds = [e["kind"] for e in a.store.list_events(uuid, limit=30)]
    for kind in ("migration_storage_export", "migration_storage_ready", "migrated_in", "migrated"):
        assert kind in kinds, kinds
    print("storage copy: %s" % numbers)
    problems = return_problems("infinivirt_migrate", [checked, moved])
    assert not problems, "RETURN and the real results (every key, both ways): %s" % problems


def _daemons(run_dir):
    """The qemu-storage-daemons started from ``run_dir`` (their QMP socket is in it)."""
    return [pid for pid in qemu_processes(run_dir) if (_comm(pid) or "").startswith("qemu-storage")]


def _comm(pid):
    with contextlib.suppress(OSError), open("/proc/%d/comm" % pid) as fh:
        return fh.read().strip()
    return None


def _task_on_b(monitor, run_b, pg_url, params):
    """A VM task run as hv-b inside B's mount namespace (B's disks at A's paths)."""
    job = {"db_url": pg_url, "run_dir": run_b, "host_id": "hv-b", "action": "vm", "params": params}
    prefix = monitor.argv[: monitor.argv.index(sys.executable)]
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_task.py")
    done = subprocess.run(
        prefix + [sys.executable, script, json.dumps(job)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_stopped_vm_moves_offline_with_its_local_disk_copied(unshared_hosts, pg_url):
    """Offline storage copy: B's monitor serves the disk it made from a qemu-storage-daemon
    over NBD, A writes it with qemu-img; a killed daemon leaves the VM on A and nothing on B."""
    a, monitor, (run_a, run_b, storage) = unshared_hosts
    disk = make_image(os.path.join(storage, "local", "cold.qcow2"), "qcow2", 64)
    written = subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 4M", disk], capture_output=True, check=False)
    assert written.returncode == 0, written.stderr
    cold = a.ensure(dict(VM, name="cold", state="stopped", disks=[{"path": disk}]), False).vm
    uuid, migrate = cold["uuid"], MigrationService(a.engine)
    on_b = os.path.join(storage, "b-local", "cold.qcow2")
    with open(disk, "rb") as fh:
        before = fh.read()

    # 1. Check mode: the plan, nothing written or asked.
    checked = migrate.migrate({"name": "cold", "to": "hv-b"}, True)
    assert checked["plan"]["how"] == "offline" and a.store.get_handover(uuid) is None, checked
    assert records.load(a.store, "cold").host == "hv-a" and not os.path.exists(on_b)

    # 2. B's storage daemon killed mid-copy (1 MB/s: 4 MiB take 4 s): the row stays A's, B has no file.
    def kill_daemon():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            (a.store.get_handover(uuid) or {}).get("state") == "listening" and _daemons(run_b)
        ):
            time.sleep(0.05)
        time.sleep(0.3)
        for pid in _daemons(run_b):
            os.kill(pid, 9)

    killer = threading.Thread(target=kill_daemon)
    killer.start()
    with pytest.raises(InfinivirtError) as err:
        migrate.migrate({"name": "cold", "to": "hv-b", "bandwidth_mbit": 8, "timeout": 60}, False)
    killer.join()
    assert "was not migrated and stays on hv-a" in str(err.value) and "disks[0].path" in str(err.value), err.value
    assert records.load(a.store, "cold").host == "hv-a"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (os.path.exists(on_b) or _journal(a.store, uuid)):
        time.sleep(0.1)
    assert not os.path.exists(on_b) and not _journal(a.store, uuid), monitor.log()
    assert _daemons(run_b) == [], "no daemon left on B"

    # 3. The move (storage auto: B sees no marker, so the disk is copied).
    began = time.monotonic()
    try:
        moved = migrate.migrate({"name": "cold", "to": "hv-b"}, False)
    except InfinivirtError as exc:
        raise AssertionError("%s\n%s" % (exc, monitor.log())) from None
    print("offline copy: %.2f s %s" % (time.monotonic() - began, moved["migration"]))
    numbers = moved["migration"]
    assert numbers["storage"] == "copy" and numbers["copied_disks"] == [disk], numbers
    assert numbers["storage_bytes"] >= 4 << 20, numbers
    assert any("cold.qcow2 copied to hv-b" in w for w in moved["warnings"]), moved
    assert moved["vm"]["host"] == "hv-b" and records.load(a.store, "cold").host == "hv-b"
    same = subprocess.run(["qemu-img", "compare", disk, on_b], capture_output=True, text=True, check=False)
    assert same.returncode == 0, "B's disk holds the same data: %s %s" % (same.stdout, same.stderr)
    with open(disk, "rb") as fh:
        assert fh.read() == before, "A's file is untouched"
    for side in ("local", "b-local"):
        assert [n for n in os.listdir(os.path.join(storage, side)) if n.startswith(".infinivirt")] == [], "no marker"
    assert _daemons(run_b) == [] and not _journal(a.store, uuid), "no daemon, no leftover journaled"
    kinds = [e["kind"] for e in a.store.list_events(uuid, limit=20)]
    for kind in ("migration_storage_export", "migration_storage_ready", "migrated_in", "migrated"):
        assert kind in kinds, kinds
    problems = return_problems("infinivirt_migrate", [checked, moved], complete=False)
    assert not problems, problems

    # 4. It starts on B, on B's copy (a task run as hv-b, in B's mount namespace).
    spec = dict(VM, name="cold", disks=[{"path": disk}])
    started = _task_on_b(monitor, run_b, pg_url, dict(spec, state="running"))
    assert started.get("vm", {}).get("status") == "running", started
    assert _task_on_b(monitor, run_b, pg_url, dict(spec, state="stopped")).get("vm", {}).get("status") == "stopped"
