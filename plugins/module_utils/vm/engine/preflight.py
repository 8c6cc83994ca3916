# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host checks of a validated VM spec: what vm.spec cannot know without looking at this host.

Called by the service right after validation, before anything is planned or written, so a
bad value still fails naming its option and changes nothing.
"""

from __future__ import annotations

import os
from typing import FrozenSet, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import check_netns
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import Capabilities
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import (
    HUGEPAGE_KB,
    HUGEPAGE_SIZES,
    format_cpu_list,
    parse_cpu_list,
    total_memory_mb,
)

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


def check_shares(spec: VmSpec, storage_roots: Optional[Sequence[str]]) -> None:
    """Each shared_dirs source: an existing directory, inside the storage roots (when the host
    sets them) but not one of them (that would show the guest every image), and, links
    resolved, still none of /, /proc, /sys, /dev. graphics.tls.cert_dir: a directory."""
    from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_roots
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.shares import check_source

    for index, share in enumerate(spec.shared_dirs):
        field = "shared_dirs[%d].source" % index
        source = share["source"]
        if not os.path.isdir(source):
            raise SpecError(field, "%s does not exist or is not a directory" % source)
        real = os.path.realpath(source)
        check_source(field, real)
        if storage_roots:
            resolve_in_roots(source, storage_roots, field)
            if real in resolve_roots(storage_roots):
                raise SpecError(field, "%s is a storage root; share a directory inside it" % source)
    if spec.graphics_tls_dir is not None and not os.path.isdir(spec.graphics_tls_dir):
        raise SpecError("graphics.tls.cert_dir", "%s does not exist or is not a directory" % spec.graphics_tls_dir)


def check_disk_path(field: str, path: str, storage_roots: Optional[Sequence[str]], must_exist: bool = True) -> None:
    if storage_roots:
        resolve_in_roots(path, storage_roots, field)  # symlinks and '..' resolved
    if must_exist and not os.path.exists(path):
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
    if available_mb is not None and total_memory_mb(spec) > available_mb:
        raise SpecError(
            "memory_mb",
            "%d MiB is more than this host's RAM and swap together (%d MiB); QEMU cannot give it "
            "to a guest" % (total_memory_mb(spec), available_mb),
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
        if "=" in flag:  # a property (hv-spinlocks=...): -cpu help does not list those
            continue
        if caps.cpu_flags and not _flag_known(flag[1:], caps.cpu_flags):
            raise SpecError("cpu_flags", "%r is not a CPU flag %s knows (see its -cpu help)" % (flag, caps.binary))


def preflight(
    spec: VmSpec,
    storage_roots: Optional[Sequence[str]] = None,
    max_vcpus: Optional[int] = None,
    caps: Optional[Capabilities] = None,
    available_memory_mb: Optional[int] = None,
    sys_root: str = "/sys",
    made_here: Sequence[str] = (),
) -> VmSpec:
    """Raise SpecError naming the first option this host cannot honour. ``made_here``: disk
    paths this task makes (cloned from a template), which need not exist yet."""
    host_cpus = host_cpu_count() if max_vcpus is None else max_vcpus
    if spec.vcpus > host_cpus:
        raise SpecError("vcpus", "must be at most %d, got %d" % (host_cpus, spec.vcpus))
    if spec.vcpus_max is not None and spec.vcpus_max > host_cpus:
        raise SpecError("vcpus_max", "must be at most %d (this host's CPUs), got %d" % (host_cpus, spec.vcpus_max))
    for field in ("kernel", "initrd", "uefi_firmware"):
        if getattr(spec, field) is not None:
            check_file(field, getattr(spec, field))
    for index, disk in enumerate(spec.disks):
        check_disk_path("disks[%d].path" % index, disk.path, storage_roots, disk.path not in made_here)
    check_shares(spec, storage_roots)
    check_memory(spec, available_memory_mb)
    check_cpu(spec, caps)
    check_netns("netns", spec.netns)
    check_vhost(spec)
    if spec.tpm is not None or spec.vsock is not None:  # swtpm, /dev/vhost-vsock
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.platform import check_host

        check_host(spec)
    check_pinning(spec, sys_root)
    check_host_numa(spec, sys_root)
    return spec


# -- memory backing and CPU pinning -----------------------------------------------------------
def hugetlbfs_mounts(proc: str = "/proc") -> dict:
    """Page size ('2M', '1G') -> the first hugetlbfs mount of that size, from /proc/mounts
    (a mount without pagesize= has the default size, Hugepagesize of /proc/meminfo)."""
    default = None
    mounts = {}
    try:
        with open(os.path.join(proc, "meminfo")) as fh:
            for line in fh:
                if line.startswith("Hugepagesize:"):
                    default = int(line.split()[1])
        with open(os.path.join(proc, "mounts")) as fh:
            lines = fh.read().splitlines()
    except (OSError, ValueError, IndexError):
        return {}
    names = {kb: name for name, kb in HUGEPAGE_KB.items()}
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or parts[2] != "hugetlbfs":
            continue
        kb = default
        for opt in parts[3].split(","):
            if opt.startswith("pagesize="):
                kb = _size_kb(opt[len("pagesize=") :])
        path = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        if kb in names:
            mounts.setdefault(names[kb], path)
    return mounts


def _size_kb(text: str) -> Optional[int]:
    units = {"K": 1, "M": 1024, "G": 1024 * 1024}
    try:
        if text[-1:].upper() in units:
            return int(text[:-1]) * units[text[-1:].upper()]
        return int(text) // 1024
    except ValueError:
        return None


def hugepage_path(spec: VmSpec, proc: str = "/proc") -> Optional[str]:
    """The hugetlbfs mount QEMU puts the guest's RAM on (None: no hugepages asked for)."""
    if spec.hugepages is None:
        return None
    path = hugetlbfs_mounts(proc).get(spec.hugepages)
    if path is None:
        raise SpecError(
            "hugepages",
            "no hugetlbfs mount with %s pages on this host (/proc/mounts); mount one, e.g. "
            "mount -t hugetlbfs -o pagesize=%s none /dev/hugepages%s"
            % (spec.hugepages, spec.hugepages, spec.hugepages),
        )
    return path


