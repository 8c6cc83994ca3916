# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_gpu's assignment plan through a table, without sysfs or QEMU: rows of
(situation, desired) -> expected plan or refusal."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import HeldPci, needs_vfio, plan_assign

VM = ("gpu-vm", "u-1")
GPU, AUDIO, NIC, OTHER = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:03:00.0"
BOTH = [GPU, AUDIO]
VFIO = {GPU: "vfio-pci", AUDIO: "vfio-pci", NIC: None}
HOST_DRIVERS = {GPU: "nouveau", AUDIO: "snd_hda_intel", NIC: "e1000e"}
PLAIN = (None, False, False)  # rom_file, x_vga, managed
MANAGED = (None, False, True)
ROM = ("/var/lib/infinivirt/roms/gpu.rom", True, False)


def held(address, uuid="u-1", primary=GPU, passed=True, settings=PLAIN, name="gpu-vm"):
    rom_file, x_vga, managed = settings
    return HeldPci(address, uuid, name, primary, passed, rom_file, x_vga, managed)


MINE = [held(GPU), held(AUDIO), held(NIC, passed=False)]

# (id, situation: (chosen, members, drivers, held, status), settings,
#  expected: (claim, update, rebind, plug, actions, warnings))
ROWS = [
    ("no-op", (BOTH, BOTH + [NIC], VFIO, MINE, "stopped"), PLAIN, ([], False, [], False, [], 0)),
    ("no-op running", (BOTH, BOTH + [NIC], VFIO, MINE, "running"), PLAIN, ([], False, [], True, [], 0)),
    ("claim stopped", (BOTH, BOTH, VFIO, [], "stopped"), PLAIN, (BOTH, False, [], False, ["claim"], 0)),
    ("claim running", (BOTH, BOTH, VFIO, [], "running"), PLAIN, (BOTH, False, [], True, ["claim"], 0)),
    ("claim paused", (BOTH, BOTH, VFIO, [], "paused"), PLAIN, (BOTH, False, [], True, ["claim"], 0)),
    ("claim and rebind", (BOTH, BOTH + [NIC], HOST_DRIVERS, [], "stopped"), MANAGED,
     (BOTH + [NIC], False, BOTH + [NIC], False, ["claim", "bind_vfio"], 0)),
    ("rebind only what needs it", (BOTH, BOTH + [NIC], {GPU: "vfio-pci", AUDIO: "snd_hda_intel", NIC: "pci-stub"},
     [], "stopped"), MANAGED, (BOTH + [NIC], False, [AUDIO], False, ["claim", "bind_vfio"], 0)),
    ("group member gets claimed", (BOTH, BOTH + [NIC], VFIO, MINE[:2], "stopped"), PLAIN,
     ([NIC], False, [], False, ["claim"], 0)),
    ("new settings stopped", (BOTH, BOTH, VFIO, MINE[:2], "stopped"), ROM, ([], True, [], False, ["update"], 0)),
    ("new settings running", (BOTH, BOTH, VFIO, MINE[:2], "running"), ROM, ([], True, [], True, ["update"], 1)),
    ("managed now, drivers right", (BOTH, BOTH, VFIO, MINE[:2], "stopped"), MANAGED,
     ([], True, [], False, ["update"], 0)),
    ("another VM's other device", ([GPU], [GPU], VFIO, [held(OTHER, "u-2", OTHER)], "stopped"), PLAIN,
     ([GPU], False, [], False, ["claim"], 0)),
]  # fmt: skip

# (id, situation, error type, field, words of the message)
REFUSALS = [
    ("held by another VM", (BOTH, BOTH, VFIO, [held(GPU, "u-2", name="db")], "stopped"), StateError, None,
     "PCI device 0000:01:00.0 is assigned to VM db; release it"),
    ("group held by another VM", (BOTH, BOTH + [NIC], VFIO, [held(NIC, "u-2", NIC, name=None)], "stopped"),
     StateError, None, "assigned to VM u-2 (it shares an IOMMU group)"),
    ("functions changed", ([GPU], [GPU, AUDIO], VFIO, MINE[:2], "stopped"), SpecError, "functions",
     "with functions 0000:01:00.0, 0000:01:00.1; release it"),
    ("part of another assignment", ([AUDIO], [AUDIO], VFIO, [held(AUDIO)], "stopped"), SpecError, "address",
     "0000:01:00.1 is already part of assignment 0000:01:00.0"),
]  # fmt: skip


def address_of(chosen):
    return chosen[0]


@pytest.mark.parametrize("situation, settings, expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_plan_assign(situation, settings, expected):
    chosen, members, drivers, rows, status = situation
    plan = plan_assign(VM, address_of(chosen), chosen, members, drivers, rows, settings, status, here=True)
    claim, update, rebind, plug, actions, warnings = expected
    assert (plan.claim, plan.update, plan.rebind, plan.plug, plan.actions) == (claim, update, rebind, plug, actions)
    assert len(plan.warnings) == warnings
    assert (plan.dev.address, plan.dev.functions) == (chosen[0], tuple(chosen))
    assert (plan.dev.rom_file, plan.dev.x_vga, plan.managed) == settings


@pytest.mark.parametrize("situation, error, field, words", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_plan_assign_refusals(situation, error, field, words):
    chosen, members, drivers, rows, status = situation
    with pytest.raises(error) as caught:
        plan_assign(VM, address_of(chosen), chosen, members, drivers, rows, PLAIN, status, here=True)
    assert words in str(caught.value)
    if field is not None:
        assert caught.value.field == field


def test_a_vm_of_another_host_is_not_plugged():
    plan = plan_assign(VM, GPU, BOTH, BOTH, VFIO, [], PLAIN, "running", here=False)
    assert (plan.actions, plan.plug) == (["claim"], False)


@pytest.mark.parametrize(
    "driver, passed, expected",
    [
        ("vfio-pci", True, False),
        (None, True, True),
        ("nouveau", True, True),
        ("pci-stub", True, True),
        ("vfio-pci", False, False),
        ("pci-stub", False, False),
        (None, False, False),
        ("e1000e", False, True),
    ],
)
def test_needs_vfio(driver, passed, expected):
    assert needs_vfio(driver, passed) is expected
