# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the firewall needs to know of a VM, as the firewall's own values.

The VM side builds them (vm/model/nics.py ``ports``, vm/model/record.py ``firewall_vm``) and
hands them in, so the firewall package imports nothing of the VM model (vm/ may import
firewall/, never the reverse; tests/lint/test_layers.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Port:
    """One NIC as the host sees it: what the firewall filters on."""

    tap: str
    mac: str
    ips: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FirewallVm:
    """A VM as the firewall sees it: where it runs and its NICs' ports while it runs."""

    uuid: str
    name: str
    host: str
    department: Optional[str]
    running: bool  # QEMU was started (the row has a running spec)
    netns: Optional[str]  # the namespace of its TAPs (the running one while it runs)
    ports: Tuple[Port, ...] = ()  # empty unless it runs


class VmDirectory:
    """How the firewall reads VMs: by name, or those of one host. The VM side supplies both
    (vm/engine/records.py ``firewall_directory``)."""

    def __init__(
        self, by_name: Callable[[str], Optional[FirewallVm]], on_host: Callable[[str], List[FirewallVm]]
    ) -> None:
        self.by_name, self.on_host = by_name, on_host
