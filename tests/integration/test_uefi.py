# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""UEFI VMs: the guest sees UEFI firmware; each VM has its own NVRAM, kept across stops,
part of every snapshot, and removed with the VM."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import make_image, vm_list, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

pytestmark = [pytest.mark.qemu]


@pytest.fixture
def uefi_service(workdir, images):
    svc = VmService.open(
        "sqlite:///%s/uefi.db" % workdir,
        os.path.join(workdir, "run"),
        storage_roots=[images],
        nvram_dir=os.path.join(workdir, "nvram"),
    )
    yield svc
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
    svc.close()


def test_uefi_guest_nvram_and_snapshot(uefi_service, guest_params, images, workdir):
    svc = uefi_service
    disk = make_image(os.path.join(images, "u.qcow2"), "qcow2", 8)
    vm = svc.ensure(
        dict(guest_params, name="efi", firmware="uefi", memory_mb=256, state="running", disks=[{"path": disk}]), False
    ).vm
    report = wait_ready(vm["serial_log"])
    assert report.firmware == "uefi"
    nvram = vm["nvram"]
    assert nvram.startswith(os.path.join(workdir, "nvram"))
    assert stat.S_IMODE(os.stat(nvram).st_mode) == 0o600
    svc.ensure({"name": "efi", "state": "stopped"}, False)
    assert os.path.exists(nvram), "the NVRAM outlives the process"

    # The NVRAM is part of a snapshot: what the firmware stored then comes back on revert.
    original = open(nvram, "rb").read()
    snaps = SnapshotService(svc.engine)
    assert snaps.ensure({"vm": "efi", "name": "s1"}, False)["changed"]
    with open(nvram, "r+b") as fh:  # as if the guest had changed a variable since
        fh.seek(len(original) - 4096)
        fh.write(b"\xa5" * 4096)
    assert open(nvram, "rb").read() != original
    assert snaps.ensure({"vm": "efi", "name": "s1", "state": "reverted"}, False)["changed"]
    assert open(nvram, "rb").read() == original

    # Likewise for an external snapshot (the two kinds do not mix).
    with pytest.raises(SpecError) as err:
        snaps.ensure({"vm": "efi", "name": "x1", "type": "external"}, False)
    assert err.value.field == "type" and "internal snapshots (s1)" in str(err.value)
    assert snaps.ensure({"vm": "efi", "name": "s1", "state": "absent"}, False)["changed"]
    assert snaps.ensure({"vm": "efi", "name": "x1", "type": "external"}, False)["changed"]
    with open(nvram, "r+b") as fh:
        fh.seek(len(original) - 4096)
        fh.write(b"\x5a" * 4096)
    assert snaps.ensure({"vm": "efi", "name": "x1", "state": "reverted"}, False)["changed"]
    assert open(nvram, "rb").read() == original

    svc.ensure({"name": "efi", "state": "absent"}, False)
    assert not os.path.exists(nvram) and os.listdir(os.path.join(workdir, "nvram")) == []


def test_secure_boot_firmware_runs_with_smm(uefi_service):
    svc = uefi_service
    out = svc.ensure(
        {"name": "sb", "state": "running", "accel": "tcg", "memory_mb": 128, "firmware": "uefi", "secure_boot": True},
        False,
    )
    rec = records.load(svc.store, "sb")
    assert out.vm["status"] == "running"
    assert svc.engine.sessions.qmp(rec, "qom-get", {"path": "/machine", "property": "smm"}) == "on"


@pytest.mark.parametrize(
    "params,field",
    [
        ({"secure_boot": True}, "secure_boot"),
        ({"firmware": "uefi", "secure_boot": True, "machine_type": "pc"}, "secure_boot"),
        ({"firmware": "coreboot"}, "firmware"),
        ({"firmware": "uefi", "uefi_firmware": "/nonexistent/OVMF.fd"}, "uefi_firmware"),
    ],
)
def test_bad_firmware_input(uefi_service, params, field):
    with pytest.raises(SpecError) as err:
        uefi_service.ensure(dict({"name": "bad", "state": "running", "accel": "tcg"}, **params), False)
    assert err.value.field == field
    assert vm_list(uefi_service) == []


def test_nvram_snapshot_copies_never_follow_a_symlink(uefi_service, images, workdir):
    """Issue 18: a symlink planted at the name of an NVRAM snapshot copy is not followed
    (the file it points to stays as it was) and the task fails with a sentence."""
    svc = uefi_service
    disk = make_image(os.path.join(images, "cold-efi.qcow2"), "qcow2", 8)
    svc.ensure({"name": "coldefi", "firmware": "uefi", "state": "stopped", "disks": [{"path": disk}]}, False)
    nvram = svc.engine.resources.nvram_path(records.load(svc.store, "coldefi"))
    os.makedirs(os.path.dirname(nvram), exist_ok=True)
    with open(nvram, "wb") as fh:
        fh.write(b"\x01" * 4096)
    victim = os.path.join(workdir, "victim.fd")
    with open(victim, "wb") as fh:
        fh.write(b"keep me")
    os.symlink(victim, nvram + ".snapshot-s1")
    with pytest.raises(StateError) as err:
        SnapshotService(svc.engine).ensure({"vm": "coldefi", "name": "s1"}, False)
    assert "symbolic link" in str(err.value) and "nothing was written" in str(err.value)
    assert open(victim, "rb").read() == b"keep me"
    assert SnapshotService(svc.engine).list(records.load(svc.store, "coldefi")) == {}
