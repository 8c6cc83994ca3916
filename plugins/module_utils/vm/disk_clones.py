# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The disks an infinivirt_vm task makes from templates (vm/model/clones.py says which), made
by infinivirt_disk's own ``DiskService``: the same checks (template and backing chain inside
the storage roots, not encrypted, not a writable disk of a VM for a linked clone), the same
files and the same volume rows as an infinivirt_disk task with ``clone_from``.

Imported only by a task that has a disk to clone."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Dict, List, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.clones import disk_field, disk_params, mode_of
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

CLONE_DISKS = "clone_disks"  # the plan's action (first: the row never names a disk not made yet)


@dataclasses.dataclass(frozen=True)
class Clone:
    """A disk this task makes: ``disks[index]`` and infinivirt_disk's predicted volume."""

    index: int
    disk: DiskSpec
    volume: Dict[str, Any]

    def summary(self) -> Dict[str, Any]:
        """An entry of the result's ``plan.disk_clones``."""
        return {
            "disk": "disks[%d]" % self.index,
            "path": self.disk.path,
            "clone_from": self.disk.clone_from,
            "clone_mode": mode_of(self.disk),
            "size": self.volume.get("virtual_size"),
            "backing_file": self.volume.get("backing_file"),
        }


class DiskCloner:
    """Plans (check mode: infinivirt_disk's own check run), makes and, when the task fails
    before the VM keeps them, removes the disks of a VM cloned from templates."""

    def __init__(self, ctx: HostContext):
        self.ctx = ctx
        self.disks = DiskService(
            ctx.store, ctx.secret_box, ctx.host_id, ctx.storage_roots or [], lock_timeout=ctx.lock_timeout
        )

    def plan(self, orders: Sequence[Tuple[int, DiskSpec]]) -> List[Clone]:
        """The disks of ``orders`` whose path does not exist, each checked as infinivirt_disk
        checks a clone (nothing is written). A disk whose path exists is used as it is."""
        clones = []
        for index, disk in orders:
            if not self.ctx.storage_roots:
                raise SpecError(
                    "disks[%d].clone_from" % index,
                    "needs storage_roots: a template and the disks cloned from it must lie inside them",
                )
            if os.path.lexists(disk.path):
                continue
            clones.append(Clone(index, disk, self._ensure(index, disk, check_mode=True)["volume"]))
        return clones

    def make(self, clones: Sequence[Clone]) -> List[str]:
        """Make the planned disks in order; returns the paths made. If one fails, the ones
        made before it are removed again."""
        made: List[str] = []
        try:
            for clone in clones:
                if self._ensure(clone.index, clone.disk, check_mode=False)["changed"]:
                    made.append(clone.disk.path)
        except BaseException:
            self.remove(made)
            raise
        return made

    def remove(self, paths: Sequence[str]) -> None:
        """Remove disks this task made (file and volume row), once no VM row lists them."""
        for path in reversed(paths):
            with contextlib.suppress(InfinivirtError, OSError):
                self.disks.ensure({"path": path, "state": "absent"}, False)

    def _ensure(self, index: int, disk: DiskSpec, check_mode: bool) -> Dict[str, Any]:
        try:
            return self.disks.ensure(disk_params(disk), check_mode)
        except SpecError as exc:
            raise disk_field(index, exc) from None
