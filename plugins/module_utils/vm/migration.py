# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``infinivirt_migrate``: the source side of a live migration (issue 23; docs/architecture.md
"Migration"). Under the VM's lock, held to the end: a request in the store for the target
host's monitor (monitor/receiving.py), the stream sent when it listens
(vm/engine/outgoing.py), and once the target runs the guest and the row names it, this
host's QEMU, files, TAPs and rules removed. Any failure before the target takes the guest
over leaves the guest running here as before (the target cleans up what it made). A task
cut off half-way leaves its request in the store: the next one on the VM finishes it
(``settle``)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.clock import event_time
from ansible_collections.infinivirt.core.plugins.module_utils.errors import QmpError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import (
    ABORTED,
    DONE,
    FINAL,
    LISTENING,
    REFUSED,
    REQUESTED,
    SENT,
    TAKING,
    MigrationRequest,
    validate_request,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

ANSWER_S = 30.0  # how long the target's monitor may take to answer (it polls every 0.5 s)
WAIT_POLL_S = 0.02  # the guest is paused while the source waits for the target's "done"


class MigrationError(StateError):
    """The migration did not happen; ``result`` (the module's) says where things stand."""

    def __init__(self, message: str, result: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.result = result or {}


POSTCOPY_SWITCHED = "migration_postcopy_switched"  # the source guest cannot run here again


class MigrationService:
    """Migrations from this host (``engine.host_id``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.store = engine.store

    def migrate(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        req = validate_request(params, self.engine.host_id)
        with self.store.vm_lock(req.name, self.engine.lock_timeout):
            rec = records.load(self.store, req.name)
            if rec is None:
                raise StateError("VM %s does not exist" % req.name)
            self.settle(rec)
            rec = records.load(self.store, req.name)
            if rec.host == req.to:
                return {"changed": False, "vm": rec.summary(), "plan": _plan(req, rec, "none")}
            if rec.host != self.engine.host_id:
                raise StateError(
                    "VM %s runs on host %s, not on %s: run the task there" % (rec.name, rec.host, self.engine.host_id)
                )
            if self.engine.sessions.query_status(rec) is None:
                return self._offline(rec, req, check_mode)
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.device_handover import check_source

            check_source(self.engine, rec, check_mode)  # shared_dirs refused; the running spec says what runs
            if check_mode:
                return {"changed": True, "vm": rec.summary(), "plan": _plan(req, rec, "live")}
            with self.engine.sessions.one_session():
                return self._migrate(rec, req)

    # -- the handover, as the source -------------------------------------------------------
    def _migrate(self, rec: VmRecord, req: MigrationRequest) -> Dict[str, Any]:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import (
            MigrationFailed,
            PostcopyFailed,
            send,
        )
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import decode_answer, mode

        began = time.monotonic()
        deadline = began + req.timeout
        facts = storage_copy.gather(self.engine, rec)  # what the target cannot read of the disks
        token, markers = storage_copy.write_markers(rec, facts)  # beside each disk: shared or not
        wanted = req.to_dict()
        req = dataclasses.replace(req, marker=token, disks=tuple(dataclasses.asdict(f) for f in facts))
        try:
            self.store.open_handover(rec.uuid, rec.name, rec.host, req.to, req.to_dict())
            self._event(rec, "migration_started", {"to": req.to, "options": wanted})
            uri, nbd, copied = decode_answer(self._answer(rec, req, min(req.timeout, ANSWER_S)))
        finally:
            storage_copy.remove_markers(markers)
        qmp = self.engine.sessions.qmp
        storage_bytes = self._mirror(rec, req, facts, nbd, copied, deadline) if copied else 0
        ended: list = []  # the mirrors' bytes, once they ended (at the post-copy switch, or after the stream)

        def switched_over() -> None:  # the source guest is paused for good: the target may run it once SENT
            self._event(rec, POSTCOPY_SWITCHED, {"to": req.to})  # settle reads it: never resume here
            if copied:
                ended.append(self._end_mirror(rec, copied, recover=False))
            self.store.move_handover(rec.uuid, LISTENING, SENT)

        try:
            numbers = send(qmp, rec, req, uri, deadline, switched_over=switched_over)
        except PostcopyFailed as exc:
            self._event(rec, "migration_failed", {"error": str(exc), "postcopy": True})
            raise MigrationError(str(exc)) from None
        except (MigrationFailed, QmpError) as exc:  # send has let the guest run again
            storage_copy.drop(qmp, rec, copied, force=True)
            self._give_up(rec, LISTENING, str(exc), recovered=True)
        if copied and not ended:
            ended.append(self._end_mirror(rec, copied, recover=True))
        storage_bytes = max([storage_bytes] + ended)
        self.store.move_handover(rec.uuid, LISTENING, SENT)  # may be TAKING already: the target moved first
        state = self._outcome(rec, deadline)
        if state != DONE:
            why = (self.store.get_handover(rec.uuid) or {}).get("error") or "host %s did not take it over" % req.to
            self._give_up(rec, SENT, why, recovered=False)
        self._leave(rec, req.to)
        result = dict(numbers, duration_s=round(time.monotonic() - began, 3), storage=mode(copied))
        if copied:
            result.update(storage_bytes=storage_bytes, copied_disks=[f.path for f in facts if f.disk_id in copied])
        self._event(rec, "migrated", dict(result, to=req.to))
        moved = records.load(self.store, rec.name)
        found = {"changed": True, "vm": moved.summary(), "migration": result, "plan": _plan(req, rec, "live")}
        return dict(found, warnings=_left_behind(rec, req.to, result["copied_disks"])) if copied else found

    # -- storage copy (vm/engine/storage_copy.py) -------------------------------------------
    def _mirror(self, rec: VmRecord, req: MigrationRequest, facts, nbd, copied, deadline: float) -> int:
        """The copied disks mirrored onto the target's exports until ready; the bytes."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed

        speed = req.bandwidth_mbit * 1_000_000 // 8 if req.bandwidth_mbit else 0  # the stream's limit too
        try:
            copied_bytes = storage_copy.mirror(
                self.engine.sessions.qmp,
                rec,
                facts,
                nbd,
                copied,
                deadline,
                speed,
                lambda: self._target_gone(rec, req.to),
            )
        except MigrationFailed as exc:  # the guest ran all along, on its own disks
            self._give_up(rec, LISTENING, str(exc), recovered=True)
        self._event(rec, "migration_storage_ready", {"disks": copied, "bytes": copied_bytes})
        return copied_bytes

    def _end_mirror(self, rec: VmRecord, copied, recover: bool) -> int:
        """After the stream or at the post-copy switch (the guest is paused): the ready jobs
        write what is left, then end, the source's disks as they are. A failure takes the
        guest back here (``recover``), or, after the switch, fails the migration (send)."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed

        qmp = self.engine.sessions.qmp
        try:
            return storage_copy.drop(qmp, rec, copied, force=False)
        except (MigrationFailed, QmpError) as exc:
            storage_copy.drop(qmp, rec, copied, force=True)
            if not recover:
                self.store.move_handover(rec.uuid, LISTENING, ABORTED, error=str(exc))
                raise
            self._give_up(rec, LISTENING, str(exc), recovered=False)
            raise  # not reached: _give_up raises

    def _answer(self, rec: VmRecord, req: MigrationRequest, window: float) -> str:
        """The target's URI once it listens; a refusal or no answer within ``window``
        seconds fails the task."""
        until = time.monotonic() + window
        while True:
            found = self.store.get_handover(rec.uuid) or {}
            if found.get("state") == LISTENING:
                return found["uri"]
            if found.get("state") == REFUSED:
                self._give_up(rec, None, "host %s refused: %s" % (req.to, found.get("error")), recovered=True)
            if time.monotonic() > until:
                self._give_up(
                    rec,
                    REQUESTED,
                    "host %s did not answer the migration request within %d s: is infinivirt-monitor "
                    "running there, with --migration-address?" % (req.to, window),
                    recovered=True,
                )
            time.sleep(WAIT_POLL_S * 5)

    def _target_gone(self, rec: VmRecord, target: str) -> Optional[str]:
        """Why the target gave up a request it listened on, or None while it listens."""
        found = self.store.get_handover(rec.uuid) or {}
        if found.get("state") == LISTENING:
            return None
        return "host %s gave up: %s" % (target, found.get("error") or found.get("state"))

    def _outcome(self, rec: VmRecord, deadline: float) -> str:
        """After a completed stream: the target's decision (done or refused), or, if it has
        not taken the guest over by ``deadline``, aborted here (the source takes it back).
        Once the target is ``taking`` only it decides: the source waits."""
        while True:
            state = (self.store.get_handover(rec.uuid) or {}).get("state")
            if state in (DONE, REFUSED):
                return state
            if time.monotonic() > deadline:
                if state == SENT and self.store.move_handover(rec.uuid, SENT, ABORTED, error="timeout"):
                    return ABORTED
                if state == TAKING and time.monotonic() > deadline + ANSWER_S:
                    raise MigrationError(
                        "VM %s: host %s took the guest over but did not finish within timeout; the "
                        "guest is paused here and may run there: check that host's monitor" % (rec.name, rec.host)
                    )
            time.sleep(WAIT_POLL_S)

    def _give_up(self, rec: VmRecord, state: Optional[str], why: str, recovered: bool) -> None:
        """Abort the request (``state`` -> aborted), let the guest run here as before, fail."""
        if state is not None:
            self.store.move_handover(rec.uuid, state, ABORTED, error=why)
        if not recovered:
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import recover

            recover(self.engine.sessions.qmp, rec)
        self._event(rec, "migration_failed", {"error": why})
        raise MigrationError("VM %s was not migrated and runs on %s as before: %s" % (rec.name, rec.host, why))

    def _leave(self, rec: VmRecord, target: str) -> None:
        """The guest runs on ``target`` and the row says so: this host's QEMU (paused since
        the stream completed), files, TAPs and rules go; they are journaled under
        <uuid>@<this host> since the handover (store.handovers.side_key). ``rec`` names this
        host's files (its pidfile), not the row's."""
        gone = dataclasses.replace(rec, host=target, running_spec=None)
        self.engine.resources.apart.add(rec.uuid)
        try:
            self.engine.sessions.close_session()
            self.engine.process.kill_all(rec)  # this host's QEMU only (its pidfile)
            self.engine.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
            self.engine.resources.sync_firewall(gone)  # the VM runs elsewhere: its rules here go
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.device_handover import (
                release_claims_here,
            )

            release_claims_here(self.store, rec.uuid, self.engine.host_id)  # its display port and CID here
        finally:
            self.engine.resources.apart.discard(rec.uuid)

    def _offline(self, rec: VmRecord, req: MigrationRequest, check_mode: bool) -> Dict[str, Any]:
        """A stopped VM moves by ownership only with ``storage: shared`` or no disks (the row
        names the target; its disks must be there); else the target checks its disks and
        copies those it lacks (vm/offline_migration.py). What this host kept of it while
        stopped (NVRAM, seed ISOs) is removed: a UEFI VM starts there on a fresh copy of the
        firmware's variables."""
        plan = _plan(req, rec, "offline")
        warnings = []
        if rec.spec.firmware == "uefi":
            warnings.append(
                "VM %s: its UEFI variables (NVRAM) stay on %s and are removed; it starts on %s with "
                "the firmware's defaults" % (rec.name, rec.host, req.to)
            )
        if rec.spec.tpm is not None:  # device_handover: a live move carries it
            warnings.append(
                "VM %s: its TPM state stays on %s and is removed; it starts on %s with a new TPM (what was "
                "sealed to the old one, such as BitLocker's keys, needs its recovery key): move it live to "
                "keep it" % (rec.name, rec.host, req.to)
            )
        if check_mode:
            return {"changed": True, "vm": dict(rec.summary(), host=req.to), "plan": plan, "warnings": warnings}
        if self.engine.process.is_alive(rec) or rec.status not in ("stopped", "crashed"):
            raise StateError("VM %s is not stopped (status %s): it cannot move offline" % (rec.name, rec.status))
        if req.storage != "shared" and rec.spec.disks:  # the target checks the disks, copies those it lacks
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.offline_migration import move

            return move(self, rec, req, plan, warnings)
        self.engine.resources.release_files(rec, keep_serial_log=False, keep_nvram=False)
        source, rec.host = rec.host, req.to
        records.save(
            self.store, rec, [self._event_of(rec, "migrated", {"from": source, "to": req.to, "how": "offline"})]
        )
        moved = records.load(self.store, rec.name)
        return {"changed": True, "vm": moved.summary(), "plan": plan, "warnings": warnings}

    # -- a request left by a task cut off half-way ------------------------------------------
    def settle(self, rec: VmRecord) -> None:
        """Finish a request a task cut off half-way left (the caller holds the VM's lock):
        before the target took over, abort it and let the guest run here again; after
        ``done``, remove what is left of this host's side."""
        found = self.store.get_handover(rec.uuid)
        if found is None or found["source"] != self.engine.host_id:
            return
        state = found["state"]
        if state == DONE:
            if self.store.journal_list("%s@%s" % (rec.uuid, self.engine.host_id)):
                from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths

                # the row names the target's files now: this host's QEMU is found by its own
                paths = VmPaths.for_vm(self.engine.run_dir, rec.uuid)
                mine = dataclasses.replace(rec, pidfile_path=paths.pidfile, qmp_socket_path=paths.qmp_socket)
                self._leave(mine, found["target"])
            return
        if state == TAKING:
            raise StateError(
                "VM %s: host %s is taking it over from an earlier migration; only that host's monitor "
                "decides now: try again once it has (infinivirt_vm_info shows the VM's host)"
                % (rec.name, found["target"])
            )
        if state in FINAL:
            if state in (ABORTED, REFUSED):
                self._resume_if_paused(rec)
            return
        if not self.store.move_handover(rec.uuid, state, ABORTED, error="the migration task was cut off"):
            self.settle(rec)  # the target moved first: settle from what it says now
            return
        self._event(rec, "migration_failed", {"error": "the migration task was cut off; aborted"})
        self._resume_if_paused(rec)

    def _resume_if_paused(self, rec: VmRecord) -> None:
        """A source guest the stream left paused (QEMU's postmigrate) runs again, unless the
        migration had switched to post-copy: then its memory is split between the hosts."""
        if rec.host != self.engine.host_id or not self.engine.process.is_alive(rec):
            return
        try:
            if self.engine.sessions.query_status(rec) == "postmigrate":
                if self._switched_to_postcopy(rec):
                    raise StateError(
                        "VM %s: its last migration failed after the post-copy switch, so its memory is "
                        "split between this host and the target and it cannot run again here: stop it "
                        "(force: true) and start it again (its disks hold what it last wrote)" % rec.name
                    )
                from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import recover

                recover(self.engine.sessions.qmp, rec)
        except QmpError:
            pass  # QEMU is ending: the monitor cleans it up

    def _switched_to_postcopy(self, rec: VmRecord) -> bool:
        """Whether the VM's last migration from here switched to post-copy (its events)."""
        for event in self.store.list_events(rec.uuid, limit=50):
            if event["kind"] == POSTCOPY_SWITCHED:
                return True
            if event["kind"] == "migration_started":
                return False
        return False

    def _event(self, rec: VmRecord, kind: str, detail: Dict[str, Any]) -> None:
        self.store.add_events([self._event_of(rec, kind, detail)])

    def _event_of(self, rec: VmRecord, kind: str, detail: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "vm_uuid": rec.uuid,
            "vm_name": rec.name,
            "host": self.engine.host_id,
            "kind": kind,
            "detail": detail,
            "at": event_time(),
        }


def _left_behind(rec: VmRecord, to: str, paths: Sequence[str]) -> List[str]:
    """The warnings naming each disk file a storage copy left on this host."""
    return [
        "VM %s: %s copied to %s; the file on %s is left as it was at the move and is no longer used: "
        "remove it when you no longer need it" % (rec.name, path, to, rec.host)
        for path in paths
    ]


def _plan(req: MigrationRequest, rec: VmRecord, how: str) -> Dict[str, Any]:
    """What the task does (check mode's answer too)."""
    return {
        "how": how,
        "from": rec.host,
        "to": req.to,
        "storage": req.storage,  # auto: the target decides per disk (the result's migration.storage says)
        "max_downtime_ms": req.max_downtime_ms,
        "bandwidth_mbit": req.bandwidth_mbit,
        "auto_converge": req.auto_converge,
        "postcopy": req.postcopy,
        "timeout": req.timeout,
    }
