# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The network planner through tables, without a host: (stored row, what the host has now,
desired spec) -> the steps, the actions and what the result says. The real thing runs in
tests/integration/test_net_module.py."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host import dnsmasq, nat
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import BridgeState
from ansible_collections.infinivirt.core.plugins.module_utils.network import plan
from ansible_collections.infinivirt.core.plugins.module_utils.network.nat_settings import validate_nat
from ansible_collections.infinivirt.core.plugins.module_utils.network.plan import (
    Desired,
    HostNow,
    NatLive,
    plan_absent,
    plan_present,
)
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import BridgeSpec

BR = BridgeSpec(name="br0")
BR_MTU = BridgeSpec(name="br0", mtu=9000)
NAT_BR = BridgeSpec(name="natbr0", addresses=("10.77.0.1/24",))
NAT = validate_nat({}, NAT_BR)
QUIET = validate_nat({"dhcp": {"enabled": False}, "dns": False}, NAT_BR)  # dnsmasq not needed
BRIDGE_REF, NAT_REF = "/br0", "/natbr0"
TABLE_REF = "/infinivirt_nat_net0"
PID_REF, OLD_PID_REF = "/run/infinivirt/net-net0.dnsmasq.pid", "/tmp/old/net-net0.dnsmasq.pid"
UP = BridgeState(mtu=1500, stp=False, addresses=(), up=True)
NAT_UP = BridgeState(mtu=1500, stp=False, addresses=("10.77.0.1/24",), up=True)

BRIDGE = Desired("net0", "bridge", BR)
BRIDGE_9000 = Desired("net0", "bridge", BR_MTU)
NATTED = Desired("net0", "nat", NAT_BR, NAT)
NAT_QUIET = Desired("net0", "nat", NAT_BR, QUIET)


def wanted(desired):
    got = dict(desired.bridge.to_dict(), netns=desired.netns, mode=desired.mode)
    if desired.nat is not None:
        got["nat"] = desired.nat.to_dict(desired.name)
    return got


def row(desired, managed=True):
    return {"spec": wanted(desired), "mode": desired.mode, "managed": managed}


def live(ip_forward=True, table="present", daemon="running"):
    return NatLive(ip_forward, table, daemon, TABLE_REF, PID_REF)


def host(bridge=None, todo=(), journal=(), ref=BRIDGE_REF, **kw):
    return HostNow(journal=tuple(journal), bridge=bridge, todo=tuple(todo), bridge_ref=ref, **kw)


def kinds(got):
    """The steps as (kind, undo) pairs."""
    return [(step.kind, step.undo) for step in got.steps]


