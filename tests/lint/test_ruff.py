# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ruff keeps the whole tree linted and formatted (configuration: ruff.toml)."""

from __future__ import annotations

from .helpers import REPO_ROOT, run, tool


def test_ruff_check():
    result = run([tool("ruff"), "check", "--no-cache", "."], cwd=REPO_ROOT)
    assert result.returncode == 0, "ruff check found problems:\n" + result.describe()


def test_ruff_format():
    result = run([tool("ruff"), "format", "--check", "--no-cache", "."], cwd=REPO_ROOT)
    assert result.returncode == 0, "files need `ruff format`:\n" + result.describe()
