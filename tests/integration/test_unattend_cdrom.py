# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The unattend option on a real QEMU (no Windows here, so firmware only: nothing boots, and
what Windows Setup would find is proved where it is made). One UEFI q35 VM with a NIC on a
bridge, a LUKS disk, a cloud-init seed and the answer file: QEMU's own block list shows two
read-only CD-ROMs with distinct ids, the answer file's on the last AHCI port; the ISO QEMU
has open reads back (pycdlib) with Autounattend.xml byte for byte and the extra files; the
password is in neither the database nor any command line; a change is a pending restart
whose restart brings the new ISO; removal leaves no file. A pc VM puts it on IDE."""

from __future__ import annotations

import glob
import io
import os

import pycdlib
import pytest
from helpers import vm_list
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

PASSWORD = "W1nd0ws-Adm1n-Secret"
XML = (
    '<?xml version="1.0" encoding="utf-8"?>\r\n<unattend xmlns="urn:schemas-microsoft-com:unattend">\r\n'
    '  <settings pass="oobeSystem"><AdministratorPassword><Value>%s</Value></AdministratorPassword>'
    "</settings>\r\n</unattend>\r\n"
) % PASSWORD


def cdroms(svc, name):
    """qdev id -> (the file QEMU has open, read-only) for each CD-ROM, from query-block."""
    blocks = svc.engine.sessions.qmp(records.load(svc.store, name), "query-block")
    return {
        b["qdev"]: (b["inserted"]["file"], b["inserted"]["ro"])
        for b in blocks
        if b.get("inserted") and b["qdev"] in ("unattend", "cidata")
    }


def parent_bus(svc, name, dev):
    rec = records.load(svc.store, name)
    return svc.engine.sessions.qmp(rec, "qom-get", {"path": "/machine/peripheral/" + dev, "property": "parent_bus"})


def iso_files(path):
    disc = pycdlib.PyCdlib()
    disc.open(path)
    try:
        out = {}
        for top, _dirs, files in disc.walk(joliet_path="/"):
            for name in files:
                full = (top.rstrip("/") + "/" + name).lstrip("/")
                buf = io.BytesIO()
                disc.get_file_from_iso_fp(buf, joliet_path="/" + full)
                out[full] = buf.getvalue()
        return out
    finally:
        disc.close()


def test_answer_file_cdrom_beside_uefi_nic_luks_and_cloud_init(cloud_service, images, workdir, bridge_ns):
    svc = cloud_service
    DiskService(svc.store, svc.secret_box, svc.hostname, [images]).ensure(
        {"path": os.path.join(images, "system.qcow2"), "size": "16M", "encrypt": True}, False
    )
    script = os.path.join(workdir, "setup.cmd")
    with open(script, "wb") as fh:
        fh.write(b"@echo off\r\nreg add HKLM\\Software\\Test /f\r\n")
    unattend = {
        "autounattend": XML,
        "files": [
            {"path": "$OEM$/$$/Setup/Scripts/SetupComplete.cmd", "src": script},
            {"path": "README.txt", "content": "provisioned by infinivirt"},
        ],
    }
    params = {
        "name": "win01",
        "state": "running",
        "memory_mb": 256,
        "accel": "tcg",
        "firmware": "uefi",
        "netns": bridge_ns,
        "nics": [{"bridge": "vmbr0"}],
        "disks": [{"path": os.path.join(images, "system.qcow2"), "bus": "sata"}],
        "cloud_init": {"hostname": "win01"},
        "unattend": unattend,
    }
    assert svc.ensure(params, True).plan["actions"] == ["create", "start"]
    assert not os.path.exists(os.path.join(workdir, "nvram")), "check mode built an ISO"
    vm = svc.ensure(params, False).vm
    iso_path = os.path.join(workdir, "nvram", vm["uuid"] + ".unattend.iso")
    seed_path = os.path.join(workdir, "nvram", vm["uuid"] + ".cidata.iso")
    assert cdroms(svc, "win01") == {"unattend": (iso_path, True), "cidata": (seed_path, True)}
    assert parent_bus(svc, "win01", "unattend").endswith("/ide.5")  # the last AHCI port
    blocks = svc.engine.sessions.qmp(records.load(svc.store, "win01"), "query-block")
    disk = [b["qdev"] for b in blocks if b["qdev"].startswith("disk-")]
    assert len(disk) == 1 and parent_bus(svc, "win01", disk[0]).endswith("/ide.0")  # the disk keeps the first
    assert iso_files(iso_path) == {
        "Autounattend.xml": XML.encode(),
        "$OEM$/$$/Setup/Scripts/SetupComplete.cmd": open(script, "rb").read(),
        "README.txt": b"provisioned by infinivirt",
    }
    assert not qemu_processes(PASSWORD), "the password is on a command line"
    db = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(workdir, "cloud.db*")) if os.path.isfile(p))
    assert PASSWORD.encode() not in db and b"provisioned by infinivirt" not in db
    assert not svc.ensure(params, False).changed  # a rerun changes nothing

    # A change while running waits for a restart; the ISO QEMU has stays as it was.
    changed = dict(unattend, autounattend=XML.replace(PASSWORD, "Rotated-Secret-2"))
    pending = svc.ensure(dict(params, unattend=changed), False)
    assert pending.changed and pending.plan["changes"] == {"unattend": "restart"}
    assert pending.vm["pending_restart"] == ["unattend"]
    assert iso_files(iso_path)["Autounattend.xml"] == XML.encode()
    # No OS answers the power button: the restart ends the firmware by force.
    restarted = svc.ensure(dict(params, unattend=changed, restart_on_change=True, force=True, stop_timeout=1), False)
    assert restarted.plan["actions"][-2:] == ["stop", "start"]
    assert iso_files(iso_path)["Autounattend.xml"] == changed["autounattend"].encode()
    assert cdroms(svc, "win01")["unattend"] == (iso_path, True)

    svc.ensure({"name": "win01", "state": "absent", "force": True, "stop_timeout": 5}, False)
    assert os.listdir(os.path.join(workdir, "nvram")) == [] and vm_list(svc) == []


def test_on_machine_type_pc_it_is_the_last_ide_slot(cloud_service, workdir):
    svc = cloud_service
    params = {"name": "oldwin", "state": "running", "memory_mb": 128, "accel": "tcg", "machine_type": "pc"}
    svc.ensure(dict(params, unattend={"autounattend": XML}), False)
    assert parent_bus(svc, "oldwin", "unattend").endswith("/ide.1")
    rec = records.load(svc.store, "oldwin")
    unit = svc.engine.sessions.qmp(rec, "qom-get", {"path": "/machine/peripheral/unattend", "property": "unit"})
    assert unit == 1
    assert set(cdroms(svc, "oldwin")) == {"unattend"}
    svc.ensure({"name": "oldwin", "state": "absent", "force": True, "stop_timeout": 5}, False)
    assert os.listdir(os.path.join(workdir, "nvram")) == []
