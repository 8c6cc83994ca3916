# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Storage copied during a live migration (issue 23; docs/architecture.md "Migration",
"Storage copy"): both sides' work on the host and over QMP. The source writes a marker
beside each disk and tells the target each disk's facts; the target creates the disks it
does not share (journaled, so an abort removes them) and exports them over NBD; the source
mirrors each onto its export until every job is ready, migrates the RAM, then cancels the
ready jobs (its own disks stay as they are). Imported by a migration only; the pure part is
vm/model/storage_copy.py."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QmpError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import POLL_S, MigrationFailed
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import MIGRATED_DISK
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import storage_copy as model
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

CANCEL_WAIT_S = 30.0


# -- the source ---------------------------------------------------------------------------
def gather(engine, rec: VmRecord) -> List[model.DiskFacts]:
    """Each disk's facts, read on the source (qemu-img info -U: the running QEMU holds it)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import QemuImg

    img = QemuImg()
    layered = {layer["base_path"] for layer in engine.store.list_layers(rec.uuid)}
    facts = []
    for index, disk in enumerate(rec.spec.disks):
        field = "disks[%d].path" % index
        copyable = not disk.readonly and disk.media == "disk"
        info: Dict[str, Any] = {"format": disk.format}
        if copyable:
            try:
                info = img.info(disk.path, disk.format)
            except InfinivirtError as exc:
                raise MigrationFailed("VM %s: %s: %s" % (rec.name, field, exc)) from None
        volume = engine.store.get_volume(os.path.realpath(disk.path))
        encrypted = volume is not None and volume.encrypted
        facts.append(
            model.facts_from_info(field, disk.path, disk.disk_id, info, encrypted, disk.path in layered, copyable)
        )
    return facts


def write_markers(rec: VmRecord, facts: Sequence[model.DiskFacts]) -> Tuple[str, List[str]]:
    """A fresh token and its marker beside each disk (the target looks for it: same file)."""
    token = secrets.token_hex(16)
    made: List[str] = []
    try:
        for disk in (d for d in facts if d.copyable):  # a CD-ROM's directory may be read-only
            marker = os.path.join(os.path.dirname(disk.path), model.marker_name(token))
            if marker in made:
                continue
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            made.append(marker)
    except OSError as exc:
        remove_markers(made)
        raise MigrationFailed(
            "VM %s: cannot write the migration's marker beside %s: %s" % (rec.name, disk.path, exc.strerror or exc)
        ) from None
    return token, made


def remove_markers(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def mirror(
    qmp: Callable[..., Any],
    rec: VmRecord,
    facts: Sequence[model.DiskFacts],
    nbd: Tuple[str, int],
    disk_ids: Sequence[str],
    deadline: float,
    speed: int = 0,
    target_gone: Callable[[], Optional[str]] = lambda: None,
) -> int:
    """Mirror each copied disk onto the target's export until every job is ready (the
    target then follows every write); the bytes copied. ``target_gone``: why the target
    gave up, or None (a job throttled by ``speed`` sleeps off its last burst before it
    notices a dead NBD server: the target's monitor tells sooner). On failure the jobs and
    nodes go, the guest runs on its own disks as before, and MigrationFailed says why."""
    by_id = {disk.disk_id: disk for disk in facts}
    started: List[str] = []
    try:
        for disk_id in disk_ids:
            qmp(rec, "blockdev-add", model.nbd_node(disk_id, nbd[0], nbd[1]))
            started.append(disk_id)
            qmp(rec, "blockdev-mirror", model.mirror(by_id[disk_id], speed))
        while True:
            ready, error, copied = model.jobs_state(qmp(rec, "query-block-jobs"), disk_ids)
            if error is None:
                gone = target_gone()
                error = None if gone is None else "the storage copy stopped: %s" % gone
            if error is not None:
                raise MigrationFailed("VM %s: %s" % (rec.name, error))
            if ready:
                return copied
            if time.monotonic() > deadline:
                raise MigrationFailed(
                    "VM %s: the storage copy did not catch up within timeout (%d bytes copied); raise timeout"
                    % (rec.name, copied)
                )
            time.sleep(POLL_S)
    except (MigrationFailed, QmpError) as exc:
        drop(qmp, rec, started, force=True)
        if isinstance(exc, QmpError):
            raise MigrationFailed("VM %s: the storage copy failed: %s" % (rec.name, exc)) from None
        raise


def drop(qmp: Callable[..., Any], rec: VmRecord, disk_ids: Sequence[str], force: bool) -> int:
    """End the mirror jobs (``force``: at once; else a ready job first writes what is still
    dirty, and leaves the source's disk as it is) and remove their NBD nodes; the bytes
    copied. Best effort when forced (the target may be gone)."""
    copied = 0
    with contextlib.suppress(QmpError):
        jobs = {job.get("device"): job for job in qmp(rec, "query-block-jobs")}
        copied = sum(int(jobs.get(model.JOB_PREFIX + d, {}).get("offset") or 0) for d in disk_ids)
    for disk_id in disk_ids:
        try:
            qmp(rec, "block-job-cancel", {"device": model.JOB_PREFIX + disk_id, "force": force})
        except QmpError:
            pass  # no such job: it failed already, or never started
    until = time.monotonic() + CANCEL_WAIT_S
    names = {model.JOB_PREFIX + d for d in disk_ids}
    while time.monotonic() < until:
        try:
            left = [job for job in qmp(rec, "query-block-jobs") if job.get("device") in names]
        except QmpError:
            break
        if not left:
            break
        if not force and any(job.get("status") == "concluded" or job.get("error") for job in left):
            raise MigrationFailed("VM %s: the storage mirror failed at its end: %s" % (rec.name, left))
        time.sleep(POLL_S)
    for disk_id in disk_ids:
        with contextlib.suppress(QmpError):
            qmp(rec, "blockdev-del", {"node-name": model.JOB_PREFIX + disk_id})
    return copied


# -- the target ---------------------------------------------------------------------------
def plan(engine, options: Dict[str, Any]) -> Tuple[List[model.DiskFacts], Optional[str]]:
    """The disks this host copies, or why it cannot take the VM (naming the disk)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots

    token, storage = options.get("marker"), options.get("storage", "auto")
    copies = []
    for disk in (model.DiskFacts.from_dict(d) for d in options.get("disks") or ()):
        path = disk.path
        if engine.ctx.storage_roots:
            try:
                path = resolve_in_roots(path, engine.ctx.storage_roots, disk.field)
            except InfinivirtError as exc:
                return [], "storage %s: %s on host %s" % (storage, exc, engine.host_id)
        shared = bool(token) and os.path.exists(os.path.join(os.path.dirname(path), model.marker_name(token)))
        fate, why = model.decide(storage, disk, shared, os.path.lexists(path))
        if fate == "copy" and not engine.ctx.storage_roots:  # never a file anywhere the store names
            why = "%s (%s) would be copied, and host %s has no storage roots to copy it into" % (
                disk.field,
                disk.path,
                engine.host_id,
            )
        elif fate == "copy":
            backing_here = disk.backing is None or os.path.exists(disk.backing)
            why = model.copy_refusal(disk, backing_here)
            if why is None:
                copies.append(dataclasses.replace(disk, path=path))
        if why is not None:
            return [], "storage %s: %s on host %s" % (storage, why, engine.host_id)
    return copies, None


def create(engine, key: str, rec: VmRecord, copies: Sequence[model.DiskFacts]) -> None:
    """Each copied disk made empty here (same format and virtual size; a linked clone on the
    same backing file), journaled under ``key`` first: an abort removes it. Raises with the
    disks made so far removed."""
    from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, QemuImg

    made: List[str] = []
    try:
        for disk in copies:
            engine.store.journal_add(key, MIGRATED_DISK, disk.path)
            try:
                fd = os.open(disk.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError:
                engine.store.journal_remove(key, MIGRATED_DISK, disk.path)  # not ours: remove must not unlink it
                raise
            made.append(disk.path)
            try:
                image = FdImage(fd, disk.path)
                QemuImg().create(image, disk.format, disk.virtual_size, disk.backing, disk.backing_format)
            finally:
                os.close(fd)
    except (OSError, InfinivirtError) as exc:
        remove(engine, key, made)
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise MigrationFailed(
            "VM %s: cannot create a copied disk on %s: %s" % (rec.name, engine.host_id, why)
        ) from None


def remove(engine, key: str, paths: Sequence[str] = ()) -> None:
    """The disks this side made (``paths``, and those journaled under ``key``: also the ones
    of a monitor that restarted), and their journal entries."""
    for path in sorted({d for k, d in engine.store.journal_list(key) if k == MIGRATED_DISK} | set(paths)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        engine.store.journal_remove(key, MIGRATED_DISK, path)


def export(qmp: Callable[..., Any], rec: VmRecord, address: str, port: int, copies: Sequence[model.DiskFacts]) -> None:
    """The target QEMU (waiting for the stream) serves each copied disk, writable, over NBD."""
    qmp(rec, "nbd-server-start", model.nbd_server_start(address, port))
    for disk in copies:
        qmp(rec, "block-export-add", model.export_add(disk.disk_id))


def unexport(qmp: Callable[..., Any], rec: VmRecord) -> None:
    """Stop the NBD server (and its exports) before the guest runs here."""
    qmp(rec, "nbd-server-stop")
