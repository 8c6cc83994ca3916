# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The test VNC client against real QEMU VNC servers, and what QEMU 7.2's VNC password does.

No guest is needed: QEMU waits in prelaunch (-S) with a VNC server on 127.0.0.1. QEMU picks
a free display itself (``to=99``) and QMP ``query-vnc`` says which port it took, so two
test runs never race for a port. Each test starts its own QEMU (about 70 ms) and always
kills it by its pidfile PID, checked against the UUID on its command line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import pytest
from vnc_client import VncError, vnc_auth

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    kill_vm_process,
    process_runs_vm,
    read_pidfile,
    run_daemonized,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession

pytestmark = [pytest.mark.qemu]

if shutil.which("qemu-system-x86_64") is None:  # the only allowed reason to skip
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)

LOOPBACK = "127.0.0.1"
PASSWORD = "s3cret"


class VncVm:
    def __init__(self, workdir: str, vm_uuid: str, pid: int):
        self.workdir = workdir
        self.uuid = vm_uuid
        self.pid = pid
        self.qmp_socket = os.path.join(workdir, "qmp.sock")
        self.vnc = self.qmp("query-vnc")
        self.port = int(self.vnc["service"])

    def qmp(self, command, arguments=None):
        with QmpSession(self.qmp_socket, "vnc-test") as q:
            return q.execute(command, arguments)

    def set_password(self, password: str) -> None:
        self.qmp("set_password", {"protocol": "vnc", "password": password})

    def auth(self, password):
        return vnc_auth(LOOPBACK, self.port, password, timeout=5)


@pytest.fixture
def start_vm(request):
    """``start_vm(vnc_extra)`` -> a prelaunch QEMU whose VNC listens on 127.0.0.1 only."""

    def start(vnc_extra: str = "", extra_argv=()) -> VncVm:
        workdir = tempfile.mkdtemp(prefix="iv-vnc-")
        vm_uuid = str(uuid.uuid4())
        pidfile = os.path.join(workdir, "pid")

        def cleanup():
            try:
                pid = read_pidfile(pidfile)
                if pid:
                    kill_vm_process(pid, vm_uuid, timeout=10)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

        request.addfinalizer(cleanup)
        argv = [
            "qemu-system-x86_64",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-uuid",
            vm_uuid,
            *extra_argv,
            "-vnc",
            "%s:0,to=99%s" % (LOOPBACK, vnc_extra),
            "-qmp",
            "unix:%s,server=on,wait=off" % os.path.join(workdir, "qmp.sock"),
            "-S",
            "-daemonize",
            "-pidfile",
            pidfile,
        ]
        rc, err = run_daemonized(argv, timeout=30)
        assert rc == 0, "QEMU did not start: %s" % err
        pid = read_pidfile(pidfile)
        assert process_runs_vm(pid, vm_uuid)
        return VncVm(workdir, vm_uuid, pid)

    return start


def listening_addresses(port: int):
    """Local addresses of the LISTEN sockets on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_vnc_listens_on_loopback_only(start_vm):
    vm = start_vm(",password=on")
    assert vm.vnc["host"] == LOOPBACK and vm.vnc["family"] == "ipv4" and vm.vnc["auth"] == "vnc"
    assert 5900 <= vm.port <= 5999
    assert listening_addresses(vm.port) == ["0100007F"]  # 127.0.0.1, and no IPv6 socket


def test_password_on_without_set_password_lets_nobody_in(start_vm):
    vm = start_vm(",password=on")
    assert vm.auth(None) == "password-required"
    assert vm.auth(PASSWORD) == "failed"
    assert vm.auth("") == "failed"


def test_set_password_in_prelaunch_opens_the_display_to_that_password_only(start_vm):
    vm = start_vm(",password=on")
    assert vm.qmp("query-status")["status"] == "prelaunch"
    vm.set_password(PASSWORD)
    assert vm.qmp("query-status")["status"] == "prelaunch"
    assert vm.auth(None) == "password-required"
    assert vm.auth(PASSWORD) == "ok"
    assert vm.auth("wrong") == "failed"
    assert vm.auth(PASSWORD.upper()) == "failed"
    # The password survives the start of the guest.
    vm.qmp("cont")
    assert vm.auth(PASSWORD) == "ok" and vm.auth("wrong") == "failed"


def test_a_non_ascii_password_is_compared_as_utf8(start_vm):
    vm = start_vm(",password=on")
    vm.set_password("pässwort")
    assert vm.auth("pässwort") == "ok"
    assert vm.auth("passwort") == "failed"


def test_only_the_first_8_bytes_of_a_vnc_password_count(start_vm):
    """VNC Authentication is DES with an 8-byte key: the rest of a password is ignored."""
    vm = start_vm(",password=on")
    vm.set_password("abcdefgh-the-rest-is-ignored")
    assert vm.auth("abcdefgh") == "ok"
    assert vm.auth("abcdefghXYZ") == "ok"
    assert vm.auth("abcdefg") == "failed"


def test_an_empty_password_is_a_password_anyone_knows(start_vm):
    """set_password "" does not lock the display: an empty answer gets in."""
    vm = start_vm(",password=on")
    vm.set_password("")
    assert vm.auth(None) == "password-required"
    assert vm.auth("") == "ok"
    assert vm.auth("x") == "failed"


def test_qemu_does_not_lock_out_or_slow_down_after_failed_attempts(start_vm):
    """QEMU 7.2 has no rate limit: only the listen address protects a weak VNC password."""
    vm = start_vm(",password=on")
    vm.set_password(PASSWORD)
    started = time.monotonic()
    assert {vm.auth("guess%d" % i) for i in range(30)} == {"failed"}
    assert vm.auth(PASSWORD) == "ok"
    assert time.monotonic() - started < 2.0


def test_expire_password_now_locks_everybody_out(start_vm):
    vm = start_vm(",password=on")
    vm.set_password(PASSWORD)
    vm.qmp("expire_password", {"protocol": "vnc", "time": "now"})
    assert vm.auth(PASSWORD) == "failed"


def test_a_display_without_password_lets_anyone_in(start_vm):
    vm = start_vm()
    assert vm.vnc["auth"] == "none"
    assert vm.auth(None) == "none"
    assert vm.auth("anything") == "none"  # the server never asks


def test_an_unsupported_security_type_is_an_error(start_vm):
    vm = start_vm(",tls-creds=tls0", ["-object", "tls-creds-anon,id=tls0,endpoint=server"])
    with pytest.raises(VncError) as err:
        vm.auth(PASSWORD)
    assert "[19]" in str(err.value)  # VeNCrypt


def test_nothing_listening_is_an_error(start_vm):
    vm = start_vm(",password=on")
    port = vm.port
    kill_vm_process(vm.pid, vm.uuid)
    # kill_vm_process returns once the thread-group leader is a zombie; QEMU's other threads,
    # and so its listening socket, may live on for ~15 ms more.
    deadline = time.monotonic() + 5
    while listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert listening_addresses(port) == []
    with pytest.raises(VncError, match="cannot connect"):
        vnc_auth(LOOPBACK, port, None, timeout=2)
