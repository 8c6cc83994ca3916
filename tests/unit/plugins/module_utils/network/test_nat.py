# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mode: nat, the pure parts: validation and defaults, the nftables document, dnsmasq's
command line. The real thing runs in tests/integration/test_net_module.py."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host import dnsmasq, nat
from ansible_collections.infinivirt.core.plugins.module_utils.network.nat_settings import parse_lease_time, validate_nat
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import _dnsmasq_config
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import BridgeSpec


def settings(addresses=("10.77.0.1/24",), bridge="natbr0", **params):
    return validate_nat(params, BridgeSpec(name=bridge, addresses=tuple(addresses)))


@pytest.mark.parametrize(
    "gateway,first,last",
    [
        ("10.77.0.1/24", "10.77.0.2", "10.77.0.254"),
        ("10.77.0.100/24", "10.77.0.101", "10.77.0.254"),
        ("10.77.0.254/24", "10.77.0.1", "10.77.0.253"),
        ("172.16.0.1/16", "172.16.0.2", "172.16.255.254"),
        ("192.168.9.1/30", "192.168.9.2", "192.168.9.2"),
    ],
)
def test_default_dhcp_range_is_the_hosts_next_to_the_gateway(gateway, first, last):
    got = settings(addresses=(gateway,))
    assert (got.range_start, got.range_end) == (first, last)
    assert got.dhcp and got.dns and got.lease_time == "1h" and got.lease_seconds == 3600
    assert got.outbound_interface is None


def test_settings_record_what_vms_need():
    got = settings(
        dhcp={"range_start": "10.77.0.100", "range_end": "10.77.0.199", "lease_time": "12h", "enabled": True},
        dns=False,
        outbound_interface="eth0",
    )
    assert got.to_dict("mynet") == {
        "gateway": "10.77.0.1",
        "subnet": "10.77.0.0/24",
        "dhcp": {"enabled": True, "range_start": "10.77.0.100", "range_end": "10.77.0.199", "lease_time": "12h"},
        "dns": False,
        "outbound_interface": "eth0",
        "table": "infinivirt_nat_mynet",
    }


@pytest.mark.parametrize(
    "value,text,seconds",
    [
        (None, "1h", 3600),
        ("30m", "30m", 1800),
        ("2d", "2d", 172800),
        ("1w", "1w", 604800),
        ("120", "120", 120),
        (3600, "3600", 3600),
        ("INFINITE", "infinite", None),
        (" 45M ", "45m", 2700),
    ],
)
def test_lease_time(value, text, seconds):
    assert parse_lease_time("dhcp.lease_time", value) == (text, seconds)


@pytest.mark.parametrize("value", ["1m", "119", "1y", "h", "-5", "1.5h", True, 2**31, "", [1]])
def test_bad_lease_time(value):
    with pytest.raises(SpecError) as err:
        parse_lease_time("dhcp.lease_time", value)
    assert err.value.field == "dhcp.lease_time"


@pytest.mark.parametrize(
    "kwargs,field,words",
    [
        ({"addresses": ()}, "addresses", "exactly one"),
        ({"addresses": ("10.77.0.1/24", "10.78.0.1/24")}, "addresses", "exactly one"),
        ({"addresses": ("2001:db8::1/64",)}, "addresses[0]", "IPv4"),
        ({"addresses": ("10.77.0.1/31",)}, "addresses[0]", "/8 to /30"),
        ({"addresses": ("10.77.0.1/32",)}, "addresses[0]", "/8 to /30"),
        ({"addresses": ("10.0.0.1/7",)}, "addresses[0]", "/8 to /30"),
        ({"addresses": ("10.77.0.0/24",)}, "addresses[0]", "network address"),
        ({"addresses": ("10.77.0.255/24",)}, "addresses[0]", "broadcast address"),
        ({"addresses": ("127.0.0.1/8",)}, "addresses[0]", "loopback"),
        ({"dhcp": "yes"}, "dhcp", "dictionary"),
        ({"dhcp": {"range": "x"}}, "dhcp", "unknown option range"),
        ({"dhcp": {"enabled": "yes"}}, "dhcp.enabled", "true or false"),
        ({"dhcp": {"range_start": "10.77.0.10"}}, "dhcp.range_end", "is required with dhcp.range_start"),
        ({"dhcp": {"range_end": "10.77.0.10"}}, "dhcp.range_start", "is required with dhcp.range_end"),
        ({"dhcp": {"range_start": "10.78.0.10", "range_end": "10.78.0.20"}}, "dhcp.range_start", "outside the subnet"),
        ({"dhcp": {"range_start": "10.77.0.10", "range_end": "10.78.0.20"}}, "dhcp.range_end", "outside the subnet"),
        ({"dhcp": {"range_start": "10.77.0.1", "range_end": "10.77.0.20"}}, "dhcp.range_start", "contains the gateway"),
        (
            {"addresses": ("10.77.0.50/24",), "dhcp": {"range_start": "10.77.0.10", "range_end": "10.77.0.99"}},
            "dhcp.range_start",
            "contains the gateway",
        ),
        ({"dhcp": {"range_start": "10.77.0.30", "range_end": "10.77.0.20"}}, "dhcp.range_end", "comes before"),
        ({"dhcp": {"range_start": "10.77.0.0", "range_end": "10.77.0.20"}}, "dhcp.range_start", "network address"),
        ({"dhcp": {"range_start": "10.77.0.2", "range_end": "10.77.0.255"}}, "dhcp.range_end", "broadcast address"),
        ({"dhcp": {"range_start": "fe80::1", "range_end": "10.77.0.20"}}, "dhcp.range_start", "IPv4"),
        ({"dhcp": {"range_start": "ten", "range_end": "10.77.0.20"}}, "dhcp.range_start", "IPv4"),
        ({"dhcp": {"range_start": 5, "range_end": "10.77.0.20"}}, "dhcp.range_start", "IPv4"),
        ({"dhcp": {"lease_time": "1m"}}, "dhcp.lease_time", "2 minutes"),
        ({"dns": "yes"}, "dns", "true or false"),
        ({"outbound_interface": "eth0;x"}, "outbound_interface", "may only contain"),
        ({"outbound_interface": "natbr0"}, "outbound_interface", "own bridge"),
    ],
)
def test_bad_nat_settings_name_the_field(kwargs, field, words):
    with pytest.raises(SpecError) as err:
        settings(**kwargs)
    assert err.value.field == field
    assert words in str(err.value)


