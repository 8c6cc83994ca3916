# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backups, pure: options, the manifest of backup points, which kind the next point is,
which chains retention drops, and the chain a restore reads.

A VM's backups live in ``<target>/<vm>/``: one directory per point (``<id>/``, a qcow2
file per disk plus the VM definition) and ``manifest.json``, the list of complete points.
A point counts only once it is in the manifest; the manifest is replaced by a rename after
the point's files are fsynced. An incremental point's qcow2 files name the previous
point's files as their backing file (relative, ``../<id>/<disk>.qcow2``), so the chain
moves with the directory and a restore is one ``qemu-img convert`` of the top.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

MODES = ("full", "incremental", "auto")
STATES = ("present", "restored", "absent")
FULL, INCREMENTAL = "full", "incremental"
BITMAP = "infinivirt-backup"  # the persistent dirty bitmap on each qcow2 disk
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PART_SUFFIX = ".part"  # a point being written; never listed, removed by the next run
DEFINITION = "definition.json"
_POINT_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9]{2}")
_RESTORE_AS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_mode_option(mode: Any) -> str:
    if mode not in MODES:
        raise SpecError("mode", "must be one of %s, got %r" % (", ".join(MODES), mode))
    return mode


def check_state(state: Any) -> str:
    if state not in STATES:
        raise SpecError("state", "must be one of %s, got %r" % (", ".join(STATES), state))
    return state


def check_keep(keep: Any) -> Optional[int]:
    """How many chains (a full point and its incrementals) to keep; None keeps all."""
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SpecError("keep", "must be a whole number of chains, 1 or more, got %r" % (keep,))
    return keep


def check_target(target: Any, field: str = "target") -> str:
    if not isinstance(target, str) or not target.startswith("/"):
        raise SpecError(field, "must be an absolute directory path, got %r" % (target,))
    if "\0" in target or "/../" in target + "/":
        raise SpecError(field, "%r must not contain '..' or NUL" % (target,))
    return target.rstrip("/") or "/"


def check_point(point: Any, manifest: Dict[str, Any], field: str = "point") -> Dict[str, Any]:
    """The complete point ``point`` names; ``latest`` is the newest."""
    points = manifest["points"]
    if point == "latest":
        if points:
            return points[-1]
        raise SpecError(field, "VM %s has no complete backup point (points: none)" % manifest["vm"])
    if not isinstance(point, str) or not _POINT_RE.fullmatch(point):
        raise SpecError(field, "%r is not a backup point id (like 20261206T221500Z-00) or 'latest'" % (point,))
    found = [p for p in points if p["id"] == point]
    if not found:
        known = ", ".join(p["id"] for p in points) or "none"
        raise SpecError(field, "VM %s has no complete backup point %s (points: %s)" % (manifest["vm"], point, known))
    return found[0]


def check_restore_as(name: Any) -> Optional[str]:
    if name is None:
        return None
    if not isinstance(name, str) or not _RESTORE_AS_RE.fullmatch(name):
        raise SpecError("restore_as", "%r must be 1 to 64 letters, digits, '.', '_' or '-'" % (name,))
    return name


def point_id(now: float, points: List[Dict[str, Any]]) -> str:
    """A new id: the UTC time to the second plus a counter, later than every id before
    (ids sort as the points were taken, also for two in one second)."""
    import datetime  # pure: formats the given clock value, reads no clock

    stamp = datetime.datetime.fromtimestamp(int(now), datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    same = [int(p["id"][-2:]) for p in points if p["id"][:16] == stamp]
    return "%s-%02d" % (stamp, (max(same) + 1) if same else 0)


def is_point_name(name: str) -> bool:
    """A point's directory name (``<id>`` or ``<id>.part``): the only entries a backup run
    removes from the VM's backup directory besides its own manifest temp file."""
    if name.endswith(PART_SUFFIX):
        name = name[: -len(PART_SUFFIX)]
    return bool(_POINT_RE.fullmatch(name))


def new_manifest(vm: str, uuid: str) -> Dict[str, Any]:
    return {"version": MANIFEST_VERSION, "vm": vm, "uuid": uuid, "points": [], "pending": None}


def parse_manifest(text: str, path: str) -> Dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpecError("target", "%s is not a backup manifest: %s" % (path, exc)) from None
    if (
        not isinstance(data, dict)
        or data.get("version") != MANIFEST_VERSION
        or not isinstance(data.get("points"), list)
    ):
        raise SpecError("target", "%s is not a version %d backup manifest" % (path, MANIFEST_VERSION))
    data.setdefault("pending", None)
    return data


def dump_manifest(manifest: Dict[str, Any]) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True) + "\n"


