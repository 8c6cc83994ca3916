# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Memory and CPU tuning: params into the stored form, validation naming each option, the
planner's live actions, and the host checks against a fake /proc and /sys."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import preflight
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, merge_params, validate
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import format_cpu_list, parse_cpu_list
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import _check_pins_against


def spec(**params):
    return validate(merge_params(dict(params, name="vm"), None))


def refused(field, **params):
    with pytest.raises(SpecError) as err:
        spec(**params)
    assert err.value.field == field, str(err.value)
    return str(err.value)


# -- CPU lists --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,numbers,canonical",
    [
        ("0", [0], "0"),
        ("3,1-2", [1, 2, 3], "1-3"),
        ("0-1, 4", [0, 1, 4], "0-1,4"),
        (5, [5], "5"),
        ("4095", [4095], "4095"),
    ],
)
def test_cpu_lists(text, numbers, canonical):
    assert parse_cpu_list("f", text) == numbers
    assert format_cpu_list(numbers) == canonical


@pytest.mark.parametrize("text", ["", "a", "1-", "2-1", "0,,1", "1;2", "0-4096", "0\n1", None, True, "1,x=y"])
def test_bad_cpu_lists_are_refused(text):
    with pytest.raises(SpecError) as err:
        parse_cpu_list("emulator_cpus", text)
    assert err.value.field == "emulator_cpus"


# -- normalising and validation ----------------------------------------------------------------
def test_params_take_their_canonical_form():
    s = spec(
        vcpus=2,
        cpu_pinning={0: "1,0", "1": 1},
        emulator_cpus="1, 0",
        cpu_topology={"sockets": 2, "cores": 1, "threads": 1},
        numa=[
            {"cpus": "0", "memory_mb": 256, "host_nodes": 0, "policy": None, "distances": {1: 20}},
            {"cpus": 1, "memory_mb": 256},
        ],
        memory_mb=512,
    )
    assert s.cpu_pinning == {"0": "0-1", "1": "1"} and s.emulator_cpus == "0-1"
    assert s.cpu_topology == {"sockets": 2, "dies": 1, "cores": 1, "threads": 1}
    assert s.numa[0] == {"cpus": "0", "memory_mb": 256, "host_nodes": "0", "policy": None, "distances": {"1": 20}}
    assert VmSpec.from_dict(s.to_dict()) == s


def test_off_values_clear_what_is_stored():
    stored = spec(
        memory_balloon=True,
        memory_target_mb=256,
        hugepages="2M",
        vcpus_max=2,
        memory_max_mb=1024,
        cpu_pinning={0: "0"},
        emulator_cpus="0",
        cpu_topology={"sockets": 2, "cores": 1, "threads": 1},
    )
    cleared = merge_params(
        dict(
            name="vm",
            memory_target_mb=0,
            hugepages="none",
            vcpus_max=0,
            memory_max_mb=0,
            cpu_pinning={},
            emulator_cpus="",
            cpu_topology={},
        ),
        stored,
    )
    assert (cleared.memory_target_mb, cleared.hugepages, cleared.vcpus_max, cleared.memory_max_mb) == (None,) * 4
    assert (cleared.cpu_pinning, cleared.emulator_cpus, cleared.cpu_topology) == ({}, None, {})
    # Unset options keep the stored values.
    assert merge_params(dict(name="vm"), stored) == stored


