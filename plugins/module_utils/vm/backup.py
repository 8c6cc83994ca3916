# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_backup does: backup points of a VM's disks in a directory, full or
incremental (persistent dirty bitmaps), kept by retention, deleted, and restored.

The points are described by a manifest in the backup directory, not by the store: a
backup must restore on another host, after the database or this host is lost, from the
directory alone (vm/model/backup.py). Order of writes: the manifest marks the point
pending; the point's files are written under ``<id>.part/``, fsynced and renamed to
``<id>/``; only then does the manifest list it. A run cut off anywhere leaves the listed
points whole; the next run removes the leftovers, and since the bitmap may have moved on
with the lost point, its incremental becomes a full one (and says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, QemuImg
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_name
from ansible_collections.infinivirt.core.plugins.module_utils.vm import backup_copy, backup_firmware, power
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import backup as model
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec, node_names
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import RUNNING, STOPPED

_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def read_manifest(vm_dir: str, vm: str) -> Dict[str, Any]:
    path = os.path.join(vm_dir, model.MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            return model.parse_manifest(handle.read(), path)
    except FileNotFoundError:
        return model.new_manifest(vm, "")


def write_manifest(vm_dir: str, manifest: Dict[str, Any]) -> None:
    """Replace the manifest by a rename of a fsynced temp file, then fsync the directory."""
    tmp = model.MANIFEST + ".tmp"
    with ConfinedDir(vm_dir, "target") as folder:
        with contextlib.suppress(FileNotFoundError):
            folder.unlink(tmp)
        with folder.open_file(tmp, _NEW_FILE, 0o600) as handle:
            data = model.dump_manifest(manifest).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(handle.fd, view) :]
            os.fsync(handle.fd)
        folder.rename(tmp, model.MANIFEST)
        folder.fsync()


def list_points(target: str, vm: str) -> List[Dict[str, Any]]:
    """The complete points of ``vm`` in ``target`` as results show them (no lock: the
    manifest is only ever replaced whole)."""
    manifest = read_manifest(os.path.join(model.check_target(target), validate_name(vm)), vm)
    return [model.public_point(p, manifest["points"]) for p in manifest["points"]]


class BackupService:
    """infinivirt_backup on top of a vm.engine.engine.Engine."""

    def __init__(self, engine):
        self.engine = engine
        self.store = engine.store

    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        vm = validate_name(params.get("vm"))
        state = model.check_state(params.get("state") or "present")
        target = model.check_target(params.get("target"))
        mode = model.check_mode_option(params.get("mode") or "auto")
        keep = model.check_keep(params.get("keep"))
        vm_dir = os.path.join(target, vm)
        if state == "restored":
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup_restore import restore

            return restore(self.engine, vm, vm_dir, params, check_mode)
        with self.store.vm_lock(vm, self.engine.lock_timeout), self.engine.sessions.one_session():
            if state == "absent":
                return self._absent(vm, vm_dir, params.get("point"), check_mode)
            rec = records.load(self.store, vm)
            if rec is None:
                raise SpecError("vm", "VM %s does not exist" % vm)
            if rec.host != self.engine.host_id:
                raise StateError("VM %s is owned by host %s; back it up there" % (vm, rec.host))
            return self._present(rec, target, vm_dir, mode, keep, check_mode)

    # -- present: a new point ----------------------------------------------------------------
    def _disks(self, rec, live: str) -> List[DiskSpec]:
        """The writable disks as QEMU has them: a running VM's as it was started (a disk
        added to the spec since may wait for a restart), a stopped VM's as the spec says."""
        spec = rec.running_spec if live != STOPPED and rec.running_spec is not None else rec.spec
        disks = [d for d in spec.disks if not d.readonly and d.media == "disk"]
        if not disks:
            raise SpecError("vm", "VM %s has no writable disk to back up" % rec.name)
        if self.store.list_layers(rec.uuid):
            raise SpecError(
                "vm", "VM %s has external snapshots; delete them (infinivirt_snapshot) before a backup" % rec.name
            )
        return disks

    def _present(self, rec, target: str, vm_dir: str, mode: str, keep, check_mode: bool) -> Dict[str, Any]:
        live = self.engine.sessions.live_state(rec)
        disks = self._disks(rec, live)
        if not check_mode:
            ensure_private_dir(target, "target")
            ensure_private_dir(vm_dir, "target")
        manifest = read_manifest(vm_dir, rec.name)
        cleaned = [] if check_mode else self._clean(rec, vm_dir, manifest, live)
        bitmaps = self._bitmaps(rec, disks, live)
        kind, why = model.choose_kind(
            mode, manifest, [{"disk_id": d.disk_id, "format": d.format} for d in disks], bitmaps
        )
        result: Dict[str, Any] = {"changed": True, "kind": kind, "fallback_reason": why, "cleaned": cleaned}
        if check_mode:
            drop = model.expired(manifest["points"] + [{"id": "new", "kind": kind}], keep)
            return dict(
                result, point=None, removed=[p["id"] for p in drop], consistency=None, points=self._shown(manifest)
            )
        manifest.update(vm=rec.name, uuid=rec.uuid, pending=model.point_id(time.time(), manifest["points"]))
        write_manifest(vm_dir, manifest)  # first: a run cut off from here on is seen by the next
        point = self._write_point(rec, vm_dir, manifest, disks, kind, bitmaps, live)
        manifest["points"].append(point)
        manifest["pending"] = None
        drop = model.expired(manifest["points"], keep)
        manifest["points"] = [p for p in manifest["points"] if p not in drop]
        write_manifest(vm_dir, manifest)  # the point counts from here on
        for old in drop:  # after the manifest: a run cut off here leaves only orphans
            _remove_tree(vm_dir, old["id"])
        return dict(
            result,
            point=model.public_point(point, manifest["points"]),
            removed=[p["id"] for p in drop],
            consistency=point["consistency"],
            points=self._shown(manifest),
        )

    @staticmethod
    def _shown(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
        return [model.public_point(p, manifest["points"]) for p in manifest["points"]]

    def _clean(self, rec, vm_dir: str, manifest: Dict[str, Any], live: str) -> List[str]:
        """What a backup cut off (module killed, QEMU killed, disk full) left: its QEMU jobs
        and nodes, its half-written ``.part`` directory, a renamed point the manifest never
        listed. Returns the names removed."""
        if live != STOPPED:
            with self.engine.sessions.session(rec) as qmp:
                backup_copy.settle_leftovers(qmp)
        listed = {p["id"] for p in manifest["points"]}
        removed = []
        for entry in sorted(os.listdir(vm_dir)):  # only names of ours: other files are left alone
            if model.is_point_name(entry) and (entry.endswith(model.PART_SUFFIX) or entry not in listed):
                _remove_tree(vm_dir, entry)
                removed.append(entry)
        return removed

    def _bitmaps(self, rec, disks: List[DiskSpec], live: str) -> Dict[str, Optional[str]]:
        qcow2 = [d for d in disks if d.format == "qcow2"]
        if live != STOPPED:
            nodes = {
                n["node-name"]: n for n in self.engine.sessions.qmp(rec, "query-named-block-nodes", {"flat": True})
            }
            return {d.disk_id: backup_copy.bitmap_state(nodes.get(node_names(d)[1], {})) for d in qcow2}
        return {d.disk_id: backup_copy.offline_bitmap_state(QemuImg().info(d.path, fmt="qcow2")) for d in qcow2}

    def _write_point(self, rec, vm_dir, manifest, disks, kind, bitmaps, live) -> Dict[str, Any]:
        """The point's files under ``<id>.part/``, copied, fsynced, renamed to ``<id>/``."""
        pid = manifest["pending"]
        parent = manifest["points"][-1] if kind == model.INCREMENTAL else None
        keys = power.disk_keys(self.engine, disks)
        with ConfinedDir(vm_dir, "target") as folder:
            folder.mkdir(pid + model.PART_SUFFIX)
        consistency = "offline" if live == STOPPED else "crash"
        try:
            with contextlib.ExitStack() as stack:
                part = stack.enter_context(ConfinedDir(os.path.join(vm_dir, pid + model.PART_SUFFIX), "target"))
                _write_json(part, model.DEFINITION, {"name": rec.name, "uuid": rec.uuid, "spec": rec.spec.to_dict()})
                fds = {}
                for disk in disks:
                    size = QemuImg().info(disk.path, fmt=disk.format)["virtual-size"]
                    created = stack.enter_context(part.open_file(disk.disk_id + ".qcow2", _NEW_FILE, 0o600))
                    backing = model.backing_name(parent, disk.disk_id)
                    image = FdImage(created.fd, os.path.join(part.path, created.name))
                    QemuImg().create(
                        image, "qcow2", size, backing=backing, backing_fmt="qcow2" if backing else None,
                        luks_key=keys.get(disk.disk_id),
                    )  # fmt: skip
                    fds[disk.disk_id] = created.fd
                if live == STOPPED:
                    self._copy_offline(rec, stack, disks, fds, keys, (kind, bitmaps))
                else:
                    consistency = self._copy_live(rec, stack, disks, fds, keys, (kind, bitmaps), live)
                firmware = backup_firmware.save(self.engine, rec, part)  # after the disks: as new
                sizes = {}
                for disk in disks:
                    os.fsync(fds[disk.disk_id])
                    sizes[disk.disk_id] = os.fstat(fds[disk.disk_id]).st_size
                part.fsync()
            with ConfinedDir(vm_dir, "target") as folder:
                folder.rename(pid + model.PART_SUFFIX, pid)
                folder.fsync()
        except BaseException:
            with contextlib.suppress(OSError):
                _remove_tree(vm_dir, pid + model.PART_SUFFIX)
            raise
        return {
            "id": pid,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": kind,
            "parent": parent["id"] if parent else None,
            "consistency": consistency,
            "firmware": firmware,
            "disks": [
                {
                    "disk_id": d.disk_id,
                    "path": d.path,
                    "serial": d.serial,
                    "format": d.format,
                    "encrypted": d.disk_id in keys,
                    "file": model.disk_file(pid, d.disk_id),
                    "size": sizes[d.disk_id],
                }
                for d in disks
            ],
        }

    def _copy_live(self, rec, stack, disks, fds, keys, plan, live: str) -> str:
        """Through the VM's QEMU; the guest's file systems frozen for the transaction when
        its agent answers. Returns the consistency: ``frozen`` or ``crash``."""
        state = {"frozen": False}

        @contextlib.contextmanager
        def frozen():
            if live != RUNNING:  # a paused guest's agent cannot answer
                yield
                return
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import frozen_filesystems

            with frozen_filesystems(self.engine.run_dir, rec) as count:
                state["frozen"] = count is not None
                yield

        with self.engine.sessions.session(rec) as qmp:
            names = backup_copy.fd_sets(qmp, stack, disks, fds)
            backup_copy.run_copy(qmp, disks, names, list(keys), *plan, frozen())
        return "frozen" if state["frozen"] else "crash"

    def _copy_offline(self, rec, stack, disks, fds, keys, plan) -> None:
        """Through a qemu-storage-daemon of our own on the closed images; every descriptor
        (images, point files, keys) is inherited, no name of a key is in argv."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd
        from ansible_collections.infinivirt.core.plugins.module_utils.qemu.storage_daemon import storage_daemon
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import secret_id

        pass_fds, objects, nodes = list(fds.values()), [], []
        for disk in disks:
            filename = disk.path
            if self.engine.resources.storage_roots:
                field = "disks[%d].path" % [d.path for d in rec.spec.disks].index(disk.path)
                fd = self.engine.resources.open_image(stack, disk, disk.path, field)[0]
                pass_fds.append(fd)
                filename = "/proc/self/fd/%d" % fd
            file_node, fmt_node = node_names(disk)
            node: Dict[str, Any] = {"driver": disk.format, "node-name": fmt_node, "file": file_node}
            if disk.disk_id in keys:
                key = stack.enter_context(secret_fd(keys[disk.disk_id]))
                pass_fds.append(key.fd)
                objects.append({"qom-type": "secret", "id": secret_id(disk), "format": "raw", "file": key.path})
                if disk.format == "qcow2":
                    node["encrypt"] = {"format": "luks", "key-secret": secret_id(disk)}
                else:
                    node.update(driver="luks", **{"key-secret": secret_id(disk)})
            nodes += [{"driver": "file", "filename": filename, "node-name": file_node}, node]
        ensure_private_dir(self.engine.run_dir, "run_dir")  # no VM may have started here yet
        socket = os.path.join(self.engine.run_dir, "bk-%s.qmp" % rec.uuid[:8])
        files = {d.disk_id: "/proc/self/fd/%d" % fds[d.disk_id] for d in disks}
        with storage_daemon(socket, rec.name, nodes, objects, pass_fds) as qmp:
            backup_copy.run_copy(qmp, disks, files, list(keys), *plan, contextlib.nullcontext())

    # -- absent ----------------------------------------------------------------------------
    def _absent(self, vm: str, vm_dir: str, point: Optional[str], check_mode: bool) -> Dict[str, Any]:
        """One point and the points that need it, or (no ``point``) every point of the VM."""
        manifest = read_manifest(vm_dir, vm)
        if point is None:
            drop = list(manifest["points"])
        else:
            drop = model.dependents(manifest["points"], model.check_point(point, manifest))
        result = {"changed": bool(drop), "removed": [p["id"] for p in drop], "kind": None, "point": None}
        if check_mode or not drop:
            return dict(result, points=self._shown(manifest), consistency=None, fallback_reason=None, cleaned=[])
        manifest["points"] = [p for p in manifest["points"] if p not in drop]
        write_manifest(vm_dir, manifest)
        for old in drop:
            _remove_tree(vm_dir, old["id"])
        return dict(result, points=self._shown(manifest), consistency=None, fallback_reason=None, cleaned=[])


def _write_json(folder: ConfinedDir, name: str, data: Any) -> None:
    with folder.open_file(name, _NEW_FILE, 0o600) as handle:
        with os.fdopen(os.dup(handle.fd), "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())


def _remove_tree(vm_dir: str, name: str) -> None:
    """A point's directory (or a leftover), never following a link out of ``vm_dir``."""
    path = os.path.join(vm_dir, name)
    if os.path.islink(path) or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    shutil.rmtree(path)
