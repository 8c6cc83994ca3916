# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The copy of a backup point: QEMU block jobs (blockdev-backup) from each disk into the
point's qcow2 files, started in one QMP transaction with the dirty bitmap's reset.

A running VM's own QEMU does it (the guest keeps writing; copy-before-write keeps the copy
at the instant of the transaction). A stopped VM's images are opened by a
qemu-storage-daemon of this task's, which runs the very same QMP commands, so the
persistent bitmap is kept right in both cases (qemu-img cannot copy dirty clusters only).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.backup import BITMAP, FULL
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec, node_names, secret_id

JOB_PREFIX = "ivbk-"
NODE_PREFIX = "bk-"
JOB_TIMEOUT = 24 * 3600.0
JOB_POLL = 0.1
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def target_node(disk: DiskSpec) -> str:
    return NODE_PREFIX + disk.disk_id


def job_id(disk: DiskSpec) -> str:
    return JOB_PREFIX + disk.disk_id


def target_blockdev(disk: DiskSpec, filename: str, encrypted: bool) -> Dict[str, Any]:
    """The point's file as a node. ``backing: null``: an incremental point's unchanged
    clusters stay unallocated (they are read from the point below at restore)."""
    node: Dict[str, Any] = {
        "driver": "qcow2",
        "node-name": target_node(disk),
        "file": {"driver": "file", "filename": filename},
        "backing": None,
    }
    if encrypted:  # the disk's own key (its secret object), so the copy stays encrypted
        node["encrypt"] = {"format": "luks", "key-secret": secret_id(disk)}
    return node


def actions(disks: Sequence[DiskSpec], kind: str, bitmaps: Dict[str, Optional[str]]) -> List[Dict[str, Any]]:
    """The transaction: for a full point, each qcow2 disk's bitmap is made (persistent) or
    cleared at the same instant its copy starts; an incremental one copies what the bitmap
    marks (and QEMU resets it when the job succeeds)."""
    out: List[Dict[str, Any]] = []
    for disk in disks:
        node = node_names(disk)[1]
        backup: Dict[str, Any] = {
            "job-id": job_id(disk),
            "device": node,
            "target": target_node(disk),
            "sync": kind,
            "auto-dismiss": False,
        }
        if kind == FULL and disk.format == "qcow2":
            if bitmaps.get(disk.disk_id) is not None:  # missing, or removed as unusable (drop_bad_bitmaps)
                out.append(
                    {"type": "block-dirty-bitmap-add", "data": {"node": node, "name": BITMAP, "persistent": True}}
                )
            else:
                out.append({"type": "block-dirty-bitmap-clear", "data": {"node": node, "name": BITMAP}})
        elif kind != FULL:
            backup["bitmap"] = BITMAP
        out.append({"type": "blockdev-backup", "data": backup})
    return out


def drop_bad_bitmaps(qmp: Any, disks: Sequence[DiskSpec], bitmaps: Dict[str, Optional[str]]) -> None:
    """Remove a bitmap that exists but cannot be trusted (QEMU ended without storing it):
    QEMU refuses to clear it, and the full point about to start adds it anew."""
    for disk in disks:
        state = bitmaps.get(disk.disk_id)
        if disk.format == "qcow2" and state not in (None, "missing"):
            qmp.execute("block-dirty-bitmap-remove", {"node": node_names(disk)[1], "name": BITMAP})


def bitmap_state(node: Dict[str, Any]) -> Optional[str]:
    """None when the node's backup bitmap is sound, else what is wrong ("missing" first:
    a full point then adds it). ``node``: a query-named-block-nodes entry."""
    found = [b for b in node.get("dirty-bitmaps", []) if b.get("name") == BITMAP]
    if not found:
        return "missing"
    if found[0].get("inconsistent"):
        return "inconsistent (QEMU ended without storing it)"
    if not found[0].get("persistent", True) or not found[0].get("recording", True):
        return "not a recording persistent bitmap"
    return None


def offline_bitmap_state(info: Dict[str, Any]) -> Optional[str]:
    """As bitmap_state, from ``qemu-img info`` of a closed image: "in-use" there means the
    last QEMU to hold it ended without storing the bitmap."""
    bitmaps = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    found = [b for b in bitmaps if b.get("name") == BITMAP]
    if not found:
        return "missing"
    if "in-use" in found[0].get("flags", []):
        return "inconsistent (QEMU ended without storing it)"
    return None


