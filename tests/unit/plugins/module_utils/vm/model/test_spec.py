# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import dataclasses
import json

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import preflight
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    SHUTDOWN_MODES,
    VmSpec,
    changed_fields,
    merge_params,
    shutdown_mode,
    validate,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import UsbSpec


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"kernel")
    return str(path)


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "..",
        "a..b",
        "has space",
        "tab\there",
        "nl\nx",
        "x" * 65,
        "",
        "-lead",
        ".hidden",
        "comma,name",
        "eq=name",
    ],
)
def test_bad_names_are_refused_naming_the_field(name):
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name=name))
    assert err.value.field == "name"
    assert str(err.value).startswith("name: ")


@pytest.mark.parametrize("name", ["a", "web01", "A.b_c-9", "x" * 64])
def test_good_names_pass(name):
    assert validate(VmSpec(name=name)).name == name


@pytest.mark.parametrize(
    "field,value,phrase",
    [
        ("vcpus", 0, "at least 1"),
        ("vcpus", True, "integer"),
        ("memory_mb", 15, "at least 16"),
        ("machine_type", "virt", "must be one of q35, pc"),
        ("accel", "hvf", "must be one of auto, kvm, tcg"),
        ("cpu_model", "host,+vmx", "not a CPU model name"),
        ("cpu_model", "max,kernel=/etc/shadow", "not a CPU model name"),
        ("cpu_flags", ("+vmx,kernel=x",), "+feature"),
        ("cpu_flags", ("vmx",), "+feature"),
        ("on_crash", "reboot", "must be one of destroy, restart, preserve"),
        ("on_poweroff", "destroy", "must be one of stop, restart"),
        ("autostart_delay", -1, "at least 0"),
        ("autostart_delay", 3601, "at most 3600"),
        ("autostart_order", 10**9, "at most"),
        ("autostart_order", "1", "integer"),
    ],
)
def test_bad_values_name_their_field(field, value, phrase):
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="vm", **{field: value}))
    assert err.value.field == field
    assert phrase in str(err.value)


def test_kernel_must_exist(tmp_path):
    spec = validate(VmSpec(name="vm", kernel=str(tmp_path / "nope")))  # a host fact, not a spec's
    with pytest.raises(SpecError) as err:
        preflight(spec)
    assert err.value.field == "kernel" and "does not exist" in str(err.value)


def test_vcpus_beyond_the_host_are_refused_by_the_preflight():
    spec = validate(VmSpec(name="vm", vcpus=100000))
    with pytest.raises(SpecError) as err:
        preflight(spec, max_vcpus=2)
    assert err.value.field == "vcpus" and "at most 2" in str(err.value)
    assert preflight(VmSpec(name="vm", vcpus=2), max_vcpus=2).vcpus == 2


def test_preflight_checks_disks_netns_and_vhost(tmp_path):
    with pytest.raises(SpecError) as err:
        preflight(VmSpec(name="vm", disks=(DiskSpec(path=str(tmp_path / "none.qcow2")),)))
    assert err.value.field == "disks[0].path" and "does not exist" in str(err.value)
    outside = tmp_path / "outside.qcow2"
    outside.write_bytes(b"")
    (tmp_path / "root").mkdir()
    with pytest.raises(SpecError) as err:
        preflight(VmSpec(name="vm", disks=(DiskSpec(path=str(outside)),)), storage_roots=[str(tmp_path / "root")])
    assert err.value.field == "disks[0].path"
    with pytest.raises(SpecError) as err:
        preflight(VmSpec(name="vm", netns="infinivirt-no-such-ns"))
    assert err.value.field == "netns" and "does not exist" in str(err.value)
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_vhost

    spec = VmSpec(name="vm", nics=(NicSpec(bridge="br0", mac="52:54:00:00:00:01", vhost=True),))
    with pytest.raises(SpecError) as err:
        check_vhost(spec, available=False)
    assert err.value.field == "nics[0].vhost"
    assert check_vhost(spec, available=True) is True


def test_kernel_must_be_absolute():
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="vm", kernel="boot/vmlinuz"))
    assert "absolute" in str(err.value)


def test_initrd_and_cmdline_need_a_kernel(kernel):
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="vm", initrd=kernel))
    assert err.value.field == "initrd"
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="vm", kernel_cmdline="console=ttyS0"))
    assert err.value.field == "kernel_cmdline"


def test_cmdline_rejects_newlines(kernel):
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="vm", kernel=kernel, kernel_cmdline="a\n-device x"))
    assert err.value.field == "kernel_cmdline"


def test_cmdline_may_hold_commas_and_equals(kernel):
    # -append passes the line whole, so these are ordinary kernel arguments.
    spec = validate(VmSpec(name="vm", kernel=kernel, kernel_cmdline="a=b,c d=e"))
    assert spec.kernel_cmdline == "a=b,c d=e"


