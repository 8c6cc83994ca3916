# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_gpu and USB passthrough (issue 13): against a fake sysfs tree per test (the
machine has no IOMMU, GPU, SR-IOV card or USB device), with a real store and a real QEMU."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from fake_sysfs import FakeKernel, FakeTree, gpu_host
from helpers import vm_list

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu]

GPU, AUDIO, NVME, BRIDGE, PF = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:00:01.0", "0000:03:00.0"


@pytest.fixture
def host(workdir):
    """(service, fake kernel, fake tree, ROM directory)."""
    tree = gpu_host(os.path.join(workdir, "root"))
    roms = os.path.join(workdir, "roms")
    os.makedirs(roms)
    svc = VmService.open(
        "sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"), lock_timeout=30, sysfs_root=tree.root
    )
    kernel = FakeKernel(tree)
    svc.pci.sysfs = kernel
    yield svc, kernel, tree, roms
    for vm in vm_list(svc):
        svc.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, check_mode=False)
    svc.close()


def make_vm(svc, name="gpuvm", **extra):
    params = dict(name=name, state="stopped", memory_mb=64, accel="tcg", stop_timeout=5.0)
    params.update(extra)
    return svc.ensure(params, check_mode=False)


def gpu(vm="gpuvm", **extra):
    params = dict(
        vm=vm,
        address=GPU,
        functions=None,
        rom_file=None,
        rom_dir="/nonexistent-roms",
        x_vga=False,
        managed=False,
        sriov=None,
        state="present",
    )
    params.update(extra)
    return params


def drivers(kernel):
    return {a: kernel.driver(a) for a in kernel.devices()}


def test_gpu_and_audio_in_one_group_become_one_multifunction_device(host):
    svc, kernel, tree, _roms = host
    tree.link_driver(GPU, "vfio-pci")
    tree.link_driver(AUDIO, "vfio-pci")
    make_vm(svc)
    done = svc.pci.ensure(gpu(functions="all", x_vga=True), False)
    assert done["changed"] and done["actions"] == ["claim"]
    assert done["assignment"]["functions"] == [GPU, AUDIO]
    assert done["assignment"]["group_devices"] == []  # the bridge stays with the host
    assert kernel.driver(BRIDGE) == "pcieport"
    assert svc.pci.ensure(gpu(functions="all", x_vga=True), False)["changed"] is False
    # The start path hands both functions to the argv builder as one device on one slot.
    rec = records.load(svc.store, "gpuvm")
    devices = svc.pci.devices_for_start(rec)
    argv = build_argv(rec.spec, LaunchContext("qemu", rec.uuid, "tcg", "max", "/p", "/q", "/s", host_devices=devices))
    vfio = [a for a in argv if '"vfio-pci"' in a]
    assert vfio == [
        '{"addr":"0.0","bus":"rp5","driver":"vfio-pci","host":"0000:01:00.0","id":"hostdev-0000-01-00-0",'
        '"multifunction":true,"x-vga":true}',
        '{"addr":"0.1","bus":"rp5","driver":"vfio-pci","host":"0000:01:00.1","id":"hostdev-0000-01-00-1"}',
    ]
    assert vm_list(svc, "gpuvm")[0]["host_devices"] == [
        {
            "address": GPU,
            "host": svc.hostname,
            "functions": [GPU, AUDIO],
            "group_devices": [],
            "managed": False,
            "rom_file": None,
            "x_vga": True,
            "sriov": None,
        }
    ]


def test_real_qemu_takes_the_argv_up_to_vfio_and_the_error_is_clear(host, workdir):
    """No real device here: QEMU parses every option, then VFIO cannot open the device; the
    start fails with QEMU's words and a hint, and leaves nothing behind."""
    svc, _kernel, tree, roms = host
    tree.link_driver(GPU, "vfio-pci")
    tree.link_driver(AUDIO, "vfio-pci")
    rom = os.path.join(roms, "gpu.rom")
    with open(rom, "wb") as handle:
        handle.write(b"\x55\xaa")
    make_vm(svc)
    svc.pci.ensure(gpu(functions="all", x_vga=True, rom_file=rom, rom_dir=roms), False)
    with pytest.raises(QemuError) as err:
        make_vm(svc, state="running")
    message = str(err.value)
    assert "vfio /sys/bus/pci/devices/0000:01:00.0: no such host device" in message
    assert "bound to vfio-pci" in message and "host role" in message
    assert vm_list(svc, "gpuvm")[0]["status"] == "stopped"
    assert [f for f in os.listdir(os.path.join(workdir, "run")) if f != "probe-cache.json"] == []


