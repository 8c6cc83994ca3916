# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two hypervisors sharing one PostgreSQL store, and optimistic concurrency (digest)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from helpers import vm_list
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu]

VM = {"name": "shared", "accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}


@pytest.fixture
def hosts(pg_url):
    """Hosts A and B: one database, separate run dirs (as on two machines)."""
    dirs = [tempfile.mkdtemp(prefix="iv-host") for _n in range(2)]
    a = VmService.open(pg_url, dirs[0], hostname="hv-a")
    b = VmService.open(pg_url, dirs[1], hostname="hv-b")
    yield a, b
    for service in (a, b):
        for vm in vm_list(service):
            if vm["host"] == service.hostname:
                service.ensure(dict(VM, name=vm["name"], state="absent"), False)
        service.close()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def test_a_vm_running_elsewhere_cannot_be_taken_over(hosts):
    a, b = hosts
    started = a.ensure(dict(VM, state="running"), False)
    assert started.vm["host"] == "hv-a"
    for params in ({"state": "stopped"}, {"state": "restarted"}, {"state": "absent"}, {"state": "present", "vcpus": 2}):
        with pytest.raises(StateError) as err:
            b.ensure(dict(VM, **params), False)
        assert "owned by host hv-a" in str(err.value) and "run this task on hv-a" in str(err.value)
    assert qemu_processes(started.vm["uuid"]) == [started.vm["pid"]], "B touched nothing"
    # Asking for what is already true is no error, and B lists A's VM from the shared store.
    assert not b.ensure(dict(VM, state="present"), False).changed
    assert not b.ensure(dict(VM, state="running"), False).changed
    seen = vm_list(b, "shared")[0]
    assert (seen["host"], seen["status"], seen["qemu_status"]) == ("hv-a", "running", None)


def test_a_stopped_vm_moves_to_the_host_that_starts_it(hosts):
    a, b = hosts
    uuid = a.ensure(dict(VM, state="running"), False).vm["uuid"]
    a.ensure(dict(VM, state="stopped"), False)
    moved = b.ensure(dict(VM, state="running"), False)
    assert moved.changed and moved.vm["host"] == "hv-b" and moved.vm["uuid"] == uuid
    assert len(qemu_processes(uuid)) == 1
    with pytest.raises(StateError) as err:
        a.ensure(dict(VM, state="stopped"), False)
    assert "owned by host hv-b" in str(err.value)
    assert [vm["host"] for vm in vm_list(a)] == ["hv-b"]


def test_digest_refuses_a_definition_changed_meanwhile(hosts):
    a, b = hosts
    read = a.ensure(dict(VM, state="present"), False).vm
    b.ensure(dict(VM, state="present", vcpus=2), False)  # someone else changes it
    with pytest.raises(StateError) as err:
        a.ensure(dict(VM, state="present", memory_mb=64, digest=read["digest"]), False)
    assert "was changed since digest %s was read" % read["digest"] in str(err.value)
    assert vm_list(a, "shared")[0]["memory_mb"] == 32, "the refused task changed nothing"
    fresh = vm_list(a, "shared")[0]["digest"]
    done = a.ensure(dict(VM, state="present", memory_mb=64, digest=fresh), False)
    assert done.changed and done.vm["memory_mb"] == 64 and done.vm["digest"] != fresh
    with pytest.raises(StateError):
        a.ensure(dict(VM, name="nope", state="present", digest=fresh), False)
    assert vm_list(a, "nope") == []
