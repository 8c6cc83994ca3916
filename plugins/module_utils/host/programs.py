# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Finding the host programs Infinivirt runs (nft, dnsmasq), and running nft."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil

# Ansible may run modules with a PATH that lacks the sbin directories, where both live.
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
NFT_TIMEOUT = 60.0


class ProgramError(InfinivirtError):
    """A host program is missing, could not be run, or did not answer in time."""


def find_program(name: str) -> Optional[str]:
    """The program's path; sbin directories count even when PATH lacks them."""
    return shutil.which(name, path="%s:%s" % (os.environ.get("PATH", ""), SBIN_PATH))


def nft_program() -> str:
    path = find_program("nft")
    if path is None:
        raise ProgramError(
            "nftables is needed: the program nft is not installed on this host (Debian/Ubuntu: apt install nftables)"
        )
    return path


def run_nft(
    args: List[str], netns: Optional[str], stdin: Optional[str] = None, timeout: float = NFT_TIMEOUT
) -> "subprocess.CompletedProcess[str]":
    """``nft`` with these arguments inside namespace ``netns``; the caller reads returncode."""
    binary = nft_program()
    try:
        return nsutil.run([binary] + args, netns, stdin=stdin, timeout=timeout)
    except OSError as exc:
        raise ProgramError("cannot run %s: %s" % (binary, exc)) from None
    except subprocess.TimeoutExpired:
        raise ProgramError("nft did not answer within %g s" % timeout) from None
