# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The accelerator decision, read from a fake /dev, /sys and /proc tree."""

from __future__ import annotations

import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu import probe as probe_mod
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import (
    Capabilities,
    HostPaths,
    kvm_state,
    resolve_accel,
    resolve_cpu,
)


def fake_host(tmp_path, modules=(), kvm_mode=0o600, with_kvm=True, hypervisor=False):
    dev, sys_, proc = tmp_path / "dev", tmp_path / "sys", tmp_path / "proc"
    for d in (dev, sys_ / "module", proc):
        d.mkdir(parents=True)
    if with_kvm:
        (dev / "kvm").write_text("")
        os.chmod(dev / "kvm", kvm_mode)
    for m in modules:
        (sys_ / "module" / m).mkdir()
    flags = "fpu vme sse2" + (" hypervisor" if hypervisor else "")
    (proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: %s\n" % flags)
    return HostPaths(dev=str(dev), sys=str(sys_), proc=str(proc))


def caps(usable, device_ok=True, nested=False):
    return Capabilities("/usr/bin/qemu", (7, 2, 0), usable, "why", device_ok, nested)


def test_software_nested_kvm_is_not_usable(tmp_path):
    usable, device_ok, reason = kvm_state(fake_host(tmp_path, modules=("kvm", "kvm_pvm")))
    assert (usable, device_ok) == (False, True)
    assert "kvm_intel" in reason


@pytest.mark.parametrize("module", ["kvm_intel", "kvm_amd"])
def test_hardware_kvm_is_usable(tmp_path, module):
    assert kvm_state(fake_host(tmp_path, modules=("kvm", module)))[0] is True


def test_missing_dev_kvm(tmp_path):
    usable, device_ok, reason = kvm_state(fake_host(tmp_path, modules=("kvm_intel",), with_kvm=False))
    assert not usable and not device_ok and "does not exist" in reason


def test_auto_falls_back_to_tcg_with_a_warning():
    accel, warnings = resolve_accel("auto", caps(False))
    assert accel == "tcg" and len(warnings) == 1 and "TCG" in warnings[0]


def test_auto_uses_kvm_when_usable():
    assert resolve_accel("auto", caps(True)) == ("kvm", [])


def test_forced_kvm_without_device_fails():
    with pytest.raises(SpecError) as err:
        resolve_accel("kvm", caps(False, device_ok=False))
    assert err.value.field == "accel"


def test_forced_kvm_on_software_module_is_honoured():
    assert resolve_accel("kvm", caps(False, device_ok=True)) == ("kvm", [])


def test_tcg_is_silent():
    assert resolve_accel("tcg", caps(True)) == ("tcg", [])


def test_host_cpu_under_tcg_maps_to_max_with_warning():
    cpu, warnings = resolve_cpu("host", (), "tcg", caps(False))
    assert cpu == "max" and "max" in warnings[0]


def test_auto_cpu_per_accelerator():
    assert resolve_cpu("auto", (), "tcg", caps(False)) == ("max", [])
    assert resolve_cpu("auto", (), "kvm", caps(True)) == ("host", [])


def test_host_cpu_on_nested_kvm_masks_arch_capabilities(tmp_path):
    assert resolve_cpu("host", ("+vmx",), "kvm", caps(True, nested=True)) == ("host,-arch-capabilities,+vmx", [])
    assert resolve_cpu("host", ("+arch-capabilities",), "kvm", caps(True, nested=True))[0] == "host,+arch-capabilities"


def test_nested_detection_reads_cpuinfo(tmp_path):
    assert probe_mod.is_nested(fake_host(tmp_path / "a", hypervisor=True))
    assert not probe_mod.is_nested(fake_host(tmp_path / "b", hypervisor=False))


def test_missing_binary_is_a_clear_error():
    with pytest.raises(QemuError) as err:
        probe_mod.find_binary("qemu-system-does-not-exist")
    assert "not found" in str(err.value)


def test_version_is_read_once_and_cached(tmp_path):
    fake = tmp_path / "qemu"
    counter = tmp_path / "runs"
    fake.write_text("#!/bin/sh\necho x >> %s\necho 'QEMU emulator version 8.1.3 (Debian)'\n" % counter)
    fake.chmod(0o755)
    cache = str(tmp_path / "cache.json")
    assert probe_mod._read_version(str(fake), cache) == (8, 1, 3)
    assert probe_mod._read_version(str(fake), cache) == (8, 1, 3)
    assert counter.read_text().count("x") == 2  # --version and -cpu help, once


def test_cpu_help_is_parsed_into_models_and_flags():
    text = (
        "Available CPUs:\n"
        "x86 486                   (alias configured by machine type)\n"
        "x86 Broadwell-v1          Intel Core Processor (Broadwell)\n"
        "x86 max                   Enables all features supported by the accelerator\n"
        "\n"
        "Recognized CPUID flags:\n"
        "  3dnow 3dnowext abm\n"
        "  sse4.2 vmx x2apic\n"
    )
    models, flags = probe_mod.parse_cpu_help(text)
    assert models == {"486", "Broadwell-v1", "max"}
    assert flags == {"3dnow", "3dnowext", "abm", "sse4.2", "vmx", "x2apic"}
