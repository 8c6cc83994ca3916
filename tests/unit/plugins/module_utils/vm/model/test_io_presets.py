# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 14: I/O threads, disk limits, NIC rate limits and presets (pure parts)."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import LIMIT_MAX, DiskSpec, plan_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec, plan_nic_hotplug
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.presets import hyperv_flags
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    changed_fields,
    diff_view,
    merge_params,
    pending_restart,
    validate,
)

DISK = "/var/lib/infinivirt/images/a.qcow2"
MAC = "52:54:00:00:00:01"


def spec_of(**params):
    params.setdefault("name", "vm")
    return validate(merge_params(params, None))


@pytest.mark.parametrize(
    "params, option",
    [
        ({"iothreads": ["io0", "io0"]}, "iothreads[1]"),
        ({"iothreads": ["0io"]}, "iothreads[0]"),
        ({"iothreads": [""]}, "iothreads[0]"),
        ({"iothreads": ["x%d" % n for n in range(65)]}, "iothreads"),
        ({"disks": [{"path": DISK, "iothread": "io9"}]}, "disks[0].iothread"),
        ({"iothreads": ["io0"], "disks": [{"path": DISK, "bus": "scsi", "iothread": "io0"}]}, "disks[0].iothread"),
        ({"disks": [{"path": DISK, "bus": "sata", "iothread": True}]}, "disks[0].iothread"),
        ({"disks": [{"path": DISK, "bps": 0}]}, "disks[0].bps"),
        ({"disks": [{"path": DISK, "iops": -1}]}, "disks[0].iops"),
        ({"disks": [{"path": DISK, "iops_read": LIMIT_MAX + 1}]}, "disks[0].iops_read"),
        ({"disks": [{"path": DISK, "bps": 10, "bps_write": 5}]}, "disks[0].bps_write"),
        ({"disks": [{"path": DISK, "iops": 10, "iops_read": 5}]}, "disks[0].iops_read"),
        ({"disks": [{"path": DISK, "bps": "fast"}]}, "disks[0].bps"),
        ({"nics": [{"bridge": "br0", "rate_limit_mbit": 0}]}, "nics[0].rate_limit_mbit"),
        ({"nics": [{"bridge": "br0", "rate_limit_mbit": 32001}]}, "nics[0].rate_limit_mbit"),
        ({"preset": "beos"}, "preset"),
        ({"video_model": "voodoo"}, "video_model"),
        ({"rtc_base": "mars"}, "rtc_base"),
        ({"preset": "linux", "disks": [{"path": DISK, "cache": "writeback"}]}, "disks[0].aio"),
    ],
)
def test_bad_input_names_the_option(params, option):
    with pytest.raises(SpecError) as err:
        spec_of(**params)
    assert err.value.field == option


def test_edge_values_are_taken():
    spec = spec_of(
        iothreads=["a" * 32],
        disks=[{"path": DISK, "iothread": "a" * 32, "bps": LIMIT_MAX, "iops": 1}],
        nics=[{"bridge": "br0", "rate_limit_mbit": 32000}, {"bridge": "br1", "rate_limit_mbit": 1}],
    )
    assert spec.disks[0].limits()["bps-total"] == LIMIT_MAX
    assert spec_of(iothreads=[]).iothreads == ()


def test_iothread_accepts_booleans_as_strings():
    assert spec_of(disks=[{"path": DISK, "iothread": "yes"}]).disks[0].iothread is True
    assert spec_of(disks=[{"path": DISK, "iothread": "False"}]).disks[0].iothread is False


def test_preset_fills_only_what_is_unset():
    spec = spec_of(
        preset="windows",
        hpet=True,
        disks=[{"path": DISK, "bus": "virtio"}],
        nics=[{"bridge": "br0", "mac": MAC}, {"bridge": "br1", "model": "virtio-net-pci"}],
    )
    assert (spec.video_model, spec.rtc_base, spec.hpet, spec.hyperv) == ("vga", "localtime", True, True)
    assert (spec.disks[0].bus, spec.disks[0].cache, spec.disks[0].aio) == ("virtio", "none", "native")
    assert [n.model for n in spec.nics] == ["e1000e", "virtio-net-pci"]
    filled = diff_view(spec)["preset_filled"]
    assert filled == {
        "video_model": "vga",
        "rtc_base": "localtime",
        "hyperv": True,
        "disks[0].cache": "none",
        "disks[0].aio": "native",
        "disks[0].iothread": False,
        "nics[0].model": "e1000e",
    }
    assert "defaulted" not in diff_view(spec)


