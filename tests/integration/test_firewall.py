# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_firewall against real nftables in namespaces of the test's own: guests on a
Linux bridge (fwlan.py) ping and talk TCP through the rules; the store is SQLite and a real
PostgreSQL server."""

from __future__ import annotations

import dataclasses
import multiprocessing

import pytest
from fwlan import HOST_IP, Lan, sh, vm_record
from helpers import run_playbook

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall import nftables as nft
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import firewall_vm

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.playbook]

HOST = "hv-test"
PING_IN = {"direction": "in", "protocol": "icmp", "action": "drop", "name": "no-ping"}


@pytest.fixture
def lan():
    net = Lan()
    yield net
    net.close()


@pytest.fixture
def store(db_url):
    s = open_store(db_url, job_id="job-17")
    yield s
    s.close()


@pytest.fixture
def fw(store):
    return FirewallService(store, HOST, records.firewall_directory(store), lock_timeout=20)


def start(fw, lan, guest, name, **kwargs):
    """What the lifecycle does when a VM starts: the row, then the hook."""
    rec = vm_record(lan, guest, name, **kwargs)
    records.insert(fw.store, rec)
    fw.sync_vm(firewall_vm(rec))
    return rec


def stop(fw, rec):
    rec = records.load(fw.store, rec.name)
    rec.running_spec, rec.status = None, "stopped"
    records.save(fw.store, rec)
    return fw.sync_vm(firewall_vm(rec))


def vm_rules(fw, name, rules=(), check=False, **settings):
    return fw.ensure(dict(settings, scope="vm", name=name, rules=list(rules)), check)


def dept_rules(fw, name, rules=(), check=False, **settings):
    return fw.ensure(dict(settings, scope="department", name=name, rules=list(rules)), check)


def test_vm_rules_block_and_unblock(fw, lan):
    g1, g2, g3 = lan.guests
    a = start(fw, lan, g1, "a")
    start(fw, lan, g2, "b")
    assert lan.ruleset_json() == [], "a VM with neither rules nor a department is not filtered"
    assert lan.reach([(g2, g1.ip), (None, g1.ip), (g1, g3.ip)]) == [True, True, True]

    done = vm_rules(fw, "a", [PING_IN])
    assert done["changed"] and done["kernel_changes"] == ["VM a in network namespace %s" % lan.netns]
    assert lan.reach([(g2, g1.ip), (None, g1.ip), (g3, g2.ip)]) == [False, False, True]
    tcp = lan.tcp(g1, 7001, client=g2)
    assert tcp == "pong", "only ICMP is dropped"

    writes = fw.nft.writes
    again = vm_rules(fw, "a", [PING_IN])
    assert not again["changed"] and again["kernel_changes"] == [] and fw.nft.writes == writes
    assert fw.sync_vm(firewall_vm(records.load(fw.store, "a"))) is False and fw.nft.writes == writes

    assert vm_rules(fw, "a", [])["changed"]
    assert lan.reach([(g2, g1.ip), (None, g1.ip)]) == [True, True]
    assert vm_rules(fw, "a", state="absent")["changed"]
    assert lan.ruleset_json() == [], "no rules, no department: the table went with them"
    assert fw.store.get_ruleset("vm", a.uuid) is None


def test_department_rules_bind_every_member(fw, lan):
    g1, g2, g3 = lan.guests
    start(fw, lan, g1, "a", department="dev")
    dept = dept_rules(fw, "dev", [dict(PING_IN, cidr="10.77.0.0/24")])
    assert dept["changed"] and dept["kernel_changes"] == ["department dev in network namespace %s" % lan.netns]
    start(fw, lan, g2, "b", department="dev")  # joins with the department's current rules
    start(fw, lan, g3, "c")
    assert lan.reach([(g3, g1.ip), (g3, g2.ip), (g1, g3.ip), (None, g3.ip)]) == [False, False, False, True]

    # The department's drop is final: a VM's own accept cannot undo it.
    vm_rules(fw, "a", [dict(PING_IN, action="accept")])
    assert lan.reach([(g3, g1.ip)]) == [False]
    # A department accept only passes the department: the VM's rules still apply.
    dept_rules(fw, "dev", [{"direction": "in", "protocol": "icmp"}], policy_in="drop")
    vm_rules(fw, "a", [PING_IN])
    assert lan.reach([(g3, g1.ip), (g3, g2.ip)]) == [False, True]
    assert lan.tcp(g2, 7002, client=g3) is None, "the department's policy drops the rest"

    gone = fw.ensure({"scope": "department", "name": "dev", "state": "absent"}, False)
    assert gone["changed"] and fw.store.get_ruleset("department", "dev") is None
    assert lan.reach([(g3, g2.ip), (g3, g1.ip)]) == [True, False]


def test_policy_drop_with_one_open_port(fw, lan):
    g1, g2, _g3 = lan.guests
    start(fw, lan, g1, "a")
    vm_rules(
        fw,
        "a",
        [{"direction": "in", "protocol": "tcp", "ports": ["8080"], "name": "web"}],
        policy_in="drop",
        policy_out="drop",
    )
    assert lan.tcp(g1, 8080) == "pong", "the reply passes policy_out drop"
    assert lan.tcp(g1, 8080, client=g2) == "pong"
    assert lan.tcp(g1, 8081) is None
    assert lan.reach([(None, g1.ip), (g1, HOST_IP), (g1, g2.ip)]) == [False, False, False]
    # The VM cannot open a connection from its open port: a reply needs ACK.
    assert lan.tcp_to_host(g1, 9000, source_port=8080) is None
    vm_rules(fw, "a", [{"direction": "in", "protocol": "tcp", "ports": ["8080"], "name": "web"}], policy_in="drop")
    assert lan.tcp_to_host(g1, 9000, source_port=8080) == "pong"


def test_anti_spoofing(fw, lan):
    g1, g2, _g3 = lan.guests
    start(fw, lan, g1, "a", ips=[g1.ip])
    vm_rules(fw, "a")  # anti_spoofing defaults to true
    assert lan.reach([(g1, g2.ip)]) == [True]

    sh("ip", "-n", g1.netns, "link", "set", "eth0", "address", "52:54:00:99:99:99")
    lan.flush_neighbours()
    assert lan.reach([(g1, g2.ip), (g2, g1.ip)]) == [False, False], "another MAC is dropped"
    sh("ip", "-n", g1.netns, "link", "set", "eth0", "address", g1.mac)
    lan.flush_neighbours()
    assert lan.reach([(g1, g2.ip)]) == [True]

    sh("ip", "-n", g1.netns, "addr", "del", g1.ip + "/24", "dev", "eth0")
    sh("ip", "-n", g1.netns, "addr", "add", "10.77.0.99/24", "dev", "eth0")
    lan.flush_neighbours()
    assert lan.reach([(g1, g2.ip), (g2, "10.77.0.99")]) == [False, False], "another IP is dropped"
    vm_rules(fw, "a", anti_spoofing=False)
    lan.flush_neighbours()
    assert lan.reach([(g1, g2.ip), (g2, "10.77.0.99")]) == [True, True]


def test_rerun_changes_nothing_and_drift_is_repaired(fw, lan):
    g1, g2, _g3 = lan.guests
    start(fw, lan, g1, "a", department="ops")
    dept_rules(fw, "ops", [{"direction": "out", "protocol": "udp", "ports": ["53"], "cidr": "192.0.2.0/24"}])
    vm_rules(fw, "a", [PING_IN])
    wanted = lan.ruleset()
    writes = fw.nft.writes
    assert not vm_rules(fw, "a", [PING_IN])["changed"]
    assert not dept_rules(fw, "ops", [{"direction": "out", "protocol": "udp", "ports": [53], "cidr": "192.0.2.0/24"}])[
        "changed"
    ]
    assert fw.nft.writes == writes and lan.ruleset() == wanted

    a = records.load(fw.store, "a")
    chain = nft.vm_chain(a.uuid, "in")
    handles = [
        item["rule"]["handle"] for item in lan.ruleset_json() if "rule" in item and item["rule"]["chain"] == chain
    ]
    for damage in (
        ["delete", "rule", "bridge", "infinivirt", chain, "handle", str(handles[-1])],
        ["delete", "element", "bridge", "infinivirt", "from_vm", "{ %s }" % g1.tap],
        ["flush", "chain", "bridge", "infinivirt", "dept-ops-out"],
        ["delete", "table", "bridge", "infinivirt"],
    ):
        lan.ns("nft", *damage)
        assert lan.ruleset() != wanted
        predicted = vm_rules(fw, "a", [PING_IN], check=True)
        assert predicted["changed"] and lan.ruleset() != wanted, "check mode changes nothing"
        repaired = vm_rules(fw, "a", [PING_IN])
        assert repaired["changed"] and repaired["kernel_changes"], damage
        assert lan.ruleset() == wanted
    assert lan.reach([(g2, g1.ip)]) == [False]


def test_stop_and_forget_leave_no_trace(fw, lan):
    g1, g2, _g3 = lan.guests
    a = start(fw, lan, g1, "a", department="dev", ips=[g1.ip])
    b = start(fw, lan, g2, "b", department="dev")
    dept_rules(fw, "dev", [PING_IN])
    vm_rules(fw, "a", [PING_IN])
    vm_rules(fw, "b", [{"direction": "out", "protocol": "tcp", "ports": ["25"], "action": "drop"}])
    assert len(fw.store.firewall_applied(HOST)) == 2

    assert stop(fw, a)
    text = lan.ruleset()
    assert a.uuid not in text and g1.tap not in text and "dept-dev-in" in text
    assert vm_rules(fw, "a", [])["kernel_changes"] == [], "a stopped VM's change is only stored"
    assert a.uuid not in lan.ruleset()
    assert stop(fw, b)
    assert lan.ruleset_json() == [], "the last VM took the table with it"
    assert fw.store.firewall_applied(HOST) == []
    assert stop(fw, b) is False

    # A start applies the stored rules again; removing the VM forgets them.
    rec = records.load(fw.store, "b")
    rec.running_spec = rec.spec
    assert fw.sync_vm(firewall_vm(rec)) and b.uuid in lan.ruleset()
    assert fw.forget_vm(firewall_vm(rec))
    assert lan.ruleset_json() == [] and fw.store.get_ruleset("vm", b.uuid) is None
    assert fw.store.get_ruleset("department", "dev") is not None, "departments stay"


def test_a_vm_that_moved_namespace_is_cleaned_everywhere(fw, lan):
    g1 = lan.guests[0]
    a = start(fw, lan, g1, "a")
    vm_rules(fw, "a", [PING_IN])
    other = Lan(guests=0)
    try:
        rec = records.load(fw.store, "a")
        spec = dataclasses.replace(rec.spec, netns=other.netns)
        rec.spec = rec.running_spec = spec
        records.save(fw.store, rec)
        assert fw.sync_vm(firewall_vm(rec))
        assert lan.ruleset_json() == [] and a.uuid in other.ruleset()
        assert [r["netns"] for r in fw.store.firewall_applied(HOST)] == [other.netns]
    finally:
        other.close()
    rec.running_spec = None
    assert fw.sync_vm(firewall_vm(rec)) is False, "its namespace is gone, and the rules with it"
    assert fw.store.firewall_applied(HOST) == []


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"cidr": "10.0.0.0/33"}, "rules[1].cidr"),
        ({"cidr": "300.1.1.1/8"}, "rules[1].cidr"),
        ({"cidr": "10.0.0.1/8"}, "rules[1].cidr"),
        ({"protocol": "tcp", "ports": ["70000"]}, "rules[1].ports[0]"),
        ({"protocol": "tcp", "ports": ["5-3"]}, "rules[1].ports[0]"),
        ({"protocol": "icmp", "ports": ["22"]}, "rules[1].ports"),
        ({"comment": "x; flush ruleset"}, "rules[1].comment"),
        ({"comment": 'x" ; flush ruleset ; "'}, "rules[1].comment"),
        ({"comment": "a\nb"}, "rules[1].comment"),
        ({"name": "web server"}, "rules[1].name"),
        ({"name": 'x"}; flush ruleset'}, "rules[1].name"),
        ({"action": "reject"}, "rules[1].action"),
    ],
)
def test_a_bad_rule_among_good_ones_changes_nothing(fw, lan, bad, field):
    g1 = lan.guests[0]
    rec = start(fw, lan, g1, "a", department="dev")
    good = [
        {"direction": "in", "protocol": "tcp", "ports": ["22"]},
        {"direction": "out"},
        {"direction": "in", "protocol": "icmp", "action": "drop"},
    ]
    vm_rules(fw, "a", good, policy_in="drop")
    before, stored = lan.ruleset(), fw.store.get_ruleset("vm", rec.uuid)
    rules = [good[0], dict({"direction": "in", "protocol": "udp"}, **bad), good[2]]
    if bad.get("action") == "reject" and fw.nft.reject_supported(lan.netns):
        assert vm_rules(fw, "a", rules)["changed"]  # a kernel with bridge reject takes it
        return
    writes = fw.nft.writes
    for scope in ("vm", "department"):
        name = "a" if scope == "vm" else "dev"
        with pytest.raises(SpecError) as err:
            fw.ensure({"scope": scope, "name": name, "rules": rules}, False)
        assert err.value.field == field, str(err.value)
    assert lan.ruleset() == before and fw.nft.writes == writes
    assert fw.store.get_ruleset("vm", rec.uuid) == stored
    assert fw.store.get_ruleset("department", "dev") is None


@pytest.mark.parametrize(
    "params,field",
    [
        ({"scope": "department", "name": "dev ops"}, "name"),
        ({"scope": "department", "name": "x;flush ruleset"}, "name"),
        ({"scope": "department", "name": "dev", "anti_spoofing": True}, "anti_spoofing"),
        ({"scope": "vm", "name": "nosuchvm"}, "name"),
        ({"scope": "vm", "name": "a", "policy_in": "reject"}, "policy_in"),
        ({"scope": "team", "name": "a"}, "scope"),
    ],
)
def test_bad_scope_input(fw, lan, params, field):
    start(fw, lan, lan.guests[0], "a")
    with pytest.raises(SpecError) as err:
        fw.ensure(params, False)
    assert err.value.field == field
    if params["name"] == "nosuchvm":
        assert str(err.value) == "name: VM nosuchvm does not exist"
    assert lan.ruleset_json() == []


@pytest.mark.both_backends  # the store is the subject
def test_rules_record_their_source(fw, store, lan, db_url):
    g1 = lan.guests[0]
    a = start(fw, lan, g1, "a", running=False)
    first = vm_rules(fw, "a", [PING_IN])
    assert first["changed"] and first["kernel_changes"] == [], "stopped: stored only"
    source = first["firewall"]["rules"][0]["source"]
    assert source["job_id"] == "job-17" and source["host"] == HOST and source["user"] and source["time"]

    other = open_store(db_url, job_id="job-18")
    try:
        second = FirewallService(other, "hv-other", records.firewall_directory(other))
        done = vm_rules(
            second,
            "a",
            [PING_IN, {"direction": "out", "protocol": "tcp", "ports": ["25"], "action": "drop", "comment": "no mail"}],
        )
        assert [r["source"]["job_id"] for r in done["firewall"]["rules"]] == ["job-17", "job-18"]
        row = store.get_ruleset("vm", a.uuid)
        assert row["source"]["job_id"] == "job-18" and row["rules"][1]["comment"] == "no mail"
        assert [r["direction"] for r in row["rules"]] == ["in", "out"]
        # It runs on hv-test: hv-other may not change it.
        rec = records.load(store, "a")
        rec.running_spec, rec.host = rec.spec, HOST
        records.save(store, rec)
        with pytest.raises(StateError):
            vm_rules(second, "a", [])
    finally:
        other.close()
    assert fw.ensure({"scope": "vm", "name": "gone", "state": "absent"}, False)["changed"] is False


def _toggle(db_url, netns, mac, name, rounds, queue):
    try:
        store = open_store(db_url)
        fw = FirewallService(store, HOST, records.firewall_directory(store), lock_timeout=60)
        for _round in range(rounds):
            rec = records.load(store, name)
            with store.vm_lock(name, 60):
                fw.sync_vm(firewall_vm(rec))  # on
                off = dataclasses.replace(rec, running_spec=None)
                fw.sync_vm(firewall_vm(off))
            with store.vm_lock(name, 60):
                fw.sync_vm(firewall_vm(rec))
        store.close()
        queue.put(None)
    except BaseException as exc:  # reported to the parent
        queue.put(repr(exc))


@pytest.mark.both_backends  # the store is the subject
def test_concurrent_vms_keep_the_shared_table_consistent(fw, lan, db_url):
    for index in range(4, 9):
        lan.add_guest(index)
    guests = list(lan.guests)
    recs = []
    for index, guest in enumerate(guests):
        rec = vm_record(lan, guest, "vm%d" % index, department="dev" if index % 2 else None, ips=[guest.ip])
        records.insert(fw.store, rec)
        recs.append(rec)
        vm_rules(fw, rec.name, [PING_IN])  # stored only: no sync yet
    for rec in recs:
        stop_rec = dataclasses.replace(rec, running_spec=None)
        fw.sync_vm(firewall_vm(stop_rec))
    assert lan.ruleset_json() == []
    dept_rules(fw, "dev", [{"direction": "out", "protocol": "tcp", "ports": ["25"], "action": "drop"}])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_toggle, args=(db_url, lan.netns, g.mac, r.name, 4, queue)) for g, r in zip(guests, recs)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _proc in procs]
    for proc in procs:
        proc.join(30)
    assert results == [None] * len(procs)
    text = lan.ruleset()
    for rec, guest in zip(recs, guests):
        assert nft.vm_chain(rec.uuid, "in") in text and guest.tap in text
    assert "dept-dev-out" in text
    assert not any(vm_rules(fw, rec.name, [PING_IN])["changed"] for rec in recs)
    for rec in recs:
        fw.sync_vm(firewall_vm(dataclasses.replace(rec, running_spec=None)))
    assert lan.ruleset_json() == []


def test_firewall_playbook(lan, tmp_path):
    db_url = "sqlite:///%s/fw.db" % tmp_path
    store = open_store(db_url)
    g1 = lan.guests[0]
    records.insert(store, vm_record(lan, g1, "pbvm", department="pbdept"))
    store.close()
    done = run_playbook("firewall.yml", {"db_url": db_url, "vm": "pbvm", "host_id": HOST})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    store = open_store(db_url)
    rec = records.load(store, "pbvm")
    assert nft.vm_chain(rec.uuid, "in") in lan.ruleset(), "still in its department"
    assert FirewallService(store, HOST, records.firewall_directory(store)).forget_vm(firewall_vm(rec))
    store.close()
    assert lan.ruleset_json() == []
