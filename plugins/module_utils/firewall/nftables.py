# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nftables side of the firewall: the JSON rules of each chain, what the kernel has, and
one ``nft -j -f -`` transaction that turns one into the other.

Layout, in the network namespace of the VM's TAPs (one table per namespace)::

    table bridge infinivirt
      chain forward (hook forward)   iifname vmap @from_vm; oifname vmap @to_vm
      chain input   (hook input)     iifname vmap @from_vm     (VM -> host on the bridge)
      chain output  (hook output)    oifname vmap @to_vm       (host on the bridge -> VM)
      map from_vm, to_vm             TAP name -> jump vm-<uuid>-out / vm-<uuid>-in
      chain vm-<uuid>-in|out         anti-spoofing, infrastructure, jump dept-<name>-in|out,
                                     replies, the VM's rules, the VM's policy
      chain dept-<name>-in|out       replies, the department's rules, its policy

A packet passes when every chain it meets lets it through: ``accept`` is ``return`` (pass this
scope, the next one decides), ``drop`` is final, and a frame between two VMs meets the
sender's ``out`` chain and then the receiver's ``in`` chain.

Every rule we write carries a comment that starts with a tag: a hash of its expressions.
The kernel keeps comments as written, so comparing the tags of a chain with the wanted ones
tells whether it is in sync without parsing nft's own rendering of the expressions (which
differs between nft versions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import subprocess
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.ports import Port
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.rules import RuleSet, RuleSpec
from ansible_collections.infinivirt.core.plugins.module_utils.host.nft_expr import match, meta, payload
from ansible_collections.infinivirt.core.plugins.module_utils.host.programs import run_nft

FAMILY = "bridge"
TABLE = "infinivirt"
FROM_VM, TO_VM = "from_vm", "to_vm"
# base chain -> (hook, [(map, interface key)])
BASE_CHAINS = {
    "forward": ("forward", [(FROM_VM, "iifname"), (TO_VM, "oifname")]),
    "input": ("input", [(FROM_VM, "iifname")]),
    "output": ("output", [(TO_VM, "oifname")]),
}
PRIORITY = 0  # filter

Expr = Dict[str, Any]
Rule = Tuple[str, List[Expr]]  # (comment, expressions)


class FirewallError(InfinivirtError):
    """nft failed or is missing."""


# -- names ----------------------------------------------------------------------------------


def vm_chain(vm_uuid: str, direction: str) -> str:
    return "vm-%s-%s" % (vm_uuid, direction)


def dept_chain(department: str, direction: str) -> str:
    return "dept-%s-%s" % (department, direction)


def is_vm_chain(name: str) -> bool:
    return name.startswith("vm-")


def is_dept_chain(name: str) -> bool:
    return name.startswith("dept-")


# -- expressions ----------------------------------------------------------------------------


def _one_or_set(items: Sequence[Any]) -> Any:
    return items[0] if len(items) == 1 else {"set": list(items)}


def _address(cidr: str) -> Any:
    """A normalized network ("address/length", rules.validate_cidr) as nft JSON."""
    address, length = cidr.split("/")
    if int(length) == (128 if ":" in address else 32):
        return address
    return {"prefix": {"addr": address, "len": int(length)}}


def _ports(spans: Sequence[Tuple[int, int]]) -> Any:
    return _one_or_set([low if low == high else {"range": [low, high]} for low, high in spans])


RETURN: Expr = {"return": None}
DROP: Expr = {"drop": None}
L4PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}
ICMP_ERRORS = ["destination-unreachable", "time-exceeded", "parameter-problem"]
ICMPV6_ERRORS = ["destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"]


def _verdict(rule: RuleSpec) -> Expr:
    if rule.action == "accept":
        return RETURN  # passes this scope; the next one (or the other side's VM) decides
    if rule.action == "drop":
        return DROP
    return {"reject": {"type": "tcp reset"}} if rule.protocol == "tcp" else {"reject": None}


def tag(exprs: List[Expr]) -> str:
    canonical = json.dumps(exprs, sort_keys=True, separators=(",", ":"))
    return "iv-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _rule(label: str, exprs: List[Expr]) -> Rule:
    return ("%s %s" % (tag(exprs), label), exprs)


def _remote(rule: RuleSpec, reply: bool) -> List[Expr]:
    """The remote side of the rule: the source of traffic to the VM, the destination of
    traffic from it (swapped for the replies)."""
    if rule.cidr is None:
        return []
    towards_vm = (rule.direction == "in") != reply
    return [match(payload(rule.family or "ip", "saddr" if towards_vm else "daddr"), _address(rule.cidr))]


