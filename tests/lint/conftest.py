# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the collection-level lint/packaging tests (ansible-test sanity, ansible-lint,
ansible-doc, antsibull-docs, antsibull-changelog, ansible-galaxy build).

These tests run the real tools; a missing tool is a failure, never a skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import NAME, NAMESPACE, REPO_ROOT, list_modules, tool_env


@dataclass
class CollectionTree:
    root: Path  # holds ansible_collections/ (what ANSIBLE_COLLECTIONS_PATH points at)
    path: Path  # <root>/ansible_collections/infinivirt/core, a symlink to the repository
    env: dict  # environment for the tools (see helpers.tool_env)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> CollectionTree:
    """A temporary ``ansible_collections/infinivirt/core`` symlink to the repository (T1).

    ansible-test only runs inside an ``ansible_collections/<ns>/<name>`` tree; ansible-doc,
    ansible-lint and antsibull-docs find the collection through ANSIBLE_COLLECTIONS_PATH.
    """
    root = tmp_path_factory.mktemp("collections")
    parent = root / "ansible_collections" / NAMESPACE
    parent.mkdir(parents=True)
    path = parent / NAME
    path.symlink_to(REPO_ROOT, target_is_directory=True)
    return CollectionTree(root=root, path=path, env=tool_env(root))


@pytest.fixture(scope="session")
def module_names() -> list:
    """Short names of the modules in plugins/modules (without .py)."""
    return list_modules()
