# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ansible-galaxy collection build`` produces a clean tarball (P2)."""

from __future__ import annotations

import subprocess
import tarfile

import pytest

from .helpers import run, tool


@pytest.fixture(scope="module")
def tarball_names(collection, repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("galaxy-build")
    result = run(
        [tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), str(repo_root)],
        cwd=repo_root,
        env=collection.env,
    )
    assert result.returncode == 0, "ansible-galaxy collection build failed:\n" + result.describe()
    built = sorted(out.glob("infinivirt-core-*.tar.gz"))
    assert len(built) == 1, "expected one tarball, got %s\n%s" % (built, result.describe())
    with tarfile.open(str(built[0])) as tar:
        return sorted(m.name[2:] if m.name.startswith("./") else m.name for m in tar.getmembers())


def _git_files(repo_root, *pathspecs):
    """Tracked plus untracked-but-not-ignored files (what the next commit may contain)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "--"] + list(pathspecs),
        cwd=str(repo_root),
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if line]


def test_has_metadata(tarball_names):
    for name in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "README.md"):
        assert name in tarball_names


def test_has_every_module(tarball_names, module_names):
    assert module_names, "plugins/modules has no modules"
    for module in module_names:
        assert "plugins/modules/%s.py" % module in tarball_names


def test_has_all_plugin_and_role_files(tarball_names, repo_root):
    # The default manifest drops meta/*.txt and roles/*/files/** (P2); galaxy.yml adds them back.
    wanted = [
        f
        for f in _git_files(repo_root, "plugins", "roles", "meta")
        if "__pycache__" not in f and not f.endswith((".pyc", ".pyo"))
    ]
    missing = [f for f in wanted if f not in tarball_names]
    assert not missing, "files left out of the tarball: %s" % missing


def test_no_dot_dirs_venv_or_build_output(tarball_names):
    bad = [
        n
        for n in tarball_names
        if any(part.startswith(".") for part in n.split("/"))
        or n.startswith(("tests/output", "dist/", ".venv"))
        or "__pycache__" in n
        or n.endswith((".pyc", ".tar.gz"))
    ]
    assert not bad, "unwanted files in the tarball: %s" % bad
