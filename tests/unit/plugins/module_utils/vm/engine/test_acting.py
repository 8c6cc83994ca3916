# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How an engine is built from a HostContext: a reader's has no firewall hooks, a task's
that changes VMs makes its FirewallService once, on first use, for the context's host."""

from __future__ import annotations

import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import VmInfo


@pytest.fixture
def ctx(tmp_path):
    run_dir = str(tmp_path / "run")
    os.mkdir(run_dir, 0o700)
    context = HostContext.open(
        "sqlite:///%s/state.db" % tmp_path, run_dir, host_id="hv-1", lock_timeout=7.0, nvram_dir=str(tmp_path)
    )
    yield context
    context.close()


def test_an_engine_is_built_from_the_context(ctx):
    engine = Engine.of(ctx)
    assert engine.store is ctx.store and engine.host_id == "hv-1" and engine.lock_timeout == 7.0
    assert engine.process.run_dir == ctx.run_dir and engine.sessions.process is engine.process
    assert engine.resources.store is ctx.store and engine.resources.nvram_dir == ctx.nvram_dir


def test_a_reader_has_no_firewall_hooks(ctx):
    assert Engine.of(ctx).resources.firewall is None
    assert VmInfo.of(ctx).engine.resources.firewall is None


def test_a_task_that_changes_vms_gets_one_firewall_made_on_first_use(ctx):
    engine = acting_engine(ctx)
    first = engine.resources.firewall()
    assert engine.resources.firewall() is first
    assert first.store is ctx.store and first.hostname == "hv-1" and first.lock_timeout == 7.0
    assert acting_engine(ctx).resources.firewall() is not first, "one per engine, not per process"
