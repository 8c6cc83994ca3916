# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Open the store a db_url names."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.store.sqlite import SqliteStore

DEFAULT_DB_URL = "sqlite:////var/lib/infinivirt/infinivirt.db"


def open_store(db_url: str) -> SqliteStore:
    if db_url.startswith("sqlite:///"):
        path = db_url[len("sqlite:///"):]
        if not path.startswith("/") or path.endswith("/"):
            raise SpecError("db_url", "an SQLite URL must name an absolute file: sqlite:////path/to.db")
        return SqliteStore(path)
    if db_url.startswith(("postgresql://", "postgres://")):
        raise SpecError("db_url", "PostgreSQL is not supported yet; use an sqlite:/// URL")
    raise SpecError("db_url", "must start with sqlite:/// (for example %s)" % DEFAULT_DB_URL)
