# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The port of a VNC or SPICE display, claimed at start (SPICE has no "first free port" of its
own, and VNC's to=99 let QEMU bind whatever was free, which raced with a SPICE start's claim).
A claim (store/claims.py, kind ``display port``) is checked and taken in one serialized
transaction per host, so two VMs started at once never get the same port; a port something
else listens on is skipped, and one bound between the check and QEMU's bind() makes the
start try the next (Engine.start). The claim goes when the VM stops (Engine._mark_stopped)
or is removed."""

from __future__ import annotations

from typing import Collection

from ansible_collections.infinivirt.core.plugins.module_utils.errors import ClaimConflict, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.ports import port_free
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.display import DISPLAY_PORTS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

CLAIM_DISPLAY = "display port"


def claim(engine, rec: VmRecord, busy: Collection[int] = ()) -> int:
    """The VM's port: graphics.port when set, else the first free one of DISPLAY_PORTS that
    is not in ``busy`` (ports QEMU could not bind in this task's earlier try). A port inside
    the VM's netns is not probed here (it is not this namespace's)."""
    spec = rec.spec
    wanted = [spec.graphics_port] if spec.graphics_port is not None else list(DISPLAY_PORTS)
    others = {
        row["value"] for row in engine.store.list_host_claims(engine.host_id, CLAIM_DISPLAY) if row["owner"] != rec.uuid
    }
    for port in wanted:
        if port in busy or str(port) in others or (spec.netns is None and not port_free(spec.graphics_listen, port)):
            continue
        try:
            # a migration target (kept apart) claims its own port; the source keeps its claim
            engine.store.claim_host(
                engine.host_id,
                CLAIM_DISPLAY,
                rec.uuid,
                rec.name,
                {str(port): True},
                other_hosts_kept=rec.uuid in engine.resources.apart,
            )
        except ClaimConflict:
            continue  # another VM's start took it meanwhile
        return port
    if spec.graphics_port is not None:
        raise SpecError("graphics.port", "%d is in use on this host (another VM or program listens on it)" % port)
    raise SpecError("graphics.port", "no free display port from %d to %d" % (DISPLAY_PORTS[0], DISPLAY_PORTS[-1]))


def release(engine, rec: VmRecord) -> None:
    engine.store.release_host_claims(rec.uuid, CLAIM_DISPLAY)
