# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Devices across live migration (issues 25 and 23), on the two hosts of migration_lab.py.

The TPM on the test guest (two boots in all): the guest extends a PCR and writes an NV index
through /dev/tpm0 on hv-a; after the move to hv-b it reads the same PCR value (the TPM's
volatile state crossed in QEMU's stream into hv-b's own swtpm) and the NV index; hv-a has
no swtpm nor TPM state left, hv-b's state directory is the VM's (journaled under its UUID);
after a stop and start on hv-b the PCR is reset (a new boot) and the NV index and the
TPM's reset counter show the persistent state went on from hv-a's."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct

import pytest
import serial_report
from helpers import wait_for, wait_ready
from migration_lab import open_lab

from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.postgres, pytest.mark.netns, pytest.mark.slow]

PCR = 16  # the debug PCR: any locality may extend it
NV_INDEX = 0x01500016
OWNER = 0x40000001
PASSWORD_SESSION = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, empty auth


@pytest.fixture
def lab(pg_url):
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
