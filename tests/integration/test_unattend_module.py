# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vm's and infinivirt_vms' unattend through Ansible itself: the option parses as
the modules declare it, a VM with it starts (firmware only) and reruns without a change, bad
input fails naming unattend.<field> and leaves no row, and the password in the answer file
and in an inline file stays out of the output (no_log, at -vvv), out of the database and
off every command line. What the ISO holds: tests/integration/test_unattend_cdrom.py."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sqlite3
import tempfile

import pytest
from helpers import run_playbook

pytestmark = [pytest.mark.playbook, pytest.mark.qemu]

PASSWORD = "Pl41n-t3xt-unattend-module"


@pytest.fixture
def work():
    """A short scratch dir: the VM's QMP socket path must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="ivua")
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_unattend_through_the_modules(work):
    script = work / "SetupComplete.cmd"
    script.write_bytes(b"@echo off\r\n")
    done = run_playbook(
        "unattend_module.yml",
        {
            "db_url": "sqlite:///%s/ua.db" % work,
            "run_dir": str(work / "run"),
            "nvram_dir": str(work / "nvram"),
            "key_file": str(work / "secret.key"),
            "password": PASSWORD,
            "script": str(script),
        },
        timeout=600,
        verbosity=3,  # results and module_args in the output: what no_log must mask
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "UNATTEND_OK" in done.stdout, done.stdout[-8000:] + done.stderr[-3000:]
    assert "ignored=4" in done.stdout, out[-6000:]  # the four bad inputs
    # module_args are shown with the secret suboptions masked: the check below means something.
    masked = re.search(r'"autounattend": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"', out)
    assert '"module_args"' in out and masked, out[:6000]
    assert PASSWORD not in out
    db = b"".join(p.read_bytes() for p in work.iterdir() if p.is_file() and p.name.startswith("ua.db"))
    assert PASSWORD.encode() not in db
    with sqlite3.connect(str(work / "ua.db")) as conn:
        assert conn.execute("SELECT name FROM vms").fetchall() == []  # removed, or never made
    assert not (work / "nvram").exists() or os.listdir(work / "nvram") == []
