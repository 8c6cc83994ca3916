# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The platform devices' model (issue 25 A): normal forms, refusals naming the option, the
merge with a stored spec, the plan (every one waits for a restart) and the argv."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import devices
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_summary, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, merge_params, validate

NORMAL = [
    ("tpm", {"version": "2.0"}, {"version": "2.0"}),
    ("tpm", {}, None),
    ("tpm", False, None),
    ("tpm", True, {"version": "2.0"}),
    ("rng", True, {"max_bytes": 1024, "period_ms": 1000}),
    ("rng", "yes", {"max_bytes": 1024, "period_ms": 1000}),
    ("rng", {"max_bytes": 64}, {"max_bytes": 64, "period_ms": 1000}),
    ("rng", False, None),
    ("watchdog", {"action": "pause"}, {"model": "i6300esb", "action": "pause"}),
    ("watchdog", True, {"model": "i6300esb", "action": "reset"}),
    ("smbios", {"type1": {"serial": "S 1", "sku": None}}, {"type1": {"serial": "S 1"}}),
    ("smbios", {"type1": {}, "type3": {}}, None),
    ("vsock", True, {"cid": None}),
    ("vsock", {"cid": 42}, {"cid": 42}),
    ("vsock", "off", None),
]


@pytest.mark.parametrize("field,value,normal", NORMAL)
def test_normal_forms(field, value, normal):
    got = devices.NORMALIZERS[field](value)
    assert got == normal
    if got is not None:  # idempotent: a stored value is its own normal form
        assert devices.NORMALIZERS[field](got) == got


BAD = [
    ("tpm", {"version": "1.2"}, "tpm.version", "2.0"),
    ("tpm", {"version": "3"}, "tpm.version", "one of"),
    ("tpm", {"model": "crb"}, "tpm.model", "not an option"),
    ("rng", {"max_bytes": 0}, "rng.max_bytes", ""),
    ("rng", {"period_ms": "soon"}, "rng.period_ms", ""),
    ("rng", "maybe", "rng", "true, false or a dict"),
    ("rng", 5, "rng", "true, false or a dict"),
    ("watchdog", {"action": "explode"}, "watchdog.action", "one of"),
    ("watchdog", {"model": "ib700"}, "watchdog.model", "one of"),
    ("smbios", {"type2": {}}, "smbios.type2", "not an option"),
    ("smbios", {"type1": {"serial": "a\nb"}}, "smbios.type1.serial", "printable"),
    ("smbios", {"type1": {"serial": "é"}}, "smbios.type1.serial", "printable"),
    ("smbios", {"type1": {"serial": 7}}, "smbios.type1.serial", "printable"),
    ("smbios", {"type1": {"product": "x" * 65}}, "smbios.type1.product", "at most 64"),
    ("smbios", {"type3": {"product": "x"}}, "smbios.type3.product", "not an option"),
    ("smbios", {"type1": "serial"}, "smbios.type1", "must be a dict"),
    ("vsock", {"cid": 2}, "vsock.cid", ""),
    ("vsock", {"cid": 1 << 32}, "vsock.cid", ""),
    ("vsock", {"port": 1}, "vsock.port", "not an option"),
]


@pytest.mark.parametrize("field,value,option,words", BAD)
def test_bad_values_are_refused_naming_the_option(field, value, option, words):
    with pytest.raises(SpecError) as caught:
        merge_params({"name": "vm", field: value}, None)
    assert caught.value.field == option
    assert words in str(caught.value)


def test_tpm_12_is_refused_with_a_reason():
    with pytest.raises(SpecError, match="1.2 is not offered.*use 2.0"):
        devices.normalize_tpm({"version": "1.2"})


def test_merge_keeps_unset_devices_and_turns_them_off_on_request():
    spec = validate(merge_params({"name": "vm", "rng": True, "tpm": {"version": "2.0"}, "vsock": {"cid": 7}}, None))
    assert spec.rng == devices.RNG_DEFAULTS and spec.tpm == {"version": "2.0"} and spec.vsock == {"cid": 7}
    again = validate(merge_params({"name": "vm"}, spec))  # nothing asked: all kept
    assert again == spec
    same = validate(merge_params({"name": "vm", "rng": {"max_bytes": 1024}}, spec))  # same values: no change
    assert same == spec
    off = validate(merge_params({"name": "vm", "rng": False, "tpm": {}}, spec))
    assert off.rng is None and off.tpm is None and off.vsock == {"cid": 7}
    assert VmSpec.from_dict(spec.to_dict()) == spec  # the store's round trip


def test_a_spec_not_in_normal_form_is_refused():
    with pytest.raises(SpecError) as caught:
        validate(VmSpec(name="vm", watchdog={"model": "i6300esb"}))
    assert caught.value.field == "watchdog"


@pytest.mark.parametrize(
    "field,value",
    [
        ("tpm", {"version": "2.0"}),
        ("rng", {"max_bytes": 1024, "period_ms": 1000}),
        ("watchdog", {"model": "i6300esb", "action": "reset"}),
        ("smbios", {"type1": {"serial": "S1"}}),
        ("vsock", {"cid": None}),
    ],
)
def test_each_device_waits_for_a_restart_and_the_plan_says_so(field, value):
    base = VmSpec(name="vm", memory_mb=256)
    wanted = dataclasses.replace(base, **{field: value})
    rec = VmRecord(uuid="u-1", name="vm", host="h", status="running", spec=base, running_spec=base, qemu_pid=42)
    plan = plan_vm(rec, Live("running"), Desired("running", wanted), "h")
    assert plan.actions == ["update"] and plan.pending == [field]
    assert field in plan.warnings[0] and "restart" in plan.warnings[0]
    summary = plan_summary(plan)
    assert summary["changes"] == {field: "restart"} and summary["restart_needed"] is True
    restarted = plan_vm(rec, Live("running"), Desired("running", wanted, restart_on_change=True), "h")
    assert restarted.actions == ["update", "stop", "start"] and plan_summary(restarted)["changes"] == {field: "restart"}


def test_argv_of_each_device():
    spec = validate(
        merge_params(
            {
                "name": "vm",
                "machine_type": "pc",
                "tpm": {},
                "watchdog": {"action": "none"},
                "smbios": {"type1": {"manufacturer": "A,,B", "serial": "x=y"}, "type3": {"asset": "a,"}},
                "vsock": {"cid": 9},
            },
            None,
        )
    )
    assert spec.tpm is None  # {} is off
    spec = dataclasses.replace(spec, tpm={"version": "2.0"})
    argv = devices.platform_args(spec, "/run/i/u,1.tpm", 9)
    assert argv[:4] == [
        "-chardev",
        "socket,id=chrtpm,path=/run/i/u,,1.tpm",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
    ]
    assert '"driver":"tpm-tis"' in argv[5]
    assert argv[argv.index("-action") + 1] == "watchdog=none"
    smbios = [argv[i + 1] for i, a in enumerate(argv) if a == "-smbios"]
    # A comma in a value is doubled: no value can add a key of its own.
    assert smbios == ["type=1,manufacturer=A,,,,B,serial=x=y", "type=3,asset=a,,"]
    assert argv[-1] == '{"driver":"vhost-vsock-pci","guest-cid":9,"id":"vsock"}'
    # Without a socket or a CID (not started here) neither device is in argv.
    assert devices.tpm_args(spec, None) == [] and devices.vsock_args(spec, None) == []
    assert devices.platform_args(VmSpec(name="vm")) == []