def choose_kind(
    mode: str, manifest: Dict[str, Any], disks: List[Dict[str, Any]], bitmaps: Dict[str, Optional[str]]
) -> Tuple[str, Optional[str]]:
    """(kind, why an incremental asked for became full or None). ``disks``: the VM's
    writable disks as ``{"disk_id", "format"}``; ``bitmaps``: disk_id -> None when the
    disk's bitmap is sound, else what is wrong with it."""
    if mode == FULL:
        return FULL, None
    points = manifest["points"]
    why = None
    if not points:
        why = "there is no earlier backup point"
    elif manifest.get("pending"):
        why = "backup point %s did not finish" % manifest["pending"]
    elif sorted(d["disk_id"] for d in points[-1]["disks"]) != sorted(d["disk_id"] for d in disks):
        why = "the VM's disks changed since point %s" % points[-1]["id"]
    else:
        raw = [d["disk_id"] for d in disks if d["format"] != "qcow2"]
        bad = ["%s: %s" % (k, v) for k, v in sorted(bitmaps.items()) if v]
        if raw:
            why = "disks %s are raw (dirty bitmaps need qcow2)" % ", ".join(raw)
        elif bad:
            why = "the dirty bitmap is not usable (%s)" % "; ".join(bad)
    if why is None:
        return INCREMENTAL, None
    return FULL, (why if mode == INCREMENTAL else None)


def chains(points: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """The points grouped by chain (a full point and the incrementals on it), oldest first."""
    grouped: List[List[Dict[str, Any]]] = []
    for point in points:
        if point["kind"] == FULL or not grouped:
            grouped.append([point])
        else:
            grouped[-1].append(point)
    return grouped


def expired(points: List[Dict[str, Any]], keep: Optional[int]) -> List[Dict[str, Any]]:
    """The points retention removes: whole chains, oldest first, beyond the newest ``keep``;
    an incremental never loses its full point."""
    if keep is None:
        return []
    return [p for chain in chains(points)[:-keep] for p in chain]


def chain_to(points: List[Dict[str, Any]], point: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The points a restore of ``point`` reads, its full point first."""
    for chain in chains(points):
        ids = [p["id"] for p in chain]
        if point["id"] in ids:
            return chain[: ids.index(point["id"]) + 1]
    raise SpecError("point", "backup point %s is not in the manifest" % point["id"])


def dependents(points: List[Dict[str, Any]], point: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``point`` and every later point of its chain (they need it): what deleting it removes."""
    for chain in chains(points):
        ids = [p["id"] for p in chain]
        if point["id"] in ids:
            return chain[ids.index(point["id"]) :]
    return []


def disk_file(point_id_: str, disk_id: str) -> str:
    """A disk's file in a point, relative to the VM's backup directory."""
    return "%s/%s.qcow2" % (point_id_, disk_id)


def backing_name(parent: Optional[Dict[str, Any]], disk_id: str) -> Optional[str]:
    """The backing file name a point's disk file records: relative to its own directory."""
    return None if parent is None else "../" + disk_file(parent["id"], disk_id)


def public_point(point: Dict[str, Any], points: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A point as results show it."""
    chain = chain_to(points, point)
    return {
        "id": point["id"],
        "time": point["time"],
        "kind": point["kind"],
        "size": sum(d["size"] for d in point["disks"]),
        "chain": [p["id"] for p in chain],
        "consistency": point["consistency"],
        "firmware": list(point.get("firmware") or ()),  # points written before it: none
        "disks": [dict(d) for d in point["disks"]],
    }


# Saved spec fields that are not infinivirt_vm options of the same meaning, or belong to
# the original VM or host (graphics passwords, seeds, CPU pins).
_NOT_RESTORED = ("name", "state", "graphics", "cpu_pinning", "emulator_cpus", "iothread_cpus", "cloud_init", "unattend")


def restore_params(spec: Dict[str, Any], name: str, paths: Dict[str, str], options: List[str]) -> Dict[str, Any]:
    """infinivirt_vm parameters of a new, stopped VM ``name`` from a saved spec: disks on
    the restored files (``paths``: old path -> new), NICs without their MAC addresses (the
    original VM may still run with them); options a preset filled are left to it again."""
    defaulted = set(spec.get("defaulted", []))
    params: Dict[str, Any] = {
        key: value
        for key, value in spec.items()
        if key in options and key not in _NOT_RESTORED and key not in defaulted and value not in (None, [], {})
    }
    disks = []
    for disk in spec.get("disks", []):
        item = {k: v for k, v in disk.items() if v is not None and k not in ("clone_from", "clone_mode", "size")}
        if disk["path"] in paths:
            item.update(path=paths[disk["path"]], format="qcow2")
        disks.append(item)
    params["disks"] = disks
    params["nics"] = [
        {k: v for k, v in nic.items() if v not in (None, []) and k not in ("mac", "tap")}
        for nic in spec.get("nics", [])
    ]
    params.update(name=name, state="stopped")
    return params
