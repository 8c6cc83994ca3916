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

import dataclasses
import ipaddress
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import DEFAULT_RUN_DIR
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError
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
from ansible_collections.infinivirt.core.plugins.module_utils.network.plan import (
    J_BRIDGE,
    J_DNSMASQ,
    J_TABLE,
    Desired,
    HostNow,
    NatLive,
    Plan,
    Step,
    check_unused,
    plan_absent,
    plan_present,
)
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import (
    BridgeSpec,
    nat_table_name,
    validate_bridge,
)
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice, validate_ifname

MODES = ("bridge", "nat")


def _ns_exists(netns: Optional[str]) -> bool:
    return netns is None or os.path.exists(netns_path(netns))


@dataclasses.dataclass(frozen=True)
class _NatRun:
    """A NAT network's state now and what its steps need."""

    live: NatLive
    rules: nat.NatRules
    files: dnsmasq.DnsmasqFiles
    argv: List[str]


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
        journal = tuple(self.store.journal_list(self._journal_owner(name)))
        current = read_bridge(spec.name, self.netns)
        host = HostNow(
            journal=journal,
            bridge=current,
            todo=tuple(changes(spec, current)),
            bridge_ref=ns_ref(self.netns, spec.name),
        )
        nat_run = None
        if settings is not None:
            nat_run = self._nat_run(name, spec, settings, programs)
            host = dataclasses.replace(host, nat=nat_run.live)
        else:
            host = dataclasses.replace(host, pieces=self._probe_pieces(name, row, journal))
        plan = plan_present(row, host, Desired(name, mode, spec, settings, self.netns))
        if not check_mode:
            self._apply(name, spec, plan, nat_run)
        return plan.result

    def _nat_run(self, name: str, spec: BridgeSpec, settings: NatSettings, programs: Tuple[str, str]) -> "_NatRun":
        """What the namespace has of NAT now, and what starting it takes."""
        netns = self.netns
        rules = nat.NatRules(
            table=nat_table_name(name),
            bridge=spec.name,
            subnet=settings.subnet,
            outbound_interface=settings.outbound_interface,
        )
        files = dnsmasq.DnsmasqFiles.for_network(self.run_dir, name)
        wanted_argv = dnsmasq.argv(programs[1], _dnsmasq_config(spec, settings), files)
        forwarding = nat.ip_forward(netns)
        table = nat.table_state(rules, netns)
        daemon, _pid = dnsmasq.status(wanted_argv, files, netns)
        live = NatLive(forwarding, table, daemon, ns_ref(netns, rules.table), ns_ref(netns, files.pidfile))
        return _NatRun(live, rules, files, wanted_argv)

    def _probe_pieces(
        self, name: str, row: Optional[Dict[str, Any]], journal: Tuple[Tuple[str, str], ...]
    ) -> Tuple[Tuple[str, str, bool], ...]:
        """(kind, ref, found on the host) of the NAT pieces the network may still have."""
        found = []
        for kind, ref in self._nat_pieces(name, row, list(journal)):
            ref_netns, thing = parse_ns_ref(ref)
            if kind == J_DNSMASQ:
                files = _files_of(thing)
                here = dnsmasq.processes(files) or os.path.exists(files.pidfile) or os.path.exists(files.leasefile)
            else:
                here = _ns_exists(ref_netns) and find_program("nft") and nat.table_exists(thing, ref_netns)
            found.append((kind, ref, bool(here)))
        return tuple(found)

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

    def _apply(self, name: str, spec: BridgeSpec, plan: Plan, nat_run: Optional["_NatRun"]) -> None:
        """Run the steps in order; if one fails, undo what this run created, newest first,
        and say which step failed and what was undone."""
        undo: List[Tuple[str, Callable[[], None]]] = []
        for step in plan.steps:
            undo_it = self._undoer(name, step, nat_run) if step.undo else None
            try:
                self._doer(name, spec, plan, step, nat_run)()
            except Exception as exc:
                self._undo_and_raise(name, step.what, exc, undo, undo_it)
            if undo_it is not None:
                undo.append((step.what, undo_it))

    def _doer(
        self, name: str, spec: Optional[BridgeSpec], plan: Plan, step: Step, nat_run: Optional["_NatRun"]
    ) -> Callable[[], None]:
        """What a step of a plan does, by its kind."""
        owner, netns = self._journal_owner(name), self.netns

        def make_bridge() -> None:
            if step.kind == "bridge_create":
                self.store.journal_add(owner, J_BRIDGE, step.ref)
            apply_bridge(spec, netns)

        def write_table() -> None:
            self.store.journal_add(owner, J_TABLE, step.ref)
            nat.apply_table(nat_run.rules, netns)

        def start_daemon() -> None:
            if step.kind == "dnsmasq_restart":
                dnsmasq.stop(nat_run.files)
            self.store.journal_add(owner, J_DNSMASQ, step.ref)
            dnsmasq.start(nat_run.argv, nat_run.files, netns)

        def record() -> None:
            self.store.put_network(name, self.hostname, plan.wanted["mode"], plan.wanted, plan.managed)

        doers: Dict[str, Callable[[], None]] = {
            "bridge_create": make_bridge,
            "bridge_update": make_bridge,
            "ip_forward": lambda: nat.enable_ip_forward(netns),
            "table": write_table,
            "dnsmasq_start": start_daemon,
            "dnsmasq_restart": start_daemon,
            "record": record,
            "delete": lambda: self.store.delete_network(name, self.hostname),
        }
        if step.kind in doers:
            return doers[step.kind]
        removers = {
            "dnsmasq_stop": self._dnsmasq_remover,
            "table_remove": self._table_remover,
            "bridge_remove": self._bridge_remover,
        }
        return removers[step.kind](name, step.ref)

    def _undoer(self, name: str, step: Step, nat_run: Optional["_NatRun"]) -> Callable[[], None]:
        """How to undo a step this run made: bridge_create, table or dnsmasq_start."""
        if step.kind == "bridge_create":
            return self._bridge_remover(name, step.ref)
        if step.kind == "dnsmasq_start":
            return self._dnsmasq_remover(name, step.ref)

        def unmake_table() -> None:
            nat.remove_table(nat_run.rules.table, self.netns)
            self.store.journal_remove(self._journal_owner(name), J_TABLE, step.ref)

        return unmake_table

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
        journal = tuple(self.store.journal_list(self._journal_owner(name)))
        host = HostNow(journal=journal)
        if row is not None or journal:  # else there is nothing to ask the store or the host
            users = tuple(
                sorted(
                    vm.name
                    for vm in self.store.list_vms(host=self.hostname)
                    if any(nic.get("network") == name for nic in vm.spec.get("nics") or ())
                )
            )
            check_unused(name, users)  # before the host is read
            bridge_ref = None
            if row is not None:
                bridge_ref = ns_ref(row["spec"].get("netns", self.netns), row["spec"]["bridge"])
            pieces = self._probe_pieces(name, row, journal)
            host = HostNow(journal=journal, bridge_ref=bridge_ref, pieces=pieces, users=users)
        plan = plan_absent(name, row, host)
        if not check_mode:
            for step in plan.steps:
                try:
                    self._doer(name, None, plan, step, None)()
                except InfinivirtError as exc:
                    raise NetError("network %s: %s failed: %s" % (name, step.what, exc)) from exc
        return plan.result


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
