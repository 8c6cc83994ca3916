# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Devices across live migration (issues 25 and 23), on the two hosts of migration_lab.py.

The TPM on the test guest (two boots in all): the guest extends a PCR and writes an NV index
through /dev/tpm0 on hv-a; after the move to hv-b it reads the same PCR value (the TPM's
volatile state crossed in QEMU's stream into hv-b's own swtpm) and the NV index; hv-a has
no swtpm nor TPM state left, hv-b's state directory is the VM's (journaled under its UUID);
after a stop and start on hv-b the PCR is reset (a new boot) and the NV index and the
TPM's reset counter show the persistent state went on from hv-a's.

The other devices on firmware-only VMs (no kernel): a UEFI VM with a SPICE password, rng,
watchdog, SMBIOS and a TPM moves (QEMU takes the stream only if the device sets match);
hv-b claims its own display port and sets the password over QMP (a SPICE link handshake
with it succeeds there, none is in argv), hv-b's NVRAM file holds what the firmware wrote
on hv-a, hv-a keeps no port claim, NVRAM, TPM state or swtpm. A move back that times out
leaves nothing on hv-a (no swtpm, TPM state, NVRAM, port claim) and the VM as it was on hv-b;
one to a host whose nvram_dir has the VM's TPM state already is refused naming nvram_dir.
A VNC display moves likewise, without an rng added to its definition since it started
(pending restart), nor a USB tablet hv-a's QEMU does not have although its running spec
leaves usb_tablet unset (a VM started before the option); a VM with shared_dirs is refused
before any request."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import stat
import struct
import time

import pytest
import serial_report
from helpers import display_client_in, vnc_auth_in, wait_for, wait_ready
from migration_lab import open_lab
from qemu_procs import qemu_processes
from spice_client import LINK_OK, LINK_PERMISSION_DENIED

from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform, records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.firmware import firmware_files
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.postgres, pytest.mark.netns, pytest.mark.slow]

PCR = 16  # the debug PCR: any locality may extend it
NV_INDEX = 0x01500016
OWNER = 0x40000001
PASSWORD_SESSION = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, empty auth
SPICE_PASSWORD = "spice-Pw-0123456789"
VNC_PASSWORD = "vnc-pw-1"
FIRMWARE_VM = {"accel": "tcg", "memory_mb": 128, "stop_timeout": 0.5, "force": True, "state": "running"}


@pytest.fixture
def lab(pg_url):
    with open_lab(pg_url) as lab:
        yield lab