def rule_exprs(rule: RuleSpec) -> List[Expr]:
    exprs = _remote(rule, reply=False)
    if rule.protocol != "any":
        exprs.append(match(meta("l4proto"), L4PROTO[rule.protocol]))
    if rule.ports:
        exprs.append(match(payload("th", "dport"), _ports(rule.ports)))
    return exprs + [_verdict(rule)]


def reply_exprs(rule: RuleSpec) -> List[List[Expr]]:
    """Stateless stand-ins for "established" (this kernel's bridge family has no conntrack):
    the replies an accepted flow needs, in the opposite direction. TCP replies must carry
    ACK, so the VM cannot open a connection from an allowed port."""
    remote = _remote(rule, reply=True)
    protocols = [rule.protocol] if rule.protocol != "any" else ["tcp", "udp", "icmp", "icmpv6"]
    found = []
    for protocol in protocols:
        if protocol == "icmp" and rule.family == "ip6" or protocol == "icmpv6" and rule.family == "ip":
            continue
        exprs = list(remote)
        if protocol in ("tcp", "udp"):
            exprs.append(match(meta("l4proto"), protocol))
            if rule.ports:
                exprs.append(match(payload("th", "sport"), _ports(rule.ports)))
            if protocol == "tcp":
                exprs.append(match(payload("tcp", "flags"), "ack", op="in"))
        else:
            exprs.append(match(payload(protocol, "type"), "echo-reply"))
        found.append(exprs + [RETURN])
    return found


def _label(rule: RuleSpec, index: int) -> str:
    text = rule.name or "rule %d" % index
    return text + (": " + rule.comment if rule.comment else "")


def scope_rules(ruleset: Optional[RuleSet], direction: str, owner: str) -> List[Rule]:
    """A scope's part of a chain: replies to the flows it accepts the other way, its rules
    for this direction in order, then its policy."""
    if ruleset is None:
        return []
    found: List[Rule] = []
    for index, rule in enumerate(ruleset.rules):
        if rule.direction != direction and rule.action == "accept":
            for exprs in reply_exprs(rule):
                found.append(_rule("%s reply to %s" % (owner, rule.name or "rule %d" % index), exprs))
    for index, rule in enumerate(ruleset.rules):
        if rule.direction == direction:
            found.append(_rule("%s %s" % (owner, _label(rule, index)), rule_exprs(rule)))
    policy = ruleset.policy_in if direction == "in" else ruleset.policy_out
    if policy == "drop":
        found.append(_rule("%s policy drop" % owner, [DROP]))
    return found


def anti_spoofing_rules(port: Port) -> List[Rule]:
    """Frames from the VM's TAP: its own MAC, and (when the NIC has ``ips``) only its own
    addresses, plus what address configuration needs (DHCP from 0.0.0.0, ARP probes,
    IPv6 link-local and the unspecified address of duplicate address detection)."""
    iif = match(meta("iifname"), port.tap)
    label = "anti-spoofing %s" % port.tap
    rules = [
        _rule(label + " mac", [iif, match(payload("ether", "saddr"), port.mac, "!="), DROP]),
        _rule(label + " arp mac", [iif, match(payload("arp", "saddr ether"), port.mac, "!="), DROP]),
    ]
    if not port.ips:
        return rules
    v4 = sorted({str(ipaddress.ip_address(a)) for a in port.ips if ipaddress.ip_address(a).version == 4})
    v6 = sorted({str(ipaddress.ip_address(a)) for a in port.ips if ipaddress.ip_address(a).version == 6})
    rules.append(
        _rule(label + " ethertype", [iif, match(payload("ether", "type"), {"set": ["ip", "arp", "ip6"]}, "!="), DROP])
    )
    rules.append(
        _rule(label + " arp ip", [iif, match(payload("arp", "saddr ip"), _one_or_set(v4 + ["0.0.0.0"]), "!="), DROP])
    )
    rules.append(
        _rule(
            label + " dhcp",
            [
                iif,
                match(payload("ip", "saddr"), "0.0.0.0"),
                match(payload("udp", "sport"), 68),
                match(payload("udp", "dport"), 67),
                RETURN,
            ],
        )
    )
    if v4:
        rules.append(_rule(label + " ipv4", [iif, match(payload("ip", "saddr"), _one_or_set(v4), "!="), DROP]))
    else:
        rules.append(_rule(label + " ipv4", [iif, match(payload("ether", "type"), "ip"), DROP]))
    allowed6 = v6 + ["::", {"prefix": {"addr": "fe80::", "len": 10}}]
    rules.append(_rule(label + " ipv6", [iif, match(payload("ip6", "saddr"), {"set": allowed6}, "!="), DROP]))
    return rules