@pytest.mark.parametrize(
    "field,params,words",
    [
        ("vcpus_max", dict(vcpus=2, vcpus_max=1), "at least 2"),
        ("vcpus_max", dict(vcpus_max=2000), "at most"),
        ("cpu_topology", dict(vcpus=2, cpu_topology={"sockets": 1, "cores": 1, "threads": 1}), "must equal vcpus (2)"),
        (
            "cpu_topology",
            dict(vcpus=1, vcpus_max=4, cpu_topology={"sockets": 2, "cores": 1, "threads": 1}),
            "vcpus_max (4)",
        ),
        ("cpu_topology", dict(cpu_topology={"sockets": 1}), "needs cores"),
        ("cpu_topology", dict(cpu_topology={"sockets": 1, "cpus": 1}), "unknown"),
        ("cpu_topology.threads", dict(cpu_topology={"sockets": 1, "cores": 1, "threads": 0}), "at least 1"),
        ("memory_target_mb", dict(memory_target_mb=256), "needs memory_balloon"),
        ("memory_target_mb", dict(memory_balloon=True, memory_target_mb=8), "at least 16"),
        ("memory_target_mb", dict(memory_balloon=True, memory_mb=512, memory_target_mb=513), "at most 512"),
        ("hugepages", dict(hugepages="4M"), "must be one of"),
        ("memory_mb", dict(hugepages="1G", memory_mb=512), "1G hugepages"),
        ("memory_mb", dict(hugepages="2M", memory_mb=257), "2M hugepages"),
        ("memory_slots", dict(memory_slots=4), "needs memory_max_mb"),
        ("memory_slots", dict(memory_max_mb=1024, memory_slots=257), "at most 256"),
        ("memory_hotplug", dict(memory_hotplug=[128]), "needs memory_max_mb"),
        ("memory_hotplug[0]", dict(memory_max_mb=1024, memory_hotplug=[100]), "at least 128"),
        ("memory_hotplug[1]", dict(memory_max_mb=2048, memory_hotplug=[128, 200]), "multiple of 128"),
        (
            "memory_hotplug",
            dict(memory_mb=512, memory_max_mb=768, memory_hotplug=[128, 256]),
            "more than memory_max_mb",
        ),
        ("memory_hotplug", dict(memory_max_mb=4096, memory_slots=1, memory_hotplug=[128, 128]), "memory_slots (1)"),
        ("memory_max_mb", dict(memory_mb=512, memory_max_mb=256), "at least 512"),
        ("numa", dict(vcpus=2, numa=[{"cpus": "0", "memory_mb": 512}]), "vCPUs 1 are in no node"),
        ("numa", dict(numa=[{"cpus": "0", "memory_mb": 256}]), "add up to 256, not memory_mb (512)"),
        (
            "numa[1].cpus",
            dict(vcpus=2, numa=[{"cpus": "0-1", "memory_mb": 256}, {"cpus": "1", "memory_mb": 256}]),
            "in node 0",
        ),
        ("numa[0].cpus", dict(numa=[{"cpus": "0-3", "memory_mb": 512}]), "does not exist"),
        ("numa[0].cpus", dict(numa=[{"cpus": "0,x", "memory_mb": 512}]), "list of numbers"),
        ("numa[0].memory_mb", dict(numa=[{"cpus": "0", "memory_mb": 0}]), "at least 1"),
        ("numa[0].policy", dict(numa=[{"cpus": "0", "memory_mb": 512, "policy": "bind"}]), "needs host_nodes"),
        ("numa[0].policy", dict(numa=[{"cpus": "0", "memory_mb": 512, "host_nodes": "0", "policy": "x"}]), None),
        ("numa[0].distances[0]", dict(numa=[{"cpus": "0", "memory_mb": 512, "distances": {0: 20}}]), "at most 10"),
        (
            "numa[0].distances[1]",
            dict(
                vcpus=2, numa=[{"cpus": "0", "memory_mb": 256, "distances": {1: 300}}, {"cpus": "1", "memory_mb": 256}]
            ),
            "at most 255",
        ),
        (
            "numa",
            dict(
                vcpus=2, numa=[{"cpus": "0", "memory_mb": 256, "distances": {0: 10}}, {"cpus": "1", "memory_mb": 256}]
            ),
            "between nodes 0 and 1 is missing",
        ),
        ("numa[0].distances", dict(numa=[{"cpus": "0", "memory_mb": 512, "distances": {"a": 10}}]), "not a node index"),
        ("cpu_pinning[1]", dict(cpu_pinning={1: "0"}), "does not exist"),
        ("cpu_pinning[x]", dict(cpu_pinning={"x": "0"}), "not a vCPU index"),
        ("cpu_pinning[0]", dict(cpu_pinning={0: ""}), "list of numbers"),
        ("cpu_pinning[0]", dict(cpu_pinning={0: "0,name=x"}), "list of numbers"),
        ("emulator_cpus", dict(emulator_cpus="0-"), None),
        ("iothread_cpus", dict(iothread_cpus="all"), None),
        ("cpu_pinning_exclusive", dict(cpu_pinning_exclusive=True), "needs cpu_pinning"),
    ],
)
def test_bad_values_name_their_option(field, params, words):
    message = refused(field, **params)
    if words:
        assert words in message


