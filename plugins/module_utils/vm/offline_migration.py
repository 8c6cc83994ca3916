# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The source side of an offline migration with disks (issue 23; docs/architecture.md
"Migration", "Offline storage copy"): a stopped VM whose storage is not declared shared.
Under the VM's lock (the caller's): a request like a live one, flagged offline, with the
markers beside the disks; the target's monitor decides per disk (shared, copied or refused
by name) and serves the disks it made over NBD; this side copies them, moves the request
to ``sent``, and the target hands the row over (``done``). Any failure: aborted, the row
stays here, the target removes what it made."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import (
    ABORTED,
    DONE,
    LISTENING,
    REFUSED,
    REQUESTED,
    SENT,
    MigrationRequest,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

POLL_S = 0.1


def move(service, rec: VmRecord, req: MigrationRequest, plan: Dict[str, Any], warnings: List[str]) -> Dict[str, Any]:
    """Move the stopped VM ``rec`` to ``req.to`` with its disks; the module's result."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import _left_behind
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import decode_answer, mode

    engine, store = service.engine, service.store
    began = time.monotonic()
    deadline = began + req.timeout
    try:
        facts = storage_copy.gather(engine, rec)
        token, markers = storage_copy.write_markers(rec, facts)
    except MigrationFailed as exc:
        _fail(service, rec, None, str(exc))
    wanted = req.to_dict()
    req = dataclasses.replace(req, marker=token, disks=tuple(dataclasses.asdict(f) for f in facts), offline=True)
    try:
        store.open_handover(rec.uuid, rec.name, rec.host, req.to, req.to_dict())
        service._event(rec, "migration_started", {"to": req.to, "options": wanted, "how": "offline"})
        _uri, nbd, copied = decode_answer(_answer(service, rec, req, deadline))
    finally:
        storage_copy.remove_markers(markers)
    storage_bytes = 0
    if copied:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import offline_copy

        rate = req.bandwidth_mbit * 1_000_000 // 8 if req.bandwidth_mbit else 0
        try:
            storage_bytes = offline_copy.copy(rec, facts, nbd, copied, rate, deadline)
        except MigrationFailed as exc:
            _fail(service, rec, LISTENING, str(exc))
        service._event(rec, "migration_storage_ready", {"disks": copied, "bytes": storage_bytes})
    if not store.move_handover(rec.uuid, LISTENING, SENT):
        _fail(service, rec, None, _why(store, rec, req))
    if _outcome(store, rec, deadline) != DONE:
        _fail(service, rec, None, _why(store, rec, req))
    _leave(engine, rec)
    paths = [f.path for f in facts if f.disk_id in copied]
    result: Dict[str, Any] = {"duration_s": round(time.monotonic() - began, 3), "storage": mode(copied)}
    if copied:
        result.update(storage_bytes=storage_bytes, copied_disks=paths)
    service._event(rec, "migrated", dict(result, to=req.to, how="offline"))
    moved = records.load(store, rec.name)
    return {
        "changed": True,
        "vm": moved.summary(),
        "migration": result,
        "plan": plan,
        "warnings": warnings + _left_behind(rec, req.to, paths),
    }


def _answer(service, rec: VmRecord, req: MigrationRequest, deadline: float) -> str:
    """The target's answer once it serves the disks (or confirms it sees them)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import ANSWER_S

    until = min(deadline, time.monotonic() + ANSWER_S)
    while True:
        found = service.store.get_handover(rec.uuid) or {}
        if found.get("state") == LISTENING:
            return found["uri"]
        if found.get("state") == REFUSED:
            _fail(service, rec, None, "host %s refused: %s" % (req.to, found.get("error")))
        if time.monotonic() > until:
            _fail(
                service,
                rec,
                REQUESTED,
                "host %s did not answer the migration request in time: is infinivirt-monitor running "
                "there, with --migration-address?" % req.to,
            )
        time.sleep(POLL_S)


def _outcome(store, rec: VmRecord, deadline: float) -> str:
    """The target's decision after ``sent``; aborted here if it has not taken the VM by
    ``deadline`` (plus the answer's window: it only stops its daemon and writes the row)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import ANSWER_S

    while True:
        state = (store.get_handover(rec.uuid) or {}).get("state")
        if state in (DONE, REFUSED, ABORTED):
            return state
        if time.monotonic() > deadline + ANSWER_S and store.move_handover(rec.uuid, SENT, ABORTED, error="timeout"):
            return ABORTED
        time.sleep(POLL_S / 5)


def _why(store, rec: VmRecord, req: MigrationRequest) -> str:
    found = store.get_handover(rec.uuid) or {}
    return "host %s did not take it over: %s" % (req.to, found.get("error") or found.get("state"))


def _fail(service, rec: VmRecord, state, why: str) -> None:
    """Abort the request (``state`` -> aborted: the target removes what it made) and fail."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import MigrationError

    if state is not None:
        service.store.move_handover(rec.uuid, state, ABORTED, error=why)
    service._event(rec, "migration_failed", {"error": why, "how": "offline"})
    raise MigrationError("VM %s was not migrated and stays on %s: %s" % (rec.name, rec.host, why))


def _leave(engine, rec: VmRecord) -> None:
    """What this host kept of the stopped VM (NVRAM, seed ISOs), journaled under
    <uuid>@<this host> since the handover, is removed; its disk files stay (the warning)."""
    engine.resources.apart.add(rec.uuid)
    try:
        engine.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
    finally:
        engine.resources.apart.discard(rec.uuid)