def infrastructure_rules(direction: str) -> List[Rule]:
    """What a VM's network needs whatever the rules say: ARP, IPv6 neighbour and router
    discovery, DHCP and DHCPv6 client exchanges and ICMP errors (a stand-in for
    conntrack's "related"). They pass every rule and policy; anti-spoofing comes first."""
    out = direction == "out"
    nd = ["nd-router-solicit" if out else "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"]
    client, server = (68, 67) if out else (67, 68)
    client6, server6 = (546, 547) if out else (547, 546)
    return [
        _rule("infrastructure arp", [match(payload("ether", "type"), "arp"), RETURN]),
        _rule("infrastructure neighbour discovery", [match(payload("icmpv6", "type"), {"set": nd}), RETURN]),
        _rule(
            "infrastructure dhcp",
            [match(payload("udp", "sport"), client), match(payload("udp", "dport"), server), RETURN],
        ),
        _rule(
            "infrastructure dhcpv6",
            [match(payload("udp", "sport"), client6), match(payload("udp", "dport"), server6), RETURN],
        ),
        _rule("infrastructure icmp errors", [match(payload("icmp", "type"), {"set": ICMP_ERRORS}), RETURN]),
        _rule("infrastructure icmpv6 errors", [match(payload("icmpv6", "type"), {"set": ICMPV6_ERRORS}), RETURN]),
    ]


def vm_chains(
    vm_uuid: str, ports: Sequence[Port], ruleset: Optional[RuleSet], department: Optional[str]
) -> Dict[str, List[Rule]]:
    """The two chains of a VM, or none when it has neither rules of its own nor a
    department (it is not filtered at all then)."""
    if not ports or (ruleset is None and not department):
        return {}
    chains = {}
    for direction in ("in", "out"):
        rules: List[Rule] = []
        if direction == "out" and ruleset is not None and ruleset.anti_spoofing:
            for port in ports:
                rules += anti_spoofing_rules(port)
        rules += infrastructure_rules(direction)
        if department:
            target = dept_chain(department, direction)
            rules.append(_rule("department %s" % department, [{"jump": {"target": target}}]))
        rules += scope_rules(ruleset, direction, "vm")
        chains[vm_chain(vm_uuid, direction)] = rules
    return chains


def dept_chains(department: str, ruleset: Optional[RuleSet]) -> Dict[str, List[Rule]]:
    """A department without stored rules is an empty pair of chains (it lets all through)."""
    return {dept_chain(department, d): scope_rules(ruleset, d, "department %s" % department) for d in ("in", "out")}


def vm_elements(vm_uuid: str, ports: Sequence[Port]) -> Dict[str, Dict[str, str]]:
    return {
        FROM_VM: {p.tap: vm_chain(vm_uuid, "out") for p in ports},
        TO_VM: {p.tap: vm_chain(vm_uuid, "in") for p in ports},
    }


# -- what the kernel has -------------------------------------------------------------------


