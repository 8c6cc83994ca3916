# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM as the store keeps it: its spec and what its running process was started with (the
store reads and writes these rows; the backend does not show through)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.vm.spec import VmSpec


@dataclasses.dataclass
class VmRecord:
    uuid: str
    name: str
    host: str
    status: str  # what the last operation left: stopped, running, paused
    spec: VmSpec
    version: int = 1
    qemu_pid: Optional[int] = None
    qemu_started: Optional[int] = None  # the PID's start time (host/liveness.py): PIDs are reused
    qmp_socket_path: Optional[str] = None
    serial_log_path: Optional[str] = None
    running_spec: Optional[VmSpec] = None  # the spec the live process was started with
    launch_accel: Optional[str] = None  # accelerator and -cpu the live process really got
    launch_cpu: Optional[str] = None
    pidfile_path: Optional[str] = None
    launch_graphics_port: Optional[int] = None
    created_at: str = ""
    updated_at: str = ""

    def summary(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "host": self.host,
            "status": self.status,
            "version": self.version,
        }
