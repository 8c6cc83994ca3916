# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Firewall rule sets as typed values: what a user may write, checked and normalized.

A rule set belongs to a scope: a department (shared by the VMs whose spec names it) or one
VM. Every value that reaches nftables is checked here first and only ever travels inside
the JSON document (never nft's text syntax); names are plain words and comments refuse the
characters nft's syntax gives meaning to, so a rule set listed back with ``nft list`` reads
the same as it was written.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    check_choice,
    validate_label,
    validate_name,
)

SCOPES = ("department", "vm")
DIRECTIONS = ("in", "out")  # in: to the VM; out: from the VM
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6", "any")
ACTIONS = ("accept", "drop", "reject")
POLICIES = ("accept", "drop")
MAX_RULES = 5000
COMMENT_MAX_BYTES = 64
# Department and rule names: the same alphabet as the VM's department option (spec.py).
# Characters nft's text syntax gives meaning to; refused even though comments only travel
# inside JSON, so that ``nft list ruleset`` output stays unambiguous.
_COMMENT_FORBIDDEN = set("\"'`;{}#\\")
_PORT_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    direction: str
    protocol: str = "any"
    ports: Tuple[Tuple[int, int], ...] = ()  # sorted, merged (low, high) ranges
    cidr: Optional[str] = None  # the remote side; None: any address
    action: str = "accept"
    name: Optional[str] = None
    comment: Optional[str] = None

    @property
    def family(self) -> Optional[str]:
        """ip or ip6 when the CIDR or the protocol ties the rule to one; None for both."""
        if self.cidr is not None:  # normalized: IPv6 networks, and only they, have a ':'
            return "ip6" if ":" in self.cidr else "ip"
        return {"icmp": "ip", "icmpv6": "ip6"}.get(self.protocol)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "protocol": self.protocol,
            "ports": [port_text(r) for r in self.ports],
            "cidr": self.cidr,
            "action": self.action,
            "comment": self.comment,
        }


@dataclasses.dataclass(frozen=True)
class RuleSet:
    scope: str
    name: str  # department name, or VM name for scope vm
    rules: Tuple[RuleSpec, ...] = ()
    policy_in: str = "accept"
    policy_out: str = "accept"
    anti_spoofing: bool = False  # scope vm only

    def settings(self) -> Dict[str, Any]:
        return {"policy_in": self.policy_in, "policy_out": self.policy_out, "anti_spoofing": self.anti_spoofing}

    def to_dict(self) -> Dict[str, Any]:
        data = dict(self.settings(), scope=self.scope, name=self.name)
        data["rules"] = [r.to_dict() for r in self.rules]
        return data


def port_text(span: Tuple[int, int]) -> str:
    return str(span[0]) if span[0] == span[1] else "%d-%d" % span


