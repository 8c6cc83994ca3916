# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VNC displays with passwords that are encrypted at rest and never leave through argv,
the database, a dump or a task result; on both backends."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading

import pytest
from helpers import cmdlines_containing, database_bytes, run_playbook, vm_list
from qemu_procs import kill_leftovers
from vnc_client import vnc_auth

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretError, token_key_id
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.rotation import rotate_key
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]

PASSWORD = "Pw-8x!Qz"  # eight bytes, as VNC allows
NEW_PASSWORD = "n3wPw-42"
VM = {"name": "screen", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


@pytest.fixture
def env(db_url, monkeypatch):
    monkeypatch.delenv("INFINIVIRT_SECRET_KEY", raising=False)
    work = tempfile.mkdtemp(prefix="iv-vnc")
    key_file = os.path.join(work, "keys", "secret.key")
    service = VmService.open(db_url, os.path.join(work, "run"), secret_key_file=key_file)
    yield service, db_url, work, key_file
    service.ensure(dict(VM, state="absent"), False)
    service.close()
    leaked = kill_leftovers(work)
    shutil.rmtree(work, ignore_errors=True)
    assert leaked == [], "QEMU processes outlived their VM rows"


def ensure(service, check_mode=False, **params):
    return service.ensure(dict(VM, **params), check_mode)


def free_vnc_port():
    """A display port nothing listens on now, from the top of QEMU's automatic range."""
    for port in range(5999, 5950, -1):
        with contextlib.closing(socket.socket()) as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("no free VNC port")


@pytest.mark.both_backends  # the store is the subject
def test_password_protected_display(env):
    service, db_url, work, key_file = env
    graphics = {"type": "vnc", "password": PASSWORD}
    predicted = ensure(service, check_mode=True, state="running", graphics=graphics)
    started = ensure(service, state="running", graphics=graphics)
    assert predicted.changed and started.changed and predicted.diff == started.diff
    assert started.diff["after"]["graphics"]["password"] == "******** (new)"
    port = started.vm["graphics"]["port"]
    assert 5900 <= port < 6000 and started.vm["graphics"]["password_set"] is True
    # One name per fact: graphics.port is the port in use, port_requested the option (unset:
    # automatic); no flat graphics_* key beside them, in the entry, the listing or the diff.
    assert started.vm["graphics"]["port_requested"] is None
    assert [k for k in started.vm if k.startswith("graphics_")] == []
    assert [k for k in started.diff["after"] if k.startswith("graphics_")] == []
    assert vm_list(service, "screen")[0]["graphics"] == started.vm["graphics"]
    rec = records.load(service.store, "screen")
    peripherals = {p["name"] for p in service.engine.sessions.qmp(rec, "qom-list", {"path": "/machine/peripheral"})}
    assert "video0" in peripherals, "a VNC display needs a video card to show"
    assert vnc_auth("127.0.0.1", port, None) == "password-required"
    assert vnc_auth("127.0.0.1", port, PASSWORD) == "ok"
    assert vnc_auth("127.0.0.1", port, "wrong!!!") == "failed"

    # The secret is nowhere in plain text.
    assert cmdlines_containing(PASSWORD) == []
    dump = database_bytes(db_url, work)
    assert PASSWORD.encode() not in dump and base64.b64encode(PASSWORD.encode()) not in dump
    assert b"iv1:" in dump, "the sealed token is in the database"
    assert PASSWORD not in repr(started.vm) + repr(started.diff)
    assert os.stat(key_file).st_mode & 0o777 == 0o600

    # Same password again: nothing to do. A new one reaches the running VM at once.
    assert not ensure(service, state="running", graphics=graphics).changed
    checked = ensure(service, check_mode=True, state="running", graphics={"password": NEW_PASSWORD})
    assert checked.changed and checked.actions == ["update", "set_password"]
    assert vnc_auth("127.0.0.1", port, PASSWORD) == "ok", "check mode changed nothing"
    changed = ensure(service, state="running", graphics={"password": NEW_PASSWORD})
    assert changed.actions == ["update", "set_password"] and changed.vm["pid"] == started.vm["pid"]
    assert changed.vm["digest"] != started.vm["digest"]
    assert vnc_auth("127.0.0.1", port, PASSWORD) == "failed"
    assert vnc_auth("127.0.0.1", port, NEW_PASSWORD) == "ok"

    # A fixed port: asked for while the VM runs on the automatic one (pending, by the option's
    # name), then in use after the restart, which reads the password back from the database.
    fixed = free_vnc_port()
    asked = ensure(service, state="running", graphics={"port": fixed})
    assert asked.vm["graphics"]["port"] == port and asked.vm["graphics"]["port_requested"] == fixed
    assert asked.vm["pending_restart"] == ["graphics"] and asked.plan["changes"] == {"graphics": "restart"}
    restarted = ensure(service, state="restarted")
    assert restarted.vm["graphics"]["port"] == fixed and restarted.vm["graphics"]["port_requested"] == fixed
    assert vnc_auth("127.0.0.1", fixed, NEW_PASSWORD) == "ok"


def test_wrong_key_is_a_clear_error_not_garbage(env, monkeypatch):
    service, db_url, work, key_file = env
    ensure(service, state="stopped", graphics={"type": "vnc", "password": PASSWORD})
    other = VmService.open(db_url, os.path.join(work, "run"), secret_key_file=os.path.join(work, "other.key"))
    with pytest.raises(SecretError) as err:
        other.ensure(dict(VM, state="running"), False)
    message = str(err.value)
    assert "cannot read the display password of VM screen" in message and "key id" in message
    assert PASSWORD not in message
    assert vm_list(other, "screen")[0]["status"] == "stopped", "nothing was started"
    other.close()


@pytest.mark.both_backends  # the store is the subject
def test_key_rotation_re_encrypts_everything_at_once(env):
    service, db_url, work, key_file = env
    ensure(service, state="stopped", graphics={"type": "vnc", "password": PASSWORD})
    ensure(service, name="screen2", state="stopped", graphics={"type": "vnc", "password": NEW_PASSWORD})
    new_key = os.path.join(work, "keys", "new.key")
    before = {t for _u, _c, t in service.store.all_secrets()}
    assert rotate_key(service.store, key_file, new_key, check_mode=True)["rotated"] == 2
    assert {t for _u, _c, t in service.store.all_secrets()} == before, "check mode wrote nothing"
    assert not os.path.exists(new_key), "check mode created no key"
    result = rotate_key(service.store, key_file, new_key, check_mode=False)
    assert result["changed"] and result["rotated"] == 2
    tokens = service.store.all_secrets()
    assert {token_key_id(t) for _u, _c, t in tokens} == {result["key_id"]}
    assert not rotate_key(service.store, key_file, new_key, check_mode=False)["changed"]
    # The old key opens nothing now; the new one starts the VM with its password.
    with pytest.raises(SecretError):
        service.ensure(dict(VM, state="running"), False)
    rotated = VmService.open(db_url, os.path.join(work, "run"), secret_key_file=new_key)
    port = rotated.ensure(dict(VM, state="running"), False).vm["graphics"]["port"]
    assert vnc_auth("127.0.0.1", port, PASSWORD) == "ok"
    rotated.ensure(dict(VM, name="screen2", state="absent"), False)
    rotated.ensure(dict(VM, state="absent"), False)
    rotated.close()


@pytest.mark.parametrize(
    "graphics,field,phrase",
    [
        ({"type": "vnc", "password": "123456789"}, "graphics.password", "at most 8"),
        ({"type": "vnc", "password": ""}, "graphics.password", "must not be empty"),
        ({"type": "vnc", "listen": "192.0.2.10"}, "graphics.password", "is required"),
        ({"type": "vnc", "listen": "localhost,to=5"}, "graphics.listen", "not an IP address"),
        ({"type": "vnc", "port": 80}, "graphics.port", "at least 5900"),
        ({"type": "none", "password": "abc"}, "graphics.password", "needs graphics.type vnc"),
    ],
)
def test_bad_display_input_changes_nothing(env, graphics, field, phrase):
    service, db_url, work, key_file = env
    with pytest.raises(SpecError) as err:
        ensure(service, state="running", graphics=graphics)
    assert err.value.field == field and phrase in str(err.value)
    assert vm_list(service) == [] and not os.path.exists(key_file)


def test_a_long_spice_password_is_not_kept_for_vnc(env):
    """VNC checks 8 bytes: a SPICE password kept by a switch to VNC would mean less than it says."""
    service, _db_url, _work, _key_file = env
    ensure(service, state="present", graphics={"type": "spice", "password": "twelve-bytes"})
    with pytest.raises(SpecError) as err:
        ensure(service, state="present", graphics={"type": "vnc"})
    assert err.value.field == "graphics.password" and "kept from the spice display" in str(err.value)
    assert vm_list(service, "screen")[0]["graphics"]["type"] == "spice", "a refused switch changed the VM"
    switched = ensure(service, state="present", graphics={"type": "vnc", "password": PASSWORD})
    assert switched.changed and vm_list(service, "screen")[0]["graphics"]["type"] == "vnc"
    ensure(service, state="present", graphics={"type": "spice"})  # 8 bytes suit SPICE too: kept
    assert ensure(service, state="present", graphics={"type": "vnc"}).changed


def test_module_keeps_the_password_out_of_its_output(db_url, tmp_path):
    run_dir = tempfile.mkdtemp(prefix="iv-vncpb")
    try:
        done = run_playbook(
            "display_password.yml",
            {"db_url": db_url, "run_dir": run_dir, "key_file": str(tmp_path / "k.key"), "vnc_password": PASSWORD},
            verbosity=3,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "PASSWORD_OK" in done.stdout
        assert PASSWORD not in done.stdout + done.stderr
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_qmp_connects_survive_a_storm_of_events(env):
    # VNC clients coming and going make QEMU emit events, some of which land between the
    # greeting and the capabilities reply; qemu.qmp alone failed 118 of 300 connects here.
    service, _db, _work, _key = env
    vm = ensure(service, state="running", graphics={"type": "vnc", "password": PASSWORD}).vm
    stop = threading.Event()

    def clients():
        while not stop.is_set():
            with contextlib.suppress(Exception):
                vnc_auth("127.0.0.1", vm["graphics"]["port"], PASSWORD, timeout=2)

    storm = threading.Thread(target=clients)
    storm.start()
    try:
        statuses = [qmp_execute(vm["qmp_socket"], "screen", "query-status")["status"] for _n in range(150)]
    finally:
        stop.set()
        storm.join(10)
    assert statuses == ["running"] * 150


def test_secrets_stay_out_of_debug_logs(env, caplog):
    service, _db, _work, _key = env
    with caplog.at_level(logging.DEBUG):
        ensure(service, state="running", graphics={"type": "vnc", "password": PASSWORD})
        ensure(service, state="running", graphics={"password": NEW_PASSWORD})
    assert any(r.name.startswith("qemu.qmp") for r in caplog.records), "qemu.qmp logged nothing"
    assert PASSWORD not in caplog.text and NEW_PASSWORD not in caplog.text
