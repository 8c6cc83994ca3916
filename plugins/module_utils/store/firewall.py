# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Firewall rows (infinivirt_firewall, migration 9), mixed into every store.

``firewall_rulesets``: one row per scope, keyed (scope, owner); the owner is the department
name, or the VM's UUID for scope vm (so a new VM of the same name does not inherit rules).
``firewall_rules``: its rules in order, each with its source (host, job id, user and time of
the task that set it; a rule that a later task leaves as it was keeps its source).
``firewall_applied``: where a VM's rules are in the kernel (host, network namespace, and the
department its chains jump to), written before nft creates them and dropped after nft removed
them, so they can be found and removed after a crash, a changed namespace or a lost row.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

RULE_COLUMNS = ("name", "direction", "protocol", "ports", "cidr", "action", "comment")
SOURCE_COLUMNS = ("source_host", "source_job_id", "source_user", "source_time")


def _source_dict(row: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "host": row["source_host"],
        "job_id": row["source_job_id"],
        "user": row["source_user"],
        "time": row["source_time"],
    }


def _source_values(source: Dict[str, Any]) -> tuple:
    return (source.get("host"), source.get("job_id"), source.get("user"), source.get("time"))


class FirewallStore:
    """Store methods for the firewall tables. Written against ``SqlStore``'s plumbing
    (``transaction``, ``_read``; SQL with '?' placeholders)."""

    def get_ruleset(self, scope: str, owner: str) -> Optional[Dict[str, Any]]:
        """{"settings": {...}, "owner_name", "source": {...}, "rules": [rule dict + "source"]},
        or None."""
        rows = self._read(
            "SELECT * FROM firewall_rulesets WHERE scope = ? AND owner = ?", (scope, owner), "reading firewall rules"
        )
        if not rows:
            return None
        head = rows[0]
        rules = []
        for row in self._read(
            "SELECT * FROM firewall_rules WHERE scope = ? AND owner = ? ORDER BY position",
            (scope, owner),
            "reading firewall rules",
        ):
            rule = {c: row[c] for c in RULE_COLUMNS}
            rule["ports"] = json.loads(rule["ports"])
            rule["source"] = _source_dict(row)
            rules.append(rule)
        return {
            "scope": scope,
            "owner": owner,
            "owner_name": head["owner_name"],
            "settings": {
                "policy_in": head["policy_in"],
                "policy_out": head["policy_out"],
                "anti_spoofing": bool(head["anti_spoofing"]),
            },
            "source": _source_dict(head),
            "created_at": head["created_at"],
            "rules": rules,
        }

    def put_ruleset(
        self,
        scope: str,
        owner: str,
        owner_name: str,
        settings: Dict[str, Any],
        rules: List[Dict[str, Any]],
        source: Dict[str, Any],
        before_commit: Optional[Callable[[], None]] = None,
    ) -> None:
        """Replace the scope's row and rules in one transaction. Each rule dict carries its
        own "source". ``before_commit`` runs inside the transaction: if it raises, nothing
        is stored."""
        with self.transaction("recording firewall rules of %s %s" % (scope, owner_name)) as cur:
            cur.execute("SELECT created_at FROM firewall_rulesets WHERE scope = ? AND owner = ?", (scope, owner))
            found = cur.fetchone()
            created = found[0] if found else source["time"]
            cur.execute("DELETE FROM firewall_rules WHERE scope = ? AND owner = ?", (scope, owner))
            cur.execute("DELETE FROM firewall_rulesets WHERE scope = ? AND owner = ?", (scope, owner))
            cur.execute(
                "INSERT INTO firewall_rulesets (scope, owner, owner_name, policy_in, policy_out, "
                "anti_spoofing, %s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % ", ".join(SOURCE_COLUMNS),
                (
                    scope,
                    owner,
                    owner_name,
                    settings["policy_in"],
                    settings["policy_out"],
                    bool(settings["anti_spoofing"]),
                )
                + _source_values(source)
                + (created,),
            )
            insert = "INSERT INTO firewall_rules (scope, owner, position, %s, %s) VALUES (%s)" % (
                ", ".join(RULE_COLUMNS),
                ", ".join(SOURCE_COLUMNS),
                ", ".join("?" * (3 + len(RULE_COLUMNS) + len(SOURCE_COLUMNS))),
            )
            cur.raw.executemany(
                self._sql(insert),
                [
                    (scope, owner, position)
                    + tuple(json.dumps(rule[c]) if c == "ports" else rule[c] for c in RULE_COLUMNS)
                    + _source_values(rule["source"])
                    for position, rule in enumerate(rules)
                ],
            )
            if before_commit is not None:
                before_commit()

    def delete_ruleset(self, scope: str, owner: str, before_commit: Optional[Callable[[], None]] = None) -> None:
        with self.transaction("removing firewall rules of %s %s" % (scope, owner)) as cur:
            cur.execute("DELETE FROM firewall_rules WHERE scope = ? AND owner = ?", (scope, owner))
            cur.execute("DELETE FROM firewall_rulesets WHERE scope = ? AND owner = ?", (scope, owner))
            if before_commit is not None:
                before_commit()

    # -- where rules are in the kernel -----------------------------------------------------
    def firewall_applied(
        self, host: str, vm_uuid: Optional[str] = None, department: Optional[str] = None
    ) -> List[Dict[str, Any]]:
        """Rows {vm_uuid, host, netns (None: the host's), department} of this host."""
        sql, args = "SELECT vm_uuid, host, netns, department FROM firewall_applied WHERE host = ?", [host]
        if vm_uuid is not None:
            sql, args = sql + " AND vm_uuid = ?", args + [vm_uuid]
        if department is not None:
            sql, args = sql + " AND department = ?", args + [department]
        rows = self._read(sql + " ORDER BY vm_uuid, netns", tuple(args), "reading applied firewall rules")
        return [dict(row, netns=row["netns"] or None) for row in rows]

    def put_firewall_applied(self, vm_uuid: str, host: str, netns: Optional[str], department: Optional[str]) -> None:
        with self.transaction("journaling firewall rules") as cur:
            cur.execute(
                "INSERT INTO firewall_applied (vm_uuid, host, netns, department) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (vm_uuid, host, netns) DO UPDATE SET department = excluded.department",
                (vm_uuid, host, netns or "", department),
            )

    def delete_firewall_applied(self, vm_uuid: str, host: str, netns: Optional[str]) -> None:
        with self.transaction("dropping firewall rules from the journal") as cur:
            cur.execute(
                "DELETE FROM firewall_applied WHERE vm_uuid = ? AND host = ? AND netns = ?",
                (vm_uuid, host, netns or ""),
            )
