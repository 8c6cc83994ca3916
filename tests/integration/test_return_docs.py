# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each module's RETURN documents every key the module returns, and nothing it never returns
(the comparison is return_docs.py's).

The results are real: the services are called the way each module's main() calls them, on a
real store, with real qemu-img volumes and a network namespace of the test's own (no guest
boots: a stopped VM's result has the same keys as a running one's, vm_result sets them all).
Keys are compared recursively wherever RETURN documents a value's keys (``contains``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import uuid
from typing import Dict

import pytest
from fake_sysfs import FakeKernel, gpu_host
from helpers import vm_list
from return_docs import documented, return_problems, returned

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import wait_until_gone
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.service import Monitor
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.rotation import rotate_key
from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import BackupService, list_points
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.records import firewall_directory
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import PciService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.readiness import NotReady
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

MODULES = (
    "infinivirt_vm",
    "infinivirt_vm_info",
    "infinivirt_disk",
    "infinivirt_snapshot",
    "infinivirt_net",
    "infinivirt_firewall",
    "infinivirt_secret_key",
    "infinivirt_vms",
    "infinivirt_gpu",
    "infinivirt_backup",
    "infinivirt_backup_info",
)


def test_undocumented_keys_are_found():
    """The comparison itself: a key planted anywhere in a result is caught."""
    docs = documented("infinivirt_vm")
    result = {"changed": True, "vm": {"name": "a", "graphics": {"type": "vnc", "planted": 1}}}
    assert returned(result) - docs == {"vm.graphics.planted"}
    result = {"changed": True, "vm": {"name": "a", "planted": 1}, "planted_too": 2}
    assert returned(result) - docs == {"vm.planted", "planted_too"}
    docs = documented("infinivirt_vm_info")
    result = {"vms": [{"name": "a", "snapshots": [{"name": "s", "planted": 1}]}]}
    assert returned(result) - docs == {"vms[].snapshots[].planted"}
    result = {"vms": [{"name": "a", "disks": [{"path": "/a", "planted": 1}]}]}
    assert returned(result) - docs == {"vms[].disks[].planted"}


@pytest.fixture
def netns():
    name = "ivt-ret-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture
def ctx(workdir):
    tmp_path = pathlib.Path(workdir)  # short: UNIX socket paths in its run dir stay under 108 bytes
    images = tmp_path / "images"
    images.mkdir()
    context = HostContext.open(
        "sqlite:///%s/state.db" % tmp_path,
        str(tmp_path / "run"),
        host_id="hv-ret",
        storage_roots=[str(images)],
        nvram_dir=str(tmp_path / "nvram"),
        secret_key_file=str(tmp_path / "key"),
    )
    yield context
    context.close()


def vm_params(**values):
    params = dict(state="present", stop_timeout=5.0, force=False, restart_on_change=False)
    params.update(values)
    return params


def disk_params(**values):
    params = dict(state="present", convert=False, force=False)
    params.update(values)
    return params


