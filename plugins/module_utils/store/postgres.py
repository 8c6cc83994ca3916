# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The shared PostgreSQL store: for many hypervisors and many concurrent jobs.

Per-VM locks are session-level advisory locks on the store's own connection, so they
vanish with a crashed holder's connection; the vm_locks table says who holds one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import zlib
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import (
    SqlStore,
    describe_holder,
    lock_holder_info,
)

# Found, not imported: psycopg2 is loaded by the first PostgresStore (a task on SQLite never
# pays for it); a psycopg2 that is present but does not import fails there as StoreError.
HAS_PSYCOPG2 = importlib.util.find_spec("psycopg2") is not None
PSYCOPG2_IMPORT_ERROR = None if HAS_PSYCOPG2 else "ModuleNotFoundError: No module named 'psycopg2'"

# Advisory lock keys are two int4s: a namespace for Infinivirt, then a hash of the name.
LOCK_NAMESPACE_VM = 0x1F1F0001
LOCK_NAMESPACE_SCHEMA = 0x1F1F0002
LOCK_NAMESPACE_CLAIMS = 0x1F1F0003


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":%s@" % parts.password, ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _name_key(name: str) -> int:
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= (1 << 31) else value  # as a signed int4


class PostgresStore(SqlStore):
    placeholder = "%s"

    def __init__(
        self,
        url: str,
        connect_timeout: int = 10,
        job_id: Optional[str] = None,
        password: Optional[str] = None,
        read_only: bool = False,
    ):
        try:
            import psycopg2
            import psycopg2.errors
        except ImportError as exc:
            raise StoreError(
                "db_url names PostgreSQL but the Python library psycopg2 cannot be imported on this host: %s" % exc
            ) from None
        self._pg = psycopg2
        self.db_errors = (psycopg2.Error,)
        self.url = url
        self.job_id = job_id
        try:
            # A password apart from the URL (the inventory plugin's db_password) is a keyword,
            # which libpq takes over the URL's; it is in no message (describe redacts the URL's).
            extra = {"password": password} if password else {}
            self._db = psycopg2.connect(url, connect_timeout=connect_timeout, application_name="infinivirt", **extra)
            self._db.autocommit = True  # transactions are explicit BEGIN ... COMMIT
            if read_only:  # readers of the whole fleet (the inventory plugin) write nothing
                self._db.set_session(readonly=True, autocommit=True)
        except psycopg2.Error as exc:
            raise StoreError(
                "cannot connect to the PostgreSQL state database %s: %s" % (self.describe(), str(exc).strip())
            ) from exc
        if not read_only:
            self.migrate()

    def describe(self) -> str:
        return redact(self.url)

    def close(self) -> None:
        with contextlib.suppress(self._pg.Error):
            self._db.close()

    def _cursor(self) -> Any:
        return self._db.cursor()

    def _begin(self, cur: Any) -> None:
        cur.execute("BEGIN")

    def _schema_lock(self, cur: Any) -> None:
        # Two hosts starting at once must not both create the tables.
        cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_NAMESPACE_SCHEMA,))

    def _claim_lock(self, cur: Any, host: str, kind: str) -> None:
        # READ COMMITTED lets two claims read before either inserts: take turns per host
        # and kind until the transaction ends.
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE_CLAIMS, _name_key(host + "/" + kind)))

    @contextlib.contextmanager
    def vm_lock(self, name: str, timeout: float) -> Iterator[None]:
        key = (LOCK_NAMESPACE_VM, _name_key(name))
        with self._errors("locking VM %s" % name):
            cur = self._db.cursor()
            # The server queues waiters and hands the lock over at once; lock_timeout bounds
            # the wait.
            cur.execute("SET lock_timeout = %s", ("%dms" % max(1, int(timeout * 1000)),))
            try:
                cur.execute("SELECT pg_advisory_lock(%s, %s)", key)
            except self._pg.errors.LockNotAvailable:
                raise LockTimeout(
                    "VM %s is locked by another operation (%s); gave up after "
                    "%g s" % (name, self._holder(name), timeout)
                ) from None
            finally:
                cur.execute("RESET lock_timeout")
            info = lock_holder_info(self.job_id)
            cur.execute(
                "INSERT INTO vm_locks (name, host, pid, job_id, since) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "job_id = EXCLUDED.job_id, since = EXCLUDED.since",
                (name, info["host"], info["pid"], info["job_id"], info["since"]),
            )
        try:
            yield
        finally:
            # A lost connection has released the lock already.
            with contextlib.suppress(self._pg.Error):
                self._db.cursor().execute("SELECT pg_advisory_unlock(%s, %s)", key)

    def _holder(self, name: str) -> str:
        rows = self._read("SELECT host, pid, job_id, since FROM vm_locks WHERE name = ?", (name,))
        return describe_holder(rows[0] if rows else None)
