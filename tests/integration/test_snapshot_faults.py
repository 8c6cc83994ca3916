# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A snapshot create, revert or delete killed at every step (SIGKILL: an AWX job cancel, a
dropped SSH session) on a running VM with a NIC, I/O limits and a LUKS disk (and a plain
one, for the memory state and to cut between disks) is finished or
undone by the next run of the same task: the VM runs (the same QEMU, or one started again
through start_vm), its NIC has its TAP and firewall rules, its disk its limits, and no
overlay file, block node, descriptor set, QEMU job, journal note or half-written row is
left. Internal snapshots run on the VM with the LUKS disk (external ones refuse encrypted
disks); external ones on a VM with a plain limited disk. One boot each for all the steps."""

from __future__ import annotations

import os

import pytest
from faults import (
    after_method,
    after_qmp,
    after_unplug_request,
    at_method,
    at_qmp,
    bridge_netns,
    rig_in_tmp,
    run_killed,
)
from helpers import block_graph, guest_disks, key_material, links, nft_mentions, vm_list, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import QemuImg
from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import launch, records, resources
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

after_job_sent = after_unplug_request  # sends the command, then dies before any event
MACS = {"sealed": "52:54:00:fc:00:01", "layered": "52:54:00:fc:00:02"}
LIMITS = {"sealed": ("iops", "iops-total", 500), "layered": ("bps", "bps-total", 4 * 1024 * 1024)}


class SnapRig:
    """Two running guests in a namespace of their own, each with a NIC (policy_in: drop)
    and one limited disk: ``sealed`` a LUKS qcow2 volume, ``layered`` a plain qcow2 one."""

    def __init__(self, guest, tmp):
        self.netns = bridge_netns("ivs")
        self.images = os.path.join(tmp, "images")
        os.makedirs(self.images)
        self.db_url, self.run_dir = "sqlite:///%s/snap.db" % tmp, os.path.join(tmp, "run")
        self.key_file = os.path.join(tmp, "secret.key")
        self.service = self.open()
        disks = {
            "sealed": os.path.join(self.images, "sealed.qcow2"),
            "layered": os.path.join(self.images, "plain.qcow2"),
        }
        volumes = DiskService(self.service.store, self.service.secret_box, self.service.hostname, [self.images])
        volumes.ensure({"path": disks["sealed"], "size": "16M", "encrypt": True}, False)
        volumes.ensure({"path": disks["layered"], "size": "16M"}, False)
        # QEMU cannot put memory state in an encrypted image: the sealed VM's goes here.
        spare = os.path.join(self.images, "spare.qcow2")
        volumes.ensure({"path": spare, "size": "16M"}, False)
        self.params = {}
        for name, path in disks.items():
            option, _member, value = LIMITS[name]
            self.params[name] = {
                "name": name,
                "state": "running",
                "accel": "tcg",
                "vcpus": 1,
                "memory_mb": 128,
                "console_socket": True,
                "kernel": str(guest.kernel),
                "initrd": str(guest.initrd),
                "kernel_cmdline": guest.kernel_cmdline,
                "netns": self.netns,
                "nics": [{"bridge": "vmbr0", "mac": MACS[name]}],
                "disks": [{"path": path, "serial": name.upper()[:6], option: value}],
            }
            if name == "sealed":
                self.params[name]["disks"].append({"path": spare, "serial": "SPARE"})
            self.service.ensure(dict(self.params[name], state="present"), False)
            self.service.firewall.ensure({"scope": "vm", "name": name, "policy_in": "drop"}, False)
            wait_ready(self.service.ensure(self.params[name], False).vm["serial_log"])

    def open(self):
        return VmService.open(self.db_url, self.run_dir, storage_roots=[self.images], secret_key_file=self.key_file)

    def snapshot(self, params):
        return SnapshotService(self.service.engine).ensure(params, False)

    def killed(self, params, step):
        """Run the snapshot task ``params`` in a child that SIGKILLs itself at ``step``."""
        run_killed(lambda: SnapshotService(self.open().engine).ensure(params, False), step)

    def record(self, name):
        return records.load(self.service.store, name)

    def qmp(self, name, command, arguments=None):
        return self.service.engine.sessions.qmp(self.record(name), command, arguments)

    def names(self, name):
        return [s["name"] for s in SnapshotService(self.service.engine).list(self.record(name)).values()]

    def on_disks(self, name):
        """Internal snapshot names on each disk of ``name`` (a partial set shows here only)."""
        nodes = {n["node-name"]: n for n in self.qmp(name, "query-named-block-nodes", {"flat": True})}
        return [
            sorted(s["name"] for s in nodes["n-" + d.disk_id]["image"].get("snapshots", []))
            for d in self.record(name).spec.disks
        ]

    def overlays(self):
        return sorted(f for f in os.listdir(self.images) if "overlay" in f)

    def reset(self):
        """Both VMs running again whatever a failed step left, so one failing step does not
        fail the ones after it."""
        for name, params in self.params.items():
            before = vm_list(self.service, name)[0]["pid"]
            vm = self.service.ensure(params, False).vm
            if vm["pid"] != before:
                wait_ready(vm["serial_log"])

    vm_names = tuple(MACS)


@pytest.fixture(scope="module")
def shared_rig(guest):
    yield from rig_in_tmp(SnapRig, guest, "iv,s=")


@pytest.fixture
def rig(shared_rig):
    yield shared_rig
    shared_rig.reset()


def intact(rig, name, pid=None):
    """The VM runs (as ``pid``, if given) with its NIC, firewall and limited disk, and
    nothing a cut-off task made is left over."""
    vm = vm_list(rig.service, name)[0]
    assert vm["status"] == "running" and vm["pending_restart"] == [], vm["status"]
    if pid is not None:
        assert vm["pid"] == pid, "the same QEMU: nothing was restarted"
    tap = vm["taps"][0]
    assert links(rig.netns)[tap]["master"] == "vmbr0" and nft_mentions(rig.netns, tap)
    disk = rig.record(name).spec.disks[0]
    _option, member, value = LIMITS[name]
    limits = rig.qmp(name, "qom-get", {"path": "/objects/tg-" + disk.disk_id, "property": "limits"})
    assert limits[member] == value
    graph = block_graph(rig.service, name)
    roots = [children["root"] for parent, children in graph.items() if parent.endswith("/virtio-backend")]
    assert "t-" + disk.disk_id in roots, "the throttle filter is on top: %s" % graph
    nodes = {n["node-name"] for n in rig.qmp(name, "query-named-block-nodes", {"flat": True})}
    used = {graph[parent].get("file") for parent in graph} | {graph[parent].get("backing") for parent in graph}
    assert not [n for n in nodes if n.startswith("x") and n not in used], "no overlay node left over"
    for fdset in rig.qmp(name, "query-fdsets"):
        owners = {fd.get("opaque") for fd in fdset["fds"]}
        assert not [o for o in owners if o.startswith("x") and o not in nodes], "no descriptor set left over"
    assert rig.qmp(name, "query-jobs") == []
    assert [k for k, _ref in rig.service.store.journal_list(vm["uuid"]) if k == resources.RESUME] == []
    assert key_material(rig.run_dir) == []
    return vm


# -- internal snapshots: the VM with the LUKS disk ------------------------------------------

INTERNAL_CREATE = {
    "disk-only, before the transaction": ({}, at_qmp("transaction")),
    "disk-only, after the transaction": ({}, after_qmp("transaction")),
    "with memory, the job sent": ({"memory": True}, after_job_sent),
}
INTERNAL_REVERT = {
    "disk-only, after the stop": ({}, after_method(power, "stop_vm")),
    "disk-only, after the disks went back": ({}, after_method(SnapshotService, "_offline_snapshots")),
    "disk-only, at the start": ({}, at_method(power, "start_vm")),
    "disk-only, QEMU spawned": ({}, after_method(launch, "spawn")),
    "with memory, the job sent": ({"memory": True}, after_job_sent),
}
INTERNAL_DELETE = {
    "after the delete": ({}, after_qmp("blockdev-snapshot-delete-internal-sync")),
}


@pytest.mark.parametrize("step", sorted(INTERNAL_CREATE))
def test_an_internal_snapshot_killed_while_taken_is_finished_by_the_next_run(rig, step):
    extra, kill = INTERNAL_CREATE[step]
    pid = vm_list(rig.service, "sealed")[0]["pid"]
    task = dict({"vm": "sealed", "name": "s1"}, **extra)
    try:
        rig.killed(task, kill)
        rig.snapshot(task)
        assert rig.on_disks("sealed") == [["s1"], ["s1"]]
        assert not rig.snapshot(task)["changed"]
        intact(rig, "sealed", pid)
    finally:
        rig.snapshot({"vm": "sealed", "name": "s1", "state": "absent"})
    assert rig.names("sealed") == []


@pytest.mark.parametrize("step", sorted(INTERNAL_REVERT))
def test_an_internal_revert_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    extra, kill = INTERNAL_REVERT[step]
    task = dict({"vm": "sealed", "name": "r1"}, **extra)
    rig.snapshot(task)
    try:
        before = vm_list(rig.service, "sealed")[0]["pid"]
        rig.killed(dict(task, state="reverted"), kill)
        assert rig.snapshot(dict(task, state="reverted"))["changed"]
        vm = intact(rig, "sealed", before if extra else None)
        if vm["pid"] != before:
            wait_ready(vm["serial_log"])
        assert "SEALED" in guest_disks(vm["console_socket_path"]), "the guest has its LUKS disk"
        assert rig.names("sealed") == ["r1"]
    finally:
        rig.snapshot(dict(task, state="absent"))


@pytest.mark.parametrize("step", sorted(INTERNAL_DELETE))
def test_an_internal_delete_killed_is_finished_by_the_next_run(rig, step):
    extra, kill = INTERNAL_DELETE[step]
    task = dict({"vm": "sealed", "name": "d1"}, **extra)
    rig.snapshot(task)
    pid = vm_list(rig.service, "sealed")[0]["pid"]
    rig.killed(dict(task, state="absent"), kill)
    rig.snapshot(dict(task, state="absent"))
    assert rig.on_disks("sealed") == [[], []], "gone from every disk"
    intact(rig, "sealed", pid)


# -- external snapshots: the VM with the plain disk -----------------------------------------

EXTERNAL_CREATE = {
    "after the overlay was made": after_method(SnapshotService, "_make_overlay"),
    "after add-fd": after_qmp("add-fd"),
    "after the first blockdev-add": after_qmp("blockdev-add"),
    "before the transaction": at_qmp("transaction"),
    "after the transaction": after_qmp("transaction"),
}
EXTERNAL_REVERT = {
    "after the stop": after_method(power, "stop_vm"),
    "after the fresh overlay": after_method(SnapshotService, "_replace_overlay"),
    "at the start": at_method(power, "start_vm"),
    "QEMU spawned": after_method(launch, "spawn"),
}
EXTERNAL_DELETE = {
    "after the stop": after_method(power, "stop_vm"),
    "after the commit": after_method(QemuImg, "commit"),
    "after the overlay went": after_method(SnapshotService, "_unlink_overlay"),
    "at the start": at_method(power, "start_vm"),
}
EXT = {"vm": "layered", "name": "e1", "type": "external"}
OVERLAY = "plain.qcow2.e1.overlay.qcow2"


def drop_external(rig):
    rig.snapshot(dict(EXT, state="absent"))
    assert rig.names("layered") == [] and rig.overlays() == []
    intact(rig, "layered")


@pytest.mark.parametrize("step", sorted(EXTERNAL_CREATE))
def test_an_external_snapshot_killed_while_taken_is_finished_or_undone_by_the_next_run(rig, step):
    pid = vm_list(rig.service, "layered")[0]["pid"]
    try:
        rig.killed(EXT, EXTERNAL_CREATE[step])
        rig.snapshot(EXT)
        assert rig.names("layered") == ["e1"] and rig.overlays() == [OVERLAY]
        assert oct(os.stat(os.path.join(rig.images, OVERLAY)).st_mode & 0o777) == oct(0o600)
        assert not rig.snapshot(EXT)["changed"]
        intact(rig, "layered", pid)
        disk = rig.record("layered").spec.disks[0]
        assert block_graph(rig.service, "layered")["t-" + disk.disk_id]["file"].startswith("x")
    finally:
        drop_external(rig)


@pytest.mark.parametrize("step", sorted(EXTERNAL_REVERT))
def test_an_external_revert_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.snapshot(EXT)
    try:
        rig.killed(dict(EXT, state="reverted"), EXTERNAL_REVERT[step])
        assert rig.snapshot(dict(EXT, state="reverted"))["changed"]
        assert rig.names("layered") == ["e1"] and rig.overlays() == [OVERLAY]
        vm = intact(rig, "layered")
        wait_ready(vm["serial_log"])
        assert "LAYERE" in guest_disks(vm["console_socket_path"])
    finally:
        drop_external(rig)


@pytest.mark.parametrize("step", sorted(EXTERNAL_DELETE))
def test_an_external_delete_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.snapshot(EXT)
    rig.killed(dict(EXT, state="absent"), EXTERNAL_DELETE[step])
    rig.snapshot(dict(EXT, state="absent"))
    assert rig.names("layered") == [] and rig.overlays() == []
    assert rig.service.store.list_layers(rig.record("layered").uuid) == []
    intact(rig, "layered")
