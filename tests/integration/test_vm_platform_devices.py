# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Platform devices on the test guest (issue 25 A), one VM booted twice (TCG): a TPM 2.0 on
its own swtpm, virtio-rng, an i6300esb watchdog and SMBIOS fields, each seen by the guest
(the watchdog, armed by the guest, fires and QEMU pauses it as asked);
swtpm gone after the stop, the TPM's state kept (TPM2_ReadClock's resetCount grows across
the two boots on it), everything removed with the VM. vsock cannot start here (no
/dev/vhost-vsock): the request is refused naming it, nothing changed
(tests/unit/.../vm/engine/test_platform.py proves the CID allocation)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess

import pytest
import serial_report
from helpers import make_image, vm_list, wait_for, wait_ready
from monitor_proc import MonitorProcess
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform, records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

SERIAL = "SN,42 x"  # a comma QEMU must see escaped, a blank the guest report shows as '_'
# The i6300esb's registers as QEMU's model has them (hw/watchdog/wdt_i6300esb.c): its BAR's
# reload register unlocks (0x80, 0x86) each write of a preload (timer 1 at +0, timer 2 at +4;
# 1 tick = about 1 ms at the default 1 kHz scale), then bit 1 of config byte 0x68 enables it.
ARM_WATCHDOG = (
    "for d in /sys/bus/pci/devices/*; do "
    '[ "$(cat $d/vendor)" = 0x8086 ] && [ "$(cat $d/device)" = 0x25ab ] && w=$d; done; '
    "b=$(( $(head -n1 $w/resource | cut -d' ' -f1) )); "
    "for r in 0 4; do devmem $((b+12)) 32 0x80; devmem $((b+12)) 32 0x86; devmem $((b+r)) 32 1; done; "
    "printf '\\002' | dd of=$w/config bs=1 seek=104 count=1 conv=notrunc"
)


@pytest.fixture
def devices_service(workdir):
    svc = VmService.open(
        "sqlite:///%s/state.db" % workdir,
        os.path.join(workdir, "run"),
        nvram_dir=os.path.join(workdir, "nvram"),
        lock_timeout=30,
    )
    yield svc
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, check_mode=False)
    svc.close()
    assert kill_leftovers(workdir) == [], "QEMU processes outlived their VM rows"


def guest(sock, command):
    rc, out = serial_report.channel_command(sock, command)
    assert rc == 0, out
    return out


def devices_line(sock):
    out = guest(sock, "report devices")
    match = re.search(r"INFINIVIRT devices (.*)", out)
    assert match, out
    return dict(pair.split("=", 1) for pair in match.group(1).split())


def reset_count(sock):
    """TPM2_ReadClock's resetCount: header (10 bytes), time (8), clock (8), then it."""
    out = guest(sock, "tpm_clock")
    data = bytes.fromhex(re.search(r"tpm_clock hex=([0-9a-f]*)", out).group(1))
    assert len(data) >= 30 and data[6:10] == b"\0\0\0\0", "TPM2_ReadClock failed: %s" % data.hex()
    return int.from_bytes(data[26:30], "big")


def recorded(svc, uuid, kind):
    """The details of the VM's events of ``kind`` in the store."""
    return [event["detail"] for event in svc.store.list_events(uuid) if event["kind"] == kind]


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as fh:
        return fh.read().decode().split("\0")


