# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Restore of a backup point: each disk's chain (full point plus incrementals, joined by
relative backing file names) flattened by one ``qemu-img convert`` of its top into a new
file that nothing else may already hold (O_EXCL: never an existing file, never a volume in
use), and optionally a new VM defined from the definition saved with the point.

Only the backup directory is read, so a point restores on a host that never ran the VM."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, List

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir, resolve_in_roots
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, QemuImg
from ansible_collections.infinivirt.core.plugins.module_utils.vm import backup_firmware
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import backup as model

_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def restore(engine, vm: str, vm_dir: str, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import read_manifest

    if not os.path.isfile(os.path.join(vm_dir, model.MANIFEST)):
        raise SpecError("target", "%s holds no backup of VM %s" % (vm_dir, vm))
    manifest = read_manifest(vm_dir, vm)
    point = model.check_point(params.get("point") or "latest", manifest)
    restore_as = model.check_restore_as(params.get("restore_as"))
    if params.get("restore_dir") is None:
        raise SpecError("restore_dir", "is required with state=restored: the directory for the restored disks")
    restore_dir = model.check_target(params.get("restore_dir"), "restore_dir")
    if restore_as is not None and engine.store.get_vm(restore_as) is not None:
        raise SpecError("restore_as", "a VM named %s exists already; a restore never replaces a VM" % restore_as)
    outputs = {
        d["disk_id"]: os.path.join(restore_dir, "%s-%s.qcow2" % (restore_as or vm, d["disk_id"]))
        for d in point["disks"]
    }
    taken = [path for path in outputs.values() if os.path.lexists(path)]
    if taken:
        raise SpecError("restore_dir", "%s exists; a restore never overwrites a file (nothing was written)" % taken[0])
    result = {
        "changed": True,
        "point": model.public_point(point, manifest["points"]),
        "restored": [{"disk_id": k, "path": v} for k, v in outputs.items()],
        "vm": restore_as,
        "kind": None,
        "fallback_reason": None,
        "consistency": None,
    }
    if check_mode:
        return result
    if engine.resources.storage_roots:  # a restored VM's disks must lie inside them: checked first
        for out in outputs.values():
            resolve_in_roots(out, engine.resources.storage_roots, "restore_dir")
    os.makedirs(restore_dir, mode=0o700, exist_ok=True)
    made = _convert_all(engine, vm_dir, point, model.chain_to(manifest["points"], point), outputs)
    if restore_as is not None:
        try:
            _define(engine, vm_dir, point, restore_as, outputs)
        except BaseException:
            _unlink_all(restore_dir, made)  # no VM, so none of its disks either
            raise
    return result


def _convert_all(
    engine, vm_dir: str, point: Dict[str, Any], chain: List[Dict[str, Any]], outputs: Dict[str, str]
) -> List[str]:
    """Each disk's chain (``chain``: the points a restore of ``point`` reads, its full
    point first) flattened into a hidden temp file, fsynced, then linked to its name (a
    link never replaces an existing file) and the temp name dropped: a restore cut off
    leaves no file under the final name that looks whole. Returns the names made."""
    made: List[str] = []
    with ConfinedDir(os.path.dirname(next(iter(outputs.values()))), "restore_dir") as folder:
        try:
            for disk in point["disks"]:
                name = os.path.basename(outputs[disk["disk_id"]])
                tmp = "." + name + model.PART_SUFFIX
                with contextlib.suppress(FileNotFoundError):
                    folder.unlink(tmp)  # of a restore cut off: a name only a restore makes
                with folder.open_file(tmp, _NEW_FILE, 0o600) as created:
                    layers = [os.path.join(vm_dir, model.disk_file(p["id"], disk["disk_id"])) for p in reversed(chain)]
                    QemuImg().convert_chain(layers, FdImage(created.fd, created.path), luks_key=_key(engine, disk))
                    os.fsync(created.fd)
                try:
                    folder.link(tmp, name)
                except FileExistsError:
                    raise SpecError("restore_dir", "%s exists; a restore never overwrites a file" % name) from None
                finally:
                    folder.unlink(tmp)
                made.append(name)
            folder.fsync()
        except BaseException:
            _unlink_all(folder.path, made)
            raise
    return made


def _unlink_all(directory: str, names: List[str]) -> None:
    with ConfinedDir(directory, "restore_dir") as folder:
        for name in names:
            with contextlib.suppress(OSError):
                folder.unlink(name)


def _key(engine, disk: Dict[str, Any]):
    """An encrypted point's key: the one of the volume it was taken from (infinivirt_disk)."""
    if not disk.get("encrypted"):
        return None
    from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key

    key = read_luks_key(engine.store, engine.ctx.secret_box, disk["path"])
    if key is None:
        raise SpecError("point", "disk %s of this point is encrypted and its key is not in the database" % disk["path"])
    return key


def _define(engine, vm_dir: str, point: Dict[str, Any], name: str, outputs: Dict[str, str]) -> None:
    """A new, stopped VM from the saved definition, on the restored disks; NICs get new MAC
    addresses (the original may still run)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

    with open(os.path.join(vm_dir, point["id"], model.DEFINITION), encoding="utf-8") as handle:
        spec = json.load(handle)["spec"]
    by_path = {d["path"]: outputs[d["disk_id"]] for d in point["disks"]}
    params = model.restore_params(spec, name, by_path, list(vm_argument_spec()))
    VmService(engine.ctx).ensure(params, False)
    made = engine.store.get_vm(name)
    backup_firmware.restore(engine, os.path.join(vm_dir, point["id"]), point.get("firmware"), made)
