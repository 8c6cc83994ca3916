# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vms through its library (vm/batch.py) the way the module's main() calls it,
with real QEMU processes: firmware-only VMs under TCG (no guest OS, so they ignore the ACPI
button and stop only by force)."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import make_image, vm_list, wait_for
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_runs_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]

SPEC = vm_argument_spec()
# Small, quick, and stopped by force soon after the ACPI button (firmware does not power off).
FW = {"accel": "tcg", "memory_mb": 64, "vcpus": 1, "force": True, "stop_timeout": 0.5}


class Env:
    def __init__(self, workdir):
        self.workdir = workdir
        self.images = os.path.join(workdir, "images")
        os.makedirs(self.images)
        self.url = "sqlite:///%s/vms.db" % workdir
        self.run_dir = os.path.join(workdir, "run")

    def context(self, host_id="hv-a", lock_timeout=30.0):
        return HostContext.open(
            self.url, self.run_dir, host_id=host_id, lock_timeout=lock_timeout, storage_roots=[self.images]
        )

    def converge(
        self, vms, defaults=None, check=False, diff=False, parallel=None, exclusive_state=None, host_id="hv-a", lock=30
    ):
        """What the module does with these options (its result before Ansible prints it)."""
        prepared = prepare(vms, dict(FW, **(defaults or {})), lambda entry, path: validate_options(SPEC, entry, path))
        assert prepared.problems == []
        ctx = self.context(host_id, lock)
        try:
            batch = VmBatch(ctx, lambda: self.context(host_id, lock), parallel)
            return batch.converge(prepared.entries, check, diff, exclusive_state, prepared.stop_params)
        finally:
            ctx.close()

    def rows(self):
        ctx = self.context()
        try:
            return {rec.name: rec for rec in records.load_all(ctx.store)}
        finally:
            ctx.close()

    def status(self, name, host_id="hv-a"):
        svc = VmService(self.context(host_id))
        try:
            found = vm_list(svc, name)
            return found[0]["status"] if found else "absent"
        finally:
            svc.close()


@pytest.fixture
def env(workdir):
    environment = Env(workdir)
    yield environment
    for name, rec in environment.rows().items():  # never leave a VM behind
        svc = VmService(environment.context(rec.host))
        svc.ensure({"name": name, "state": "absent", "force": True, "stop_timeout": 1}, False)
        svc.close()
    assert kill_leftovers(workdir) == [], "QEMU processes outlived their VM rows"


def by_name(result):
    return {r["name"]: r for r in result["vms"] + result["unlisted"]}


def test_parallel_start_then_nothing_to_do_then_stop(env):
    names = ["p1", "p2", "p3", "p4"]
    done = env.converge([{"name": n} for n in names], {"state": "running"}, diff=True, parallel=4)
    assert "failed" not in done, done["msg"]
    assert done["changed"] is True
    assert [r["name"] for r in done["vms"]] == names  # input order
    assert all(r["plan"]["actions"] == ["create", "start"] and r["vm"]["status"] == "running" for r in done["vms"])
    assert done["summary"] == {
        "total": 4,
        "changed": 4,
        "unchanged": 0,
        "failed": 0,
        "unlisted": 0,
        "actions": {"create": 4, "start": 4},
        "status": {"running": 4},
    }
    assert done["msg"] == "4 VMs: 4 changed, 0 unchanged, 0 failed (create 4, start 4)"
    assert [d["before_header"] for d in done["diff"]] == names
    assert done["vms"][0]["diff"]["before"] == {"state": "absent"}
    pids = {r["name"]: r["vm"]["pid"] for r in done["vms"]}
    rows = env.rows()
    assert len(set(pids.values())) == 4
    assert all(process_runs_vm(pids[n], rows[n].uuid) for n in names)

    again = env.converge([{"name": n} for n in names], {"state": "running"}, parallel=4)
    assert again["changed"] is False and "failed" not in again
    assert all(r["plan"]["actions"] == [] and not r["changed"] for r in again["vms"])
    assert {r["name"]: r["vm"]["pid"] for r in again["vms"]} == pids
    assert again["summary"]["unchanged"] == 4 and "diff" not in again

    stopped = env.converge([{"name": n} for n in names], {"state": "stopped"}, parallel=2)
    assert stopped["summary"]["actions"] == {"stop": 4} and stopped["summary"]["status"] == {"stopped": 4}
    assert not any(process_runs_vm(pids[n], rows[n].uuid) for n in names)


