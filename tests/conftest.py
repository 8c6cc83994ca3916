# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-wide set-up: the collection is imported from the work tree."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from collection_path import install_on_sys_path  # noqa: E402

COLLECTIONS_ROOT = install_on_sys_path()


# -- PostgreSQL ---------------------------------------------------------------------------
# Started on demand; each test that needs PostgreSQL gets a database of its own.
import time  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
from pgtest import pg_server, with_database  # noqa: E402


@pytest.fixture(scope="session")
def pg_admin_url():
    return pg_server("start")


@pytest.fixture
def pg_url(pg_admin_url):
    import psycopg2
    import psycopg2.errors

    name = "iv_%s" % uuid.uuid4().hex[:12]
    admin = psycopg2.connect(pg_admin_url)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE %s" % name)
    admin.close()
    yield with_database(pg_admin_url, name)
    pg_server("start")  # a fault test may have stopped the server
    admin = psycopg2.connect(pg_admin_url)
    admin.autocommit = True
    # FORCE ends the test's own leftover sessions; an autovacuum worker (a superuser's
    # process) it may not end, so wait for that one to finish instead.
    for attempt in range(40):
        try:
            admin.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
            break
        except (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ObjectInUse):
            if attempt == 39:
                raise
            time.sleep(0.25)
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each store test runs on both backends."""
    if request.param == "sqlite":
        return "sqlite:///%s/state.db" % tmp_path
    return request.getfixturevalue("pg_url")