def test_tpm_rng_watchdog_smbios_on_one_guest(devices_service, guest_params, workdir):
    svc = devices_service
    params = dict(
        guest_params,
        name="devices",
        state="running",
        console_socket=True,
        memory_mb=256,
        tpm={"version": "2.0"},
        rng=True,
        watchdog={"action": "pause"},
        smbios={"type1": {"manufacturer": "Infinivirt", "serial": SERIAL}, "type3": {"asset": "ASSET-7"}},
    )
    vm = svc.ensure(params, check_mode=False).vm
    rec = records.load(svc.store, "devices")
    files = platform.tpm_files(svc.engine.run_dir, svc.engine.resources.nvram_dir, rec.uuid)
    tpm_pid = swtpm.live_pid(files)
    assert tpm_pid is not None, "no swtpm runs for the VM"
    assert stat.S_IMODE(os.stat(files.state_dir).st_mode) == 0o700, "the TPM state directory is not private"
    argv = cmdline(vm["pid"])
    assert "watchdog=pause" in argv and "type=1,manufacturer=Infinivirt,serial=SN,,42 x" in argv, argv
    journal = svc.store.journal_list(rec.uuid)
    assert ("swtpm", files.pidfile) in journal and ("tpm_state", files.state_dir) in journal, journal

    sock = vm["console_socket_path"]
    wait_ready(vm["serial_log"])
    seen = devices_line(sock)
    assert (seen["tpm"], seen["tpm_major"]) == ("tpm0", "2"), seen
    assert seen["rng"].startswith("virtio_rng"), seen
    assert seen["watchdog_pci"] != "none", "the guest sees no i6300esb on its PCI bus: %s" % seen
    assert (seen["product_serial"], seen["sys_vendor"], seen["chassis_asset"]) == ("SN,42_x", "Infinivirt", "ASSET-7")
    first = reset_count(sock)

    # Every device change waits for a restart, and the plan says so.
    planned = svc.ensure(dict(params, rng={"max_bytes": 4096}), check_mode=True).result()
    assert planned["plan"]["changes"] == {"rng": "restart"} and planned["plan"]["restart_needed"], planned["plan"]
    # vsock cannot be given here: refused naming it, before anything is made or stored.
    with pytest.raises(SpecError) as caught:
        svc.ensure(dict(params, vsock=True), check_mode=False)
    assert caught.value.field == "vsock" and "/dev/vhost-vsock" in str(caught.value)
    assert records.load(svc.store, "devices").spec == rec.spec and svc.store.list_host_claims() == []

    svc.ensure(dict(params, state="stopped"), check_mode=False)
    assert not swtpm.is_ours(tpm_pid, files.state_dir) and swtpm.live_pid(files) is None, "swtpm outlived the stop"
    assert os.listdir(files.state_dir), "the TPM state did not outlive the stop"
    assert [kind for kind, _ref in svc.store.journal_list(rec.uuid) if kind.startswith("swtpm")] == []

    vm = svc.ensure(params, check_mode=False).vm  # the second boot, on the kept state
    wait_ready(vm["serial_log"])
    assert reset_count(vm["console_socket_path"]) > first, "the TPM state was not kept across the restart"

    # The watchdog fires and QEMU does its action (pause): the guest's kernel has no i6300esb
    # driver, so the guest arms it by hand, a second after the command returns.
    # The host's monitor records it in the VM's event log, and the row follows the pause.
    events = open(VmPaths.for_vm(svc.engine.run_dir, vm["uuid"]).event_log + ".out", "rb")
    monitor = MonitorProcess(
        "sqlite:///%s/state.db" % workdir,
        svc.engine.run_dir,
        svc.hostname,
        os.path.join(workdir, "monitor.log"),
        extra=["--nvram-dir", svc.engine.resources.nvram_dir],
    ).start()
    try:
        assert monitor.wait_log("following VM devices (PID %d)" % vm["pid"]), monitor.log()
        guest(vm["console_socket_path"], "(sleep 1; %s) </dev/null >/dev/null 2>&1 &" % ARM_WATCHDOG)
        live = records.load(svc.store, "devices")
        assert wait_for(lambda: svc.engine.sessions.query_status(live) == "watchdog", 30), "the watchdog did not fire"
        fired = [e for e in map(json.loads, events.read().splitlines()) if e.get("event") == "WATCHDOG"]
        assert fired and fired[0]["data"]["action"] == "pause", fired
        assert wait_for(lambda: recorded(svc, rec.uuid, "watchdog"), 15), monitor.log()
        assert recorded(svc, rec.uuid, "watchdog") == [{"action": "pause"}]
        assert wait_for(lambda: records.load(svc.store, "devices").status == "paused", 15), monitor.log()
    finally:
        assert monitor.stop() == 0, monitor.log()

    svc.ensure({"name": "devices", "state": "absent", "force": True, "stop_timeout": 5}, check_mode=False)
    assert not os.path.exists(files.state_dir) and swtpm.live_pid(files) is None


