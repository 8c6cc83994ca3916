# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The states a VM is asked for and found in, one vocabulary for options, rows and results."""

from __future__ import annotations

from typing import Optional

# What infinivirt_vm's state option takes.
STATES = ("present", "running", "stopped", "paused", "restarted", "absent")

# What a VM is found in (the row's status column, the result's status key).
ABSENT = "absent"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"
STARTING = "starting"  # recorded only between spawning QEMU and seeing it run
CRASHED = "crashed"  # recorded by the host monitor: QEMU died without a shutdown


def fold_status(qemu_status: Optional[str]) -> str:
    """Map QEMU's run state (None: no process) to the states users ask for."""
    if qemu_status is None:
        return STOPPED
    return RUNNING if qemu_status == "running" else PAUSED


def recorded_state(status: str) -> str:
    """The state a row's status stands for, when no process can be asked (another host's)."""
    return fold_status(None if status in (STOPPED, CRASHED) else status)
