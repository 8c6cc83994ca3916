# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live migration requests (issue 23), mixed into every store: where a migration's source
task and its target host's monitor meet. One row per VM being moved; every change of its
state is a compare-and-set (from the state it was read in), so a side that
timed out or died cannot undo the other's step. The last step, DONE, moves the VM's row to
the target in the same transaction: the store hands a VM over only once, and only to the
host that runs it (the target moves to TAKING before it lets the guest run, and to DONE
after; vm/model/migration.py has the states and who moves them)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import VM_COLUMNS

HANDOVER_COLUMNS = ("vm_uuid", "vm_name", "source", "target", "state", "options", "uri", "error")


def side_key(vm_uuid: str, host: str) -> str:
    """The resource journal's key for one side of a VM that has two QEMUs (a migration):
    the incoming start journals under ``<uuid>@<target>``; at the handover the source's
    entries move to ``<uuid>@<source>`` and the target's to ``<uuid>``, so each side
    releases exactly its own files and TAPs (the same names on both hosts)."""
    return "%s@%s" % (vm_uuid, host)


class HandoverStore:
    """Needs the host store's ``transaction``, ``_read`` and ``_insert_events``."""

    def open_handover(self, vm_uuid: str, vm_name: str, source: str, target: str, options: Dict[str, Any]) -> None:
        """A new request (state ``requested``); an earlier, finished one of the VM is replaced.
        The caller holds the VM's lock and has checked that no unfinished one exists."""
        now = utc_now()
        with self.transaction("requesting the migration of VM %s" % vm_name) as cur:
            cur.execute("DELETE FROM vm_handovers WHERE vm_uuid = ?", (vm_uuid,))
            cur.execute(
                "INSERT INTO vm_handovers (vm_uuid, vm_name, source, target, state, options, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'requested', ?, ?, ?)",
                (vm_uuid, vm_name, source, target, json.dumps(options, sort_keys=True), now, now),
            )

    def get_handover(self, vm_uuid: str) -> Optional[Dict[str, Any]]:
        rows = self._read("SELECT * FROM vm_handovers WHERE vm_uuid = ?", (vm_uuid,), "reading a migration request")
        return _decoded(rows[0]) if rows else None

    def handovers_to(self, target: str, states: List[str]) -> List[Dict[str, Any]]:
        """The requests a target host has to act on (its monitor polls this)."""
        marks = ", ".join("?" * len(states))
        rows = self._read(
            "SELECT * FROM vm_handovers WHERE target = ? AND state IN (%s) ORDER BY created_at" % marks,
            (target,) + tuple(states),
            "reading migration requests",
        )
        return [_decoded(row) for row in rows]

    def move_handover(
        self, vm_uuid: str, state: str, new: str, uri: Optional[str] = None, error: Optional[str] = None
    ) -> bool:
        """Compare-and-set: ``state`` -> ``new`` (with the target's ``uri`` or a side's ``error``).
        False when the request is no longer in ``state`` (the other side moved first)."""
        with self.transaction("moving a migration request to %s" % new) as cur:
            cur.execute(
                "UPDATE vm_handovers SET state = ?, uri = COALESCE(?, uri), error = COALESCE(?, error), "
                "updated_at = ? WHERE vm_uuid = ? AND state = ?",
                (new, uri, error, utc_now(), vm_uuid, state),
            )
            return cur.raw.rowcount == 1

    def finish_handover(
        self,
        vm_uuid: str,
        source: str,
        target: str,
        vm_values: Dict[str, Any],
        events: Optional[List[Dict[str, Any]]] = None,
    ) -> bool:
        """``taking`` -> ``done`` and the VM's row to ``target`` with the target QEMU's run
        columns (``vm_values``, vms columns: pid, start time, paths...) and the resource
        journal's keys swapped (see side_key) and ``events`` (see add_events), in one
        transaction, only if the request is ``taking`` and the row still names ``source``.
        Returns whether it happened (nothing is changed otherwise)."""
        names = sorted(vm_values)
        unknown = [n for n in names if n not in VM_COLUMNS or n in ("uuid", "host", "version", "updated_at")]
        if unknown:
            raise ValueError("not run columns of a VM row: %s" % ", ".join(unknown))
        now = utc_now()
        try:
            with self.transaction("handing a migrated VM over") as cur:
                cur.execute(
                    "UPDATE vm_handovers SET state = 'done', updated_at = ? WHERE vm_uuid = ? AND state = 'taking'",
                    (now, vm_uuid),
                )
                if cur.raw.rowcount != 1:
                    raise _NotNow()
                cur.execute(
                    "UPDATE vms SET host = ?, version = version + 1, updated_at = ?, %s WHERE uuid = ? AND host = ?"
                    % ", ".join("%s = ?" % n for n in names),
                    (target, now) + tuple(vm_values[n] for n in names) + (vm_uuid, source),
                )
                if cur.raw.rowcount != 1:
                    raise _NotNow()
                # A disk the target made for a storage copy is the VM's disk now, not a leftover
                # to remove (vm/engine/resources.py MIGRATED_DISK).
                cur.execute(
                    "DELETE FROM resources WHERE vm_uuid = ? AND kind = 'migrated_disk'", (side_key(vm_uuid, target),)
                )
                # The journal follows the row: the source's entries are the source's leftovers now.
                cur.execute("UPDATE resources SET vm_uuid = ? WHERE vm_uuid = ?", (side_key(vm_uuid, source), vm_uuid))
                cur.execute("UPDATE resources SET vm_uuid = ? WHERE vm_uuid = ?", (vm_uuid, side_key(vm_uuid, target)))
                if events:
                    self._insert_events(cur, events)
        except _NotNow:  # rolled back by the transaction
            return False
        return True


class _NotNow(Exception):
    """The request is not ``taking``, or the row no longer names the source."""


def _decoded(row: Dict[str, Any]) -> Dict[str, Any]:
    found = {column: row[column] for column in HANDOVER_COLUMNS}
    found["options"] = json.loads(row["options"]) if row["options"] else {}
    return found