# (situation, row, host now, desired) -> (actions, steps as (kind, undo), changed, managed)
PRESENT = [
    (
        "new bridge",
        None,
        host(todo=["create"]),
        BRIDGE,
        (["create"], [("bridge_create", True), ("record", False)], True, True),
    ),
    ("no-op bridge", row(BRIDGE), host(UP), BRIDGE, ([], [], False, True)),
    (
        "mtu changed",
        row(BRIDGE),
        host(UP, ["mtu"]),
        BRIDGE_9000,
        (["mtu"], [("bridge_update", False), ("record", False)], True, True),
    ),
    ("foreign bridge adopted", None, host(UP), BRIDGE, ([], [("record", False)], True, False)),
    (
        "journaled bridge, no row",
        None,
        host(UP, journal=[("bridge", BRIDGE_REF)]),
        BRIDGE,
        ([], [("record", False)], True, True),
    ),
    ("unmanaged row stays unmanaged", row(BRIDGE, managed=False), host(UP), BRIDGE, ([], [], False, False)),
    (
        "nat left behind by mode bridge",
        row(BRIDGE),
        host(
            UP, journal=[("nft_table", TABLE_REF)], pieces=(("dnsmasq", PID_REF, True), ("nft_table", TABLE_REF, False))
        ),
        BRIDGE,
        (["dnsmasq-stop", "nftables-remove"], [("dnsmasq_stop", False), ("table_remove", False)], True, True),
    ),
    (
        "nat pieces neither found nor journaled",
        row(BRIDGE),
        host(UP, pieces=(("dnsmasq", PID_REF, False), ("nft_table", TABLE_REF, False))),
        BRIDGE,
        ([], [], False, True),
    ),
    (
        "new nat network",
        None,
        host(todo=["create"], ref=NAT_REF, nat=live(False, "missing", "stopped")),
        NATTED,
        (
            ["create", "ip_forward", "nftables", "dnsmasq"],
            [
                ("bridge_create", True),
                ("ip_forward", False),
                ("table", True),
                ("dnsmasq_start", True),
                ("record", False),
            ],
            True,
            True,
        ),
    ),
    ("no-op nat", row(NATTED), host(NAT_UP, ref=NAT_REF, nat=live()), NATTED, ([], [], False, True)),
    (
        "nat table drifted",
        row(NATTED),
        host(NAT_UP, ref=NAT_REF, nat=live(table="drifted")),
        NATTED,
        (["nftables"], [("table", False)], True, True),
    ),
    (
        "nat address changed: dnsmasq restarts",
        row(NATTED),
        host(NAT_UP, ["addresses"], ref=NAT_REF, nat=live()),
        NATTED,
        (["addresses", "dnsmasq"], [("bridge_update", False), ("dnsmasq_restart", False)], True, True),
    ),
    (
        "dnsmasq of another run_dir",
        row(NATTED),
        host(NAT_UP, journal=[("dnsmasq", OLD_PID_REF)], ref=NAT_REF, nat=live(daemon="stopped")),
        NATTED,
        (["dnsmasq-stop", "dnsmasq"], [("dnsmasq_stop", False), ("dnsmasq_start", True)], True, True),
    ),
    (
        "dhcp and dns off: dnsmasq stops",
        row(NAT_QUIET),
        host(NAT_UP, ref=NAT_REF, nat=live()),
        NAT_QUIET,
        (["dnsmasq-stop"], [("dnsmasq_stop", False)], True, True),
    ),
    (
        "dhcp and dns off, journaled but stopped",
        row(NAT_QUIET),
        host(NAT_UP, journal=[("dnsmasq", PID_REF)], ref=NAT_REF, nat=live(daemon="stopped")),
        NAT_QUIET,
        (["dnsmasq-stop"], [("dnsmasq_stop", False)], True, True),
    ),
    (
        "dhcp and dns off, nothing runs",
        row(NAT_QUIET),
        host(NAT_UP, ref=NAT_REF, nat=live(daemon="stopped")),
        NAT_QUIET,
        ([], [], False, True),
    ),
    (
        "mode changed to nat",
        row(BRIDGE),
        host(NAT_UP, ref=NAT_REF, nat=live()),
        NATTED,
        ([], [("record", False)], True, True),
    ),
]


@pytest.mark.parametrize("situation,stored,now,desired,expected", PRESENT, ids=[r[0] for r in PRESENT])
def test_plan_present(situation, stored, now, desired, expected):
    actions, steps, changed, managed = expected
    got = plan_present(stored, now, desired)
    assert (got.result["actions"], kinds(got), got.result["changed"]) == (actions, steps, changed)
    assert got.managed is managed and got.result["network"]["managed"] is managed
    assert got.wanted == wanted(desired) and got.result["diff"]["after"]["mode"] == desired.mode


def test_present_steps_name_what_they_do_and_act_on():
    got = plan_present(None, host(todo=["create"], ref=NAT_REF, nat=live(False, "missing", "stopped")), NATTED)
    assert [(step.what, step.ref) for step in got.steps] == [
        ("creating bridge natbr0", NAT_REF),
        ("enabling IPv4 forwarding", ""),
        ("writing nftables table infinivirt_nat_net0", TABLE_REF),
        ("starting dnsmasq", PID_REF),
        ("recording the network in the database", ""),
    ]


@pytest.mark.parametrize(
    "stored,now,desired,before",
    [
        (None, host(todo=["create"]), BRIDGE, {"state": "absent"}),
        (None, host(todo=["create"], nat=live(False, "missing", "stopped")), NATTED, {"state": "absent"}),
        (
            None,
            host(todo=["create"], nat=live(False, "missing", "running")),
            NATTED,
            {"state": "absent", "runtime": {"ip_forward": False, "nftables": "missing", "dnsmasq": "outdated"}},
        ),
        (
            None,
            host(UP),
            BRIDGE,
            {"bridge": "br0", "mtu": None, "stp": False, "addresses": [], "state": "present", "netns": None},
        ),
        (row(BRIDGE), host(UP), BRIDGE_9000, dict(wanted(BRIDGE), mtu=1500, state="present")),
    ],
)
def test_present_diff_before(stored, now, desired, before):
    assert plan_present(stored, now, desired).result["diff"]["before"] == before