def state_files(path):
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def test_snapshots_keep_the_tpm_state_like_the_nvram(devices_service, workdir):
    """A firmware-only VM (SeaBIOS talks to the TPM; no guest kernel) whose QEMU is killed:
    its swtpm ends too. Then an offline snapshot copies the TPM's state, a revert puts it
    back, a delete removes the copy."""
    svc, snaps = devices_service, SnapshotService(devices_service.engine)
    disk = make_image(os.path.join(workdir, "fw.qcow2"), "qcow2", 8)
    params = {"name": "fwtpm", "accel": "tcg", "memory_mb": 64, "disks": [{"path": disk}], "tpm": {"version": "2.0"}}
    svc.ensure(dict(params, state="running"), check_mode=False)
    rec = records.load(svc.store, "fwtpm")
    state_dir = platform.tpm_files(svc.engine.run_dir, svc.engine.resources.nvram_dir, rec.uuid).state_dir
    files = platform.tpm_files(svc.engine.run_dir, svc.engine.resources.nvram_dir, rec.uuid)
    wait_for(lambda: os.listdir(state_dir), timeout=30)
    # QEMU dies: its swtpm goes too (--terminate), and the clean-up leaves nothing journaled.
    tpm_pid = swtpm.live_pid(files)
    os.kill(rec.qemu_pid, signal.SIGKILL)
    assert wait_for(lambda: not swtpm.is_ours(tpm_pid, state_dir), timeout=10), "swtpm outlived its QEMU"
    svc.ensure(dict(params, state="stopped"), check_mode=False)
    assert [kind for kind, _ref in svc.store.journal_list(rec.uuid) if kind.startswith("swtpm")] == []
    before = state_files(state_dir)
    assert before, "swtpm wrote no state"

    snaps.ensure({"vm": "fwtpm", "name": "s1", "state": "present"}, False)
    copy = platform.tpm_snapshot_dir(svc.engine.resources.nvram_dir, rec.uuid, "s1")
    assert state_files(copy) == before and ("tpm_state", copy) in svc.store.journal_list(rec.uuid)
    for name in before:  # the TPM's state changes after the snapshot
        with open(os.path.join(state_dir, name), "wb") as fh:
            fh.write(b"changed")
    snaps.ensure({"vm": "fwtpm", "name": "s1", "state": "reverted"}, False)
    assert state_files(state_dir) == before, "the revert did not bring back the TPM state"
    snaps.ensure({"vm": "fwtpm", "name": "s1", "state": "absent"}, False)
    assert not os.path.exists(copy) and ("tpm_state", copy) not in svc.store.journal_list(rec.uuid)


def test_qemu_knows_every_device_property_the_argv_uses():
    """vsock cannot start here, so its -device is checked against QEMU's own list of the
    device's properties instead (as are the others')."""
    wanted = {
        "vhost-vsock-pci": ["guest-cid"],
        "virtio-rng-pci": ["rng", "max-bytes", "period"],
        "tpm-crb": ["tpmdev"],
        "tpm-tis": ["tpmdev"],
        "i6300esb": [],
    }
    for driver, props in wanted.items():
        done = subprocess.run(
            ["qemu-system-x86_64", "-nodefaults", "-device", "%s,help" % driver],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        for prop in props:
            assert re.search(r"^\s*%s=" % re.escape(prop), done.stdout, re.M), (driver, prop, done.stdout)
