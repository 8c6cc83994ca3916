# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disks in the real test guest: serials on their bus, hot-plug, live grow, data that
survives a restart. One guest boots twice."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
import serial_report
from helpers import guest_disks, make_image, vm_list, wait_for, wait_ready
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu]

MIB = 1024 * 1024


def test_disks_hotplug_grow_and_persistence(disk_service, guest_params, images):
    svc = disk_service
    boot = make_image(os.path.join(images, 'boot, "disk"=1.qcow2'), "qcow2", 64)
    data = make_image(os.path.join(images, "data.raw"), "raw", 32)
    hot = make_image(os.path.join(images, "hot.qcow2"), "qcow2", 16)
    disks = [
        {"path": boot, "serial": "VIRT01", "cache": "none", "aio": "native", "iothread": True},
        {"path": data, "format": "raw", "bus": "scsi", "serial": "SCSI01"},
    ]
    params = dict(guest_params, name="disky", vcpus=1, memory_mb=256, console_socket=True, state="running", disks=disks)

    started = svc.ensure(params, False)
    assert started.changed and started.vm["console_socket_path"]
    wait_ready(started.vm["serial_log"])
    sock = started.vm["console_socket_path"]
    seen = guest_disks(sock)
    assert seen["VIRT01"]["name"].startswith("vd") and seen["VIRT01"]["size_bytes"] == 64 * MIB
    assert seen["SCSI01"]["name"].startswith("sd") and seen["SCSI01"]["size_bytes"] == 32 * MIB
    assert not svc.ensure(params, False).changed

    # Write a marker through the guest's own block layer.
    rc, out = serial_report.channel_command(
        sock, "printf MARK-A > /m && dd if=/m of=/dev/%s bs=512 seek=8 conv=fsync 2>&1 && sync" % seen["VIRT01"]["name"]
    )
    assert rc == 0, out

    # Hot-plug: the guest sees the new disk while running, same QEMU process.
    params["disks"] = disks + [{"path": hot, "serial": "HOT01"}]
    predicted = svc.ensure(params, True)
    assert predicted.actions == ["update", "hotplug_disks"] and predicted.vm["pending_restart"] == []
    plugged = svc.ensure(params, False)
    assert plugged.actions == ["update", "hotplug_disks"] and plugged.vm["pid"] == started.vm["pid"]
    assert plugged.vm["pending_restart"] == [] and not plugged.warnings
    assert wait_for(lambda: "HOT01" in guest_disks(sock)), "hot-plugged disk never appeared"
    assert guest_disks(sock)["HOT01"]["size_bytes"] == 16 * MIB
    assert not svc.ensure(params, False).changed

    # Live grow: the guest sees the new capacity.
    assert svc.resize_attached_disk(boot, 96 * MIB) == "disky"
    assert wait_for(lambda: guest_disks(sock)["VIRT01"]["size_bytes"] == 96 * MIB)

    # Hot-unplug: gone from the guest, the task waited for QEMU's DEVICE_DELETED.
    params["disks"] = disks
    unplugged = svc.ensure(params, False)
    assert unplugged.actions == ["update", "hotplug_disks"]
    assert "HOT01" not in guest_disks(sock)
    assert unplugged.vm["pending_restart"] == []

    # A setting change on an attached disk cannot be done live: restart needed.
    params["disks"] = [dict(disks[0], cache="writeback", aio="threads"), disks[1]]
    flagged = svc.ensure(params, False)
    assert flagged.vm["pending_restart"] == ["disks"] and flagged.actions == ["update"]

    # Stop (ACPI) and start: the marker is still on the disk.
    svc.ensure({"name": "disky", "state": "stopped"}, False)
    assert qemu_processes(started.vm["uuid"]) == []
    again = svc.ensure({"name": "disky", "state": "running"}, False)
    wait_ready(again.vm["serial_log"])
    seen = guest_disks(again.vm["console_socket_path"])
    assert seen["VIRT01"]["size_bytes"] == 96 * MIB, "the grow is permanent"
    rc, out = serial_report.channel_command(
        again.vm["console_socket_path"],
        "dd if=/dev/%s bs=512 skip=8 count=1 2>/dev/null | head -c 6" % seen["VIRT01"]["name"],
    )
    assert (rc, out.strip()) == (0, "MARK-A")


