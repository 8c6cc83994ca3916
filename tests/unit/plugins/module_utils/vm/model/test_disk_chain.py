# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A disk with external snapshots: every image of its chain is a node of its own, opened
by descriptor set, each overlay naming the node below as its backing."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec, blockdevs, node_names


def test_the_chain_is_wired_base_first_and_only_the_top_is_writable():
    disk = DiskSpec(path="/images/base.raw", format="raw")
    nodes = blockdevs(
        disk,
        active_path="/images/base.raw.s2.overlay.qcow2",
        opened_as="/dev/fdset/1",
        backing_opened_as=["/dev/fdset/2", "/dev/fdset/3"],
    )
    by_name = {n["node-name"]: n for n in nodes}
    top_file, top = node_names(disk)
    assert by_name[top]["driver"] == "qcow2" and by_name[top_file]["filename"] == "/dev/fdset/1"
    middle = by_name[by_name[top]["backing"]]
    base = by_name[middle["backing"]]
    assert (middle["driver"], base["driver"]) == ("qcow2", "raw")
    assert "backing" not in base  # a raw base has none
    assert by_name[middle["file"]]["filename"] == "/dev/fdset/3"
    assert by_name[base["file"]]["filename"] == "/dev/fdset/2"
    assert [n["node-name"] for n in nodes].index(base["node-name"]) < [n["node-name"] for n in nodes].index(top)
    assert all(n["read-only"] for n in (middle, base)) and not by_name[top]["read-only"]


def test_a_disk_without_snapshots_ignores_backing_names():
    disk = DiskSpec(path="/images/a.qcow2")
    assert blockdevs(disk, backing_opened_as=["/dev/fdset/9"]) == blockdevs(disk)