@pytest.mark.parametrize(
    "flag", ["hv-spinlocks=0x1fff", "+vmx", "-arch-capabilities", "hv-vendor-id=KVMKVMKVM", "level=0xd", "x=on"]
)
def test_cpu_flags_take_plain_values(flag):
    assert spec(cpu_flags=[flag]).cpu_flags == (flag,)


@pytest.mark.parametrize(
    "flag",
    [
        "hv-spinlocks=1,x=y",
        "a=b=c",
        "hv-spinlocks=",
        "=1",
        "vmx",
        "+vmx,x",
        "a= 1",
        "a=\n",
        "hv=-1",
        "A=1",
        "a=,",
        "+-x",
    ],
)
def test_cpu_flags_that_could_add_an_option_are_refused(flag):
    refused("cpu_flags", cpu_flags=[flag])


def test_edge_values_that_are_fine():
    assert spec(vcpus=1, vcpus_max=1).vcpus_max == 1
    assert spec(memory_balloon=True, memory_target_mb=512).memory_target_mb == 512  # no ballooning
    assert spec(memory_balloon=True, memory_target_mb=16).memory_target_mb == 16
    assert spec(memory_max_mb=512).memory_max_mb == 512  # room for nothing yet
    assert spec(memory_max_mb=1024, memory_slots=256).memory_slots == 256
    assert spec(memory_max_mb=1024, memory_slots=0).memory_slots is None  # 0: the default (8)
    assert spec(hugepages="1G", memory_mb=1024).hugepages == "1G"
    assert spec(numa=[], cpu_pinning={}, cpu_topology={}).numa == ()
    full = spec(
        vcpus=1,
        vcpus_max=1024,
        cpu_topology={"sockets": 4, "dies": 2, "cores": 8, "threads": 16},
        memory_mb=1024,
        memory_balloon=True,
        memory_target_mb=1024 + 256,
        memory_max_mb=2048,
        memory_hotplug=[128, 128],
        numa=[{"cpus": "0-1023", "memory_mb": 1024}],
        cpu_pinning={1023: "4095"},
    )
    assert full.vcpus_max == 1024


def test_tuning_goes_with_a_nic_a_disk_vnc_and_uefi():
    s = spec(
        memory_mb=512,
        hugepages="2M",
        memory_balloon=True,
        cpu_pinning={0: "0"},
        firmware="uefi",
        graphics={"type": "vnc"},
        disks=[{"path": "/images/luks.qcow2"}],
        nics=[{"bridge": "br0"}],
    )
    argv = build_argv(s, LaunchContext("qemu", "u", "tcg", "max", "/p", "/q", "/s", hugepage_path="/dev/hugepages"))
    assert "type=q35,pflash0=fw-code,pflash1=fw-vars,memory-backend=mem-ram" in argv
    with pytest.raises(SpecError) as err:  # no mount found: QEMU never sees a null path
        build_argv(s, LaunchContext("qemu", "u", "tcg", "max", "/p", "/q", "/s"))
    assert err.value.field == "hugepages"


# -- the planner --------------------------------------------------------------------------------
BASE = spec(vcpus=1, vcpus_max=2, memory_mb=256, memory_max_mb=1024, memory_balloon=True, cpu_pinning={0: "0"})


def live_plan(wanted, state="running", running=BASE, asked="running", **desired):
    rec = VmRecord(uuid="u", name="vm", host="h", status=state, spec=running, running_spec=running, qemu_pid=4)
    return plan_vm(rec, Live(state), Desired(asked, wanted, **desired), "h")