def validate_comment(field: str, value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(field, "must be a string, got %r" % (value,))
    bad = sorted({ch for ch in value if ch in _COMMENT_FORBIDDEN or not ch.isprintable()})
    if bad:
        raise SpecError(
            field,
            "%r contains %s; comments may not contain quotes, ';', braces, "
            "'#', backslashes or control characters" % (value, ", ".join(repr(c) for c in bad)),
        )
    if len(value.encode("utf-8")) > COMMENT_MAX_BYTES:
        raise SpecError(field, "must be at most %d bytes" % COMMENT_MAX_BYTES)
    return value


def validate_cidr(field: str, value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(field, "must be a string such as 192.0.2.0/24, got %r" % (value,))
    try:
        return ipaddress.ip_network(value).with_prefixlen
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise SpecError(
            field, "%r is not an IPv4 or IPv6 network such as 192.0.2.0/24 or 2001:db8::/32" % (value,)
        ) from None
    raise SpecError(field, "%s has host bits set; the network is %s" % (value, loose))


def parse_ports(field: str, value: Any) -> Tuple[Tuple[int, int], ...]:
    """Ports and "low-high" ranges as sorted, merged (low, high) pairs."""
    if value is None:
        return ()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(field, "must be a list of ports and 'low-high' ranges, got %r" % (value,))
    spans = []
    for index, item in enumerate(value):
        where = "%s[%d]" % (field, index)
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and _PORT_RE.fullmatch(item.strip()):
            match = _PORT_RE.fullmatch(item.strip())
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
        else:
            raise SpecError(where, "%r is not a port (1-65535) or a range such as 8000-8080" % (item,))
        for port in (low, high):
            if not 1 <= port <= 65535:
                raise SpecError(where, "%r: ports are 1 to 65535" % (item,))
        if low > high:
            raise SpecError(where, "%r: a range goes from the lower port to the higher" % (item,))
        spans.append((low, high))
    merged: List[Tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def parse_rule(field: str, item: Any) -> RuleSpec:
    if not isinstance(item, Mapping):
        raise SpecError(field, "must be a dictionary, got %r" % (item,))
    unknown = sorted(set(item) - {"name", "direction", "protocol", "ports", "cidr", "action", "comment"})
    if unknown:
        raise SpecError(field, "unknown keys: %s" % ", ".join(unknown))
    name = item.get("name")
    if name is not None:
        validate_label(field + ".name", name)
    direction = check_choice(field + ".direction", item.get("direction"), DIRECTIONS)
    protocol = check_choice(field + ".protocol", item.get("protocol") or "any", PROTOCOLS)
    ports = parse_ports(field + ".ports", item.get("ports"))
    if ports and protocol not in ("tcp", "udp"):
        raise SpecError(field + ".ports", "ports need protocol tcp or udp, not %s" % protocol)
    cidr = validate_cidr(field + ".cidr", item.get("cidr"))
    if cidr is not None:
        version = ipaddress.ip_network(cidr).version
        if (protocol, version) in (("icmp", 6), ("icmpv6", 4)):
            raise SpecError(
                field + ".cidr",
                "%s is an IPv%d network but protocol %s is IPv%d only" % (cidr, version, protocol, 10 - version),
            )
    action = check_choice(field + ".action", item.get("action") or "accept", ACTIONS)
    comment = validate_comment(field + ".comment", item.get("comment"))
    return RuleSpec(
        direction=direction, protocol=protocol, ports=ports, cidr=cidr, action=action, name=name, comment=comment
    )


def parse_rules(items: Optional[Sequence[Any]]) -> Tuple[RuleSpec, ...]:
    items = list(items or ())
    if len(items) > MAX_RULES:
        raise SpecError("rules", "at most %d rules per scope, got %d" % (MAX_RULES, len(items)))
    rules = tuple(parse_rule("rules[%d]" % index, item) for index, item in enumerate(items))
    seen = set()
    for index, rule in enumerate(rules):
        if rule.name is not None:
            if rule.name in seen:
                raise SpecError("rules[%d].name" % index, "%s names another rule too" % rule.name)
            seen.add(rule.name)
    return rules


def parse_ruleset(params: Mapping[str, Any]) -> RuleSet:
    """The rule set the parameters describe (a dict shaped like the module's options)."""
    scope = check_choice("scope", params.get("scope"), SCOPES)
    name = params.get("name")
    if scope == "department":
        validate_label("name", name)
    else:
        validate_name(name)
    anti_spoofing = params.get("anti_spoofing")
    if scope == "department" and anti_spoofing is not None:
        raise SpecError("anti_spoofing", "applies to scope vm only (it checks a VM's own addresses)")
    return RuleSet(
        scope=scope,
        name=name,
        rules=parse_rules(params.get("rules")),
        policy_in=check_choice("policy_in", params.get("policy_in") or "accept", POLICIES),
        policy_out=check_choice("policy_out", params.get("policy_out") or "accept", POLICIES),
        anti_spoofing=bool(anti_spoofing if anti_spoofing is not None else scope == "vm"),
    )


def rule_from_dict(data: Mapping[str, Any]) -> RuleSpec:
    """A stored rule (``RuleSpec.to_dict`` output) back into a RuleSpec, checked again."""
    return parse_rule("stored rule", data)
