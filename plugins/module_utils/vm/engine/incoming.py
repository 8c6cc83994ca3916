# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target half of a live migration over QMP (issue 23; docs/architecture.md
"Migration"): a QEMU started paused with ``-incoming defer`` is told where to listen, and
once the stream is in, the guest is let run here and seen running. Imported by a migration
only."""

from __future__ import annotations

import time
from typing import Any, Callable

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QmpError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import POLL_S, MigrationFailed
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import MigrationRequest
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

WAITING = "inmigrate"  # QEMU's run state while it waits for, or reads, the stream


def listen(qmp: Callable[..., Any], rec: VmRecord, req: MigrationRequest, uri: str) -> None:
    """Start listening on ``uri`` (``tcp:<address>:<port>``); post-copy must be on at both ends."""
    status = qmp(rec, "query-status").get("status")
    if status != WAITING:
        raise MigrationFailed("VM %s: the target QEMU is %s, not waiting for a migration" % (rec.name, status))
    listen_on(qmp, rec, uri, req.postcopy)


def listen_on(qmp: Callable[..., Any], rec: VmRecord, uri: str, postcopy: bool) -> None:
    """``migrate-incoming`` on ``uri`` of a QEMU known to wait (``inmigrate``)."""
    if postcopy:
        qmp(rec, "migrate-set-capabilities", {"capabilities": [{"capability": "postcopy-ram", "state": True}]})
    qmp(rec, "migrate-incoming", {"uri": uri})


def take_over(
    qmp: Callable[..., Any], rec: VmRecord, deadline: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """After the source says the stream completed: wait for QEMU to have read it all, let the
    guest run (QEMU was started with -S, so it waits paused) and check that it runs. A stream
    that failed ends the target QEMU: that is a MigrationFailed too."""
    try:
        status = qmp(rec, "query-status").get("status")
        while status == WAITING and clock() < deadline:
            time.sleep(POLL_S)
            status = qmp(rec, "query-status").get("status")
        if status == "paused":
            qmp(rec, "cont")
            status = qmp(rec, "query-status").get("status")
    except QmpError as exc:
        raise MigrationFailed("VM %s: the target QEMU did not take the guest over: %s" % (rec.name, exc)) from None
    if status != "running":
        raise MigrationFailed("VM %s: the target QEMU did not take the guest over (status %s)" % (rec.name, status))
