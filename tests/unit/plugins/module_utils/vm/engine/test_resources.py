# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The resource journal of one side of a migrating VM (vm/engine/resources.py
HostResources.key): a VM kept ``apart`` journals and releases under <uuid>@<this host>, and
never touches the entries the other host keeps under the VM's UUID."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import HostResources
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

UUID = "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11"


def test_a_side_kept_apart_releases_only_its_own_files(tmp_path):
    store = open_store("sqlite:///%s/state.db" % tmp_path)
    try:
        rec = VmRecord(uuid=UUID, name="web", host="hv-a", status="running", spec=VmSpec(name="web"))
        ours, theirs = tmp_path / "b.pid", tmp_path / "a.pid"
        ours.write_text("1")
        theirs.write_text("2")
        store.journal_add(UUID, "pidfile", str(theirs))  # the source host's, under the UUID
        target = HostResources(store, str(tmp_path), host_id="hv-b")
        assert target.key(rec) == UUID, "a VM with one QEMU: its UUID"
        target.apart.add(UUID)
        assert target.key(rec) == UUID + "@hv-b"
        store.journal_add(target.key(rec), "pidfile", str(ours))
        store.journal_add(target.key(rec), "nvram", str(tmp_path / "b.fd"))

        target.release_files(rec, keep_serial_log=True)
        assert not ours.exists(), "this side's file goes"
        assert theirs.exists() and store.journal_list(UUID) == [("pidfile", str(theirs))], "the other side's stays"
        assert store.journal_list(UUID + "@hv-b") == [("nvram", str(tmp_path / "b.fd"))], "kept with the VM"
        target.release_files(rec, keep_serial_log=False, keep_nvram=False)
        assert store.journal_list(UUID + "@hv-b") == [] and store.journal_list(UUID) == [("pidfile", str(theirs))]
    finally:
        store.close()
