# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure pieces of an offline storage copy (vm/engine/offline_copy.py): the export's
address as qemu-img names it, the copy's arguments, the daemon's node of a disk."""

from __future__ import annotations

import dataclasses

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.offline_copy import blockdev, copy_argv, nbd_uri
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import DiskFacts, export_add

DISK = DiskFacts(field="disks[0].path", path="/srv/vm/web.qcow2", disk_id="d0123456789", format="qcow2", virtual_size=1)


def test_the_export_is_named_by_its_disk_id_and_an_ipv6_host_is_bracketed():
    assert nbd_uri("10.0.0.2", 10809, "d0123456789") == "nbd://10.0.0.2:10809/d0123456789"
    assert nbd_uri("fd00::2", 10809, "d0123456789") == "nbd://[fd00::2]:10809/d0123456789"


def test_a_disk_without_backing_skips_zero_areas_onto_the_fresh_target():
    argv = copy_argv(DISK, "nbd://h:1/d0123456789")
    assert argv[:4] == ["convert", "-q", "-n", "-f"] and argv[4] == "qcow2", "into the existing image, as qcow2 reads"
    assert argv[5:7] == ["-O", "raw"], "the export is the target's format node: the guest's view is written"
    assert "--target-is-zero" in argv and "-r" not in argv
    assert argv[-2:] == ["/srv/vm/web.qcow2", "nbd://h:1/d0123456789"]


def test_a_linked_clone_writes_its_zeroes_and_a_rate_limits_the_copy():
    clone = dataclasses.replace(DISK, backing="/srv/base.qcow2", backing_format="qcow2")
    argv = copy_argv(clone, "nbd://h:1/d0123456789", rate=1_000_000)
    assert "--target-is-zero" not in argv, "the target's unallocated areas show the backing file, not zeroes"
    assert argv[argv.index("-r") + 1] == "1000000"


def test_the_daemons_node_is_the_one_the_export_names():
    node = blockdev(DISK)
    assert node["node-name"] == export_add(DISK.disk_id)["node-name"]
    assert node["driver"] == "qcow2" and node["file"] == {"driver": "file", "filename": DISK.path}