@pytest.fixture
def keyed_lab(pg_url, monkeypatch):
    """The lab with one secret key for both hosts (the target decrypts the display password)."""
    monkeypatch.setenv("INFINIVIRT_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    with open_lab(pg_url) as lab:
        yield lab


def ok(result):
    assert "error" not in result, result["error"]
    return result


def _command(tag, code, body):
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def _authorized(code, handles, params):
    """A command whose handles take the empty password (TPM_ST_SESSIONS)."""
    body = b"".join(struct.pack(">I", h) for h in handles)
    return _command(0x8002, code, body + struct.pack(">I", len(PASSWORD_SESSION)) + PASSWORD_SESSION + params)


def pcr_extend(digest):
    return _authorized(0x182, [PCR], struct.pack(">IH", 1, 0x000B) + digest)


def pcr_read():
    select = bytes([0, 0, 1 << (PCR - 16)])
    return _command(0x8001, 0x17E, struct.pack(">IHB", 1, 0x000B, 3) + select)


def nv_define():
    public = struct.pack(">IHIHH", NV_INDEX, 0x000B, 0x00020002, 0, 8)  # OWNERWRITE | OWNERREAD, 8 bytes
    return _authorized(0x12A, [OWNER], struct.pack(">H", 0) + struct.pack(">H", len(public)) + public)


def nv_write(data):
    return _authorized(0x137, [OWNER, NV_INDEX], struct.pack(">H", len(data)) + data + struct.pack(">H", 0))


def nv_read():
    return _authorized(0x14E, [OWNER, NV_INDEX], struct.pack(">HH", 8, 0))


def read_clock():
    return _command(0x8001, 0x181, b"")


def tpm(sock, command, name):
    """``command`` written to the guest's /dev/tpm0 in one write; its response, checked."""
    octal = "".join("\\%03o" % byte for byte in command)
    line = (
        "printf '%s' >/tmp/tpmcmd && exec 3<>/dev/tpm0 && dd bs=%d count=1 </tmp/tpmcmd >&3 2>/dev/null && "
        "echo tpmrsp=$(dd bs=4096 count=1 <&3 2>/dev/null | od -An -v -tx1 | tr -d ' \\n')" % (octal, len(command))
    )
    rc, out = serial_report.channel_command(sock, line, timeout=60)
    assert rc == 0, out
    response = bytes.fromhex(re.search(r"tpmrsp=([0-9a-f]*)", out).group(1))
    assert len(response) >= 10 and response[6:10] == b"\0\0\0\0", "%s failed: %s" % (name, response.hex())
    return response


def pcr_value(sock):
    return tpm(sock, pcr_read(), "TPM2_PCR_Read")[-32:]


def nv_value(sock):
    return tpm(sock, nv_read(), "TPM2_NV_Read")[16:24]


def reset_count(sock):
    """TPM2_ReadClock's resetCount (persistent; each TPM2_Startup(CLEAR) adds one)."""
    return struct.unpack(">I", tpm(sock, read_clock(), "TPM2_ReadClock")[26:30])[0]


def test_the_tpm_state_moves_with_the_guest(lab, guest_params):
    params = dict(guest_params, name="tpmmover", memory_mb=128, console_socket=True, tpm={"version": "2.0"})
    vm = ok(lab.task("hv-a", "vm", dict(params, state="running")))["vm"]
    uuid = vm["uuid"]
    wait_ready(vm["serial_log"])
    sock_a = vm["console_socket_path"]
    digest = hashlib.sha256(b"measured on hv-a").digest()
    marker = os.urandom(8)
    tpm(sock_a, pcr_extend(digest), "TPM2_PCR_Extend")
    tpm(sock_a, nv_define(), "TPM2_NV_DefineSpace")
    tpm(sock_a, nv_write(marker), "TPM2_NV_Write")
    extended = hashlib.sha256(bytes(32) + digest).digest()
    assert pcr_value(sock_a) == extended and nv_value(sock_a) == marker, "the guest's TPM on hv-a"
    resets = reset_count(sock_a)
    files_a = platform.tpm_files(lab.run["hv-a"], lab.run["hv-a"], uuid)
    files_b = platform.tpm_files(lab.run["hv-b"], lab.run["hv-b"], uuid)
    tpm_a = swtpm.live_pid(files_a)
    assert tpm_a is not None and os.listdir(files_a.state_dir), "hv-a's swtpm runs on its state"

    moved = lab.task("hv-a", "migrate", {"name": "tpmmover", "to": "hv-b"})
    assert moved.get("changed") and moved["vm"]["host"] == "hv-b", moved
    sock_b = VmPaths.for_vm(lab.run["hv-b"], uuid).console_socket
    assert pcr_value(sock_b) == extended, "the PCR extended on hv-a reads the same on hv-b: volatile state crossed"
    assert nv_value(sock_b) == marker, "the NV index written on hv-a reads back on hv-b"
    assert wait_for(lambda: not swtpm.is_ours(tpm_a, files_a.state_dir), 10), "hv-a's swtpm outlived the move"
    assert not os.path.exists(files_a.state_dir), "hv-a kept a TPM state directory of a VM it no longer runs"
    tpm_b = swtpm.live_pid(files_b)
    assert tpm_b is not None and stat.S_IMODE(os.stat(files_b.state_dir).st_mode) == 0o700, "hv-b's own swtpm"
    store = open_store(lab.db_url)
    try:
        journal = store.journal_list(uuid)
        assert ("tpm_state", files_b.state_dir) in journal and ("swtpm", files_b.pidfile) in journal, journal
        assert store.journal_list(uuid + "@hv-a") == [] and store.journal_list(uuid + "@hv-b") == []
    finally:
        store.close()

    ok(lab.task("hv-b", "vm", dict(params, state="stopped", stop_timeout=30)))
    assert swtpm.live_pid(files_b) is None and os.listdir(files_b.state_dir), "stopped: no swtpm, state kept"
    vm = ok(lab.task("hv-b", "vm", dict(params, state="running")))["vm"]
    wait_ready(vm["serial_log"])
    assert pcr_value(sock_b) == bytes(32), "a new boot on hv-b resets the PCR"
    assert nv_value(sock_b) == marker, "the NV index outlived the move and a restart on hv-b"
    assert reset_count(sock_b) > resets, "the TPM's reset counter goes on from hv-a's"


def spice_in(netns, port, password):
    """A SPICE link handshake from inside the host's namespace (the display listens on its
    127.0.0.1)."""
    return int(display_client_in(netns, "spice_client", "spice_link", port, password))


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def settled_nvram(path, template, timeout=60):
    """The NVRAM file once the firmware has written its variables and stopped writing."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        now = read(path)
        if now != template and now == last:
            return now
        last = now
        time.sleep(2)
    raise AssertionError("the firmware wrote no variables to %s" % path)


def side_of(lab, host, uuid):
    """What ``host`` has of the VM: QEMUs, a live swtpm, TPM state dir, NVRAM file."""
    run = lab.run[host]
    files = platform.tpm_files(run, run, uuid)
    return {
        "qemu": sorted(set(qemu_processes(uuid)) & set(qemu_processes(run))),
        "swtpm": swtpm.live_pid(files),
        "tpm_state": os.path.exists(files.state_dir),
        "nvram": os.path.exists(os.path.join(run, uuid + ".fd")),
    }


def display_claims(store, uuid):
    return sorted(
        (c["host"], int(c["value"])) for c in store.list_host_claims(kind="display port") if c["owner"] == uuid
    )


EMPTY = {"qemu": [], "swtpm": None, "tpm_state": False, "nvram": False}


def test_firmware_vms_devices_move_and_failed_moves_leave_nothing(keyed_lab):
    lab = keyed_lab
    params = dict(
        FIRMWARE_VM,
        name="fw",
        firmware="uefi",
        graphics={"type": "spice", "password": SPICE_PASSWORD},
        rng=True,
        watchdog={"action": "pause"},
        smbios={"type1": {"serial": "SN-7"}},
        tpm={"version": "2.0"},
    )
    vm = ok(lab.task("hv-a", "vm", params))["vm"]
    uuid, port_a = vm["uuid"], vm["graphics"]["port"]
    template = read(firmware_files(False)[1])
    written = settled_nvram(os.path.join(lab.run["hv-a"], uuid + ".fd"), template)
    store = open_store(lab.db_url)
    try:
        assert display_claims(store, uuid) == [("hv-a", port_a)]

        # 1. hv-a -> hv-b.
        moved = ok(lab.task("hv-a", "migrate", {"name": "fw", "to": "hv-b"}))
        assert moved["vm"]["host"] == "hv-b", moved
        paths_b = VmPaths.for_vm(lab.run["hv-b"], uuid)
        spice = qmp_execute(paths_b.qmp_socket, "fw", "query-spice")
        port_b = spice["port"]
        assert spice["enabled"] and spice["auth"] == "spice", spice
        assert display_claims(store, uuid) == [("hv-b", port_b)], "hv-b claimed its port, hv-a released its own"
        assert store.get_vm("fw").launch_graphics_port == port_b, "the row names hv-b's port"
        assert spice_in(lab.ns["hv-b"], port_b, SPICE_PASSWORD) == LINK_OK, "the password was set on hv-b"
        assert spice_in(lab.ns["hv-b"], port_b, "wrong") == LINK_PERMISSION_DENIED
        on_b = side_of(lab, "hv-b", uuid)
        argv = read("/proc/%d/cmdline" % on_b["qemu"][0]).split(b"\0")
        assert not any(SPICE_PASSWORD.encode() in arg for arg in argv), "the password is in hv-b's argv"
        assert any(b"virtio-rng" in arg for arg in argv) and any(b"i6300esb" in arg for arg in argv), argv
        assert on_b["swtpm"] is not None and on_b["tpm_state"], on_b
        assert read(os.path.join(lab.run["hv-b"], uuid + ".fd")) == written, "hv-b's NVRAM file is hv-a's variables"
        assert side_of(lab, "hv-a", uuid) == EMPTY, "hv-a kept something of the VM"

        # 2. Back to hv-a, out of time: nothing of it is left on hv-a, hv-b's side is untouched.
        failed = lab.task("hv-b", "migrate", {"name": "fw", "to": "hv-a", "bandwidth_mbit": 1, "timeout": 3})
        assert "was not migrated and runs on hv-b as before" in failed.get("error", ""), failed
        assert wait_for(lambda: side_of(lab, "hv-a", uuid) == EMPTY, 15), side_of(lab, "hv-a", uuid)
        assert wait_for(lambda: store.journal_list(uuid + "@hv-a") == [], 10), store.journal_list(uuid + "@hv-a")
        assert display_claims(store, uuid) == [("hv-b", port_b)], "hv-b keeps its port; none is left on hv-a"
        assert side_of(lab, "hv-b", uuid) == on_b, "hv-b's QEMU and swtpm run on as before"
        assert qmp_execute(paths_b.qmp_socket, "fw", "query-status")["status"] == "running"
        assert spice_in(lab.ns["hv-b"], port_b, SPICE_PASSWORD) == LINK_OK

        # 3. hv-a's nvram_dir has the VM's TPM state already (shared, or a leftover): refused.
        leftover = platform.tpm_files(lab.run["hv-a"], lab.run["hv-a"], uuid).state_dir
        os.mkdir(leftover, 0o700)
        refused = lab.task("hv-b", "migrate", {"name": "fw", "to": "hv-a"})
        assert "refused: nvram_dir:" in refused.get("error", "") and leftover in refused["error"], refused
        assert os.path.isdir(leftover) and side_of(lab, "hv-a", uuid)["qemu"] == [], "nothing started on hv-a"
        os.rmdir(leftover)

        # 4. A VNC display moves too; a VM with shared_dirs does not, and nothing is asked.
        # It runs without a tablet while its running spec leaves usb_tablet unset (now: a
        # tablet), as a VM started before the option: hv-b builds what runs, no tablet.
        display = {"type": "vnc", "password": VNC_PASSWORD}
        vnc = ok(lab.task("hv-a", "vm", dict(FIRMWARE_VM, name="vnc", graphics=display, usb_tablet=False)))
        vnc_uuid = vnc["vm"]["uuid"]
        pending = ok(
            lab.task("hv-a", "vm", dict(FIRMWARE_VM, name="vnc", graphics=display, usb_tablet=False, rng=True))
        )
        assert pending["vm"]["pending_restart"], "rng waits for a restart: the running VM has none"
        rec = records.load(store, "vnc")
        rec.running_spec = dataclasses.replace(rec.running_spec, usb_tablet=None)
        records.save(store, rec)
        ok(lab.task("hv-a", "migrate", {"name": "vnc", "to": "hv-b"}))
        peripherals = qmp_execute(
            VmPaths.for_vm(lab.run["hv-b"], vnc_uuid).qmp_socket, "vnc", "qom-list", {"path": "/machine/peripheral"}
        )
        assert "tablet0" not in {p["name"] for p in peripherals}, "hv-b built a tablet the source does not have"
        vnc_pid = side_of(lab, "hv-b", vnc_uuid)["qemu"][0]
        assert b"virtio-rng" not in read("/proc/%d/cmdline" % vnc_pid), "hv-b built the pending rng, not what runs"
        assert records.load(store, "vnc").running_spec.usb_tablet is False, "the running spec says what runs"
        vnc_port = int(qmp_execute(VmPaths.for_vm(lab.run["hv-b"], vnc_uuid).qmp_socket, "vnc", "query-vnc")["service"])
        assert display_claims(store, vnc_uuid) == [("hv-b", vnc_port)], "hv-b's claim only"
        assert vnc_auth_in(lab.ns["hv-b"], vnc_port, VNC_PASSWORD) == "ok", "the VNC password was set on hv-b"
        share = os.path.join(lab.run["hv-a"], "share")
        os.mkdir(share)
        shared = dict(FIRMWARE_VM, name="share", memory_shared=True, shared_dirs=[{"source": share, "tag": "s"}])
        pid = ok(lab.task("hv-a", "vm", shared))["vm"]["pid"]
        blocked = lab.task("hv-a", "migrate", {"name": "share", "to": "hv-b"})
        assert "cannot move live: shared_dirs:" in blocked.get("error", ""), blocked
        row = store.get_vm("share")
        assert store.get_handover(row.uuid) is None and (row.host, row.qemu_pid) == ("hv-a", pid), "source untouched"

        # 5. Stopped, the TPM VM moves offline: its TPM state does not go with it, and it says so.
        ok(lab.task("hv-b", "vm", dict(params, state="stopped")))
        offline = ok(lab.task("hv-b", "migrate", {"name": "fw", "to": "hv-a"}))
        assert any("TPM state stays on hv-b and is removed" in w for w in offline["warnings"]), offline
        assert side_of(lab, "hv-b", uuid) == EMPTY and store.get_vm("fw").host == "hv-a"
    finally:
        store.close()
