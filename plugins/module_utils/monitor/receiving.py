# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target side of live migrations to this host (issue 23; docs/architecture.md
"Migration"), run by the host monitor: it answers the requests the source tasks write in
the store (store/handovers.py). A request is answered by an incoming start
(vm.power.receive_vm: the same start as any, QEMU waiting for the stream) and ``listening``
with the URI, or ``refused`` with the reason. Once its QEMU has read the whole stream the
request moves to ``taking``, the guest runs here, and ``done`` moves the VM's row to this
host in the same transaction. ``aborted`` by the source, or its QEMU gone: everything of
the incoming start is removed. The source task holds the VM's lock all along: this side
never takes it, each of its moves is a compare-and-set on the request row."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import (
    ABORTED,
    LISTENING,
    REFUSED,
    REQUESTED,
    SENT,
    TAKING,
    MigrationRequest,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import RUNNING

TAKE_OVER_S = 10.0  # from the whole stream read to the guest seen running here
LISTEN_GRACE_S = 30.0  # a request listened to longer than its timeout plus this is given up
RUN_COLUMNS = (
    "status",
    "qemu_pid",
    "qemu_started",
    "qmp_socket_path",
    "serial_log_path",
    "pidfile_path",
    "launch_accel",
    "launch_cpu",
    "launch_graphics_port",
)


