# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The state store on both backends (SQLite file, real PostgreSQL server): migrations,
rows, the resource journal and per-VM locks, with concurrent processes."""

from __future__ import annotations

import multiprocessing
import os
import stat

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout, SpecError, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import LATEST
from ansible_collections.infinivirt.core.plugins.module_utils.vm.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.spec import VmSpec

REVIEW_COLUMNS = {
    "tap_device_name", "bridge", "network_model", "network_queues", "graphic_protocol",
    "graphic_port", "graphic_password", "graphic_host", "machine_type", "cpu_model",
    "disk_bus", "disk_cache_mode", "io_threads", "assigned_gpu_bus", "gpu_rom_file",
    "gpu_audio_bus", "memory_balloon", "hugepages", "numa_config", "cpu_pinning",
    "uefi_firmware", "secureboot",
}


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def record(name="vm1", **spec):
    return VmRecord(uuid="u-" + name, name=name, host="h1", status="stopped",
                    spec=VmSpec(name=name, **spec))


def test_schema_has_the_review_columns(store):
    cols = {r["name"] for r in store._read(
        "SELECT column_name AS name FROM information_schema.columns "
        "WHERE table_name = 'machine_configuration'")} if store.placeholder == "%s" else {
        r["name"] for r in store._read("PRAGMA table_info(machine_configuration)")}
    assert REVIEW_COLUMNS <= cols
    assert store.schema_version() == LATEST


def test_sqlite_file_is_private(tmp_path):
    store = open_store("sqlite:///%s/db/state.db" % tmp_path)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    store.close()


def test_reopening_does_not_reapply_migrations(db_url):
    open_store(db_url).close()
    store = open_store(db_url)
    rows = store._read("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, LATEST + 1))
    store.close()


def _open(url):
    open_store(url).close()


def test_concurrent_first_opens_migrate_once(db_url):
    procs = [multiprocessing.Process(target=_open, args=(db_url,)) for _n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    store = open_store(db_url)
    rows = store._read("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, LATEST + 1))
    store.close()


def test_insert_get_update_delete(store):
    rec = record(vcpus=2, cpu_flags=("+a",))
    store.insert_vm(rec)
    got = store.get_vm("vm1")
    assert got.spec == rec.spec and got.version == 1 and got.created_at
    got.spec = VmSpec(name="vm1", vcpus=3)
    got.running_spec = rec.spec
    store.update_vm(got)
    assert got.version == 2
    again = store.get_vm("vm1")
    assert again.spec.vcpus == 3 and again.version == 2 and again.running_spec == rec.spec
    assert [r.name for r in store.list_vms()] == ["vm1"]
    assert store.list_vms(host="other") == []
    store.delete_vm(rec.uuid)
    assert store.get_vm("vm1") is None
    assert store._read("SELECT COUNT(*) AS n FROM machine_configuration")[0]["n"] == 0


def test_names_are_unique(store):
    store.insert_vm(record())
    with pytest.raises(StoreError) as err:
        store.insert_vm(VmRecord(uuid="other", name="vm1", host="h", status="stopped",
                                 spec=VmSpec(name="vm1")))
    assert "creating VM vm1 failed" in str(err.value)
    assert [r.uuid for r in store.list_vms()] == ["u-vm1"], "the failed insert left nothing"


def test_journal(store):
    store.insert_vm(record())
    store.journal_add("u-vm1", "pidfile", "/run/x.pid")
    store.journal_add("u-vm1", "pidfile", "/run/x.pid")  # idempotent
    store.journal_add("u-vm1", "qmp_socket", "/run/x.qmp")
    assert sorted(store.journal_list("u-vm1")) == [("pidfile", "/run/x.pid"), ("qmp_socket", "/run/x.qmp")]
    store.journal_remove("u-vm1", "pidfile", "/run/x.pid")
    assert store.journal_list("u-vm1") == [("qmp_socket", "/run/x.qmp")]


def _hold_lock(url, ready, release):
    store = open_store(url, job_id="4711")
    with store.vm_lock("vm1", timeout=5):
        ready.set()
        release.wait(60)


class LockHolder:
    """Another process that holds VM vm1's lock until released or killed."""

    def __init__(self, url):
        self.ready, self.release = multiprocessing.Event(), multiprocessing.Event()
        self.process = multiprocessing.Process(target=_hold_lock, args=(url, self.ready, self.release))

    def __enter__(self):
        self.process.start()
        assert self.ready.wait(60), "the holder never got the lock"
        return self.process

    def __exit__(self, *exc):
        if self.process.is_alive():  # a killed holder may have died holding the Event's lock
            self.release.set()
        self.process.join(10)


def test_lock_timeout_names_the_holder(db_url):
    with LockHolder(db_url) as holder:
        store = open_store(db_url)
        with pytest.raises(LockTimeout) as err:
            with store.vm_lock("vm1", timeout=0.3):
                pass
        message = str(err.value)
        assert "VM vm1 is locked" in message and "PID %d" % holder.pid in message
        assert "(job 4711)" in message
        with store.vm_lock("vm2", timeout=0.3):  # other VMs are not blocked
            pass
        store.close()


def test_lock_of_a_killed_holder_is_released(db_url):
    with LockHolder(db_url) as holder:
        holder.kill()
        holder.join(10)
        store = open_store(db_url)
        with store.vm_lock("vm1", timeout=10):
            pass
        store.close()


@pytest.mark.parametrize("url,phrase", [
    ("sqlite:///relative.db", "absolute"),
    ("mysql://x", "must start with sqlite:/// or postgresql://"),
])
def test_bad_db_urls(url, phrase):
    with pytest.raises(SpecError) as err:
        open_store(url)
    assert err.value.field == "db_url" and phrase in str(err.value)


def test_unreachable_postgresql_is_a_clear_error_without_the_password():
    with pytest.raises(StoreError) as err:
        open_store("postgresql://infinivirt:hunter2@127.0.0.1:1/nothing")
    message = str(err.value)
    assert message.startswith("cannot connect to the PostgreSQL state database "
                              "postgresql://infinivirt:********@127.0.0.1:1/nothing")
    assert "hunter2" not in message
