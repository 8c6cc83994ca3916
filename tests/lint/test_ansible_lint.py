# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-lint (profile production, from .ansible-lint) on the work tree, offline (R1)."""

from __future__ import annotations

import pytest

from .helpers import run, tool

pytestmark = pytest.mark.slow


def test_ansible_lint(collection, repo_root):
    ansible_lint = tool("ansible-lint")
    assert (repo_root / ".ansible-lint").is_file()
    # --offline: no Galaxy, and no install of the collection into .ansible/; the collection is
    # found through ANSIBLE_COLLECTIONS_PATH (the temp symlink tree) instead.
    result = run(
        [ansible_lint, "--offline", "--nocolor", "--profile", "production"],
        cwd=repo_root,
        env=collection.env,
    )
    assert result.returncode == 0, "ansible-lint failed:\n" + result.describe()
