# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""wait_for on cheap guests (the tiny test guest, firmware-only VMs): a guest that never
becomes ready fails after wait_timeout with its console tail (bounded, secrets masked) and is
left running; wait_timeout's edges (0: one look; a huge value); wait_for: agent without the
agent's channel; bad input changes nothing; infinivirt_vms waits for its VMs against one
deadline. The SSH proof with the cloud guest is tests/integration/test_cloud_guest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from collection_path import collections_root
from helpers import vm_list, wait_ready
from serial_report import channel_command

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import Entry, VmBatch
from ansible_collections.infinivirt.core.plugins.module_utils.vm.readiness import NotReady
from ansible_collections.infinivirt.core.plugins.modules import infinivirt_vm

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

VNC_PASSWORD = "Vnc7pw9Q"  # the VM's display password: the guest prints it (kernel command line)
CLOUD_SECRET = "cl0udS3cretXyz"  # a cloud_init user_data secret, printed the same way
GUEST_TIMEOUT = float(os.environ.get("INFINIVIRT_GUEST_TIMEOUT", "120"))


def run_module(module, args):
    """One task of ``module`` through Ansible on localhost: (return code, result, raw output)."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",  # "localhost | FAILED! => {...}"
    )
    done = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "infinivirt.core." + module,
            "-a",
            json.dumps(args),
            "-e",
            "ansible_python_interpreter=%s" % sys.executable,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done.returncode, json.loads(done.stdout.split("=>", 1)[1]), done.stdout + done.stderr


def with_secrets(guest_params):
    """The tiny guest with the secrets on its kernel command line (which the guest then prints)."""
    cmdline = "%s ivpw=%s ivci=%s" % (guest_params["kernel_cmdline"], VNC_PASSWORD, CLOUD_SECRET)
    return dict(guest_params, kernel_cmdline=cmdline, console_socket=True)


def guest_prints(console_socket):
    """Make the guest print its kernel command line (the secrets), a coloured line and binary
    junk on its serial console, through its command channel (the second serial port)."""
    command = (
        "cat /proc/cmdline > /dev/ttyS0; "
        "printf '\\033[1;31mRED-MARK\\033[0m \\001\\002\\377\\376 end\\r\\n' > /dev/ttyS0"
    )
    code, output = channel_command(console_socket, command)
    assert code == 0, output


def test_a_guest_that_never_becomes_ready_fails_with_its_console_tail(guest_params, workdir):
    common = {
        "db_url": "sqlite:///%s/wait.db" % workdir,
        "run_dir": os.path.join(workdir, "run"),
        "nvram_dir": os.path.join(workdir, "nvram"),
        "secret_key_file": os.path.join(workdir, "secret.key"),
    }
    vm = dict(
        common,
        **with_secrets(guest_params),
        name="neverready",
        state="running",
        graphics={"type": "vnc", "listen": "127.0.0.1", "password": VNC_PASSWORD},
        cloud_init={"user_data": {"chpasswd": {"users": [{"name": "root", "password": CLOUD_SECRET}]}}},
    )
    t0 = time.monotonic()
    code, result, output = run_module(
        "infinivirt_vm", dict(vm, wait_for={"serial": "INFINIVIRT ready"}, wait_timeout=GUEST_TIMEOUT)
    )
    t_boot = time.monotonic() - t0
    assert code == 0, output[-4000:]
    assert result["changed"] and result["vm"]["ready"]["wait_for"] == {"serial": "INFINIVIRT ready"}
    assert result["vm"]["ready"]["address"] is None
    documented = yaml.safe_load(infinivirt_vm.RETURN)["vm"]["contains"]["ready"]["contains"]
    assert set(result["vm"]["ready"]) == set(documented)  # RETURN's vm.ready, key for key

    guest_prints(result["vm"]["console_socket_path"])

    # Running and booted: a line the guest never prints, a short timeout.
    t1 = time.monotonic()
    code, result, output = run_module("infinivirt_vm", dict(vm, wait_for={"serial": "never-printed"}, wait_timeout=3))
    t_fail = time.monotonic() - t1
    assert code != 0 and "FAILED!" in output, result  # (the minimal callback drops the failed key)
    assert "wait_for serial timed out after 3 s (wait_timeout 3)" in result["msg"], result["msg"]
    assert "never-printed" in result["msg"]
    tail = result["console_tail"]
    assert 0 < len(tail) <= 40 and len("\n".join(tail).encode()) <= 4096
    assert any(line.startswith("INFINIVIRT ready") for line in tail), tail
    assert any("ivpw=********" in line and "ivci=********" in line for line in tail), tail
    assert "RED-MARK \ufffd\ufffd end" in tail, tail  # escapes and controls gone, bad bytes replaced
    assert VNC_PASSWORD not in output and CLOUD_SECRET not in output  # nowhere in the result
    assert result["changed"] is False and result["vm"]["status"] == "running"
    # Left as documented: running.
    code, result, output = run_module("infinivirt_vm", dict(common, name="neverready", state="running"))
    assert code == 0 and not result["changed"] and result["vm"]["status"] == "running"
    run_module("infinivirt_vm", dict(common, name="neverready", state="absent", force=True, stop_timeout=5))
    print("wait_for: tiny guest booted and matched in %.1f s; the failing wait took %.1f s" % (t_boot, t_fail))


def test_wait_timeout_edges_and_a_restart_waits_for_its_own_boot(service, guest_params):
    params = dict(guest_params, name="edges", state="running")
    started = service.ensure(params, False)
    wait_ready(started.vm["serial_log"])
    # 0: one look. The line is there: ready at once; a line that is not: fails at once.
    out = service.ensure(dict(params, wait_for={"serial": "INFINIVIRT ready"}, wait_timeout=0), False)
    assert out.vm["ready"]["seconds"] < 2 and not out.changed
    t0 = time.monotonic()
    with pytest.raises(NotReady) as failed:
        service.ensure(dict(params, wait_for={"serial": "never-printed"}, wait_timeout=0), False)
    assert time.monotonic() - t0 < 5
    assert "timed out after 0 s (wait_timeout 0)" in str(failed.value)
    # A huge timeout neither overflows nor waits when the guest is ready.
    out = service.ensure(dict(params, wait_for={"serial": "INFINIVIRT ready"}, wait_timeout=1e9), False)
    assert out.vm["ready"]["seconds"] < 2
    # A restart's wait counts only the new boot's lines (the log is rotated at each start):
    # the old boot's "ready" does not end it.
    out = service.ensure(
        dict(
            params, state="restarted", wait_for={"serial": "INFINIVIRT ready"}, wait_timeout=GUEST_TIMEOUT, force=True
        ),
        False,
    )
    assert out.changed and out.vm["ready"]["seconds"] > 1.0, out.vm["ready"]


def test_wait_for_agent_needs_the_agent_channel(service, guest_params):
    """Decided: a failure at validation, naming wait_for and guest_agent; nothing is made."""
    with pytest.raises(SpecError) as failed:
        service.ensure(dict(guest_params, name="noagent", state="running", wait_for="agent"), False)
    assert failed.value.field == "wait_for" and "guest_agent: true" in failed.value.reason
    assert vm_list(service) == []
    # ip without an agent nor a NAT network: nothing could tell the address
    with pytest.raises(SpecError) as failed:
        service.ensure(dict(guest_params, name="noaddr", state="running", wait_for="ip"), False)
    assert failed.value.field == "wait_for" and "needs a NIC" in failed.value.reason
    assert vm_list(service) == []
    # A running VM whose process has no channel: turning guest_agent on is a pending restart,
    # so wait_for: agent could never be met; it fails before the change is stored.
    cheap = {"name": "cheap", "state": "running", "accel": "tcg", "memory_mb": 64}
    service.ensure(cheap, False)
    with pytest.raises(SpecError) as failed:
        service.ensure(dict(cheap, guest_agent=True, wait_for="agent"), False)
    assert failed.value.field == "wait_for" and "runs without the agent's channel" in failed.value.reason
    (vm,) = vm_list(service)
    assert vm["guest_agent"] is False and vm["pending_restart"] == [] and vm["status"] == "running"


@pytest.mark.parametrize(
    "options, field, words",
    [
        ({"wait_for": "pingable"}, "wait_for", "must be one of agent, ip, ssh, or a dictionary {serial: REGEX}"),
        ({"wait_for": {"serial": "(unclosed"}}, "wait_for.serial", "not a valid regular expression: missing )"),
        ({"wait_for": {"console": "x"}}, "wait_for", "must be one of agent, ip, ssh"),
        ({"wait_for": "agent", "wait_timeout": -1}, "wait_timeout", "0 or more"),
        ({"wait_for": "agent", "wait_timeout": "soon"}, "wait_timeout", "must be a number of seconds"),
        ({"wait_for": "agent", "wait_timeout": float("nan")}, "wait_timeout", "finite"),
    ],
)
def test_bad_wait_options_change_nothing(service, guest_params, options, field, words):
    with pytest.raises(SpecError) as failed:
        service.ensure(dict(guest_params, name="bad", state="running", **options), False)
    assert failed.value.field == field and words in failed.value.reason, str(failed.value)
    assert vm_list(service) == []
    assert not os.listdir(service.ctx.run_dir) if os.path.isdir(service.ctx.run_dir) else True


def test_the_module_names_a_bad_wait_option(workdir):
    """Through Ansible: a string wait_timeout fails in Ansible's own type check, a negative
    one in ours; both name wait_timeout and leave no VM."""
    common = {"db_url": "sqlite:///%s/bad.db" % workdir, "run_dir": os.path.join(workdir, "run")}
    for value, words in (("soon", "wait_timeout"), (-1, "wait_timeout: must be a finite number")):
        code, result, output = run_module(
            "infinivirt_vm", dict(common, name="bad", state="stopped", wait_for="agent", wait_timeout=value)
        )
        assert code != 0 and words in result["msg"], output
    code, result, output = run_module("infinivirt_vm_info", common)
    assert code == 0 and result["vms"] == [], output


def test_infinivirt_vms_waits_for_all_against_one_deadline(service, workdir):
    """Two firmware-only VMs (no serial output) wait for a line that never comes, 6 s each:
    together the wait takes about 6 s, not 12; each entry fails with the timeout and its tail,
    and both stay running."""
    db_url = "sqlite:///%s/state.db" % workdir
    run_dir = os.path.join(workdir, "run")
    ctx = HostContext.open(db_url, run_dir, lock_timeout=30)
    try:
        batch = VmBatch(ctx, lambda: HostContext.open(db_url, run_dir, lock_timeout=30), parallel=2)
        entries = [
            Entry(
                "vms[%d]" % i,
                name,
                {
                    "name": name,
                    "state": "running",
                    "accel": "tcg",
                    "memory_mb": 64,
                    "wait_for": {"serial": "never-printed"},
                    "wait_timeout": 6,
                },
            )
            for i, name in enumerate(("cheap1", "cheap2"))
        ]
        t0 = time.monotonic()
        result = batch.converge(entries, check_mode=False)
        took = time.monotonic() - t0
    finally:
        ctx.close()
    assert result["failed"] and result["summary"]["failed"] == 2
    for entry in result["vms"]:
        assert "timed out after 6 s" in entry["msg"], entry["msg"]
        assert entry["console_tail"] == [] and entry["changed"] and entry["vm"]["status"] == "running"
    assert took < 11, "the VMs were waited for one after the other (%.1f s)" % took
    assert sorted(vm["status"] for vm in vm_list(service)) == ["running", "running"]
    print("infinivirt_vms: two 6 s waits took %.1f s in all" % took)


def test_a_failed_start_carries_the_console_tail(service, workdir):
    """QEMU refuses a kernel that is not one: the start fails before the guest prints a line,
    and the failure still carries console_tail (empty), and the new VM is not kept."""
    bogus = os.path.join(workdir, "not-a-kernel")
    with open(bogus, "w") as fh:
        fh.write("not a kernel\n")
    with pytest.raises(InfinivirtError) as failed:
        service.ensure(
            {"name": "badstart", "state": "running", "accel": "tcg", "memory_mb": 64, "kernel": bogus}, False
        )
    assert failed.value.result["console_tail"] == [], failed.value
    assert vm_list(service) == []
