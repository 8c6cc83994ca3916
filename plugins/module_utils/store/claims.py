# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host-scoped claims, mixed into every store: values of a kind (host CPUs, vsock CIDs,
display ports) that VMs of one host hold, shared or exclusively.

A claim replaces all of an owner's values of a kind and checks them against the other
owners' in one transaction that is serialized per host and kind (SQLite: BEGIN IMMEDIATE
already serializes writers; PostgreSQL: a transaction-scoped advisory lock), so two VMs'
tasks can never both see a value free and both take it (issue 18). A value may have many
shared holders or one exclusive holder.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now
from ansible_collections.infinivirt.core.plugins.module_utils.errors import ClaimConflict

CLAIM_CPU = "host CPU"  # host CPUs a VM pins to (exclusive: cpu_pinning_exclusive)


class ClaimStore:
    """Store methods for the ``host_claims`` table (migration 17), on SqlStore's plumbing."""

    def _claim_lock(self, cur: Any, host: str, kind: str) -> None:
        """Serialize claims of one host and kind inside the claim's transaction."""

    def claim_host(
        self,
        host: str,
        kind: str,
        owner: str,
        owner_name: str,
        values: Mapping[str, bool],
        other_hosts_kept: bool = False,
    ) -> None:
        """Make ``values`` (value -> exclusive) the owner's whole claim of ``kind``, on
        ``host`` (its claims of that kind elsewhere are dropped, unless ``other_hosts_kept``:
        a migration target's claim while the source still runs the VM). A value another owner
        holds exclusively, or that this owner wants exclusively and another holds at all,
        raises ClaimConflict naming that holder; nothing changes then."""
        with self.transaction("claiming %s values on host %s" % (kind, host)) as cur:
            self._claim_lock(cur.raw, host, kind)
            if other_hosts_kept:
                cur.execute("DELETE FROM host_claims WHERE kind = ? AND owner = ? AND host = ?", (kind, owner, host))
            else:
                cur.execute("DELETE FROM host_claims WHERE kind = ? AND owner = ?", (kind, owner))
            if not values:
                return
            cur.execute(
                "SELECT value, owner_name, exclusive FROM host_claims WHERE host = ? AND kind = ? AND value IN (%s)"
                % ", ".join("?" * len(values)),
                (host, kind) + tuple(values),
            )
            taken: Dict[str, List[str]] = {}
            exclusive_holders = set()
            for value, holder, exclusive in cur.raw.fetchall():
                if exclusive or values[value]:
                    taken.setdefault(holder, []).append(value)
                    if exclusive:
                        exclusive_holders.add(holder)
            if taken:
                holder = sorted(taken)[0]
                raise ClaimConflict(kind, host, taken[holder], holder, holder in exclusive_holders)
            now = utc_now()
            for value, exclusive in sorted(values.items()):
                cur.execute(
                    "INSERT INTO host_claims (host, kind, value, owner, owner_name, exclusive, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (host, kind, value, owner, owner_name, bool(exclusive), now),
                )

    def release_host_claims(self, owner: str, kind: Optional[str] = None, host: Optional[str] = None) -> None:
        """The owner's claims (of ``kind``; on ``host`` only: one side of a migration)."""
        where, args = ["owner = ?"], [owner]
        for column, value in (("kind", kind), ("host", host)):
            if value is not None:
                where.append("%s = ?" % column)
                args.append(value)
        with self.transaction("releasing host claims") as cur:
            cur.execute("DELETE FROM host_claims WHERE %s" % " AND ".join(where), tuple(args))

    def list_host_claims(self, host: Optional[str] = None, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        where, args = ["1 = 1"], []
        for column, value in (("host", host), ("kind", kind)):
            if value is not None:
                where.append("%s = ?" % column)
                args.append(value)
        rows = self._read(
            "SELECT host, kind, value, owner, owner_name, exclusive FROM host_claims WHERE %s "
            "ORDER BY host, kind, value, owner" % " AND ".join(where),
            tuple(args),
            "reading host claims",
        )
        for row in rows:
            row["exclusive"] = bool(row["exclusive"])
        return rows
