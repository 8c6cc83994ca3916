# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding the host programs Infinivirt runs (nft, dnsmasq)."""

from __future__ import annotations

import os
import shutil
from typing import Optional

# Ansible may run modules with a PATH that lacks the sbin directories, where both live.
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def find_program(name: str) -> Optional[str]:
    """The program's path; sbin directories count even when PATH lacks them."""
    return shutil.which(name, path="%s:%s" % (os.environ.get("PATH", ""), SBIN_PATH))
