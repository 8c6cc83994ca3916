# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every state store does, written once in SQL both SQLite and PostgreSQL accept.

A backend supplies the connection (in autocommit mode), how a write transaction begins,
which exceptions are database errors, and the per-VM lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now
from ansible_collections.infinivirt.core.plugins.module_utils.errors import StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.store.batch import in_chunks
from ansible_collections.infinivirt.core.plugins.module_utils.store.claims import ClaimStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.events import EventStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.firewall import FirewallStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.guest_addresses import GuestAddressStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import HandoverStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.hostdevs import PciStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import MIGRATIONS
from ansible_collections.infinivirt.core.plugins.module_utils.store.vms import (
    VM_COLUMNS,
    VmRow,
    row_from_select,
    spec_columns,
    vm_values,
)
from ansible_collections.infinivirt.core.plugins.module_utils.store.volumes import VolumeStore


def lock_holder_info(job_id: Optional[str]) -> Dict[str, Any]:
    """Who takes a lock: shown to whoever waits for it in vain."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": utc_now(), "job_id": job_id}


def describe_holder(info: Optional[Dict[str, Any]]) -> str:
    if not info:
        return "holder unknown"
    text = "held by PID %s on %s since %s" % (info.get("pid"), info.get("host"), info.get("since"))
    if info.get("job_id"):
        text += " (job %s)" % info["job_id"]
    return text


# Columns holding secrets sealed by secrets.SecretBox: column -> (table, key column). A
# secret is bound to the context "<key>/<column>" (see secret_context).
SECRET_COLUMNS = {
    "graphics_password": ("machine_configuration", "vm_uuid"),
    "luks_key": ("volumes", "path"),
    "cloud_init": ("machine_configuration", "vm_uuid"),  # the cloud_init option (JSON)
    "unattend": ("machine_configuration", "vm_uuid"),  # the unattend ISO's files and salt (JSON)
}

# A column renamed after secrets were sealed in it keeps its old name in their context:
# tokens cannot be re-sealed in SQL (migration 11 renamed graphic_password).
_SECRET_CONTEXT_NAMES = {"graphics_password": "graphic_password"}


def secret_context(owner: str, column: str) -> str:
    """Binds a sealed secret to its row and column: a token copied elsewhere fails."""
    return "%s/%s" % (owner, _SECRET_CONTEXT_NAMES.get(column, column))


class SqlStore(VolumeStore, FirewallStore, EventStore, PciStore, ClaimStore, GuestAddressStore, HandoverStore):
    """Shared logic. SQL is written with '?' placeholders; ``_sql`` adapts them."""

    placeholder = "?"
    db_errors: Tuple[type, ...] = ()
    job_id: Optional[str] = None

    # -- backend hooks --------------------------------------------------------------------
    def _cursor(self) -> Any:
        raise NotImplementedError

    def _begin(self, cur: Any) -> None:
        raise NotImplementedError

    def _schema_lock(self, cur: Any) -> None:
        """Serialize concurrent migrations inside the migration transaction."""

    def vm_lock(self, name: str, timeout: float) -> ContextManager[None]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- plumbing -------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self.db_errors as exc:
            raise StoreError(
                "%s failed on the state database %s: %s" % (doing, self.describe(), str(exc).strip())
            ) from exc

    @contextlib.contextmanager
    def transaction(self, doing: str = "a write") -> Iterator["_Cursor"]:
        with self._errors(doing):
            cur = self._cursor()
            self._begin(cur)
            try:
                yield _Cursor(cur, self._sql)
            except BaseException:
                with contextlib.suppress(*self.db_errors):
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _read(self, sql: str, args: Tuple[Any, ...] = (), doing: str = "a read") -> List[Dict[str, Any]]:
        with self._errors(doing):
            cur = self._cursor()
            cur.execute(self._sql(sql), args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        return self._read("SELECT MAX(version) AS v FROM schema_migrations")[0]["v"] or 0

    def migrate(self) -> None:
        with self.transaction("migrating the schema") as cur:
            self._schema_lock(cur.raw)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            cur.execute("SELECT MAX(version) FROM schema_migrations")
            current = cur.fetchone()[0] or 0
            for number, statements in MIGRATIONS:
                if number <= current:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, utc_now()))

    # -- VMs ------------------------------------------------------------------------------
    def _select(self, where: str, args: Tuple[Any, ...]) -> List[VmRow]:
        rows = self._read(
            "SELECT v.*, c.* FROM vms v JOIN machine_configuration c ON c.vm_uuid = v.uuid "
            + where
            + " ORDER BY v.name",
            args,
            "reading VMs",
        )
        return [row_from_select(row) for row in rows]

    def get_vm(self, name: str) -> Optional[VmRow]:
        found = self._select("WHERE v.name = ?", (name,))
        return found[0] if found else None

    def get_vm_by_uuid(self, uuid: str) -> Optional[VmRow]:
        found = self._select("WHERE v.uuid = ?", (uuid,))
        return found[0] if found else None

    def list_vms(self, host: Optional[str] = None) -> List[VmRow]:
        if host is None:
            return self._select("", ())
        return self._select("WHERE v.host = ?", (host,))

    def insert_vm(self, record: VmRow) -> None:
        record.created_at = record.updated_at = utc_now()
        columns = spec_columns(record)
        with self.transaction("creating VM %s" % record.name) as cur:
            cur.execute(
                "INSERT INTO vms (%s) VALUES (%s)" % (", ".join(VM_COLUMNS), ", ".join("?" * len(VM_COLUMNS))),
                vm_values(record),
            )
            cur.execute(
                "INSERT INTO machine_configuration (vm_uuid, %s) VALUES (?, %s)"
                % (", ".join(columns), ", ".join("?" * len(columns))),
                (record.uuid,) + tuple(columns.values()),
            )

    def update_vm(self, record: VmRow, events: Optional[List[Dict[str, Any]]] = None) -> None:
        """Write the record back, bumping its version; ``events`` (see add_events) are
        written in the same transaction, so a row never says one thing and its log another."""
        updated_at, version = utc_now(), record.version + 1
        columns = spec_columns(record)
        with self.transaction("updating VM %s" % record.name) as cur:
            values = list(vm_values(record))
            values[VM_COLUMNS.index("version")] = version
            values[VM_COLUMNS.index("updated_at")] = updated_at
            cur.execute(
                "UPDATE vms SET %s WHERE uuid = ?" % ", ".join("%s = ?" % c for c in VM_COLUMNS[1:]),
                tuple(values[1:]) + (record.uuid,),
            )
            cur.execute(
                "UPDATE machine_configuration SET %s WHERE vm_uuid = ?" % ", ".join("%s = ?" % c for c in columns),
                tuple(columns.values()) + (record.uuid,),
            )
            if events:
                self._insert_events(cur, events)
        record.updated_at, record.version = updated_at, version

    def delete_vm(self, uuid: str) -> None:
        with self.transaction("deleting a VM") as cur:
            cur.execute("DELETE FROM machine_configuration WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM resources WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM disk_layers WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM vm_events WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM pci_assignments WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM host_claims WHERE owner = ?", (uuid,))
            cur.execute("DELETE FROM guest_addresses WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM vm_handovers WHERE vm_uuid = ?", (uuid,))
            cur.execute("DELETE FROM vms WHERE uuid = ?", (uuid,))

    # -- secrets ------------------------------------------------------------------------
    def get_secret(self, owner: str, column: str) -> Optional[str]:
        """The sealed token in a secret column of the row keyed ``owner``, or None."""
        table, key = _secret_location(column)
        rows = self._read(
            "SELECT %s AS token FROM %s WHERE %s = ?" % (column, table, key), (owner,), "reading a secret"
        )
        return rows[0]["token"] if rows else None

    def get_secrets(self, owners: Sequence[str], column: str) -> Dict[str, Optional[str]]:
        """get_secret of many rows in one query (per IN_BATCH): owner -> token or None."""
        table, key = _secret_location(column)
        found: Dict[str, Optional[str]] = {owner: None for owner in owners}
        for chunk, marks in in_chunks(owners):
            for row in self._read(
                "SELECT %s AS owner, %s AS token FROM %s WHERE %s IN (%s)" % (key, column, table, key, marks),
                chunk,
                "reading secrets",
            ):
                found[row["owner"]] = row["token"]
        return found

    def set_secret(self, owner: str, column: str, token: Optional[str]) -> None:
        table, key = _secret_location(column)
        with self.transaction("storing a secret") as cur:
            cur.execute("UPDATE %s SET %s = ? WHERE %s = ?" % (table, column, key), (token, owner))

    def all_secrets(self) -> List[Tuple[str, str, str]]:
        """Every stored secret as (owner, column, token)."""
        found = []
        for column, (table, key) in sorted(SECRET_COLUMNS.items()):
            for row in self._read(
                "SELECT %s AS owner, %s AS token FROM %s WHERE %s IS NOT NULL "
                "ORDER BY %s" % (key, column, table, column, key)
            ):
                found.append((row["owner"], column, row["token"]))
        return found

    def replace_secrets(self, updates: List[Tuple[str, str, str, str]]) -> None:
        """Swap tokens in one transaction: (owner, column, old token, new token). A row
        whose token changed meanwhile aborts the whole swap."""
        with self.transaction("re-encrypting secrets") as cur:
            for owner, column, old, new in updates:
                table, key = _secret_location(column)
                cur.execute(
                    "UPDATE %s SET %s = ? WHERE %s = ? AND %s = ?" % (table, column, key, column), (new, owner, old)
                )
                if cur.raw.rowcount != 1:
                    raise StoreError(
                        "the secret %s of %s changed during the rotation; nothing "
                        "was re-encrypted, run it again" % (column, owner)
                    )

    # -- networks ---------------------------------------------------------------------------
    def get_network(self, name: str, host: str) -> Optional[Dict[str, Any]]:
        rows = self._read("SELECT * FROM networks WHERE name = ? AND host = ?", (name, host), "reading a network")
        if not rows:
            return None
        row = dict(rows[0])
        row["spec"], row["managed"] = json.loads(row["spec"]), bool(row["managed"])
        return row

    def put_network(self, name: str, host: str, mode: str, spec: Dict[str, Any], managed: bool) -> None:
        now = utc_now()
        with self.transaction("recording network %s" % name) as cur:
            cur.execute("DELETE FROM networks WHERE name = ? AND host = ?", (name, host))
            cur.execute(
                "INSERT INTO networks VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, host, mode, json.dumps(spec, sort_keys=True), managed, now, now),
            )

    def delete_network(self, name: str, host: str) -> None:
        with self.transaction("removing network %s" % name) as cur:
            cur.execute("DELETE FROM networks WHERE name = ? AND host = ?", (name, host))

    # -- external snapshot layers -----------------------------------------------------------
    def list_layers(self, vm_uuid: str) -> List[Dict[str, Any]]:
        return self._read(
            "SELECT base_path, seq, snapshot, overlay FROM disk_layers WHERE vm_uuid = ? ORDER BY base_path, seq",
            (vm_uuid,),
            "reading snapshot layers",
        )

    def add_layers(self, vm_uuid: str, layers: List[Tuple[str, int, str, str]]) -> None:
        """(base_path, seq, snapshot, overlay) rows, in one transaction."""
        with self.transaction("recording snapshot layers") as cur:
            for base_path, seq, snapshot, overlay in layers:
                cur.execute(
                    "INSERT INTO disk_layers VALUES (?, ?, ?, ?, ?, ?)",
                    (vm_uuid, base_path, seq, snapshot, overlay, utc_now()),
                )

    def delete_layer(self, vm_uuid: str, base_path: str, seq: int) -> None:
        with self.transaction("dropping a snapshot layer") as cur:
            cur.execute(
                "DELETE FROM disk_layers WHERE vm_uuid = ? AND base_path = ? AND seq = ?", (vm_uuid, base_path, seq)
            )

    # -- resource journal -----------------------------------------------------------------
    def journal_add(self, vm_uuid: str, kind: str, ref: str) -> None:
        with self.transaction("journaling a resource") as cur:
            cur.execute(
                "INSERT INTO resources VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (vm_uuid, kind, ref, utc_now())
            )

    def journal_remove(self, vm_uuid: str, kind: str, ref: str) -> None:
        with self.transaction("dropping a resource from the journal") as cur:
            cur.execute("DELETE FROM resources WHERE vm_uuid = ? AND kind = ? AND ref = ?", (vm_uuid, kind, ref))

    def journal_add_many(self, vm_uuid: str, entries: Sequence[Tuple[str, str]]) -> None:
        """journal_add of several (kind, ref) in one transaction: a start journals all its
        files at once (one commit, not one per file)."""
        if not entries:
            return
        now = utc_now()
        with self.transaction("journaling resources") as cur:
            for kind, ref in entries:
                cur.execute(
                    "INSERT INTO resources VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (vm_uuid, kind, ref, now)
                )

    def journal_remove_many(self, vm_uuid: str, entries: Sequence[Tuple[str, str]]) -> None:
        """journal_remove of several (kind, ref) in one transaction."""
        if not entries:
            return
        with self.transaction("dropping resources from the journal") as cur:
            for kind, ref in entries:
                cur.execute("DELETE FROM resources WHERE vm_uuid = ? AND kind = ? AND ref = ?", (vm_uuid, kind, ref))

    def journal_list(self, vm_uuid: str) -> List[Tuple[str, str]]:
        rows = self._read(
            "SELECT kind, ref FROM resources WHERE vm_uuid = ? ORDER BY created_at, kind, ref",
            (vm_uuid,),
            "reading the journal",
        )
        return [(row["kind"], row["ref"]) for row in rows]

    def journal_lists(self, vm_uuids: Sequence[str]) -> Dict[str, List[Tuple[str, str]]]:
        """journal_list of many VMs in one query (per IN_BATCH): uuid -> [(kind, ref)]."""
        found: Dict[str, List[Tuple[str, str]]] = {uuid: [] for uuid in vm_uuids}
        for chunk, marks in in_chunks(vm_uuids):
            for row in self._read(
                "SELECT vm_uuid, kind, ref FROM resources WHERE vm_uuid IN (%s) "
                "ORDER BY vm_uuid, created_at, kind, ref" % marks,
                chunk,
                "reading the journal",
            ):
                found[row["vm_uuid"]].append((row["kind"], row["ref"]))
        return found


def _secret_location(column: str) -> Tuple[str, str]:
    if column not in SECRET_COLUMNS:  # names are spliced into SQL: allow-list only
        raise ValueError("not a secret column: %r" % column)
    return SECRET_COLUMNS[column]


class _Cursor:
    """A cursor that takes '?' placeholders on every backend."""

    def __init__(self, cur: Any, sql: Any):
        self.raw = cur
        self._adapt = sql

    def execute(self, sql: str, args: Tuple[Any, ...] = ()) -> None:
        self.raw.execute(self._adapt(sql), args)

    def fetchone(self) -> Any:
        return self.raw.fetchone()
