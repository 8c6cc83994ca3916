# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host checks of a validated VM spec: what vm.spec cannot know without looking at this host.

Called by the service right after validation, before anything is planned or written, so a
bad value still fails naming its option and changes nothing.
"""

from __future__ import annotations

import os
from typing import FrozenSet, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import check_netns
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import Capabilities
from ansible_collections.infinivirt.core.plugins.module_utils.vm.spec import VmSpec

VHOST_DEVICE = "/dev/vhost-net"


def host_cpu_count() -> int:
    return os.cpu_count() or 1


def vhost_available(vhost_device: str = VHOST_DEVICE) -> bool:
    return os.path.exists(vhost_device)


def check_vhost(spec: VmSpec, available: Optional[bool] = None) -> bool:
    """Whether this host has vhost-net; a NIC that insists on it fails without."""
    available = vhost_available() if available is None else available
    for index, nic in enumerate(spec.nics):
        if nic.vhost and not available:
            raise SpecError(
                "nics[%d].vhost" % index,
                "this host has no /dev/vhost-net (load the vhost_net kernel module, or leave vhost unset)",
            )
    return available


def check_file(field: str, path: str) -> str:
    if not os.path.isfile(path):
        raise SpecError(field, "%s does not exist or is not a regular file" % path)
    if not os.access(path, os.R_OK):
        raise SpecError(field, "%s is not readable" % path)
    return path


def check_disk_path(field: str, path: str, storage_roots: Optional[Sequence[str]]) -> None:
    if storage_roots:
        resolve_in_roots(path, storage_roots, field)  # symlinks and '..' resolved
    if not os.path.exists(path):
        raise SpecError(field, "%s does not exist (create it with infinivirt.core.infinivirt_disk)" % path)


def host_memory_mb(proc: str = "/proc") -> Optional[int]:
    """RAM plus swap of this host in MiB (None when /proc/meminfo cannot be read)."""
    total = 0
    try:
        with open(os.path.join(proc, "meminfo")) as fh:
            for line in fh:
                if line.startswith(("MemTotal:", "SwapTotal:")):
                    total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total // 1024 or None


def check_memory(spec: VmSpec, available_mb: Optional[int]) -> None:
    """A guest larger than all of the host's RAM and swap: QEMU would refuse it at start."""
    if available_mb is not None and spec.memory_mb > available_mb:
        raise SpecError(
            "memory_mb",
            "%d MiB is more than this host's RAM and swap together (%d MiB); QEMU cannot give it "
            "to a guest" % (spec.memory_mb, available_mb),
        )


def _canonical_flag(name: str) -> str:
    # QEMU takes sse4.2 as sse4_2 or sse4-2 too: compare with '.', '_' and '-' alike.
    return name.replace("_", "-").replace(".", "-")


def _flag_known(name: str, known: FrozenSet[str]) -> bool:
    return _canonical_flag(name) in {_canonical_flag(k) for k in known}


def check_cpu(spec: VmSpec, caps: Optional[Capabilities]) -> None:
    """The CPU model and flags must be ones this QEMU lists in -cpu help."""
    if caps is None:
        return
    if caps.cpu_models and spec.cpu_model != "auto" and spec.cpu_model not in caps.cpu_models:
        raise SpecError(
            "cpu_model",
            "%r is not a CPU model of %s (see its -cpu help; auto, host and max are always "
            "there)" % (spec.cpu_model, caps.binary),
        )
    for flag in spec.cpu_flags:
        if caps.cpu_flags and not _flag_known(flag[1:], caps.cpu_flags):
            raise SpecError("cpu_flags", "%r is not a CPU flag %s knows (see its -cpu help)" % (flag, caps.binary))


def preflight(
    spec: VmSpec,
    storage_roots: Optional[Sequence[str]] = None,
    max_vcpus: Optional[int] = None,
    caps: Optional[Capabilities] = None,
    available_memory_mb: Optional[int] = None,
) -> VmSpec:
    """Raise SpecError naming the first option this host cannot honour."""
    max_vcpus = host_cpu_count() if max_vcpus is None else max_vcpus
    if spec.vcpus > max_vcpus:
        raise SpecError("vcpus", "must be at most %d, got %d" % (max_vcpus, spec.vcpus))
    for field in ("kernel", "initrd", "uefi_firmware"):
        if getattr(spec, field) is not None:
            check_file(field, getattr(spec, field))
    for index, disk in enumerate(spec.disks):
        check_disk_path("disks[%d].path" % index, disk.path, storage_roots)
    check_memory(spec, available_memory_mb)
    check_cpu(spec, caps)
    check_netns("netns", spec.netns)
    check_vhost(spec)
    return spec
