# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vm disks cloned from a template on first create (issue 21 item 1): real qemu-img
(infinivirt_disk's own DiskService makes the disks), real QEMU: the tiny test guest under UEFI
with cloud_init, a NIC and a hot-plugged clone, and through ansible-playbook two firmware-only
VMs of one infinivirt_vms task that boot the template's boot sector from their linked clones."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest
import serial_report
from helpers import guest_disks, run_playbook, vm_list, wait_for, wait_ready
from qemu_procs import kill_leftovers, qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu]

MIB = 1 << 20
MARK = b"TEMPLATE-MARK"


def qemu_info(path):
    done = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def same_content(a, b) -> bool:
    return subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, check=False).returncode == 0


def sha256(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def make_template(path, size_mb=16, first_sector=None, backing=None):
    """A qcow2 template: ``first_sector`` at 0 (a boot sector) and MARK at 4 KiB."""
    raw = path + ".raw"
    with open(raw, "wb") as fh:
        fh.truncate(size_mb * MIB)
        if first_sector is not None:
            fh.write(first_sector)
        fh.seek(4096)
        fh.write(MARK)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path], check=True)
    os.unlink(raw)
    if backing is not None:  # a template that reads a backing file (its data moves below)
        subprocess.run(["qemu-img", "rebase", "-q", "-u", "-b", backing, "-F", "qcow2", path], check=True)
    return path


def boot_sector(text: bytes = b"CLONE-BOOT-OK") -> bytes:
    """A BIOS boot sector that writes ``text`` to COM1 and halts: a firmware-only VM shows on
    its serial console that it booted from its disk."""
    code = bytes.fromhex("31c08ed8fcbe167cbaf803ac84c07403eeebf8f4ebfd")  # msg at 0x7c16
    sector = code + text + b"\r\n\0"
    return sector.ljust(510, b"\0") + b"\x55\xaa"


@pytest.fixture
def svc(cloud_service):
    """A service with storage roots (images), an NVRAM directory and a secret key."""
    return cloud_service


def volumes(svc):
    return sorted(v.path for v in svc.store.list_volumes(svc.hostname))


def files(root):
    return sorted(os.listdir(root))


def disk_service(svc, roots):
    return DiskService(svc.store, svc.secret_box, svc.hostname, roots, lock_timeout=30)


def test_first_create_clones_and_a_rerun_is_a_noop(svc, images):
    tmpl = make_template(os.path.join(images, "tmpl.qcow2"))
    digest = sha256(tmpl)
    root, data = os.path.join(images, "c1-root.qcow2"), os.path.join(images, "c1-data.img")
    params = {
        "name": "c1",
        "memory_mb": 64,
        "disks": [
            {"path": root, "clone_from": tmpl, "size": "32M"},
            {"path": data, "format": "raw", "clone_from": tmpl, "clone_mode": "full"},
        ],
    }
    check = svc.ensure(params, True)
    assert check.actions == ["clone_disks", "create"]
    assert check.plan["disk_clones"] == [
        {
            "disk": "disks[0]",
            "path": root,
            "clone_from": tmpl,
            "clone_mode": "linked",
            "size": 32 * MIB,
            "backing_file": tmpl,
        },
        {
            "disk": "disks[1]",
            "path": data,
            "clone_from": tmpl,
            "clone_mode": "full",
            "size": 16 * MIB,
            "backing_file": None,
        },
    ]
    assert files(images) == ["tmpl.qcow2"] and volumes(svc) == [] and vm_list(svc) == []  # check mode made nothing

    made = svc.ensure(params, False)
    assert made.actions == check.actions and made.plan == check.plan  # the check run told the truth
    info = qemu_info(root)
    assert info["backing-filename"] == tmpl and info["virtual-size"] == 32 * MIB
    assert qemu_info(data)["format"] == "raw" and "backing-filename" not in qemu_info(data)
    assert same_content(tmpl, data) and same_content(tmpl, root)
    assert volumes(svc) == sorted([root, data])  # registered as infinivirt_disk registers them
    assert sha256(tmpl) == digest
    entry = made.vm["disks"][0]
    assert (entry["clone_from"], entry["clone_mode"], entry["size"]) == (tmpl, "linked", "32M")

    stamps = {p: os.stat(p).st_mtime_ns for p in (tmpl, root, data)}
    again = svc.ensure(params, False)
    assert not again.changed and again.actions == [] and again.warnings == []
    assert not svc.ensure(params, True).changed
    assert {p: os.stat(p).st_mtime_ns for p in (tmpl, root, data)} == stamps

    # Another template for a disk the VM has: not a recreate, not a change; a warning says so.
    other = make_template(os.path.join(images, "other.qcow2"), size_mb=8)
    moved = svc.ensure(dict(params, disks=[dict(params["disks"][0], clone_from=other), params["disks"][1]]), False)
    assert not moved.changed and moved.actions == []
    assert len(moved.warnings) == 1 and "disks[0] (%s) exists" % root in moved.warnings[0]
    assert moved.vm["disks"][0]["clone_from"] == tmpl and qemu_info(root)["backing-filename"] == tmpl

    # Removing the VM keeps its disks, cloned or not (as for every disk): infinivirt_disk removes them.
    assert svc.ensure({"name": "c1", "state": "absent"}, False).changed
    assert vm_list(svc) == [] and files(images) == ["c1-data.img", "c1-root.qcow2", "other.qcow2", "tmpl.qcow2"]
    assert volumes(svc) == sorted([root, data])
    disks = disk_service(svc, [images])
    with pytest.raises(StateError, match="backing file of"):
        disks.ensure({"path": tmpl, "state": "absent"}, False)
    for path in (root, data, tmpl):
        assert disks.ensure({"path": path, "state": "absent"}, False)["changed"]
    assert volumes(svc) == [] and files(images) == ["other.qcow2"]