@pytest.mark.parametrize(
    "change,actions",
    [
        (dict(memory_target_mb=192), ["update", "set_balloon"]),
        (dict(cpu_pinning={"0": "1"}), ["update", "pin_cpus"]),
        (dict(emulator_cpus="1"), ["update", "pin_cpus"]),
        (dict(iothread_cpus="1"), ["update", "pin_cpus"]),
        (dict(cpu_pinning_exclusive=True), ["update"]),
        (dict(vcpus=2), ["update", "hotplug_cpus"]),
        (dict(memory_hotplug=(128,)), ["update", "hotplug_memory"]),
        (
            dict(vcpus=2, memory_hotplug=(128,), cpu_pinning={"0": "1"}),
            ["update", "hotplug_cpus", "hotplug_memory", "pin_cpus"],
        ),
    ],
)
def test_live_tuning_needs_no_restart(change, actions):
    result = live_plan(dataclasses.replace(BASE, **change))
    assert result.actions == actions and result.pending == [] and not result.restart


@pytest.mark.parametrize(
    "change,pending",
    [
        (dict(vcpus=1, vcpus_max=None), ["vcpus_max"]),
        (dict(memory_balloon=False), ["memory_balloon"]),
        (dict(hugepages="2M"), ["hugepages"]),
        (dict(vcpus_max=2, cpu_topology={"sockets": 2, "dies": 1, "cores": 1, "threads": 1}), ["cpu_topology"]),
        (dict(vcpus=2, memory_mb=512), ["memory_mb"]),  # the vCPU is plugged, memory waits
    ],
)
def test_what_cannot_change_live_waits_for_a_restart(change, pending):
    result = live_plan(dataclasses.replace(BASE, **change))
    assert result.pending == pending and result.warnings


def test_fewer_vcpus_and_removed_dimms_wait_for_a_restart():
    running = dataclasses.replace(BASE, vcpus=2, memory_hotplug=(128, 256))
    assert live_plan(dataclasses.replace(running, vcpus=1), running=running).pending == ["vcpus"]
    assert live_plan(dataclasses.replace(running, memory_hotplug=(128,)), running=running).pending == ["memory_hotplug"]
    assert live_plan(dataclasses.replace(running, memory_hotplug=(256, 256)), running=running).pending == [
        "memory_hotplug"
    ]


def test_a_paused_or_stopping_vm_gets_no_live_tuning():
    wanted = dataclasses.replace(BASE, vcpus=2, cpu_pinning={"0": "1"})
    assert live_plan(wanted, state="paused", asked="paused").actions == ["update", "pin_cpus"]
    assert live_plan(wanted, asked="stopped").actions == ["update", "stop"]
    assert live_plan(wanted, asked="restarted").actions == ["update", "stop", "start"]


# -- exclusive pins -------------------------------------------------------------------------------
def vm(name, host="h", **params):
    return VmRecord(uuid=name, name=name, host=host, status="stopped", spec=spec(**params))


def test_exclusive_pins_are_a_hosts_own():
    holder = vm("holder", vcpus=2, cpu_pinning={0: "2", 1: "3"}, cpu_pinning_exclusive=True)
    with pytest.raises(SpecError) as err:
        _check_pins_against(spec(cpu_pinning={0: "3-4"}), [holder], "h")
    assert err.value.field == "cpu_pinning" and "3" in str(err.value) and "holder" in str(err.value)
    with pytest.raises(SpecError):  # the emulator's pins count too
        _check_pins_against(spec(cpu_pinning={0: "5"}, emulator_cpus="2"), [holder], "h")
    with pytest.raises(SpecError):  # an exclusive newcomer cannot take CPUs others pin
        _check_pins_against(
            spec(cpu_pinning={0: "5"}, cpu_pinning_exclusive=True), [vm("o", cpu_pinning={0: "5"})], "h"
        )
    _check_pins_against(spec(cpu_pinning={0: "4"}), [holder], "h")  # no overlap
    _check_pins_against(
        spec(cpu_pinning={0: "2"}), [vm("x", host="other", cpu_pinning={0: "2"}, cpu_pinning_exclusive=True)], "h"
    )
    _check_pins_against(spec(cpu_pinning={0: "5"}), [vm("o", cpu_pinning={0: "5"})], "h")  # neither exclusive


# -- host checks (fake /proc and /sys) ---------------------------------------------------------
def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


