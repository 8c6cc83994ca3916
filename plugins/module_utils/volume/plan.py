# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_disk does to an existing volume, decided without touching it (pure).

``plan_update`` takes what the store and qemu-img say of the volume (managed or not, its
``VolumeState``), what the host says around it (the VMs listing it, whether its backing file
is the one asked for) and the validated parameters (``Wanted``), and returns the ``Plan``:
adopt, convert, grow or shrink, with the predicted fields and warnings; or refuses with the
error the user sees. volume/service.py gathers the inputs and applies the plan.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import format_size


@dataclasses.dataclass
class VolumeState:
    """An existing image as qemu-img describes it."""

    format: str  # qcow2 | raw | another qemu format (an unmanaged file)
    driver: str  # the qemu driver (luks for an encrypted raw volume)
    virtual_size: int
    actual_size: Optional[int]
    encrypted: bool
    backing_file: Optional[str]
    backing_format: Optional[str]
    info: Dict[str, Any]

    @classmethod
    def from_info(cls, info: Dict[str, Any]) -> "VolumeState":
        driver = str(info.get("format") or "raw")
        return cls(
            format="raw" if driver in ("raw", "luks") else driver,
            driver=driver,
            virtual_size=int(info.get("virtual-size") or 0),
            actual_size=info.get("actual-size"),
            encrypted=bool(info.get("encrypted")) or driver == "luks",
            backing_file=info.get("full-backing-filename") or info.get("backing-filename"),
            backing_format=info.get("backing-filename-format"),
            info=info,
        )


@dataclasses.dataclass
class Wanted:
    """The validated parameters of a present volume."""

    format: Optional[str]
    size: Optional[int]
    backing_file: Optional[str]
    backing_format: Optional[str]
    preallocation: Optional[str]
    encrypt: Optional[bool]
    convert: bool
    force: bool


@dataclasses.dataclass
class Plan:
    actions: List[str] = dataclasses.field(default_factory=list)
    format: str = "qcow2"
    encrypted: bool = False
    size: Optional[int] = None
    backing_file: Optional[str] = None
    backing_format: Optional[str] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    # How a new volume is made from a source or template (volume/origin.py), in order.
    steps: List[str] = dataclasses.field(default_factory=list)


def check_metadata(preallocation: Optional[str], fmt: str, encrypted: bool) -> None:
    if preallocation == "metadata" and fmt == "raw" and not encrypted:
        raise SpecError(
            "preallocation",
            "metadata needs format qcow2 (or an encrypted raw volume); use off, falloc or full for a raw volume",
        )


def plan_update(
    path: str,
    wanted: Wanted,
    current: VolumeState,
    managed: bool,
    same_backing: bool,
    users: Sequence[str] = (),
) -> Plan:
    """The plan for the existing volume ``path``. ``managed``: the store has its row;
    ``same_backing``: its backing file is the file ``wanted.backing_file`` names;
    ``users``: the VMs whose definition lists it (needed only when the format changes)."""
    plan = Plan(
        format=current.format,
        encrypted=current.encrypted,
        size=current.virtual_size,
        backing_file=current.backing_file,
        backing_format=current.backing_format,
    )
    if not managed:
        if current.encrypted:
            raise SpecError(
                "path",
                "%s is an encrypted image that Infinivirt did not create: its key "
                "is unknown; remove it or use another path" % path,
            )
        plan.actions.append("adopt")
    _refuse_fixed(path, wanted, current, same_backing)
    target = wanted.format or current.format
    if target not in FORMATS:
        raise SpecError(
            "format",
            "%s is a %s image; set format (qcow2 or raw) with convert: true to convert it" % (path, current.format),
        )
    check_metadata(wanted.preallocation, target, current.encrypted)
    if target != current.format:
        _plan_convert(path, wanted, current, target, users, plan)
    if wanted.size is not None and wanted.size != current.virtual_size:
        _plan_size(path, wanted, current, plan)
    return plan


def _refuse_fixed(path: str, wanted: Wanted, current: VolumeState, same_backing: bool) -> None:
    """What cannot change on an existing volume: encryption, backing file and its format."""
    if wanted.encrypt is not None and wanted.encrypt != current.encrypted:
        raise SpecError(
            "encrypt",
            "cannot be changed on an existing volume: %s is %sencrypted; create a "
            "new volume and copy the data" % (path, "" if current.encrypted else "not "),
        )
    if wanted.backing_file is not None and not same_backing:
        raise SpecError(
            "backing_file",
            "cannot be changed on an existing volume: %s has %s"
            % (path, "backing file %s" % current.backing_file if current.backing_file else "no backing file"),
        )
    if (
        wanted.backing_format is not None
        and current.backing_format is not None
        and wanted.backing_format != current.backing_format
    ):
        raise SpecError(
            "backing_format",
            "cannot be changed on an existing volume: the backing file of %s is %s" % (path, current.backing_format),
        )


def _plan_convert(
    path: str, wanted: Wanted, current: VolumeState, target: str, users: Sequence[str], plan: Plan
) -> None:
    if not wanted.convert:
        raise SpecError(
            "format",
            "%s is a %s volume; changing it to %s needs convert: true (it is "
            "converted in place)" % (path, current.format, target),
        )
    if target == "raw" and wanted.backing_file is not None:
        raise SpecError(
            "backing_file",
            "a raw volume has no backing file; converting %s to raw copies the backing file's data into it" % path,
        )
    if users:
        raise StateError(
            "volume %s cannot be converted: VM %s lists it among its disks; remove it "
            "from the VM first" % (path, ", ".join(users))
        )
    plan.actions.append("convert")
    plan.format = target
    if current.backing_file:
        plan.warnings.append(
            "converting %s to %s copies the data of its backing file %s into it" % (path, target, current.backing_file)
        )
        plan.backing_file = plan.backing_format = None


def _plan_size(path: str, wanted: Wanted, current: VolumeState, plan: Plan) -> None:
    if wanted.size < current.virtual_size:
        if not wanted.force:
            raise SpecError(
                "size",
                "%s is smaller than the current size %s of %s; shrinking discards "
                "the data beyond the new end; set force: true to shrink"
                % (format_size(wanted.size), format_size(current.virtual_size), path),
            )
        plan.actions.append("shrink")
        plan.warnings.append(
            "%s shrunk from %s to %s: data beyond the new end is lost"
            % (path, format_size(current.virtual_size), format_size(wanted.size))
        )
    else:
        plan.actions.append("grow")
    plan.size = wanted.size
