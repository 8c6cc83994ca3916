# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The whole life of one VM through the Python API, proven by what the guest reports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import run_dir_files, vm_list, wait_for, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, QmpError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_runs_vm
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession, qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

pytestmark = [pytest.mark.qemu]

# The guest's "System RAM" is -m minus what firmware keeps: about 0.5 MiB under SeaBIOS,
# more with some devices attached. Within 2 MiB tells 384 from 448 MiB.
FIRMWARE_SLACK_KIB = 2048


def assert_memory(report, memory_mb):
    assert memory_mb * 1024 - FIRMWARE_SLACK_KIB < report.system_ram_kib <= memory_mb * 1024, report.system_ram_kib


def ensure(service, check_mode=False, **params):
    return service.ensure(params, check_mode)


def test_full_lifecycle(service, guest_params, workdir):
    params = dict(name="life", vcpus=2, memory_mb=384, **guest_params)

    # Check mode predicts the change and does nothing.
    predicted = ensure(service, check_mode=True, state="running", **params)
    assert predicted.changed and predicted.actions == ["create", "start"]
    assert vm_list(service) == [] and run_dir_files(workdir) == []

    # Create and start.
    created = ensure(service, state="running", **params)
    assert created.changed and created.actions == ["create", "start"]
    assert created.diff["before"] == {"state": "absent"}
    assert created.diff["after"]["state"] == "running" and created.diff["after"]["vcpus"] == 2
    assert predicted.diff == created.diff
    vm = created.vm
    assert vm["status"] == "running" and vm["accel_in_use"] == "tcg" and vm["cpu_in_use"] == "max"
    assert process_runs_vm(vm["pid"], vm["uuid"])
    assert any("TCG" in w for w in created.warnings) is False  # accel: tcg was asked for
    report = wait_ready(vm["serial_log"])
    assert report.cpus_online_count == 2
    assert_memory(report, 384)
    assert report.firmware == "bios"

    # A rerun changes nothing; neither does check mode.
    assert not ensure(service, state="running", **params).changed
    assert not ensure(service, check_mode=True, state="running", **params).changed

    # A change a running VM cannot take live: stored, flagged, not applied.
    params["memory_mb"] = 448
    version = vm_list(service, "life")[0]["version"]
    checked = ensure(service, check_mode=True, state="running", **params)
    assert checked.changed and checked.actions == ["update"]
    assert vm_list(service, "life")[0]["version"] == version, "check mode wrote to the store"
    updated = ensure(service, state="running", **params)
    assert updated.changed and updated.vm["pending_restart"] == ["memory_mb"]
    assert updated.diff["before"]["memory_mb"] == 384 and updated.diff["after"]["memory_mb"] == 448
    assert any("restart is needed" in w and "memory_mb" in w for w in updated.warnings)
    assert updated.vm["pid"] == vm["pid"]
    rerun = ensure(service, state="running", **params)
    assert not rerun.changed and rerun.vm["pending_restart"] == ["memory_mb"]

    # Pause and resume, as QEMU itself reports them.
    assert ensure(service, state="paused", name="life").actions == ["pause"]
    assert vm_list(service, "life")[0]["qemu_status"] == "paused"
    assert not ensure(service, state="paused", name="life").changed
    assert ensure(service, state="running", name="life").actions == ["resume"]
    assert vm_list(service, "life")[0]["qemu_status"] == "running"

    # Restart applies the pending change: the guest now sees 448 MiB.
    restarted = ensure(service, state="restarted", name="life")
    assert restarted.changed and restarted.actions == ["stop", "start"]
    assert restarted.vm["pid"] != vm["pid"] and restarted.vm["pending_restart"] == []
    assert not process_runs_vm(vm["pid"], vm["uuid"])
    report = wait_ready(restarted.vm["serial_log"])
    assert_memory(report, 448)

    # restart_on_change applies a change at once.
    applied = ensure(service, state="running", name="life", vcpus=1, restart_on_change=True)
    assert applied.actions == ["update", "stop", "start"] and applied.vm["pending_restart"] == []
    assert applied.diff["before"]["vcpus"] == 2 and applied.diff["after"]["vcpus"] == 1
    assert wait_ready(applied.vm["serial_log"]).cpus_online_count == 1
    restarted = applied

    # Stop: the guest powers itself off on the ACPI button; nothing is killed.
    stopped = ensure(service, state="stopped", name="life", stop_timeout=60)
    assert stopped.changed and stopped.actions == ["stop"]
    assert stopped.vm["status"] == "stopped" and stopped.vm["pid"] is None
    assert not process_runs_vm(restarted.vm["pid"], vm["uuid"])
    with open(restarted.vm["serial_log"]) as fh:
        assert "INFINIVIRT poweroff reason=acpi" in fh.read()
    log = os.path.basename(restarted.vm["serial_log"])
    assert run_dir_files(workdir) == [log, log + ".1"]  # this run's log and the one before
    assert not ensure(service, state="stopped", name="life").changed

    # Absent: no process, socket, pidfile, log or row.
    gone = ensure(service, state="absent", name="life")
    assert gone.changed and gone.diff["after"] == {"state": "absent"}
    assert vm_list(service) == [] and run_dir_files(workdir) == []
    assert not ensure(service, state="absent", name="life").changed


