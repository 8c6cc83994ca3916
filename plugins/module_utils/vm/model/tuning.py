# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Memory and CPU tuning of a VM (pure): the balloon, memory backing (hugepages, shared
memory, DIMM hot-plug), CPU topology and hot-plug, guest NUMA nodes and CPU pinning.

Normalisation (``normalize_*``) turns module params into the stored form, validation
(``validate_tuning``) checks a spec, and the builders return the JSON QEMU takes for
``-object``/``-device``. Nothing here looks at the host (vm/engine/preflight.py does).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice, check_int

MIB = 1024 * 1024
HUGEPAGE_SIZES = {"2M": 2, "1G": 1024}  # option value -> page size in MiB
HUGEPAGE_KB = {"2M": 2048, "1G": 1048576}  # the kB in sysfs' hugepages-<N>kB
NUMA_POLICIES = ("bind", "preferred", "interleave")
TOPOLOGY_KEYS = ("sockets", "dies", "cores", "threads")
VCPUS_LIMIT = 1024
NUMA_NODES_MAX = 64
MEMORY_SLOTS_MAX = 256
DEFAULT_MEMORY_SLOTS = 8
DIMM_ALIGN_MB = 128  # an x86-64 Linux guest onlines memory in 128 MiB blocks
MEMORY_MAX_LIMIT_MB = 16 * 1024 * 1024  # 16 TiB
CPU_INDEX_MAX = 4095
BALLOON_ID = "balloon0"
BALLOON_STATS_INTERVAL = 2  # seconds between guest statistics updates
RAM_BACKEND_ID = "mem-ram"

_CPU_LIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


# -- CPU lists ("0-3,6") ------------------------------------------------------------------
def parse_cpu_list(field: str, value: Any, limit: int = CPU_INDEX_MAX) -> List[int]:
    """The numbers of a list like ``0-3,6`` (kernel syntax), sorted; SpecError naming
    ``field`` for anything else (so no text reaches QEMU or sysfs unchecked)."""
    if isinstance(value, bool) or value is None:
        raise SpecError(field, "must be a list of numbers like '0-3,6', got %r" % (value,))
    text = str(value).replace(" ", "")
    if not _CPU_LIST_RE.fullmatch(text):
        raise SpecError(field, "must be a list of numbers like '0-3,6', got %r" % (value,))
    numbers = set()
    for part in text.split(","):
        low, _sep, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise SpecError(field, "range %s runs backwards" % part)
        if last > limit:
            raise SpecError(field, "%d is more than %d" % (last, limit))
        numbers.update(range(first, last + 1))
    return sorted(numbers)


def format_cpu_list(numbers: Iterable[int]) -> str:
    """The canonical text of a set of numbers: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    ranges: List[List[int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in ranges)


def _ranges(numbers: Sequence[int]) -> List[str]:
    return format_cpu_list(numbers).split(",") if numbers else []


# -- normalising params into the stored form ----------------------------------------------
def normalize_topology(value: Optional[Mapping[str, Any]]) -> Dict[str, int]:
    """{} clears; otherwise the four counts, dies defaulting to 1."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("cpu_topology", "must be a dict of sockets, dies, cores and threads")
    unknown = sorted(set(value) - set(TOPOLOGY_KEYS))
    if unknown:
        raise SpecError("cpu_topology", "unknown keys %s (sockets, dies, cores, threads)" % ", ".join(unknown))
    out = {k: value.get(k) for k in TOPOLOGY_KEYS if value.get(k) is not None}
    if not out:
        return {}
    out.setdefault("dies", 1)
    return out