@dataclasses.dataclass
class KernelView:
    """Our table in one namespace, from ``nft -j list table``."""

    exists: bool = False
    chains: Dict[str, List[Optional[str]]] = dataclasses.field(default_factory=dict)  # comments
    hooks: Dict[str, Tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    jumps: Dict[str, Set[str]] = dataclasses.field(default_factory=dict)
    maps: Dict[str, Dict[str, Optional[str]]] = dataclasses.field(default_factory=dict)
    map_types: Dict[str, Tuple[Any, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, listing: Optional[Dict[str, Any]]) -> "KernelView":
        view = cls()
        if listing is None:
            return view
        for item in listing.get("nftables", []):
            if "table" in item:
                view.exists = True
            elif "chain" in item:
                chain = item["chain"]
                view.chains.setdefault(chain["name"], [])
                view.jumps.setdefault(chain["name"], set())
                if "hook" in chain:
                    view.hooks[chain["name"]] = (
                        chain.get("type"),
                        chain.get("hook"),
                        chain.get("prio"),
                        chain.get("policy"),
                    )
            elif "rule" in item:
                rule = item["rule"]
                view.chains.setdefault(rule["chain"], []).append(rule.get("comment"))
                view.jumps.setdefault(rule["chain"], set()).update(_jump_targets(rule.get("expr", [])))
            elif "map" in item:
                found = item["map"]
                view.map_types[found["name"]] = (found.get("type"), found.get("map"))
                view.maps[found["name"]] = {_elem_key(key): _target(value) for key, value in found.get("elem", [])}
        return view

    def vm_chains(self) -> Set[str]:
        return {name for name in self.chains if is_vm_chain(name)}


def _jump_targets(exprs: Iterable[Any]) -> Set[str]:
    found = set()
    for expr in exprs:
        if isinstance(expr, dict):
            for verdict in ("jump", "goto"):
                if isinstance(expr.get(verdict), dict):
                    found.add(expr[verdict].get("target"))
    return found


def _elem_key(key: Any) -> str:
    if isinstance(key, dict) and "elem" in key:  # an element with a comment or timeout
        return key["elem"].get("val")
    return key


def _target(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        for verdict in ("jump", "goto"):
            if isinstance(value.get(verdict), dict):
                return value[verdict].get("target")
    return None


def _base_rules(chain: str) -> List[Rule]:
    return [
        _rule("dispatch %s" % name, [{"vmap": {"key": meta(key), "data": "@" + name}}])
        for name, key in BASE_CHAINS[chain][1]
    ]


def skeleton_in_sync(view: KernelView) -> bool:
    for chain, (hook, _maps) in BASE_CHAINS.items():
        if view.hooks.get(chain) != ("filter", hook, PRIORITY, "accept"):
            return False
        if view.chains.get(chain) != [comment for comment, _exprs in _base_rules(chain)]:
            return False
    return all(view.map_types.get(name) == ("ifname", "verdict") for name in (FROM_VM, TO_VM))


# -- the transaction -----------------------------------------------------------------------


def _obj(kind: str, **fields: Any) -> Dict[str, Any]:
    return {kind: dict({"family": FAMILY, "table": TABLE}, **fields)}


def _chain_ops(name: str, rules: List[Rule]) -> List[Dict[str, Any]]:
    ops = [{"add": _obj("chain", name=name)}, {"flush": _obj("chain", name=name)}]
    return ops + [{"add": _obj("rule", chain=name, expr=exprs, comment=comment)} for comment, exprs in rules]


def skeleton_ops() -> List[Dict[str, Any]]:
    ops: List[Dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name in (FROM_VM, TO_VM):
        ops.append({"add": _obj("map", name=name, type="ifname", map="verdict")})
    for chain, (hook, _maps) in BASE_CHAINS.items():
        ops.append({"add": _obj("chain", name=chain, type="filter", hook=hook, prio=PRIORITY, policy="accept")})
        ops.append({"flush": _obj("chain", name=chain)})
        ops += [
            {"add": _obj("rule", chain=chain, expr=exprs, comment=comment)} for comment, exprs in _base_rules(chain)
        ]
    return ops


def plan(
    view: KernelView, owned: Set[str], chains: Dict[str, List[Rule]], elements: Dict[str, Dict[str, str]]
) -> List[Dict[str, Any]]:
    """The operations that bring ``view`` to the wanted state, [] if it is there.

    ``owned``: the chains this change is responsible for (a VM's two chains); those not in
    ``chains`` are removed, with map elements pointing at them. ``chains``: wanted content
    of chains (the VM's and its department's). ``elements``: map -> TAP -> chain wanted.
    Department chains no chain jumps to any more are removed, and the table with the last
    VM chain.
    """
    wanted_comments = {name: [comment for comment, _exprs in rules] for name, rules in chains.items()}
    remaining_vms = (view.vm_chains() - owned) | {c for c in chains if is_vm_chain(c)}
    if not remaining_vms:
        return [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}] if view.exists else []

    ops: List[Dict[str, Any]] = []
    if not skeleton_in_sync(view):
        ops += skeleton_ops()
    # Departments first (VM chains jump to them), then VMs.
    for name in sorted(chains, key=lambda c: (not is_dept_chain(c), c)):
        if view.chains.get(name) != wanted_comments[name] or (not view.exists):
            ops += _chain_ops(name, chains[name])
    dropped_chains = sorted(c for c in owned if c in view.chains and c not in chains)
    for map_name in (FROM_VM, TO_VM):
        have = view.maps.get(map_name, {}) if view.map_types.get(map_name) == ("ifname", "verdict") else {}
        want = elements.get(map_name, {})
        for key in sorted(have):
            if (have[key] in owned or key in want) and want.get(key) != have[key]:
                ops.append({"delete": _obj("element", name=map_name, elem=[key])})
        adds = [[key, {"jump": {"target": target}}] for key, target in sorted(want.items()) if have.get(key) != target]
        if adds:
            ops.append({"add": _obj("element", name=map_name, elem=adds)})
    for name in dropped_chains:
        ops += [{"flush": _obj("chain", name=name)}, {"delete": _obj("chain", name=name)}]
    # Department chains nobody jumps to any more.
    referenced: Set[str] = set()
    for name, targets in view.jumps.items():
        if name not in owned and name not in chains:
            referenced |= targets
    for rules in chains.values():
        for _comment, exprs in rules:
            referenced |= _jump_targets(exprs)
    for name in sorted(view.chains):
        if is_dept_chain(name) and name not in referenced and name not in chains:
            ops += [{"flush": _obj("chain", name=name)}, {"delete": _obj("chain", name=name)}]
    return ops


def count_rules(ops: Sequence[Dict[str, Any]]) -> int:
    return sum(1 for op in ops if "rule" in op.get("add", {}))


def document(ops: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}] + list(ops)}


# -- running nft ----------------------------------------------------------------------------


class Nft:
    """``nft`` in a network namespace. ``writes`` counts the transactions sent."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.writes = 0
        self._reject: Optional[bool] = None

    def _run(
        self, args: List[str], netns: Optional[str], stdin: Optional[str] = None
    ) -> "subprocess.CompletedProcess[str]":
        return run_nft(args, netns, stdin=stdin, timeout=self.timeout)

    def read(self, netns: Optional[str]) -> KernelView:
        done = self._run(["-j", "list", "table", FAMILY, TABLE], netns)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return KernelView()
            raise FirewallError(
                "nft could not list table %s %s in %s: %s" % (FAMILY, TABLE, where(netns), done.stderr.strip())
            )
        try:
            return KernelView.parse(json.loads(done.stdout or "{}"))
        except ValueError as exc:
            raise FirewallError("nft printed JSON that could not be read: %s" % exc) from None

    def apply(self, ops: Sequence[Dict[str, Any]], netns: Optional[str], check: bool = False) -> None:
        """One atomic transaction: all of it, or (on any error) none of it."""
        if not check:
            self.writes += 1
        done = self._run(["-j"] + (["-c"] if check else []) + ["-f", "-"], netns, stdin=json.dumps(document(ops)))
        if done.returncode != 0:
            raise FirewallError(
                "nft refused the firewall transaction in %s (nothing was changed): %s"
                % (where(netns), _first_lines(done.stderr))
            )

    def reject_supported(self, netns: Optional[str]) -> bool:
        """Whether the kernel can reject in the bridge family (CONFIG_NFT_BRIDGE_REJECT):
        asked once with ``nft -c``, which checks a transaction without committing it."""
        if self._reject is None:
            probe = "infinivirt-probe"
            ops = [
                {"add": {"table": {"family": FAMILY, "name": probe}}},
                {"add": {"chain": {"family": FAMILY, "table": probe, "name": "c"}}},
                {"add": {"rule": {"family": FAMILY, "table": probe, "chain": "c", "expr": [{"reject": None}]}}},
            ]
            done = self._run(["-j", "-c", "-f", "-"], netns, stdin=json.dumps(document(ops)))
            self._reject = done.returncode == 0
        return self._reject


def where(netns: Optional[str]) -> str:
    return "network namespace %s" % netns if netns else "the host's network namespace"


def _first_lines(text: str, count: int = 6) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()[:count])


def check_reject(rulesets: Sequence[RuleSet], nft: Nft, netns: Optional[str]) -> None:
    """A clear error before anything changes when a rule asks for reject on a kernel that
    cannot do it in the bridge family."""
    for ruleset in rulesets:
        for index, rule in enumerate(ruleset.rules):
            if rule.action == "reject" and not nft.reject_supported(netns):
                raise SpecError(
                    "rules[%d].action" % index,
                    "this kernel cannot reject in the bridge family (it lacks CONFIG_NFT_BRIDGE_REJECT); use drop",
                )
