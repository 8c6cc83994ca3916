# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_net, infinivirt_disk and infinivirt_secret_key run on a managed host without
qemu.qmp; infinivirt_vm fails there with Ansible's missing-library message.

The host is a real venv: the test venv's interpreter and every package it has except qemu,
linked in through a .pth file (no download, no copy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
from helpers import python_without, run_playbook

pytestmark = [pytest.mark.netns, pytest.mark.playbook]


def _qemu_package(entry: str) -> bool:
    return entry == "qemu" or (entry.startswith("qemu") and entry.endswith(".dist-info"))


@pytest.fixture(scope="module")
def python_without_qmp(tmp_path_factory):
    """A venv on the test venv's base interpreter holding every test package but qemu."""
    root = tmp_path_factory.mktemp("noqmp")
    links = root / "packages"
    python = python_without(root, _qemu_package)
    lacks = subprocess.run([python, "-c", "import qemu.qmp"], capture_output=True, text=True, check=False)
    assert lacks.returncode != 0 and "No module named 'qemu'" in lacks.stderr, lacks.stderr
    has = subprocess.run(
        [python, "-c", "import ansible, pyroute2, cryptography, yaml; print(ansible.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert has.returncode == 0, has.stderr
    assert has.stdout.strip().startswith(str(links)), has.stdout
    return python


@pytest.fixture
def netns():
    name = "ivq-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_the_modules_without_qemu_qmp(python_without_qmp, netns, tmp_path):
    work = tmp_path / "work"
    root = work / "images"
    root.mkdir(parents=True)
    done = run_playbook(
        "without_qmp.yml",
        {
            "db_url": "sqlite:///%s/x.db" % work,
            "run_dir": str(work / "run"),
            "netns": netns,
            "root": str(root),
            "key_file": str(work / "secret.key"),
            "new_key_file": str(work / "secret-2.key"),
            "ansible_python_interpreter": python_without_qmp,
        },
        timeout=600,
        verbosity=1,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert "WITHOUT_QMP_OK" in done.stdout and "failed=0" in done.stdout, out[-6000:]
    # Only the infinivirt_vm task failed; that it failed for want of qemu.qmp (asserted in the
    # playbook) shows the modules ran on the interpreter without it (the test venv has it).
    assert "ignored=1" in done.stdout, out[-6000:]
    assert os.listdir(root) == []
    assert (work / "secret-2.key").is_file()
    links = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True)
    assert "nqbr0" not in links.stdout
    shutil.rmtree(work, ignore_errors=True)