def normalize_pinning(value: Optional[Mapping[Any, Any]]) -> Dict[str, str]:
    """vCPU index -> host CPU list, both as text in canonical form ({} clears)."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError("cpu_pinning", "must map vCPU indexes to host CPU lists, e.g. {0: '0', 1: '1'}")
    out = {}
    for key, cpus in value.items():
        field = "cpu_pinning[%s]" % key
        if isinstance(key, bool) or not re.fullmatch(r"\d{1,4}", str(key).strip()):
            raise SpecError(field, "key %r is not a vCPU index" % (key,))
        out[str(int(str(key).strip()))] = format_cpu_list(parse_cpu_list(field, cpus))
    return out


def normalize_cpu_set(field: str, value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    return format_cpu_list(parse_cpu_list(field, value))


def normalize_numa(nodes: Optional[Sequence[Mapping[str, Any]]]) -> Tuple[Dict[str, Any], ...]:
    """Each node as {cpus, memory_mb, host_nodes, policy, distances} with lists in canonical
    text and distances keyed by the other node's index as text."""
    out = []
    for index, node in enumerate(nodes or ()):
        field = "numa[%d]" % index
        if not isinstance(node, Mapping):
            raise SpecError(field, "must be a dict")
        unknown = sorted(set(node) - {"cpus", "memory_mb", "host_nodes", "policy", "distances"})
        if unknown:
            raise SpecError(field, "unknown keys %s" % ", ".join(unknown))
        cpus = node.get("cpus")
        host_nodes = node.get("host_nodes")
        distances = node.get("distances") or {}
        if not isinstance(distances, Mapping):
            raise SpecError(field + ".distances", "must map node indexes to distances")
        dist = {}
        for other, value in distances.items():
            if isinstance(other, bool) or not re.fullmatch(r"\d{1,3}", str(other).strip()):
                raise SpecError(field + ".distances", "key %r is not a node index" % (other,))
            dist[str(int(str(other).strip()))] = value
        out.append(
            {
                "cpus": None if cpus in (None, "") else format_cpu_list(parse_cpu_list(field + ".cpus", cpus)),
                "memory_mb": node.get("memory_mb"),
                "host_nodes": (
                    None
                    if host_nodes in (None, "")
                    else format_cpu_list(parse_cpu_list(field + ".host_nodes", host_nodes))
                ),
                "policy": node.get("policy") or None,
                "distances": dist,
            }
        )
    return tuple(out)


# -- effective values ----------------------------------------------------------------------
def max_vcpus(spec) -> int:
    return spec.vcpus_max or spec.vcpus


def total_memory_mb(spec) -> int:
    """Boot memory plus the hot-plugged DIMMs."""
    return spec.memory_mb + sum(spec.memory_hotplug)


def memory_slots(spec) -> int:
    return (spec.memory_slots or DEFAULT_MEMORY_SLOTS) if spec.memory_max_mb else 0


def pinned_host_cpus(spec) -> List[int]:
    """Every host CPU this VM's pins name (vCPUs, emulator, I/O threads)."""
    cpus = set()
    for text in list(spec.cpu_pinning.values()) + [spec.emulator_cpus, spec.iothread_cpus]:
        if text:
            cpus.update(parse_cpu_list("cpu_pinning", text))
    return sorted(cpus)


# -- validation -----------------------------------------------------------------------------
def _check_flag_free_int(field: str, value: Any, low: int, high: int) -> int:
    return check_int(field, value, low, high)


def validate_tuning(spec, memory_min_mb: int) -> None:
    """Check the memory and CPU tuning fields of ``spec`` (SpecError names the option)."""
    _validate_cpus(spec)
    _validate_memory(spec, memory_min_mb)
    _validate_numa(spec)
    _validate_pinning(spec)


def _validate_cpus(spec) -> None:
    if spec.vcpus_max is not None:
        check_int("vcpus_max", spec.vcpus_max, spec.vcpus, VCPUS_LIMIT)
    topo = spec.cpu_topology
    if topo:
        for key in TOPOLOGY_KEYS:
            if key not in topo:
                raise SpecError("cpu_topology", "needs %s (sockets, cores and threads; dies defaults to 1)" % key)
            check_int("cpu_topology.%s" % key, topo[key], 1, VCPUS_LIMIT)
        product = topo["sockets"] * topo["dies"] * topo["cores"] * topo["threads"]
        wanted, name = (spec.vcpus_max, "vcpus_max") if spec.vcpus_max else (spec.vcpus, "vcpus")
        if product != wanted:
            raise SpecError(
                "cpu_topology",
                "sockets x dies x cores x threads = %d x %d x %d x %d = %d must equal %s (%d)"
                % (topo["sockets"], topo["dies"], topo["cores"], topo["threads"], product, name, wanted),
            )


