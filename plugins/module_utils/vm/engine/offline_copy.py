# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disks of a stopped VM copied by an offline migration (issue 23; docs/architecture.md
"Migration", "Offline storage copy"). No QEMU runs on either side: the target serves the
disks it made (vm/engine/storage_copy.py ``create``) from a qemu-storage-daemon over NBD,
writable; the source writes each disk's guest-visible content onto its export with
``qemu-img convert -n``. Imported by an offline migration only."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import storage_copy as model
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord


# -- the source ---------------------------------------------------------------------------
def nbd_uri(host: str, port: int, disk_id: str) -> str:
    """qemu-img's name of one export of the target's daemon."""
    return "nbd://%s:%d/%s" % ("[%s]" % host if ":" in host else host, port, disk_id)


def copy_argv(disk: model.DiskFacts, uri: str, rate: int = 0) -> List[str]:
    """``qemu-img convert`` arguments of one disk onto its export (the format node there, so
    ``-O raw``: the guest's view is copied, the target keeps its own format). A disk without
    a backing file reads as zeroes where nothing was written, as the freshly made target
    does: ``--target-is-zero`` skips those areas. A linked clone's chain is read whole and
    zeroes are written (its unallocated areas on the target show the backing file's data)."""
    args = ["convert", "-q", "-n", "-f", disk.format, "-O", "raw"]
    if disk.backing is None:
        args.append("--target-is-zero")
    if rate:
        args += ["-r", str(int(rate))]
    return args + [disk.path, uri]


def copy(
    rec: VmRecord,
    facts: Sequence[model.DiskFacts],
    nbd: Tuple[str, int],
    disk_ids: Sequence[str],
    rate: int,
    deadline: float,
) -> int:
    """Each copied disk written onto the target's export; the bytes of data copied (the
    allocated areas, as ``qemu-img map`` counts them). MigrationFailed names the disk."""
    from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import QemuImg

    img = QemuImg()
    by_id = {disk.disk_id: disk for disk in facts}
    copied = 0
    for disk_id in disk_ids:
        disk = by_id[disk_id]
        left = deadline - time.monotonic()
        if left <= 0:
            raise MigrationFailed("VM %s: the storage copy did not finish within timeout; raise timeout" % rec.name)
        try:
            img.run_args(copy_argv(disk, nbd_uri(nbd[0], nbd[1], disk_id), rate), "copying %s" % disk.path, left)
            copied += data_bytes(img, disk)
        except InfinivirtError as exc:
            raise MigrationFailed("VM %s: %s: the storage copy failed: %s" % (rec.name, disk.field, exc)) from None
    return copied


def data_bytes(img: Any, disk: model.DiskFacts) -> int:
    """The bytes of a disk that hold data (zero and unallocated areas are not copied)."""
    import json

    extents = json.loads(img.run_args(["map", "--output=json", "-f", disk.format, disk.path], "mapping", 60))
    return sum(int(e["length"]) for e in extents if e.get("data") and not e.get("zero"))


# -- the target ---------------------------------------------------------------------------
def blockdev(disk: model.DiskFacts) -> Dict[str, Any]:
    """The daemon's format node of a disk the target made (``n-<disk_id>``: export_add's)."""
    return {
        "driver": disk.format,
        "node-name": "n-" + disk.disk_id,
        "file": {"driver": "file", "filename": disk.path},
    }


class Exports:
    """A qemu-storage-daemon serving the copied disks, writable, over NBD on ``address``;
    it lives across the monitor's rounds (until ``close``) and dies with the monitor."""

    def __init__(self, socket_path: str, name: str):
        self.socket_path = socket_path
        self.name = name
        self.stack = contextlib.ExitStack()
        self.qmp: Optional[Any] = None

    def start(self, address: str, port: int, copies: Sequence[model.DiskFacts]) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.qemu.storage_daemon import storage_daemon

        try:
            self.qmp = self.stack.enter_context(
                storage_daemon(self.socket_path, self.name, [blockdev(d) for d in copies])
            )
            self.qmp.execute("nbd-server-start", model.nbd_server_start(address, port))
            for disk in copies:
                self.qmp.execute("block-export-add", model.export_add(disk.disk_id))
        except InfinivirtError:
            self.close()
            raise

    def alive(self) -> bool:
        """Whether the daemon still answers (killed: the copy failed)."""
        if self.qmp is None:
            return False
        try:
            self.qmp.execute("query-block-exports")
            return True
        except (InfinivirtError, OSError):
            return False

    def close(self) -> None:
        """Stop the daemon (it flushes and closes the images); best effort."""
        self.qmp = None
        with contextlib.suppress(InfinivirtError, OSError):
            self.stack.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
