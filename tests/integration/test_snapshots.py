# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshots in the real guest: write A, snapshot, overwrite with B, revert, read A; live
(with memory state) and offline; plus the listing and idempotence."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import serial_report
from helpers import (
    block_graph,
    dd_seconds,
    guest_disks,
    guest_nics,
    links,
    make_image,
    nft_mentions,
    vm_list,
    vnc_auth_in,
    wait_for,
    wait_ready,
)

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu]


def write_marker(sock, device, text):
    rc, out = serial_report.channel_command(
        sock, "printf %s > /m && dd if=/m of=/dev/%s bs=512 seek=8 conv=fsync 2>&1 && sync" % (text, device)
    )
    assert rc == 0, out


def read_marker(sock, device):
    rc, out = serial_report.channel_command(
        sock, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/%s bs=512 skip=8 count=1 2>/dev/null | head -c 6" % device
    )
    assert rc == 0, out
    return out.strip()


def test_snapshot_revert_live_and_offline(disk_service, guest_params, images):
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "snap.qcow2"), "qcow2", 32)
    params = dict(
        guest_params,
        name="snappy",
        memory_mb=256,
        console_socket=True,
        state="running",
        disks=[{"path": disk, "serial": "SNAP01"}],
    )
    vm = vms.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    dev = guest_disks(sock)["SNAP01"]["name"]

    # Live, with memory: snapshot-load brings back disk and RAM without a restart.
    write_marker(sock, dev, "MARK-A")
    snap = {"vm": "snappy", "name": "with-ram", "memory": True}
    assert snaps.ensure(dict(snap, state="present"), True)["changed"]
    taken = snaps.ensure(dict(snap, state="present"), False)
    assert taken["changed"] and [s["name"] for s in taken["snapshots"]] == ["with-ram"]
    assert taken["snapshots"][0]["vm_state_size"] > 0
    assert not snaps.ensure(dict(snap, state="present"), False)["changed"]
    write_marker(sock, dev, "MARK-B")
    assert read_marker(sock, dev) == "MARK-B"
    reverted = snaps.ensure(dict(snap, state="reverted"), False)
    assert reverted["changed"] and reverted["action"] == "revert"
    assert read_marker(sock, dev) == "MARK-A"
    assert vm_list(vms, "snappy")[0]["pid"] == vm["pid"], "a live revert keeps the process"

    # Disks only, taken live, reverted offline.
    disk_only = {"vm": "snappy", "name": "disk-only"}
    assert snaps.ensure(dict(disk_only, state="present"), False)["changed"]
    write_marker(sock, dev, "MARK-C")
    vms.ensure({"name": "snappy", "state": "stopped"}, False)
    assert snaps.ensure(dict(disk_only, state="reverted"), False)["changed"]
    vm = vms.ensure({"name": "snappy", "state": "running"}, False).vm
    wait_ready(vm["serial_log"])
    assert read_marker(vm["console_socket_path"], dev) == "MARK-A"

    # The listing, delete and its idempotence.
    listed = vm_list(vms, "snappy")[0]["snapshots"]
    assert [s["name"] for s in listed] == ["disk-only", "with-ram"]
    assert snaps.ensure(dict(disk_only, state="absent"), False)["changed"]
    assert not snaps.ensure(dict(disk_only, state="absent"), False)["changed"]
    assert [s["name"] for s in vm_list(vms, "snappy")[0]["snapshots"]] == ["with-ram"]


def test_offline_snapshots_of_a_stopped_vm(disk_service, images):
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "off.qcow2"), "qcow2", 8)
    vms.ensure({"name": "cold", "state": "stopped", "accel": "tcg", "disks": [{"path": disk}]}, False)
    snap = {"vm": "cold", "name": "s1"}
    predicted = snaps.ensure(dict(snap, state="present"), True)
    assert predicted["changed"] and predicted["diff"]["after"]["snapshots"] == ["s1"]
    assert snaps.list(records.load(vms.store, "cold")) == {}, "check mode took no snapshot"
    assert snaps.ensure(dict(snap, state="present"), False)["changed"]
    assert list(snaps.list(records.load(vms.store, "cold"))) == ["s1"]
    with pytest.raises(SpecError) as err:
        snaps.ensure(dict(snap, state="present", memory=True, name="s2"), False)
    assert err.value.field == "memory"


