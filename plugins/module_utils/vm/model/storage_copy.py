# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Storage copied during a live migration (issue 23; docs/architecture.md "Migration",
"Storage copy"), as a pure model: what the source tells the target of each disk, how the
target decides per disk (shared or copied), the QMP arguments of both sides (the target's
NBD export, the source's NBD node and block mirror), and the answer's encoding in the
request's ``uri`` column.

A disk is *shared* when the target sees, next to it, the marker file the source wrote for
this request (a fresh token: same path and same file, whatever the inodes say); else it is
copied to the same path on the target, which must be inside the target's storage roots and
not exist there yet."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

MARKER_PREFIX = ".infinivirt-migration-"
JOB_PREFIX = "mig-"  # the source's NBD node and mirror job of a disk: mig-<disk_id>
_TOKEN_RE = re.compile(r"^[0-9a-f]{16,64}$")
_DISK_ID_RE = re.compile(r"^d[0-9a-f]{10}$")


def marker_name(token: str) -> str:
    """The marker file's name (in each disk's directory) of one request."""
    if not _TOKEN_RE.match(token or ""):
        raise ValueError("a marker token is 16 to 64 lowercase hex digits")
    return MARKER_PREFIX + token


@dataclasses.dataclass(frozen=True)
class DiskFacts:
    """What the source knows of one disk image and the target cannot read (qemu-img info
    -U on the source; encrypted and layered from the store)."""

    field: str  # disks[N].path: errors name it
    path: str
    disk_id: str
    format: str  # qcow2 | raw
    virtual_size: int
    backing: Optional[str] = None  # the backing file a linked clone's header names
    backing_format: Optional[str] = None
    encrypted: bool = False
    layered: bool = False  # external snapshots: an overlay chain the store keeps
    copyable: bool = True  # false: read-only or a CD-ROM: never copied, must be there

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DiskFacts":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def facts_from_info(
    field: str, path: str, disk_id: str, info: Mapping[str, Any], encrypted: bool, layered: bool, copyable: bool
) -> DiskFacts:
    """DiskFacts from ``qemu-img info --output=json`` of the image."""
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    return DiskFacts(
        field=field,
        path=path,
        disk_id=disk_id,
        format=str(info.get("format") or "raw"),
        virtual_size=int(info.get("virtual-size") or 0),
        backing=backing if isinstance(backing, str) else None,
        backing_format=info.get("backing-filename-format") if backing else None,
        encrypted=encrypted,
        layered=layered,
        copyable=copyable,
    )


def copy_refusal(disk: DiskFacts, backing_here: bool) -> Optional[str]:
    """Why the target cannot copy ``disk`` (None: it can). ``backing_here``: the backing
    file (a linked clone's) exists at the same path on the target."""
    if not disk.copyable:
        return "%s (%s) is read-only or a CD-ROM and is not on this host: it is never copied" % (disk.field, disk.path)
    if disk.encrypted:
        return "%s (%s) is an encrypted (LUKS) volume: storage copy does not move its key; use shared storage" % (
            disk.field,
            disk.path,
        )
    if disk.layered:
        return (
            "%s (%s) has external snapshots (an overlay chain): storage copy does not move them; merge or "
            "delete them first, or use shared storage" % (disk.field, disk.path)
        )
    if disk.backing is not None and not backing_here:
        return (
            "%s (%s) is a linked clone of %s, which does not exist on this host: storage copy copies the "
            "top image only and needs the backing image at the same path on both hosts"
            % (disk.field, disk.path, disk.backing)
        )
    return None


def decide(storage: str, disk: DiskFacts, shared: bool, exists: bool) -> Tuple[str, Optional[str]]:
    """One disk's fate on the target: ("shared", None), ("copy", None) or ("refuse", why).
    ``shared``: the target sees the source's marker beside it; ``exists``: a file exists at
    its path on the target. A read-only disk or CD-ROM is never copied nor marked: it is
    used where it is, if it is there."""
    if not disk.copyable:
        return ("shared", None) if exists else ("refuse", copy_refusal(disk, True))
    if shared:
        if storage == "copy":
            return (
                "refuse",
                "%s (%s) is the same file on both hosts: storage copy would copy it onto itself; "
                "use storage: shared or auto" % (disk.field, disk.path),
            )
        return "shared", None
    if storage == "shared":
        return (
            "refuse",
            "%s (%s) is not the same file on both hosts (no marker of this migration beside it); "
            "shared storage needs the same disks at the same paths; use storage: copy or auto"
            % (
                disk.field,
                disk.path,
            ),
        )
    if exists:
        return (
            "refuse",
            "%s (%s) exists on this host but is not the source's file: storage copy makes a new "
            "image there; remove it, or share the storage" % (disk.field, disk.path),
        )
    return "copy", None


