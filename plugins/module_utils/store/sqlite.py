# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The embedded SQLite store (the default): one file, WAL mode, writes under BEGIN IMMEDIATE,
and one flock file per VM for locks held across check-then-act."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
import urllib.parse
from typing import Any, ContextManager, Iterator, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import (
    SqlStore,
    describe_holder,
    lock_holder_info,
)


class SqliteStore(SqlStore):
    db_errors = (sqlite3.Error,)

    def __init__(self, path: str, busy_timeout: float = 30.0, job_id: Optional[str] = None, read_only: bool = False):
        self.path = path
        self.lock_dir = path + ".locks"
        self.job_id = job_id
        if read_only:
            self._open_read_only(busy_timeout)
            return
        try:
            for directory in (os.path.dirname(path) or ".", self.lock_dir):
                os.makedirs(directory, mode=0o700, exist_ok=True)
            # The file holds encrypted secrets and host paths: never readable by others, not
            # even when it was made by hand or by an older version with a looser mode.
            if not os.path.lexists(path):
                with contextlib.suppress(FileExistsError):  # another process made it first
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            for existing in (path, path + "-wal", path + "-shm"):
                if os.path.exists(existing) and os.stat(existing).st_mode & 0o077:
                    os.chmod(existing, 0o600)
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self._db.execute("PRAGMA foreign_keys=ON")
            # Switching to WAL does not wait on SQLite's busy handler, so processes opening
            # a new database at once take turns here.
            with self._file_lock(".schema", busy_timeout, "the database schema"):
                self._db.execute("PRAGMA journal_mode=WAL")
                self.migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError("cannot open the SQLite state database %s: %s" % (path, exc)) from exc

    def _open_read_only(self, busy_timeout: float) -> None:
        """For readers of the whole fleet (the inventory plugin): the file as it is, neither
        made, nor migrated, nor written (a file URI in mode=ro)."""
        try:
            self._db = sqlite3.connect(
                "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(self.path)),
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise StoreError("cannot open the SQLite state database %s: %s" % (self.path, exc)) from exc

    def describe(self) -> str:
        return self.path

    def close(self) -> None:
        self._db.close()

    def _cursor(self) -> Any:
        return self._db.cursor()

    def _begin(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")  # take the write lock now, not at the first write

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
            pause = 0.001  # flock has no timed wait: poll, backing off up to 10 ms
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StoreError("cannot lock %s: %s" % (what, exc)) from exc
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            "%s is locked by another operation (%s); gave up "
                            "after %g s" % (what, _read_holder(path), timeout)
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.01)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(lock_holder_info(self.job_id)).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _read_holder(path: str) -> str:
    try:
        with open(path) as fh:
            return describe_holder(json.load(fh))
    except (OSError, ValueError):
        return describe_holder(None)
