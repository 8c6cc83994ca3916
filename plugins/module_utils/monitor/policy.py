# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the host monitor makes of QEMU's events, and what it does about a VM whose QEMU is
gone. Pure: no host, no store."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

# QEMU events worth keeping in the VM's event log (QMP names).
RECORDED = (
    "SHUTDOWN",
    "POWERDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "SUSPEND",
    "WAKEUP",
    "GUEST_PANICKED",
    "GUEST_CRASHLOADED",
    "BLOCK_IO_ERROR",
    "DEVICE_DELETED",
    "BALLOON_CHANGE",
    "WATCHDOG",  # the guest's watchdog expired; data.action says what QEMU did
)

# How a QEMU ended.
POWEROFF = "poweroff"  # the guest powered itself off (or answered a power button)
HOST_SHUTDOWN = "host-shutdown"  # ended from the host: QMP quit, a signal (a task's stop)
CRASH = "crash"  # gone without a shutdown (killed, QEMU crashed), or after a guest panic


def log_entry(message: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The event-log entry (kind, detail) of a QMP event message, None if not kept."""
    name = message.get("event")
    if name not in RECORDED:
        return None
    return {"kind": str(name).lower(), "detail": dict(message.get("data") or {})}


def ending(events: Sequence[Mapping[str, Any]]) -> str:
    """How a QEMU ended, from the events it sent before its monitor closed."""
    panicked = False
    for message in events:
        name = message.get("event")
        if name in ("GUEST_PANICKED", "GUEST_CRASHLOADED"):
            panicked = True
        elif name == "SHUTDOWN" and not panicked:
            data = message.get("data") or {}
            return POWEROFF if data.get("guest") else HOST_SHUTDOWN
    return CRASH


@dataclasses.dataclass(frozen=True)
class Response:
    """What to do: the row's status after cleanup, and whether to start the VM again."""

    status: str  # stopped | crashed
    restart: bool
    reason: str


def respond(how: str, on_crash: str, on_poweroff: str) -> Response:
    """The policy table for a VM whose QEMU is gone (its row still says it runs)."""
    if how == POWEROFF:
        return Response("stopped", on_poweroff == "restart", "the guest powered off")
    if how == HOST_SHUTDOWN:
        return Response("stopped", False, "QEMU was shut down from the host")
    return Response("crashed", on_crash == "restart", "QEMU ended without a shutdown")


def autostart_order(vms: List[Any]) -> List[Any]:
    """Autostart VMs (records), in the order they start: autostart_order, then name."""
    chosen = [vm for vm in vms if vm.spec.autostart]
    return sorted(chosen, key=lambda vm: (vm.spec.autostart_order, vm.name))
