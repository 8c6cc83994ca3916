# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""guest_agent: true against a real qemu-ga. One cloud guest (TCG: minutes) with a NoCloud
seed: infinivirt_vm_info lists the agent answering with the hostname the seed set and the NIC's
MAC and address; a live snapshot freezes and thaws its file systems through the agent and
reports the agent's count; reverting that snapshot stops the guest through the agent
(infinivirt_snapshot's shutdown_mode) and starts it again (its second boot, which the revert
makes anyway); then infinivirt_vms' exclusive powers it off through the agent. QEMU's own
event log tells which way: the ACPI power button (QMP system_powerdown) makes QEMU emit
POWERDOWN, a guest-shutdown does not. The tiny test guest has the channel but no agent: it is
listed as not answering within the bound, and shutdown_mode: agent falls back to ACPI (the
exclusive and snapshot fallbacks: test_agent_stop_fallback.py)."""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml
from helpers import overlay_of, vm_list, wait_serial

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.guest_agent import GuestAgent, GuestAgentError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import GUEST_TIMEOUT
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.modules import infinivirt_vm

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns]

BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host
# A guest asked to power off while it still boots (after the revert) first finishes its boot
# jobs: measured here up to 100 s under load.
STOP_TIMEOUT = BOOT_TIMEOUT
HOSTNAME = "agent-web01"
MAC = "52:54:00:c1:00:21"
GUEST_IP = "10.77.1.2"


def qemu_events(handle):
    """The events in QEMU's own event log (<uuid>.evlog.out, read through a descriptor
    opened while the VM ran: the stop removes the file)."""
    events = []
    for line in handle.read().decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "event" in message:
            events.append(message)
    return events


def event_log(svc, vm):
    return open(VmPaths.for_vm(svc.ctx.run_dir, vm["uuid"]).event_log + ".out", "rb")


def documented_guest():
    """RETURN's vm.guest, as nested key sets."""
    doc = yaml.safe_load(infinivirt_vm.RETURN)["vm"]["contains"]["guest"]["contains"]
    return doc


def assert_shape(value, doc):
    """Every key the entry has is documented and every documented key is there, nested."""
    assert set(value) == set(doc)
    for key, entry in doc.items():
        if "contains" not in entry:
            continue
        items = value[key] if entry.get("type") == "list" else [value[key]]
        for item in items:
            assert_shape(item, entry["contains"])