@pytest.mark.parametrize(
    "params,field,phrase",
    [
        ({"vm": "cold2", "name": "has space"}, "name", "letters"),
        ({"vm": "cold2", "name": "x;rm"}, "name", "letters"),
        ({"vm": "nope", "name": "s1"}, "vm", "does not exist"),
        ({"vm": "rawvm", "name": "s1"}, "vm", "raw disks"),
        ({"vm": "cold2", "name": "never", "state": "reverted"}, "name", "no snapshot"),
    ],
)
def test_bad_snapshot_input(disk_service, images, params, field, phrase):
    vms = disk_service
    vms.ensure(
        {
            "name": "cold2",
            "state": "stopped",
            "accel": "tcg",
            "disks": [{"path": make_image(os.path.join(images, "c2.qcow2"), "qcow2", 8)}],
        },
        False,
    )
    vms.ensure(
        {
            "name": "rawvm",
            "state": "stopped",
            "accel": "tcg",
            "disks": [{"path": make_image(os.path.join(images, "r.raw"), "raw", 8), "format": "raw"}],
        },
        False,
    )
    with pytest.raises(SpecError) as err:
        SnapshotService(vms.engine).ensure(dict(params, state=params.get("state", "present")), False)
    assert err.value.field == field and phrase in str(err.value)
    assert SnapshotService(vms.engine).list(records.load(vms.store, "cold2")) == {}


def test_external_snapshots_revert_and_merge(disk_service, guest_params, images):
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    data = make_image(os.path.join(images, "ext data.raw"), "raw", 16)  # raw works externally
    params = dict(
        guest_params,
        name="layers",
        memory_mb=256,
        console_socket=True,
        state="running",
        disks=[{"path": data, "format": "raw", "serial": "EXT01"}],
    )
    vm = vms.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    dev = guest_disks(sock)["EXT01"]["name"]
    write_marker(sock, dev, "MARK-A")

    # Taken live: the running VM switches to an overlay; the image itself stays as it was.
    ext1 = {"vm": "layers", "name": "ext1", "type": "external"}
    taken = snaps.ensure(dict(ext1, state="present"), False)
    assert taken["changed"] and [(s["name"], s["type"]) for s in taken["snapshots"]] == [("ext1", "external")]
    overlay1 = data + ".ext1.overlay.qcow2"
    assert os.path.exists(overlay1) and vm_list(vms, "layers")[0]["pid"] == vm["pid"]
    assert not snaps.ensure(dict(ext1, state="present"), False)["changed"]
    write_marker(sock, dev, "MARK-B")
    with open(data, "rb") as fh:
        assert b"MARK-B" not in fh.read() and b"MARK-A" in open(data, "rb").read()

    # Revert: the VM restarts on a fresh overlay over the frozen image.
    assert snaps.ensure(dict(ext1, state="reverted"), False)["changed"]
    vm = vm_list(vms, "layers")[0]
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    assert read_marker(sock, dev) == "MARK-A"

    # Delete (merge): today's data stays, the overlay is folded into the image.
    write_marker(sock, dev, "MARK-C")
    assert snaps.ensure({"vm": "layers", "name": "ext2", "type": "external"}, False)["changed"]
    assert snaps.ensure(dict(ext1, state="absent"), False)["changed"]
    assert not os.path.exists(overlay1)
    assert [s["name"] for s in vm_list(vms, "layers")[0]["snapshots"]] == ["ext2"]
    vm = vm_list(vms, "layers")[0]
    wait_ready(vm["serial_log"])
    assert read_marker(vm["console_socket_path"], dev) == "MARK-C"
    with open(data, "rb") as fh:
        assert b"MARK-C" in fh.read(), "merged into the image"

    # Internal snapshots do not mix with external ones; removing the VM removes its overlays.
    with pytest.raises(SpecError) as err:
        snaps.ensure({"vm": "layers", "name": "int", "state": "present"}, False)
    assert err.value.field in ("vm", "type")
    vms.ensure({"name": "layers", "state": "absent", "force": True}, False)
    assert not os.path.exists(data + ".ext2.overlay.qcow2") and os.path.exists(data)


# -- a start after a revert is a full start -------------------------------------------------


def assert_fully_started(vms, name, netns, password, mac, serial):
    """What a start gives a VM: its process, its TAP on its bridge, its firewall chains, its
    display password, its (encrypted) disk and its NIC in the guest."""
    vm = vm_list(vms, name)[0]
    assert vm["status"] == "running" and vm["pending_restart"] == []
    tap = vm["taps"][0]
    assert links(netns)[tap]["master"] == "vmbr0"
    assert nft_mentions(netns, vm["uuid"]) and nft_mentions(netns, tap)
    assert vnc_auth_in(netns, vm["graphics"]["port"], password) == "ok"
    assert vnc_auth_in(netns, vm["graphics"]["port"], "wrong!!!") == "failed"
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    assert [n["mac"] for n in guest_nics(sock)[0]] == [mac]
    assert serial in guest_disks(sock)
    return vm