class Receiver:
    """Migrations to this host. ``address``: where sources reach this host's QEMUs (the
    monitor's --migration-address); None: every request is refused, saying so.
    ``record(uuid, kind, detail)`` queues an event for the VM's log (the monitor's)."""

    def __init__(self, address: Optional[str], log: logging.Logger, record: Callable[..., None]):
        self.address = address
        self.log = log
        self.record = record
        self.incoming: Dict[str, VmRecord] = {}  # VM uuid -> the VM as this host runs it
        self.since: Dict[str, float] = {}  # VM uuid -> when this side started listening
        self.copying: Dict[str, list] = {}  # VM uuid -> the disk ids this side copies (storage copy)
        self.offline: Any = None  # monitor/offline_receiving.py, made by the first offline request

    def busy(self) -> bool:
        """Whether a stream may be coming in: the monitor then polls often (downtime). An
        offline move has no downtime: it is followed at the monitor's own poll."""
        return bool(self.incoming)

    def poll(self, svc: Engine) -> None:
        """One round over this host's requests (StoreError goes to the monitor)."""
        for req in svc.store.handovers_to(svc.host_id, [REQUESTED, LISTENING, SENT, TAKING, ABORTED, REFUSED]):
            uuid, state = req["vm_uuid"], req["state"]
            mine = self.incoming.get(uuid)
            try:
                if req["options"].get("offline"):  # a stopped VM: no QEMU here (monitor/offline_receiving.py)
                    self._offline(svc, req)
                elif state == REQUESTED:
                    if mine is not None:  # a new request replaced the one this side answered
                        self._drop(svc, mine, "a new request replaced the one answered")
                    self._answer(svc, req)
                elif state in (LISTENING, SENT) and mine is not None:
                    self._follow(svc, req, mine)
                elif state in (LISTENING, SENT, TAKING) and mine is None:
                    self._orphan(svc, req)
                elif state in (ABORTED, REFUSED) and mine is not None:
                    self._drop(svc, mine, "the migration was %s" % state)
            except StoreError:
                raise
            except InfinivirtError as exc:  # one request's trouble does not stop the others
                self.log.error("VM %s: migration here: %s", req["vm_name"], exc)

    def _offline(self, svc: Engine, req: Dict[str, Any]) -> None:
        if self.address is None:
            if req["state"] == REQUESTED:
                self._refuse(
                    svc,
                    req["vm_uuid"],
                    REQUESTED,
                    "host %s receives no migrations: its monitor has no --migration-address" % svc.host_id,
                )
            return
        if self.offline is None:
            from ansible_collections.infinivirt.core.plugins.module_utils.monitor.offline_receiving import (
                OfflineReceiver,
            )

            self.offline = OfflineReceiver(self.address, self.log, self.record, self._refuse)
        self.offline.round(svc, req)

    # -- answering a request ----------------------------------------------------------------
    def _answer(self, svc: Engine, req: Dict[str, Any]) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import Incoming

        uuid = req["vm_uuid"]
        rec = records.load_by_uuid(svc.store, uuid)
        reason = self._refusal(svc, req, rec)
        if reason is not None:
            self._refuse(svc, uuid, REQUESTED, reason)
            return
        options = MigrationRequest(**req["options"])
        copies = self._storage(svc, req, rec)
        if copies is None:
            return
        uri = "tcp:%s:%d" % (_uri_host(self.address), free_port(self.address))
        try:
            mine = power.receive_vm(svc, rec, Incoming(uri, options.postcopy))
        except InfinivirtError as exc:
            self._unmake(svc, uuid, copies)
            self._refuse(svc, uuid, REQUESTED, "host %s cannot start it: %s" % (svc.host_id, exc))
            return
        self.incoming[uuid], self.since[uuid] = mine, time.monotonic()
        answer = self._export(svc, req, mine, uri, copies)
        if answer is None:
            return
        if not svc.store.move_handover(uuid, REQUESTED, LISTENING, uri=answer):
            self._drop(svc, mine, "the source gave up before the answer")
            return
        self.log.info("VM %s: migration from %s: listening on %s", rec.name, req["source"], answer)
        self.record(uuid, "migration_listening", {"source": req["source"], "uri": answer})

    # -- storage copy (vm/engine/storage_copy.py) --------------------------------------------
    def _storage(self, svc: Engine, req: Dict[str, Any], rec: VmRecord) -> Optional[list]:
        """The disks this host copies, made here (journaled apart); None: refused."""
        if req["options"].get("marker") is None:
            return []  # a source that sends no disk facts: shared storage (checked by _refusal)
        from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy

        copies, reason = storage_copy.plan(svc, req["options"])
        if reason is None:
            try:
                storage_copy.create(svc, side_key(rec.uuid, svc.host_id), rec, copies)
            except InfinivirtError as exc:
                reason = str(exc)
        if reason is not None:
            self._refuse(svc, rec.uuid, REQUESTED, reason)
            return None
        self.copying[rec.uuid] = [disk.disk_id for disk in copies]
        return copies

    def _unmake(self, svc: Engine, uuid: str, copies: list) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy

        storage_copy.remove(svc, side_key(uuid, svc.host_id), [disk.path for disk in copies])
        self.copying.pop(uuid, None)

    def _export(self, svc: Engine, req: Dict[str, Any], mine: VmRecord, uri: str, copies: list) -> Optional[str]:
        """The answer (the URI, and the NBD server of the copied disks); None: refused."""
        if not copies:
            return uri
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import encode_answer

        port = free_port(self.address)
        try:
            storage_copy.export(svc.sessions.qmp, mine, self.address, port, copies)
        except InfinivirtError as exc:
            self._drop(svc, mine, "its disks could not be exported")
            self._refuse(svc, mine.uuid, REQUESTED, "host %s cannot export the copied disks: %s" % (svc.host_id, exc))
            return None
        self.record(mine.uuid, "migration_storage_export", {"disks": [disk.path for disk in copies]})
        return encode_answer(uri, self.address, port, [disk.disk_id for disk in copies])

    def _refusal(self, svc: Engine, req: Dict[str, Any], rec: Optional[VmRecord]) -> Optional[str]:
        """Why this host cannot take the VM, or None."""
        if self.address is None:
            return "host %s receives no migrations: its monitor has no --migration-address" % svc.host_id
        if rec is None or rec.host != req["source"]:
            return "VM %s is not on %s any more" % (req["vm_name"], req["source"])
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.device_handover import target_refusal

        devices = target_refusal(svc, rec)  # shared_dirs; an nvram_dir that has the VM's files already
        if devices is not None:
            return devices
        running = rec.running_spec or rec.spec  # what the target builds (power.receive_vm)
        for index, disk in enumerate(running.disks if req["options"].get("marker") is None else ()):
            reason = _disk_here(svc, disk.path, "disks[%d].path" % index)
            if reason is not None:
                return "storage %s: %s on host %s; shared storage needs the same disk paths on both hosts" % (
                    req["options"].get("storage", "auto"),
                    reason,
                    svc.host_id,
                )
        return None

    def _refuse(self, svc: Engine, uuid: str, state: str, reason: str) -> None:
        if svc.store.move_handover(uuid, state, REFUSED, error=reason):
            self.log.warning("migration of VM %s here refused: %s", uuid, reason)
            self.record(uuid, "migration_refused", {"reason": reason})

    # -- the stream, and the handover -------------------------------------------------------
    def _follow(self, svc: Engine, req: Dict[str, Any], mine: VmRecord) -> None:
        """While listening: QEMU gone -> refused; stream read -> take the guest over."""
        uuid, state = mine.uuid, req["state"]
        status = svc.sessions.query_status(mine) if svc.process.is_alive(mine) else None
        if status is None:
            self._refuse(svc, uuid, state, "the target QEMU on %s ended during the migration" % svc.host_id)
            self._drop(svc, mine, "its QEMU ended")
            return
        if status == "inmigrate":
            waited = time.monotonic() - self.since.get(uuid, time.monotonic())
            if waited > req["options"].get("timeout", 600) + LISTEN_GRACE_S:
                self._refuse(svc, uuid, state, "no migration stream came within its timeout")
                self._drop(svc, mine, "no stream came")
            return
        if self.copying.get(uuid):
            if state != SENT:  # the source's mirrors write their last blocks after the stream
                self._overdue(svc, req, mine)
                return
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.storage_copy import unexport

            try:
                unexport(svc.sessions.qmp, mine)  # nothing writes the disks but this guest from now on
            except InfinivirtError as exc:
                self.log.warning("VM %s: stopping its NBD export: %s", mine.name, exc)
        if not svc.store.move_handover(uuid, state, TAKING):
            return  # the source moved first (aborted, or sent): the next round sees it
        self._take(svc, req, mine)

    def _overdue(self, svc: Engine, req: Dict[str, Any], mine: VmRecord) -> None:
        """Given up when the source has not finished within its timeout (plus grace)."""
        waited = time.monotonic() - self.since.get(mine.uuid, time.monotonic())
        if waited > req["options"].get("timeout", 600) + LISTEN_GRACE_S:
            self._refuse(svc, mine.uuid, req["state"], "the source did not finish within its timeout")
            self._drop(svc, mine, "the source did not finish")

    def _take(self, svc: Engine, req: Dict[str, Any], mine: VmRecord) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import take_over
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import MigrationFailed

        began = time.monotonic()
        try:
            take_over(svc.sessions.qmp, mine, began + TAKE_OVER_S)
        except MigrationFailed as exc:
            self._drop(svc, mine, str(exc))
            self._refuse(svc, mine.uuid, TAKING, str(exc))
            return
        self._hand_over(svc, req, mine, began)

    def _hand_over(self, svc: Engine, req: Dict[str, Any], mine: VmRecord, began: float) -> None:
        """The row to this host, with this QEMU's run columns, the journal keys swapped."""
        mine.status = RUNNING
        values = {column: getattr(mine, column) for column in RUN_COLUMNS}
        event = {
            "vm_uuid": mine.uuid,
            "vm_name": mine.name,
            "host": svc.host_id,
            "kind": "migrated_in",
            "detail": {"source": req["source"], "take_over_ms": int((time.monotonic() - began) * 1000)},
        }
        if not svc.store.finish_handover(mine.uuid, req["source"], svc.host_id, values, [event]):
            self._drop(svc, mine, "the row no longer names %s" % req["source"])
            self._refuse(svc, mine.uuid, TAKING, "the VM's row no longer names %s" % req["source"])
            return
        svc.resources.apart.discard(mine.uuid)  # its journal is the VM's now
        self.copying.pop(mine.uuid, None)
        self.incoming.pop(mine.uuid, None)
        self.since.pop(mine.uuid, None)
        self.log.info("VM %s: migrated here from %s (PID %s)", mine.name, req["source"], mine.qemu_pid)

    def _orphan(self, svc: Engine, req: Dict[str, Any]) -> None:
        """A request this monitor answered before it restarted: a guest already taken over
        (``taking``) and running here is handed over; anything else is given up."""
        rec = records.load_by_uuid(svc.store, req["vm_uuid"])
        if rec is None:
            return
        from ansible_collections.infinivirt.core.plugins.module_utils.host.liveness import start_ticks
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths

        paths = VmPaths.for_vm(svc.run_dir, rec.uuid)
        mine = dataclasses.replace(rec, host=svc.host_id, pidfile_path=paths.pidfile, qmp_socket_path=paths.qmp_socket)
        mine.serial_log_path = paths.serial_log
        svc.resources.apart.add(rec.uuid)
        mine.qemu_pid = svc.process.live_pid(mine)
        mine.qemu_started = start_ticks(mine.qemu_pid, svc.host_paths.proc)
        if req["state"] == TAKING and mine.qemu_pid is not None and svc.sessions.query_status(mine) == "running":
            self._hand_over(svc, req, mine, time.monotonic())
            return
        self._drop(svc, mine, "its monitor restarted during the migration")
        self._refuse(svc, rec.uuid, req["state"], "the monitor of %s restarted during the migration" % svc.host_id)

    def _drop(self, svc: Engine, mine: VmRecord, why: str) -> None:
        """Remove everything of this side's incoming start (not the row: the source's)."""
        svc.abort_incoming(mine)  # copied disks too: journaled apart
        self.copying.pop(mine.uuid, None)
        self.incoming.pop(mine.uuid, None)
        self.since.pop(mine.uuid, None)
        self.log.info("VM %s: incoming migration cleaned up (%s)", mine.name, why)


def _disk_here(svc: Engine, path: str, field: str) -> Optional[str]:
    """Why a disk image is not usable here (None: it is, at the same path)."""
    if svc.ctx.storage_roots:
        from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots

        try:
            path = resolve_in_roots(path, svc.ctx.storage_roots, field)
        except InfinivirtError as exc:
            return str(exc)
    return None if os.path.exists(path) else "%s (%s) does not exist" % (field, path)


def _uri_host(address: str) -> str:
    return "[%s]" % address if ":" in address else address


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now, for QEMU to listen on (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]