def test_workers_go_on_while_one_vm_is_locked(env):
    """Per-VM locks, and real parallelism: while the test holds p-a's lock, the second
    worker starts p-b and p-c (with parallel: 1 they would wait behind p-a)."""
    holder = env.context()
    outcome = {}
    worker = None
    try:
        with holder.store.vm_lock("p-a", 5):
            worker = threading.Thread(
                target=lambda: outcome.update(
                    env.converge([{"name": "p-a"}, {"name": "p-b"}, {"name": "p-c"}], {"state": "running"}, parallel=2)
                )
            )
            worker.start()
            assert wait_for(lambda: env.status("p-b") == "running" and env.status("p-c") == "running", 60)
            assert env.status("p-a") == "absent" and worker.is_alive()
    finally:
        holder.close()
        if worker is not None:
            worker.join(120)
    assert "failed" not in outcome, outcome.get("msg")
    assert by_name(outcome)["p-a"]["plan"]["actions"] == ["create", "start"] and env.status("p-a") == "running"


def test_a_locked_vm_fails_alone_and_is_named(env):
    holder = env.context()
    try:
        with holder.store.vm_lock("l-a", 5):
            done = env.converge([{"name": "l-a"}, {"name": "l-b"}], {"state": "running"}, parallel=2, lock=1.0)
    finally:
        holder.close()
    assert done["failed"] is True
    failed = by_name(done)["l-a"]
    assert failed["failed"] is True and failed["changed"] is False and "vm" not in failed
    assert failed["msg"].startswith("vms[0] (l-a): VM l-a is locked by another operation")
    assert done["msg"].startswith("1 of 2 VMs failed: vms[0] (l-a): ")
    assert by_name(done)["l-b"]["vm"]["status"] == "running" and env.status("l-b") == "running"
    assert env.status("l-a") == "absent"


def test_bad_entries_fail_alone_and_leave_nothing(env):
    outside = make_image(os.path.join(env.workdir, "outside.qcow2"), "qcow2", 1)
    inside = make_image(os.path.join(env.images, "ok.qcow2"), "qcow2", 1)
    vms = [
        {"name": "ok1", "disks": [{"path": inside}]},
        {"name": "bad-disk", "disks": [{"path": inside, "readonly": True}, {"path": outside}]},
        {"name": "ok2"},
        {"name": "bad-mem", "memory_mb": 8},
        {"name": "bad-type", "vcpus": "many"},
    ]
    done = env.converge(vms, {"state": "running"}, parallel=2)
    assert done["failed"] is True and done["changed"] is True
    results = done["vms"]
    assert [r["failed"] for r in results] == [False, True, False, True, True]
    assert results[1]["msg"].startswith("vms[1].disks[1].path: ") and "storage roots" in results[1]["msg"]
    assert results[3]["msg"] == "vms[3].memory_mb: must be at least 16, got 8"
    assert results[4]["msg"].startswith("vms[4]: argument 'vcpus' is of type str")
    assert done["msg"].startswith("3 of 5 VMs failed: vms[1].disks[1].path: ")
    assert "; vms[3].memory_mb: must be at least 16, got 8; vms[4]: argument 'vcpus'" in done["msg"]
    assert env.status("ok1") == "running" and env.status("ok2") == "running"
    assert sorted(env.rows()) == ["ok1", "ok2"]  # nothing half-made
    assert done["summary"]["failed"] == 3 and done["summary"]["changed"] == 2


def test_check_mode_changes_nothing_and_predicts_the_actions(env):
    vms = [{"name": "c1"}, {"name": "c2", "state": "present"}]
    predicted = env.converge(vms, {"state": "running"}, check=True, diff=True)
    assert predicted["changed"] is True
    assert [r["plan"]["actions"] for r in predicted["vms"]] == [["create", "start"], ["create"]]
    # one name per fact: the actions are the plan's, not repeated beside it
    assert set(predicted["vms"][0]) == {"name", "changed", "failed", "vm", "plan", "warnings", "diff"}
    assert [r["vm"]["status"] for r in predicted["vms"]] == ["running", "stopped"]
    assert predicted["vms"][0]["diff"]["after"]["memory_mb"] == 64
    assert env.rows() == {} and kill_leftovers(env.workdir) == []
    done = env.converge(vms, {"state": "running"})
    assert [r["plan"]["actions"] for r in done["vms"]] == [r["plan"]["actions"] for r in predicted["vms"]]
    assert [r["plan"] for r in done["vms"]] == [r["plan"] for r in predicted["vms"]]
    assert done["vms"][0]["plan"]["changes"]["memory_mb"] == "next_start"
    stop = env.converge(vms, {"state": "stopped"}, check=True)
    assert [r["plan"]["actions"] for r in stop["vms"]] == [["stop"], []]
    assert env.status("c1") == "running"


