# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SQLite store: migrations, rows, journal and per-VM locks, on real files."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import LATEST
from ansible_collections.infinivirt.core.plugins.module_utils.store.records import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.store.sqlite import SqliteStore

REVIEW_COLUMNS = {
    "tap_device_name", "bridge", "network_model", "network_queues", "graphic_protocol",
    "graphic_port", "graphic_password", "graphic_host", "machine_type", "cpu_model",
    "disk_bus", "disk_cache_mode", "io_threads", "assigned_gpu_bus", "gpu_rom_file",
    "gpu_audio_bus", "memory_balloon", "hugepages", "numa_config", "cpu_pinning",
    "uefi_firmware", "secureboot",
}


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "db" / "state.db"))
    yield s
    s.close()


def record(name="vm1", **spec):
    return VmRecord(uuid="u-" + name, name=name, host="h1", status="stopped",
                    spec=VmSpec(name=name, **spec))


def test_schema_has_the_review_columns(store):
    cols = {r[1] for r in store._db.execute("PRAGMA table_info(machine_configuration)")}
    assert REVIEW_COLUMNS <= cols
    assert store.schema_version() == LATEST


def test_database_file_is_private(store):
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_reopening_does_not_reapply_migrations(tmp_path):
    path = str(tmp_path / "s.db")
    SqliteStore(path).close()
    SqliteStore(path).close()
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM schema_migrations").fetchone()
    assert rows[0] == LATEST


def _open(path):
    SqliteStore(path).close()


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = str(tmp_path / "race.db")
    procs = [multiprocessing.Process(target=_open, args=(path,)) for _n in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    rows = sqlite3.connect(path).execute("SELECT version FROM schema_migrations").fetchall()
    assert rows == [(LATEST,)]


def test_insert_get_update_delete(store):
    rec = record(vcpus=2, cpu_flags=("+a",))
    store.insert_vm(rec)
    got = store.get_vm("vm1")
    assert got.spec == rec.spec and got.version == 1 and got.created_at
    got.spec = VmSpec(name="vm1", vcpus=3)
    got.running_spec = rec.spec
    store.update_vm(got)
    again = store.get_vm("vm1")
    assert again.spec.vcpus == 3 and again.version == 2 and again.running_spec == rec.spec
    store.delete_vm(rec.uuid)
    assert store.get_vm("vm1") is None
    assert store._db.execute("SELECT COUNT(*) FROM machine_configuration").fetchone()[0] == 0


def test_names_are_unique(store):
    store.insert_vm(record())
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_vm(VmRecord(uuid="other", name="vm1", host="h", status="stopped",
                                 spec=VmSpec(name="vm1")))


def test_journal(store):
    store.insert_vm(record())
    store.journal_add("u-vm1", "pidfile", "/run/x.pid")
    store.journal_add("u-vm1", "pidfile", "/run/x.pid")  # idempotent
    store.journal_add("u-vm1", "qmp_socket", "/run/x.qmp")
    assert store.journal_list("u-vm1") == [("pidfile", "/run/x.pid"), ("qmp_socket", "/run/x.qmp")]
    store.journal_remove("u-vm1", "pidfile", "/run/x.pid")
    assert store.journal_list("u-vm1") == [("qmp_socket", "/run/x.qmp")]


def _hold_lock(path, ready, release):
    s = SqliteStore(path)
    with s.vm_lock("vm1", timeout=5):
        ready.set()
        release.wait(30)


def test_lock_timeout_names_the_holder(tmp_path):
    path = str(tmp_path / "l.db")
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        s = SqliteStore(path)
        with pytest.raises(LockTimeout) as err:
            with s.vm_lock("vm1", timeout=0.3):
                pass
        assert "PID %d" % holder.pid in str(err.value)
        with s.vm_lock("vm2", timeout=0.3):  # other VMs are not blocked
            pass
    finally:
        release.set()
        holder.join(10)


def test_lock_of_a_killed_holder_is_released(tmp_path):
    path = str(tmp_path / "k.db")
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(path, ready, release))
    holder.start()
    assert ready.wait(30)
    holder.kill()
    holder.join(10)
    with SqliteStore(path).vm_lock("vm1", timeout=2):
        pass


@pytest.mark.parametrize("url,phrase", [
    ("sqlite:///relative.db", "absolute"),
    ("mysql://x", "must start with sqlite:///"),
    ("postgresql://u:p@h/db", "not supported yet"),
])
def test_bad_db_urls(url, phrase):
    with pytest.raises(SpecError) as err:
        open_store(url)
    assert err.value.field == "db_url" and phrase in str(err.value)
