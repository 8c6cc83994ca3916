# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Migration requests (store/handovers.py) on both backends: compare-and-set moves, and the
handover that moves the VM's row only from ``taking``, only from the source."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import VmRow

pytestmark = [pytest.mark.both_backends]


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    s.insert_vm(VmRow(uuid="u1", name="web", host="hv-a", status="running", spec={"vcpus": 1, "memory_mb": 64}))
    yield s
    s.close()


def test_a_request_moves_step_by_step(store):
    store.open_handover("u1", "web", "hv-a", "hv-b", {"max_downtime_ms": 300})
    assert [h["vm_name"] for h in store.handovers_to("hv-b", ["requested"])] == ["web"]
    assert store.handovers_to("hv-a", ["requested"]) == []
    assert store.move_handover("u1", "requested", "listening", uri="tcp:10.0.0.2:49152")
    assert not store.move_handover("u1", "requested", "refused", error="late"), "already moved on"
    got = store.get_handover("u1")
    assert (got["state"], got["uri"], got["error"], got["options"]) == (
        "listening",
        "tcp:10.0.0.2:49152",
        None,
        {"max_downtime_ms": 300},
    )


def test_the_row_moves_only_from_sent_and_only_from_the_source(store):
    store.open_handover("u1", "web", "hv-a", "hv-b", {})
    store.move_handover("u1", "requested", "listening", uri="tcp:x:1")
    run = {"qemu_pid": 4242, "qemu_started": 99, "pidfile_path": "/run/b/u1.pid"}
    store.move_handover("u1", "listening", "sent")
    assert not store.finish_handover("u1", "hv-a", "hv-b", run), "the target has not taken it yet"
    assert store.get_vm("web").host == "hv-a" and store.get_handover("u1")["state"] == "sent"
    assert store.move_handover("u1", "sent", "taking")
    assert not store.move_handover("u1", "sent", "aborted"), "once taking, the source cannot abort"
    assert not store.finish_handover("u1", "hv-x", "hv-b", run), "the row names another source"
    assert store.get_handover("u1")["state"] == "taking", "rolled back together"
    version = store.get_vm("web").version
    assert store.finish_handover("u1", "hv-a", "hv-b", run)
    row = store.get_vm("web")
    assert (row.host, row.qemu_pid, row.qemu_started, row.pidfile_path) == ("hv-b", 4242, 99, "/run/b/u1.pid")
    assert row.version == version + 1 and store.get_handover("u1")["state"] == "done"
    assert not store.move_handover("u1", "taking", "refused"), "a finished handover is never undone"
    with pytest.raises(ValueError):
        store.finish_handover("u1", "hv-b", "hv-a", {"host": "hv-a"})


def test_deleting_the_vm_drops_its_request(store):
    store.open_handover("u1", "web", "hv-a", "hv-b", {})
    store.delete_vm("u1")
    assert store.get_handover("u1") is None


def test_the_handover_swaps_the_journal_keys_of_the_two_sides(store):
    """Both hosts journal the same names (TAPs, default run_dir paths): while a VM has two
    QEMUs the target's are kept under <uuid>@<target>; the handover gives the VM's key to the
    target's and the source's leftovers their own, in the same transaction."""
    store.journal_add_many("u1", [("tap", "vnet-web"), ("pidfile", "/run/infinivirt/u1.pid")])
    store.journal_add_many(side_key("u1", "hv-b"), [("tap", "vnet-web"), ("pidfile", "/run/b/u1.pid")])
    store.open_handover("u1", "web", "hv-a", "hv-b", {})
    store.move_handover("u1", "requested", "listening", uri="tcp:x:1")
    store.move_handover("u1", "listening", "taking")
    assert not store.finish_handover("u1", "hv-x", "hv-b", {"qemu_pid": 1}), "not the source"
    assert store.journal_list("u1") == [("pidfile", "/run/infinivirt/u1.pid"), ("tap", "vnet-web")], "rolled back"
    assert store.finish_handover("u1", "hv-a", "hv-b", {"qemu_pid": 1})
    assert sorted(store.journal_list("u1")) == [("pidfile", "/run/b/u1.pid"), ("tap", "vnet-web")]
    assert sorted(store.journal_list("u1@hv-a")) == [("pidfile", "/run/infinivirt/u1.pid"), ("tap", "vnet-web")]
    assert store.journal_list("u1@hv-b") == []