def test_only_a_disk_first_added_is_cloned(svc, images):
    """A disk added to an existing VM is cloned; a disk the VM has that went missing is not
    made again (its data is gone: the start fails and says so)."""
    tmpl = make_template(os.path.join(images, "tmpl.qcow2"))
    plain = os.path.join(images, "plain.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", plain, "8M"], check=True)
    added = os.path.join(images, "added.qcow2")
    base = {"name": "c2", "memory_mb": 64, "accel": "tcg"}
    assert svc.ensure(dict(base, disks=[{"path": plain}]), False).actions == ["create"]
    grown = svc.ensure(dict(base, disks=[{"path": plain}, {"path": added, "clone_from": tmpl}]), False)
    assert grown.actions == ["clone_disks", "update"] and qemu_info(added)["backing-filename"] == tmpl

    # A path that exists is used as it is: the template is not read, nothing is cloned.
    kept = os.path.join(images, "kept.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", kept, "4M"], check=True)
    own = svc.ensure(dict(base, name="c2b", disks=[{"path": kept, "clone_from": tmpl, "size": "32M"}]), False)
    assert own.actions == ["create"] and "disk_clones" not in own.plan
    assert qemu_info(kept)["virtual-size"] == 4 * MIB and "backing-filename" not in qemu_info(kept)
    assert not svc.ensure(
        dict(base, name="c2b", disks=[{"path": kept, "clone_from": tmpl, "size": "32M"}]), False
    ).changed

    os.unlink(added)
    params = dict(base, state="running", disks=[{"path": plain}, {"path": added, "clone_from": tmpl}])
    with pytest.raises(SpecError) as caught:
        svc.ensure(params, False)
    assert caught.value.field == "disks[1].path" and "does not exist" in caught.value.reason
    assert not os.path.exists(added) and vm_list(svc, "c2")[0]["status"] == "stopped"


def _outside(svc, images, workdir):
    outside = os.path.join(workdir, "outside")
    os.makedirs(outside, exist_ok=True)
    return {"clone_from": make_template(os.path.join(outside, "t.qcow2"))}


def _chain_outside(svc, images, workdir):
    outside = os.path.join(workdir, "outside")
    os.makedirs(outside, exist_ok=True)
    below = make_template(os.path.join(outside, "below.qcow2"))
    return {"clone_from": make_template(os.path.join(images, "chained.qcow2"), backing=below)}


