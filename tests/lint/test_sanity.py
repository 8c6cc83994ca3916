# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ansible-test sanity`` on the work tree (requirement S1/S4).

Why ``--local`` and not ``--venv``: ansible-test derives the collection from the *physical*
working directory, so a symlinked ``ansible_collections/infinivirt/core`` only works with
ANSIBLE_TEST_CONTENT_ROOT pointing at the link. ``--venv`` re-runs ansible-test in a
delegation venv with ANSIBLE_TEST_CONTENT_ROOT reset to the resolved path, which then fails
with 'No "ansible_collections" parent directory was found'. ``--local`` has no delegation
step, and is faster (both create the per-test sanity venvs under ~/.ansible/test/venv).

Offline: every venv ansible-test creates is bootstrapped with
~/.ansible/test/cache/get_pip_<ver>.py, which scripts/install.sh installs from
tests/utils/get_pip_shim.py.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import run, tool

pytestmark = pytest.mark.slow  # ansible-test sanity: minutes cold

# pip version ansible-test 2.19 bootstraps into its venvs (ansible_test/_internal/python_requirements.py)
GET_PIP_CACHE = Path.home() / ".ansible" / "test" / "cache" / "get_pip_24_2.py"

# Oldest Python the modules support (tests/config.yml: python_requires '>=3.9', RHEL 9).
MIN_MODULE_PYTHON = "3.9"


def _ansible_test_env(collection) -> dict:
    env = dict(collection.env)
    # ansible-test picks its own collection path; do not hand it ours.
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    env.pop("ANSIBLE_COLLECTIONS_SCAN_SYS_PATH", None)
    env["ANSIBLE_TEST_CONTENT_ROOT"] = str(collection.path)
    return env


def _preflight(repo_root: Path) -> None:
    assert GET_PIP_CACHE.is_file(), (
        "%s is missing: ansible-test cannot bootstrap pip offline without it. "
        "Run scripts/install.sh (it copies tests/utils/get_pip_shim.py there)." % GET_PIP_CACHE
    )
    # Without git, ansible-test lists every file in the tree, .venv/ and dist/ included.
    assert (repo_root / ".git").exists(), (
        "%s is not a git work tree; ansible-test would lint .venv/ and every other "
        "untracked file. Run the tests from a git clone." % repo_root
    )


def _check(result) -> None:
    assert result.returncode == 0, "ansible-test sanity failed:\n" + result.describe()


def test_ansible_test_sanity(collection, repo_root):
    ansible_test = tool("ansible-test")
    _preflight(repo_root)
    python = "%d.%d" % sys.version_info[:2]
    result = run(
        [ansible_test, "sanity", "--local", "--python", python, "--color", "no"],
        cwd=collection.path,
        env=_ansible_test_env(collection),
    )
    _check(result)


def _find_python(version: str):
    """A working ``python<version>``: on PATH, or a pyenv install (its shims refuse to run
    versions that are not selected, so look behind them)."""
    name = "python" + version
    candidates = []
    found = shutil.which(name)
    if found:
        candidates.append(found)
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates.extend(
        sorted(glob.glob(os.path.join(pyenv_root, "versions", version + ".*", "bin", name)), reverse=True)
    )
    for candidate in candidates:
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    return None


def test_ansible_test_sanity_min_module_python(collection, repo_root):
    """compile + import sanity on the oldest module Python (S4), when that Python exists here.

    Debian 12 has no python3.9 package, so on a machine without one (pyenv) this is skipped,
    with the reason shown by ``pytest -ra``.
    """
    ansible_test = tool("ansible-test")
    _preflight(repo_root)
    python = _find_python(MIN_MODULE_PYTHON)
    if python is None:
        pytest.skip("no working python%s on this machine (PATH or ~/.pyenv)" % MIN_MODULE_PYTHON)
    env = _ansible_test_env(collection)
    env["PATH"] = os.pathsep.join([os.path.dirname(python), env["PATH"]])
    result = run(
        [
            ansible_test,
            "sanity",
            "--local",
            "--python",
            MIN_MODULE_PYTHON,
            "--color",
            "no",
            "--test",
            "compile",
            "--test",
            "import",
        ],
        cwd=collection.path,
        env=env,
    )
    _check(result)
