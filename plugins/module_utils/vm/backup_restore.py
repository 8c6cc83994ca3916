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
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir, ConfinedFile
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, QemuImg
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
    os.makedirs(restore_dir, mode=0o700, exist_ok=True)
    _convert_all(engine, vm_dir, point, model.chain_to(manifest["points"], point), outputs)
    if restore_as is not None:
        _define(engine, vm_dir, point, restore_as, outputs)
    return result


def _convert_all(
    engine, vm_dir: str, point: Dict[str, Any], chain: List[Dict[str, Any]], outputs: Dict[str, str]
) -> None:
    """``chain``: the points a restore of ``point`` reads, its full point first."""
    made: List[ConfinedFile] = []
    try:
        with contextlib.ExitStack() as stack:
            for disk in point["disks"]:
                out = outputs[disk["disk_id"]]
                folder = stack.enter_context(ConfinedDir(os.path.dirname(out), "restore_dir"))
                try:
                    created = stack.enter_context(folder.open_file(os.path.basename(out), _NEW_FILE, 0o600))
                except FileExistsError:
                    raise SpecError("restore_dir", "%s exists; a restore never overwrites a file" % out) from None
                made.append(created)
                layers = [os.path.join(vm_dir, model.disk_file(p["id"], disk["disk_id"])) for p in reversed(chain)]
                QemuImg().convert_chain(layers, FdImage(created.fd, out), luks_key=_key(engine, disk))
                os.fsync(created.fd)
    except BaseException:
        for created in made:  # ours only: nothing half-restored is left behind
            with contextlib.suppress(OSError):
                created.dir.unlink(created.name) if created.dir.fd >= 0 else os.unlink(created.path)
        raise


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
