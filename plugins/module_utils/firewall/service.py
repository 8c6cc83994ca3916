# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_firewall does, and the hooks the VM lifecycle calls.

Rules live in the store; the kernel holds a running VM's rules only (in the namespace of its
TAPs, see nftables.py). ``sync_vm`` makes the kernel match the store for one VM, and
removes its rules when it is not running here; ``forget_vm`` removes them and its stored
VM rules.

Locks, always taken in this order (so they cannot deadlock):
1. the VM's lock (``store.vm_lock(vm name)``; the lifecycle holds it when it calls a hook),
   or a department's (``@department-<name>``) for a department change;
2. for a VM, the lock of its department, while its chains are read from the store and
   written to the kernel (a department change waits for it, then rewrites those chains);
3. a lock per host and namespace (``@firewall-<hash>``) around read-plan-apply of our
   table, so one task's plan cannot go stale under another's commit (the table is shared
   by every VM of the namespace, and the last VM out deletes it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now
from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.firewall import nftables as nft
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.ports import FirewallVm, VmDirectory
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.rules import (
    SCOPES,
    RuleSet,
    parse_ruleset,
    rule_from_dict,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    PRESENT_ABSENT,
    check_choice,
    validate_label,
    validate_name,
)

MODULE = "infinivirt.core.infinivirt_firewall"


@dataclasses.dataclass
class Step:
    """One transaction in one namespace, planned under that namespace's lock."""

    netns: Optional[str]
    ops: List[Dict[str, Any]]
    vm_uuid: Optional[str] = None  # a VM's step journals where its rules are
    present: bool = False  # the VM has rules there afterwards
    department: Optional[str] = None
    what: str = ""

    @property
    def rules(self) -> int:
        return nft.count_rules(self.ops)


def _user() -> Optional[str]:
    try:
        return getpass.getuser()
    except Exception:  # no login name, no passwd entry: the source has no user then
        return None


class FirewallService:
    def __init__(
        self,
        store,
        hostname: str,
        vms: VmDirectory,
        lock_timeout: float = 60.0,
        runner: Optional[nft.Nft] = None,
    ):
        self.store = store
        self.vms = vms  # the VMs as the firewall sees them (see firewall/ports.py)
        self.hostname = hostname
        self.lock_timeout = lock_timeout
        self.nft = runner or nft.Nft()

    # -- hooks for the VM lifecycle (the caller holds the VM's lock) --------------------------
    def sync_vm(self, rec: FirewallVm) -> bool:
        """Make the kernel match the store for this VM: its chains and map elements for the
        TAPs of its ports in its namespace when it runs on this host, with its department;
        none of its state anywhere when it does not. True if nftables changed."""
        running = rec.running and rec.host == self.hostname
        # Rules matter only for a VM with NICs here; otherwise only leftovers are removed.
        ruleset = self._load("vm", rec.uuid, rec.name) if running and rec.ports else None
        with contextlib.ExitStack() as stack:
            steps = self._plan_vm(stack, rec, ruleset)
            self._run(steps)
        return bool(steps)

    def forget_vm(self, rec: FirewallVm) -> bool:
        """The VM is being deleted: remove its kernel state and its stored VM rules."""
        with contextlib.ExitStack() as stack:
            steps = self._plan_vm(stack, rec, None, remove=True)
            self._run(steps)
        self.store.delete_ruleset("vm", rec.uuid)
        return bool(steps)

    # -- the module ------------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        state = check_choice("state", params.get("state") or "present", PRESENT_ABSENT)
        scope = check_choice("scope", params.get("scope"), SCOPES)
        if state == "absent":
            (validate_label if scope == "department" else _vm_name)("name", params.get("name"))
            wanted = None
            name = params["name"]
        else:
            wanted = parse_ruleset(params)
            name = wanted.name
        if scope == "vm":
            return self._ensure_vm(name, wanted, check_mode)
        return self._ensure_department(name, wanted, check_mode)

    def _ensure_vm(self, name: str, wanted: Optional[RuleSet], check_mode: bool) -> Dict[str, Any]:
        if self.vms.by_name(name) is None:
            if wanted is None:  # its rules went with it
                return _result(False, "vm", name, None, None, [], [])
            raise SpecError("name", "VM %s does not exist" % name)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.store.vm_lock(name, self.lock_timeout))
            rec = self.vms.by_name(name)
            if rec is None:
                raise SpecError("name", "VM %s does not exist" % name)
            if rec.running and rec.host != self.hostname:
                raise StateError(
                    "VM %s runs on host %s: change its firewall rules there (they are "
                    "applied on the host that runs it)" % (name, rec.host)
                )
            stored = self._stored("vm", rec.uuid)
            before = self._ruleset_of(stored, "vm", name)
            if wanted is not None:
                nft.check_reject([wanted], self.nft, rec.netns if _exists(rec.netns) else None)
            steps = self._plan_vm(stack, rec, wanted, check_mode=check_mode)
            store_changed = before != wanted
            if not check_mode:
                self._commit("vm", rec.uuid, name, wanted, stored, store_changed, steps)
            after = self._stored("vm", rec.uuid) if not check_mode else None
        return _result(
            store_changed or bool(steps), "vm", name, before, wanted, steps, self._rule_views(wanted, stored, after)
        )

    def _ensure_department(self, name: str, wanted: Optional[RuleSet], check_mode: bool) -> Dict[str, Any]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.store.vm_lock("@department-" + name, self.lock_timeout))
            stored = self._stored("department", name)
            before = self._ruleset_of(stored, "department", name)
            members = [vm for vm in self.vms.on_host(self.hostname) if vm.department == name and vm.running]
            namespaces = {vm.netns for vm in members}
            namespaces |= {row["netns"] for row in self.store.firewall_applied(self.hostname, department=name)}
            namespaces = {ns for ns in namespaces if _exists(ns)}
            if wanted is not None:
                nft.check_reject([wanted], self.nft, sorted(namespaces, key=str)[0] if namespaces else None)
            steps, warnings = [], []
            for netns in sorted(namespaces, key=lambda ns: ns or ""):
                stack.enter_context(self._ns_lock(netns))
                view = self.nft.read(netns)
                chains = nft.dept_chains(name, wanted)
                referenced = set().union(*view.jumps.values()) if view.jumps else set()
                if not set(chains) & referenced:
                    chains = {}  # no VM of it has rules here: nothing to write (leftovers go)
                ops = nft.plan(view, set(), chains, {})
                if ops:
                    steps.append(Step(netns, ops, what="department %s in %s" % (name, nft.where(netns))))
                for vm in members:
                    if vm.netns == netns and vm.ports and nft.vm_chain(vm.uuid, "in") not in view.chains:
                        warnings.append(
                            "VM %s has no firewall rules in %s; its next start, or "
                            "infinivirt_firewall with scope vm, applies them" % (vm.name, nft.where(netns))
                        )
            store_changed = before != wanted
            if not check_mode:
                self._commit("department", name, name, wanted, stored, store_changed, steps)
            after = self._stored("department", name) if not check_mode else None
        result = _result(
            store_changed or bool(steps),
            "department",
            name,
            before,
            wanted,
            steps,
            self._rule_views(wanted, stored, after),
        )
        result["warnings"] = warnings
        return result

    # -- planning --------------------------------------------------------------------------
    def _plan_vm(
        self,
        stack: contextlib.ExitStack,
        rec: FirewallVm,
        ruleset: Optional[RuleSet],
        remove: bool = False,
        check_mode: bool = False,
    ) -> List[Step]:
        """Take the locks (into ``stack``) and plan the VM's steps: its chains in the
        namespace it runs in, and removal from every other one its rules may be in."""
        running = rec.running and not remove and rec.host == self.hostname
        department = rec.department or None
        vm_ports = list(rec.ports) if running else []
        chains = nft.vm_chains(rec.uuid, vm_ports, ruleset, department)
        target = rec.netns if running else None
        # Its rules are wherever the journal says (it is written before nft creates them).
        rows = self.store.firewall_applied(self.hostname, vm_uuid=rec.uuid)
        others = {row["netns"] for row in rows}
        if chains:
            others.discard(target)
        gone = {netns for netns in others if not _exists(netns)}
        others -= gone
        if chains and department:
            stack.enter_context(self.store.vm_lock("@department-" + department, self.lock_timeout))
            chains.update(nft.dept_chains(department, self._load("department", department, department)))
        for netns in sorted(others | ({target} if chains else set()), key=lambda ns: ns or ""):
            stack.enter_context(self._ns_lock(netns))
        owned = {nft.vm_chain(rec.uuid, "in"), nft.vm_chain(rec.uuid, "out")}
        steps = []
        if chains:
            ops = nft.plan(self.nft.read(target), owned, chains, nft.vm_elements(rec.uuid, vm_ports))
            if ops:
                steps.append(
                    Step(target, ops, rec.uuid, True, department, "VM %s in %s" % (rec.name, nft.where(target)))
                )
        for netns in sorted(others, key=lambda ns: ns or ""):
            ops = nft.plan(self.nft.read(netns), owned, {}, {})
            if ops:
                steps.append(
                    Step(netns, ops, rec.uuid, False, None, "VM %s removed from %s" % (rec.name, nft.where(netns)))
                )
        if not check_mode:  # a journal out of date with nothing to change in nftables
            touched = {step.netns for step in steps}
            for row in rows:
                if row["netns"] not in touched and not (chains and row["netns"] == target):
                    self.store.delete_firewall_applied(rec.uuid, self.hostname, row["netns"])
            if (
                chains
                and target not in touched
                and not any(row["netns"] == target and row["department"] == department for row in rows)
            ):
                self.store.put_firewall_applied(rec.uuid, self.hostname, target, department)
        return steps

    # -- applying --------------------------------------------------------------------------
    def _run(self, steps: Sequence[Step]) -> None:
        """Journal, apply each step's transaction, journal again."""
        for step in steps:
            if step.present:
                self.store.put_firewall_applied(step.vm_uuid, self.hostname, step.netns, step.department)
        for step in steps:
            self.nft.apply(step.ops, step.netns)
        self._after(steps)

    def _after(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if step.vm_uuid is not None and not step.present:
                self.store.delete_firewall_applied(step.vm_uuid, self.hostname, step.netns)

    def _commit(
        self,
        scope: str,
        owner: str,
        name: str,
        wanted: Optional[RuleSet],
        stored: Optional[Dict[str, Any]],
        store_changed: bool,
        steps: List[Step],
    ) -> None:
        """Store and kernel together: with one transaction to apply, it runs inside the store
        transaction (an nft error leaves both as they were). With several (namespaces), each
        is checked first (``nft -c``), then the rules are stored and applied."""
        if not store_changed:
            self._run(steps)
            return
        for step in steps:
            if step.present:
                self.store.put_firewall_applied(step.vm_uuid, self.hostname, step.netns, step.department)
        single = len(steps) == 1

        def apply_inside() -> None:
            if single:
                self.nft.apply(steps[0].ops, steps[0].netns)

        if not single:
            for step in steps:
                self.nft.apply(step.ops, step.netns, check=True)
        if wanted is None:
            self.store.delete_ruleset(scope, owner, before_commit=apply_inside)
        else:
            self.store.put_ruleset(
                scope,
                owner,
                name,
                wanted.settings(),
                self._rows(wanted, stored),
                self._source(),
                before_commit=apply_inside,
            )
        if not single:
            done = []
            for step in steps:
                try:
                    self.nft.apply(step.ops, step.netns)
                except nft.FirewallError as exc:
                    raise nft.FirewallError(
                        "the rules are stored and applied to %s, but not to %s: %s; "
                        "run the task again to finish" % (", ".join(done) or "nothing", step.what, exc)
                    ) from exc
                done.append(step.what)
        self._after(steps)

    # -- the store side ----------------------------------------------------------------------
    def _source(self) -> Dict[str, Any]:
        return {
            "host": self.hostname,
            "job_id": getattr(self.store, "job_id", None),
            "user": _user(),
            "time": utc_now(),
        }

    def _stored(self, scope: str, owner: str) -> Optional[Dict[str, Any]]:
        return self.store.get_ruleset(scope, owner)

    @staticmethod
    def _ruleset_of(stored: Optional[Dict[str, Any]], scope: str, name: str) -> Optional[RuleSet]:
        if stored is None:
            return None
        return RuleSet(
            scope=scope,
            name=name,
            rules=tuple(rule_from_dict({k: v for k, v in r.items() if k != "source"}) for r in stored["rules"]),
            **stored["settings"],
        )

    def _load(self, scope: str, owner: str, name: str) -> Optional[RuleSet]:
        return self._ruleset_of(self._stored(scope, owner), scope, name)

    def _rows(self, wanted: RuleSet, stored: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The rules to store: a rule that was there already keeps its source."""
        kept: Dict[str, List[Dict[str, Any]]] = {}
        for previous in (stored or {}).get("rules", []):
            content = {k: v for k, v in previous.items() if k != "source"}
            kept.setdefault(json.dumps(content, sort_keys=True), []).append(previous["source"])
        source = self._source()
        rows = []
        for rule in wanted.rules:
            row = rule.to_dict()
            sources = kept.get(json.dumps(row, sort_keys=True))
            row["source"] = sources.pop(0) if sources else source
            rows.append(row)
        return rows

    def _rule_views(
        self, wanted: Optional[RuleSet], stored: Optional[Dict[str, Any]], after: Optional[Dict[str, Any]]
    ) -> List[Dict[str, Any]]:
        if wanted is None:
            return []
        if after is not None:
            return after["rules"]
        return self._rows(wanted, stored)  # check mode: what would be stored

    # -- locks -------------------------------------------------------------------------------
    def _ns_lock(self, netns: Optional[str]):
        key = hashlib.sha256(("%s\0%s" % (self.hostname, netns or "")).encode()).hexdigest()[:16]
        return self.store.vm_lock("@firewall-" + key, self.lock_timeout)


def _vm_name(field: str, name: Any) -> str:
    return validate_name(name)


def _exists(netns: Optional[str]) -> bool:
    return netns is None or os.path.exists(nsutil.netns_path(netns))


def _view(ruleset: Optional[RuleSet]) -> Dict[str, Any]:
    if ruleset is None:
        return {"state": "absent"}
    return dict(ruleset.to_dict(), state="present")


def _result(
    changed: bool,
    scope: str,
    name: str,
    before: Optional[RuleSet],
    after: Optional[RuleSet],
    steps: Sequence[Step],
    rules: List[Dict[str, Any]],
) -> Dict[str, Any]:
    firewall = dict(_view(after), scope=scope, name=name)
    if after is not None:
        firewall["rules"] = rules
    return {
        "changed": changed,
        "firewall": firewall,
        "kernel_changes": [step.what for step in steps],
        "rules_applied": sum(step.rules for step in steps),
        "diff": {
            "before": dict(_view(before), scope=scope, name=name),
            "after": dict(_view(after), scope=scope, name=name),
        },
    }