def test_a_group_member_on_a_host_driver_is_refused_and_nothing_changes(host):
    svc, kernel, tree, _roms = host
    tree.link_driver(GPU, "vfio-pci")  # the audio function still has snd_hda_intel
    make_vm(svc)
    before = drivers(kernel)
    with pytest.raises(StateError) as err:
        svc.pci.ensure(gpu(), False)
    assert "IOMMU group 1" in str(err.value) and "0000:01:00.1 (snd_hda_intel)" in str(err.value)
    assert "managed: true" in str(err.value)
    assert drivers(kernel) == before and kernel.writes == []
    assert svc.store.list_pci() == []


def test_managed_rebinds_the_group_and_release_restores_the_drivers(host):
    svc, kernel, _tree, _roms = host
    make_vm(svc)
    predicted = svc.pci.ensure(gpu(functions=[0, 1], managed=True), True)
    assert predicted["actions"] == ["claim", "bind_vfio"] and kernel.writes == []
    done = svc.pci.ensure(gpu(functions=[0, 1], managed=True), False)
    assert done["actions"] == ["claim", "bind_vfio"]
    assert done["assignment"]["drivers"] == {GPU: "vfio-pci", AUDIO: "vfio-pci"}
    assert kernel.attr(GPU, "driver_override") == "vfio-pci"
    assert kernel.driver(BRIDGE) == "pcieport"
    claims = {c.address: (c.role, c.original_driver) for c in svc.store.list_pci()}
    assert claims == {GPU: ("device", "nouveau"), AUDIO: ("device", "snd_hda_intel")}
    released = svc.pci.ensure(gpu(functions=[0, 1], managed=True, state="absent"), False)
    assert released["actions"] == ["restore_drivers", "release"]
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nouveau", "snd_hda_intel")
    assert kernel.attr(GPU, "driver_override") == "(null)"
    assert svc.store.list_pci() == []
    assert svc.pci.ensure(gpu(state="absent"), False)["changed"] is False


def test_two_vms_cannot_take_one_device_or_one_group(host):
    svc, kernel, _tree, _roms = host
    make_vm(svc, "vm-a")
    make_vm(svc, "vm-b")
    svc.pci.ensure(gpu(vm="vm-a", managed=True), False)  # the GPU; audio held with the group
    with pytest.raises(StateError, match="PCI device 0000:01:00.0 is assigned to VM vm-a"):
        svc.pci.ensure(gpu(vm="vm-b", managed=True), False)
    with pytest.raises(StateError, match="0000:01:00.0 is assigned to VM vm-a .it shares an IOMMU group"):
        svc.pci.ensure(gpu(vm="vm-b", address=AUDIO, managed=True), False)
    assert {c.vm_name for c in svc.store.list_pci()} == {"vm-a"}
    svc.pci.ensure(gpu(vm="vm-b", address=NVME), False)  # another group is free
    # Removing a VM releases its devices and gives managed ones their drivers back.
    svc.ensure({"name": "vm-a", "state": "absent", "stop_timeout": 5}, check_mode=False)
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nouveau", "snd_hda_intel")
    assert [c.address for c in svc.store.list_pci()] == [NVME]


def _rom_cases(roms, outside):
    os.symlink(os.path.join(outside, "evil.rom"), os.path.join(roms, "link.rom"))
    os.makedirs(os.path.join(roms, "dir.rom"))
    os.mkfifo(os.path.join(roms, "fifo.rom"))
    return {
        "relative": "../roms/x",
        "dotdot": os.path.join(roms, "..", "outside", "evil.rom"),
        "symlink out": os.path.join(roms, "link.rom"),
        "directory": os.path.join(roms, "dir.rom"),
        "missing": os.path.join(roms, "missing.rom"),
        "fifo": os.path.join(roms, "fifo.rom"),
    }


