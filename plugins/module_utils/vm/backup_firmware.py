# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM's firmware state in a backup point: its UEFI variable store (NVRAM) and its TPM's
state directory, which live next to each other in ``nvram_dir`` and outlive the process as
the disks do. Without them a restored VM boots with new Secure Boot variables and an empty
TPM: BitLocker and measured-boot secrets sealed to the old one are gone. Copied as files (of
a running VM: as a crash would leave them), and put in place for a VM made by ``restore_as``,
journaled so that removing that VM removes them."""

from __future__ import annotations

import os
import shutil
from typing import Any, List

from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.platform import copy_state
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import TPM_STATE, tpm_state_dir

NVRAM_FILE = "nvram.fd"  # in the point's directory
TPM_DIR = "tpm"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def save(engine, rec, part: ConfinedDir) -> List[str]:
    """Copy what the VM has of NVRAM and TPM state into the point; returns which."""
    saved = []
    nvram = engine.resources.nvram_path(rec)
    if os.path.isfile(nvram):
        _copy_into(part, nvram, NVRAM_FILE)
        saved.append("nvram")
    tpm = tpm_state_dir(engine.resources.nvram_dir, rec.uuid)
    if os.path.isdir(tpm):
        part.mkdir(TPM_DIR)
        with ConfinedDir(os.path.join(part.path, TPM_DIR), "target") as folder:
            for name in sorted(os.listdir(tpm)):
                source = os.path.join(tpm, name)
                if os.path.isfile(source) and not os.path.islink(source) and not name.endswith(".lock"):
                    _copy_into(folder, source, name)
            folder.fsync()
        saved.append("tpm")
    return saved


def restore(engine, point_dir: str, saved: Any, rec) -> List[str]:
    """Put the point's NVRAM and TPM state in place for the new VM ``rec``, journaled."""
    placed = []
    if "nvram" in (saved or ()):
        target = engine.resources.nvram_path(rec)
        engine.store.journal_add(rec.uuid, "nvram", target)  # removed with the VM
        _copy_new(os.path.join(point_dir, NVRAM_FILE), target)
        placed.append("nvram")
    if "tpm" in (saved or ()):
        target = tpm_state_dir(engine.resources.nvram_dir, rec.uuid)
        engine.store.journal_add(rec.uuid, TPM_STATE, target)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        os.mkdir(target, 0o700)
        copy_state(os.path.join(point_dir, TPM_DIR), target)  # as a snapshot's revert does
        placed.append("tpm")
    return placed


def _copy_into(folder: ConfinedDir, source: str, name: str) -> None:
    with open(source, "rb") as src, folder.open_file(name, _NEW_FILE, 0o600) as dst:
        with os.fdopen(os.dup(dst.fd), "wb") as out:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())


def _copy_new(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    fd = os.open(target, _NEW_FILE, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out)
