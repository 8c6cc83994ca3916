# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The store's plain VM rows (store/vms.py), on both backends: what goes in comes back, with no
VM model in between, and the VM model reads the same rows (vm/engine/records.py)."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import JSON_COLUMNS, VmRow
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.devices import DEVICE_FIELDS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

pytestmark = [pytest.mark.both_backends]


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def test_the_json_columns_are_the_definitions_lists_and_dicts():
    """Every list or dict field of a VM definition is a JSON column, and nothing else is (usb is
    one too: None means no USB controller, so a default spec shows it as None; so are the
    platform devices, None when off)."""
    spec = VmSpec(name="x").to_dict()
    structured = {field for field, value in spec.items() if isinstance(value, (list, tuple, dict))}
    assert set(JSON_COLUMNS) == structured | {"usb"} | set(DEVICE_FIELDS)


def test_a_plain_row_round_trips(store):
    spec = {"vcpus": 1, "memory_mb": 96, "nics": [{"mac": "52:54:00:00:00:01", "ips": ["192.0.2.1"]}], "usb": None}
    store.insert_vm(VmRow(uuid="u-plain", name="plain", host="h1", status="stopped", spec=spec))
    row = store.get_vm("plain")
    assert isinstance(row, VmRow) and row.version == 1 and row.created_at
    assert row.spec["memory_mb"] == 96 and row.spec["nics"] == spec["nics"] and row.spec["usb"] is None
    assert "vm_uuid" not in row.spec and "graphics_password" not in row.spec and "name" not in row.spec
    assert row.spec["disks"] == []  # a column the row did not set: the schema's default, decoded

    row.status, row.running_spec = "running", {"name": "plain", "memory_mb": 96}
    store.update_vm(row)
    again = store.get_vm_by_uuid("u-plain")
    assert (again.version, again.status, again.running_spec) == (2, "running", {"name": "plain", "memory_mb": 96})
    assert [r.name for r in store.list_vms(host="h1")] == ["plain"] and store.list_vms(host="h2") == []


def test_the_resolved_machine_is_kept(store):
    """Migration 22: the versioned machine type of the first start, NULL for an older row."""
    store.insert_vm(VmRow(uuid="u-mt", name="mt", host="h1", status="stopped", spec={"vcpus": 1, "memory_mb": 64}))
    rec = records.load(store, "mt")
    assert rec.machine_resolved is None
    rec.machine_resolved = "pc-q35-7.2"
    records.save(store, rec)
    assert records.load_by_uuid(store, "u-mt").machine_resolved == "pc-q35-7.2"


def test_the_vm_model_reads_a_plain_row(store):
    """A row written without the model (NULL JSON columns included) reads as a VmRecord with the
    spec's defaults, and writes back unchanged."""
    store.insert_vm(VmRow(uuid="u-m", name="m", host="h1", status="stopped", spec={"vcpus": 2, "memory_mb": 128}))
    rec = records.load(store, "m")
    assert (
        rec.spec.name == "m"
        and rec.spec.memory_mb == 128
        and rec.spec.vcpus == 2
        and rec.spec.disks == ()
        and rec.spec.usb is None
    )
    records.save(store, rec)
    assert rec.version == 2 and records.load(store, "m").spec == rec.spec


def test_tags_and_labels_are_stored_and_guest_addresses_go_with_the_vm(store):
    """Migration 21: the metadata columns round-trip through the VM model, and the addresses an
    agent reported are kept per VM, replaced on the next report, and removed with the VM."""
    spec = VmSpec(name="meta", tags=("web", "prod"), labels={"department": "sales"})
    row = VmRow(uuid="u-meta", name="meta", host="h1", status="stopped", spec=spec.to_dict())
    store.insert_vm(row)
    back = store.get_vm("meta")
    assert back.spec["tags"] == ["web", "prod"] and back.spec["labels"] == {"department": "sales"}
    assert records.load(store, "meta").spec.tags == ("web", "prod")
    assert records.load(store, "meta").spec.labels == {"department": "sales"}
    nic = {"name": "eth0", "mac": "52:54:00:00:00:01", "ips": ["10.0.0.5"]}
    store.record_guest_addresses("u-meta", "h1", [nic], ["10.0.0.5"])
    store.record_guest_addresses("u-meta", "h1", [], ["10.0.0.6"])
    seen = store.guest_addresses()
    assert list(seen) == ["u-meta"] and seen["u-meta"]["ips"] == ["10.0.0.6"] and seen["u-meta"]["seen_at"]
    store.delete_vm("u-meta")
    assert store.guest_addresses() == {}