def _encrypted(svc, images, workdir):
    path = os.path.join(images, "secret.qcow2")
    disk_service(svc, [images]).ensure({"path": path, "size": "8M", "encrypt": True}, False)
    return {"clone_from": path, "clone_mode": "full"}


def _writable_elsewhere(svc, images, workdir):
    tmpl = make_template(os.path.join(images, "busy.qcow2"))
    svc.ensure({"name": "holder", "memory_mb": 64, "disks": [{"path": tmpl}]}, False)
    return {"clone_from": tmpl}


def _smaller(svc, images, workdir):
    return {"clone_from": make_template(os.path.join(images, "t16.qcow2")), "size": "8M"}


def _missing(svc, images, workdir):
    return {"clone_from": os.path.join(images, "nothing.qcow2")}


def _raw_linked(svc, images, workdir):
    return {"clone_from": make_template(os.path.join(images, "t.qcow2")), "format": "raw"}


@pytest.mark.parametrize(
    "build, field, phrase",
    [
        (_outside, "disks[1].clone_from", "storage root"),
        (_chain_outside, "disks[1].clone_from", "outside"),
        (_encrypted, "disks[1].clone_from", "encrypted"),
        (_writable_elsewhere, "disks[1].clone_from", "writable disk of VM holder"),
        (_smaller, "disks[1].size", "smaller than the image"),
        (_missing, "disks[1].clone_from", "nothing.qcow2"),
        (_raw_linked, "disks[1].clone_mode", "linked needs format qcow2"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_input_leaves_nothing(svc, images, workdir, build, field, phrase):
    """Each fails naming the disk's option, before anything is made: no clone, no volume
    row, no VM row, no QEMU. disks[0] is a good clone: it is not made either."""
    good = make_template(os.path.join(images, "good.qcow2"))
    bad = build(svc, images, workdir)
    before_files, before_rows, before_vms = files(images), volumes(svc), [v["name"] for v in vm_list(svc)]
    disks = [
        {"path": os.path.join(images, "first.qcow2"), "clone_from": good},
        dict({"path": os.path.join(images, "second.qcow2")}, **bad),
    ]
    with pytest.raises(SpecError) as caught:
        svc.ensure({"name": "bad", "memory_mb": 64, "accel": "tcg", "state": "running", "disks": disks}, False)
    assert caught.value.field == field, caught.value
    assert phrase in caught.value.reason, caught.value
    assert files(images) == before_files and volumes(svc) == before_rows
    assert [v["name"] for v in vm_list(svc)] == before_vms
    assert kill_leftovers(workdir) == []


def test_clone_from_needs_storage_roots(service, images):
    tmpl = make_template(os.path.join(images, "tmpl.qcow2"))
    disk = {"path": os.path.join(images, "c.qcow2"), "clone_from": tmpl}
    with pytest.raises(SpecError) as caught:
        service.ensure({"name": "noroots", "memory_mb": 64, "disks": [disk]}, True)
    assert caught.value.field == "disks[0].clone_from" and "storage_roots" in caught.value.reason
    assert files(images) == ["tmpl.qcow2"] and vm_list(service) == []


def test_a_failed_start_removes_the_disks_the_new_vm_cloned(svc, images, workdir):
    tmpl = make_template(os.path.join(images, "tmpl.qcow2"))
    kernel = os.path.join(workdir, "not-a-kernel")
    with open(kernel, "w") as fh:
        fh.write("not a kernel\n")
    params = {
        "name": "c3",
        "memory_mb": 64,
        "accel": "tcg",
        "kernel": kernel,
        "state": "running",
        "disks": [{"path": os.path.join(images, "c3.qcow2"), "clone_from": tmpl}],
    }
    with pytest.raises(QemuError, match="invalid kernel header"):
        svc.ensure(params, False)
    assert files(images) == ["tmpl.qcow2"] and volumes(svc) == [] and vm_list(svc) == []


def test_a_clone_boots_under_uefi_with_cloud_init_a_nic_and_a_hot_plugged_clone(svc, images, guest_params, bridge_ns):
    """One boot of the test guest: the linked clone (grown to 32 MiB) and the template's data
    in it, UEFI, the cloud-init seed, a NIC; then a full clone made and plugged into the
    running VM (made before the hot-plug). The template is never written."""
    tmpl = make_template(os.path.join(images, "tmpl.qcow2"))
    digest = sha256(tmpl)
    root, hot = os.path.join(images, "u-root.qcow2"), os.path.join(images, "u-hot.qcow2")
    disks = [{"path": root, "clone_from": tmpl, "size": "32M", "serial": "CLONE01"}]
    params = dict(
        guest_params,
        name="uclone",
        firmware="uefi",
        memory_mb=256,
        console_socket=True,
        state="running",
        netns=bridge_ns,
        nics=[{"bridge": "vmbr0"}],
        cloud_init={"hostname": "clone-1"},
        disks=disks,
    )
    started = svc.ensure(params, False)
    assert started.actions == ["clone_disks", "create", "start"]
    report = wait_ready(started.vm["serial_log"])
    assert report.firmware == "uefi"
    assert report.disk(serial="CLONE01")["size_bytes"] == 32 * MIB
    assert report.nic(mac=started.vm["nics"][0]["mac"]) is not None
    assert os.path.isfile(os.path.join(svc.ctx.nvram_dir, "%s.cidata.iso" % started.vm["uuid"]))
    sock = started.vm["console_socket_path"]
    name = guest_disks(sock)["CLONE01"]["name"]
    rc, out = serial_report.channel_command(
        sock, "dd if=/dev/%s bs=4096 skip=1 count=1 2>/dev/null | head -c 13" % name
    )
    assert (rc, out.strip()) == (0, MARK.decode())  # the template's data, read through the clone
    rc, out = serial_report.channel_command(
        sock, "printf GUEST > /g && dd if=/g of=/dev/%s bs=4096 seek=1 conv=fsync" % name
    )
    assert rc == 0, out

    params["disks"] = disks + [{"path": hot, "clone_from": tmpl, "clone_mode": "full", "serial": "CLONE02"}]
    predicted = svc.ensure(params, True)
    assert predicted.actions == ["clone_disks", "update", "hotplug_disks"] and not os.path.exists(hot)
    plugged = svc.ensure(params, False)
    assert plugged.actions == predicted.actions and plugged.vm["pid"] == started.vm["pid"]
    assert wait_for(lambda: "CLONE02" in guest_disks(sock)), "the hot-plugged clone never appeared"
    rc, out = serial_report.channel_command(
        sock, "dd if=/dev/%s bs=4096 skip=1 count=1 2>/dev/null | head -c 13" % guest_disks(sock)["CLONE02"]["name"]
    )
    assert (rc, out.strip()) == (0, MARK.decode())
    assert "backing-filename" not in qemu_info(hot) and not svc.ensure(params, False).changed
    assert sha256(tmpl) == digest  # the guest wrote to its clone only
    assert qemu_processes(started.vm["uuid"])


@pytest.mark.playbook
def test_playbook_two_vms_boot_from_linked_clones_of_one_template(tmp_path):
    """infinivirt_vms makes two firmware-only VMs whose disks are linked clones of one
    template (imported with infinivirt_disk); both boot its boot sector; check mode and a
    rerun agree; removing the VMs keeps the clones."""
    work = tempfile.mkdtemp(prefix="iv,pbc=")
    try:
        root = os.path.join(work, "images")
        os.makedirs(root)
        image = os.path.join(work, "boot.raw")
        with open(image, "wb") as fh:
            fh.write(boot_sector())
            fh.truncate(4 * MIB)
        done = run_playbook(
            "vm_clones.yml",
            {
                "db_url": "sqlite:///%s/pb.db" % work,
                "run_dir": os.path.join(work, "run"),
                "key_file": str(tmp_path / "secret.key"),
                "root": root,
                "image": image,
            },
            verbosity=1,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "VM_CLONES_OK" in done.stdout and "failed=0" in done.stdout
        tmpl = os.path.join(root, "tmpl.qcow2")
        assert same_content(image, tmpl)  # the template is as imported: neither VM wrote to it
        for name in ("pa", "pb"):
            clone = os.path.join(root, name + ".qcow2")
            assert qemu_info(clone)["backing-filename"] == tmpl
        assert kill_leftovers(work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
