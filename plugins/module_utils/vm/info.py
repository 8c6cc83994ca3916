# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_vm_info lists, and the VM entry every infinivirt_vm task returns.

Reads the store and asks each VM's QEMU for its status; changes nothing. Apart from
vm/service.py so that the info module loads no planner, host checks or start code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    InfinivirtError,
    QemuUnresponsive,
    SpecError,
    StoreError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.liveness import settled_running
from ansible_collections.infinivirt.core.plugins.module_utils.store.hostdevs import ROLE_DEVICE, ROLE_GROUP
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_name
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import UNRESPONSIVE, VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import ANSWERING, guest_entry
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.metadata import (
    matches,
    validate_labels,
    validate_tags,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import pending_restart
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    CRASHED,
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
    fold_status,
    recorded_state,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import (
    graphics_entry,
    option_names,
    spec_entry,
)

GRAPHICS_PASSWORD = "graphics_password"  # the secret column of graphics.password
# infinivirt_vm_info waits this long for one VM's QEMU, so one hung VM does not hold the list.
INFO_QMP_TIMEOUT = 2.0
INFO_EVENTS = 10  # the newest events of each VM that infinivirt_vm_info lists
# Journaled files that outlive the process on purpose: not leftovers.
KEPT_AFTER_STOP = ("serial_log", "nvram")


def spec_digest(rec: VmRecord, secret_tokens: Tuple[Optional[str], ...] = ()) -> str:
    """A fingerprint of the stored definition, for optimistic concurrency (``digest``).
    Sealed secrets count by their token, so a new password changes it too."""
    canonical = json.dumps([rec.spec.to_dict(), list(secret_tokens)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def running_as_recorded(rec: VmRecord, engine: Engine) -> bool:
    """Whether the row says running and its QEMU runs so, told by the pidfile, /proc and
    QEMU's event log without a QMP connection (host/liveness.py). False: ask QEMU."""
    return rec.status == RUNNING and settled_running(
        engine.process.pidfile(rec), rec.qemu_pid, rec.qemu_started, rec.uuid, engine.host_paths.proc
    )


_READ = object()  # vm_result reads the VM's sealed display password itself


def vm_result(rec: VmRecord, state: str, engine: Engine, graphics_token: Any = _READ) -> Dict[str, Any]:
    """One VM's result entry; ``graphics_token``: the sealed display password (for the
    digest) when the caller has read it already."""
    if graphics_token is _READ:
        graphics_token = engine.store.get_secret(rec.uuid, GRAPHICS_PASSWORD)
    alive = state != STOPPED
    pending = pending_restart(rec.running_spec, rec.spec) if alive and rec.running_spec else []
    result = rec.summary()
    result.update(spec_entry(rec.spec))
    result.update(
        {
            "status": state,
            "pid": rec.qemu_pid if alive else None,
            "qmp_socket": rec.qmp_socket_path if alive else None,
            "serial_log": rec.serial_log_path or VmPaths.for_vm(engine.run_dir, rec.uuid).serial_log,
            "accel_in_use": rec.launch_accel if alive else None,
            "cpu_in_use": rec.launch_cpu if alive else None,
            "pending_restart": option_names(pending),
            "taps": [nic.tap_name for nic in rec.spec.nics],
            "nvram": engine.resources.nvram_path(rec) if rec.spec.firmware == "uefi" else None,
            "console_socket_path": (
                VmPaths.for_vm(engine.run_dir, rec.uuid).console_socket if alive and rec.spec.console_socket else None
            ),
            "balloon": _balloon(rec, state, engine),
            "digest": spec_digest(rec, (graphics_token,)),
            "graphics": graphics_entry(rec.spec, rec.launch_graphics_port if alive else None),
            "guest": guest_entry(rec, state, engine.run_dir, local=rec.host == engine.host_id),
        }
    )
    _remember_addresses(engine.store, rec, result["guest"])
    return result


def _remember_addresses(store, rec: VmRecord, guest: Dict[str, Any]) -> None:
    """What an answering agent said, for the inventory plugin on the controller (which
    cannot ask it); a store that refuses the write does not fail the task."""
    if guest["agent"] != ANSWERING:
        return
    try:
        store.record_guest_addresses(rec.uuid, rec.host, guest["interfaces"], guest["ips"])
    except StoreError:
        pass


def assigned_devices(store, rec: VmRecord, claims: Optional[list] = None) -> List[Dict[str, Any]]:
    """A VM's host PCI devices (infinivirt_gpu) as the store records them (``claims``: its
    rows, when already read)."""
    claims = store.list_pci(vm_uuid=rec.uuid) if claims is None else claims
    found = []
    for address in sorted({c.primary_address for c in claims}):
        rows = [c for c in claims if c.primary_address == address]
        primary = next((c for c in rows if c.address == address), rows[0])
        found.append(
            {
                "address": address,
                "host": primary.host,
                "functions": sorted(c.address for c in rows if c.role == ROLE_DEVICE),
                "group_devices": sorted(c.address for c in rows if c.role == ROLE_GROUP),
                "managed": primary.managed,
                "rom_file": primary.rom_file,
                "x_vga": primary.x_vga,
                "sriov": primary.sriov,
            }
        )
    return found


def info_result(
    ctx: HostContext, name: Optional[str] = None, host_devices: bool = False, filters: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """infinivirt_vm_info's result: the VMs (those ``filters`` select: tags, labels,
    hosts, status), and this host's PCI devices when asked (only then is the sysfs code
    loaded)."""
    result: Dict[str, Any] = {"changed": False, "vms": VmInfo.of(ctx).list(name, filters)}
    if host_devices:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import host_inventory

        result["host_devices"] = host_inventory(ctx)
    return result


def _select(found: List[VmRecord], filters: Dict[str, Any]) -> List[VmRecord]:
    """The records the stored filters (tags, labels, hosts) select; SpecError names a bad one."""
    want_tags = validate_tags(filters.get("tags") or ())
    want_labels = validate_labels(filters.get("labels") or {})
    hosts = filters.get("hosts")
    return [
        rec
        for rec in found
        if (not hosts or rec.host in hosts) and matches(rec.spec.tags, rec.spec.labels, want_tags, want_labels)
    ]


def _balloon(rec: VmRecord, state: str, engine: Engine) -> Optional[Dict[str, Any]]:
    """The balloon's actual size and the guest's memory statistics, of a VM that runs
    with one (None otherwise, or when its QEMU cannot say)."""
    running = rec.running_spec
    if state not in (RUNNING, PAUSED) or running is None or not running.memory_balloon or rec.qemu_pid is None:
        return None
    return engine.tuner().balloon_info(rec)


@dataclasses.dataclass
class ListingReads:
    """What a listing reads of every VM besides its row, one query per table for all of
    them (issue 20): display password tokens, newest events, PCI claims, journals."""

    tokens: Dict[str, Optional[str]]
    events: Dict[str, List[Dict[str, Any]]]
    pci: Dict[str, list]
    journals: Dict[str, List[Tuple[str, str]]]

    @classmethod
    def read(cls, store, records: Sequence[VmRecord]) -> "ListingReads":
        uuids = [rec.uuid for rec in records]
        return cls(
            tokens=store.get_secrets(uuids, GRAPHICS_PASSWORD),
            events=store.list_events_of(uuids, INFO_EVENTS),
            pci=store.list_pci_of(uuids),
            journals=store.journal_lists(uuids),
        )

    @classmethod
    def one(cls, store, rec: VmRecord) -> "ListingReads":
        """The same for one VM, read as before (one query each)."""
        return cls(
            tokens={rec.uuid: store.get_secret(rec.uuid, GRAPHICS_PASSWORD)},
            events={rec.uuid: store.list_events(rec.uuid, limit=INFO_EVENTS)},
            pci={rec.uuid: store.list_pci(vm_uuid=rec.uuid)},
            journals={rec.uuid: store.journal_list(rec.uuid)},
        )


class VmInfo:
    """infinivirt_vm_info: each VM's row, what runs, and its snapshots."""

    def __init__(self, engine: Engine):
        self.engine = engine  # also what vm.snapshots.SnapshotService reads through
        self.store = engine.store
        self.hostname = engine.host_id

    @classmethod
    def of(cls, ctx: HostContext) -> "VmInfo":
        return cls(Engine.of(ctx))

    def list(self, name: Optional[str] = None, filters: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        """The VMs (``name``: that one), those ``filters`` select (unset: all): every tag of
        ``tags``, every key=value of ``labels``, a host of ``hosts`` and a live state of ``status``."""
        filters = {k: v for k, v in (filters or {}).items() if v is not None}
        if name is not None:
            validate_name(name)
            rec = records.load(self.store, name)
            found = [rec] if rec else []
        else:
            found = records.load_all(self.store)
        if filters:
            found = _select(found, filters)
        reads = ListingReads.read(self.store, found)
        entries = [self.entry(rec, reads) for rec in found]
        if filters.get("status"):
            entries = [vm for vm in entries if vm["status"] in filters["status"]]
        return entries

    def entry(self, rec: VmRecord, reads: Optional[ListingReads] = None) -> Dict[str, Any]:
        """One VM's entry. A VM whose QEMU does not answer (within INFO_QMP_TIMEOUT) is listed
        with ``error`` rather than failing the whole listing. ``reads``: the listing's."""
        reads = reads or ListingReads.one(self.store, rec)
        error = None
        with self.engine.sessions.one_session():  # status and snapshots over one QMP connection
            if rec.host != self.hostname:  # another host's VM: only its row can be read from here
                qemu_status = None
                state = recorded_state(rec.status)
            else:
                try:
                    qemu_status = (
                        "running"
                        if running_as_recorded(rec, self.engine)
                        else self.engine.sessions.query_status(rec, timeout=INFO_QMP_TIMEOUT)
                    )
                    state = fold_status(qemu_status)
                    if rec.status == STARTING and qemu_status == "prelaunch":
                        state = STARTING  # a start cut off half-way; the next task redoes it
                except QemuUnresponsive as exc:
                    qemu_status, state, error = UNRESPONSIVE, RUNNING, str(exc)
            vm = vm_result(rec, state, self.engine, reads.tokens[rec.uuid])
            vm["qemu_status"] = qemu_status
            vm["error"] = error
            vm.update(self._aftermath(rec, state, reads))
            vm["host_devices"] = assigned_devices(self.store, rec, reads.pci[rec.uuid])
            vm["snapshots"] = []
            if rec.host == self.hostname and error is None:
                try:
                    vm["snapshots"] = self._snapshots(rec)
                except InfinivirtError as exc:  # a damaged image must not hide the other VMs
                    vm["error"] = "cannot list the snapshots: %s" % exc
        return vm

    def _aftermath(self, rec: VmRecord, state: str, reads: ListingReads) -> Dict[str, Any]:
        """Whether the VM crashed (recorded by the host monitor, or a row that says it runs
        with no QEMU left), what a dead QEMU left behind on this host, and its last events.
        Reading only: the next infinivirt_vm task or the monitor cleans up."""
        dead = rec.host == self.hostname and state == STOPPED
        leftovers = []
        if dead:
            leftovers = [
                {"kind": kind, "ref": ref} for kind, ref in reads.journals[rec.uuid] if kind not in KEPT_AFTER_STOP
            ]
        return {
            "crashed": rec.status == CRASHED or (dead and rec.status in (RUNNING, PAUSED)),
            "leftovers": leftovers,
            "events": reads.events[rec.uuid],
        }

    def _snapshots(self, rec: VmRecord) -> List[Dict[str, Any]]:
        if not rec.spec.disks:
            return []
        # Only a VM with disks has snapshots: only then is their code (and qemu-img) loaded.
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

        try:
            return list(SnapshotService(self.engine).list(rec).values())
        except SpecError:  # no writable disk
            return []
