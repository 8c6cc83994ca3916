# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""stop_timeout on real QEMU: 0 waits for nothing (forced: QEMU ends at once; not forced:
the task fails at once and the VM is left as it was), small values are honoured, negative
and endless ones are refused naming the option.

The VMs have no kernel: SeaBIOS finds nothing to boot and never reacts to the power
button, so a stop that waits for the guest waits for its whole stop_timeout.
"""

from __future__ import annotations

import math
import time

import pytest
from helpers import vm_list

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_runs_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

pytestmark = [pytest.mark.qemu]

# Far below the 60 s a stop_timeout of 0 used to mean, far above what ending QEMU takes.
PROMPT = 10.0


def ensure(service, **params):
    return service.ensure(params, False)


def timed(call, *args, **kwargs):
    start = time.monotonic()
    try:
        return call(*args, **kwargs), time.monotonic() - start
    except InfinivirtError as exc:  # handed back with the time it took
        return exc, time.monotonic() - start


@pytest.fixture
def deaf(service):
    """A running VM whose guest ignores the ACPI power button."""
    vm = ensure(service, name="deaf", state="running", accel="tcg", memory_mb=64).vm
    assert process_runs_vm(vm["pid"], vm["uuid"])
    return vm


def state_of(service, name="deaf"):
    return vm_list(service, name)[0]["qemu_status"]


def test_zero_with_force_ends_qemu_at_once(service, deaf):
    out, took = timed(ensure, service, name="deaf", state="stopped", stop_timeout=0, force=True)
    assert out.changed and out.actions == ["stop"] and out.vm["status"] == "stopped", out
    assert took < PROMPT, "a stop_timeout of 0 must not wait for the guest (took %.1f s)" % took
    assert not process_runs_vm(deaf["pid"], deaf["uuid"])

    # A paused VM too: it is not resumed to see a power button, it is ended.
    paused = ensure(service, name="deaf", state="paused").vm
    out, took = timed(ensure, service, name="deaf", state="absent", stop_timeout=0, force=True)
    assert out.changed and out.vm["status"] == "absent" and took < PROMPT, (out, took)
    assert not process_runs_vm(paused["pid"], paused["uuid"])


def test_zero_without_force_fails_at_once_and_leaves_the_vm_alone(service, deaf):
    err, took = timed(ensure, service, name="deaf", state="stopped", stop_timeout=0)
    assert isinstance(err, StateError), err
    assert took < PROMPT, "a stop_timeout of 0 must not wait for the guest (took %.1f s)" % took
    assert "stop_timeout is 0" in str(err) and "force: true" in str(err)
    assert state_of(service) == "running" and process_runs_vm(deaf["pid"], deaf["uuid"])

    # Paused: it fails the same way and stays paused (not resumed for a power button).
    assert ensure(service, name="deaf", state="paused").actions == ["pause"]
    err, took = timed(ensure, service, name="deaf", state="restarted", stop_timeout=0)
    assert isinstance(err, StateError) and "stop_timeout is 0" in str(err) and took < PROMPT, (err, took)
    assert state_of(service) == "paused" and process_runs_vm(deaf["pid"], deaf["uuid"])

    # Removal stops first: nothing is removed.
    err, _took = timed(ensure, service, name="deaf", state="absent", stop_timeout=0)
    assert isinstance(err, StateError), err
    assert vm_list(service, "deaf")[0]["pid"] == deaf["pid"]


def test_half_a_second_is_waited_then_honoured(service, deaf):
    err, took = timed(ensure, service, name="deaf", state="stopped", stop_timeout=0.5)
    assert isinstance(err, StateError) and "stop_timeout=0.5 s" in str(err), err
    assert 0.5 <= took < PROMPT, took
    assert state_of(service) == "running", "a stop that timed out without force kills nothing"

    out, took = timed(ensure, service, name="deaf", state="stopped", stop_timeout=0.5, force=True)
    assert out.changed and out.vm["status"] == "stopped", out
    assert 0.5 <= took < PROMPT, took
    assert not process_runs_vm(deaf["pid"], deaf["uuid"])


def test_negative_or_endless_is_refused_naming_the_option(service, deaf):
    for value in (-1, -0.5, -math.inf, math.inf, math.nan, "soon"):
        for state in ("stopped", "restarted", "absent", "running"):
            err, _took = timed(ensure, service, name="deaf", state=state, stop_timeout=value, force=True)
            assert isinstance(err, SpecError) and err.field == "stop_timeout", (value, state, err)
    assert state_of(service) == "running" and process_runs_vm(deaf["pid"], deaf["uuid"])
    # In check mode too, and from infinivirt_snapshot, before anything is looked at.
    with pytest.raises(SpecError) as err:
        service.ensure({"name": "deaf", "state": "stopped", "stop_timeout": -1}, True)
    assert err.value.field == "stop_timeout"
    with pytest.raises(SpecError) as err:
        SnapshotService(service.engine).ensure({"vm": "deaf", "name": "s1", "stop_timeout": -1, "force": True}, False)
    assert err.value.field == "stop_timeout" and "got -1" in str(err.value)