def mirror_sync(disk: DiskFacts) -> str:
    """A linked clone's top image only (its backing image is on both hosts); else all."""
    return "top" if disk.backing else "full"


def nbd_server_start(host: str, port: int) -> Dict[str, Any]:
    return {"addr": {"type": "inet", "data": {"host": host, "port": str(port)}}}


def export_add(disk_id: str) -> Dict[str, Any]:
    """The target's writable NBD export of a disk's format node, named by its disk id."""
    _check_id(disk_id)
    return {"type": "nbd", "id": JOB_PREFIX + disk_id, "node-name": "n-" + disk_id, "name": disk_id, "writable": True}


def nbd_node(disk_id: str, host: str, port: int) -> Dict[str, Any]:
    """The source's blockdev on the target's export (the mirror's target)."""
    _check_id(disk_id)
    return {
        "driver": "nbd",
        "node-name": JOB_PREFIX + disk_id,
        "server": {"type": "inet", "host": host, "port": str(port)},
        "export": disk_id,
    }


def mirror(disk: DiskFacts, speed: int = 0) -> Dict[str, Any]:
    """``blockdev-mirror`` of a disk's format node onto its NBD node, at most ``speed``
    bytes/s (the migration's bandwidth_mbit; 0: no limit). A failed write to the target
    fails the job (the guest goes on writing its own disk)."""
    _check_id(disk.disk_id)
    args = {
        "job-id": JOB_PREFIX + disk.disk_id,
        "device": "n-" + disk.disk_id,
        "target": JOB_PREFIX + disk.disk_id,
        "sync": mirror_sync(disk),
        "on-target-error": "report",
    }
    if speed:
        args["speed"] = int(speed)
    return args


def _check_id(disk_id: str) -> None:
    if not _DISK_ID_RE.match(disk_id or ""):
        raise ValueError("not a disk id: %r" % (disk_id,))


def jobs_state(jobs: Sequence[Mapping[str, Any]], disk_ids: Sequence[str]) -> Tuple[bool, Optional[str], int]:
    """From ``query-block-jobs``: (every mirror of ``disk_ids`` ready, the first error or
    None, bytes copied so far). A job gone or concluded before its cancel failed."""
    ours = {str(job.get("device")): job for job in jobs}
    ready, copied = True, 0
    for disk_id in disk_ids:
        job = ours.get(JOB_PREFIX + disk_id)
        if job is None or job.get("status") in ("concluded", "aborting", "null"):
            why = (job or {}).get("error") or "the job ended"
            return False, "the storage mirror of disk %s failed: %s" % (disk_id, why), copied
        if job.get("io-status") not in (None, "ok"):
            return False, "the storage mirror of disk %s failed: I/O %s" % (disk_id, job["io-status"]), copied
        copied += int(job.get("offset") or 0)
        ready = ready and bool(job.get("ready"))
    return ready, None, copied


# -- the answer: the migration URI, and where the copied disks are exported -------------------
def encode_answer(
    uri: str, nbd_host: Optional[str] = None, nbd_port: Optional[int] = None, disk_ids: Sequence[str] = ()
) -> str:
    """The ``uri`` column of a listening request: ``tcp:H:P``, then, when disks are copied,
    `` nbd=H:P/d1,d2`` (the NBD server and the disks it exports)."""
    if not disk_ids:
        return uri
    for disk_id in disk_ids:
        _check_id(disk_id)
    return "%s nbd=%s:%d/%s" % (uri, nbd_host, nbd_port, ",".join(disk_ids))


def decode_answer(text: str) -> Tuple[str, Optional[Tuple[str, int]], List[str]]:
    """(migration URI, (NBD host, port) or None, the copied disks' ids)."""
    uri, _sep, rest = (text or "").partition(" nbd=")
    if not rest:
        return uri, None, []
    address, _slash, ids = rest.partition("/")
    host, _colon, port = address.rpartition(":")
    disk_ids = [d for d in ids.split(",") if d]
    for disk_id in disk_ids:
        _check_id(disk_id)
    return uri, (host.strip("[]"), int(port)), disk_ids


def mode(copied: Sequence[str]) -> str:
    """The result's ``storage``: copy when any disk was copied."""
    return "copy" if copied else "shared"
