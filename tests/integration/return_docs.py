# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A module's RETURN against its real results (test_return_docs.py for most modules;
test_migrate_task.py for infinivirt_migrate, whose migrations need two hosts): every key
path RETURN documents, every key path a result has, and what differs."""

from __future__ import annotations

import importlib
from typing import Any, Dict, Iterable, Set

import yaml

# Keys every Ansible module may return, which RETURN does not document.
COMMON = {"changed", "diff", "warnings", "msg", "failed", "invocation", "deprecations"}


# Values documented as echoing an option of the module: their keys are its suboptions.
AS_OPTIONS = {
    "infinivirt_vm": {"vm.disks[]": "disks", "vm.nics[]": "nics", "vm.usb[]": "usb"},
    "infinivirt_net": {"network.nat.dhcp": "dhcp"},
    "infinivirt_firewall": {"firewall.rules[]": "rules"},
}
# Entries documented as "the fields of" another module's return value, plus their own.
AS_RETURN = {
    "infinivirt_vm_info": {"vms[]": ("infinivirt_vm", "vm")},
    "infinivirt_vms": {"vms[].vm": ("infinivirt_vm", "vm")},
}
# Entries documented as "as RV(other) describes" within the same module.
AS_SIBLING = {"infinivirt_vms": {"unlisted[]": "vms[]"}}
# What a sibling never has: O(exclusive) only stops or removes an unlisted VM, so it makes no disk.
NOT_SIBLING = {"infinivirt_vms": ("unlisted[].plan.disk_clones",)}
# Values whose keys are another program's: infinivirt_disk's volume.info is qemu-img info.
# infinivirt_vms: a VM's diff (infinivirt_vm's, not documented there either) and counts keyed
# by action and status names.
# An event's detail is QEMU's own event data (or the monitor's), as it came.
# infinivirt_gpu's drivers are keyed by PCI address. A plan's changes are keyed by option name.
OPAQUE = {
    "assignment.drivers",
    "plan.changes",
    "vms[].plan.changes",
    "unlisted[].plan.changes",
    "volume.info",
    "vms[].diff",
    "unlisted[].diff",
    "summary.actions",
    "summary.status",
    "vms[].events[].detail",
}
# Keys only a guest agent that answers returns (no guest boots here): a guest's interfaces.
# tests/integration/test_guest_agent_live.py checks them against RETURN with a real agent.
LIVE_AGENT = ".guest.interfaces[]."
# What a wait that succeeded returns (wait_for): it needs a guest that becomes ready.
# tests/integration/test_wait_for.py checks it against RETURN with the tiny guest.
LIVE_WAIT = "vm.ready"
# Keys RETURN documents through another module's or entry's that these never return: a VM
# listed by infinivirt_vm_info never waited; a VM infinivirt_vms' exclusive acted on was only
# stopped or removed (no start, no wait, so no console tail).
NEVER_HERE = {"infinivirt_vm_info": "vms[].ready", "infinivirt_vms": "unlisted[].console_tail"}


def _load(module: str) -> Any:
    return importlib.import_module("ansible_collections.infinivirt.core.plugins.modules." + module)


def documented(module: str) -> Set[str]:
    """Every key path RETURN documents: "vm", "vm.graphics.port", "vms[].snapshots[].name"."""
    paths = set(_doc_paths(yaml.safe_load(_load(module).RETURN), ""))
    for path, (other, key) in AS_RETURN.get(module, {}).items():
        paths |= {path + p[len(key) :] for p in documented(other) if p.startswith(key + ".")}
    options = yaml.safe_load(_load(module).DOCUMENTATION)["options"]
    for path, option in AS_OPTIONS.get(module, {}).items():
        assert path.rstrip("[]") in paths, path
        paths |= {"%s.%s" % (path, sub) for sub in options[option]["suboptions"]}
    for path, sibling in AS_SIBLING.get(module, {}).items():
        paths |= {path + p[len(sibling) :] for p in list(paths) if p.startswith(sibling + ".")}
    return {p for p in paths if not p.startswith(NOT_SIBLING.get(module, ()))}


def _doc_paths(doc: Dict[str, Any], prefix: str) -> Iterable[str]:
    for key, entry in doc.items():
        path = prefix + key
        yield path
        if "contains" in entry:
            inner = path + ("[]." if entry.get("type") == "list" else ".")
            yield from _doc_paths(entry["contains"], inner)


def returned(result: Dict[str, Any]) -> Set[str]:
    """Every key path in a result, into every dict and list of dicts but OPAQUE ones."""
    return set(_paths({k: v for k, v in result.items() if k not in COMMON}, ""))


def _paths(value: Dict[str, Any], prefix: str) -> Iterable[str]:
    for key, item in value.items():
        path = prefix + key
        yield path
        if path in OPAQUE:
            continue
        if isinstance(item, dict):
            yield from _paths(item, path + ".")
        elif isinstance(item, (list, tuple)):
            for element in item:
                if isinstance(element, dict):
                    yield from _paths(element, path + "[].")


def return_problems(module: str, results: Iterable[Dict[str, Any]], complete: bool = True) -> list:
    """What differs between ``module``'s RETURN and its real ``results``: keys returned but
    not documented, and (``complete``: the results cover every case) keys documented but
    never returned. tests/integration/test_migrate_task.py checks infinivirt_migrate's
    results with it (its migrations need two hosts)."""
    problems = []
    docs = documented(module)
    seen: Set[str] = set()
    for result in results:
        seen |= returned(result)
    if seen - docs:
        problems.append("%s returns keys its RETURN does not document: %s" % (module, ", ".join(sorted(seen - docs))))
    docs = {path for path in docs if not path.startswith(NEVER_HERE.get(module, "\0"))}
    unseen = {path for path in docs - seen if LIVE_AGENT not in path and LIVE_WAIT not in path}
    if unseen and complete:
        problems.append("%s documents keys none of its results had: %s" % (module, ", ".join(sorted(unseen))))
    return problems
