# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for tests that run real QEMU processes with the real test guest (TCG here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "guest"))

import build_guest  # noqa: E402
import serial_report  # noqa: E402
from qemu_procs import kill_leftovers  # noqa: E402

if shutil.which("qemu-system-x86_64") is None:  # the only allowed reason to skip
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)

GUEST_TIMEOUT = float(os.environ.get("INFINIVIRT_GUEST_TIMEOUT", "120"))


@pytest.fixture(scope="session")
def guest():
    """The tiny Debian-built guest (kernel + busybox initramfs), built once and cached."""
    return build_guest.build_guest()


@pytest.fixture
def workdir():
    """A short scratch dir whose name holds a comma and '=', so every test also proves
    that paths reach QEMU intact (UNIX socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="iv,t=")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def service(workdir):
    svc = VmService.open("sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"), lock_timeout=30)
    yield svc
    # Never leave a VM behind, whatever the test did.
    for vm in svc.info():
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, check_mode=False)
    svc.close()
    assert kill_leftovers(workdir) == [], "QEMU processes outlived their VM rows"


@pytest.fixture
def guest_params(guest, workdir):
    """infinivirt_vm parameters that boot the test guest from paths with ',' and '='."""
    boot = os.path.join(workdir, "boot,dir=x")
    os.makedirs(boot)
    kernel, initrd = os.path.join(boot, "vmlinuz"), os.path.join(boot, "initrd.img")
    os.symlink(str(guest.kernel), kernel)
    os.symlink(str(guest.initrd), initrd)
    return {"kernel": kernel, "initrd": initrd, "kernel_cmdline": guest.kernel_cmdline, "accel": "tcg"}


def wait_ready(serial_log: str):
    return serial_report.wait_for_ready(serial_log, timeout=GUEST_TIMEOUT)


def run_dir_files(workdir: str):
    run = os.path.join(workdir, "run")
    if not os.path.isdir(run):
        return []
    return sorted(f for f in os.listdir(run) if f != "probe-cache.json")


# -- disks ----------------------------------------------------------------------------------


def make_image(path, fmt, size_mb):
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, "%dM" % size_mb], check=True)
    return path


def guest_disks(sock):
    """Ask the guest, over its ttyS1 channel, which disks it sees now."""
    rc, out = serial_report.channel_command(sock, "report disks")
    assert rc == 0, out
    return {d["serial"]: d for d in serial_report.parse_report(out).disks}


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture
def images(workdir):
    root = os.path.join(workdir, "images")
    os.makedirs(root)
    return root


@pytest.fixture
def disk_service(workdir, images):
    svc = VmService.open("sqlite:///%s/disks.db" % workdir, os.path.join(workdir, "run"), storage_roots=[images])
    yield svc
    for vm in svc.info():
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
    svc.close()


# -- a bridge in a namespace of the test's own ----------------------------------------------


@pytest.fixture
def bridge_ns():
    name = "ivs-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "add", "vmbr0", "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "vmbr0", "up"], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)  # the VNC display's
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def vnc_auth_in(netns, port, password):
    """vnc_auth from inside the VM's namespace, where its display listens on 127.0.0.1."""
    code = (
        "import sys; sys.path.insert(0, %r); from vnc_client import vnc_auth; "
        "print(vnc_auth('127.0.0.1', %d, sys.stdin.read()))" % (os.path.dirname(os.path.abspath(__file__)), port)
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