def check_the_rest(ctx, netns, tmp_path, results):
    """Results of every module but infinivirt_net, with networks ivret0 and ivret1 in place."""
    images = ctx.storage_roots[0]
    # infinivirt_disk: a new volume (predicted, then made), unchanged, then removed.
    disks = DiskService(ctx.store, ctx.secret_box, ctx.host_id, ctx.storage_roots, lock_timeout=ctx.lock_timeout)
    image = os.path.join(images, "ret.qcow2")
    for check in (True, False, False):
        results["infinivirt_disk"].append(disks.ensure(disk_params(path=image, format="qcow2", size="64M"), check))
    gone = os.path.join(images, "gone.raw")
    disks.ensure(disk_params(path=gone, format="raw", size="1M"), False)
    results["infinivirt_disk"].append(disks.ensure(disk_params(path=gone, state="absent"), False))

    # infinivirt_vm: every state a VM gets to without a guest, with UEFI (nvram), a disk, a NIC
    # and a VNC password.
    vms = VmService(ctx)
    full = vm_params(
        name="ret1",
        vcpus=1,
        memory_mb=64,
        firmware="uefi",
        secure_boot=False,
        console_socket=True,
        usb=[{"vendor_id": "0x046d", "product_id": "0xc52b"}, {"bus": 1, "port": "1.4"}],
        department="dept1",
        disks=[{"path": image}],
        netns=netns,
        nics=[{"network": "ivret0", "ips": ["10.79.1.5"]}],
        graphics={"type": "vnc", "listen": "127.0.0.1", "password": "pw"},
    )
    for params, check in (
        (full, True),
        (full, False),
        (full, False),
    ):
        results["infinivirt_vm"].append(vms.ensure(params, check).result())
    # A wait that fails (wait_for, one look): the failure's result, as the binding returns it.
    waited = vm_params(name="retw", state="running", memory_mb=64, accel="tcg")
    try:
        vms.ensure(dict(waited, wait_for={"serial": "never-printed"}, wait_timeout=0), False)
    except NotReady as exc:
        results["infinivirt_vm"].append(dict(exc.result, failed=True, msg=str(exc)))
    else:
        raise AssertionError("the wait did not fail")
    vms.ensure(dict(waited, state="absent", force=True, stop_timeout=0), False)
    for params, check in (
        (vm_params(name="ret1", state="stopped", memory_mb=96), False),
        (vm_params(name="ret2", state="absent"), False),
    ):
        results["infinivirt_vm"].append(vms.ensure(params, check).result())
    vms.ensure(vm_params(name="ret3"), False)
    results["infinivirt_vm"].append(vms.ensure(vm_params(name="ret3", state="absent"), False).result())
    # A disk made from a template (plan.disk_clones): a full copy, as ret1 writes to the image.
    made = [{"path": os.path.join(images, "ret6.qcow2"), "clone_from": image, "clone_mode": "full", "size": "128M"}]
    for check in (True, False):
        results["infinivirt_vm"].append(vms.ensure(vm_params(name="ret6", memory_mb=64, disks=made), check).result())
    results["infinivirt_vm"].append(vms.ensure(vm_params(name="ret6", state="absent"), False).result())

    # infinivirt_vms: predicted with diffs, done with a failing entry, then exclusive while
    # one unlisted VM is locked (its entry fails) and one is not.
    def open_ctx(lock_timeout=ctx.lock_timeout):
        return HostContext.open(
            "sqlite:///%s/state.db" % tmp_path,
            ctx.run_dir,
            host_id=ctx.host_id,
            lock_timeout=lock_timeout,
            storage_roots=ctx.storage_roots,
            nvram_dir=ctx.nvram_dir,
            secret_key_file=ctx.secret_key_file,
        )

    spec = vm_argument_spec()
    listed = [
        {
            "name": "many1",
            "disks": [
                {"path": image},
                {
                    "path": os.path.join(images, "many1.qcow2"),
                    "clone_from": image,
                    "clone_mode": "full",
                    "size": "128M",
                },
            ],
            "netns": netns,
            "nics": [{"network": "ivret0"}],
            "usb": [{"vendor_id": "0x1234", "product_id": "0x5678"}, {"bus": 2, "port": "3"}],
        },
        {"name": "many2", "memory_mb": 8},
        {"name": "many3"},
    ]
    waiting = [
        {
            "name": "many4",
            "state": "running",
            "accel": "tcg",
            "wait_for": {"serial": "never-printed"},
            "wait_timeout": 0,
        }
    ]
    for entries, check, diff, exclusive in (
        (listed, True, True, None),
        (listed, False, False, None),
        (waiting, False, False, None),  # a wait that fails: the entry's console_tail and vm
    ):
        prepared = prepare(entries, {"memory_mb": 64}, lambda entry, path: validate_options(spec, entry, path))
        batch = VmBatch(ctx, open_ctx, 2)
        results["infinivirt_vms"].append(batch.converge(prepared.entries, check, diff, exclusive, prepared.stop_params))
    assert results["infinivirt_vms"][-1]["vms"][0]["console_tail"] == [], results["infinivirt_vms"][-1]
    vms.ensure(vm_params(name="many4", state="absent", force=True, stop_timeout=0), False)
    with ctx.store.vm_lock("many3", 5):
        prepared = prepare([{"name": "ret1"}], {}, lambda entry, path: validate_options(spec, entry, path))
        batch = VmBatch(ctx, lambda: open_ctx(0.2), 2)
        done = batch.converge(prepared.entries, False, True, "stopped", prepared.stop_params)
    assert [(r["name"], r["failed"]) for r in done["unlisted"]] == [("many1", False), ("many3", True)], done
    results["infinivirt_vms"].append(done)

    # infinivirt_snapshot on the stopped VM's qcow2 disk.
    snaps = SnapshotService(acting_engine(ctx))
    snap = dict(vm="ret1", name="s1", type="internal", memory=False, stop_timeout=5.0, force=False)
    for state in ("present", "present", "reverted", "absent"):
        results["infinivirt_snapshot"].append(snaps.ensure(dict(snap, state=state), False))
    snaps.ensure(dict(snap, name="s2", state="present"), False)

    # infinivirt_backup of the stopped VM (qemu-storage-daemon): predicted, full, incremental,
    # restored, one point deleted; infinivirt_backup_info lists what is left.
    backups = BackupService(acting_engine(ctx))
    bk = dict(vm="ret1", target=str(tmp_path / "backups"), mode="auto", keep=None, point=None)
    for check in (True, False, False):
        results["infinivirt_backup"].append(backups.ensure(dict(bk, state="present"), check))
    restored = dict(bk, state="restored", restore_dir=str(tmp_path / "images" / "restored"), restore_as=None)
    results["infinivirt_backup"].append(backups.ensure(restored, False))
    last = results["infinivirt_backup"][-1]["point"]["id"]
    results["infinivirt_backup"].append(backups.ensure(dict(bk, state="absent", point=last), False))
    results["infinivirt_backup_info"].append({"changed": False, "points": list_points(bk["target"], "ret1")})

    # infinivirt_vm_info: all VMs and one by name (one has a snapshot), and a VM whose QEMU
    # was killed: with its leftovers, then cleaned up by the host monitor (events).
    vms.ensure(vm_params(name="ret4"), False)
    killed = vms.ensure(vm_params(name="ret5", state="running", memory_mb=64, accel="tcg"), False).vm
    os.kill(killed["pid"], signal.SIGKILL)
    assert wait_until_gone(killed["pid"], killed["uuid"], 10)
    # infinivirt_gpu on a fake sysfs tree (tests/fake_sysfs.py): an SR-IOV VF made and
    # assigned (managed), predicted, done, again, then the GPU assigned and released.
    pci = PciService.of(acting_engine(ctx))
    pci.sysfs = FakeKernel(gpu_host(str(tmp_path / "sysroot")))
    gpu = dict(vm="ret4", address=None, functions=None, rom_file=None, rom_dir=str(tmp_path), x_vga=False)
    vf = dict(gpu, managed=True, state="present", sriov={"pf": "0000:03:00.0", "vf": 0, "num_vfs": 1, "vlan": 5})
    for check in (True, False, False):
        results["infinivirt_gpu"].append(pci.ensure(vf, check))
    whole = dict(gpu, address="0000:01:00.0", functions="all", managed=True, sriov=None)
    for state in ("present", "absent", "absent"):
        results["infinivirt_gpu"].append(pci.ensure(dict(whole, state=state), False))
    on_fake_sysfs = dataclasses.replace(ctx, sysfs_root=pci.sysfs.root)
    results["infinivirt_vm_info"] += [info_result(on_fake_sysfs, None, host_devices=True), info_result(ctx, "ret1")]
    Monitor(open_ctx).once()
    results["infinivirt_vm_info"].append(info_result(ctx, "ret5"))

    # infinivirt_firewall: a department's rules and a VM's, then removed.
    firewall = FirewallService(ctx.store, ctx.host_id, firewall_directory(ctx.store), ctx.lock_timeout)
    rules = [
        {
            "name": "ssh",
            "direction": "in",
            "protocol": "tcp",
            "ports": ["22"],
            "cidr": "10.0.0.0/8",
            "action": "accept",
            "comment": "admins",
        }
    ]
    dept = dict(
        scope="department",
        name="dept1",
        state="present",
        rules=rules,
        policy_in="drop",
        policy_out="accept",
        anti_spoofing=None,
    )
    for params, check in (
        (dept, True),
        (dept, False),
        (dict(dept, scope="vm", name="ret1", anti_spoofing=True), False),
        (dict(dept, state="absent"), False),
    ):
        results["infinivirt_firewall"].append(firewall.ensure(params, check))

    # infinivirt_secret_key: predicted (new key file), done, and again (nothing to do).
    new_key = str(tmp_path / "key2")
    for check in (True, False, False):
        results["infinivirt_secret_key"].append(rotate_key(ctx.store, ctx.secret_key_file, new_key, check))

    for vm in info_result(ctx)["vms"]:
        vms.ensure(vm_params(name=vm["name"], state="absent", force=True), False)


