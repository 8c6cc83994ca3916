# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM records in and out of the store: the store keeps plain rows (store/vms.py), the engine
works on VmRecord (vm/model/record.py). Every read and write of a VM row goes through here."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.firewall.ports import FirewallVm, VmDirectory
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import VmRow
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import (
    VmRecord,
    firewall_vm,
    record_from_row,
    row_values,
)


def _record(row: Optional[VmRow]) -> Optional[VmRecord]:
    return record_from_row(row) if row is not None else None


def load(store, name: str) -> Optional[VmRecord]:
    return _record(store.get_vm(name))


def load_by_uuid(store, uuid: str) -> Optional[VmRecord]:
    return _record(store.get_vm_by_uuid(uuid))


def load_all(store, host: Optional[str] = None) -> List[VmRecord]:
    return [record_from_row(row) for row in store.list_vms(host=host)]


def insert(store, rec: VmRecord) -> None:
    row = VmRow(**row_values(rec))
    store.insert_vm(row)
    rec.created_at, rec.updated_at = row.created_at, row.updated_at


def save(store, rec: VmRecord, events: Optional[List[Dict[str, Any]]] = None) -> None:
    """Write the record back (the store bumps its version; ``rec`` follows)."""
    row = VmRow(**row_values(rec))
    store.update_vm(row, events)
    rec.updated_at, rec.version = row.updated_at, row.version


def firewall_directory(store) -> VmDirectory:
    """The VMs as firewall/service.py reads them."""

    def by_name(name: str) -> Optional[FirewallVm]:
        rec = load(store, name)
        return firewall_vm(rec) if rec is not None else None

    def on_host(host: str) -> List[FirewallVm]:
        return [firewall_vm(rec) for rec in load_all(store, host)]

    return VmDirectory(by_name, on_host)
