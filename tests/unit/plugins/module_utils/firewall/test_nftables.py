# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nft JSON the firewall writes, the tags that tell a chain is in sync, and the plan from
what the kernel has to what is wanted (kernel views built by hand: no nft needed)."""

from __future__ import annotations

import json

from ansible_collections.infinivirt.core.plugins.module_utils.firewall import nftables as nft
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.rules import parse_ruleset
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import Port

UUID = "0d6f1b7e-3f0c-4c1e-9a57-2f1b1a000001"
PORT = Port(tap="iv525400aabbcc", mac="52:54:00:aa:bb:cc", ips=("192.0.2.10", "2001:db8::10"))
VM_RULES = parse_ruleset(
    {
        "scope": "vm",
        "name": "web01",
        "policy_in": "drop",
        "rules": [
            {
                "name": "ssh",
                "direction": "in",
                "protocol": "tcp",
                "ports": ["22"],
                "cidr": "198.51.100.0/24",
                "comment": "admins",
            },
            {"direction": "out", "protocol": "udp", "ports": ["53", "5353"], "action": "drop"},
            {"direction": "in", "protocol": "icmp"},
            {"direction": "out", "protocol": "tcp", "ports": ["25"], "action": "reject"},
        ],
    }
)
DEPT_RULES = parse_ruleset(
    {
        "scope": "department",
        "name": "web",
        "policy_out": "drop",
        "rules": [
            {"direction": "out", "protocol": "tcp", "ports": ["443"]},
            {"direction": "in", "cidr": "203.0.113.0/24", "action": "drop"},
        ],
    }
)


def exprs_of(rules, label):
    found = [exprs for comment, exprs in rules if comment.split(" ", 1)[1] == label]
    assert len(found) == 1, (label, [c for c, _e in rules])
    return found[0]


def labels(rules):
    return [comment.split(" ", 1)[1] for comment, _exprs in rules]


def match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def payload(protocol, field):
    return {"payload": {"protocol": protocol, "field": field}}


L4 = {"meta": {"key": "l4proto"}}


def test_vm_chains_in_order():
    chains = nft.vm_chains(UUID, [PORT], VM_RULES, "web")
    assert sorted(chains) == ["vm-%s-in" % UUID, "vm-%s-out" % UUID]
    out, into = chains["vm-%s-out" % UUID], chains["vm-%s-in" % UUID]
    assert labels(out) == [
        "anti-spoofing iv525400aabbcc mac",
        "anti-spoofing iv525400aabbcc arp mac",
        "anti-spoofing iv525400aabbcc ethertype",
        "anti-spoofing iv525400aabbcc arp ip",
        "anti-spoofing iv525400aabbcc dhcp",
        "anti-spoofing iv525400aabbcc ipv4",
        "anti-spoofing iv525400aabbcc ipv6",
        "infrastructure arp",
        "infrastructure neighbour discovery",
        "infrastructure dhcp",
        "infrastructure dhcpv6",
        "infrastructure icmp errors",
        "infrastructure icmpv6 errors",
        "department web",
        "vm reply to ssh",
        "vm reply to rule 2",
        "vm rule 1",
        "vm rule 3",
    ]
    assert labels(into)[6:] == ["department web", "vm ssh: admins", "vm rule 2", "vm policy drop"]
    assert "anti-spoofing" not in " ".join(labels(into))

    iif = match({"meta": {"key": "iifname"}}, PORT.tap)
    assert exprs_of(out, "anti-spoofing iv525400aabbcc mac") == [
        iif,
        match(payload("ether", "saddr"), PORT.mac, "!="),
        {"drop": None},
    ]
    assert exprs_of(out, "anti-spoofing iv525400aabbcc ipv4") == [
        iif,
        match(payload("ip", "saddr"), "192.0.2.10", "!="),
        {"drop": None},
    ]
    assert exprs_of(out, "anti-spoofing iv525400aabbcc arp ip") == [
        iif,
        match(payload("arp", "saddr ip"), {"set": ["192.0.2.10", "0.0.0.0"]}, "!="),
        {"drop": None},
    ]
    assert exprs_of(out, "anti-spoofing iv525400aabbcc ipv6")[1] == match(
        payload("ip6", "saddr"), {"set": ["2001:db8::10", "::", {"prefix": {"addr": "fe80::", "len": 10}}]}, "!="
    )
    assert exprs_of(out, "department web") == [{"jump": {"target": "dept-web-out"}}]

    assert exprs_of(into, "vm ssh: admins") == [
        match(payload("ip", "saddr"), {"prefix": {"addr": "198.51.100.0", "len": 24}}),
        match(L4, "tcp"),
        match(payload("th", "dport"), 22),
        {"return": None},
    ]
    assert exprs_of(out, "vm reply to ssh") == [
        match(payload("ip", "daddr"), {"prefix": {"addr": "198.51.100.0", "len": 24}}),
        match(L4, "tcp"),
        match(payload("th", "sport"), 22),
        match(payload("tcp", "flags"), "ack", "in"),
        {"return": None},
    ]
    assert exprs_of(out, "vm rule 1") == [
        match(L4, "udp"),
        match(payload("th", "dport"), {"set": [53, 5353]}),
        {"drop": None},
    ]
    assert exprs_of(out, "vm rule 3")[-1] == {"reject": {"type": "tcp reset"}}
    assert exprs_of(into, "vm rule 2") == [match(L4, "icmp"), {"return": None}]
    assert exprs_of(out, "vm reply to rule 2") == [match(payload("icmp", "type"), "echo-reply"), {"return": None}]
    assert exprs_of(into, "vm policy drop") == [{"drop": None}]


def test_department_chains_and_replies():
    chains = nft.dept_chains("web", DEPT_RULES)
    out, into = chains["dept-web-out"], chains["dept-web-in"]
    assert labels(out) == ["department web rule 0", "department web policy drop"]
    assert labels(into) == ["department web reply to rule 0", "department web rule 1"]
    assert exprs_of(into, "department web rule 1") == [
        match(payload("ip", "saddr"), {"prefix": {"addr": "203.0.113.0", "len": 24}}),
        {"drop": None},
    ]
    # Replies for protocol any: TCP with ACK, UDP, and echo replies of both ICMPs.
    anyrule = parse_ruleset({"scope": "department", "name": "d", "rules": [{"direction": "out"}]})
    replies = nft.dept_chains("d", anyrule)["dept-d-in"]
    assert [exprs[-2] for _c, exprs in replies] == [
        match(payload("tcp", "flags"), "ack", "in"),
        match(L4, "udp"),
        match(payload("icmp", "type"), "echo-reply"),
        match(payload("icmpv6", "type"), "echo-reply"),
    ]
    assert nft.dept_chains("d", None) == {"dept-d-in": [], "dept-d-out": []}


def test_no_rules_no_department_no_chains():
    assert nft.vm_chains(UUID, [PORT], None, None) == {}
    assert nft.vm_chains(UUID, [], VM_RULES, "web") == {}
    only_dept = nft.vm_chains(UUID, [PORT], None, "web")
    assert labels(only_dept["vm-%s-out" % UUID])[-1] == "department web", "no anti-spoofing without VM rules"


def test_user_text_only_in_json_values():
    """Comments and names travel as JSON strings, never as nft syntax: the document is
    JSON and every user string sits in a "comment" or a match's "right"."""
    ruleset = parse_ruleset(
        {
            "scope": "vm",
            "name": "web01",
            "rules": [{"name": "x.y_z-1", "direction": "in", "comment": "ok: (tag) [1] <2> & 100%"}],
        }
    )
    chains = nft.vm_chains(UUID, [PORT], ruleset, None)
    ops = nft.plan(nft.KernelView(), set(), chains, nft.vm_elements(UUID, [PORT]))
    text = json.dumps(nft.document(ops))
    assert json.loads(text)["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    comments = [op["add"]["rule"]["comment"] for op in ops if "rule" in op.get("add", {})]
    assert any(c.endswith("vm x.y_z-1: ok: (tag) [1] <2> & 100%") for c in comments)


def test_tags_are_stable_and_content_bound():
    assert nft.tag([{"drop": None}]) == "iv-bbf11fbd", "changing tags rewrites every chain on upgrade"
    first = nft.vm_chains(UUID, [PORT], VM_RULES, "web")
    again = nft.vm_chains(UUID, [PORT], parse_ruleset(VM_RULES.to_dict()), "web")
    assert first == again
    reordered = [{"match": {"right": 22, "left": payload("th", "dport"), "op": "=="}}]
    assert nft.tag(reordered) == nft.tag([match(payload("th", "dport"), 22)]), "key order does not count"
    assert nft.tag([match(payload("th", "dport"), 23)]) != nft.tag([match(payload("th", "dport"), 22)])


# -- plan ----------------------------------------------------------------------------------


def kernel(*chain_sets, elements=None, skeleton=True):
    """A KernelView as nft would list the given chains."""
    view = nft.KernelView(exists=True)
    if skeleton:
        for name, (hook, _maps) in nft.BASE_CHAINS.items():
            view.hooks[name] = ("filter", hook, 0, "accept")
            view.chains[name] = [c for c, _e in nft._base_rules(name)]
        view.map_types = {nft.FROM_VM: ("ifname", "verdict"), nft.TO_VM: ("ifname", "verdict")}
    view.maps = {nft.FROM_VM: {}, nft.TO_VM: {}}
    for chains in chain_sets:
        for name, rules in chains.items():
            view.chains[name] = [c for c, _e in rules]
            view.jumps[name] = set().union(*[nft._jump_targets(e) for _c, e in rules]) if rules else set()
    for map_name, items in (elements or {}).items():
        view.maps[map_name].update(items)
    return view


def wanted(uuid=UUID, port=PORT, department="web"):
    chains = nft.vm_chains(uuid, [port], VM_RULES, department)
    if department:
        chains.update(nft.dept_chains(department, DEPT_RULES))
    return chains, nft.vm_elements(uuid, [port])


def owned(uuid=UUID):
    return {nft.vm_chain(uuid, "in"), nft.vm_chain(uuid, "out")}


def kinds(ops):
    return [(verb, kind) for op in ops for verb, body in op.items() for kind in body]


def test_plan_from_nothing_and_in_sync():
    chains, elements = wanted()
    ops = nft.plan(nft.KernelView(), owned(), chains, elements)
    assert ops[0] == {"add": {"table": {"family": "bridge", "name": "infinivirt"}}}
    assert kinds(ops).count(("add", "element")) == 2
    dept_first = [
        op["add"]["chain"]["name"] for op in ops if "chain" in op.get("add", {}) and "hook" not in op["add"]["chain"]
    ]
    assert dept_first == ["dept-web-in", "dept-web-out", "vm-%s-in" % UUID, "vm-%s-out" % UUID]
    assert nft.count_rules(ops) == 4 + sum(len(r) for r in chains.values())
    view = kernel(chains, elements=elements)
    assert nft.plan(view, owned(), chains, elements) == []


def test_plan_repairs_only_what_drifted():
    chains, elements = wanted()
    view = kernel(chains, elements=elements)
    view.chains["vm-%s-in" % UUID].pop()  # a rule deleted by hand
    view.maps[nft.FROM_VM].pop(PORT.tap)
    ops = nft.plan(view, owned(), chains, elements)
    assert kinds(ops) == [("add", "chain"), ("flush", "chain")] + [("add", "rule")] * len(chains["vm-%s-in" % UUID]) + [
        ("add", "element")
    ]
    view = kernel(chains, elements=elements, skeleton=False)
    assert kinds(nft.plan(view, owned(), chains, elements))[:2] == [("add", "table"), ("add", "map")]


def test_plan_removal_keeps_what_others_use():
    other = "0d6f1b7e-3f0c-4c1e-9a57-2f1b1a000002"
    other_port = Port(tap="iv525400aabbdd", mac="52:54:00:aa:bb:dd")
    mine, my_elements = wanted()
    theirs, their_elements = wanted(other, other_port)
    elements = {m: dict(my_elements[m], **their_elements[m]) for m in my_elements}
    view = kernel(mine, theirs, elements=elements)
    ops = nft.plan(view, owned(), {}, {})
    deleted = {op["delete"]["chain"]["name"] for op in ops if "chain" in op.get("delete", {})}
    assert deleted == owned(), "the department chains stay: the other VM jumps to them"
    assert [op["delete"]["element"]["elem"] for op in ops if "element" in op.get("delete", {})] == [
        [PORT.tap],
        [PORT.tap],
    ]
    # The other VM leaves the department: its chains change and the department goes.
    theirs_alone, _e = wanted(other, other_port, department=None)
    view = kernel(theirs, elements=their_elements)
    ops = nft.plan(view, owned(other), theirs_alone, their_elements)
    assert {op["delete"]["chain"]["name"] for op in ops if "chain" in op.get("delete", {})} == {
        "dept-web-in",
        "dept-web-out",
    }
    # The last VM takes the table with it.
    assert nft.plan(view, owned(other), {}, {}) == [{"delete": {"table": {"family": "bridge", "name": "infinivirt"}}}]
    assert nft.plan(nft.KernelView(), owned(), {}, {}) == []


def test_plan_takes_over_a_stale_element():
    chains, elements = wanted()
    stale = {m: {PORT.tap: "vm-gone-%s" % m} for m in elements}
    view = kernel(chains, elements=stale)
    ops = nft.plan(view, owned(), chains, elements)
    assert kinds(ops) == [("delete", "element"), ("add", "element")] * 2


def test_kernel_view_parses_nft_listing():
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "bridge", "name": "infinivirt", "handle": 3}},
            {
                "map": {
                    "family": "bridge",
                    "name": "from_vm",
                    "table": "infinivirt",
                    "type": "ifname",
                    "handle": 2,
                    "map": "verdict",
                    "elem": [["iv1", {"jump": {"target": "vm-1-out"}}]],
                }
            },
            {
                "chain": {
                    "family": "bridge",
                    "table": "infinivirt",
                    "name": "forward",
                    "handle": 1,
                    "type": "filter",
                    "hook": "forward",
                    "prio": 0,
                    "policy": "accept",
                }
            },
            {"chain": {"family": "bridge", "table": "infinivirt", "name": "vm-1-out", "handle": 4}},
            {
                "rule": {
                    "family": "bridge",
                    "table": "infinivirt",
                    "chain": "vm-1-out",
                    "handle": 5,
                    "comment": "iv-1 x",
                    "expr": [{"jump": {"target": "dept-d-out"}}],
                }
            },
            {
                "rule": {
                    "family": "bridge",
                    "table": "infinivirt",
                    "chain": "vm-1-out",
                    "handle": 6,
                    "expr": [{"drop": None}],
                }
            },
        ]
    }
    view = nft.KernelView.parse(listing)
    assert view.exists and view.maps == {"from_vm": {"iv1": "vm-1-out"}}
    assert view.chains == {"forward": [], "vm-1-out": ["iv-1 x", None]}
    assert view.jumps["vm-1-out"] == {"dept-d-out"} and view.vm_chains() == {"vm-1-out"}
    assert view.hooks == {"forward": ("filter", "forward", 0, "accept")}
    assert not nft.KernelView.parse(None).exists
