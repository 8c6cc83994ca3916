# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_net does: a named network of this host, backed by a Linux bridge.

``mode: bridge`` is the bridge alone. ``mode: nat`` adds what libvirt's default network
gives: the bridge's address is the gateway of a private IPv4 subnet, nftables masquerades
what leaves the subnet (table ``ip infinivirt_nat_<name>``), IPv4 forwarding is on, and
dnsmasq serves DHCP (and DNS) on the bridge. Everything lives in the network's namespace.

Host resources this creates (the bridge, the nft table, dnsmasq) are written to the
store's resource journal under ``network:<host>:<name>`` before they are made and dropped after
they are gone, so whatever a crashed run left is found and removed by ``state: absent``.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import DEFAULT_RUN_DIR
from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    InfinivirtError,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host import dnsmasq, nat
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import (
    NetError,
    apply_bridge,
    changes,
    read_bridge,
    remove_bridge,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import (
    check_netns,
    netns_path,
    ns_ref,
    parse_ns_ref,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.programs import find_program, nft_program
from ansible_collections.infinivirt.core.plugins.module_utils.network.nat_settings import (
    NAT_OPTIONS,
    NatSettings,
    validate_nat,
)
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import (
    BridgeSpec,
    nat_table_name,
    validate_bridge,
)
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice, validate_ifname

MODES = ("bridge", "nat")

# journal kinds (owner "network:<host>:<name>", ref "<netns>/<thing>")
J_BRIDGE, J_TABLE, J_DNSMASQ = "bridge", "nft_table", "dnsmasq"


def _ns_exists(netns: Optional[str]) -> bool:
    return netns is None or os.path.exists(netns_path(netns))


def _files_of(pidfile: str) -> dnsmasq.DnsmasqFiles:
    base = pidfile[: -len(".pid")] if pidfile.endswith(".pid") else pidfile
    return dnsmasq.DnsmasqFiles(pidfile=pidfile, leasefile=base + ".leases")


class NetworkService:
    def __init__(
        self,
        store,
        hostname: str,
        netns: Optional[str] = None,
        run_dir: Optional[str] = None,
        lock_timeout: float = 60.0,
    ):
        self.store = store
        self.hostname = hostname
        self.netns = netns
        self.run_dir = run_dir or DEFAULT_RUN_DIR
        self.lock_timeout = lock_timeout

    # -- entry point ------------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        name = validate_ifname("name", params.get("name"), reserved_ok=True)
        state = params.get("state") or "present"
        check_choice("state", state, ("present", "absent"))
        if state == "absent":
            with self.store.vm_lock(self._lock_name(name), self.lock_timeout):
                return self._absent(name, check_mode)
        mode = params.get("mode") or "bridge"
        check_choice("mode", mode, MODES)
        spec = validate_bridge(
            BridgeSpec(
                name=params.get("bridge") or name,
                mtu=params.get("mtu"),
                stp=bool(params.get("stp")),
                addresses=tuple(params.get("addresses") or ()),
            )
        )
        settings = None
        if mode == "nat":
            settings = validate_nat(params, spec)
        else:
            for option in NAT_OPTIONS:
                if params.get(option) is not None:
                    raise SpecError(option, "only applies to mode nat")
        check_netns("netns", self.netns)  # before anything: a missing one is never created
        programs = (nft_program(), dnsmasq.binary()) if settings else None
        with self.store.vm_lock(self._lock_name(name), self.lock_timeout):
            row = self.store.get_network(name, self.hostname)
            self._check_row(name, row)
            return self._present(name, mode, spec, settings, row, programs, check_mode)

    def _lock_name(self, name: str) -> str:
        return "@network-%s-%s" % (self.hostname, name)

    def _journal_owner(self, name: str) -> str:
        """Networks are per host, so is the journal of what their tasks made."""
        return "network:%s:%s" % (self.hostname, name)

    def _check_row(self, name: str, row: Optional[Dict[str, Any]]) -> None:
        if row is None:
            return
        if "netns" in row["spec"] and row["spec"]["netns"] != self.netns:
            raise SpecError(
                "netns",
                "network %s is in network namespace %s, not %s; remove it "
                "(state: absent) before making it elsewhere"
                % (name, row["spec"]["netns"] or "(host)", self.netns or "(host)"),
            )

    # -- present ----------------------------------------------------------------------------
    def _present(
        self,
        name: str,
        mode: str,
        spec: BridgeSpec,
        settings: Optional[NatSettings],
        row: Optional[Dict[str, Any]],
        programs: Optional[Tuple[str, str]],
        check_mode: bool,
    ) -> Dict[str, Any]:
        journal = self.store.journal_list(self._journal_owner(name))
        current = read_bridge(spec.name, self.netns)
        todo = changes(spec, current)
        if row is not None:
            managed = row["managed"]
        else:
            managed = current is None or (J_BRIDGE, ns_ref(self.netns, spec.name)) in journal
        wanted = dict(spec.to_dict(), netns=self.netns, mode=mode)
        runtime_before: Dict[str, Any] = {}
        runtime_after: Dict[str, Any] = {}
        steps: List[Tuple[str, str, Callable[[], None], Optional[Callable[[], None]]]] = []
        # (action, what the step does, do it, undo it if this run created it)
        if settings is not None:
            wanted["nat"] = settings.to_dict(name)
            steps, runtime_before = self._nat_steps(name, spec, settings, programs, journal, todo)
            runtime_after = {
                "ip_forward": True,
                "nftables": nat.PRESENT,
                "dnsmasq": dnsmasq.RUNNING if settings.serves() else dnsmasq.STOPPED,
            }
        else:
            steps = self._teardown_steps(name, row, journal)
        recorded = row is not None and row["spec"] == wanted and row["mode"] == mode
        actions = list(todo) + [step[0] for step in steps]
        if not check_mode:
            if not recorded:
                steps = steps + [
                    (
                        "",
                        "recording the network in the database",
                        lambda: self.store.put_network(name, self.hostname, mode, wanted, managed),
                        None,
                    )
                ]
            self._apply(name, spec, todo, steps)

        if (
            row is None
            and current is None
            and runtime_before.get("nftables", nat.MISSING) == nat.MISSING
            and runtime_before.get("dnsmasq", dnsmasq.STOPPED) == dnsmasq.STOPPED
        ):
            before: Dict[str, Any] = {"state": "absent"}
        else:
            before = _view(current, spec, self.netns, row)
            if runtime_before:
                before["runtime"] = runtime_before
        after = dict(wanted, state="present")
        if runtime_after:
            after["runtime"] = runtime_after
        network = dict(wanted, name=name, managed=managed, state="present")
        return {
            "changed": bool(actions) or not recorded,
            "actions": actions,
            "network": network,
            "diff": {"before": before, "after": after},
        }

    def _nat_steps(
        self,
        name: str,
        spec: BridgeSpec,
        settings: NatSettings,
        programs: Tuple[str, str],
        journal: List[Tuple[str, str]],
        todo: List[str],
    ):
        """The NAT steps still to do, and what the namespace has now."""
        netns = self.netns
        rules = nat.NatRules(
            network=name, bridge=spec.name, subnet=settings.subnet, outbound_interface=settings.outbound_interface
        )
        files = dnsmasq.DnsmasqFiles.for_network(self.run_dir, name)
        wanted_argv = dnsmasq.argv(programs[1], _dnsmasq_config(spec, settings), files)
        forwarding = nat.ip_forward(netns)
        table = nat.table_state(rules, netns)
        daemon, _pid = dnsmasq.status(wanted_argv, files, netns)
        if daemon == dnsmasq.RUNNING and {"create", "addresses"} & set(todo):
            daemon = dnsmasq.OUTDATED  # its sockets belong to the old bridge or address
        steps = []
        if not forwarding:  # never undone: other things may rely on it
            steps.append(("ip_forward", "enabling IPv4 forwarding", lambda: nat.enable_ip_forward(netns), None))
        if table != nat.PRESENT:
            table_ref = ns_ref(netns, rules.table)

            def write_table() -> None:
                self.store.journal_add(self._journal_owner(name), J_TABLE, table_ref)
                nat.apply_table(rules, netns)

            def unmake_table() -> None:
                nat.remove_table(rules.table, netns)
                self.store.journal_remove(self._journal_owner(name), J_TABLE, table_ref)

            steps.append(
                (
                    "nftables",
                    "writing nftables table %s" % rules.table,
                    write_table,
                    unmake_table if table == nat.MISSING else None,
                )
            )
        # dnsmasq of this network started with another run_dir: end it first.
        for kind, ref in journal:
            if kind == J_DNSMASQ and parse_ns_ref(ref)[1] != files.pidfile:
                steps.append(
                    (
                        "dnsmasq-stop",
                        "stopping dnsmasq (%s)" % parse_ns_ref(ref)[1],
                        self._dnsmasq_remover(name, ref),
                        None,
                    )
                )
        if settings.serves() and daemon != dnsmasq.RUNNING:
            dns_ref = ns_ref(netns, files.pidfile)

            def start_daemon() -> None:
                if daemon == dnsmasq.OUTDATED:
                    dnsmasq.stop(files)
                self.store.journal_add(self._journal_owner(name), J_DNSMASQ, dns_ref)
                dnsmasq.start(wanted_argv, files, netns)

            steps.append(
                (
                    "dnsmasq",
                    "%s dnsmasq" % ("restarting" if daemon == dnsmasq.OUTDATED else "starting"),
                    start_daemon,
                    self._dnsmasq_remover(name, dns_ref) if daemon == dnsmasq.STOPPED else None,
                )
            )
        elif not settings.serves():
            dns_ref = ns_ref(netns, files.pidfile)
            if daemon != dnsmasq.STOPPED or (J_DNSMASQ, dns_ref) in journal:
                steps.append(("dnsmasq-stop", "stopping dnsmasq", self._dnsmasq_remover(name, dns_ref), None))
        runtime = {"ip_forward": forwarding, "nftables": table, "dnsmasq": daemon}
        return steps, runtime

    def _teardown_steps(self, name: str, row: Optional[Dict[str, Any]], journal: List[Tuple[str, str]]):
        """Steps that end NAT pieces a network no longer in mode nat still has."""
        steps = []
        for kind, ref in self._nat_pieces(name, row, journal):
            ref_netns, thing = parse_ns_ref(ref)
            if kind == J_DNSMASQ:
                files = _files_of(thing)
                if (
                    dnsmasq.processes(files)
                    or os.path.exists(files.pidfile)
                    or os.path.exists(files.leasefile)
                    or (kind, ref) in journal
                ):
                    steps.append(("dnsmasq-stop", "stopping dnsmasq", self._dnsmasq_remover(name, ref), None))
            elif kind == J_TABLE:
                if (_ns_exists(ref_netns) and find_program("nft") and nat.table_exists(thing, ref_netns)) or (
                    kind,
                    ref,
                ) in journal:
                    steps.append(
                        ("nftables-remove", "removing nftables table %s" % thing, self._table_remover(name, ref), None)
                    )
        return steps

    def _nat_pieces(
        self, name: str, row: Optional[Dict[str, Any]], journal: List[Tuple[str, str]]
    ) -> List[Tuple[str, str]]:
        """(kind, ref) of the dnsmasq and nft table the network may have: journaled ones,
        and those a recorded nat network has by name."""
        pieces = [(kind, ref) for kind, ref in journal if kind in (J_DNSMASQ, J_TABLE)]
        if row is not None and row["mode"] == "nat":
            netns = row["spec"].get("netns", self.netns)
            for piece in (
                (J_DNSMASQ, ns_ref(netns, dnsmasq.DnsmasqFiles.for_network(self.run_dir, name).pidfile)),
                (J_TABLE, ns_ref(netns, nat_table_name(name))),
            ):
                if piece not in pieces:
                    pieces.append(piece)
        return sorted(pieces, key=lambda piece: piece[0] != J_DNSMASQ)  # dnsmasq first

    def _dnsmasq_remover(self, name: str, ref: str) -> Callable[[], None]:
        def remove() -> None:
            files = _files_of(parse_ns_ref(ref)[1])
            dnsmasq.stop(files)
            dnsmasq.remove_files(files)
            self.store.journal_remove(self._journal_owner(name), J_DNSMASQ, ref)

        return remove

    def _table_remover(self, name: str, ref: str) -> Callable[[], None]:
        def remove() -> None:
            ref_netns, table = parse_ns_ref(ref)
            if _ns_exists(ref_netns):  # a namespace that is gone took its tables with it
                nat.remove_table(table, ref_netns)
            self.store.journal_remove(self._journal_owner(name), J_TABLE, ref)

        return remove

    def _bridge_remover(self, name: str, ref: str) -> Callable[[], None]:
        def remove() -> None:
            ref_netns, bridge = parse_ns_ref(ref)
            if _ns_exists(ref_netns):
                remove_bridge(bridge, ref_netns)
            self.store.journal_remove(self._journal_owner(name), J_BRIDGE, ref)

        return remove

    def _apply(self, name: str, spec: BridgeSpec, todo: List[str], steps) -> None:
        """Run the steps in order; if one fails, undo what this run created, newest first,
        and say which step failed and what was undone."""
        if todo:
            ref = ns_ref(self.netns, spec.name)

            def make_bridge() -> None:
                if "create" in todo:
                    self.store.journal_add(self._journal_owner(name), J_BRIDGE, ref)
                apply_bridge(spec, self.netns)

            what = "%s bridge %s" % ("creating" if "create" in todo else "updating", spec.name)
            steps = [("", what, make_bridge, self._bridge_remover(name, ref) if "create" in todo else None)] + steps
        undo: List[Tuple[str, Callable[[], None]]] = []
        for _action, what, do, undo_it in steps:
            try:
                do()
            except Exception as exc:
                self._undo_and_raise(name, what, exc, undo, undo_it)
            if undo_it is not None:
                undo.append((what, undo_it))

    @staticmethod
    def _undo_and_raise(
        name: str,
        what: str,
        exc: Exception,
        undo: List[Tuple[str, Callable[[], None]]],
        half_done: Optional[Callable[[], None]],
    ) -> None:
        done, failed = [], []
        if half_done is not None:  # what the failed step itself may have left
            try:
                half_done()
            except Exception as undo_exc:
                failed.append("cleaning up after %s: %s" % (what, undo_exc))
        for made, fn in reversed(undo):
            try:
                fn()
                done.append(_undo_label(made))
            except Exception as undo_exc:  # keep undoing the rest, report it
                failed.append("undoing %s: %s" % (made, undo_exc))
        if not isinstance(exc, InfinivirtError):
            raise exc  # a bug: the binding reports it with its traceback
        message = "network %s: %s failed: %s" % (name, what, exc)
        if done:
            message += "; undone: %s" % ", ".join(done)
        if failed:
            message += "; could not undo (state: absent cleans up): %s" % "; ".join(failed)
        raise NetError(message) from exc

    # -- absent -----------------------------------------------------------------------------
    def _absent(self, name: str, check_mode: bool) -> Dict[str, Any]:
        row = self.store.get_network(name, self.hostname)
        journal = self.store.journal_list(self._journal_owner(name))
        if row is None and not journal:
            return {
                "changed": False,
                "actions": [],
                "network": {"name": name, "state": "absent"},
                "diff": {"before": {"state": "absent"}, "after": {"state": "absent"}},
            }
        users = sorted(
            vm.name
            for vm in self.store.list_vms(host=self.hostname)
            if any(nic.network == name for nic in vm.spec.nics)
        )
        if users:
            raise StateError(
                "network %s is used by the NICs of VM %s; remove those NICs (or the "
                "VMs) first" % (name, ", ".join(users))
            )
        steps = self._teardown_steps(name, row, journal)
        bridges = [ref for kind, ref in journal if kind == J_BRIDGE]
        if row is not None:
            netns = row["spec"].get("netns", self.netns)
            ref = ns_ref(netns, row["spec"]["bridge"])
            if row["managed"] and ref not in bridges:
                bridges.append(ref)
            if not row["managed"]:
                bridges = [b for b in bridges if b != ref]
        for ref in bridges:
            steps.append(("remove", "removing bridge %s" % parse_ns_ref(ref)[1], self._bridge_remover(name, ref), None))
        if row is not None:
            steps.append(
                (
                    "remove" if row["managed"] else "forget",
                    "removing the network from the database",
                    lambda: self.store.delete_network(name, self.hostname),
                    None,
                )
            )
        actions = []
        for step in steps:
            if step[0] not in actions:
                actions.append(step[0])
        if not check_mode:
            for _action, what, do, _undo in steps:
                try:
                    do()
                except InfinivirtError as exc:
                    raise NetError("network %s: %s failed: %s" % (name, what, exc)) from exc
        before = (
            dict(row["spec"], state="present")
            if row is not None
            else {"state": "present", "leftovers": ["%s %s" % (kind, ref) for kind, ref in journal]}
        )
        return {
            "changed": True,
            "actions": actions,
            "network": {"name": name, "state": "absent"},
            "diff": {"before": before, "after": {"state": "absent"}},
        }


def _dnsmasq_config(spec: BridgeSpec, settings: NatSettings) -> dnsmasq.DnsmasqConfig:
    iface = settings.interface
    dhcp_range = (settings.range_start, settings.range_end) if settings.dhcp else None
    size = int(ipaddress.IPv4Address(settings.range_end)) - int(ipaddress.IPv4Address(settings.range_start)) + 1
    return dnsmasq.DnsmasqConfig(
        bridge=spec.name,
        gateway=str(iface.ip),
        netmask=str(iface.netmask),
        dhcp_range=dhcp_range,
        lease="infinite" if settings.lease_seconds is None else str(settings.lease_seconds),
        lease_max=size,
        dns=settings.dns,
    )


def _undo_label(what: str) -> str:
    for doing, done in (
        ("creating", "removed"),
        ("writing", "removed"),
        ("starting", "stopped"),
        ("restarting", "stopped"),
    ):
        if what.startswith(doing + " "):
            return done + what[len(doing) :]
    return "undid " + what


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
