# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""guest_agent: true on the tiny test guest, which has the channel but no agent: it is listed
as not answering within the bound, and shutdown_mode: agent falls back to ACPI (the exclusive
and snapshot fallbacks: test_agent_stop_fallback.py). A real qemu-ga is proven on the cloud
guest's one boot in test_cloud_guest.py, with the helpers below that read QEMU's own event
log (the ACPI power button makes QEMU emit POWERDOWN, a guest-shutdown does not)."""

from __future__ import annotations

import os
import time

import pytest
from helpers import qemu_event_log, qemu_events

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import GUEST_TIMEOUT
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result

pytestmark = [pytest.mark.qemu, pytest.mark.guest]


def test_a_silent_agent_and_the_acpi_fallback(service, guest_params):
    """The tiny guest has no agent: the channel is there, nobody answers."""
    params = dict(guest_params, name="silent", guest_agent=True, state="running")
    started = service.ensure(params, False)
    sock = VmPaths.for_vm(service.ctx.run_dir, started.vm["uuid"]).guest_agent_socket
    assert os.path.exists(sock)  # QEMU listens on the channel's socket
    journal = service.ctx.store.journal_list(started.vm["uuid"])
    assert ("guest_agent_socket", sock) in journal

    t0 = time.monotonic()
    vm = info_result(service.ctx, "silent")["vms"][0]
    took = time.monotonic() - t0
    assert vm["guest"]["agent"] == "not answering" and vm["guest"]["interfaces"] == []
    assert took < GUEST_TIMEOUT + 3.0, "listing one silent agent took %.1f s" % took

    with qemu_event_log(service, started.vm) as events_file:
        stopped = service.ensure(dict(params, state="stopped", shutdown_mode="agent", stop_timeout=60), False)
        names = [e["event"] for e in qemu_events(events_file)]
    assert stopped.vm["status"] == "stopped"
    assert len(stopped.warnings) == 1 and "ACPI power button was used instead" in stopped.warnings[0]
    assert "POWERDOWN" in names, names  # the fallback pressed the ACPI button
    assert not os.path.exists(sock)  # removed with the process
    assert all(kind != "guest_agent_socket" for kind, _ref in service.ctx.store.journal_list(started.vm["uuid"]))


def test_turning_the_agent_on_is_a_pending_restart(service, guest_params):
    params = dict(guest_params, name="later", state="running")
    service.ensure(params, False)
    changed = service.ensure(dict(params, guest_agent=True), False)
    assert changed.vm["pending_restart"] == ["guest_agent"]
    assert changed.vm["guest"]["agent"] == "disabled"  # the running QEMU has no channel
