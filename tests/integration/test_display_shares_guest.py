# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 25 part B in one boot of the tiny test guest: a SPICE display with a qxl card and the
USB tablet, and two virtiofs shares (one read-only) on shared memory. The guest sees the
card, the xHCI controller and the virtio-fs devices on its PCI bus (the cloud kernel has no
USB stack, so the tablet is proven through QEMU), mounts the shares and reads a host file;
virtiofsd daemons run while the VM does and are gone, with their sockets, after the stop."""

from __future__ import annotations

import os

import pytest
import serial_report
from helpers import wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import processes_carrying
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

CONTENT = "hello from the host, %d\n" % os.getpid()
QXL = ("0x1b36", "0x0100")
XHCI = ("0x1b36", "0x000d")
VIRTIO_FS = ("0x1af4", "0x105a")


def run(sock, command):
    rc, out = serial_report.channel_command(sock, command, timeout=60)
    return rc, out


def test_guest_sees_card_tablet_and_shares(service, guest_params, workdir):
    share, readonly = os.path.join(workdir, "share"), os.path.join(workdir, "ro")
    for path in (share, readonly):
        os.makedirs(path)
        with open(os.path.join(path, "hello.txt"), "w") as fh:
            fh.write(CONTENT)
    params = dict(
        guest_params,
        name="devices",
        state="running",
        memory_mb=256,
        memory_shared=True,
        console_socket=True,
        video_model="qxl",
        graphics={"type": "spice"},
        shared_dirs=[{"source": share, "tag": "hostshare"}, {"source": readonly, "tag": "ro", "readonly": True}],
    )
    vm = service.ensure(params, check_mode=False).vm
    rec = records.load(service.store, "devices")
    sockets = [os.path.join(service.engine.run_dir, "%s.fs%d.sock" % (rec.uuid, i)) for i in range(2)]
    daemons = [processes_carrying("--socket-path=%s" % s) for s in sockets]
    # (QEMU 7.2's C daemon is two processes: a parent waiting on its sandboxed child.)
    assert all(daemons), "a virtiofsd per share: %s" % daemons
    assert sorted(k for k, _r in service.store.journal_list(rec.uuid) if k == "virtiofsd") == ["virtiofsd"] * 2

    usb = service.engine.sessions.qmp(rec, "human-monitor-command", {"command-line": "info usb"})
    assert "QEMU USB Tablet" in usb, "the tablet is on the VM's USB bus: %r" % usb

    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    rc, out = run(sock, "report pci")
    assert rc == 0, out
    seen = {(d["vendor"], d["device"]) for d in serial_report.parse_report(out).raw if d["event"] == "pci"}
    assert QXL in seen, "the guest sees the qxl card: %s" % sorted(seen)
    assert XHCI in seen, "the guest sees the tablet's xHCI controller: %s" % sorted(seen)
    assert VIRTIO_FS in seen, "the guest sees virtio-fs: %s" % sorted(seen)

    rc, out = run(sock, "mkdir -p /mnt/a /mnt/b && mount -t virtiofs hostshare /mnt/a && cat /mnt/a/hello.txt")
    assert rc == 0 and out.endswith(CONTENT), "the guest reads the host's file: %r" % out
    rc, out = run(sock, "echo from-guest > /mnt/a/back.txt")
    assert rc == 0, out
    with open(os.path.join(share, "back.txt")) as fh:
        assert fh.read() == "from-guest\n", "a write in the guest lands in the host directory"
    rc, out = run(sock, "mount -t virtiofs ro /mnt/b && cat /mnt/b/hello.txt && echo x > /mnt/b/new.txt")
    assert rc != 0 and CONTENT in out, "readonly share: readable, not writable: %r" % out
    assert sorted(os.listdir(readonly)) == ["hello.txt"]

    service.ensure(dict(params, state="stopped", force=True, stop_timeout=5), check_mode=False)
    assert [processes_carrying("--socket-path=%s" % s) for s in sockets] == [[], []], "virtiofsd ends with the VM"
    assert not any(os.path.exists(s) for s in sockets)
    assert [k for k, _r in service.store.journal_list(rec.uuid) if k == "virtiofsd"] == []