def test_guest_that_ignores_acpi_needs_force(service, workdir):
    # No kernel: SeaBIOS finds nothing to boot and never reacts to the power button.
    assert ensure(service, name="deaf", state="running", accel="tcg", memory_mb=64).changed
    pid = vm_list(service, "deaf")[0]["pid"]
    with pytest.raises(StateError) as err:
        ensure(service, name="deaf", state="stopped", stop_timeout=1)
    assert "force: true" in str(err.value)
    assert vm_list(service, "deaf")[0]["status"] == "running", "a failed stop must not kill it"
    forced = ensure(service, name="deaf", state="stopped", stop_timeout=1, force=True)
    assert forced.changed and forced.vm["status"] == "stopped"
    uuid = forced.vm["uuid"]
    assert not process_runs_vm(pid, uuid)
    assert run_dir_files(workdir) == ["%s.serial.log" % uuid]


def test_accelerator_and_cpu_fallbacks_are_reported(service):
    # On this machine KVM cannot run a Linux guest, so auto picks TCG and says why; where
    # kvm_intel/kvm_amd is loaded, auto picks KVM silently.
    out = ensure(service, name="auto", state="paused", memory_mb=64, cpu_model="host")
    hardware_kvm = any(os.path.isdir("/sys/module/" + m) for m in ("kvm_intel", "kvm_amd"))
    if hardware_kvm and os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert out.vm["accel_in_use"] == "kvm" and out.vm["cpu_in_use"].startswith("host")
    else:
        assert out.vm["accel_in_use"] == "tcg" and out.vm["cpu_in_use"] == "max"
        assert any("KVM is not usable" in w for w in out.warnings)
        assert any("cpu_model host is not available under TCG" in w for w in out.warnings)
    assert vm_list(service, "auto")[0]["qemu_status"] == "prelaunch"


def test_qmp_errors_name_the_vm_and_the_command(service):
    ensure(service, name="talk", state="paused", accel="tcg", memory_mb=64)
    rec = records.load(service.store, "talk")
    with pytest.raises(QmpError) as err:
        service.engine.sessions.qmp(rec, "no-such-command")
    assert str(err.value).startswith("VM talk: QMP command 'no-such-command' failed: CommandNotFound")
    with QmpSession(rec.qmp_socket_path, "talk") as qmp:
        with pytest.raises(QmpError) as err:
            qmp.execute("query-status", timeout=0.000001)
    assert "no answer within" in str(err.value)
    with pytest.raises(QmpError) as err:
        qmp_execute(rec.qmp_socket_path + ".missing", "talk", "query-status")
    assert "VM talk: QMP command 'connect' failed: cannot connect" in str(err.value)


def test_forced_kvm_starts_under_kvm_or_fails_cleanly(service, workdir):
    # accel: kvm is honoured whenever /dev/kvm can be opened (here: the software module,
    # which runs firmware); without a usable /dev/kvm it is a clear error.
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        out = ensure(service, name="kvm", state="paused", accel="kvm", memory_mb=64)
        assert out.vm["accel_in_use"] == "kvm"
        kvm = service.engine.sessions.qmp(records.load(service.store, "kvm"), "query-kvm")
        assert kvm == {"enabled": True, "present": True}
    else:
        with pytest.raises(SpecError) as err:
            ensure(service, name="kvm", state="running", accel="kvm")
        assert err.value.field == "accel"
        assert vm_list(service) == [] and run_dir_files(workdir) == []


def test_paused_from_stopped_and_quit_from_prelaunch(service, workdir):
    ensure(service, name="idle", state="paused", accel="tcg", memory_mb=64)
    info = vm_list(service, "idle")[0]
    assert info["status"] == "paused" and info["qemu_status"] == "prelaunch"
    stopped = ensure(service, name="idle", state="stopped", stop_timeout=5)
    assert stopped.vm["status"] == "stopped" and not process_runs_vm(info["pid"], info["uuid"])