def test_revert_brings_back_a_vm_with_nic_luks_disk_and_display_password(
    disk_service, guest_params, images, bridge_ns, workdir
):
    vms = disk_service
    vms.ctx.secret_key_file = os.path.join(workdir, "secret.key")
    snaps = SnapshotService(vms.engine)
    sealed = os.path.join(images, "sealed.qcow2")
    DiskService(vms.store, vms.secret_box, vms.hostname, [images]).ensure(
        {"path": sealed, "size": "16M", "encrypt": True}, False
    )
    mac, password = "52:54:00:5e:00:01", "s3cret"
    params = dict(
        guest_params,
        name="revert-nic",
        memory_mb=256,
        console_socket=True,
        state="running",
        netns=bridge_ns,
        nics=[{"bridge": "vmbr0", "mac": mac}],
        graphics={"type": "vnc", "password": password},
        disks=[{"path": sealed, "serial": "SEAL01"}],
    )
    vms.ensure(params, False)
    vms.firewall.ensure(
        {
            "scope": "vm",
            "name": "revert-nic",
            "policy_in": "drop",
            "rules": [{"direction": "in", "protocol": "tcp", "ports": [22]}],
        },
        False,
    )
    first = assert_fully_started(vms, "revert-nic", bridge_ns, password, mac, "SEAL01")
    dev = guest_disks(first["console_socket_path"])["SEAL01"]["name"]

    # Issue 18: QEMU 7.2 aborts (an assertion) when it saves memory state into a LUKS
    # qcow2 image; with no other disk for it, the task refuses, and the VM keeps running.
    with pytest.raises(SpecError) as err:
        snaps.ensure({"vm": "revert-nic", "name": "with-ram", "memory": True}, False)
    assert err.value.field == "memory" and "encrypted" in str(err.value)
    assert vm_list(vms, "revert-nic")[0]["pid"] == first["pid"]
    assert vms.engine.process.is_alive(records.load(vms.store, "revert-nic"))

    # Disks only, taken live and reverted by a restart: the new process is a full start.
    write_marker(first["console_socket_path"], dev, "MARK-A")
    snap = {"vm": "revert-nic", "name": "disk-only"}
    assert snaps.ensure(dict(snap, state="present"), False)["changed"]
    write_marker(first["console_socket_path"], dev, "MARK-B")
    assert snaps.ensure(dict(snap, state="reverted"), False)["changed"]
    again = assert_fully_started(vms, "revert-nic", bridge_ns, password, mac, "SEAL01")
    assert again["pid"] != first["pid"] and again["taps"] == first["taps"]
    assert read_marker(again["console_socket_path"], dev) == "MARK-A"
    assert not vms.ensure(params, False).changed, "the reverted VM is what the task asks for"


def test_external_revert_of_a_running_vm_with_a_nic(disk_service, guest_params, images, bridge_ns):
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "ext.qcow2"), "qcow2", 32)
    mac = "52:54:00:5e:00:02"
    params = dict(
        guest_params,
        name="ext-nic",
        memory_mb=256,
        console_socket=True,
        state="running",
        netns=bridge_ns,
        nics=[{"bridge": "vmbr0", "mac": mac}],
        disks=[{"path": disk, "serial": "EXT01"}],
    )
    first = vms.ensure(params, False).vm
    wait_ready(first["serial_log"])
    snap = {"vm": "ext-nic", "name": "ext", "type": "external"}
    assert snaps.ensure(dict(snap, state="present"), False)["changed"]
    assert snaps.ensure(dict(snap, state="reverted"), False)["changed"]
    vm = vm_list(vms, "ext-nic")[0]
    assert vm["status"] == "running" and vm["pid"] != first["pid"]
    assert links(bridge_ns)[vm["taps"][0]]["master"] == "vmbr0"
    wait_ready(vm["serial_log"])
    assert [n["mac"] for n in guest_nics(vm["console_socket_path"])[0]] == [mac]


