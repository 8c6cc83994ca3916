# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Concurrent callers on one VM, on both backends: the end state is always a legal one and
the database agrees with the processes (no race between two start() calls)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import traceback

import pytest
from helpers import assert_db_agrees, run_playbook, vm_list
from qemu_procs import kill_leftovers, qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu, pytest.mark.both_backends, pytest.mark.playbook]

CALLERS = 20
# A VM without a kernel: SeaBIOS finds nothing to boot, so it starts in milliseconds and
# only a forced stop ends it.
VM = {"name": "racer", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


def _call(db_url, run_dir, params, barrier, results):
    try:
        service = VmService.open(db_url, run_dir, lock_timeout=120)
        barrier.wait(60)
        out = service.ensure(params, check_mode=False)
        results.put(("ok", params["state"], out.changed))
        service.close()
    except Exception:  # report, so the test can show what went wrong
        results.put(("error", params["state"], traceback.format_exc()))


def race(db_url, run_dir, states):
    """Run one ensure per entry of ``states`` in its own process, all released at once."""
    barrier = multiprocessing.Barrier(len(states))
    results = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_call, args=(db_url, run_dir, dict(VM, state=s), barrier, results))
        for s in states
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _p in procs]
    for p in procs:
        p.join(30)
    errors = [o[2] for o in outcomes if o[0] == "error"]
    assert not errors, errors[0]
    return outcomes


@pytest.fixture
def race_env(db_url):
    run_dir = tempfile.mkdtemp(prefix="iv-race")
    service = VmService.open(db_url, run_dir)
    yield db_url, run_dir, service
    for vm in vm_list(service):
        service.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 1}, False)
    service.close()
    leaked = kill_leftovers(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    assert leaked == [], "QEMU processes outlived their VM rows"


def test_twenty_starts_make_one_qemu(race_env):
    db_url, run_dir, service = race_env
    service.ensure(dict(VM, state="stopped"), False)
    outcomes = race(db_url, run_dir, ["running"] * CALLERS)
    assert sorted(o[2] for o in outcomes) == [False] * (CALLERS - 1) + [True]
    uuid = records.load(service.store, "racer").uuid
    assert len(qemu_processes(uuid)) == 1
    assert assert_db_agrees(service, "racer") == "running"


def test_start_racing_stop_ends_in_a_legal_state(race_env):
    db_url, run_dir, service = race_env
    service.ensure(dict(VM, state="stopped"), False)
    race(db_url, run_dir, ["running", "stopped"] * (CALLERS // 2))
    assert assert_db_agrees(service, "racer") in ("running", "stopped")


def test_create_racing_delete_ends_in_a_legal_state(race_env):
    db_url, run_dir, service = race_env
    race(db_url, run_dir, ["running", "absent"] * (CALLERS // 2))
    state = assert_db_agrees(service, "racer")
    assert state in ("running", "absent")
    if state == "absent":
        assert not any(f.endswith((".pid", ".qmp")) for f in os.listdir(run_dir))


def test_twenty_playbook_forks_make_one_qemu(db_url, tmp_path):
    run_dir = tempfile.mkdtemp(prefix="iv-forks")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[forks]\n" + "".join("fork%02d ansible_connection=local\n" % i for i in range(CALLERS)))
    defined = VmService.open(db_url, run_dir)
    defined.ensure(dict(VM, name="forked", state="stopped"), False)
    defined.close()
    try:
        done = run_playbook(
            "race_start.yml", {"db_url": db_url, "run_dir": run_dir}, inventory=str(inventory), forks=CALLERS
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        recap = [line for line in done.stdout.splitlines() if line.startswith("fork")]
        assert len(recap) == CALLERS
        changed = [line for line in recap if "changed=1" in line]
        assert len(changed) == 1, "\n".join(recap)
        service = VmService.open(db_url, run_dir)
        assert assert_db_agrees(service, "forked") == "running"
        service.ensure(dict(VM, name="forked", state="absent"), False)
        service.close()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _slow_stop(db_url, run_dir):
    # The guest ignores ACPI, so this waits out its whole stop_timeout holding the lock.
    VmService.open(db_url, run_dir).ensure(dict(VM, state="stopped", stop_timeout=60, force=False), False)


def test_a_killed_holder_mid_operation_lets_the_next_caller_in(race_env):
    db_url, run_dir, service = race_env
    service.ensure(dict(VM, state="running"), False)
    holder = multiprocessing.Process(target=_slow_stop, args=(db_url, run_dir))
    holder.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until it holds the lock and waits on the guest
        try:
            VmService.open(db_url, run_dir, lock_timeout=0.05).ensure(dict(VM, state="running"), False)
        except LockTimeout:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the holder never took the lock")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    t0 = time.monotonic()
    out = VmService.open(db_url, run_dir, lock_timeout=10).ensure(dict(VM, state="stopped"), False)
    assert time.monotonic() - t0 < 10 and out.changed
    assert assert_db_agrees(service, "racer") == "stopped"
