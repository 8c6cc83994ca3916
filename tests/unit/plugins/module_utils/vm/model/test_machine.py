# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The versioned machine type (vm/model/machine.py) and the -machine option it feeds."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.machine import (
    belongs,
    machine_to_run,
    resolve_alias,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

# What QEMU 7.2's query-machines says (abridged, in its own order).
MACHINES = [
    {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": True},
    {"name": "pc-q35-7.1"},
    {"name": "pc-q35-7.2", "alias": "q35"},
    {"name": "microvm"},
]


def test_the_alias_resolves_to_its_version():
    assert resolve_alias("q35", MACHINES) == "pc-q35-7.2"
    assert resolve_alias("pc", MACHINES) == "pc-i440fx-7.2"
    assert resolve_alias("q35", [{"name": "pc-q35-7.2"}]) is None, "no alias: nothing to record"
    assert resolve_alias("q35", [{"name": "pc-i440fx-7.2", "alias": "q35"}]) is None, "another family"


def test_a_recorded_version_runs_only_for_its_own_family():
    assert machine_to_run("q35", "pc-q35-7.2") == "pc-q35-7.2"
    assert machine_to_run("q35", None) == "q35"
    assert machine_to_run("pc", "pc-q35-7.2") == "pc", "machine_type changed since: resolved again"
    assert not belongs("q35", "pc-q35-") and not belongs("nope", "pc-q35-7.2")


def _machine(argv):
    return argv[argv.index("-machine") + 1]


def test_the_argv_asks_for_the_recorded_version():
    spec = VmSpec(name="m", firmware="uefi")
    base = dict(binary="qemu", uuid="u", accel="tcg", cpu="max", pidfile="/p", qmp_socket="/q", serial_log="/s")
    assert _machine(build_argv(spec, LaunchContext(**base))).startswith("type=q35,")
    assert _machine(build_argv(spec, LaunchContext(machine="pc-q35-7.2", **base))).startswith("type=pc-q35-7.2,")
    # a value read back from the store is escaped like any option value
    odd = _machine(build_argv(spec, LaunchContext(machine="pc-q35-7.2,x=y", **base)))
    assert odd.startswith("type=pc-q35-7.2,,x=y,")


def test_a_migration_target_waits_for_the_stream():
    spec = VmSpec(name="m")
    base = dict(binary="qemu", uuid="u", accel="tcg", cpu="max", pidfile="/p", qmp_socket="/q", serial_log="/s")
    argv = build_argv(spec, LaunchContext(incoming=True, **base))
    assert argv[argv.index("-incoming") + 1] == "defer" and "-S" in argv
    assert "-incoming" not in build_argv(spec, LaunchContext(**base))
