# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 14 in the real test guest: a disk held to its bps limit (O_DIRECT dd in the guest),
the limit changed live, a NIC's rate limit on its TAP (changed live, gone with the NIC), on
a LUKS disk and a VNC password; then the windows preset, a restart of the same VM. One
guest, two boots."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from helpers import dd_seconds, guest_disks, make_image, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

MIB = 1024 * 1024


def read_seconds(sock, dev, mib):
    """Seconds the guest takes to read ``mib`` MiB of ``dev`` with O_DIRECT (64 KiB blocks)."""
    return dd_seconds(sock, "if=/dev/%s of=/dev/null bs=64k count=%d iflag=direct" % (dev, mib * 16))


def tc_rate(netns, tap):
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "qdisc", "show", "dev", tap], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def test_limits_rates_and_the_windows_preset(disk_service, guest_params, images, workdir, bridge_ns):
    svc = disk_service
    svc.ctx.secret_key_file = os.path.join(workdir, "secret.key")
    DiskService(svc.store, svc.secret_box, svc.hostname, [images]).ensure(
        {"path": os.path.join(images, "sealed.qcow2"), "size": "16M", "encrypt": True}, False
    )
    data = make_image(os.path.join(images, "data.raw"), "raw", 32)
    rate = 2 * MIB
    disks = [
        {"path": data, "format": "raw", "serial": "THR01", "cache": "none", "aio": "native", "bps": rate},
        {"path": os.path.join(images, "sealed.qcow2"), "serial": "LUKS01", "iothread": "io0", "iops": 1000},
    ]
    nics = [{"bridge": "vmbr0", "mac": "52:54:00:14:00:01", "rate_limit_mbit": 100}]
    params = dict(
        guest_params,
        name="throttled",
        memory_mb=256,
        console_socket=True,
        state="running",
        netns=bridge_ns,
        iothreads=["io0"],
        disks=disks,
        nics=nics,
        graphics={"type": "vnc", "password": "s3cret"},
    )
    vm = svc.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    seen = guest_disks(sock)
    assert seen["LUKS01"]["size_bytes"] == 16 * MIB  # the encrypted disk under its throttle filter
    dev = seen["THR01"]["name"]

    # 8 MiB at 2 MiB/s: 4 s, within 10 % (the bucket lets the first 1/10 s through at once).
    seconds = read_seconds(sock, dev, 8)
    assert abs(8 * MIB / seconds - rate) <= 0.1 * rate, "read %.2f MiB/s" % (8 / seconds)

    tap = vm["taps"][0]
    assert "rate 100Mbit" in tc_rate(bridge_ns, tap)

    # Live: twice the bytes, a new NIC rate; no restart, nothing pending.
    params["disks"][0]["bps"] = 2 * rate
    params["nics"][0]["rate_limit_mbit"] = 25
    changed = svc.ensure(params, False)
    assert changed.actions == ["update", "hotplug_disks", "hotplug_nics"]
    assert changed.vm["pending_restart"] == [] and changed.vm["pid"] == vm["pid"]
    seconds = read_seconds(sock, dev, 8)
    assert abs(8 * MIB / seconds - 2 * rate) <= 0.1 * 2 * rate, "read %.2f MiB/s" % (8 / seconds)
    assert "rate 25Mbit" in tc_rate(bridge_ns, tap)
    # The same task again changes nothing.
    assert not svc.ensure(params, False).changed

    # The rate goes away live, and the TAP (with its qdisc) with the NIC.
    params["nics"][0]["rate_limit_mbit"] = None
    assert svc.ensure(params, False).actions == ["update", "hotplug_nics"]
    assert "tbf" not in tc_rate(bridge_ns, tap)
    params["nics"] = []
    assert svc.ensure(params, False).actions == ["update", "hotplug_nics"]
    assert tc_rate(bridge_ns, tap) is None

    # The windows preset: a spec change of what it fills, pending until a restart.
    preset = {"name": "throttled", "preset": "windows", "disks": [{"path": data, "format": "raw", "bps": rate}]}
    check = svc.ensure(preset, True)
    assert check.diff["after"]["preset_filled"]["disks[0].bus"] == "sata"
    assert check.diff["after"]["rtc_base"] == "localtime" and check.diff["after"]["hyperv"] is True
    assert "rtc_base" in check.vm["pending_restart"]
    windows = svc.ensure(dict(preset, restart_on_change=True), False)
    assert windows.vm["pid"] != vm["pid"]
    assert any("hv-vpindex" in w and "left out" in w for w in windows.warnings), windows.warnings
    wait_ready(windows.vm["serial_log"])
    with open("/proc/%d/cmdline" % windows.vm["pid"], "rb") as fh:
        argv = fh.read().split(b"\0")
    cpu = argv[argv.index(b"-cpu") + 1].decode()
    assert "hv-relaxed" in cpu and "hv-spinlocks=0x1fff" in cpu and "hv-vpindex" not in cpu
    # The restart runs the machine version recorded at the first start (pc-q35-7.2 for q35).
    machine = argv[argv.index(b"-machine") + 1].decode()
    assert b"base=localtime" in argv and re.fullmatch(r"type=pc-q35-[0-9.]+,hpet=off", machine), machine
    assert windows.vm["pending_restart"] == []
