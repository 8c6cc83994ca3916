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


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def db_url(request, tmp_path):
    """A store URL: SQLite, and PostgreSQL too where the store is the test's subject
    (marker ``both_backends``; see pytest_generate_tests)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return "sqlite:///%s/state.db" % tmp_path
    return request.getfixturevalue("pg_url")


def _parametrizes(metafunc, name: str) -> bool:
    return any(name in _argnames(m) for m in metafunc.definition.iter_markers("parametrize"))


def _argnames(marker) -> list:
    names = marker.args[0]
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


def pytest_generate_tests(metafunc):
    """Module behaviour goes through the same SQL on both backends (store/base.py), so
    tests run on SQLite only unless the store itself is their subject (locks, races,
    transactions, several hosts, what a database dump holds): those say ``both_backends``."""
    if "db_url" not in metafunc.fixturenames or _parametrizes(metafunc, "db_url"):
        return
    both = metafunc.definition.get_closest_marker("both_backends") is not None
    metafunc.parametrize("db_url", BACKENDS if both else BACKENDS[:1], indirect=True)


# Files whose tests change the same host state run on one pytest-xdist worker, one after the
# other: the role's runs and the hugepages test set the host's real 2M hugepage pool.
SHARED_HOST_STATE = {
    "tests/integration/test_role_host.py": "hugepage pools",
    "tests/integration/test_vm_tuning.py": "hugepage pools",
}
# The longest files start first, so that no worker is left with one of them at the end.
LONGEST_FIRST = (
    "tests/integration/test_role_host.py",
    "tests/lint/test_sanity.py",
    "tests/integration/test_cloud_guest.py",
    "tests/integration/test_monitor.py",
    "tests/integration/test_snapshot_faults.py",
    "tests/integration/test_snapshots.py",
    "tests/integration/test_cores.py",
    "tests/integration/test_start_faults.py",
    "tests/integration/test_backup.py",
    "tests/integration/test_vm_clones.py",
    "tests/integration/test_disk_module.py",
)


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; the per-core venvs have no xdist
def pytest_xdist_make_scheduler(config, log):
    """scripts/test.sh runs three workers: a file's tests stay on one worker (module-scoped
    guests boot once), and the files of SHARED_HOST_STATE share one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_HOST_STATE.get(_file_of(nodeid), _file_of(nodeid))

    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Markers a test earns from its fixtures (the rest each file declares in pytestmark),
    and the longest files first."""
    integration = [item for item in items if "/integration/" in item.nodeid]
    undeclared = sorted({_file_of(item.nodeid) for item in integration if not _declares(item)})
    if undeclared:  # else the quick tier would pull in whatever such a file starts
        raise pytest.UsageError("declare pytestmark (what the file needs, pytest.ini) in: %s" % ", ".join(undeclared))
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_file_of(item.nodeid), len(rank)))  # stable: same order otherwise
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if names & {"pg_url", "pg_admin_url"} or "postgresql" in params:
            item.add_marker(pytest.mark.postgres)
        if "guest" in names:
            item.add_marker(pytest.mark.guest)
            item.add_marker(pytest.mark.qemu)


def _declares(item) -> bool:
    return hasattr(getattr(item, "module", None), "pytestmark")
