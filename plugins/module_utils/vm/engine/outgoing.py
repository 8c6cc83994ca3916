# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The source half of a live migration over QMP (issue 23; docs/architecture.md
"Migration"): send the VM's state to a listening target QEMU with the capabilities and
parameters the request asks, follow ``query-migrate`` until it completes, fails or runs out
of time, and on any failure leave the source QEMU as it was: cancelled, and running again if
the stream had already paused it. Imported by a migration only."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QemuError, QmpError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import (
    MigrationRequest,
    capabilities,
    outcome,
    parameters,
    postcopy_due,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

POLL_S = 0.05  # query-migrate is cheap; the guest is paused while we wait to see "completed"
CANCEL_WAIT_S = 10.0
ENDED = ("completed", "failed", "cancelled")


class MigrationFailed(QemuError):
    """The stream did not complete; the source runs as before."""


class PostcopyFailed(MigrationFailed):
    """The stream failed after the post-copy switch: the guest's RAM is split between the
    two QEMUs, so the source cannot run it again; its QEMU is left as QEMU left it."""


def send(
    qmp: Callable[..., Any],
    rec: VmRecord,
    req: MigrationRequest,
    uri: str,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    switched_over: Callable[[], None] = lambda: None,
) -> Dict[str, Any]:
    """Migrate ``rec``'s QEMU (``qmp``: engine.sessions.qmp) to ``uri``; when it completes,
    the source guest is paused (QEMU's ``postmigrate``) and the result's numbers are
    returned. ``deadline`` is a ``clock()`` time. Raises MigrationFailed, after ``recover``.
    With ``req.postcopy``, ``migrate-start-postcopy`` after the first pass; once QEMU is
    ``postcopy-active`` (the source guest paused for good) ``switched_over()`` runs (the
    storage mirrors end there), and a failure from then on is PostcopyFailed."""
    began = clock()
    was_running = qmp(rec, "query-status").get("status") == "running"
    switched = over = False
    try:
        qmp(rec, "migrate-set-capabilities", {"capabilities": capabilities(req)})
        qmp(rec, "migrate-set-parameters", parameters(req))
        qmp(rec, "migrate", {"uri": uri})
        while True:
            reply = qmp(rec, "query-migrate")
            status = reply.get("status")
            if status == "completed":
                if switched and not over:  # completed before we saw postcopy-active
                    over = True
                    switched_over()
                return dict(outcome(reply), duration_s=round(clock() - began, 3), postcopy_switched=switched)
            if req.postcopy and not switched and postcopy_due(reply):
                qmp(rec, "migrate-start-postcopy")  # the guest runs on the target from now on
                switched = True
            if status == "postcopy-active" and not over:
                over = True
                switched_over()
            if status in ("failed", "cancelled", "postcopy-paused"):
                raise MigrationFailed(
                    "VM %s: the migration to %s %s: %s" % (rec.name, uri, status, reply.get("error-desc", "no reason"))
                )
            if clock() > deadline and not switched:  # after the switch only QEMU can tell a failure
                raise MigrationFailed(
                    "VM %s: the migration to %s did not complete within timeout (status %s, %d bytes sent); "
                    "raise timeout or bandwidth_mbit, or set auto_converge"
                    % (rec.name, uri, status, int((reply.get("ram") or {}).get("transferred", 0)))
                )
            time.sleep(POLL_S)
    except (MigrationFailed, QmpError, InfinivirtError) as exc:
        if switched:  # nothing to go back to: the target has run the guest on part of its RAM
            raise PostcopyFailed(
                "VM %s: the migration failed after the post-copy switch (%s): the guest's memory is split "
                "between this host and the target, so it cannot run again here; its QEMU is left paused "
                "for inspection, and the guest must be started again (its disks hold what it last wrote)"
                % (rec.name, exc)
            ) from None
        recover(qmp, rec, was_running, clock)
        raise


def recover(
    qmp: Callable[..., Any], rec: VmRecord, was_running: bool = True, clock: Callable[[], float] = time.monotonic
) -> None:
    """Stop an unfinished stream and, if the guest ran before, let it run again where the
    stream paused it (also a completed stream the target did not take over: QEMU's
    ``postmigrate``; ``cont`` takes the disks back from the target)."""
    qmp(rec, "migrate_cancel")
    until = clock() + CANCEL_WAIT_S
    while qmp(rec, "query-migrate").get("status") not in ENDED + (None,) and clock() < until:
        time.sleep(POLL_S)
    if was_running and qmp(rec, "query-status").get("status") != "running":
        qmp(rec, "cont")
