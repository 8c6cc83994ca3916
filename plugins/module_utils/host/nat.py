# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""IPv4 NAT for a network: an nftables table of its own (masquerade + forward accept),
written through nft's JSON API in one transaction, and IPv4 forwarding.

The table is ``ip infinivirt_nat_<network>``. Each rule's comment carries a digest of the
whole wanted ruleset, so reading the table back tells whether it is exactly as wanted: a
flushed table, a missing chain or rule, or rules of another configuration all count as
drift and are rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
from ansible_collections.infinivirt.core.plugins.module_utils.host.nft_expr import match, meta, payload
from ansible_collections.infinivirt.core.plugins.module_utils.host.programs import run_nft

FAMILY = "ip"
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"

# Table states
PRESENT, MISSING, DRIFTED = "present", "missing", "drifted"


@dataclasses.dataclass(frozen=True)
class NatRules:
    table: str  # the nftables table (family ip): network.spec.nat_table_name
    bridge: str
    subnet: str  # e.g. 10.77.0.0/24
    outbound_interface: Optional[str] = None  # None: any interface except the bridge


def wanted_chains(rules: NatRules) -> List[Dict[str, Any]]:
    base = {"family": FAMILY, "table": rules.table}
    return [
        dict(base, name="postrouting", type="nat", hook="postrouting", prio=100, policy="accept"),
        dict(base, name="forward", type="filter", hook="forward", prio=0, policy="accept"),
    ]


def wanted_rules(rules: NatRules) -> List[Dict[str, Any]]:
    """The rules in order, each with a comment naming its role and the ruleset's digest."""
    net = ipaddress.ip_network(rules.subnet)
    subnet = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    if rules.outbound_interface:
        out = match(meta("oifname"), rules.outbound_interface)
    else:
        out = match(meta("oifname"), rules.bridge, "!=")
    body = [
        (
            "masquerade",
            "postrouting",
            [
                match(payload("ip", "saddr"), subnet),
                match(payload("ip", "daddr"), subnet, "!="),
                out,
                {"masquerade": None},
            ],
        ),
        (
            "from-bridge",
            "forward",
            [match(meta("iifname"), rules.bridge), match(payload("ip", "saddr"), subnet), {"accept": None}],
        ),
        (
            "to-bridge",
            "forward",
            [
                match(meta("oifname"), rules.bridge),
                match(payload("ip", "daddr"), subnet),
                match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                {"accept": None},
            ],
        ),
    ]
    digest = hashlib.sha256(json.dumps([wanted_chains(rules), body], sort_keys=True).encode()).hexdigest()[:16]
    return [
        {
            "family": FAMILY,
            "table": rules.table,
            "chain": chain,
            "expr": expr,
            "comment": "infinivirt %s %s" % (role, digest),
        }
        for role, chain, expr in body
    ]


def ruleset_document(rules: NatRules) -> Dict[str, Any]:
    """One transaction that replaces the table whole: add (so the delete cannot fail),
    delete, then add it again with its chains and rules."""
    table = {"family": FAMILY, "name": rules.table}
    commands: List[Dict[str, Any]] = [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]
    commands += [{"add": {"chain": chain}} for chain in wanted_chains(rules)]
    commands += [{"add": {"rule": rule}} for rule in wanted_rules(rules)]
    return {"nftables": commands}


def _run_nft(args: List[str], netns: Optional[str], stdin: Optional[str], doing: str) -> str:
    done = run_nft(["-j"] + args, netns, stdin)
    if done.returncode != 0:
        raise NetError("%s: nft failed: %s" % (doing, (done.stderr or done.stdout).strip()))
    return done.stdout


def list_tables(netns: Optional[str]) -> List[str]:
    out = _run_nft(["list", "tables", FAMILY], netns, None, "listing nftables tables")
    items = json.loads(out or '{"nftables": []}')["nftables"]
    return [item["table"]["name"] for item in items if "table" in item]


def read_table(table: str, netns: Optional[str]) -> Optional[List[Dict[str, Any]]]:
    """The table's objects as ``nft -j list table`` gives them, None if there is no table."""
    if table not in list_tables(netns):
        return None
    out = _run_nft(["list", "table", FAMILY, table], netns, None, "reading nftables table %s" % table)
    return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]


def table_state(rules: NatRules, netns: Optional[str]) -> str:
    """PRESENT (exactly as wanted), MISSING or DRIFTED."""
    listed = read_table(rules.table, netns)
    if listed is None:
        return MISSING
    chain_keys = ("name", "type", "hook", "prio", "policy")
    have_chains = sorted(tuple(item["chain"].get(k) for k in chain_keys) for item in listed if "chain" in item)
    want_chains = sorted(tuple(chain[k] for k in chain_keys) for chain in wanted_chains(rules))
    have_rules = [(item["rule"]["chain"], item["rule"].get("comment")) for item in listed if "rule" in item]
    want_rules = [(rule["chain"], rule["comment"]) for rule in wanted_rules(rules)]
    others = [item for item in listed if not set(item) & {"table", "chain", "rule"}]
    if have_chains == want_chains and have_rules == want_rules and not others:
        return PRESENT
    return DRIFTED


def apply_table(rules: NatRules, netns: Optional[str]) -> None:
    """Write the table in one atomic transaction and check that it reads back as wanted."""
    _run_nft(["-f", "-"], netns, json.dumps(ruleset_document(rules)), "writing nftables table %s" % rules.table)
    if table_state(rules, netns) != PRESENT:
        raise NetError("nftables table %s does not read back as written" % rules.table)


def remove_table(table: str, netns: Optional[str]) -> None:
    """Delete the table, in one transaction that also succeeds when it is already gone."""
    ref = {"family": FAMILY, "name": table}
    _run_nft(
        ["-f", "-"],
        netns,
        json.dumps({"nftables": [{"add": {"table": ref}}, {"delete": {"table": ref}}]}),
        "removing nftables table %s" % table,
    )


def table_exists(table: str, netns: Optional[str]) -> bool:
    return table in list_tables(netns)


def ip_forward(netns: Optional[str]) -> bool:
    """Whether IPv4 forwarding is on in the namespace (its own /proc/sys/net view)."""
    try:
        with nsutil.entered(netns):
            with open(IP_FORWARD) as fh:
                return fh.read().strip() == "1"
    except OSError as exc:
        raise NetError("cannot read %s: %s" % (IP_FORWARD, exc)) from exc


def enable_ip_forward(netns: Optional[str]) -> None:
    """Turn IPv4 forwarding on in the namespace. Never turned off again: other networks
    and other software may rely on it."""
    try:
        with nsutil.entered(netns):
            with open(IP_FORWARD, "w") as fh:
                fh.write("1\n")
    except OSError as exc:
        raise NetError("cannot enable IPv4 forwarding (%s): %s" % (IP_FORWARD, exc)) from exc
