# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every ansible-core meta/runtime.yml accepts: the tests that import Ansible and one short
playbook each. Only ansible_binding.py and plugin_utils/ import Ansible (tests/lint/test_layers.py),
so only the unit tests marked ``ansible_core`` (which import those) can differ between cores.

Each core has a venv of its own (scripts/core-venvs.sh: made once and cached, under
INFINIVIRT_CORES_DIR, default /var/cache/infinivirt/cores). ansible-test sanity runs under
the newest core only (tests/lint/test_sanity.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid

import pytest
import yaml
from collection_path import REPO, collections_root

pytestmark = [pytest.mark.cores, pytest.mark.playbook]

CORES = ["2.15", "2.16", "2.17", "2.18", "2.19"]


def test_cores_match_requires_ansible():
    with open(os.path.join(REPO, "meta", "runtime.yml")) as f:
        runtime = yaml.safe_load(f)
    assert runtime["requires_ansible"] == ">=%s.0" % CORES[0]
    with open(os.path.join(REPO, "roles", "host", "meta", "main.yml")) as f:
        assert yaml.safe_load(f)["galaxy_info"]["min_ansible_version"] == CORES[0]


@pytest.fixture(scope="module", params=CORES)
def core_venv(request):
    core = request.param
    done = subprocess.run(
        ["bash", os.path.join(REPO, "scripts", "core-venvs.sh"), core],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    name, venv = done.stdout.split()
    assert name == core
    version = subprocess.run(
        [os.path.join(venv, "bin", "python"), "-c", "import ansible.release as r; print(r.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith(core + "."), version
    return core, venv


ANSIBLE_IMPORTS = re.compile(
    r"^\s*(from|import) (ansible\.|ansible_collections\.infinivirt\.core\.plugins\."
    r"(module_utils\.ansible_binding|plugin_utils|action|modules))",
    re.M,
)


def test_every_unit_test_that_imports_ansible_runs_under_each_core():
    """A unit test that imports Ansible must say so (pytestmark ansible_core), or the
    per-core runs below would skip it."""
    unmarked = []
    for folder, _dirs, files in os.walk(os.path.join(REPO, "tests", "unit")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                if ANSIBLE_IMPORTS.search(text) and "pytest.mark.ansible_core" not in text:
                    unmarked.append(os.path.relpath(os.path.join(folder, name), REPO))
    assert unmarked == []


def test_unit_tests(core_venv):
    core, venv = core_venv
    done = subprocess.run(
        [
            os.path.join(venv, "bin", "python"),
            "-m",
            "pytest",
            "tests/unit",
            "-m",
            "ansible_core",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, "unit tests under ansible-core %s:\n%s" % (
        core,
        done.stdout[-6000:] + done.stderr[-2000:],
    )
    assert " passed" in done.stdout.splitlines()[-1]


def test_playbook(core_venv):
    core, venv = core_venv
    root = tempfile.mkdtemp(prefix="ivcore-")
    netns = "ivcore-%s" % uuid.uuid4().hex[:8]
    os.makedirs(os.path.join(root, "fake", "sys", "kernel", "iommu_groups"))
    os.makedirs(os.path.join(root, "fake", "proc"))
    with open(os.path.join(root, "fake", "proc", "cmdline"), "w") as f:
        f.write("ro quiet\n")
    with open(os.path.join(root, "fake", "grub"), "w") as f:
        f.write('GRUB_CMDLINE_LINUX="quiet hugepages=2"\n')
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        PATH=os.pathsep.join([os.path.join(venv, "bin"), os.environ.get("PATH", "")]),
    )
    env.pop("ANSIBLE_CONFIG", None)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        extra = {"root": root, "netns": netns, "ansible_python_interpreter": os.path.join(venv, "bin", "python")}
        done = subprocess.run(
            [
                os.path.join(venv, "bin", "ansible-playbook"),
                "-i",
                "localhost,",
                "-c",
                "local",
                "-e",
                json.dumps(extra),
                os.path.join(REPO, "tests", "integration", "playbooks", "core_smoke.yml"),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, "ansible-core %s:\n%s" % (core, done.stdout[-8000:] + done.stderr[-3000:])
        assert "failed=0" in done.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(root, ignore_errors=True)