def test_unset_options_keep_stored_values():
    stored = VmSpec(name="vm", vcpus=2, memory_mb=1024, machine_type="pc")
    merged = merge_params({"name": "vm", "vcpus": None, "memory_mb": 2048}, stored)
    assert (merged.vcpus, merged.memory_mb, merged.machine_type) == (2, 2048, "pc")


def test_unset_options_take_defaults_for_a_new_vm():
    merged = merge_params({"name": "vm", "vcpus": None}, None)
    assert dataclasses.replace(merged, defaulted=()) == VmSpec(name="vm")
    assert merged.defaulted == ("hpet", "hyperv", "rtc_base", "video_model")  # unset: resolved again
    assert (merged.vcpus, merged.memory_mb, merged.machine_type, merged.cpu_model) == (1, 512, "q35", "auto")


def test_changed_fields_lists_only_differences():
    a = VmSpec(name="vm", vcpus=1, memory_mb=512)
    b = VmSpec(name="vm", vcpus=2, memory_mb=512, cpu_flags=("+x2apic",))
    assert changed_fields(a, b) == ["vcpus", "cpu_flags"]
    assert changed_fields(a, a) == []


def test_changed_fields_agrees_with_the_stored_form():
    """Field by field, as the stored dicts compare: a list and a tuple of the same items are
    no change, nested disks and a default (defaulted) are compared as to_dict has them."""
    disk = DiskSpec(path="/v/a.qcow2")
    a = VmSpec(name="vm", disks=[disk], tags=("web",), defaulted=("hpet",))
    b = dataclasses.replace(a, disks=(disk,), tags=["web"], defaulted=())
    assert changed_fields(a, b) == []
    assert a.to_dict() == dict(b.to_dict(), defaulted=["hpet"])
    c = dataclasses.replace(a, disks=[dataclasses.replace(disk, readonly=True)], labels={"env": "prod"})
    assert changed_fields(a, c) == ["disks", "labels"]


def test_round_trip_through_dict():
    spec = VmSpec(name="vm", cpu_flags=("+a", "-b"))
    assert VmSpec.from_dict(spec.to_dict()) == spec


def test_to_dict_is_a_plain_copy_of_every_container():
    """Lists and dicts of their own (what the store keeps and results show): the same as a
    deep dataclasses.asdict, and changing them changes no spec."""
    spec = VmSpec(
        name="vm",
        disks=(DiskSpec(path="/v/a.qcow2"),),
        nics=(NicSpec(bridge="br0", mac="52:54:00:00:00:01", ips=("10.0.0.2",)),),
        usb=(UsbSpec(vendor_id="0x046d", product_id="0xc077"),),
        memory_hotplug=(256,),
        cpu_topology={"sockets": 1, "cores": 2},
        numa=({"cpus": "0-1", "memory_mb": 512},),
        cpu_pinning={"0": "2"},
        tags=("web",),
        labels={"env": "prod"},
        defaulted=("hpet",),
    )
    data = spec.to_dict()
    deep = json.loads(json.dumps(dict(dataclasses.asdict(spec), disks=[d.to_dict() for d in spec.disks])))
    assert data == deep  # and no tuple anywhere: JSON has none
    assert VmSpec.from_dict(data).to_dict() == data
    for name in ("cpu_topology", "cpu_pinning", "labels"):
        data[name]["x"] = "y"
    data["numa"][0]["cpus"] = "7"
    data["disks"][0]["path"] = "/elsewhere"
    assert spec.to_dict() == VmSpec.from_dict(spec.to_dict()).to_dict() != data
    assert spec.labels == {"env": "prod"} and spec.numa[0]["cpus"] == "0-1"


@pytest.mark.parametrize("delay", [0, 3600])
def test_monitor_policies_take_their_edge_values(delay):
    spec = validate(VmSpec(name="vm", autostart=True, autostart_delay=delay, autostart_order=-1000000))
    assert spec.autostart_delay == delay


def test_shutdown_mode_defaults_to_acpi_and_names_a_bad_value():
    assert shutdown_mode({}) == "acpi" and shutdown_mode({"shutdown_mode": None}) == "acpi"
    assert shutdown_mode({"shutdown_mode": "agent"}) == "agent"
    for bad in ("AGENT", "poweroff", 1, True):
        with pytest.raises(SpecError) as err:
            shutdown_mode({"shutdown_mode": bad})
        assert err.value.field == "shutdown_mode" and "acpi, agent" in err.value.reason


def test_infinivirt_vm_offers_the_shutdown_modes():
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec

    assert vm_argument_spec()["shutdown_mode"]["choices"] == list(SHUTDOWN_MODES)
