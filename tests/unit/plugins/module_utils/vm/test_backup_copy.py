# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The QMP a backup point sends (vm/backup_copy.py): the transaction that makes or clears
the bitmap at the instant a full copy starts, the incremental copy by bitmap, the target
node (no backing opened; the disk's own key for an encrypted one), and how a bitmap's
state is read live and from a closed image. The QEMU side runs in
tests/integration/test_backup.py."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.vm import backup_copy as c
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec

Q, R = DiskSpec(path="/v/a.qcow2"), DiskSpec(path="/v/b.img", format="raw")


def test_full_point_adds_or_clears_the_bitmap_in_the_same_transaction():
    plan = c.actions([Q, R], "full", {Q.disk_id: "missing"})
    assert [a["type"] for a in plan] == ["block-dirty-bitmap-add", "blockdev-backup", "blockdev-backup"]
    assert plan[0]["data"] == {"node": "n-" + Q.disk_id, "name": "infinivirt-backup", "persistent": True}
    assert plan[1]["data"]["sync"] == "full" and plan[1]["data"]["auto-dismiss"] is False
    assert plan[2]["data"]["device"] == "n-" + R.disk_id, "a raw disk is copied whole, with no bitmap"
    again = c.actions([Q], "full", {Q.disk_id: None})
    clear = {"node": "n-" + Q.disk_id, "name": "infinivirt-backup"}
    assert again[0] == {"type": "block-dirty-bitmap-clear", "data": clear}
    bad = c.actions([Q], "full", {Q.disk_id: "inconsistent"})
    assert bad[0]["type"] == "block-dirty-bitmap-add", "an untrusted bitmap is removed first, then made anew"


class FakeQmp:  # records commands: only which QMP a bitmap state leads to is checked here
    def __init__(self):
        self.sent = []

    def execute(self, command, arguments=None):
        self.sent.append((command, arguments))


def test_an_untrusted_bitmap_is_removed_before_a_full_point():
    qmp = FakeQmp()
    c.drop_bad_bitmaps(qmp, [Q, R], {Q.disk_id: "inconsistent (QEMU ended without storing it)"})
    assert qmp.sent == [("block-dirty-bitmap-remove", {"node": "n-" + Q.disk_id, "name": "infinivirt-backup"})]
    c.drop_bad_bitmaps(qmp, [Q], {Q.disk_id: "missing"})
    c.drop_bad_bitmaps(qmp, [Q], {Q.disk_id: None})
    assert len(qmp.sent) == 1, "a missing or sound bitmap is not removed"


def test_incremental_point_copies_by_bitmap():
    (backup,) = c.actions([Q], "incremental", {Q.disk_id: None})
    assert backup["data"]["sync"] == "incremental" and backup["data"]["bitmap"] == "infinivirt-backup"
    assert backup["data"]["target"] == c.target_node(Q) and backup["data"]["job-id"] == c.job_id(Q)


def test_target_node():
    plain = c.target_blockdev(Q, "/dev/fdset/3", False)
    assert plain["backing"] is None and plain["file"] == {"driver": "file", "filename": "/dev/fdset/3"}
    assert "encrypt" not in plain
    assert c.target_blockdev(Q, "/dev/fdset/3", True)["encrypt"] == {"format": "luks", "key-secret": "sec-" + Q.disk_id}


def test_bitmap_state_live_and_offline():
    good = {"name": "infinivirt-backup", "recording": True, "persistent": True}
    assert c.bitmap_state({"dirty-bitmaps": [good]}) is None
    assert c.bitmap_state({"dirty-bitmaps": [dict(good, name="other")]}) == "missing"
    assert c.bitmap_state({}) == "missing"
    assert c.bitmap_state({"dirty-bitmaps": [dict(good, inconsistent=True)]}).startswith("inconsistent")
    assert c.bitmap_state({"dirty-bitmaps": [dict(good, persistent=False)]}) == "not a recording persistent bitmap"
    info = {"format-specific": {"data": {"bitmaps": [{"name": "infinivirt-backup", "flags": ["auto"]}]}}}
    assert c.offline_bitmap_state(info) is None
    info["format-specific"]["data"]["bitmaps"][0]["flags"].append("in-use")
    assert c.offline_bitmap_state(info).startswith("inconsistent"), "QEMU killed: the bitmap is not trusted"
    assert c.offline_bitmap_state({"format-specific": {"data": {}}}) == "missing"
