# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The machine type QEMU resolved at a VM's first start is recorded and asked for at every
later start (issue 23: a migration target runs the source's machine version)."""

from __future__ import annotations

import pytest
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

pytestmark = [pytest.mark.qemu]

VM = {"name": "mver", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0, "force": True}


def _machine_arg(uuid):
    (pid,) = qemu_processes(uuid)
    with open("/proc/%d/cmdline" % pid, "rb") as fh:
        args = [a.decode() for a in fh.read().split(b"\0")]
    return args[args.index("-machine") + 1].split(",")[0]


def test_the_first_start_records_the_version_and_later_starts_use_it(service):
    uuid = service.ensure(dict(VM, state="running"), False).vm["uuid"]
    assert _machine_arg(uuid) == "type=q35", "the first start asks for the alias"
    assert records.load(service.store, "mver").machine_resolved == "pc-q35-7.2"
    service.ensure(dict(VM, state="stopped"), False)
    assert records.load(service.store, "mver").machine_resolved == "pc-q35-7.2", "kept across a stop"
    service.ensure(dict(VM, state="running"), False)
    assert _machine_arg(uuid) == "type=pc-q35-7.2"

    # a VM recorded before migration 23 (NULL) is resolved at its next start
    service.ensure(dict(VM, state="stopped"), False)
    rec = records.load(service.store, "mver")
    rec.machine_resolved = None
    records.save(service.store, rec)
    service.ensure(dict(VM, state="running"), False)
    assert _machine_arg(uuid) == "type=q35"
    assert records.load(service.store, "mver").machine_resolved == "pc-q35-7.2"

    # machine_type changed: the old version is not asked for, the new alias is recorded
    service.ensure(dict(VM, state="stopped", machine_type="pc"), False)
    service.ensure(dict(VM, state="running"), False)
    assert _machine_arg(uuid) == "type=pc"
    assert records.load(service.store, "mver").machine_resolved == "pc-i440fx-7.2"
