# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Firewall rule validation: every bad value is a SpecError naming the field."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.rules import (
    RuleSpec,
    parse_ports,
    parse_rule,
    parse_ruleset,
    rule_from_dict,
)

GOOD = {"direction": "in", "protocol": "tcp", "ports": ["22"]}


@pytest.mark.parametrize(
    "bad,field,words",
    [
        ({"cidr": "10.0.0.0/33"}, "rules[1].cidr", "not an IPv4 or IPv6 network"),
        ({"cidr": "300.1.1.1/8"}, "rules[1].cidr", "not an IPv4 or IPv6 network"),
        ({"cidr": "10.0.0.1/8"}, "rules[1].cidr", "host bits set; the network is 10.0.0.0/8"),
        ({"cidr": "10.0.0.0/8; flush ruleset"}, "rules[1].cidr", "not an IPv4"),
        ({"cidr": "2001:db8::/32", "protocol": "icmp"}, "rules[1].cidr", "IPv4 only"),
        ({"cidr": "192.0.2.0/24", "protocol": "icmpv6"}, "rules[1].cidr", "IPv6 only"),
        ({"protocol": "tcp", "ports": ["70000"]}, "rules[1].ports[0]", "1 to 65535"),
        ({"protocol": "tcp", "ports": [0]}, "rules[1].ports[0]", "1 to 65535"),
        ({"protocol": "tcp", "ports": ["5-3"]}, "rules[1].ports[0]", "lower port"),
        ({"protocol": "tcp", "ports": ["22,23"]}, "rules[1].ports[0]", "not a port"),
        ({"protocol": "udp", "ports": [True]}, "rules[1].ports[0]", "not a port"),
        ({"protocol": "icmp", "ports": ["22"]}, "rules[1].ports", "need protocol tcp or udp"),
        ({"protocol": "any", "ports": [22]}, "rules[1].ports", "need protocol tcp or udp"),
        ({"comment": "x; flush ruleset"}, "rules[1].comment", "';'"),
        ({"comment": 'ok" ; flush ruleset ; "'}, "rules[1].comment", "quotes"),
        ({"comment": "a } b { c"}, "rules[1].comment", "braces"),
        ({"comment": "# x"}, "rules[1].comment", "'#'"),
        ({"comment": "back\\slash"}, "rules[1].comment", "backslash"),
        ({"comment": "line\nbreak"}, "rules[1].comment", "control"),
        ({"comment": "rtl\u202eoverride"}, "rules[1].comment", "control"),
        ({"comment": "x" * 65}, "rules[1].comment", "at most 64 bytes"),
        ({"name": "web server"}, "rules[1].name", "letters, digits"),
        ({"name": "x'y"}, "rules[1].name", "letters, digits"),
        ({"name": "-x"}, "rules[1].name", "starting with"),
        ({"name": "a" * 33}, "rules[1].name", "1 to 32"),
        ({"direction": "both"}, "rules[1].direction", "in, out"),
        ({"protocol": "sctp"}, "rules[1].protocol", "must be one of"),
        ({"action": "allow"}, "rules[1].action", "must be one of"),
        ({"port": 22}, "rules[1]", "unknown keys: port"),
    ],
)
def test_bad_rules_name_the_field(bad, field, words):
    rule = dict({"direction": "in", "protocol": "tcp"}, **bad)
    with pytest.raises(SpecError) as err:
        parse_ruleset({"scope": "vm", "name": "vm1", "rules": [GOOD, rule]})
    assert err.value.field == field
    assert words in err.value.reason


@pytest.mark.parametrize(
    "params,field",
    [
        ({"scope": "department", "name": "a b"}, "name"),
        ({"scope": "department", "name": 'x"}'}, "name"),
        ({"scope": "department", "name": ""}, "name"),
        ({"scope": "vm", "name": "../etc"}, "name"),
        ({"scope": "vm", "name": "vm1", "policy_out": "reject"}, "policy_out"),
        ({"scope": "department", "name": "d", "anti_spoofing": False}, "anti_spoofing"),
        ({"scope": "tenant", "name": "d"}, "scope"),
        ({"scope": "vm", "name": "vm1", "rules": [GOOD, dict(GOOD, name="x"), dict(GOOD, name="x")]}, "rules[2].name"),
    ],
)
def test_bad_scopes(params, field):
    with pytest.raises(SpecError) as err:
        parse_ruleset(params)
    assert err.value.field == field


def test_normal_forms():
    rule = parse_rule(
        "r",
        {
            "direction": "out",
            "protocol": "tcp",
            "ports": [443, "80", "8000-8080", "8080-8090", 81],
            "cidr": "2001:DB8::/32",
            "comment": "Web  für alle",
        },
    )
    assert rule.ports == ((80, 81), (443, 443), (8000, 8090))
    assert rule.cidr == "2001:db8::/32" and rule.family == "ip6"
    assert rule.to_dict()["ports"] == ["80-81", "443", "8000-8090"]
    assert rule_from_dict(rule.to_dict()) == rule
    assert parse_rule("r", {"direction": "in", "cidr": "192.0.2.7"}).cidr == "192.0.2.7/32"
    assert parse_rule("r", {"direction": "in", "protocol": "icmpv6"}).family == "ip6"
    assert parse_rule("r", {"direction": "in"}) == RuleSpec(direction="in")
    assert parse_ports("p", "22") == ((22, 22),)


def test_defaults_per_scope():
    vm = parse_ruleset({"scope": "vm", "name": "vm1"})
    assert (vm.policy_in, vm.policy_out, vm.anti_spoofing, vm.rules) == ("accept", "accept", True, ())
    assert parse_ruleset({"scope": "vm", "name": "vm1", "anti_spoofing": False}).anti_spoofing is False
    assert parse_ruleset({"scope": "department", "name": "web.prod_1"}).anti_spoofing is False