def test_a_preset_change_is_a_spec_change_of_what_it_filled():
    stored = spec_of(preset="legacy", disks=[{"path": DISK}], nics=[{"bridge": "br0", "mac": MAC}], rtc_base="utc")
    assert (stored.video_model, stored.disks[0].bus, stored.nics[0].model) == ("cirrus", "ide", "rtl8139")
    # A later task that names only the preset: the rest comes from the store, resolved again.
    after = validate(merge_params({"name": "vm", "preset": "linux"}, stored))
    assert (after.video_model, after.disks[0].bus, after.nics[0].model) == ("virtio", "virtio", "virtio-net-pci")
    assert after.rtc_base == "utc"  # set by the user, kept
    assert set(changed_fields(stored, after)) == {"preset", "video_model", "hpet", "disks", "nics"}
    assert "preset" not in pending_restart(stored, after)  # only what it fills needs a restart
    # Removing the preset goes back to the defaults; the same task twice changes nothing.
    plain = validate(merge_params({"name": "vm", "preset": ""}, after))
    assert (plain.preset, plain.video_model, plain.disks[0].cache) == (None, "vga", "writeback")
    assert changed_fields(plain, validate(merge_params({"name": "vm", "preset": ""}, plain))) == []


def test_an_old_row_without_bookkeeping_does_not_change():
    old = dataclasses.replace(spec_of(disks=[{"path": DISK}]), defaulted=())
    again = validate(merge_params({"name": "vm", "disks": [{"path": DISK}]}, old))
    assert changed_fields(old, again) == []


def test_hyperv_flags_under_tcg_leave_out_what_needs_kvm():
    flags, dropped = hyperv_flags("tcg")
    assert "hv-relaxed" in flags and "hv-vpindex" not in flags
    assert set(dropped) == {"hv-vpindex", "hv-synic", "hv-stimer"}
    assert hyperv_flags("kvm")[1] == []


def test_limits_change_live_on_a_throttled_disk():
    before = DiskSpec(path=DISK, bps=1000)
    plan = plan_hotplug([before], [dataclasses.replace(before, bps=2000, iops=5)])
    assert plan.live and plan.throttle[0].limits()["bps-total"] == 2000 and not plan.add
    gone = plan_hotplug([before], [before.without_limits()])
    assert gone.live and gone.throttle[0].limits() == dict.fromkeys(gone.throttle[0].limits(), 0)
    first = plan_hotplug([DiskSpec(path=DISK)], [DiskSpec(path=DISK, bps=1)])
    assert not first.live  # no throttle group yet: a restart
    other = plan_hotplug([before], [dataclasses.replace(before, bps=5, cache="none")])
    assert not other.live


def test_nic_rate_changes_live():
    nic = NicSpec(bridge="br0", mac=MAC)
    plan = plan_nic_hotplug([nic], [dataclasses.replace(nic, rate_limit_mbit=100)])
    assert plan.live and plan.rate[0].rate_limit_mbit == 100
    assert not plan_nic_hotplug([nic], [dataclasses.replace(nic, mtu=1400, rate_limit_mbit=5)]).live


def test_plan_applies_limits_and_rates_without_restart():
    running = spec_of(disks=[{"path": DISK, "bps": 100}], nics=[{"bridge": "br0", "mac": MAC}])
    rec = VmRecord(uuid="u", name="vm", host="h", status="running", spec=running, running_spec=running)
    desired = spec_of(disks=[{"path": DISK, "bps": 200}], nics=[{"bridge": "br0", "mac": MAC, "rate_limit_mbit": 9}])
    plan = plan_vm(rec, Live("running", "running"), Desired("running", desired), "h")
    assert plan.actions == ["update", "hotplug_disks", "hotplug_nics"]
    assert plan.pending == [] and not plan.restart
