# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reads of many VMs in one query per table, and the recorded QEMU start time (issue 20),
on both backends."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.store import batch
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.hostdevs import PciClaim
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import VmRow

pytestmark = [pytest.mark.both_backends]


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def reads(store, monkeypatch):
    """Every query the store runs, counted."""
    done = []
    real = store._read

    def counted(sql, args=(), doing="a read"):
        done.append(sql)
        return real(sql, args, doing)

    monkeypatch.setattr(store, "_read", counted)
    return done


def _vms(store, count):
    names = ["b%02d" % i for i in range(count)]
    for name in names:
        spec = {"vcpus": 1, "memory_mb": 64}
        store.insert_vm(VmRow(uuid="u-" + name, name=name, host="h1", status="stopped", spec=spec))
    return ["u-" + name for name in names]


def test_the_start_time_of_the_pid_is_kept_with_the_row(store):
    uuid = _vms(store, 1)[0]
    rec = store.get_vm_by_uuid(uuid)
    assert rec.qemu_started is None  # nothing runs
    rec.status, rec.qemu_pid, rec.qemu_started = "running", 4242, 2**40  # ticks outgrow 32 bits
    store.update_vm(rec)
    again = store.get_vm_by_uuid(uuid)
    assert (again.qemu_pid, again.qemu_started) == (4242, 2**40)
    assert store.list_vms()[0].qemu_started == 2**40


def test_secrets_of_many_rows_in_one_query(store, reads):
    uuids = _vms(store, 3)
    store.set_secret(uuids[0], "graphics_password", "token-0")
    store.set_secret(uuids[2], "graphics_password", "token-2")
    del reads[:]
    found = store.get_secrets(uuids + ["u-missing"], "graphics_password")
    assert found == {uuids[0]: "token-0", uuids[1]: None, uuids[2]: "token-2", "u-missing": None}
    assert len(reads) == 1
    assert found == {u: store.get_secret(u, "graphics_password") for u in found}
    with pytest.raises(ValueError):  # names are spliced into SQL: allow-listed
        store.get_secrets(uuids, "name")


def test_newest_events_of_many_vms_in_one_query(store, reads):
    uuids = _vms(store, 3)
    stamps = ["2026-01-01T00:00:%02d.000000+00:00" % s for s in range(5)]
    store.add_events(
        [dict(vm_uuid=uuids[0], vm_name="b00", host="h1", kind="k%d" % i, at=at) for i, at in enumerate(stamps)]
        + [dict(vm_uuid=uuids[2], vm_name="b02", host="h1", kind="only", detail={"x": 1})]
    )
    del reads[:]
    found = store.list_events_of(uuids, 3)
    assert len(reads) == 1
    assert [e["kind"] for e in found[uuids[0]]] == ["k4", "k3", "k2"]  # newest first, 3 of 5
    assert found[uuids[1]] == []
    assert found[uuids[2]][0]["detail"] == {"x": 1}
    assert found == {u: store.list_events(u, limit=3) for u in uuids}


def test_journals_and_pci_claims_of_many_vms_in_one_query_each(store, reads):
    uuids = _vms(store, 3)
    store.journal_add(uuids[0], "pidfile", "/run/a.pid")
    store.journal_add(uuids[0], "tap", "tap-a")
    store.journal_add(uuids[1], "pidfile", "/run/b.pid")
    store.claim_pci([PciClaim("h1", "0000:01:00.0", uuids[2], "0000:01:00.0")])
    del reads[:]
    journals = store.journal_lists(uuids)
    claims = store.list_pci_of(uuids)
    assert len(reads) == 2
    assert journals == {u: store.journal_list(u) for u in uuids}
    assert journals[uuids[2]] == [] and len(journals[uuids[0]]) == 2
    assert claims[uuids[0]] == [] and [(c.address, c.vm_name) for c in claims[uuids[2]]] == [("0000:01:00.0", "b02")]
    assert claims == {u: store.list_pci(vm_uuid=u) for u in uuids}


def test_a_long_list_is_read_in_chunks_of_in_batch(store, reads, monkeypatch):
    monkeypatch.setattr(batch, "IN_BATCH", 2)
    uuids = _vms(store, 5)
    store.journal_add(uuids[4], "pidfile", "/run/e.pid")
    del reads[:]
    found = store.journal_lists(uuids + uuids[:1])  # a repeated one is asked once
    assert len(reads) == 3 and found[uuids[4]] == [("pidfile", "/run/e.pid")] and len(found) == 5
    assert store.get_secrets([], "graphics_password") == {} and len(reads) == 3  # nothing to ask


def test_journal_entries_are_added_and_removed_in_one_transaction(store, monkeypatch):
    uuid = _vms(store, 1)[0]
    opened = []
    real = store.transaction
    monkeypatch.setattr(store, "transaction", lambda doing="a write": opened.append(doing) or real(doing))
    entries = [("pidfile", "/run/x.pid"), ("qmp_socket", "/run/x.qmp"), ("pidfile", "/run/x.pid")]
    store.journal_add_many(uuid, entries)
    store.journal_add_many(uuid, [])  # nothing: no transaction
    assert sorted(store.journal_list(uuid)) == [("pidfile", "/run/x.pid"), ("qmp_socket", "/run/x.qmp")]
    store.journal_remove_many(uuid, [("pidfile", "/run/x.pid"), ("tap", "never-there")])
    assert store.journal_list(uuid) == [("qmp_socket", "/run/x.qmp")]
    assert len(opened) == 2
