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
import uuid

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "guest"))

import build_cloud_guest  # noqa: E402
import build_guest  # noqa: E402
from helpers import vm_list  # noqa: E402
from qemu_procs import kill_leftovers  # noqa: E402

if shutil.which("qemu-system-x86_64") is None:  # the only allowed reason to skip
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def guest():
    """The tiny Debian-built guest (kernel + busybox initramfs), built once and cached."""
    return build_guest.build_guest()


@pytest.fixture(scope="session")
def cloud_guest():
    """The bookworm cloud guest (cloud-init, OpenSSH, qemu-guest-agent) as a qcow2 plus its
    kernel and initrd. Built on first use (about 100 s with mmdebstrap), then cached; tests
    boot throwaway overlays of it, never the image itself."""
    return build_cloud_guest.build_cloud_guest()


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
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, check_mode=False)
    svc.close()
    assert kill_leftovers(workdir) == [], "QEMU processes outlived their VM rows"


@pytest.fixture
def qmp_connections(monkeypatch):
    """The socket path of each QMP connection opened (the real QmpSession, counted)."""
    opened = []
    real = QmpSession.__enter__

    def counted(self):
        opened.append(self.socket_path)
        return real(self)

    monkeypatch.setattr(QmpSession, "__enter__", counted)
    return opened


@pytest.fixture
def guest_params(guest, workdir):
    """infinivirt_vm parameters that boot the test guest from paths with ',' and '='."""
    boot = os.path.join(workdir, "boot,dir=x")
    os.makedirs(boot)
    kernel, initrd = os.path.join(boot, "vmlinuz"), os.path.join(boot, "initrd.img")
    os.symlink(str(guest.kernel), kernel)
    os.symlink(str(guest.initrd), initrd)
    return {"kernel": kernel, "initrd": initrd, "kernel_cmdline": guest.kernel_cmdline, "accel": "tcg"}


# -- disks ----------------------------------------------------------------------------------


@pytest.fixture
def images(workdir):
    root = os.path.join(workdir, "images")
    os.makedirs(root)
    return root


@pytest.fixture
def disk_service(workdir, images):
    svc = VmService.open("sqlite:///%s/disks.db" % workdir, os.path.join(workdir, "run"), storage_roots=[images])
    yield svc
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
    svc.close()


@pytest.fixture
def cloud_service(workdir, images):
    """A service whose NVRAM directory (where a cloud-init seed ISO lives) and secret key (which
    seals the cloud_init option) are the test's own."""
    svc = VmService.open(
        "sqlite:///%s/cloud.db" % workdir,
        os.path.join(workdir, "run"),
        storage_roots=[images],
        nvram_dir=os.path.join(workdir, "nvram"),
        secret_key_file=os.path.join(workdir, "secret.key"),
    )
    yield svc
    for vm in vm_list(svc):
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
