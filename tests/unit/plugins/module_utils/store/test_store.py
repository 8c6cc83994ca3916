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
from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import LATEST, MIGRATIONS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import SPEC_FIELDS, VmSpec

pytestmark = [pytest.mark.both_backends]

# machine_configuration holds exactly the spec's fields (name is the vms row's) and the sealed
# display password: every column is read and written, none is left over.
SPEC_COLUMNS = (set(SPEC_FIELDS) - {"name"}) | {"vm_uuid", "graphics_password", "cloud_init", "unattend"}  # + sealed

# What migration 1 made for features that never came, and migration 12 dropped.
DROPPED_COLUMNS = {
    "tap_device_name",
    "bridge",
    "network_model",
    "network_queues",
    "disk_bus",
    "disk_cache_mode",
    "io_threads",
    "assigned_gpu_bus",
    "gpu_rom_file",
    "gpu_audio_bus",
    "numa_config",
}
# Migration 12 also dropped memory_balloon, hugepages and cpu_pinning, which nothing used;
# migration 15 brought them back as the spec fields of the same names (memory tuning).


def columns(store, table):
    if store.placeholder == "%s":
        return {
            r["name"]
            for r in store._read(
                "SELECT column_name AS name FROM information_schema.columns WHERE table_name = ?", (table,)
            )
        }
    return {r["name"] for r in store._read("PRAGMA table_info(%s)" % table)}


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def record(name="vm1", **spec):
    return VmRecord(uuid="u-" + name, name=name, host="h1", status="stopped", spec=VmSpec(name=name, **spec))


def test_machine_configuration_columns_are_the_spec_fields(store):
    cols = columns(store, "machine_configuration")
    assert cols == SPEC_COLUMNS
    assert not cols & DROPPED_COLUMNS
    assert "launch_graphics_port" in columns(store, "vms")
    assert store.schema_version() == LATEST


def test_sqlite_file_is_private(tmp_path):
    (tmp_path / "db").mkdir()  # a db_url's directory must exist (only the default one is made)
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
    records.insert(store, rec)
    got = records.load(store, "vm1")
    assert got.spec == rec.spec and got.version == 1 and got.created_at
    got.spec = VmSpec(name="vm1", vcpus=3)
    got.running_spec = rec.spec
    records.save(store, got)
    assert got.version == 2
    again = records.load(store, "vm1")
    assert again.spec.vcpus == 3 and again.version == 2 and again.running_spec == rec.spec
    assert [r.name for r in records.load_all(store)] == ["vm1"]
    assert records.load_all(store, host="other") == []
    store.delete_vm(rec.uuid)
    assert records.load(store, "vm1") is None
    assert store._read("SELECT COUNT(*) AS n FROM machine_configuration")[0]["n"] == 0


def test_events_go_with_the_row_and_are_counted_by_kind_and_time(store):
    """The host monitor writes its decision with the row, and counts restarts in the store."""
    rec = record()
    records.insert(store, rec)
    event = {"vm_uuid": rec.uuid, "vm_name": "vm1", "host": "h"}
    stamps = ["2026-01-01T00:00:%02d.000000+00:00" % s for s in (1, 30, 59)]
    records.save(store, rec, [dict(event, kind="restarted", at=at) for at in stamps] + [dict(event, kind="crashed")])
    assert records.load(store, "vm1").version == rec.version == 2
    assert store.count_events(rec.uuid, "restarted", "2026-01-01T00:00:30.000000+00:00") == 2
    assert store.count_events(rec.uuid, "restarted", "2026-01-01T00:00:00.000000+00:00") == 3
    assert store.count_events(rec.uuid, "crashed", "2026-01-01T00:00:00.000000+00:00") == 1
    with pytest.raises(StoreError):  # one transaction: a bad event takes the row change back
        records.save(store, rec, [dict(event, kind=None)])
    assert records.load(store, "vm1").version == 2 and len(store.list_events(rec.uuid)) == 4


def test_names_are_unique(store):
    records.insert(store, record())
    with pytest.raises(StoreError) as err:
        records.insert(store, VmRecord(uuid="other", name="vm1", host="h", status="stopped", spec=VmSpec(name="vm1")))
    assert "creating VM vm1 failed" in str(err.value)
    assert [r.uuid for r in records.load_all(store)] == ["u-vm1"], "the failed insert left nothing"