def test_a_reused_pid_is_not_taken_for_the_vm(service, workdir):
    ensure(service, name="ghost", state="present", accel="tcg", memory_mb=64)
    rec = records.load(service.store, "ghost")
    rec.status, rec.qemu_pid = "running", os.getpid()  # a live process without its UUID
    records.save(service.store, rec)
    assert vm_list(service, "ghost")[0]["status"] == "stopped"
    assert ensure(service, name="ghost", state="stopped").changed is False


def junk_disk(workdir):
    """A file that exists but is no qcow2 image: QEMU refuses it only when it starts."""
    path = os.path.join(workdir, "junk.qcow2")
    with open(path, "wb") as fh:
        fh.write(b"\0" * 4096)
    return [{"path": path, "format": "qcow2"}]


def test_failed_start_leaves_nothing(service, workdir):
    with pytest.raises(QemuError) as err:
        ensure(service, name="broken", state="running", accel="tcg", disks=junk_disk(workdir))
    assert "failed to start" in str(err.value)
    assert vm_list(service) == [] and run_dir_files(workdir) == []


def test_a_bystander_with_the_uuid_survives_a_failed_start(service, workdir):
    ensure(service, name="broken", state="present", accel="tcg", disks=junk_disk(workdir), memory_mb=64)
    uuid = records.load(service.store, "broken").uuid
    # Another program that carries the UUID, even as QEMU's own "-uuid UUID" pair.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-uuid", uuid])
    try:
        with pytest.raises(QemuError):
            ensure(service, name="broken", state="running")
        assert bystander.poll() is None, "a failed start killed a process that is not its QEMU"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_foreign_process_in_the_pidfile_means_not_running(service, workdir):
    ensure(service, name="impostor", state="paused", accel="tcg", memory_mb=64)
    info = vm_list(service, "impostor")[0]
    ensure(service, name="impostor", state="stopped", stop_timeout=5)
    # The pidfile names another program that even carries the VM's UUID as QEMU would.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-uuid", info["uuid"]])
    try:
        rec = records.load(service.store, "impostor")
        rec.status, rec.qemu_pid, rec.pidfile_path = "running", other.pid, os.path.join(workdir, "impostor.pid")
        with open(rec.pidfile_path, "w") as fh:
            fh.write("%d\n" % other.pid)
        records.save(service.store, rec)
        assert vm_list(service, "impostor")[0]["status"] == "stopped"
        assert not ensure(service, name="impostor", state="stopped").changed
        assert not ensure(service, name="impostor", state="stopped", force=True).changed
        assert ensure(service, name="impostor", state="absent").changed
        assert other.poll() is None, "only Infinivirt's own QEMU is ever signalled"
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize(
    "params,field",
    [
        ({"name": "a/b"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "vcpus": 0}, "vcpus"),
        ({"name": "ok", "vcpus": 4096}, "vcpus"),
        ({"name": "ok", "memory_mb": 8}, "memory_mb"),
        ({"name": "ok", "machine_type": "virt"}, "machine_type"),
        ({"name": "ok", "kernel": "/nonexistent/vmlinuz"}, "kernel"),
        ({"name": "ok", "cpu_model": "max,kernel=/etc/passwd"}, "cpu_model"),
        # Values only QEMU or the host would refuse, caught before anything is stored.
        ({"name": "ok", "cpu_model": "no-such-cpu"}, "cpu_model"),
        ({"name": "ok", "cpu_flags": ["+no-such-flag"]}, "cpu_flags"),
        ({"name": "ok", "memory_mb": 1000000000}, "memory_mb"),
    ],
)
def test_bad_input_creates_nothing(service, workdir, params, field):
    with pytest.raises(SpecError) as err:
        ensure(service, state="running", **params)
    assert err.value.field == field
    assert vm_list(service) == [] and run_dir_files(workdir) == []
    assert not os.path.exists(os.path.join(workdir, "run")) or run_dir_files(workdir) == []


def test_a_vm_killed_while_it_is_read_reads_as_stopped(service, guest_params):
    """A QEMU that is ending resets a QMP connection while its threads still run: reading the
    VM at that moment must say stopped, not fail (it did in 11 of 40 rounds before)."""
    params = dict(guest_params, name="dying", state="running")
    for _round in range(15):
        vm = service.ensure(params, False).vm
        os.kill(vm["pid"], signal.SIGKILL)
        for _read in range(5):  # no QmpError while it goes
            assert vm_list(service, "dying")[0]["status"] in ("running", "stopped")
        assert wait_for(lambda: vm_list(service, "dying")[0]["status"] == "stopped")


