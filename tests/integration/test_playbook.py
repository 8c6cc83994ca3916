# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules as users run them: ansible-playbook against localhost."""

from __future__ import annotations

import os

import pytest
from helpers import run_dir_files, run_playbook
from qemu_procs import kill_leftovers

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]


def test_lifecycle_playbook(guest_params, workdir):
    done = run_playbook(
        "vm_lifecycle.yml",
        {
            "kernel": guest_params["kernel"],
            "initrd": guest_params["initrd"],
            "kernel_cmdline": guest_params["kernel_cmdline"],
            "db_url": "sqlite:///%s/pb.db" % workdir,
            "run_dir": os.path.join(workdir, "run"),
        },
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    assert run_dir_files(workdir) == []


def test_vms_batch_playbook(workdir):
    """infinivirt_vms: check mode, start, no-op, a failing entry, a single-VM task beside a
    running batch, exclusive removal; the display password never shows in the output."""
    password = "pbSecr3t"
    done = run_playbook(
        "vms_batch.yml",
        {"db_url": "sqlite:///%s/pb.db" % workdir, "run_dir": os.path.join(workdir, "run"), "password": password},
        verbosity=3,  # prints each task's invocation, where the entries' passwords are
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    assert password not in done.stdout + done.stderr
    assert '"password": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in done.stdout
    assert run_dir_files(workdir) == []


def test_gpu_assign_playbook(workdir):
    """infinivirt_gpu from a playbook, against a fake sysfs tree (the one thing faked)."""
    from fake_sysfs import gpu_host

    root = os.path.join(workdir, "sys-root")
    gpu_host(root, audio_driver="vfio-pci", gpu_driver="vfio-pci")
    roms = os.path.join(workdir, "roms")
    os.makedirs(roms)
    with open(os.path.join(workdir, "outside.rom"), "wb") as handle:
        handle.write(b"\x55\xaa")
    done = run_playbook(
        "gpu_assign.yml",
        {
            "db_url": "sqlite:///%s/pb.db" % workdir,
            "run_dir": os.path.join(workdir, "run"),
            "sysfs_root": root,
            "rom_dir": roms,
        },
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout


def test_tuning_playbook(workdir):
    """Balloon, topology, NUMA, pinning, I/O threads and a preset from a playbook, live
    changes included."""
    try:
        done = run_playbook(
            "tuning.yml", {"db_url": "sqlite:///%s/pb.db" % workdir, "run_dir": os.path.join(workdir, "run")}
        )
    finally:
        assert kill_leftovers(workdir) == [], "the playbook left a QEMU running"
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