def rules(**kwargs):
    base = dict(table="infinivirt_nat_natbr0", bridge="natbr0", subnet="10.77.0.0/24")
    base.update(kwargs)
    return nat.NatRules(**base)


def test_ruleset_is_one_transaction_that_replaces_the_table():
    commands = nat.ruleset_document(rules())["nftables"]
    table = {"family": "ip", "name": "infinivirt_nat_natbr0"}
    assert commands[:3] == [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}]
    chains = [c["add"]["chain"] for c in commands if "chain" in c.get("add", {})]
    assert [(c["name"], c["type"], c["hook"], c["prio"]) for c in chains] == [
        ("postrouting", "nat", "postrouting", 100),
        ("forward", "filter", "forward", 0),
    ]
    masquerade = commands[5]["add"]["rule"]
    assert masquerade["chain"] == "postrouting" and masquerade["expr"][-1] == {"masquerade": None}
    prefix = {"prefix": {"addr": "10.77.0.0", "len": 24}}
    assert masquerade["expr"][0]["match"] == {
        "op": "==",
        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
        "right": prefix,
    }
    assert masquerade["expr"][1]["match"] == {
        "op": "!=",
        "left": {"payload": {"protocol": "ip", "field": "daddr"}},
        "right": prefix,
    }
    assert masquerade["expr"][2]["match"] == {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "natbr0"}


def test_outbound_interface_limits_the_masquerade():
    expr = nat.wanted_rules(rules(outbound_interface="eth0"))[0]["expr"]
    assert expr[2]["match"] == {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth0"}


def test_rule_comments_carry_a_digest_of_the_ruleset():
    one = [r["comment"] for r in nat.wanted_rules(rules())]
    assert one == [r["comment"] for r in nat.wanted_rules(rules())]
    assert all(c.startswith("infinivirt ") for c in one)
    for other in (rules(subnet="10.78.0.0/24"), rules(bridge="br1"), rules(outbound_interface="eth0")):
        assert set(one).isdisjoint(r["comment"] for r in nat.wanted_rules(other))


def test_dnsmasq_command_line():
    files = dnsmasq.DnsmasqFiles.for_network("/run/iv", "natbr0")
    assert files.pidfile == "/run/iv/net-natbr0.dnsmasq.pid"
    assert files.leasefile == "/run/iv/net-natbr0.dnsmasq.leases"
    spec = BridgeSpec(name="natbr0", addresses=("10.77.0.1/24",))
    argv = dnsmasq.argv("/usr/sbin/dnsmasq", _dnsmasq_config(spec, settings()), files)
    assert argv == [
        "/usr/sbin/dnsmasq",
        "--conf-file=/dev/null",
        "--pid-file=/run/iv/net-natbr0.dnsmasq.pid",
        "--bind-interfaces",
        "--interface=natbr0",
        "--except-interface=lo",
        "--listen-address=10.77.0.1",
        "--dhcp-range=10.77.0.2,10.77.0.254,255.255.255.0,3600",
        "--dhcp-leasefile=/run/iv/net-natbr0.dnsmasq.leases",
        "--dhcp-authoritative",
        "--dhcp-lease-max=253",
    ]
    no_dns = dnsmasq.argv("dnsmasq", _dnsmasq_config(spec, settings(dns=False, dhcp={"lease_time": "infinite"})), files)
    assert no_dns[-1] == "--port=0" and "--dhcp-range=10.77.0.2,10.77.0.254,255.255.255.0,infinite" in no_dns
    dns_only = dnsmasq.argv("dnsmasq", _dnsmasq_config(spec, settings(dhcp={"enabled": False})), files)
    assert not [arg for arg in dns_only if arg.startswith("--dhcp")]
    assert not settings(dhcp={"enabled": False}, dns=False).serves()
