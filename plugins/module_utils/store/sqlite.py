# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded SQLite store (the default): one file, WAL mode, writes under BEGIN IMMEDIATE,
and one flock file per VM for locks held across check-then-act."""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sqlite3
import time
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.spec import SPEC_FIELDS, VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import MIGRATIONS
from ansible_collections.infinivirt.core.plugins.module_utils.store.records import VmRecord

_VM_COLUMNS = ("uuid", "name", "host", "status", "version", "qemu_pid", "qmp_socket_path",
               "serial_log_path", "running_spec", "launch_accel", "launch_cpu", "created_at",
               "updated_at")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _spec_to_columns(spec: VmSpec) -> Dict[str, Any]:
    data = spec.to_dict()
    data.pop("name")
    data["cpu_flags"] = json.dumps(data["cpu_flags"])
    return data


def _spec_from_row(name: str, row: sqlite3.Row) -> VmSpec:
    data = {f: row[f] for f in SPEC_FIELDS if f != "name"}
    data["cpu_flags"] = json.loads(data["cpu_flags"] or "[]")
    data["name"] = name
    return VmSpec.from_dict(data)


class SqliteStore:
    def __init__(self, path: str, busy_timeout: float = 30.0):
        self.path = path
        self.lock_dir = path + ".locks"
        try:
            for directory in (os.path.dirname(path) or ".", self.lock_dir):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            if not os.path.exists(path):
                # The file will hold encrypted secrets: never world-readable.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA foreign_keys=ON")
            # Switching to WAL does not wait on SQLite's busy handler, so processes opening
            # a new database at once take turns here.
            with self._file_lock(".schema", busy_timeout, "the database schema"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError("cannot open the SQLite state database %s: %s" % (path, exc)) from exc

    def close(self) -> None:
        self._db.close()

    # -- transactions and migrations ---------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError("cannot write to the state database %s: %s" % (self.path, exc)) from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return row[0] or 0

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        with self.transaction() as db:  # BEGIN IMMEDIATE: concurrent openers wait here
            current = self.schema_version()
            for number, statements in MIGRATIONS:
                if number <= current:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, utc_now()))

    # -- VMs ----------------------------------------------------------------------------
    def _select(self, where: str, args: Tuple[Any, ...]) -> List[VmRecord]:
        rows = self._db.execute(
            "SELECT v.*, c.* FROM vms v JOIN machine_configuration c ON c.vm_uuid = v.uuid "
            + where + " ORDER BY v.name", args).fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> VmRecord:
        running = row["running_spec"]
        return VmRecord(
            uuid=row["uuid"], name=row["name"], host=row["host"], status=row["status"],
            version=row["version"], qemu_pid=row["qemu_pid"],
            qmp_socket_path=row["qmp_socket_path"], serial_log_path=row["serial_log_path"],
            running_spec=VmSpec.from_dict(json.loads(running)) if running else None,
            launch_accel=row["launch_accel"], launch_cpu=row["launch_cpu"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            spec=_spec_from_row(row["name"], row),
        )

    def get_vm(self, name: str) -> Optional[VmRecord]:
        found = self._select("WHERE v.name = ?", (name,))
        return found[0] if found else None

    def list_vms(self, host: Optional[str] = None) -> List[VmRecord]:
        if host is None:
            return self._select("", ())
        return self._select("WHERE v.host = ?", (host,))

    def insert_vm(self, record: VmRecord) -> None:
        now = utc_now()
        record.created_at = record.updated_at = now
        with self.transaction() as db:
            db.execute("INSERT INTO vms (%s) VALUES (%s)" % (
                ", ".join(_VM_COLUMNS), ", ".join("?" * len(_VM_COLUMNS))),
                self._vm_values(record))
            columns = _spec_to_columns(record.spec)
            db.execute("INSERT INTO machine_configuration (vm_uuid, %s) VALUES (?, %s)" % (
                ", ".join(columns), ", ".join("?" * len(columns))),
                (record.uuid,) + tuple(columns.values()))

    def update_vm(self, record: VmRecord) -> None:
        """Write the record back, bumping its version."""
        record.updated_at = utc_now()
        record.version += 1
        with self.transaction() as db:
            db.execute("UPDATE vms SET %s WHERE uuid = ?" % ", ".join(
                "%s = ?" % c for c in _VM_COLUMNS[1:]),
                self._vm_values(record)[1:] + (record.uuid,))
            columns = _spec_to_columns(record.spec)
            db.execute("UPDATE machine_configuration SET %s WHERE vm_uuid = ?" % ", ".join(
                "%s = ?" % c for c in columns), tuple(columns.values()) + (record.uuid,))

    @staticmethod
    def _vm_values(record: VmRecord) -> Tuple[Any, ...]:
        running = json.dumps(record.running_spec.to_dict()) if record.running_spec else None
        return (record.uuid, record.name, record.host, record.status, record.version,
                record.qemu_pid, record.qmp_socket_path, record.serial_log_path, running,
                record.launch_accel, record.launch_cpu, record.created_at, record.updated_at)

    def delete_vm(self, uuid: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM machine_configuration WHERE vm_uuid = ?", (uuid,))
            db.execute("DELETE FROM resources WHERE vm_uuid = ?", (uuid,))
            db.execute("DELETE FROM vms WHERE uuid = ?", (uuid,))

    # -- resource journal ---------------------------------------------------------------
    def journal_add(self, vm_uuid: str, kind: str, ref: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO resources VALUES (?, ?, ?, ?)",
                       (vm_uuid, kind, ref, utc_now()))

    def journal_remove(self, vm_uuid: str, kind: str, ref: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM resources WHERE vm_uuid = ? AND kind = ? AND ref = ?",
                       (vm_uuid, kind, ref))

    def journal_list(self, vm_uuid: str) -> List[Tuple[str, str]]:
        rows = self._db.execute("SELECT kind, ref FROM resources WHERE vm_uuid = ? "
                                "ORDER BY created_at, kind, ref", (vm_uuid,)).fetchall()
        return [(row["kind"], row["ref"]) for row in rows]

    # -- per-VM lock ----------------------------------------------------------------------
    def vm_lock(self, name: str, timeout: float) -> ContextManager[None]:
        """Hold an exclusive lock for this VM; the kernel drops it if the holder dies."""
        return self._file_lock(name, timeout, "VM %s" % name)

    @contextlib.contextmanager
    def _file_lock(self, key: str, timeout: float, what: str) -> Iterator[None]:
        path = os.path.join(self.lock_dir, key + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StoreError("cannot lock %s: %s" % (what, exc)) from exc
                    if time.monotonic() >= deadline:
                        raise LockTimeout("%s is locked by another operation (%s); gave up "
                                          "after %g s" % (what, _holder(path), timeout)) from exc
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "since": utc_now()}).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _holder(path: str) -> str:
    try:
        with open(path) as fh:
            info = json.load(fh)
        return "held by PID %s on %s since %s" % (info["pid"], info["host"], info["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
