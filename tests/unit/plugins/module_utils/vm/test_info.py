# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vm_info's listing reads the store once per table, whatever the number of VMs
(issue 20); a VM listed by name reads what it did before."""

from __future__ import annotations

import os

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import VmInfo
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec


def _listing_reads(tmp_path, count):
    ctx = HostContext.open("sqlite:///%s/%d.db" % (tmp_path, count), os.path.join(str(tmp_path), "run"), host_id="h1")
    try:
        store = ctx.store
        for i in range(count):
            name = "i%02d" % i
            records.insert(
                store, VmRecord(uuid="u-" + name, name=name, host="h1", status="running", spec=VmSpec(name=name))
            )
            store.journal_add("u-" + name, "pidfile", "/nonexistent/%s.pid" % name)  # left by a QEMU that died
        store.add_events([dict(vm_uuid="u-i00", vm_name="i00", host="h1", kind="crashed")])
        done = []
        real = store._read
        store._read = lambda sql, args=(), doing="a read": done.append(sql) or real(sql, args, doing)
        vms = VmInfo.of(ctx).list()
        return vms, len(done)
    finally:
        ctx.close()


def test_a_listing_reads_each_table_once(tmp_path):
    few, few_reads = _listing_reads(tmp_path, 2)
    many, many_reads = _listing_reads(tmp_path, 12)
    assert len(many) == 12 and many_reads == few_reads == 5  # VMs, secrets, events, PCI, journal
    first = many[0]  # the row says running, no QEMU runs: crashed, with what it left
    assert (first["status"], first["crashed"]) == ("stopped", True)
    assert first["leftovers"] == [{"kind": "pidfile", "ref": "/nonexistent/i00.pid"}]
    assert [e["kind"] for e in first["events"]] == ["crashed"] and many[1]["events"] == []