def test_one_hung_qemu_does_not_hold_the_others(service, workdir):
    """A QEMU stopped with SIGSTOP answers nothing: the listing still shows every VM (the hung
    one with an error), a plain stop says to use force, and a forced stop kills it."""
    ensure(service, name="hung", state="paused", accel="tcg", memory_mb=64)
    ensure(service, name="fine", state="paused", accel="tcg", memory_mb=64)
    ensure(service, name="idle", state="present", accel="tcg", memory_mb=64)
    hung = vm_list(service, "hung")[0]
    os.kill(hung["pid"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        listed = {vm["name"]: vm for vm in vm_list(service)}
        elapsed = time.monotonic() - started
        assert sorted(listed) == ["fine", "hung", "idle"] and elapsed < 5, elapsed
        assert "stopped (SIGSTOP" in listed["hung"]["error"] and listed["hung"]["qemu_status"] == "unresponsive"
        assert listed["fine"]["error"] is None and listed["fine"]["status"] == "paused"
        assert listed["idle"]["status"] == "stopped"
        with pytest.raises(QmpError) as err:
            ensure(service, name="hung", state="stopped", stop_timeout=1)
        assert "hung" in str(err.value) and "force: true" in str(err.value)
        out = ensure(service, name="hung", state="stopped", stop_timeout=1, force=True)
        assert out.changed and out.vm["status"] == "stopped"
        assert not process_runs_vm(hung["pid"], hung["uuid"]) and vm_list(service, "hung")[0]["error"] is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung["pid"], signal.SIGCONT)


def test_a_crashed_runs_serial_log_is_kept_one_back(service, workdir):
    ensure(service, name="crashy", state="running", accel="tcg", memory_mb=64)
    vm = vm_list(service, "crashy")[0]
    os.kill(vm["pid"], signal.SIGKILL)
    assert wait_for(lambda: vm_list(service, "crashy")[0]["status"] == "stopped")
    with open(vm["serial_log"], "a") as fh:  # what the guest said before it died
        fh.write("Kernel panic - not syncing: the clue\n")
    ensure(service, name="crashy", state="running")
    with open(vm["serial_log"] + ".1") as fh:
        assert "the clue" in fh.read(), "the crashed run's log was truncated"
    with open(vm["serial_log"]) as fh:
        assert "the clue" not in fh.read()
    assert ensure(service, name="crashy", state="absent", force=True, stop_timeout=1).changed
    assert run_dir_files(workdir) == [], "the logs go with the VM"


def test_a_value_only_qemu_refuses_is_never_stored(service, workdir):
    """memory_mb beyond the host, or a CPU model or flag QEMU does not know, on an existing VM:
    refused naming the option, nothing stored, and the VM starts as it was defined."""
    ensure(service, name="kept", state="present", accel="tcg", memory_mb=64)
    for params, field in (
        ({"memory_mb": 1000000000}, "memory_mb"),
        ({"cpu_model": "no-such-cpu"}, "cpu_model"),
        ({"cpu_flags": ["+no-such-flag"]}, "cpu_flags"),
    ):
        with pytest.raises(SpecError) as err:
            ensure(service, name="kept", state="present", **params)
        assert err.value.field == field
    assert records.load(service.store, "kept").spec.memory_mb == 64
    assert ensure(service, name="kept", state="paused", cpu_flags=["+sse4_2"]).vm["status"] == "paused"


def test_an_unplug_that_ends_between_the_look_and_the_ask_is_done(service, workdir, monkeypatch):
    """A cut-off run asked the guest to let a device go; the guest finished just after this
    run saw the device and before its own device_del: QEMU answers DeviceNotFound, which
    means done (it failed the rerun of a NIC unplug before)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.hotplug import Hotplug

    service.ensure({"name": "late", "state": "running", "accel": "tcg", "memory_mb": 64}, check_mode=False)
    rec = records.load(service.store, "late")
    seen = Hotplug._devices
    monkeypatch.setattr(Hotplug, "_devices", lambda self, qmp: seen(self, qmp) | {"nic-gone"})
    hotplug = service._hotplug()
    with hotplug._session(rec) as qmp:
        hotplug._unplug(qmp, "nic-gone")  # the stale look says it is there; QEMU has none
        assert "nic-gone" not in seen(hotplug, qmp)
