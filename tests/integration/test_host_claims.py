# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host-scoped claims (issue 18 item 4): two VMs pinning the same host CPU exclusively,
converged at the same moment, on both backends. The check used to read the other VMs'
stored pins under each VM's own lock only, so both were accepted. No guest boots: the
claim is taken when a task stores a spec (state: present)."""

from __future__ import annotations

import os
import threading

import pytest
from helpers import vm_list

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.store.claims import CLAIM_CPU
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.both_backends, pytest.mark.playbook]

ROUNDS = 5
PINNED = {"state": "present", "accel": "tcg", "memory_mb": 64, "vcpus": 1, "cpu_pinning": {0: "1"}}
EXCLUSIVE = dict(PINNED, cpu_pinning_exclusive=True)


@pytest.fixture
def claims_env(db_url, workdir):
    run_dir = os.path.join(workdir, "run")

    def context():
        return HostContext.open(db_url, run_dir, host_id="hv-a", lock_timeout=60)

    svc = VmService(context())
    yield svc, context
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 1}, False)
    assert svc.store.list_host_claims() == []  # removing a VM drops its claims
    svc.close()


def _race(context, params_a, params_b):
    """Both ensure calls released at once, each on its own service; name -> error or None."""
    barrier = threading.Barrier(2)
    outcome = {}

    def call(params):
        svc = VmService(context())
        try:
            barrier.wait(30)
            svc.ensure(params, check_mode=False)
            outcome[params["name"]] = None
        except Exception as exc:  # the test looks at it
            outcome[params["name"]] = exc
        finally:
            svc.close()

    threads = [threading.Thread(target=call, args=(p,)) for p in (params_a, params_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return outcome


def _one_accepted(svc, outcome, round_no):
    winners = [name for name, exc in outcome.items() if exc is None]
    assert len(winners) == 1, "round %d: %r" % (round_no, outcome)
    (loser,) = set(outcome) - set(winners)
    err = outcome[loser]
    assert isinstance(err, SpecError) and err.field == "cpu_pinning", repr(err)
    assert "cpu_pinning_exclusive" in err.reason and "VM %s" % winners[0] in err.reason, err.reason
    assert [vm.name for vm in records.load_all(svc.store)] == winners  # the refused VM was not created
    claims = svc.store.list_host_claims("hv-a", CLAIM_CPU)
    assert [(c["value"], c["owner_name"]) for c in claims] == [("1", winners[0])]
    return winners[0]


def test_concurrent_exclusive_pins_accept_exactly_one(claims_env):
    svc, context = claims_env
    for round_no in range(ROUNDS):
        a, b = "xa%d" % round_no, "xb%d" % round_no
        # Both exclusive, then one exclusive against one that only pins: each way one wins.
        second = EXCLUSIVE if round_no % 2 == 0 else PINNED
        winner = _one_accepted(svc, _race(context, dict(EXCLUSIVE, name=a), dict(second, name=b)), round_no)
        svc.ensure({"name": winner, "state": "absent"}, check_mode=False)
        assert svc.store.list_host_claims() == []


def test_infinivirt_vms_with_two_workers_accepts_exactly_one(claims_env):
    """The reported case: two entries of one infinivirt_vms task, parallel: 2."""
    svc, context = claims_env
    spec = vm_argument_spec()
    for round_no in range(ROUNDS):
        entries = [dict(EXCLUSIVE, name="va%d" % round_no), dict(EXCLUSIVE, name="vb%d" % round_no)]
        prepared = prepare(entries, {}, lambda entry, path: validate_options(spec, entry, path))
        ctx = context()
        try:
            done = VmBatch(ctx, context, 2).converge(prepared.entries, False)
        finally:
            ctx.close()
        assert done["summary"]["failed"] == 1, done["msg"]
        (failed,) = [r for r in done["vms"] if r["failed"]]
        (accepted,) = [r["name"] for r in done["vms"] if not r["failed"]]
        assert "cpu_pinning: " in failed["msg"] and "cpu_pinning_exclusive" in failed["msg"], failed["msg"]
        assert "VM %s" % accepted in failed["msg"], failed["msg"]
        svc.ensure({"name": accepted, "state": "absent"}, check_mode=False)


def test_claims_follow_the_pins_and_the_vm(claims_env):
    svc, _context = claims_env
    svc.ensure(dict(EXCLUSIVE, name="holder"), check_mode=False)
    with pytest.raises(SpecError, match="VM holder holds them exclusively"):
        svc.ensure(dict(PINNED, name="other"), check_mode=False)
    # Pins moved: the claim moves with them and CPU 1 is free again.
    svc.ensure({"name": "holder", "cpu_pinning": {0: "0"}}, check_mode=False)
    assert [c["value"] for c in svc.store.list_host_claims("hv-a", CLAIM_CPU)] == ["0"]
    svc.ensure(dict(PINNED, name="other"), check_mode=False)
    # Not exclusive any more, then no pins at all: shared claims, then none for holder.
    svc.ensure({"name": "holder", "cpu_pinning_exclusive": False, "cpu_pinning": {0: "1"}}, check_mode=False)
    holders = sorted((c["value"], c["owner_name"], c["exclusive"]) for c in svc.store.list_host_claims())
    assert holders == [("1", "holder", False), ("1", "other", False)]
    svc.ensure({"name": "holder", "cpu_pinning": {}}, check_mode=False)
    assert [c["owner_name"] for c in svc.store.list_host_claims()] == ["other"]