def test_rom_files_outside_the_rom_dir_or_not_regular_are_refused(host, workdir):
    svc, kernel, tree, roms = host
    tree.link_driver(GPU, "vfio-pci")
    tree.link_driver(AUDIO, "vfio-pci")
    outside = os.path.join(workdir, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "evil.rom"), "wb") as handle:
        handle.write(b"x")
    make_vm(svc)
    for case, path in _rom_cases(roms, outside).items():
        with pytest.raises(SpecError) as err:
            svc.pci.ensure(gpu(functions="all", rom_file=path, rom_dir=roms), False)
        assert err.value.field == "rom_file", case
        if case in ("dotdot", "symlink out"):  # names the options at stake (issue 18 item 13)
            assert "outside rom_dir %s" % os.path.realpath(roms) in err.value.reason, case
            assert "storage" not in str(err.value), case
    assert stat.S_ISFIFO(os.stat(os.path.join(roms, "fifo.rom")).st_mode)
    assert svc.store.list_pci() == [] and kernel.writes == []
    good = os.path.join(roms, "good.rom")
    with open(good, "wb") as handle:
        handle.write(b"\x55\xaa")
    os.chmod(good, 0o000)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(SpecError, match="not readable"):
            svc.pci.ensure(gpu(functions="all", rom_file=good, rom_dir=roms), False)
    os.chmod(good, 0o644)
    done = svc.pci.ensure(gpu(functions="all", rom_file=good, rom_dir=roms), False)
    assert done["assignment"]["rom_file"] == good


@pytest.mark.parametrize(
    "setup, params, error, field",
    [
        (dict(iommu=False), {}, "the IOMMU is off on this host", None),
        (dict(vfio=False), {}, "the vfio-pci driver is not loaded", None),
        ({}, {"address": "0000:1:00.0"}, "is not a PCI address", "address"),
        ({}, {"address": "0000:09:00.0"}, "no PCI device 0000:09:00.0", "address"),
        ({}, {"functions": [0, 2]}, "no PCI device 0000:01:00.2", "functions"),
        ({}, {"address": AUDIO, "functions": [1]}, None, None),
    ],
)
def test_host_checks_say_what_is_missing(workdir, setup, params, error, field):
    tree = gpu_host(os.path.join(workdir, "root"), gpu_driver="vfio-pci", audio_driver="vfio-pci", **setup)
    if setup.get("vfio") is False:  # the devices' links stay; the driver is not there
        shutil.rmtree(tree.p("sys/bus/pci/drivers/vfio-pci"))
    svc = VmService.open("sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"))
    try:
        svc.pci.sysfs = FakeKernel(tree)
        make_vm(svc)
        if error is None:
            assert svc.pci.ensure(gpu(**params), False)["assignment"]["functions"] == [AUDIO]
            return
        with pytest.raises((SpecError, StateError)) as err:
            svc.pci.ensure(gpu(**params), False)
        assert error in str(err.value)
        if "IOMMU" in error or "vfio-pci driver" in error:
            assert "host role" in str(err.value)
        assert getattr(err.value, "field", None) == field
    finally:
        svc.close()


def test_sriov_vf_is_made_configured_and_assigned(host):
    svc, kernel, _tree, _roms = host
    make_vm(svc)
    request = {"pf": PF, "vf": 1, "num_vfs": 2, "mac": "52:54:00:aa:bb:01", "vlan": 100}
    predicted = svc.pci.ensure(gpu(address=None, sriov=request, managed=True), True)
    assert predicted["actions"] == ["create_vfs"] and kernel.writes == []
    done = svc.pci.ensure(gpu(address=None, sriov=request, managed=True), False)
    assert done["actions"] == ["create_vfs", "set_vf", "claim", "bind_vfio"]
    assert done["assignment"]["address"] == "0000:03:10.1"
    assert kernel.driver("0000:03:10.1") == "vfio-pci"
    assert kernel.vf_config[("eth-pf", 1)] == {"mac": "52:54:00:aa:bb:01", "vlan": 100}
    again = svc.pci.ensure(gpu(address=None, sriov=request, managed=True), False)
    assert again["changed"] is False
    svc.pci.ensure(gpu(address=None, sriov=request, managed=True, state="absent"), False)
    assert kernel.driver("0000:03:10.1") == "iavf"