def test_live_external_snapshots_of_a_vm_started_by_descriptor_restart(disk_service, images):
    """QEMU opens the images as /dev/fdset/N; an overlay taken live must still name its
    backing image by path, or the VM cannot start again."""
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "fd.qcow2"), "qcow2", 8)
    vms.ensure(
        {"name": "fdsnap", "state": "running", "accel": "tcg", "memory_mb": 64, "disks": [{"path": disk}]}, False
    )
    for name in ("e1", "e2"):
        assert snaps.ensure({"vm": "fdsnap", "name": name, "type": "external"}, False)["changed"]
    first, second = disk + ".e1.overlay.qcow2", disk + ".e2.overlay.qcow2"
    backing = {
        path: json.loads(
            subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, check=True).stdout
        ).get("backing-filename")
        for path in (first, second)
    }
    assert backing == {first: disk, second: first}
    restarted = vms.ensure({"name": "fdsnap", "state": "restarted", "force": True, "stop_timeout": 1}, False)
    assert restarted.vm["status"] == "running"
    # The whole chain reaches QEMU as descriptors: no image is opened by the name in a header.
    rec = records.load(vms.store, "fdsnap")
    nodes = vms.engine.sessions.qmp(rec, "query-named-block-nodes", {"flat": True})
    files = {n["node-name"]: n["file"] for n in nodes if n["drv"] == "file" and not n["node-name"].startswith("fw-")}
    assert len(files) == 3 and all(f.startswith("/dev/fdset/") for f in files.values()), files

    # A base image swapped for a symlink out of the roots is refused at start, naming the disk.
    vms.ensure({"name": "fdsnap", "state": "stopped", "force": True, "stop_timeout": 1}, False)
    outside = make_image(os.path.join(os.path.dirname(images), "outside.qcow2"), "qcow2", 8)
    os.rename(disk, disk + ".moved")
    os.symlink(outside, disk)
    with pytest.raises(SpecError) as err:
        vms.ensure({"name": "fdsnap", "state": "running"}, False)
    assert err.value.field == "disks[0].path"
    assert vm_list(vms, "fdsnap")[0]["status"] == "stopped"


@pytest.mark.parametrize("kind", ["internal", "external"])
def test_offline_snapshot_work_never_follows_a_swapped_symlink(disk_service, images, kind):
    """qemu-img gets the images of a stopped VM as descriptors opened inside the roots: a
    disk swapped for a symlink out of them is refused, and the outside file is untouched."""
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "cold.qcow2"), "qcow2", 8)
    vms.ensure({"name": "coldswap", "state": "stopped", "accel": "tcg", "disks": [{"path": disk}]}, False)
    assert snaps.ensure({"vm": "coldswap", "name": "s1", "type": kind}, False)["changed"]
    outside = make_image(os.path.join(os.path.dirname(images), "outside-%s.qcow2" % kind), "qcow2", 8)
    before = open(outside, "rb").read()
    target = disk if kind == "internal" else disk + ".s1.overlay.qcow2"
    os.rename(target, target + ".moved")
    os.symlink(outside, target)
    with pytest.raises(SpecError) as err:
        snaps.ensure({"vm": "coldswap", "name": "s2", "type": kind}, False)
    assert err.value.field == "disks[0].path"
    assert open(outside, "rb").read() == before, "the file outside the roots was not written"


# -- a running VM with a limited disk: internal, memory and external snapshots live --------

MIB = 1024 * 1024


def write_seconds(sock, device, mib):
    """Seconds the guest takes to write ``mib`` MiB to ``device`` with O_DIRECT (64 KiB blocks)."""
    return dd_seconds(sock, "if=/dev/zero of=/dev/%s bs=64k count=%d seek=64 oflag=direct" % (device, mib * 16))


def throttled_write(sock, dev, bps):
    """Writing 4 MiB at ``bps`` takes about 4 MiB / bps (the bucket lets 1/10 s through at once)."""
    seconds = write_seconds(sock, dev, 4)
    assert seconds >= 0.75 * 4 * MIB / bps, "wrote at %.2f MiB/s: the limit does not hold" % (4 / seconds)


