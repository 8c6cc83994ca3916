# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Memory and CPU tuning of a live VM: CPU pins (sched_setaffinity on the thread ids QEMU
reports), the balloon, vCPU and DIMM hot-plug, over the task's one QMP session.

Pins are applied while a start is still paused (before ``cont``) and again whenever they
change or vCPUs are added; each step first looks at what QEMU has, so a task cut off
half-way is finished by the next one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Set

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import (
    BALLOON_ID,
    BALLOON_STATS_INTERVAL,
    MIB,
    dimm_device,
    dimm_ids,
    memory_backend,
    parse_cpu_list,
    total_memory_mb,
)

BALLOON_PATH = "/machine/peripheral/" + BALLOON_ID


@dataclasses.dataclass(frozen=True)
class Threads:
    """A QEMU's threads by role: vCPU index -> thread id, I/O thread ids, the rest."""

    vcpus: Dict[int, int]
    iothreads: List[int]
    emulator: List[int]


class Tuner:
    """Tuning for the VMs an engine.Engine runs (its QMP session, store and host paths)."""

    def __init__(self, engine):
        self.engine = engine

    def _qmp(self, rec: VmRecord, command: str, arguments: Optional[dict] = None):
        return self.engine.sessions.qmp(rec, command, arguments)

    # -- pinning ----------------------------------------------------------------------
    def threads(self, rec: VmRecord) -> Threads:
        vcpus = {c["cpu-index"]: c["thread-id"] for c in self._qmp(rec, "query-cpus-fast")}
        iothreads = [t["thread-id"] for t in self._qmp(rec, "query-iothreads")]
        task_dir = os.path.join(self.engine.host_paths.proc, str(rec.qemu_pid), "task")
        try:
            tids = sorted(int(t) for t in os.listdir(task_dir))
        except OSError as exc:
            raise QemuError(
                "VM %s: cannot list the threads of QEMU (PID %s): %s" % (rec.name, rec.qemu_pid, exc)
            ) from exc
        taken = set(vcpus.values()) | set(iothreads)
        return Threads(vcpus, iothreads, [t for t in tids if t not in taken])

    def _all_cpus(self) -> Set[int]:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import host_cpus_online

        return set(host_cpus_online(self.engine.host_paths.sys) or os.sched_getaffinity(0))

    def pin(self, rec: VmRecord, at_start: bool = False) -> Dict[str, List[int]]:
        """Set each thread's affinity as the spec says; threads it does not pin may run on
        every online CPU again (a pin that was removed). At start, a VM without pins is left
        alone. Returns the affinity set per role (for the result and the tests)."""
        spec = rec.spec
        if at_start and not (spec.cpu_pinning or spec.emulator_cpus or spec.iothread_cpus):
            return {}
        everywhere = self._all_cpus()
        threads = self.threads(rec)
        done: Dict[str, List[int]] = {}
        for index, tid in sorted(threads.vcpus.items()):
            text = spec.cpu_pinning.get(str(index))
            cpus = set(parse_cpu_list("cpu_pinning", text)) if text else everywhere
            self._set(rec, tid, cpus)
            done["vcpu%d" % index] = sorted(cpus)
        for role, tids, text in (
            ("iothreads", threads.iothreads, spec.iothread_cpus),
            ("emulator", threads.emulator, spec.emulator_cpus),
        ):
            cpus = set(parse_cpu_list(role, text)) if text else everywhere
            for tid in tids:
                self._set(rec, tid, cpus)
            done[role] = sorted(cpus)
        return done

    @staticmethod
    def _set(rec: VmRecord, tid: int, cpus: Set[int]) -> None:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a worker thread that ended meanwhile
        except OSError as exc:
            raise QemuError("VM %s: cannot pin thread %d to CPUs %s: %s" % (rec.name, tid, sorted(cpus), exc)) from exc

    # -- balloon ----------------------------------------------------------------------
    def set_balloon(self, rec: VmRecord) -> None:
        """The balloon's target: memory_target_mb, or all of the memory when unset."""
        target = rec.spec.memory_target_mb or total_memory_mb(rec.running_spec or rec.spec)
        self._qmp(rec, "balloon", {"value": target * MIB})

    def at_start(self, rec: VmRecord) -> None:
        """While the guest is still paused: pins, balloon statistics and target."""
        self.pin(rec, at_start=True)
        if rec.spec.memory_balloon:
            self._qmp(
                rec,
                "qom-set",
                {"path": BALLOON_PATH, "property": "guest-stats-polling-interval", "value": BALLOON_STATS_INTERVAL},
            )
            if rec.spec.memory_target_mb is not None:
                self.set_balloon(rec)

    def balloon_info(self, rec: VmRecord) -> Optional[Dict[str, Any]]:
        """query-balloon's actual size and the guest's statistics (None: not available)."""
        try:
            actual = self._qmp(rec, "query-balloon")["actual"]
            stats = self._qmp(rec, "qom-get", {"path": BALLOON_PATH, "property": "guest-stats"})
        except (InfinivirtError, KeyError, TypeError):
            return None
        values = {k.replace("-", "_"): v for k, v in (stats.get("stats") or {}).items() if v is not None and v >= 0}
        return {"actual_mb": actual // MIB, "stats": values, "last_update": stats.get("last-update", 0)}

    # -- hot-plug ---------------------------------------------------------------------
    def plug_cpus(self, rec: VmRecord) -> None:
        """Add vCPUs up to spec.vcpus (free slots of query-hotpluggable-cpus, lowest first),
        then pin them. A guest brings them online itself (or with udev rules)."""
        present = len(self._qmp(rec, "query-cpus-fast"))
        wanted = rec.spec.vcpus
        free = [c for c in self._qmp(rec, "query-hotpluggable-cpus") if not c.get("qom-path")]
        free.sort(key=lambda c: tuple(sorted(c["props"].items())))
        try:
            for slot in free[: max(0, wanted - present)]:
                props = slot["props"]
                dev_id = "vcpu-" + "-".join(str(props[k]) for k in sorted(props))
                self._qmp(rec, "device_add", dict(props, driver=slot["type"], id=dev_id))
                present += 1
        finally:
            rec.running_spec = dataclasses.replace(rec.running_spec, vcpus=present)
            records.save(self.engine.store, rec)
        self.pin(rec, at_start=True)

    def plug_memory(self, rec: VmRecord, hugepage_path: Optional[str]) -> None:
        """Append the DIMMs of spec.memory_hotplug that the running VM lacks (a backend with
        object-add, a pc-dimm with device_add); a leftover backend is removed first."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_hugepages

        running = list(rec.running_spec.memory_hotplug)
        devices = {p["name"] for p in self._qmp(rec, "qom-list", {"path": "/machine/peripheral"})}
        objects = {o["name"] for o in self._qmp(rec, "qom-list", {"path": "/objects"})}
        try:
            for index in range(len(running), len(rec.spec.memory_hotplug)):
                size = rec.spec.memory_hotplug[index]
                backend, dev = dimm_ids(index)
                if dev not in devices:
                    if backend in objects:
                        self._qmp(rec, "object-del", {"id": backend})
                    check_hugepages(rec.spec, self.engine.host_paths.sys, extra_mb=size)
                    self._qmp(rec, "object-add", memory_backend(rec.spec, backend, size, hugepage_path))
                    self._qmp(rec, "device_add", dimm_device(index))
                running.append(size)
        finally:
            rec.running_spec = dataclasses.replace(rec.running_spec, memory_hotplug=tuple(running))
            records.save(self.engine.store, rec)
