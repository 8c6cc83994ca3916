# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A hot-plug or unplug killed at every step (SIGKILL: an AWX job cancel, a dropped SSH
session) is finished by the next run: the VM then has exactly the disks and NICs asked for,
in QEMU, in the guest and in its row, its NICs have their firewall rules, and no key
material is left. One guest boots for all the steps."""

from __future__ import annotations

import os
import subprocess

import pytest
from faults import (
    after_method,
    after_qmp,
    after_unplug_request,
    after_unplugged,
    at_method,
    bridge_netns,
    rig_in_tmp,
    run_killed,
)
from helpers import guest_disks, guest_nics, key_material, links, nft_mentions, wait_for, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records, resources
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

BASE_MAC, HOT_MAC = "52:54:00:fb:00:01", "52:54:00:fb:00:02"
HOT_TAP = "iv525400fb0002"


def after_resources(method):
    return after_method(resources.HostResources, method)


def at_resources(method):
    return at_method(resources.HostResources, method)


PLUG_DISK = {
    "after the key object": after_qmp("object-add"),
    "after the first block node": after_qmp("blockdev-add"),
    "after device_add": after_qmp("device_add"),
}
UNPLUG_DISK = {
    "after device_del was sent": after_unplug_request,
    "after DEVICE_DELETED": after_unplugged,
    "after blockdev-del": after_qmp("blockdev-del"),
    "after the key object went": after_qmp("object-del"),
}
PLUG_NIC = {
    "after the TAP": after_resources("make_taps"),
    "after netdev_add": after_qmp("netdev_add"),
    "after device_add": after_qmp("device_add"),
    "before the firewall": at_resources("sync_firewall"),
}
UNPLUG_NIC = {
    "after device_del was sent": after_unplug_request,
    "after DEVICE_DELETED": after_unplugged,
    "after netdev_del": after_qmp("netdev_del"),
    "before the TAP went": at_resources("drop_tap"),
}


class Rig:
    """One running guest with a NIC in a namespace of its own, a LUKS disk to plug and a
    second NIC to plug, and a policy_in: drop firewall."""

    def __init__(self, guest, tmp):
        self.tmp = tmp
        self.netns = bridge_netns("ivh")
        self.images = os.path.join(tmp, "images")
        os.makedirs(self.images)
        self.db_url, self.run_dir = "sqlite:///%s/hot.db" % tmp, os.path.join(tmp, "run")
        self.key_file = os.path.join(tmp, "secret.key")
        self.service = self.open()
        self.hot_disk = os.path.join(self.images, "hot.raw")
        DiskService(self.service.store, self.service.secret_box, self.service.hostname, [self.images]).ensure(
            {"path": self.hot_disk, "size": "8M", "format": "raw", "encrypt": True}, False
        )
        self.base = {
            "name": "plugged",
            "state": "running",
            "accel": "tcg",
            "vcpus": 1,
            "memory_mb": 256,
            "console_socket": True,
            "kernel": str(guest.kernel),
            "initrd": str(guest.initrd),
            "kernel_cmdline": guest.kernel_cmdline,
            "netns": self.netns,
            "nics": [{"bridge": "vmbr0", "mac": BASE_MAC}],
            "disks": [],  # left out, the stored disks would be kept
        }
        self.service.ensure(dict(self.base, state="present"), False)
        self.service.firewall.ensure({"scope": "vm", "name": "plugged", "policy_in": "drop"}, False)
        self.vm = self.service.ensure(self.base, False).vm
        wait_ready(self.vm["serial_log"])
        self.sock = self.vm["console_socket_path"]

    def open(self):
        return VmService.open(self.db_url, self.run_dir, storage_roots=[self.images], secret_key_file=self.key_file)

    @property
    def with_disk(self):
        return dict(self.base, disks=[{"path": self.hot_disk, "format": "raw", "serial": "HOT01"}])

    @property
    def with_nic(self):
        return dict(self.base, nics=self.base["nics"] + [{"bridge": "vmbr0", "mac": HOT_MAC}])

    def killed(self, params, step):
        """Run ``params`` in a child that SIGKILLs itself at ``step``."""
        run_killed(lambda: self.open().ensure(params, False), step)

    def finish(self, params):
        """The next run completes the change; a rerun then changes nothing."""
        out = self.service.ensure(params, False)
        assert out.vm["pid"] == self.vm["pid"], "the same QEMU: nothing was restarted"
        assert out.vm["pending_restart"] == []
        assert not self.service.ensure(params, False).changed
        return out

    def qemu_devices(self):
        peripherals = self.service.engine.sessions.qmp(self.record(), "qom-list", {"path": "/machine/peripheral"})
        return {p["name"] for p in peripherals}

    def qemu_objects(self):
        return {o["name"] for o in self.service.engine.sessions.qmp(self.record(), "qom-list", {"path": "/objects"})}

    def qemu_nodes(self):
        nodes = self.service.engine.sessions.qmp(self.record(), "query-named-block-nodes", {"flat": True})
        return {n["node-name"]: n["file"] for n in nodes}

    def qemu_fd_sets(self):
        return self.service.engine.sessions.qmp(self.record(), "query-fdsets")

    def record(self):
        return records.load(self.service.store, "plugged")

    def reset(self):
        """Back to the base VM whatever a failed step left; a fresh boot if need be, so one
        failing step does not fail the ones after it."""
        try:
            out = self.service.ensure(self.base, False)
            assert out.vm["pid"] == self.vm["pid"] and not self.service.ensure(self.base, False).changed
            disk_is_in(self, False)
            nic_is_in(self, False)
        except Exception:  # noqa: BLE001 -- any failure: start over
            self.service.ensure({"name": "plugged", "state": "stopped", "force": True, "stop_timeout": 1}, False)
            self.vm = self.service.ensure(self.base, False).vm
            wait_ready(self.vm["serial_log"])
            self.sock = self.vm["console_socket_path"]

    vm_names = ("plugged",)


@pytest.fixture(scope="module")
def shared_rig(guest):
    yield from rig_in_tmp(Rig, guest, "iv,h=")


@pytest.fixture
def rig(shared_rig):
    yield shared_rig
    shared_rig.reset()


def disk_is_in(rig, present):
    devices = {d for d in rig.qemu_devices() if d.startswith("disk-")}
    objects = {o for o in rig.qemu_objects() if o.startswith("sec-")}
    nodes = {n: f for n, f in rig.qemu_nodes().items() if not n.startswith("fw-")}
    spec_disks = [d.path for d in rig.record().running_spec.disks]
    if present:
        assert len(devices) == 1 and len(objects) == 1 and len(nodes) == 2, (devices, objects, nodes)
        # QEMU got the image as descriptors opened inside the roots, never by name.
        files = {file for name, file in nodes.items() if name.startswith("f-")}
        assert files == {"/dev/fdset/%d" % s["fdset-id"] for s in rig.qemu_fd_sets()}
        assert spec_disks == [rig.hot_disk]
        assert wait_for(lambda: "HOT01" in guest_disks(rig.sock)), "the guest sees the disk"
    else:
        assert not devices and not objects and not nodes, (devices, objects, nodes)
        assert rig.qemu_fd_sets() == [], "the descriptor set went with the disk"
        assert spec_disks == []
        assert "HOT01" not in guest_disks(rig.sock)
    assert key_material(rig.run_dir) == [], "no LUKS key on disk or tmpfs"


def nic_is_in(rig, present):
    macs = [n["mac"] for n in guest_nics(rig.sock)[0]]
    running = [n.mac for n in rig.record().running_spec.nics]
    netdevs = {d for d in rig.qemu_devices() if d.startswith("nic")}
    if present:
        assert wait_for(lambda: HOT_MAC in [n["mac"] for n in guest_nics(rig.sock)[0]]), "the guest sees the NIC"
        assert running == [BASE_MAC, HOT_MAC]
        assert links(rig.netns)[HOT_TAP]["master"] == "vmbr0"
        assert nft_mentions(rig.netns, HOT_TAP), "the new NIC has its firewall rules"
        assert len(netdevs) == 2, netdevs
    else:
        assert macs == [BASE_MAC] and running == [BASE_MAC]
        assert HOT_TAP not in links(rig.netns)
        assert not nft_mentions(rig.netns, HOT_TAP), "no rule left for the unplugged NIC"
        assert len(netdevs) == 1, netdevs
    assert nft_mentions(rig.netns, rig.vm["taps"][0]), "the first NIC keeps its rules"


@pytest.mark.parametrize("step", sorted(PLUG_DISK))
def test_a_disk_plug_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.killed(rig.with_disk, PLUG_DISK[step])
    assert rig.finish(rig.with_disk).changed
    disk_is_in(rig, True)
    rig.finish(rig.base)
    disk_is_in(rig, False)


@pytest.mark.parametrize("step", sorted(UNPLUG_DISK))
def test_a_disk_unplug_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.finish(rig.with_disk)
    rig.killed(rig.base, UNPLUG_DISK[step])
    rig.finish(rig.base)
    disk_is_in(rig, False)


@pytest.mark.parametrize("step", sorted(PLUG_NIC))
def test_a_nic_plug_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.killed(rig.with_nic, PLUG_NIC[step])
    assert rig.finish(rig.with_nic).changed
    nic_is_in(rig, True)
    rig.finish(rig.base)
    nic_is_in(rig, False)


@pytest.mark.parametrize("step", sorted(UNPLUG_NIC))
def test_a_nic_unplug_killed_at_any_step_is_finished_by_the_next_run(rig, step):
    rig.finish(rig.with_nic)
    rig.killed(rig.base, UNPLUG_NIC[step])
    rig.finish(rig.base)
    nic_is_in(rig, False)


def test_a_disk_with_an_iothread_plugs_and_unplugs_live(shared_rig):
    rig = shared_rig
    disk = os.path.join(rig.images, "threaded.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "8M"], check=True)
    threaded = dict(rig.base, disks=[{"path": disk, "iothread": True, "serial": "IOT01"}])
    try:
        assert rig.finish(threaded).changed
        assert wait_for(lambda: "IOT01" in guest_disks(rig.sock))
        assert [o for o in rig.qemu_objects() if o.startswith("io-")], "its iothread came with it"
        rig.finish(rig.base)
        assert "IOT01" not in guest_disks(rig.sock)
        assert not [o for o in rig.qemu_objects() if o.startswith("io-")], "and went with it"
    finally:
        rig.reset()
