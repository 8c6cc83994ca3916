# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A migration target for the receiving tests: host hv-b's context on a SQLite store."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext


@pytest.fixture
def hv_b(tmp_path):
    """(hv-b's HostContext, its storage root tmp_path/shared); closed after the test."""
    run_dir, shared = tmp_path / "run", tmp_path / "shared"
    run_dir.mkdir(mode=0o700)
    shared.mkdir()
    ctx = HostContext.open(
        "sqlite:///%s/state.db" % tmp_path,
        str(run_dir),
        host_id="hv-b",
        nvram_dir=str(tmp_path),
        storage_roots=[str(shared)],
    )
    yield ctx, shared
    ctx.close()
