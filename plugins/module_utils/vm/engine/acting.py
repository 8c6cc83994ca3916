# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM engine of a task that changes VMs (infinivirt_vm, infinivirt_snapshot,
infinivirt_gpu, the host monitor): with the firewall hooks, so that a VM's nftables state
follows its TAPs. Apart from engine.py so that a reader (vm/info.py) ships no firewall."""

from __future__ import annotations

from typing import List

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import HostPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine


def acting_engine(ctx: HostContext, host_paths: HostPaths = HostPaths()) -> Engine:
    """Engine.of(ctx) with the FirewallService, made (and imported) when a VM's rules are
    first touched."""
    made: List[object] = []

    def firewall():
        if not made:
            from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService

            made.append(
                FirewallService(
                    ctx.store, ctx.host_id, records.firewall_directory(ctx.store), lock_timeout=ctx.lock_timeout
                )
            )
        return made[0]

    return Engine.of(ctx, host_paths, firewall)