def _validate_memory(spec, memory_min_mb: int) -> None:
    if spec.hugepages is not None:
        check_choice("hugepages", spec.hugepages, tuple(HUGEPAGE_SIZES))
        page = HUGEPAGE_SIZES[spec.hugepages]
        if spec.memory_mb % page:
            raise SpecError(
                "memory_mb", "%d MiB is not a whole number of %s hugepages" % (spec.memory_mb, spec.hugepages)
            )
    for index, size in enumerate(spec.memory_hotplug):
        field = "memory_hotplug[%d]" % index
        check_int(field, size, DIMM_ALIGN_MB, MEMORY_MAX_LIMIT_MB)
        align = max(DIMM_ALIGN_MB, HUGEPAGE_SIZES.get(spec.hugepages or "", 0))
        if size % align:
            raise SpecError(field, "%d MiB must be a multiple of %d MiB" % (size, align))
    if spec.memory_max_mb is None:
        if spec.memory_slots is not None:
            raise SpecError("memory_slots", "needs memory_max_mb")
        if spec.memory_hotplug:
            raise SpecError("memory_hotplug", "needs memory_max_mb (the most memory DIMMs may bring the VM to)")
    else:
        total = total_memory_mb(spec)
        check_int("memory_max_mb", spec.memory_max_mb, spec.memory_mb, MEMORY_MAX_LIMIT_MB)
        if total > spec.memory_max_mb:
            raise SpecError(
                "memory_hotplug",
                "memory_mb plus the DIMMs is %d MiB, more than memory_max_mb (%d)" % (total, spec.memory_max_mb),
            )
        if spec.memory_slots is not None:
            check_int("memory_slots", spec.memory_slots, 1, MEMORY_SLOTS_MAX)
        if len(spec.memory_hotplug) > memory_slots(spec):
            raise SpecError(
                "memory_hotplug",
                "%d DIMMs need more than memory_slots (%d)" % (len(spec.memory_hotplug), memory_slots(spec)),
            )
    if spec.memory_target_mb is not None:
        if not spec.memory_balloon:
            raise SpecError("memory_target_mb", "needs memory_balloon: true")
        check_int("memory_target_mb", spec.memory_target_mb, memory_min_mb, total_memory_mb(spec))


def _validate_numa(spec) -> None:
    nodes = spec.numa
    if not nodes:
        return
    if len(nodes) > NUMA_NODES_MAX:
        raise SpecError("numa", "at most %d nodes, got %d" % (NUMA_NODES_MAX, len(nodes)))
    seen: Dict[int, int] = {}
    vcpus = max_vcpus(spec)
    memory = 0
    for index, node in enumerate(nodes):
        field = "numa[%d]" % index
        check_int(field + ".memory_mb", node.get("memory_mb"), 1, MEMORY_MAX_LIMIT_MB)
        memory += node["memory_mb"]
        if spec.hugepages and node["memory_mb"] % HUGEPAGE_SIZES[spec.hugepages]:
            raise SpecError(field + ".memory_mb", "is not a whole number of %s hugepages" % spec.hugepages)
        for cpu in parse_cpu_list(field + ".cpus", node["cpus"]) if node.get("cpus") else ():
            if cpu >= vcpus:
                raise SpecError(field + ".cpus", "vCPU %d does not exist (the VM has %d at most)" % (cpu, vcpus))
            if cpu in seen:
                raise SpecError(field + ".cpus", "vCPU %d is in node %d already" % (cpu, seen[cpu]))
            seen[cpu] = index
        if node.get("policy") is not None:
            check_choice(field + ".policy", node["policy"], NUMA_POLICIES)
            if node.get("host_nodes") is None:
                raise SpecError(field + ".policy", "needs host_nodes")
        if node.get("host_nodes") is not None:
            parse_cpu_list(field + ".host_nodes", node["host_nodes"], limit=1023)
        for other, value in node.get("distances", {}).items():
            check_int(field + ".distances", int(other), 0, len(nodes) - 1)
            low = 10 if int(other) == index else 11
            check_int(field + ".distances[%s]" % other, value, low, 10 if int(other) == index else 255)
    missing = sorted(set(range(vcpus)) - set(seen))
    if missing:
        raise SpecError(
            "numa", "vCPUs %s are in no node; give every vCPU (up to vcpus_max) a node" % format_cpu_list(missing)
        )
    if memory != spec.memory_mb:
        raise SpecError("numa", "the nodes' memory_mb add up to %d, not memory_mb (%d)" % (memory, spec.memory_mb))
    if any(node.get("distances") for node in nodes):
        for a in range(len(nodes)):
            for b in range(a + 1, len(nodes)):
                if str(b) not in nodes[a]["distances"] and str(a) not in nodes[b]["distances"]:
                    raise SpecError("numa", "the distance between nodes %d and %d is missing" % (a, b))


def _validate_pinning(spec) -> None:
    vcpus = max_vcpus(spec)
    for key, cpus in spec.cpu_pinning.items():
        field = "cpu_pinning[%s]" % key
        if not re.fullmatch(r"\d+", key) or int(key) >= vcpus:
            raise SpecError(field, "vCPU %s does not exist (the VM has %d at most)" % (key, vcpus))
        if not parse_cpu_list(field, cpus):
            raise SpecError(field, "must name at least one host CPU")
    for field in ("emulator_cpus", "iothread_cpus"):
        if getattr(spec, field) is not None:
            parse_cpu_list(field, getattr(spec, field))
    if spec.cpu_pinning_exclusive and not spec.cpu_pinning:
        raise SpecError("cpu_pinning_exclusive", "needs cpu_pinning (the host CPUs to keep for this VM)")


