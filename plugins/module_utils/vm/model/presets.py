# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Presets: defaults for a kind of guest (``preset: linux|windows|legacy``).

A preset fills the options a task leaves unset: disk bus/cache/aio/iothread, NIC model,
video model, RTC base, HPET and the Hyper-V enlightenments. An option the task sets always
wins. The store keeps the preset's name, the effective values and which options were left
unset (``VmSpec.defaulted``), so the next task resolves them again: a preset change (or
a preset removed) is a spec change of exactly the options it governs.

Pure: works on the dicts ``vm.model.spec.merge_params`` builds.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

PRESETS = ("linux", "windows", "legacy")

# VM-level fields a preset governs, with the built-in default (no preset).
VM_DEFAULTS: Dict[str, Any] = {"video_model": "vga", "rtc_base": "utc", "hpet": True, "hyperv": False}
DISK_DEFAULTS: Dict[str, Any] = {"bus": "virtio", "cache": "writeback", "aio": "threads", "iothread": False}
NIC_DEFAULTS: Dict[str, Any] = {"model": "virtio-net-pci"}

_VALUES: Dict[str, Dict[str, Dict[str, Any]]] = {
    # Paravirtual everything: virtio disks on O_DIRECT with native AIO and a thread of their
    # own, virtio NICs (vhost-net and one queue pair per vCPU stay automatic), virtio-vga.
    "linux": {
        "vm": {"video_model": "virtio", "rtc_base": "utc", "hpet": True, "hyperv": False},
        "disk": {"bus": "virtio", "cache": "none", "aio": "native", "iothread": True},
        "nic": {"model": "virtio-net-pci"},
    },
    # What a stock Windows installer drives without extra drivers (AHCI, e1000e, std VGA),
    # the clock in local time, no HPET, and the Hyper-V enlightenments.
    "windows": {
        "vm": {"video_model": "vga", "rtc_base": "localtime", "hpet": False, "hyperv": True},
        "disk": {"bus": "sata", "cache": "none", "aio": "native", "iothread": False},
        "nic": {"model": "e1000e"},
    },
    # Old guests (DOS, Windows XP, old Linux): IDE, rtl8139, Cirrus VGA, local time.
    "legacy": {
        "vm": {"video_model": "cirrus", "rtc_base": "localtime", "hpet": False, "hyperv": False},
        "disk": {"bus": "ide", "cache": "writeback", "aio": "threads", "iothread": False},
        "nic": {"model": "rtl8139"},
    },
}

# Hyper-V enlightenments (cpu flags) and those that need KVM: QEMU 7.2 refuses hv-vpindex
# under TCG ("kernel doesn't allow setting HyperV VP_INDEX"), and hv-synic and hv-stimer
# build on it, so under TCG they are left out (with a warning).
HYPERV_FLAGS = (
    "hv-relaxed",
    "hv-vapic",
    "hv-spinlocks=0x1fff",
    "hv-vpindex",
    "hv-runtime",
    "hv-time",
    "hv-synic",
    "hv-stimer",
    "hv-frequencies",
)
HYPERV_KVM_ONLY = ("hv-vpindex", "hv-synic", "hv-stimer")


def hyperv_flags(accel: str) -> Tuple[List[str], List[str]]:
    """(flags for -cpu, flags left out) under ``accel`` (kvm or tcg)."""
    if accel == "kvm":
        return list(HYPERV_FLAGS), []
    return [f for f in HYPERV_FLAGS if f not in HYPERV_KVM_ONLY], list(HYPERV_KVM_ONLY)


def preset_value(preset: Optional[str], kind: str, option: str) -> Any:
    """The value ``preset`` gives ``option`` of ``kind`` (vm, disk, nic), or None."""
    if preset is None:
        return None
    return _VALUES[preset][kind].get(option)


def _default(kind: str, option: str) -> Any:
    return {"vm": VM_DEFAULTS, "disk": DISK_DEFAULTS, "nic": NIC_DEFAULTS}[kind][option]


def disk_key(path: str, option: str) -> str:
    return "disk:%s:%s" % (path, option)


def nic_key(mac: str, option: str) -> str:
    return "nic:%s:%s" % (mac, option)


def forget_defaulted(base: MutableMapping[str, Any], defaulted: Sequence[str]) -> None:
    """Unset (None) what the stored spec got from a preset or a default, so it is resolved
    again (a task that leaves it unset follows the current preset)."""
    disks = {d["path"]: d for d in base.get("disks") or () if isinstance(d, dict)}
    nics = {n.get("mac"): n for n in base.get("nics") or () if isinstance(n, dict)}
    for key in defaulted:
        parts = key.split(":")
        if len(parts) == 1 and key in VM_DEFAULTS:
            base[key] = None
        elif parts[0] == "disk" and ":".join(parts[1:-1]) in disks:
            disks[":".join(parts[1:-1])][parts[-1]] = None
        elif parts[0] == "nic" and ":".join(parts[1:-1]) in nics:
            nics[":".join(parts[1:-1])][parts[-1]] = None


def fill(kind: str, values: MutableMapping[str, Any], preset: Optional[str], key_of) -> List[str]:
    """Fill the unset (None or missing) options of one object from the preset, else the
    built-in default; return the keys of what was filled."""
    filled = []
    defaults = {"vm": VM_DEFAULTS, "disk": DISK_DEFAULTS, "nic": NIC_DEFAULTS}[kind]
    for option in defaults:
        if values.get(option) is None:
            value = preset_value(preset, kind, option)
            values[option] = _default(kind, option) if value is None else value
            filled.append(key_of(option))
    return filled


def fill_vm(base: MutableMapping[str, Any], preset: Optional[str]) -> List[str]:
    """Fill the VM-level options and every disk's; NICs are filled by ``fill_nics``."""
    filled = fill("vm", base, preset, _vm_key)
    for disk in base.get("disks") or ():
        filled += fill("disk", disk, preset, _disk_key_of(disk["path"]))
    return filled


def _vm_key(option: str) -> str:
    return option


def _disk_key_of(path: str):
    def key(option: str) -> str:
        return disk_key(path, option)

    return key


def fill_nic_items(items: Sequence[Mapping[str, Any]], preset: Optional[str]) -> Tuple[List[Dict[str, Any]], List[int]]:
    """NIC params with the model filled; and the positions whose model was unset."""
    out, unset = [], []
    for index, item in enumerate(items):
        item = dict(item)
        if item.get("model") is None:
            value = preset_value(preset, "nic", "model")
            item["model"] = NIC_DEFAULTS["model"] if value is None else value
            unset.append(index)
        out.append(item)
    return out, unset


def preset_filled(preset: Optional[str], defaulted: Sequence[str], spec_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """For the diff: option path (as the task writes it) -> value, of what the preset
    filled in (options left unset that the preset has a value for)."""
    if preset is None:
        return {}
    shown: Dict[str, Any] = {}
    wanted = set(defaulted)
    for option in VM_DEFAULTS:
        if option in wanted:
            shown[option] = spec_dict.get(option)
    for index, disk in enumerate(spec_dict.get("disks") or ()):
        for option in DISK_DEFAULTS:
            if disk_key(disk["path"], option) in wanted:
                shown["disks[%d].%s" % (index, option)] = disk.get(option)
    for index, nic in enumerate(spec_dict.get("nics") or ()):
        for option in NIC_DEFAULTS:
            if nic_key(nic.get("mac"), option) in wanted:
                shown["nics[%d].%s" % (index, option)] = nic.get(option)
    return shown