def test_every_bus_is_accepted_by_qemu(disk_service, images):
    # The test guest's kernel has no AHCI/IDE driver, so for sata, ide and cdroms QEMU's own
    # view (query-block) is the proof that each device was built as asked.
    svc = disk_service
    disks = [
        {"path": make_image(os.path.join(images, "v.qcow2"), "qcow2", 8), "serial": "V1"},
        {
            "path": make_image(os.path.join(images, "s.raw"), "raw", 8),
            "format": "raw",
            "bus": "scsi",
            "serial": "S1",
            "cache": "directsync",
        },
        {
            "path": make_image(os.path.join(images, "a.qcow2"), "qcow2", 8),
            "bus": "sata",
            "serial": "A1",
            "cache": "unsafe",
        },
        {
            "path": make_image(os.path.join(images, "c.iso"), "raw", 1),
            "format": "raw",
            "bus": "sata",
            "media": "cdrom",
            "boot_order": 1,
        },
    ]
    out = svc.ensure({"name": "buses", "state": "paused", "accel": "tcg", "memory_mb": 64, "disks": disks}, False)
    rec = records.load(svc.store, "buses")
    blocks = {b["qdev"]: b for b in svc.engine.sessions.qmp(rec, "query-block")}
    assert len(blocks) == 4, blocks.keys()
    # QEMU opened each image through a descriptor set (the file checked inside the roots),
    # never by name: /dev/fdset/N, whose opaque names the disk.
    fdsets = {
        "/dev/fdset/%d" % s["fdset-id"]: s["fds"][0]["opaque"] for s in svc.engine.sessions.qmp(rec, "query-fdsets")
    }
    paths = {DiskSpec(path=d["path"]).disk_id: d["path"] for d in disks}
    by_file = {paths[fdsets[b["inserted"]["file"]]]: b for b in blocks.values()}
    assert by_file[disks[3]["path"]]["inserted"]["ro"] is True
    assert by_file[disks[2]["path"]]["inserted"]["cache"] == {"direct": False, "no-flush": True, "writeback": True}
    assert by_file[disks[1]["path"]]["inserted"]["cache"]["direct"] is True
    assert out.vm["status"] == "paused"


@pytest.mark.parametrize(
    "disk,field,phrase",
    [
        ({"path": "relative.qcow2"}, "disks[0].path", "absolute"),
        ({"path": "/etc/passwd"}, "disks[0].path", "outside the storage roots"),
        ({"path": "IMAGES/../../escape.qcow2"}, "disks[0].path", "outside the storage roots"),
        ({"path": "IMAGES/link.qcow2"}, "disks[0].path", "outside the storage roots"),
        ({"path": "IMAGES/missing.qcow2"}, "disks[0].path", "does not exist"),
        ({"path": "IMAGES/ok.qcow2", "bus": "usb"}, "disks[0].bus", "must be one of"),
        ({"path": "IMAGES/ok.qcow2", "cache": "fast"}, "disks[0].cache", "must be one of"),
        ({"path": "IMAGES/ok.qcow2", "aio": "native"}, "disks[0].aio", "O_DIRECT"),
        ({"path": "IMAGES/ok.qcow2", "serial": "a,b=c"}, "disks[0].serial", "letters"),
        ({"path": "IMAGES/ok.qcow2", "media": "cdrom"}, "disks[0].media", "cdrom needs"),
    ],
)
def test_bad_disks_change_nothing(disk_service, images, workdir, disk, field, phrase):
    make_image(os.path.join(images, "ok.qcow2"), "qcow2", 1)
    os.symlink("/etc/hostname", os.path.join(images, "link.qcow2"))
    disk = dict(disk, path=disk["path"].replace("IMAGES", images))
    with pytest.raises(SpecError) as err:
        disk_service.ensure({"name": "bad", "state": "running", "accel": "tcg", "disks": [disk]}, False)
    assert err.value.field == field and phrase in str(err.value)
    assert vm_list(disk_service) == []


def test_encrypted_volumes_in_the_guest(disk_service, guest_params, images, workdir):
    # LUKS volumes made by infinivirt_disk: cold-plugged (qcow2 with LUKS) and hot-plugged
    # (raw LUKS). The key reaches QEMU in a 0600 file read once at start, or inside QMP.
    svc = disk_service
    svc.ctx.secret_key_file = os.path.join(workdir, "secret.key")
    volumes = DiskService(svc.store, svc.secret_box, svc.hostname, [images])
    cold, hot = os.path.join(images, "sealed.qcow2"), os.path.join(images, "sealed.raw")
    volumes.ensure({"path": cold, "size": "16M", "encrypt": True}, False)
    volumes.ensure({"path": hot, "size": "8M", "format": "raw", "encrypt": True}, False)
    keys = [read_luks_key(svc.store, svc.secret_box, p) for p in (cold, hot)]

    params = dict(
        guest_params,
        name="sealed",
        memory_mb=256,
        console_socket=True,
        state="running",
        disks=[{"path": cold, "serial": "LUKS01"}],
    )
    vm = svc.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    assert guest_disks(sock)["LUKS01"]["size_bytes"] == 16 * MIB
    assert not [f for f in os.listdir(os.path.join(workdir, "run")) if f.endswith(".key")]
    fd_dir = "/proc/%d/fd" % vm["pid"]
    links = []
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):  # QEMU closes descriptors of its own meanwhile
            links.append(os.readlink(os.path.join(fd_dir, fd)))
    assert any(link.startswith("/memfd:infinivirt-secret") for link in links), "the key came as a memfd"
    assert all(not qemu_processes(k) for k in keys), "a LUKS key is on a command line"

    params["disks"] = params["disks"] + [{"path": hot, "format": "raw", "serial": "LUKS02"}]
    assert svc.ensure(params, False).actions == ["update", "hotplug_disks"]
    assert wait_for(lambda: "LUKS02" in guest_disks(sock))
    rc, out = serial_report.channel_command(
        sock,
        "printf SEALED > /m && dd if=/m of=/dev/%s bs=512 seek=1 conv=fsync 2>&1 && "
        "dd if=/dev/%s bs=512 skip=1 count=1 2>/dev/null | head -c 6" % ((guest_disks(sock)["LUKS02"]["name"],) * 2),
    )
    assert (rc, out.strip().splitlines()[-1]) == (0, "SEALED"), out
    with open(hot, "rb") as fh:
        assert b"SEALED" not in fh.read(), "the data on the host is encrypted"


