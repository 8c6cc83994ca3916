# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vm's cloud_init through Ansible itself, on a Python without pycdlib: the option
parses as the module declares it, a VM with it is defined and rerun without a change, its
start fails with Ansible's missing-library text naming pycdlib, bad input fails naming
cloud_init.<field> and leaves no row, and the key and password stay out of the output (no_log)
and out of the database. The boot itself: tests/integration/test_cloud_guest.py."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import tempfile

import pytest
from helpers import python_without, run_playbook

pytestmark = [pytest.mark.playbook, pytest.mark.qemu]

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0nLyTheCloudInitModuleTest00000000000000000 t@example"
PASSWORD = "Pl41n-t3xt-module-test"


@pytest.fixture(scope="module")
def python_without_pycdlib(tmp_path_factory):
    """A venv that sees every test package but pycdlib."""
    python = python_without(tmp_path_factory.mktemp("nocdlib"), lambda entry: entry.lower().startswith("pycdlib"))
    lacks = subprocess.run([python, "-c", "import pycdlib"], capture_output=True, text=True, check=False)
    assert lacks.returncode != 0 and "No module named 'pycdlib'" in lacks.stderr, lacks.stderr
    has = subprocess.run([python, "-c", "import ansible, qemu.qmp, yaml"], capture_output=True, text=True, check=False)
    assert has.returncode == 0, has.stderr
    return python


@pytest.fixture
def work():
    """A short scratch dir: the VM's QMP socket path must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="ivci")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_cloud_init_through_the_module_without_pycdlib(python_without_pycdlib, work):
    done = run_playbook(
        "cloud_init_without_pycdlib.yml",
        {
            "db_url": "sqlite:///%s/ci.db" % work,
            "run_dir": str(work / "run"),
            "nvram_dir": str(work / "nvram"),
            "key_file": str(work / "secret.key"),
            "pubkey": PUBKEY,
            "password": PASSWORD,
            "ansible_python_interpreter": python_without_pycdlib,
        },
        timeout=600,
        verbosity=3,  # results and module_args in the output: what no_log must mask
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "CLOUD_INIT_OK" in done.stdout, done.stdout[-8000:] + done.stderr[-3000:]
    assert "ignored=4" in done.stdout, out[-6000:]  # the start and the three bad inputs
    # The output shows each task's module_args, the secret suboptions masked: the check below means something.
    masked = re.search(r'"ssh_authorized_keys": \[\s*"VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"\s*\]', out)
    assert '"module_args"' in out and masked, out[:6000]
    # The echo of the options still hides user_data's short strings; results do not (the play's assert).
    assert re.search(r'"runcmd": \[\s*\[\s*"VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"', out), out[:6000]
    for secret in (PUBKEY.split()[1], PASSWORD):
        assert secret not in out
        db = b"".join(p.read_bytes() for p in work.iterdir() if p.is_file() and p.name.startswith("ci.db"))
        assert secret.encode() not in db
    with sqlite3.connect(str(work / "ci.db")) as conn:
        assert conn.execute("SELECT name FROM vms").fetchall() == []  # civm removed, civm2 never made
    assert not (work / "nvram").exists() or os.listdir(work / "nvram") == []