def test_live_snapshots_of_a_vm_with_a_limited_disk_and_a_balloon(disk_service, guest_params, images, monkeypatch):
    vms, snaps = disk_service, SnapshotService(disk_service.engine)
    disk = make_image(os.path.join(images, "limited.qcow2"), "qcow2", 32)
    bps = MIB
    params = dict(
        guest_params,
        name="limited",
        memory_mb=256,
        memory_balloon=True,
        memory_target_mb=224,
        console_socket=True,
        state="running",
        disks=[{"path": disk, "serial": "LIM01", "bps": bps}],
    )
    vm = vms.ensure(params, False).vm
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    dev = guest_disks(sock)["LIM01"]["name"]
    device_id = "disk-" + records.load(vms.store, "limited").spec.disks[0].disk_id
    throttle = "t-" + device_id[len("disk-") :]

    # Issue 18 item 7: a disk-only internal snapshot names the disk's root node (its
    # throttle filter), taken and deleted live.
    disk_only = {"vm": "limited", "name": "disk-only"}
    assert snaps.ensure(dict(disk_only, state="present"), False)["changed"]
    assert [s["name"] for s in vm_list(vms, "limited")[0]["snapshots"]] == ["disk-only"]
    assert snaps.ensure(dict(disk_only, state="absent"), False)["changed"]
    assert vm_list(vms, "limited")[0]["snapshots"] == []

    # Item 8: a memory snapshot taken at 224 MiB, the target then set to 192, reverted: the
    # balloon keeps the spec's 192, and a rerun of the spec changes nothing.
    assert wait_for(lambda: vm_list(vms, "limited")[0]["balloon"]["actual_mb"] == 224, timeout=60)
    with_ram = {"vm": "limited", "name": "with-ram", "memory": True}
    assert snaps.ensure(dict(with_ram, state="present"), False)["changed"]
    params["memory_target_mb"] = 192
    assert vms.ensure(params, False).actions == ["update", "set_balloon"]
    assert wait_for(lambda: vm_list(vms, "limited")[0]["balloon"]["actual_mb"] == 192, timeout=60)
    assert snaps.ensure(dict(with_ram, state="reverted"), False)["changed"]
    rec = records.load(vms.store, "limited")
    assert wait_for(lambda: vm_list(vms, "limited")[0]["balloon"]["actual_mb"] == 192, timeout=60)
    assert not vms.ensure(params, False).changed
    assert snaps.ensure(dict(with_ram, state="absent"), False)["changed"]

    # Item 1: a symlink planted at the overlay's name once the checks are done (the race
    # window) is not followed: the file it points to is untouched, nothing is left over.
    outside = make_image(os.path.join(os.path.dirname(images), "victim.qcow2"), "qcow2", 8)
    before = open(outside, "rb").read()
    raced = disk + ".raced.overlay.qcow2"
    real_add = vms.store.add_layers

    def add_then_plant(*args, **kwargs):
        real_add(*args, **kwargs)
        os.symlink(outside, raced)

    monkeypatch.setattr(vms.store, "add_layers", add_then_plant)
    failed = None
    try:
        snaps.ensure({"vm": "limited", "name": "raced", "type": "external"}, False)
    except SpecError as exc:
        failed = exc
    monkeypatch.undo()
    assert open(outside, "rb").read() == before, "the file outside the roots was not written"
    assert failed is not None and failed.field == "disks[0].path", failed
    assert "outside the storage roots" in str(failed)
    assert os.path.islink(raced) and vms.store.list_layers(rec.uuid) == []
    opaque = [fd.get("opaque", "") for s in vms.engine.sessions.qmp(rec, "query-fdsets") for fd in s["fds"]]
    nodes = [n["node-name"] for n in vms.engine.sessions.qmp(rec, "query-named-block-nodes", {"flat": True})]
    assert not [o for o in opaque if o.startswith("x")] and not [n for n in nodes if n.startswith(("x", "fx"))]
    os.unlink(raced)

    # Items 1 and 3: a live external snapshot: the overlay is ours (0600), QEMU got it as a
    # descriptor, and it sits under the throttle filter, so the limit still holds.
    assert snaps.ensure({"vm": "limited", "name": "ext1", "type": "external"}, False)["changed"]
    overlay = disk + ".ext1.overlay.qcow2"
    assert oct(os.stat(overlay).st_mode & 0o777) == oct(0o600)
    graph = block_graph(vms, "limited")
    below_throttle = graph[throttle]["file"]
    assert below_throttle.startswith("x"), graph
    assert graph[below_throttle]["backing"] == "n-" + throttle[2:]
    nodes = {n["node-name"]: n for n in vms.engine.sessions.qmp(rec, "query-named-block-nodes", {"flat": True})}
    assert nodes[graph[below_throttle]["file"]]["file"].startswith("/dev/fdset/")
    throttled_write(sock, dev, bps)
    backing = json.loads(
        subprocess.run(["qemu-img", "info", "-U", "--output=json", overlay], capture_output=True, check=True).stdout
    )
    assert backing.get("backing-filename") == disk

    # A restart keeps the shape: the throttle filter on top of the overlay.
    restarted = vms.ensure(dict(params, state="restarted", force=True, stop_timeout=1), False).vm
    wait_ready(restarted["serial_log"])
    graph = block_graph(vms, "limited")
    assert graph[throttle]["file"] == "n-" + throttle[2:], graph
    throttled_write(restarted["console_socket_path"], dev, bps)
