# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The target side of offline migrations to this host (issue 23; docs/architecture.md
"Migration", "Offline storage copy"), run by the host monitor for requests flagged
``offline`` (a stopped VM; vm/offline_migration.py is the source). No QEMU, TAP or incoming
start: this host decides per disk (vm/engine/storage_copy.py ``plan``: shared when it sees
the source's marker, else copied, or refused naming the disk), makes the copied disks
(journaled under <uuid>@<this host>), serves them over NBD from a qemu-storage-daemon
(vm/engine/offline_copy.py) and answers ``listening``. At ``sent`` (the source has written
them) the daemon stops and the row moves here with ``finish_handover``; aborted, refused or
given up: the daemon stops and the disks made here go."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import (
    ABORTED,
    LISTENING,
    REFUSED,
    REQUESTED,
    SENT,
    TAKING,
)

GRACE_S = 30.0  # a request listened to longer than its timeout plus this is given up


class OfflineReceiver:
    """``refuse(svc, uuid, state, reason)`` and ``record(uuid, kind, detail)`` are the
    Receiver's; ``address``: the monitor's --migration-address (never None here)."""

    def __init__(self, address: str, log: Any, record: Callable[..., None], refuse: Callable[..., None]):
        self.address = address
        self.log = log
        self.record = record
        self.refuse = refuse
        self.serving: Dict[str, Dict[str, Any]] = {}  # VM uuid -> exports, paths made, since

    def round(self, svc: Engine, req: Dict[str, Any]) -> None:
        uuid, state = req["vm_uuid"], req["state"]
        mine = self.serving.get(uuid)
        if state == REQUESTED:
            if mine is not None:
                self._clean(svc, uuid)
            self._answer(svc, req)
        elif state in (ABORTED, REFUSED):
            if mine is not None:
                self._clean(svc, uuid)
        elif mine is None:  # answered before this monitor restarted: its daemon died with it
            self.serving[uuid] = {"exports": None, "paths": [], "since": time.monotonic()}
            self.refuse(svc, uuid, state, "the monitor of %s restarted during the migration" % svc.host_id)
            self._clean(svc, uuid)
        elif state == LISTENING:
            self._follow(svc, req, mine)
        elif state == SENT:
            self._take(svc, req)

    def _answer(self, svc: Engine, req: Dict[str, Any]) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy

        uuid = req["vm_uuid"]
        rec = records.load_by_uuid(svc.store, uuid)
        if rec is None or rec.host != req["source"]:
            self.refuse(svc, uuid, REQUESTED, "VM %s is not on %s any more" % (req["vm_name"], req["source"]))
            return
        copies, reason = storage_copy.plan(svc, req["options"])
        mine = self.serving[uuid] = {"exports": None, "paths": [], "since": time.monotonic()}
        try:
            if reason is None:
                storage_copy.create(svc, side_key(uuid, svc.host_id), rec, copies)
                mine["paths"] = [disk.path for disk in copies]
                answer = self._serve(svc, rec, mine, copies)
        except (InfinivirtError, OSError) as exc:
            reason = str(exc)
        if reason is not None:
            self.refuse(svc, uuid, REQUESTED, reason)
            self._clean(svc, uuid)
            return
        if not svc.store.move_handover(uuid, REQUESTED, LISTENING, uri=answer):
            self._clean(svc, uuid)
            return
        self.log.info("VM %s: offline migration from %s: %s", rec.name, req["source"], answer)
        self.record(uuid, "migration_listening", {"source": req["source"], "uri": answer, "offline": True})

    def _serve(self, svc: Engine, rec: Any, mine: Dict[str, Any], copies: list) -> str:
        """The answer: ``offline``, and the NBD server of the copied disks."""
        from ansible_collections.infinivirt.core.plugins.module_utils.monitor.receiving import free_port
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.offline_copy import Exports
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.storage_copy import encode_answer

        if not copies:
            return "offline"
        exports = mine["exports"] = Exports(os.path.join(svc.run_dir, "%s.migrate.qmp" % rec.uuid), rec.name)
        port = free_port(self.address)
        exports.start(self.address, port, copies)
        self.record(rec.uuid, "migration_storage_export", {"disks": mine["paths"]})
        return encode_answer("offline", self.address, port, [disk.disk_id for disk in copies])

    def _follow(self, svc: Engine, req: Dict[str, Any], mine: Dict[str, Any]) -> None:
        """While the source copies: the daemon gone, or the source overdue -> refused."""
        uuid = req["vm_uuid"]
        why: Optional[str] = None
        if mine["exports"] is not None and not mine["exports"].alive():
            why = "the storage daemon on %s ended during the copy" % svc.host_id
        elif time.monotonic() - mine["since"] > req["options"].get("timeout", 600) + GRACE_S:
            why = "the source did not finish within its timeout"
        if why is not None:
            self.refuse(svc, uuid, LISTENING, why)
            self._clean(svc, uuid)

    def _take(self, svc: Engine, req: Dict[str, Any]) -> None:
        """The disks are written: the daemon stops, the row moves here (still stopped)."""
        uuid = req["vm_uuid"]
        mine = self.serving[uuid]
        if mine["exports"] is not None:
            mine["exports"].close()  # flushes and closes the images before the row names this host
            mine["exports"] = None
        if not svc.store.move_handover(uuid, SENT, TAKING):
            return  # the source aborted first: the next round cleans up
        rec = records.load_by_uuid(svc.store, uuid)
        event = {
            "vm_uuid": uuid,
            "vm_name": req["vm_name"],
            "host": svc.host_id,
            "kind": "migrated_in",
            "detail": {"source": req["source"], "offline": True, "copied_disks": mine["paths"]},
        }
        status = rec.status if rec is not None else "stopped"
        if rec is None or not svc.store.finish_handover(uuid, req["source"], svc.host_id, {"status": status}, [event]):
            self.refuse(svc, uuid, TAKING, "the VM's row no longer names %s" % req["source"])
            self._clean(svc, uuid)
            return
        self.serving.pop(uuid, None)
        self.log.info("VM %s: moved here offline from %s", req["vm_name"], req["source"])

    def _clean(self, svc: Engine, uuid: str) -> None:
        """The daemon stopped and the disks made here removed (with their journal entries)."""
        from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import storage_copy

        mine = self.serving.pop(uuid, None) or {}
        if mine.get("exports") is not None:
            mine["exports"].close()
        storage_copy.remove(svc, side_key(uuid, svc.host_id), mine.get("paths") or [])
        self.log.info("VM %s: offline migration here cleaned up", uuid)
