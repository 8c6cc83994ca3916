# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disks of a VM cloned from a template on first create (pure).

A disk entry may carry ``clone_from``, ``clone_mode`` and ``size``: how to make the disk when
it is first added to the VM (the VM is created, or the disk is added to its list) and its path
does not exist. They are recorded with the disk as they were when it was added: a later task
that asks for another template, mode or size changes nothing (the disk exists; it is never
made again) and gets a warning. ``vm/disk_clones.py`` makes the disks through infinivirt_disk's
``DiskService``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_abs_path
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import CLONE_MODES
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import parse_size

# A disk's fields that say how it is made, not how it is attached.
ORIGIN_FIELDS = ("clone_from", "clone_mode", "size")
# The clone_mode a disk entry without one gets (as infinivirt_disk's).
DEFAULT_CLONE_MODE = "linked"


def validate_clone(field: str, disk: Any, disks: Sequence[Any]) -> None:
    """The clone options of ``disk`` (field: ``disks[N]``) on their own and against the VM's
    other disks; the host checks (template inside the roots, its chain, its format, other VMs
    writing to it) are infinivirt_disk's, run when the disk is made."""
    if disk.clone_from is None:
        for option in ("clone_mode", "size"):
            if getattr(disk, option) is not None:
                raise SpecError("%s.%s" % (field, option), "needs clone_from (it says how the disk is made)")
        return
    validate_abs_path(field + ".clone_from", disk.clone_from)
    if disk.clone_mode is not None and disk.clone_mode not in CLONE_MODES:
        raise SpecError(field + ".clone_mode", "must be one of %s, got %r" % (", ".join(CLONE_MODES), disk.clone_mode))
    if disk.size is not None:
        parse_size(disk.size, field + ".size")
    if disk.clone_from == disk.path:
        raise SpecError(field + ".clone_from", "must be another file than path")
    if disk.media == "cdrom":
        raise SpecError(field + ".clone_from", "is for hard disks; a cdrom is attached read-only as it is")
    if mode_of(disk) == "linked":
        if disk.format != "qcow2":
            raise SpecError(
                field + ".clone_mode",
                "linked needs format qcow2 (a raw disk has no backing file); use clone_mode: full",
            )
        for other in disks:
            if other.path == disk.clone_from and not other.readonly and other.media == "disk":
                raise SpecError(
                    field + ".clone_from",
                    "%s is a writable disk of this VM; a linked clone of it would break when the VM writes "
                    "to it: make it readonly, or use clone_mode: full" % disk.clone_from,
                )


def mode_of(disk: Any) -> str:
    return disk.clone_mode or DEFAULT_CLONE_MODE


def origin_of(disk: Any) -> Dict[str, Any]:
    return {option: getattr(disk, option) for option in ORIGIN_FIELDS}


def settle_origins(stored: Optional[Sequence[Any]], desired: Sequence[Any], name: str) -> Tuple[tuple, List[str]]:
    """``desired`` disks with the origin recorded for the disks the VM has already (a disk is
    made once, when it is added), new ones with their clone_mode filled in; and a warning per
    existing disk whose task asks for another origin."""
    recorded = {d.path: d for d in stored or ()}
    disks, warnings = [], []
    for index, disk in enumerate(desired):
        before = recorded.get(disk.path)
        if before is None:
            fill = disk.clone_from is not None and disk.clone_mode is None
            disks.append(dataclasses.replace(disk, clone_mode=DEFAULT_CLONE_MODE) if fill else disk)
            continue
        if disk.clone_from is not None and _differs(before, disk):
            warnings.append(
                "VM %s: disks[%d] (%s) exists, so clone_from, clone_mode and size are not used (a disk is "
                "made from a template only when it is first added); it stays as it is%s"
                % (name, index, disk.path, _made_from(before))
            )
        disks.append(dataclasses.replace(disk, **origin_of(before)))
    return tuple(disks), warnings


def _differs(before: Any, asked: Any) -> bool:
    if before.clone_from != asked.clone_from or mode_of(before) != mode_of(asked):
        return True
    if asked.size is None:
        return False
    return before.size is None or parse_size(before.size) != parse_size(asked.size)


def _made_from(disk: Any) -> str:
    if disk.clone_from is None:
        return ""
    return " (added with clone_from %s, clone_mode %s)" % (disk.clone_from, mode_of(disk))


def new_clones(stored: Optional[Sequence[Any]], desired: Sequence[Any]) -> List[Tuple[int, Any]]:
    """(index, disk) of the disks with clone_from that the VM does not have yet: the ones a
    task makes, when their path does not exist."""
    known = {d.path for d in stored or ()}
    return [(index, d) for index, d in enumerate(desired) if d.clone_from is not None and d.path not in known]


def disk_params(disk: Any) -> Dict[str, Any]:
    """infinivirt_disk's options that make ``disk`` from its template."""
    return {
        "path": disk.path,
        "state": "present",
        "format": disk.format,
        "clone_from": disk.clone_from,
        "clone_mode": mode_of(disk),
        "size": disk.size,
    }


def disk_field(index: int, error: SpecError) -> SpecError:
    """An error of infinivirt_disk's about the disk made for ``disks[index]``, naming the VM's
    option (``disks[N].clone_from``, ``disks[N].size``, ...)."""
    field = error.field if error.field in ORIGIN_FIELDS + ("path", "format", "preallocation") else "clone_from"
    return SpecError("disks[%d].%s" % (index, field), error.reason)