def run_copy(
    qmp: Any, disks: Sequence[DiskSpec], files: Dict[str, str], encrypted: Sequence[str], kind: str, bitmaps, frozen
) -> None:
    """Add a target node per disk (``files``: disk_id -> a filename QEMU opens, e.g. a
    descriptor set), run the transaction of a ``kind`` point inside ``frozen`` (a context
    manager: the guest's freeze, if any) and wait for every job; nodes are removed again."""
    plan = actions(disks, kind, bitmaps)
    try:
        if kind == FULL:
            drop_bad_bitmaps(qmp, disks, bitmaps)
        for disk in disks:
            qmp.execute("blockdev-add", target_blockdev(disk, files[disk.disk_id], disk.disk_id in encrypted))
        with frozen:
            qmp.execute("transaction", {"actions": plan})
        wait_jobs(qmp, [job_id(d) for d in disks])
    finally:
        with contextlib.suppress(InfinivirtError):
            drop_targets(qmp)


def wait_jobs(qmp: Any, ids: Sequence[str]) -> None:
    """Wait until the jobs conclude, dismiss them, raise the first error."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        jobs = {j["id"]: j for j in qmp.execute("query-jobs") if j["id"] in ids}
        if all(j["status"] == "concluded" for j in jobs.values()):
            break
        if time.monotonic() > deadline:
            raise QemuError("backup jobs did not end within %g s" % JOB_TIMEOUT)
        time.sleep(JOB_POLL)
    for job in jobs.values():
        qmp.execute("job-dismiss", {"id": job["id"]})
    errors = ["%s: %s" % (j["id"], j["error"]) for j in jobs.values() if j.get("error")]
    missing = sorted(set(ids) - set(jobs))
    if errors or missing:
        raise QemuError("backup copy failed: %s" % "; ".join(errors + ["job %s vanished" % m for m in missing]))


def settle_leftovers(qmp: Any) -> bool:
    """Jobs, nodes and descriptor sets a cut-off backup task left in a running QEMU:
    cancelled and removed. Returns whether there were any."""
    found = False
    for job in qmp.execute("query-jobs"):
        if not job["id"].startswith(JOB_PREFIX):
            continue
        found = True
        if job["status"] != "concluded":
            with contextlib.suppress(InfinivirtError):
                qmp.execute("job-cancel", {"id": job["id"]})
        deadline = time.monotonic() + 60
        while job["status"] != "concluded" and time.monotonic() < deadline:
            time.sleep(JOB_POLL)
            job = next((j for j in qmp.execute("query-jobs") if j["id"] == job["id"]), {"status": "concluded"})
        with contextlib.suppress(InfinivirtError):
            qmp.execute("job-dismiss", {"id": job["id"]})
    return drop_targets(qmp) or found


def drop_targets(qmp: Any) -> bool:
    """Remove our target nodes and their descriptor sets; whether there were any."""
    found = False
    for node in qmp.execute("query-named-block-nodes", {"flat": True}):
        if node["node-name"].startswith(NODE_PREFIX):
            found = True
            qmp.execute("blockdev-del", {"node-name": node["node-name"]})
    for fdset in qmp.execute("query-fdsets"):
        if any(str(fd.get("opaque", "")).startswith(NODE_PREFIX) for fd in fdset.get("fds", [])):
            found = True
            qmp.execute("remove-fd", {"fdset-id": fdset["fdset-id"]})
    return found


def fd_sets(qmp: Any, stack: contextlib.ExitStack, disks: Sequence[DiskSpec], fds: Dict[str, int]) -> Dict[str, str]:
    """Each point file handed to a running QEMU as a descriptor set (read-write and
    read-only, as QEMU picks by access mode): disk_id -> /dev/fdset/N."""
    names = {}
    for disk in disks:
        readonly = os.open("/proc/self/fd/%d" % fds[disk.disk_id], os.O_RDONLY | _CLOEXEC)
        stack.callback(os.close, readonly)
        fdset = qmp.add_fd_set((fds[disk.disk_id], readonly), target_node(disk))
        names[disk.disk_id] = "/dev/fdset/%d" % fdset
    return names