def test_present_diff_after_has_runtime_for_nat_only():
    assert "runtime" not in plan_present(None, host(todo=["create"]), BRIDGE).result["diff"]["after"]
    after = plan_present(row(NAT_QUIET), host(NAT_UP, nat=live()), NAT_QUIET).result["diff"]["after"]
    assert after["runtime"] == {"ip_forward": True, "nftables": "present", "dnsmasq": "stopped"}


# (situation, row, host now) -> (actions, steps as (kind, ref), changed)
ABSENT = [
    ("nothing there", None, HostNow(), ([], [], False)),
    (
        "managed bridge",
        row(BRIDGE),
        HostNow(bridge_ref=BRIDGE_REF),
        (["remove"], [("bridge_remove", BRIDGE_REF), ("delete", "")], True),
    ),
    (
        "unmanaged bridge is forgotten",
        row(BRIDGE, managed=False),
        HostNow(journal=(("bridge", BRIDGE_REF),), bridge_ref=BRIDGE_REF),
        (["forget"], [("delete", "")], True),
    ),
    (
        "nat network",
        row(NATTED),
        HostNow(
            journal=(("bridge", NAT_REF), ("nft_table", TABLE_REF)),
            bridge_ref=NAT_REF,
            pieces=(("dnsmasq", PID_REF, True), ("nft_table", TABLE_REF, False)),
        ),
        (
            ["dnsmasq-stop", "nftables-remove", "remove"],
            [("dnsmasq_stop", PID_REF), ("table_remove", TABLE_REF), ("bridge_remove", NAT_REF), ("delete", "")],
            True,
        ),
    ),
    (
        "leftovers of a crashed run",
        None,
        HostNow(journal=(("bridge", BRIDGE_REF), ("dnsmasq", PID_REF)), pieces=(("dnsmasq", PID_REF, False),)),
        (["dnsmasq-stop", "remove"], [("dnsmasq_stop", PID_REF), ("bridge_remove", BRIDGE_REF)], True),
    ),
]


@pytest.mark.parametrize("situation,stored,now,expected", ABSENT, ids=[r[0] for r in ABSENT])
def test_plan_absent(situation, stored, now, expected):
    actions, steps, changed = expected
    got = plan_absent("net0", stored, now)
    assert got.result["actions"] == actions and got.result["changed"] is changed
    assert [(step.kind, step.ref) for step in got.steps] == steps
    assert got.result["network"] == {"name": "net0", "state": "absent"}
    assert got.result["diff"]["after"] == {"state": "absent"}


def test_absent_diff_before():
    assert plan_absent("net0", None, HostNow()).result["diff"]["before"] == {"state": "absent"}
    assert plan_absent("net0", row(BRIDGE), HostNow(bridge_ref=BRIDGE_REF)).result["diff"]["before"] == dict(
        wanted(BRIDGE), state="present"
    )
    leftovers = plan_absent("net0", None, HostNow(journal=(("bridge", BRIDGE_REF),))).result["diff"]["before"]
    assert leftovers == {"state": "present", "leftovers": ["bridge /br0"]}


@pytest.mark.parametrize(
    "stored,now",
    [
        (row(BRIDGE), HostNow(bridge_ref=BRIDGE_REF, users=("a", "b"))),
        (None, HostNow(journal=(("bridge", BRIDGE_REF),), users=("a", "b"))),
    ],
)
def test_absent_refuses_a_network_in_use(stored, now):
    with pytest.raises(StateError, match=r"network net0 is used by the NICs of VM a, b; remove those NICs"):
        plan_absent("net0", stored, now)


def test_absent_of_nothing_ignores_users():
    assert plan_absent("net0", None, HostNow(users=("a",))).steps == ()


def test_states_are_the_adapters():
    assert (plan.TABLE_PRESENT, plan.TABLE_MISSING) == (nat.PRESENT, nat.MISSING)
    assert (plan.DNSMASQ_RUNNING, plan.DNSMASQ_STOPPED, plan.DNSMASQ_OUTDATED) == (
        dnsmasq.RUNNING,
        dnsmasq.STOPPED,
        dnsmasq.OUTDATED,
    )


def test_plan_is_frozen():
    got = plan_present(None, host(todo=["create"]), BRIDGE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.steps[0].kind = "other"
