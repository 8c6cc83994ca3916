# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_net has to do, decided from data alone: the stored row, what the host has
now (read by the service) and the validated spec in, the steps and the task's result out.
Pure: network/service.py reads the host, applies the steps and undoes them on failure."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.network.nat_settings import NatSettings
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import BridgeSpec

# journal kinds (owner "network:<host>:<name>", ref "<netns>/<thing>")
J_BRIDGE, J_TABLE, J_DNSMASQ = "bridge", "nft_table", "dnsmasq"
# states as host.nat and host.dnsmasq report them (the unit test holds them equal)
TABLE_PRESENT, TABLE_MISSING = "present", "missing"
DNSMASQ_RUNNING, DNSMASQ_STOPPED, DNSMASQ_OUTDATED = "running", "stopped", "outdated"

Journal = Sequence[Tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing to do. ``kind`` names what the service does (see NetworkService._do), ``ref``
    the journal ref it acts on; ``undo``: this run makes it, so a later failure removes it."""

    action: str  # as reported in ``actions``; "" for the bridge and the record
    what: str  # in messages: "<what> failed", "undone: ..."
    kind: str
    ref: str = ""
    undo: bool = False


@dataclasses.dataclass(frozen=True)
class NatLive:
    """What the network's namespace has of NAT now."""

    ip_forward: bool
    table: str  # TABLE_PRESENT, TABLE_MISSING or drifted
    daemon: str  # DNSMASQ_*
    table_ref: str  # journal ref of the network's nft table
    dnsmasq_ref: str  # journal ref of the pidfile of the dnsmasq this run wants


@dataclasses.dataclass(frozen=True)
class HostNow:
    """What the host and the journal have now, as read by the service."""

    journal: Tuple[Tuple[str, str], ...] = ()
    bridge: Any = None  # host.net.BridgeState (mtu, stp, addresses) or None
    todo: Tuple[str, ...] = ()  # what apply_bridge would change (host.net.changes)
    bridge_ref: Optional[str] = None  # journal ref of the bridge (absent: the row's)
    nat: Optional[NatLive] = None  # mode nat: its pieces now
    pieces: Tuple[Tuple[str, str, bool], ...] = ()  # (kind, ref, found) of NAT pieces to end
    users: Tuple[str, ...] = ()  # VMs whose NICs use the network


@dataclasses.dataclass(frozen=True)
class Desired:
    name: str
    mode: str
    bridge: BridgeSpec
    nat: Optional[NatSettings] = None
    netns: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Plan:
    steps: Tuple[Step, ...]
    result: Dict[str, Any]  # changed, actions, network, diff
    wanted: Optional[Dict[str, Any]] = None  # the row to record
    managed: bool = False


def _thing(ref: str) -> str:
    return ref.split("/", 1)[1]  # host.netns.parse_ns_ref without the namespace


# -- present ------------------------------------------------------------------------------------
def plan_nat(serves: bool, live: NatLive, journal: Journal, todo: Sequence[str]):
    """(the NAT steps still to do, the runtime view of what the namespace has now)."""
    daemon = live.daemon
    if daemon == DNSMASQ_RUNNING and {"create", "addresses"} & set(todo):
        daemon = DNSMASQ_OUTDATED  # its sockets belong to the old bridge or address
    steps = []
    if not live.ip_forward:  # never undone: other things may rely on it
        steps.append(Step("ip_forward", "enabling IPv4 forwarding", "ip_forward"))
    if live.table != TABLE_PRESENT:
        what = "writing nftables table %s" % _thing(live.table_ref)
        steps.append(Step("nftables", what, "table", live.table_ref, undo=live.table == TABLE_MISSING))
    # dnsmasq of this network started with another run_dir: end it first.
    for kind, ref in journal:
        if kind == J_DNSMASQ and _thing(ref) != _thing(live.dnsmasq_ref):
            steps.append(Step("dnsmasq-stop", "stopping dnsmasq (%s)" % _thing(ref), "dnsmasq_stop", ref))
    if serves and daemon != DNSMASQ_RUNNING:
        restart = daemon == DNSMASQ_OUTDATED
        steps.append(
            Step(
                "dnsmasq",
                "%s dnsmasq" % ("restarting" if restart else "starting"),
                "dnsmasq_restart" if restart else "dnsmasq_start",
                live.dnsmasq_ref,
                undo=daemon == DNSMASQ_STOPPED,
            )
        )
    elif not serves and (daemon != DNSMASQ_STOPPED or (J_DNSMASQ, live.dnsmasq_ref) in journal):
        steps.append(Step("dnsmasq-stop", "stopping dnsmasq", "dnsmasq_stop", live.dnsmasq_ref))
    return steps, {"ip_forward": live.ip_forward, "nftables": live.table, "dnsmasq": daemon}


def plan_teardown(pieces: Sequence[Tuple[str, str, bool]], journal: Journal) -> List[Step]:
    """Steps that end the NAT pieces (dnsmasq first) found on the host or in the journal."""
    steps = []
    for kind, ref, found in pieces:
        if not found and (kind, ref) not in journal:
            continue
        if kind == J_DNSMASQ:
            steps.append(Step("dnsmasq-stop", "stopping dnsmasq", "dnsmasq_stop", ref))
        elif kind == J_TABLE:
            steps.append(Step("nftables-remove", "removing nftables table %s" % _thing(ref), "table_remove", ref))
    return steps


def plan_present(row: Optional[Dict[str, Any]], host: HostNow, desired: Desired) -> Plan:
    """The steps that make the network as desired, and the task's result."""
    name, spec, todo = desired.name, desired.bridge, list(host.todo)
    if row is not None:
        managed = row["managed"]
    else:
        managed = host.bridge is None or (J_BRIDGE, host.bridge_ref) in host.journal
    wanted = dict(spec.to_dict(), netns=desired.netns, mode=desired.mode)
    runtime_before: Dict[str, Any] = {}
    if desired.nat is not None:
        wanted["nat"] = desired.nat.to_dict(name)
        steps, runtime_before = plan_nat(desired.nat.serves(), host.nat, host.journal, todo)
    else:
        steps = plan_teardown(host.pieces, host.journal)
    recorded = row is not None and row["spec"] == wanted and row["mode"] == desired.mode
    actions = todo + [step.action for step in steps]
    if todo:
        create = "create" in todo
        what = "%s bridge %s" % ("creating" if create else "updating", spec.name)
        kind = "bridge_create" if create else "bridge_update"
        steps.insert(0, Step("", what, kind, host.bridge_ref, undo=create))
    if not recorded:
        steps.append(Step("", "recording the network in the database", "record"))
    result = {
        "changed": bool(actions) or not recorded,
        "actions": actions,
        "network": dict(wanted, name=name, managed=managed, state="present"),
        "diff": _present_diff(row, host, desired, wanted, runtime_before),
    }
    return Plan(tuple(steps), result, wanted, managed)


def _present_diff(row, host: HostNow, desired: Desired, wanted, runtime_before) -> Dict[str, Any]:
    if (
        row is None
        and host.bridge is None
        and runtime_before.get("nftables", TABLE_MISSING) == TABLE_MISSING
        and runtime_before.get("dnsmasq", DNSMASQ_STOPPED) == DNSMASQ_STOPPED
    ):
        before: Dict[str, Any] = {"state": "absent"}
    else:
        before = _view(host.bridge, desired.bridge, desired.netns, row)
        if runtime_before:
            before["runtime"] = runtime_before
    after = dict(wanted, state="present")
    if desired.nat is not None:
        after["runtime"] = {
            "ip_forward": True,
            "nftables": TABLE_PRESENT,
            "dnsmasq": DNSMASQ_RUNNING if desired.nat.serves() else DNSMASQ_STOPPED,
        }
    return {"before": before, "after": after}


def _view(state, bridge: BridgeSpec, netns: Optional[str], row: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if state is None:
        view: Dict[str, Any] = {"state": "absent"}
    else:
        view = {
            "bridge": bridge.name,
            "mtu": state.mtu if bridge.mtu is not None else None,  # None: not managed
            "stp": state.stp,
            "addresses": list(state.addresses),
            "state": "present",
        }
    if row is not None:
        view["netns"] = row["spec"].get("netns", netns)
        view["mode"] = row["mode"]
        if "nat" in row["spec"]:
            view["nat"] = row["spec"]["nat"]
    elif state is not None:
        view["netns"] = netns
    return view


# -- absent -------------------------------------------------------------------------------------
def check_unused(name: str, users: Sequence[str]) -> None:
    if users:
        raise StateError(
            "network %s is used by the NICs of VM %s; remove those NICs (or the VMs) first" % (name, ", ".join(users))
        )


def plan_absent(name: str, row: Optional[Dict[str, Any]], host: HostNow) -> Plan:
    """The steps that remove the network (``host.bridge_ref``: the row's bridge), and the
    task's result."""
    gone = {"name": name, "state": "absent"}
    if row is None and not host.journal:
        nothing = {"before": {"state": "absent"}, "after": {"state": "absent"}}
        return Plan((), {"changed": False, "actions": [], "network": gone, "diff": nothing})
    check_unused(name, host.users)
    steps = plan_teardown(host.pieces, host.journal)
    bridges = [ref for kind, ref in host.journal if kind == J_BRIDGE]
    if row is not None:
        if row["managed"] and host.bridge_ref not in bridges:
            bridges.append(host.bridge_ref)
        if not row["managed"]:
            bridges = [ref for ref in bridges if ref != host.bridge_ref]
    steps += [Step("remove", "removing bridge %s" % _thing(ref), "bridge_remove", ref) for ref in bridges]
    if row is not None:
        action = "remove" if row["managed"] else "forget"
        steps.append(Step(action, "removing the network from the database", "delete"))
    actions: List[str] = []
    for step in steps:
        if step.action not in actions:
            actions.append(step.action)
    if row is not None:
        before = dict(row["spec"], state="present")
    else:
        before = {"state": "present", "leftovers": ["%s %s" % piece for piece in host.journal]}
    diff = {"before": before, "after": {"state": "absent"}}
    return Plan(tuple(steps), {"changed": True, "actions": actions, "network": gone, "diff": diff})