def test_journal(store):
    records.insert(store, record())
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


@pytest.mark.parametrize(
    "url,phrase",
    [
        ("sqlite:///relative.db", "absolute"),
        ("mysql://x", "must start with sqlite:/// or postgresql://"),
    ],
)
def test_bad_db_urls(url, phrase):
    with pytest.raises(SpecError) as err:
        open_store(url)
    assert err.value.field == "db_url" and phrase in str(err.value)


def test_unreachable_postgresql_is_a_clear_error_without_the_password():
    with pytest.raises(StoreError) as err:
        open_store("postgresql://infinivirt:hunter2@127.0.0.1:1/nothing")
    message = str(err.value)
    assert message.startswith(
        "cannot connect to the PostgreSQL state database postgresql://infinivirt:********@127.0.0.1:1/nothing"
    )
    assert "hunter2" not in message


# -- migrations 11 and 12 on a database made by the schema before them ----------------------
PREVIOUS = 10  # the schema version before migrations 11 (renames) and 12 (drops)


def _raw_connection(url):
    """A plain connection to the database at ``url``, to build an old schema by hand."""
    if url.startswith("sqlite:///"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite://") :], isolation_level=None)
        return db, db.cursor()
    import psycopg2

    db = psycopg2.connect(url)
    db.autocommit = True
    return db, db.cursor()


def _old_database(url, token):
    """A database at schema version PREVIOUS holding VM old1 as that schema stored it, with
    values in the columns migration 12 drops, and VM old2 with NULLs where rows made before
    a column existed have them."""
    db, cur = _raw_connection(url)
    cur.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for number, statements in MIGRATIONS:
        if number <= PREVIOUS:
            for statement in statements:
                cur.execute(statement)
            cur.execute("INSERT INTO schema_migrations VALUES (%d, '2026-01-01T00:00:00+00:00')" % number)
    cur.execute(
        "INSERT INTO vms (uuid, name, host, status, version, qemu_pid, qmp_socket_path, serial_log_path, "
        "running_spec, launch_accel, launch_cpu, created_at, updated_at, pidfile_path, launch_graphic_port) "
        "VALUES ('u-old1', 'old1', 'h1', 'stopped', 7, NULL, NULL, '/run/x/old1.serial.log', NULL, 'kvm', "
        "'host', '2026-01-01T00:00:00+00:00', '2026-01-02T00:00:00+00:00', '/run/x/old1.pid', 5907)"
    )
    cur.execute(
        "INSERT INTO machine_configuration (vm_uuid, vcpus, memory_mb, machine_type, cpu_model, cpu_flags, "
        "accel, kernel, initrd, kernel_cmdline, tap_device_name, bridge, network_model, network_queues, "
        "graphic_protocol, graphic_port, graphic_password, graphic_host, disk_bus, disk_cache_mode, "
        "io_threads, assigned_gpu_bus, gpu_rom_file, gpu_audio_bus, memory_balloon, hugepages, numa_config, "
        "cpu_pinning, uefi_firmware, secureboot, graphic_password_set, disks, console_socket, firmware, "
        "nics, netns, department) VALUES ('u-old1', 3, 1536, 'q35', 'max', '[\"+avx\"]', 'tcg', "
        "'/boot/vmlinuz', '/boot/initrd.img', 'console=ttyS0', 'tap9', 'br9', 'e1000', 4, 'vnc', 5907, "
        "'" + token + "', '192.0.2.7', 'sata', 'unsafe', TRUE, '0000:01:00.0', '/rom', '0000:01:00.1', TRUE, "
        "TRUE, '{}', '[0,1]', '/usr/share/OVMF/code.fd', TRUE, TRUE, "
        '\'[{"path": "/images/old1.qcow2", "bus": "scsi", "serial": "S1"}]\', TRUE, \'uefi\', '
        '\'[{"bridge": "br0", "mac": "52:54:00:aa:bb:cc", "model": "e1000"}]\', \'ns1\', \'sales\')'
    )
    cur.execute(
        "INSERT INTO vms (uuid, name, host, status, version, created_at, updated_at) "
        "VALUES ('u-old2', 'old2', 'h1', 'stopped', 1, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
    )
    cur.execute("INSERT INTO machine_configuration (vm_uuid, vcpus, memory_mb) VALUES ('u-old2', 1, 512)")
    cur.execute("INSERT INTO disk_layers VALUES ('u-old1', '/images/old1.qcow2', 1, 's1', '/images/o1', 'now')")
    db.close()


def test_migrations_11_and_12_keep_an_old_vm_intact(db_url):
    from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretBox, generate_key
    from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context

    box = SecretBox(generate_key())
    token = box.encrypt("s3cret", "u-old1/graphic_password")  # as schema 10's code sealed it
    _old_database(db_url, token)
    store = open_store(db_url)  # migrates
    try:
        assert store.schema_version() == LATEST > PREVIOUS
        assert columns(store, "machine_configuration") == SPEC_COLUMNS
        old1 = records.load(store, "old1")
        assert old1.spec == VmSpec.from_dict(
            {
                "name": "old1",
                "vcpus": 3,
                "memory_mb": 1536,
                "machine_type": "q35",
                "cpu_model": "max",
                "cpu_flags": ["+avx"],
                "accel": "tcg",
                "kernel": "/boot/vmlinuz",
                "initrd": "/boot/initrd.img",
                "kernel_cmdline": "console=ttyS0",
                "graphics_type": "vnc",
                "graphics_listen": "192.0.2.7",
                "graphics_port": 5907,
                "graphics_password_set": True,
                "firmware": "uefi",
                "secure_boot": True,
                "uefi_firmware": "/usr/share/OVMF/code.fd",
                "console_socket": True,
                "disks": [{"path": "/images/old1.qcow2", "bus": "scsi", "serial": "S1"}],
                "nics": [{"bridge": "br0", "mac": "52:54:00:aa:bb:cc", "model": "e1000"}],
                "netns": "ns1",
                "department": "sales",
            }
        )
        assert old1.spec.disks[0].bus == "scsi" and old1.spec.nics[0].mac == "52:54:00:aa:bb:cc"
        assert (old1.uuid, old1.host, old1.status, old1.version) == ("u-old1", "h1", "stopped", 7)
        assert (old1.launch_accel, old1.launch_cpu, old1.launch_graphics_port) == ("kvm", "host", 5907)
        assert (old1.pidfile_path, old1.serial_log_path) == ("/run/x/old1.pid", "/run/x/old1.serial.log")
        assert old1.created_at == "2026-01-01T00:00:00+00:00"
        # The sealed display password moved with its column and still opens where it is read.
        assert store.get_secret("u-old1", "graphics_password") == token
        assert box.decrypt(token, secret_context("u-old1", "graphics_password")) == "s3cret"
        assert store.list_layers("u-old1") == [
            {"base_path": "/images/old1.qcow2", "seq": 1, "snapshot": "s1", "overlay": "/images/o1"}
        ]
        # NULLs in an old row still take the spec's defaults.
        assert records.load(store, "old2").spec == VmSpec(name="old2")
        # The rebuilt table still cascades and takes new rows.
        records.insert(store, record("new1", graphics_type="vnc", secure_boot=False))
        assert records.load(store, "new1").spec.graphics_type == "vnc"
        store.delete_vm("u-old1")
        assert records.load(store, "old1") is None
        assert [vm.name for vm in records.load_all(store)] == ["new1", "old2"]
    finally:
        store.close()


def test_a_read_only_store_reads_and_neither_makes_migrates_nor_writes(db_url, tmp_path):
    """open_store(read_only=True), the inventory plugin's: a missing SQLite file is not made,
    and a write is refused by the database itself."""
    with pytest.raises(StoreError):
        open_store("sqlite:///%s/none.db" % tmp_path, read_only=True)
    assert not os.path.exists(tmp_path / "none.db")
    writer = open_store(db_url)
    records.insert(writer, record("ro1"))
    reader = open_store(db_url, read_only=True)
    try:
        assert reader.schema_version() == LATEST and [r.name for r in reader.list_vms()] == ["ro1"]
        with pytest.raises(StoreError):
            reader.delete_vm(reader.get_vm("ro1").uuid)
        assert writer.get_vm("ro1") is not None
    finally:
        reader.close()
        writer.close()