def _free_pages(sys_root: str, size: str, node: Optional[int] = None) -> Optional[int]:
    base = (
        os.path.join(sys_root, "kernel/mm")
        if node is None
        else os.path.join(sys_root, "devices/system/node/node%d" % node)
    )
    try:
        with open(os.path.join(base, "hugepages/hugepages-%dkB/free_hugepages" % HUGEPAGE_KB[size])) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def check_hugepages(spec: VmSpec, sys_root: str = "/sys", extra_mb: Optional[int] = None) -> None:
    """Admission before a start (or a DIMM plug, ``extra_mb``): enough free pages of the
    size, on the bound host nodes too; else an error saying how many are missing."""
    if spec.hugepages is None:
        return
    page_mb = HUGEPAGE_SIZES[spec.hugepages]
    wanted_mb = total_memory_mb(spec) if extra_mb is None else extra_mb
    need = -(-wanted_mb // page_mb)
    free = _free_pages(sys_root, spec.hugepages)
    if free is None:
        raise SpecError(
            "hugepages",
            "this host has no %s hugepages (no hugepages-%dkB in sysfs)"
            % (spec.hugepages, HUGEPAGE_KB[spec.hugepages]),
        )
    if free < need:
        raise SpecError(
            "hugepages",
            "VM %s needs %d free %s hugepages (%d MiB) but this host has %d free: %d missing; raise "
            "vm.nr_hugepages (/sys/kernel/mm/hugepages/hugepages-%dkB/nr_hugepages)"
            % (spec.name, need, spec.hugepages, wanted_mb, free, need - free, HUGEPAGE_KB[spec.hugepages]),
        )
    if extra_mb is not None:
        return
    for index, node in enumerate(spec.numa):
        if node.get("host_nodes") is None or (node.get("policy") or "bind") != "bind":
            continue
        host_nodes = parse_cpu_list("numa.host_nodes", node["host_nodes"], limit=1023)
        need = -(-node["memory_mb"] // page_mb)
        free = sum(_free_pages(sys_root, spec.hugepages, n) or 0 for n in host_nodes)
        if free < need:
            raise SpecError(
                "numa[%d].host_nodes" % index,
                "guest node %d needs %d free %s hugepages on host node(s) %s, which have %d: %d missing"
                % (index, need, spec.hugepages, node["host_nodes"], free, need - free),
            )


def host_cpus_online(sys_root: str = "/sys") -> Optional[List[int]]:
    try:
        with open(os.path.join(sys_root, "devices/system/cpu/online")) as fh:
            return parse_cpu_list("host", fh.read().strip())
    except (OSError, SpecError):
        return None


def check_pinning(spec: VmSpec, sys_root: str = "/sys") -> None:
    """Pins name host CPUs that exist and are online."""
    online = host_cpus_online(sys_root)
    if online is None:
        return
    fields = [("cpu_pinning[%s]" % k, v) for k, v in sorted(spec.cpu_pinning.items(), key=lambda kv: int(kv[0]))]
    fields += [("emulator_cpus", spec.emulator_cpus), ("iothread_cpus", spec.iothread_cpus)]
    for field, text in fields:
        if text is None:
            continue
        missing = sorted(set(parse_cpu_list(field, text)) - set(online))
        if missing:
            raise SpecError(
                field,
                "host CPU(s) %s are not online on this host (online: %s)"
                % (format_cpu_list(missing), format_cpu_list(online)),
            )


def check_host_numa(spec: VmSpec, sys_root: str = "/sys") -> None:
    """Host nodes a guest node is bound to must exist."""
    try:
        with open(os.path.join(sys_root, "devices/system/node/online")) as fh:
            nodes = parse_cpu_list("host", fh.read().strip(), limit=1023)
    except (OSError, SpecError):
        return
    for index, node in enumerate(spec.numa):
        if node.get("host_nodes") is None:
            continue
        missing = sorted(set(parse_cpu_list("numa.host_nodes", node["host_nodes"], limit=1023)) - set(nodes))
        if missing:
            raise SpecError(
                "numa[%d].host_nodes" % index,
                "host NUMA node(s) %s do not exist here (online: %s)"
                % (format_cpu_list(missing), format_cpu_list(nodes)),
            )
