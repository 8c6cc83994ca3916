# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Find the processes a test started (QEMU, dnsmasq), by an argument only they carry."""

from __future__ import annotations

import os
import signal
from typing import List


def qemu_processes(marker: str) -> List[int]:
    """PIDs of live processes with an argument that is (or contains) ``marker``: a VM's
    UUID, or a test's private run dir."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                args = fh.read().split(b"\0")
            with open("/proc/%s/stat" % entry) as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(marker.encode() in arg for arg in args):
            found.append(int(entry))
    return found


def kill_leftovers(private_dir: str) -> List[int]:
    """SIGKILL QEMUs still using a test's private dir (none should be) and name them."""
    leaked = qemu_processes(private_dir)
    for pid in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leaked