# -- what QEMU gets -------------------------------------------------------------------------
def smp_option(spec) -> str:
    value = "cpus=%d" % spec.vcpus
    if spec.vcpus_max:
        value += ",maxcpus=%d" % spec.vcpus_max
    for key in TOPOLOGY_KEYS:
        if spec.cpu_topology:
            value += ",%s=%d" % (key, spec.cpu_topology[key])
    return value


def memory_option(spec) -> str:
    value = "size=%dM" % spec.memory_mb
    if spec.memory_max_mb:
        value += ",slots=%d,maxmem=%dM" % (memory_slots(spec), spec.memory_max_mb)
    return value


def needs_ram_backend(spec) -> bool:
    """Whether boot memory needs a backend of its own (-machine memory-backend=)."""
    return not spec.numa and (spec.hugepages is not None or spec.memory_shared)


def memory_backend(spec, backend_id: str, size_mb: int, hugepage_path: Optional[str], node=None) -> Dict[str, Any]:
    """The -object (or object-add) JSON of one memory backend: a file on hugetlbfs
    (preallocated) with hugepages, memfd when shared, else anonymous RAM."""
    obj: Dict[str, Any] = {"id": backend_id, "size": size_mb * MIB}
    if spec.hugepages is not None:
        obj.update({"qom-type": "memory-backend-file", "mem-path": hugepage_path, "prealloc": True})
        obj["share"] = bool(spec.memory_shared)
    elif spec.memory_shared:
        obj.update({"qom-type": "memory-backend-memfd", "share": True})
    else:
        obj["qom-type"] = "memory-backend-ram"
    if node is not None and node.get("host_nodes") is not None:
        obj["host-nodes"] = parse_cpu_list("numa.host_nodes", node["host_nodes"], limit=1023)
        obj["policy"] = node.get("policy") or "bind"
    return obj


def dimm_ids(index: int) -> Tuple[str, str]:
    """(backend id, device id) of the DIMM at ``index`` of memory_hotplug."""
    return "mem-dimm%d" % index, "dimm%d" % index


def dimm_device(index: int) -> Dict[str, Any]:
    backend, dev = dimm_ids(index)
    return {"driver": "pc-dimm", "id": dev, "memdev": backend}


def numa_args(spec) -> List[str]:
    """-numa node (each with its own backend) and -numa dist."""
    argv: List[str] = []
    for index, node in enumerate(spec.numa):
        value = "node,nodeid=%d,memdev=mem-node%d" % (index, index)
        cpus = parse_cpu_list("numa.cpus", node["cpus"]) if node.get("cpus") else []
        for part in _ranges(cpus):
            value += ",cpus=%s" % part
        argv += ["-numa", value]
    for index, node in enumerate(spec.numa):
        for other, distance in sorted(node.get("distances", {}).items(), key=lambda kv: int(kv[0])):
            argv += ["-numa", "dist,src=%d,dst=%d,val=%d" % (index, int(other), distance)]
    return argv


def balloon_device() -> Dict[str, Any]:
    return {"driver": "virtio-balloon-pci", "id": BALLOON_ID, "free-page-reporting": True}


# -- live changes ---------------------------------------------------------------------------
def cpu_hotplug_live(running, spec) -> bool:
    """vCPUs can be added to a running VM (never taken away live: the guest must agree)."""
    same = all(
        getattr(running, f) == getattr(spec, f) for f in ("vcpus_max", "cpu_topology", "numa", "cpu_model", "cpu_flags")
    )
    return same and bool(spec.vcpus_max) and spec.vcpus > running.vcpus


def memory_hotplug_live(running, spec) -> bool:
    """DIMMs can be appended to a running VM (removal needs the guest: at the next start)."""
    same = all(
        getattr(running, f) == getattr(spec, f) for f in ("memory_max_mb", "memory_slots", "hugepages", "memory_shared")
    )
    n = len(running.memory_hotplug)
    return same and len(spec.memory_hotplug) > n and tuple(spec.memory_hotplug[:n]) == tuple(running.memory_hotplug)


PINNING_FIELDS = ("cpu_pinning", "emulator_cpus", "iothread_cpus")