@pytest.fixture
def host(tmp_path):
    proc, sys_root = str(tmp_path / "proc"), str(tmp_path / "sys")
    write(proc + "/meminfo", "MemTotal: 1000 kB\nHugepagesize:    2048 kB\n")
    write(
        proc + "/mounts",
        "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n"
        "none /mnt/huge\\0401g hugetlbfs rw,pagesize=1024M 0 0\n",
    )
    write(sys_root + "/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "100\n")
    write(sys_root + "/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "0\n")
    write(sys_root + "/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages", "60\n")
    write(sys_root + "/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages", "40\n")
    write(sys_root + "/devices/system/node/online", "0-1\n")
    write(sys_root + "/devices/system/cpu/online", "0-3\n")
    return proc, sys_root


def test_the_hugetlbfs_mount_of_each_size_is_found(host, tmp_path):
    proc, _sys = host
    assert preflight.hugetlbfs_mounts(proc) == {"2M": "/dev/hugepages", "1G": "/mnt/huge 1g"}
    assert preflight.hugepage_path(spec(memory_mb=1024, hugepages="1G"), proc) == "/mnt/huge 1g"
    write(proc + "/mounts", "proc /proc proc rw 0 0\n")
    with pytest.raises(SpecError) as err:
        preflight.hugepage_path(spec(hugepages="2M"), proc)
    assert err.value.field == "hugepages" and "no hugetlbfs mount" in str(err.value)


def test_hugepages_are_admitted_only_when_free(host):
    _proc, sys_root = host
    preflight.check_hugepages(spec(memory_mb=200, hugepages="2M"), sys_root)  # 100 pages: just enough
    with pytest.raises(SpecError) as err:
        preflight.check_hugepages(spec(memory_mb=256, hugepages="2M"), sys_root)
    assert err.value.field == "hugepages" and "needs 128" in str(err.value) and "28 missing" in str(err.value)
    with pytest.raises(SpecError) as err:  # the DIMMs count
        preflight.check_hugepages(
            spec(memory_mb=128, hugepages="2M", memory_max_mb=1024, memory_hotplug=[128]), sys_root
        )
    assert "28 missing" in str(err.value)
    with pytest.raises(SpecError) as err:
        preflight.check_hugepages(spec(memory_mb=1024, hugepages="1G"), sys_root)
    assert "1 missing" in str(err.value)
    bound = spec(
        vcpus=2,
        memory_mb=160,
        hugepages="2M",
        numa=[{"cpus": "0", "memory_mb": 40, "host_nodes": "0"}, {"cpus": "1", "memory_mb": 120, "host_nodes": "1"}],
    )
    with pytest.raises(SpecError) as err:  # node 1 has 40 free pages, the guest node needs 60
        preflight.check_hugepages(bound, sys_root)
    assert err.value.field == "numa[1].host_nodes" and "20 missing" in str(err.value)
    preflight.check_hugepages(
        dataclasses.replace(bound, numa=(bound.numa[0], dict(bound.numa[1], policy="preferred"))), sys_root
    )


def test_pins_and_host_nodes_must_exist(host):
    _proc, sys_root = host
    preflight.check_pinning(spec(cpu_pinning={0: "3"}, emulator_cpus="0-3"), sys_root)
    for params, field in (
        (dict(cpu_pinning={0: "4"}), "cpu_pinning[0]"),
        (dict(emulator_cpus="2-5"), "emulator_cpus"),
        (dict(iothread_cpus="9"), "iothread_cpus"),
    ):
        with pytest.raises(SpecError) as err:
            preflight.check_pinning(spec(**params), sys_root)
        assert err.value.field == field and "not online" in str(err.value)
    with pytest.raises(SpecError) as err:
        preflight.check_host_numa(spec(numa=[{"cpus": "0", "memory_mb": 512, "host_nodes": "0-2"}]), sys_root)
    assert err.value.field == "numa[0].host_nodes" and "2" in str(err.value)


def test_vcpus_max_is_held_to_the_host(host):
    with pytest.raises(SpecError) as err:
        preflight.preflight(spec(vcpus=1, vcpus_max=4), max_vcpus=2, sys_root=host[1])
    assert err.value.field == "vcpus_max"
