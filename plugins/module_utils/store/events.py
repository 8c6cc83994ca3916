# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM event log, mixed into every store: what QEMU reported (shutdown and its origin,
reset, stop/resume, guest panic, I/O errors, device removal, balloon) and what the host
monitor did about it (crash cleanup, restarts, autostart, cleanup it could not finish)."""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.clock import event_time
from ansible_collections.infinivirt.core.plugins.module_utils.store.batch import in_chunks

EVENTS_KEPT = 200  # per VM; older ones are pruned as new ones come


class EventStore:
    """Needs the host store's ``transaction`` and ``_read``."""

    def add_events(self, events: List[Dict[str, Any]]) -> None:
        """Write events (dicts with vm_uuid, vm_name, host, kind, detail and optionally at)
        in one transaction, then prune each VM's log to EVENTS_KEPT."""
        if not events:
            return
        with self.transaction("recording VM events") as cur:
            self._insert_events(cur, events)

    def _insert_events(self, cur: Any, events: List[Dict[str, Any]]) -> None:
        """Inside a transaction of the caller's (update_vm writes a row and its events at once)."""
        for event in events:
            cur.execute(
                "INSERT INTO vm_events (id, vm_uuid, vm_name, host, at, kind, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    uuidlib.uuid4().hex,
                    event["vm_uuid"],
                    event["vm_name"],
                    event["host"],
                    event.get("at") or event_time(),
                    event["kind"],
                    json.dumps(event.get("detail") or {}, sort_keys=True),
                ),
            )
        for vm_uuid in sorted({e["vm_uuid"] for e in events}):
            cur.execute(
                "DELETE FROM vm_events WHERE vm_uuid = ? AND id NOT IN (SELECT id FROM vm_events "
                "WHERE vm_uuid = ? ORDER BY at DESC, id DESC LIMIT %d)" % EVENTS_KEPT,
                (vm_uuid, vm_uuid),
            )

    def count_events(self, vm_uuid: str, kind: str, since: str) -> int:
        """How many events of ``kind`` the VM has at or after ``since`` (an event_time)."""
        rows = self._read(
            "SELECT COUNT(*) AS n FROM vm_events WHERE vm_uuid = ? AND kind = ? AND at >= ?",
            (vm_uuid, kind, since),
            "counting VM events",
        )
        return int(rows[0]["n"])

    def list_events(self, vm_uuid: str, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The VM's events, newest first."""
        sql = "SELECT at, kind, detail, host FROM vm_events WHERE vm_uuid = ? ORDER BY at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT %d" % int(limit)
        rows = self._read(sql, (vm_uuid,), "reading VM events")
        return [dict(row, detail=json.loads(row["detail"] or "{}")) for row in rows]

    def list_events_of(self, vm_uuids: Sequence[str], limit: int) -> Dict[str, List[Dict[str, Any]]]:
        """list_events(uuid, limit) of many VMs in one query (per IN_BATCH): uuid -> events."""
        found: Dict[str, List[Dict[str, Any]]] = {uuid: [] for uuid in vm_uuids}
        for chunk, marks in in_chunks(vm_uuids):
            rows = self._read(
                "SELECT vm_uuid, at, kind, detail, host FROM (SELECT vm_uuid, at, kind, detail, host, id, "
                "ROW_NUMBER() OVER (PARTITION BY vm_uuid ORDER BY at DESC, id DESC) AS n FROM vm_events "
                "WHERE vm_uuid IN (%s)) e WHERE n <= ? ORDER BY vm_uuid, at DESC, id DESC" % marks,
                tuple(chunk) + (int(limit),),
                "reading VM events",
            )
            for row in rows:
                uuid = row.pop("vm_uuid")
                found[uuid].append(dict(row, detail=json.loads(row["detail"] or "{}")))
        return found