def test_vm_info_lists_devices_groups_and_drivers(host):
    svc, _kernel, tree, _roms = host
    tree.link_driver(GPU, "vfio-pci")
    tree.link_driver(AUDIO, "vfio-pci")
    make_vm(svc)
    svc.pci.ensure(gpu(address=NVME), False)
    listed = info_result(svc.ctx, None, host_devices=True)["host_devices"]
    base = dict(sriov_totalvfs=None, sriov_numvfs=None, physfn=None, assigned_to=None)
    assert listed == {
        "iommu_enabled": True,
        "vfio_loaded": True,
        "devices": [
            dict(
                base,
                address=GPU,
                vendor_id="0x10de",
                device_id="0x1b80",
                **{"class": "0x030000"},
                driver="vfio-pci",
                iommu_group="1",
                iommu_group_devices=[BRIDGE, GPU, AUDIO],
            ),
            dict(
                base,
                address=AUDIO,
                vendor_id="0x10de",
                device_id="0x10f0",
                **{"class": "0x040300"},
                driver="vfio-pci",
                iommu_group="1",
                iommu_group_devices=[BRIDGE, GPU, AUDIO],
            ),
            dict(
                base,
                address=NVME,
                vendor_id="0x144d",
                device_id="0xa808",
                **{"class": "0x010802"},
                driver="vfio-pci",
                iommu_group="2",
                iommu_group_devices=[NVME],
                assigned_to="gpuvm",
            ),
            dict(
                base,
                address=PF,
                vendor_id="0x8086",
                device_id="0x1572",
                **{"class": "0x020000"},
                driver="i40e",
                iommu_group="3",
                iommu_group_devices=[PF],
                sriov_totalvfs=8,
                sriov_numvfs=0,
            ),
        ],
    }
    assert "host_devices" not in info_result(svc.ctx, None)


def test_hotplug_onto_a_running_vm_that_qemu_refuses_leaves_nothing(host):
    """A firmware-only VM runs; plugging a device VFIO cannot open fails with QEMU's reason,
    and the task takes back its claim and its rebinding."""
    svc, kernel, _tree, _roms = host
    make_vm(svc, state="running")
    with pytest.raises(Exception) as err:
        svc.pci.ensure(gpu(functions="all", managed=True), False)
    assert "no such host device" in str(err.value)
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nouveau", "snd_hda_intel")
    assert svc.store.list_pci() == []
    rec = records.load(svc.store, "gpuvm")
    assert not any(d.startswith("hostdev-") for d in svc.engine.hotplug().device_ids(rec))


def test_a_vm_with_devices_on_another_host_does_not_start_here(host, workdir):
    svc, _kernel, tree, _roms = host
    tree.link_driver(NVME, "vfio-pci")
    make_vm(svc)
    svc.pci.ensure(gpu(address=NVME), False)
    other = VmService.open("sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"), hostname="elsewhere")
    try:
        with pytest.raises(StateError, match="has host PCI devices assigned on"):
            other.ensure(dict(name="gpuvm", state="running", stop_timeout=5.0), check_mode=False)
    finally:
        other.close()


def test_the_fake_tree_without_iommu_has_no_groups(workdir):
    tree = FakeTree(os.path.join(workdir, "r"), iommu=False)
    tree.device(GPU, group="1", driver="nouveau")
    kernel = FakeKernel(tree)
    assert kernel.iommu_group(GPU) is None and not kernel.iommu_enabled()


# -- USB ----------------------------------------------------------------------------------------
TOKEN = {"vendor_id": "0x046d", "product_id": "0xC52B"}  # not plugged in here: QEMU waits for it
PORT = {"bus": 1, "port": "1.4"}