def test_exclusive_stops_then_removes_this_hosts_unlisted_vms(env):
    env.converge([{"name": "keep"}, {"name": "stray-run"}], {"state": "running"})
    env.converge([{"name": "stray-def"}], {"state": "present"})
    env.converge([{"name": "foreign"}], {"state": "present"}, host_id="hv-b")

    predicted = env.converge([{"name": "keep"}], {"state": "running"}, check=True, exclusive_state="stopped")
    assert [r["name"] for r in predicted["unlisted"]] == ["stray-def", "stray-run"]
    assert [r["plan"]["actions"] for r in predicted["unlisted"]] == [[], ["stop"]]
    assert env.status("stray-run") == "running"

    done = env.converge([{"name": "keep"}], {"state": "running"}, exclusive_state="stopped")
    assert done["changed"] is True and done["summary"]["unlisted"] == 2
    assert done["vms"][0]["plan"]["actions"] == [] and done["unlisted"][1]["vm"]["status"] == "stopped"
    assert env.status("stray-run") == "stopped" and env.status("keep") == "running"

    gone = env.converge([{"name": "keep"}], {"state": "running"}, exclusive_state="absent")
    assert [r["plan"]["actions"] for r in gone["unlisted"]] == [["delete"], ["delete"]]
    assert sorted(env.rows()) == ["foreign", "keep"]  # another host's VM is left alone
    assert env.status("keep") == "running"


def test_defaults_merge_into_entries(env):
    base = make_image(os.path.join(env.images, "base.qcow2"), "qcow2", 1)
    done = env.converge(
        [
            {"name": "m1", "graphics": {"password": "s3cret"}},
            {"name": "m2", "graphics": {"type": "none"}, "disks": [], "memory_mb": 128},
            {"name": "m3", "memory_mb": None},
        ],
        {
            "state": "present",
            "memory_mb": 96,
            "graphics": {"type": "vnc", "listen": "127.0.0.1"},
            "disks": [{"path": base}],
        },
    )
    assert "failed" not in done, done["msg"]
    m1, m2, m3 = (r["vm"] for r in done["vms"])
    assert m1["graphics"] == {
        "type": "vnc",
        "listen": "127.0.0.1",
        "port": None,
        "port_requested": None,
        "password_set": True,
        "tls": None,
    }
    assert [k for k in m1 if k.startswith("graphics_")] == []  # the graphics dict says it once
    assert [d["path"] for d in m1["disks"]] == [base] and m1["memory_mb"] == 96
    assert m2["graphics"]["type"] == "none" and list(m2["disks"]) == [] and m2["memory_mb"] == 128
    assert m3["memory_mb"] == 96 and m3["graphics"]["type"] == "vnc" and not m3["graphics"]["password_set"]


def test_zero_parallel_is_refused(env):
    ctx = env.context()
    try:
        with pytest.raises(SpecError) as err:
            VmBatch(ctx, env.context, 0)
    finally:
        ctx.close()
    assert str(err.value).startswith("parallel: must be a whole number of at least 1")


def test_exclusive_with_an_empty_list_needs_allow_empty_playbook(workdir):
    """An undefined variable that defaults to [] with exclusive: true wipes nothing unless
    the task says allow_empty: true (issue 18 item 14), from a playbook, check mode too."""
    from helpers import run_playbook

    try:
        done = run_playbook(
            "vms_exclusive_empty.yml",
            {"db_url": "sqlite:///%s/pb.db" % workdir, "run_dir": os.path.join(workdir, "run")},
        )
    finally:
        assert kill_leftovers(workdir) == [], "the playbook left a QEMU running"
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
