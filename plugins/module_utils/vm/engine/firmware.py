# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""UEFI firmware (OVMF) for a VM: the code image, and the VM's own NVRAM (variable store),
copied from a template once and kept across stops and restarts until the VM is removed."""

from __future__ import annotations

import os
import shutil
from typing import Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError

OVMF_DIR = "/usr/share/OVMF"
# (code, variables template), as Debian's ovmf package names them.
OVMF_PLAIN = ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
OVMF_SECURE = ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")  # Microsoft keys enrolled


def firmware_files(secure_boot: bool, code_override: Optional[str] = None, ovmf_dir: str = OVMF_DIR) -> Tuple[str, str]:
    code_name, vars_name = OVMF_SECURE if secure_boot else OVMF_PLAIN
    code = code_override or os.path.join(ovmf_dir, code_name)
    template = os.path.join(ovmf_dir, vars_name)
    for path in (code, template):
        if not os.path.isfile(path):
            raise QemuError("UEFI firmware file %s is missing; install the ovmf package (or set uefi_firmware)" % path)
    return code, template


def ensure_nvram(path: str, template: str) -> bool:
    """Give the VM its own variable store; returns whether it was created now."""
    if os.path.exists(path):
        return False
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    shutil.copyfile(template, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return True