def test_usb_devices_are_hot_plugged_and_unplugged_on_a_running_vm(service):
    usb = dict(name="usbvm", state="running", memory_mb=64, accel="tcg", stop_timeout=5.0)
    started = service.ensure(dict(usb, usb=[]), check_mode=False)
    assert started.vm["usb"] == []
    rec = records.load(service.store, "usbvm")
    pci = service.engine.sessions.qmp(rec, "query-pci")
    assert any(d.get("qdev_id") == "xhci" and d["class_info"]["class"] == 0x0C03 for d in pci[0]["devices"])

    plugged = service.ensure(dict(usb, usb=[TOKEN, PORT]), check_mode=False)
    assert plugged.actions == ["update", "hotplug_usb"] and plugged.vm["pending_restart"] == []
    assert plugged.vm["usb"] == [
        {"vendor_id": "0x046d", "product_id": "0xc52b", "bus": None, "port": None},
        {"vendor_id": None, "product_id": None, "bus": 1, "port": "1.4"},
    ]
    rec = records.load(service.store, "usbvm")
    token_id, port_id = (u.device_id for u in rec.spec.usb)
    assert {token_id, port_id, "xhci"} <= service.engine.hotplug().device_ids(rec)
    assert service.ensure(dict(usb, usb=[TOKEN, PORT]), check_mode=False).changed is False

    unplugged = service.ensure(dict(usb, usb=[PORT]), check_mode=False)  # waits for DEVICE_DELETED
    assert unplugged.actions == ["update", "hotplug_usb"]
    rec = records.load(service.store, "usbvm")
    plugged = service.engine.hotplug().device_ids(rec)
    assert token_id not in plugged and port_id in plugged
    assert [u.key for u in rec.running_spec.usb] == ["1-1.4"]


def test_the_first_usb_device_of_a_vm_without_a_controller_waits_for_a_restart(service):
    usb = dict(name="usbvm2", state="running", memory_mb=64, accel="tcg", stop_timeout=5.0)
    service.ensure(usb, check_mode=False)
    changed = service.ensure(dict(usb, usb=[TOKEN]), check_mode=False)
    assert "hotplug_usb" not in changed.actions and changed.vm["pending_restart"] == ["usb"]
    restarted = service.ensure(dict(usb, state="restarted", force=True, stop_timeout=1.0), check_mode=False)
    assert restarted.vm["pending_restart"] == []
    rec = records.load(service.store, "usbvm2")
    assert rec.spec.usb[0].device_id in service.engine.hotplug().device_ids(rec)


@pytest.mark.parametrize(
    "entry, field",
    [
        ({"vendor_id": "0x046d"}, "usb[0].product_id"),
        ({"vendor_id": "0x46d", "product_id": "0xc52b"}, "usb[0].vendor_id"),
        ({"vendor_id": "0x046d", "product_id": "0xc52b", "bus": 1}, "usb[0]"),
        ({"bus": 1}, "usb[0].port"),
        ({"bus": 1, "port": "1,4"}, "usb[0].port"),
        ({"bus": 0, "port": "1"}, "usb[0].bus"),
        ({}, "usb[0]"),
    ],
)
def test_usb_entries_are_checked_naming_the_option(service, entry, field):
    with pytest.raises(SpecError) as err:
        service.ensure(dict(name="usbbad", memory_mb=64, usb=[entry]), check_mode=False)
    assert err.value.field == field
    assert vm_list(service, "usbbad") == []


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_pci_function_is_one_vms_on_every_store(db_url):
    """The claim is one transaction on SQLite and PostgreSQL; usb NULL and [] both survive."""
    from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
    from ansible_collections.infinivirt.core.plugins.module_utils.store.hostdevs import PciClaim
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

    store = open_store(db_url)
    try:
        for name, usb in (("a", None), ("b", ())):
            spec = VmSpec(name=name, usb=usb)
            records.insert(store, VmRecord(uuid="u-" + name, name=name, host="h1", status="stopped", spec=spec))
        assert records.load(store, "a").spec.usb is None and records.load(store, "b").spec.usb == ()
        store.claim_pci([PciClaim("h1", GPU, "u-a", GPU), PciClaim("h1", AUDIO, "u-a", GPU, role="group")])
        with pytest.raises(StateError, match="PCI device 0000:01:00.1 on host h1 is assigned to VM a"):
            store.claim_pci([PciClaim("h1", NVME, "u-b", NVME), PciClaim("h1", AUDIO, "u-b", NVME)])
        assert [(c.address, c.vm_name) for c in store.list_pci()] == [(GPU, "a"), (AUDIO, "a")]
        store.claim_pci([PciClaim("h2", GPU, "u-b", GPU)])  # another host's device of that address
        store.delete_vm("u-a")
        assert [(c.host, c.address) for c in store.list_pci()] == [("h2", GPU)]
    finally:
        store.close()
