# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Open the store a db_url names."""

from __future__ import annotations

import os
from typing import Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import SqlStore
from ansible_collections.infinivirt.core.plugins.module_utils.store.sqlite import SqliteStore

DEFAULT_DB_URL = "sqlite:////var/lib/infinivirt/infinivirt.db"


def open_store(
    db_url: str, job_id: Optional[str] = None, password: Optional[str] = None, read_only: bool = False
) -> SqlStore:
    """The store of ``db_url``; ``password``: PostgreSQL's, when not in the URL; ``read_only``:
    open the database as it is, neither made nor migrated, and write nothing."""
    if db_url.startswith("sqlite:///"):
        path = db_url[len("sqlite:///") :]
        if not path.startswith("/") or path.endswith("/"):
            raise SpecError("db_url", "an SQLite URL must name an absolute file: sqlite:////path/to.db")
        directory = os.path.dirname(path)
        if not os.path.isdir(directory) and db_url != DEFAULT_DB_URL:
            # A typo would silently start an empty inventory; only the default is made.
            raise SpecError(
                "db_url",
                "the directory %s of the database does not exist; create it (mode 0700) or use the "
                "default %s" % (directory, DEFAULT_DB_URL),
            )
        return SqliteStore(path, job_id=job_id, read_only=read_only)
    if db_url.startswith(("postgresql://", "postgres://")):
        # Imported only for a PostgreSQL URL (psycopg2 comes with it).
        from ansible_collections.infinivirt.core.plugins.module_utils.store.postgres import PostgresStore

        return PostgresStore(db_url, job_id=job_id, password=password, read_only=read_only)
    raise SpecError("db_url", "must start with sqlite:/// or postgresql:// (for example %s)" % DEFAULT_DB_URL)