def test_every_returned_key_is_documented(ctx, netns, workdir):
    tmp_path = pathlib.Path(workdir)  # where ctx lives (its store, run dir and images)
    results: Dict[str, list] = {m: [] for m in MODULES}

    # infinivirt_net: a bridge and a NAT network in the test's namespace (removed at the end).
    nets = NetworkService(ctx.store, ctx.host_id, netns, run_dir=ctx.run_dir, lock_timeout=ctx.lock_timeout)
    bridge = dict(name="ivret0", state="present", mode="bridge", stp=False, addresses=[], netns=netns)
    nat = dict(
        bridge,
        name="ivret1",
        mode="nat",
        addresses=["10.79.0.1/24"],
        dhcp={"enabled": True, "range_start": "10.79.0.100", "range_end": "10.79.0.150", "lease_time": "1h"},
        dns=True,
    )
    try:
        for params, check in ((bridge, True), (bridge, False), (nat, False), (nat, False)):
            results["infinivirt_net"].append(nets.ensure(params, check))
        check_the_rest(ctx, netns, tmp_path, results)
    finally:
        vms = VmService(ctx)
        for vm in vm_list(vms):  # a failure half-way may leave VMs on the networks
            vms.ensure(vm_params(name=vm["name"], state="absent", force=True, stop_timeout=0), False)
        for params in (bridge, nat):  # stops the NAT network's dnsmasq
            results["infinivirt_net"].append(nets.ensure(dict(params, state="absent"), False))

    problems = []
    for module in MODULES:
        problems += return_problems(module, results[module])
    assert not problems, "\n".join(problems)