def test_a_real_agent_reports_and_powers_the_guest_off(cloud_guest, cloud_service, images, bridge_ns):
    svc = cloud_service
    root = overlay_of(str(cloud_guest.disk), os.path.join(images, "root.qcow2"))
    params = {
        "name": "agented",
        "accel": "tcg",
        "vcpus": 2,
        "memory_mb": 1024,
        "kernel": str(cloud_guest.kernel),
        "initrd": str(cloud_guest.initrd),
        "kernel_cmdline": cloud_guest.kernel_cmdline,
        "disks": [{"path": root}],
        "netns": bridge_ns,
        "nics": [{"bridge": "vmbr0", "mac": MAC}],
        "guest_agent": True,
        # The seed through the option (vm/cloud_seed.py): cloud-init sets the hostname the agent
        # reports, and says on the console when it is done.
        "cloud_init": {
            "hostname": HOSTNAME,
            "user_data": {"runcmd": [["sh", "-c", "echo INFINIVIRT-AGENT-READY > /dev/ttyS0"]]},
            "network_config": {
                "version": 2,
                "ethernets": {"nic0": {"match": {"macaddress": MAC}, "addresses": [GUEST_IP + "/24"]}},
            },
        },
    }

    t0 = time.monotonic()
    # wait_for: ip on a bridge (no DHCP leases to read): the address comes from the agent.
    started = svc.ensure(dict(params, state="running", wait_for="ip", wait_timeout=BOOT_TIMEOUT), False)
    assert started.vm["ready"]["address"] == GUEST_IP and started.vm["ready"]["address_source"] == "agent"
    assert GUEST_IP in started.vm["guest"]["ips"]
    log = started.vm["serial_log"]
    ready = wait_serial(log, r"INFINIVIRT-AGENT-READY", t0 + BOOT_TIMEOUT)
    with open(log, "rb") as fh:
        tail = fh.read().decode(errors="replace")[-3000:]
    assert ready, "cloud-init never finished in %.0f s; console tail:\n%s" % (BOOT_TIMEOUT, tail)
    t_ready = time.monotonic() - t0

    vm = info_result(svc.ctx, "agented")["vms"][0]
    guest = vm["guest"]
    assert guest["agent"] == "answering", guest
    assert guest["hostname"] == HOSTNAME
    assert guest["os"]["id"] == "debian" and guest["os"]["version"] == "12"
    nic = [i for i in guest["interfaces"] if i["mac"] == MAC]
    assert nic and GUEST_IP in nic[0]["ips"], guest["interfaces"]
    assert GUEST_IP in guest["ips"] and "127.0.0.1" not in guest["ips"]
    assert_shape(guest, documented_guest())
    # infinivirt_vm's own entry says the same (a no-op task)
    again = svc.ensure(dict(params, state="running"), False)
    assert not again.changed and again.vm["guest"]["hostname"] == HOSTNAME

    # A live disk-only snapshot freezes the file systems through the agent, and thaws them;
    # the count is the agent's: a freeze of our own counts the same, and its thaw too.
    snaps = SnapshotService(svc.engine)
    snap = snaps.ensure({"vm": "agented", "name": "quiesced"}, False)
    assert snap["changed"] and snap["frozen"] is True and snap["frozen_filesystems"] >= 1, snap
    with GuestAgent(agent_socket(svc, started.vm), 60) as agent:
        assert agent.fsfreeze_status() == "thawed"
        count = agent.fsfreeze_freeze()
        try:
            assert agent.fsfreeze_status() == "frozen"
        finally:
            thawed = agent.fsfreeze_thaw()
    assert snap["frozen_filesystems"] == count == thawed

    # Reverting it stops the running VM through the agent (infinivirt_snapshot's
    # shutdown_mode), reverts the disks, and starts the VM again: the second and last boot.
    first_pid = vm_list(svc, "agented")[0]["pid"]
    with event_log(svc, started.vm) as events_file:
        t1 = time.monotonic()
        reverted = snaps.ensure(
            {
                "vm": "agented",
                "name": "quiesced",
                "state": "reverted",
                "shutdown_mode": "agent",
                "stop_timeout": STOP_TIMEOUT,
            },
            False,
        )
        t_revert = time.monotonic() - t1
        assert_agent_shutdown(qemu_events(events_file))
    assert reverted["changed"] and reverted["action"] == "revert" and reverted["warnings"] == []
    assert vm_list(svc, "agented")[0]["pid"] != first_pid
    t2 = time.monotonic()
    assert wait_for_agent(svc, started.vm, time.monotonic() + BOOT_TIMEOUT), console_tail(log)
    t_agent = time.monotonic() - t2

    # exclusive with defaults.shutdown_mode: agent powers the unlisted VM off through its
    # agent: the same VmService.ensure as infinivirt_vm's own stop, with the batch's params.
    spec = vm_argument_spec()
    prepared = prepare(
        [], {"shutdown_mode": "agent", "stop_timeout": STOP_TIMEOUT}, lambda e, p: validate_options(spec, e, p)
    )
    batch = VmBatch(svc.ctx, lambda: pytest.fail("one VM needs no worker context"), parallel=1)
    with event_log(svc, started.vm) as events_file:
        t3 = time.monotonic()
        result = batch.converge(
            [], False, exclusive_state="stopped", stop_params=prepared.stop_params, allow_empty=True
        )
        t_stop = time.monotonic() - t3
        if result.get("failed"):
            pytest.fail("the stop failed: %s; %s" % (result["msg"], console_tail(log)))
        assert_agent_shutdown(qemu_events(events_file))
    (stopped,) = result["unlisted"]
    assert stopped["changed"] and stopped["vm"]["status"] == "stopped"
    assert stopped["warnings"] == [] and result["warnings"] == []
    assert stopped["vm"]["guest"]["agent"] == "not answering"
    print(
        "guest agent: cloud-init done %.0f s after start; %d file systems frozen; revert through an agent "
        "shutdown %.0f s, agent answering %.0f s after it; exclusive agent shutdown %.0f s"
        % (t_ready, count, t_revert, t_agent, t_stop)
    )


def assert_agent_shutdown(events):
    """QEMU ended on the guest's own power-off (guest-shutdown), not the ACPI power button."""
    names = [e["event"] for e in events]
    assert "POWERDOWN" not in names, names  # no ACPI power button
    shutdown = [e for e in events if e["event"] == "SHUTDOWN"]
    assert shutdown and shutdown[0]["data"]["reason"] == "guest-shutdown", events


def agent_socket(svc, vm):
    return VmPaths.for_vm(svc.ctx.run_dir, vm["uuid"]).guest_agent_socket


def wait_for_agent(svc, vm, deadline):
    """Whether the (re)booted guest's agent answers a guest-ping before ``deadline``."""
    while time.monotonic() < deadline:
        try:
            with GuestAgent(agent_socket(svc, vm), 5, total=5) as agent:
                agent.ping()
            return True
        except GuestAgentError:
            time.sleep(2)
    return False


def console_tail(log):
    with open(log, "rb") as fh:
        return "console tail:\n" + fh.read().decode(errors="replace")[-4000:]


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

    with event_log(service, started.vm) as events_file:
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