def test_stop_and_absent_act_on_what_runs_whatever_the_host_says_now(disk_service, images, workdir):
    """A running VM whose disk no longer passes today's storage-root check (the roots
    changed) can still be stopped, and removed."""
    svc = disk_service
    disk = make_image(os.path.join(images, "held.qcow2"), "qcow2", 16)
    svc.ensure({"name": "held", "state": "paused", "accel": "tcg", "memory_mb": 64, "disks": [{"path": disk}]}, False)
    other_root = os.path.join(workdir, "elsewhere")
    os.makedirs(other_root)
    moved = VmService.open("sqlite:///%s/disks.db" % workdir, os.path.join(workdir, "run"), storage_roots=[other_root])
    try:
        with pytest.raises(SpecError) as err:  # a change is still checked against today's host
            moved.ensure({"name": "held", "memory_mb": 96}, False)
        assert err.value.field == "disks[0].path"
        out = moved.ensure({"name": "held", "state": "stopped", "stop_timeout": 5}, False)
        assert out.changed and out.vm["status"] == "stopped"
        assert moved.ensure({"name": "held", "state": "absent"}, False).changed
        assert vm_list(moved) == []
    finally:
        moved.close()


def _fd_inodes(pid):
    """(device, inode) of every file the process has open."""
    found = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            st = os.stat("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def test_a_symlink_swap_race_never_gives_qemu_a_file_outside_the_roots(disk_service, images, workdir):
    """A directory inside the storage root is swapped, again and again, for a symlink to a
    directory outside it while the VM is started 50 times: QEMU gets the image that was
    checked (by descriptor), or the start is refused; never the decoy outside."""
    svc = disk_service
    sub, outside = os.path.join(images, "sub"), os.path.join(workdir, "outside")
    os.makedirs(sub)
    os.makedirs(outside)
    make_image(os.path.join(sub, "disk.qcow2"), "qcow2", 8)
    decoy = make_image(os.path.join(outside, "disk.qcow2"), "qcow2", 8)
    before = os.stat(decoy)
    decoy_id = (before.st_dev, before.st_ino)
    params = {"name": "racy", "accel": "tcg", "memory_mb": 64, "disks": [{"path": os.path.join(sub, "disk.qcow2")}]}
    svc.ensure(dict(params, state="present"), False)

    stop, swaps, broke = threading.Event(), [0], []

    def swap():
        parked = sub + ".real"
        deadline = time.monotonic() + 120
        try:
            while not stop.is_set() and time.monotonic() < deadline and swaps[0] < 200000:
                os.rename(sub, parked)
                os.symlink(outside, sub)
                time.sleep(0.0005)
                os.unlink(sub)
                os.rename(parked, sub)
                swaps[0] += 1
                # The real directory stays longer than the link, so some starts get through
                # on a loaded machine too (the test needs both outcomes).
                time.sleep(0.0015)
        except OSError as exc:  # shown by the assertion below, not lost in a thread
            broke.append(repr(exc))

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    started = refused = 0
    try:
        while started + refused < 50 or (started == 0 and refused < 200):
            try:
                vm = svc.ensure(dict(params, state="paused"), False).vm
            except SpecError as err:
                assert err.field == "disks[0].path", str(err)
                refused += 1
                continue
            started += 1
            assert decoy_id not in _fd_inodes(vm["pid"]), "QEMU opened the decoy outside the roots"
            svc.ensure({"name": "racy", "state": "stopped", "force": True, "stop_timeout": 1}, False)
    finally:
        stop.set()
        swapper.join(timeout=30)
    assert not broke, broke
    assert started > 0 and swaps[0] > 0, (started, refused, swaps[0])
    after = os.stat(decoy)
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size), "the decoy was written"
    assert sorted(os.listdir(outside)) == ["disk.qcow2"]
