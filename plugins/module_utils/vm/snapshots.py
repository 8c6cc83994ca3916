# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Snapshots of a VM's disks, taken, reverted and deleted as one set.

External snapshots put a qcow2 overlay on each disk (recorded in disk_layers before any
VM switches to it); revert recreates the overlay over the frozen image, delete merges it
down. Both need the images closed, so a running VM is stopped and started around them.

Internal ones live inside qcow2 images:

A stopped VM's disks are handled with qemu-img. A running VM is snapshotted live: disks
only through one QMP transaction of blockdev-snapshot-internal-sync (atomic across disks),
or disks plus RAM and device state through the snapshot-save job, which snapshot-load
reverts without a restart. A disk-only snapshot of a running VM is reverted by stopping
the VM, reverting offline and starting it again. A UEFI VM's NVRAM is copied with each
snapshot and copied back on revert.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    InfinivirtError,
    QemuError,
    QemuUnresponsive,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import (
    ConfinedDir,
    ConfinedFile,
    resolve_in_roots,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import holds_file
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, Image, QemuImg
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_name
from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import RESUME
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import (
    DiskSpec,
    node_names,
    overlay_blockdevs,
    overlay_nodes,
    top_node,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import shutdown_mode, stop_timeout
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import RUNNING, STARTING, STOPPED

STATES = ("present", "absent", "reverted")
TYPES = ("internal", "external")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
JOB_TIMEOUT = 600.0
JOB_PREFIX = "infinivirt-"
JOB_POLL = 0.2
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOCTTY
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def validate_snapshot_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SpecError(
            "name", "%r must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit" % (name,)
        )
    return name


def offline_snapshots(disk: DiskSpec) -> List[Dict[str, Any]]:
    """The snapshots in a qcow2 image (-U: a running QEMU may hold it)."""
    return QemuImg().info(disk.path, fmt="qcow2").get("snapshots", [])


class SnapshotService:
    """What infinivirt_snapshot does, on top of a vm.engine.engine.Engine."""

    def __init__(self, engine):
        self.engine = engine
        self.store = engine.store
        self.frozen = False  # whether the last live snapshot froze the guest's file systems
        self.frozen_filesystems = 0  # how many, as the guest agent counted them
        self.warnings: List[str] = []  # e.g. an agent that did not answer a stop, so ACPI did

    def _writable(self, rec) -> List[DiskSpec]:
        writable = [d for d in rec.spec.disks if not d.readonly and d.media == "disk"]
        if not writable:
            raise SpecError("vm", "VM %s has no writable disk to snapshot" % rec.name)
        return writable

    def _qcow2_disks(self, rec) -> List[DiskSpec]:
        writable = self._writable(rec)
        raw = [d.path for d in writable if d.format != "qcow2"]
        if raw:
            raise SpecError(
                "vm",
                "VM %s has raw disks (%s); internal snapshots need every "
                "writable disk in qcow2 (external snapshots do not)" % (rec.name, ", ".join(raw)),
            )
        if self.store.list_layers(rec.uuid):
            raise SpecError("type", "VM %s has external snapshots; internal ones cannot be mixed with them" % rec.name)
        return writable

    # -- images reached by descriptor -------------------------------------------------
    # With storage roots set, qemu-img gets each image as a descriptor opened inside them
    # without following links (as QEMU does at start), never by a name that could be
    # swapped for a symlink between the check and the use.
    def _field(self, rec, disk: DiskSpec) -> str:
        return "disks[%d].path" % [d.path for d in rec.spec.disks].index(disk.path)

    def _opened(self, stack: contextlib.ExitStack, rec, disk: DiskSpec, path: str) -> Image:
        if not self.engine.resources.storage_roots:
            return path
        return FdImage(self.engine.resources.open_image(stack, disk, path, self._field(rec, disk))[0], path)

    def _created(self, stack: contextlib.ExitStack, rec, disk: DiskSpec, path: str) -> ConfinedFile:
        """A new empty file (O_EXCL, 0600) for an overlay, in its directory reached without
        links: made by us, never by qemu-img or QEMU following a name."""
        field = self._field(rec, disk)
        if self.engine.resources.storage_roots:
            resolve_in_roots(path, self.engine.resources.storage_roots, field)  # a link out of the roots: named
        directory, name = self._confined_parent(rec, disk, path)
        folder = stack.enter_context(ConfinedDir(directory, field))
        try:
            created = stack.enter_context(folder.open_file(name, _NEW_FILE, 0o600))
        except FileExistsError:
            raise SpecError("name", "%s exists already; pick another snapshot name" % path) from None
        return created

    def _make_overlay(
        self,
        stack: contextlib.ExitStack,
        rec,
        disk: DiskSpec,
        overlay: str,
        below: str,
        below_fmt: str,
        made: List[ConfinedFile],
    ) -> ConfinedFile:
        """An empty qcow2 overlay on ``below``, made by us (appended to ``made`` as soon as
        it exists) and formatted through its descriptor, open until ``stack`` closes; the
        size of ``below`` is read through a descriptor too, so qemu-img never opens it by
        name. The header names ``below`` by path, so the chain opens again after a restart."""
        size = QemuImg().info(self._opened(stack, rec, disk, below), fmt=below_fmt)["virtual-size"]
        created = self._created(stack, rec, disk, overlay)
        made.append(created)
        QemuImg().create(FdImage(created.fd, overlay), "qcow2", size, backing=below, backing_fmt=below_fmt)
        return created

    def _replace_overlay(self, rec, disk: DiskSpec, overlay: str, below: str, below_fmt: str) -> None:
        """A fresh overlay put in place of ``overlay`` by a rename, so the name always holds
        a whole image (a revert cut off never leaves a row without its file)."""
        new = overlay + ".new"
        self._unlink_overlay(rec, disk, new)  # of a revert cut off
        with contextlib.ExitStack() as stack:
            made: List[ConfinedFile] = []
            try:
                created = self._make_overlay(stack, rec, disk, new, below, below_fmt, made)
                created.dir.rename(created.name, os.path.basename(overlay))
            except BaseException:
                for leftover in made:
                    leftover.unlink()  # only while it still is the file made here
                raise

    def _confined_parent(self, rec, disk: DiskSpec, path: str) -> Tuple[str, str]:
        """(real directory, name) of ``path``: the directory resolved (inside the roots, if
        set), the name itself not (a symlink there is the entry, not what it points to)."""
        field = self._field(rec, disk)
        directory, name = os.path.split(path)
        if self.engine.resources.storage_roots:
            probe = resolve_in_roots(
                os.path.join(directory, ".infinivirt-probe"), self.engine.resources.storage_roots, field
            )
            return os.path.dirname(probe), name
        return os.path.realpath(directory), name

    def _unlink_overlay(self, rec, disk: DiskSpec, path: str) -> None:
        """Remove an overlay of ours (or the link someone put in its place), by directory
        descriptor; gone already is fine."""
        directory, name = self._confined_parent(rec, disk, path)
        with ConfinedDir(directory, self._field(rec, disk)) as folder:
            with contextlib.suppress(FileNotFoundError):
                folder.unlink(name)

    def _below_chain(
        self, stack: contextlib.ExitStack, rec, disk: DiskSpec, chain: List[Dict[str, Any]], index: int
    ) -> Sequence[Tuple[Image, str]]:
        """The images under layer ``index``, nearest first, opened, with their formats."""
        paths = [(disk.path, disk.format)] + [(layer["overlay"], "qcow2") for layer in chain[:index]]
        return [(self._opened(stack, rec, disk, path), fmt) for path, fmt in reversed(paths)]

    def list(self, rec) -> Dict[str, Dict[str, Any]]:
        """Snapshots present on every writable disk, by name (a partial set is not one)."""
        found = self._external_list(rec)
        try:
            found.update(self._internal_list(rec))
        except SpecError:  # raw disks or external layers: no internal snapshots
            pass
        return dict(sorted(found.items()))

    def _per_disk(self, rec, disks: List[DiskSpec]) -> List[Dict[str, Dict[str, Any]]]:
        """Each disk's internal snapshots, by name."""
        if self.engine.process.is_alive(rec):
            nodes = {
                n["node-name"]: n for n in self.engine.sessions.qmp(rec, "query-named-block-nodes", {"flat": True})
            }
            per_disk = [nodes[node_names(d)[1]]["image"].get("snapshots", []) for d in disks]
        else:
            per_disk = [offline_snapshots(d) for d in disks]
        return [{s["name"]: s for s in snaps} for snaps in per_disk]

    def _internal_list(self, rec) -> Dict[str, Dict[str, Any]]:
        per_disk = self._per_disk(rec, self._qcow2_disks(rec))
        names = set.intersection(*(set(snaps) for snaps in per_disk))
        return {
            name: {
                "name": name,
                "type": "internal",
                # The memory state is in one disk, not always the first (see _vmstate).
                "vm_state_size": max(snaps[name].get("vm-state-size", 0) for snaps in per_disk),
                "date_sec": per_disk[0][name].get("date-sec"),
            }
            for name in sorted(names)
        }

    def _internal_partial(self, rec, name: str) -> bool:
        """Whether some disks, not all, have internal snapshot ``name`` (a delete or an
        offline create cut off between disks)."""
        try:
            return any(name in snaps for snaps in self._per_disk(rec, self._qcow2_disks(rec)))
        except SpecError:
            return False

    def _vmstate(self, rec, disks: List[DiskSpec], name: Optional[str] = None) -> str:
        """The node that holds the memory state: for snapshot ``name``, the one that has it;
        for a new one, the first unencrypted disk (QEMU 7.2 aborts on an assertion when it
        writes memory state into a LUKS-encrypted qcow2 image)."""
        if name is not None:
            per_disk = self._per_disk(rec, disks)
            held = [d for d, snaps in zip(disks, per_disk) if snaps.get(name, {}).get("vm-state-size", 0)]
            return node_names((held or disks)[0])[1]
        keys = power.disk_keys(self.engine, disks)
        plain = [d for d in disks if d.disk_id not in keys]
        if not plain:
            raise SpecError(
                "memory",
                "every disk of VM %s is encrypted, and QEMU cannot save memory state into an "
                "encrypted image; add an unencrypted qcow2 disk or take a disk-only snapshot" % rec.name,
            )
        return node_names(plain[0])[1]

    def _external_list(self, rec) -> Dict[str, Dict[str, Any]]:
        disks = {d.path for d in rec.spec.disks if not d.readonly and d.media == "disk"}
        per_name: Dict[str, set] = {}
        for layer in self.store.list_layers(rec.uuid):
            per_name.setdefault(layer["snapshot"], set()).add(layer["base_path"])
        return {
            name: {"name": name, "type": "external", "vm_state_size": 0, "date_sec": None}
            for name, paths in per_name.items()
            if disks and paths >= disks
        }

    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        vm_name = validate_name(params.get("vm"))
        name = validate_snapshot_name(params.get("name"))
        state = params.get("state") or "present"
        if state not in STATES:
            raise SpecError("state", "must be one of %s, got %r" % (", ".join(STATES), state))
        stop_timeout(params)  # a bad value fails before anything is done
        shutdown_mode(params)
        with self.store.vm_lock(vm_name, self.engine.lock_timeout), self.engine.sessions.one_session():
            rec = records.load(self.store, vm_name)
            if rec is None:
                raise SpecError("vm", "VM %s does not exist" % vm_name)
            if rec.host != self.engine.host_id:
                raise StateError("VM %s is owned by host %s; manage its snapshots there" % (vm_name, rec.host))
            resume = None if check_mode else self._finish_cut_off(rec)
            existing = self.list(rec)
            live = self.engine.sessions.live_state(rec)
            action = self._plan(state, name, existing, live, params)
            kind = existing[name]["type"] if name in existing else (params.get("type") or "internal")
            if state == "absent" and action is None and self._has_layers(rec, name):
                action, kind = "delete", "external"  # a merge cut off half-way: some disks left
            elif state == "absent" and action is None and self._internal_partial(rec, name):
                action, kind = "delete", "internal"
            if action == "create" and kind == "internal" and params.get("memory"):
                self._vmstate(rec, self._qcow2_disks(rec))  # a place for the memory state
            if kind not in TYPES:
                raise SpecError("type", "must be one of %s, got %r" % (", ".join(TYPES), kind))
            if action == "create" and kind == "external" and params.get("memory"):
                raise SpecError("memory", "external snapshots save disks only")
            self.frozen, self.frozen_filesystems, self.warnings = False, 0, []
            if action and not check_mode:
                prefix = "_" if kind == "internal" else "_external_"
                getattr(self, prefix + action)(rec, name, live, params)
            if resume is not None:  # stopped by a task that was cut off: started again
                self._resume(rec, resume)
            after = self.list(rec) if action and not check_mode else existing
        return {
            "changed": bool(action) or resume is not None,
            "action": action,
            "frozen": self.frozen,
            "frozen_filesystems": self.frozen_filesystems,
            "warnings": list(self.warnings),
            "snapshots": list(after.values()),
            "diff": {
                "before": {"snapshots": sorted(existing)},
                "after": {"snapshots": sorted(after if not check_mode else _predicted(existing, name, action))},
            },
        }

    # -- what a task that was cut off (SIGKILL) left ------------------------------------------
    def _finish_cut_off(self, rec) -> Optional[str]:
        """Settle what a cut-off task left before looking at the snapshots: QEMU jobs it
        started are waited for and dismissed, an external snapshot that never switched is
        undone. Returns the state to start the VM in again if such a task stopped it (see
        _offline), else None."""
        notes = [ref for kind, ref in self.store.journal_list(rec.uuid) if kind == RESUME]
        alive = self.engine.process.is_alive(rec)
        if alive and notes and rec.status == STARTING and self.engine.sessions.query_status(rec) == "prelaunch":
            self.engine.abort_start(rec)  # our start, cut off half-way: it is done again below
            alive = False
        if alive:
            self._settle_jobs(rec)
        self._undo_unswitched(rec, alive)
        if alive:  # started again since: nothing to do
            for ref in notes:
                self.store.journal_remove(rec.uuid, RESUME, ref)
            return None
        return notes[0] if notes else None

    def _undo_unswitched(self, rec, alive: bool) -> None:
        """The newest external snapshot, if its rows were written (that comes first) but the
        VM never switched to its overlays nor started on them (a running VM), or its overlay
        files were never all made (a stopped one): its nodes, descriptor sets, overlays,
        rows and NVRAM copy go. Only the newest can be such: each task settles it first."""
        layers = self.store.list_layers(rec.uuid)
        if not layers:
            return
        seq = max(layer["seq"] for layer in layers)
        newest = [layer for layer in layers if layer["seq"] == seq]
        by_path = {d.path: d for d in rec.spec.disks}
        disks = [(by_path[layer["base_path"]], layer) for layer in newest if layer["base_path"] in by_path]
        if len(disks) != len(newest):  # a disk no longer in the spec: not ours to judge here
            return
        if alive:
            with self.engine.sessions.session(rec) as qmp:
                nodes = {n["node-name"]: n for n in qmp.execute("query-named-block-nodes", {"flat": True})}
                if any(self._switched(rec, nodes, disk) for disk, _layer in disks):
                    return
                # Strict: a node QEMU still uses refuses blockdev-del, and then no file is touched.
                self._drop_overlays(qmp, [overlay_nodes(disk, seq) for disk, _layer in disks], strict=True)
            self._check_unused(rec, [layer["overlay"] for layer in newest])
        elif all(os.path.lexists(layer["overlay"]) for layer in newest):
            return
        for disk, layer in disks:
            self._unlink_overlay(rec, disk, layer["overlay"])
        for layer in newest:
            self.store.delete_layer(rec.uuid, layer["base_path"], seq)
        self._drop_nvram(rec, newest[0]["snapshot"])

    def _check_unused(self, rec, overlays: List[str]) -> None:
        """Before an overlay is removed as never used: QEMU must not hold it open."""
        pid = self.engine.process.live_pid(rec)
        for overlay in overlays:
            if holds_file(pid, overlay, self.engine.host_paths.proc):
                raise StateError(
                    "VM %s: QEMU still has %s open though the VM does not use it as a snapshot overlay; "
                    "nothing was removed (restart the VM, then run the task again)" % (rec.name, overlay)
                )

    def _switched(self, rec, nodes: Dict[str, Any], disk: DiskSpec) -> bool:
        """Whether the running disk is on its newest overlay: switched to live (the overlay
        node has its backing attached), or started on it (the start made a node for each
        image below the top; without storage roots, the top is opened by its path)."""
        chain = self._chain(rec, disk)
        live = nodes.get(overlay_nodes(disk, chain[-1]["seq"])[1])
        if live is not None:
            return bool(live.get("backing_file"))  # QEMU 7.2 shows it once a backing is attached
        if "n%d-%s" % (len(chain) - 1, disk.disk_id) in nodes:
            return True
        top_file = nodes.get(node_names(disk)[0], {})
        return top_file.get("file") == chain[-1]["overlay"]

    def _resume(self, rec, state: str) -> None:
        """Start the VM again as the task that stopped it would have (start_vm), and drop
        the note, also when the start fails (its error tells why)."""
        try:
            if not self.engine.process.is_alive(rec):
                power.start_vm(self.engine, rec, paused=state != RUNNING)
        finally:
            self.store.journal_remove(rec.uuid, RESUME, state)

    def _settle_jobs(self, rec) -> None:
        """Our snapshot-save/-load jobs left by a cut-off task: QEMU runs them to the end
        without us, so wait for that and dismiss them (a job id stays taken until then)."""
        deadline = time.monotonic() + JOB_TIMEOUT
        with self.engine.sessions.session(rec) as qmp:
            while True:
                ours = [job for job in qmp.execute("query-jobs") if job["id"].startswith(JOB_PREFIX)]
                for job in ours:
                    if job["status"] == "concluded":
                        qmp.execute("job-dismiss", {"id": job["id"]})
                if all(job["status"] == "concluded" for job in ours):
                    return
                if time.monotonic() > deadline:
                    raise QemuError(
                        "VM %s: QEMU job %s did not end within %g s" % (rec.name, ours[0]["id"], JOB_TIMEOUT)
                    )
                time.sleep(JOB_POLL)

    @staticmethod
    def _plan(state: str, name: str, existing: Dict[str, Any], live: str, params: Dict[str, Any]) -> Optional[str]:
        if state == "present":
            if name in existing:
                return None
            if params.get("memory") and live != RUNNING:
                raise SpecError("memory", "a snapshot with memory state needs a running VM")
            return "create"
        if state == "absent":
            return "delete" if name in existing else None
        if name not in existing:
            raise SpecError("name", "VM has no snapshot %r to revert to" % name)
        return "revert"  # always a change: whether the disks still match is not known

    # -- NVRAM: a UEFI VM's variable store is a raw file; its snapshot is a copy ----------
    @staticmethod
    def _tpm():
        """vm/engine/platform.py: the TPM state's copies (a directory next to the NVRAM's)."""
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform

        return platform

    def _nvram_copy(self, rec, name: str) -> Optional[str]:
        if rec.spec.firmware != "uefi":
            return None
        return "%s.snapshot-%s" % (self.engine.resources.nvram_path(rec), name)

    def _save_nvram(self, rec, name: str) -> None:
        self._tpm().save_tpm(self.engine, rec, name)  # the TPM's state goes with the NVRAM
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(self.engine.resources.nvram_path(rec)):
            self.store.journal_add(rec.uuid, "nvram", copy)  # removed with the VM
            _copy_file(rec, self.engine.resources.nvram_path(rec), copy)

    def _restore_nvram(self, rec, name: str) -> None:
        self._tpm().restore_tpm(self.engine, rec, name)
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(copy):
            _copy_file(rec, copy, self.engine.resources.nvram_path(rec))

    def _drop_nvram(self, rec, name: str) -> None:
        self._tpm().drop_tpm(self.engine, rec, name)
        copy = self._nvram_copy(rec, name)
        if copy and os.path.exists(copy):
            os.unlink(copy)
            self.store.journal_remove(rec.uuid, "nvram", copy)

    # -- actions --------------------------------------------------------------------------
    def _offline_snapshots(self, rec, operation: str, name: str, disks: List[DiskSpec]) -> None:
        """qemu-img snapshot on each disk of a stopped VM; an encrypted one opens with its key."""
        keys = power.disk_keys(self.engine, disks)
        for disk in disks:
            with contextlib.ExitStack() as stack:
                QemuImg().snapshot(operation, name, self._opened(stack, rec, disk, disk.path), keys.get(disk.disk_id))

    def _create(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        if self._internal_partial(rec, name):  # left on some disks by a run cut off
            self._delete(rec, name, live, params)
        self._save_nvram(rec, name)
        disks = self._qcow2_disks(rec)
        if live == STOPPED:
            self._offline_snapshots(rec, "create", name, disks)
        elif params.get("memory"):
            nodes = [node_names(d)[1] for d in disks]
            self._job(rec, "snapshot-save", {"tag": name, "vmstate": self._vmstate(rec, disks), "devices": nodes})
        else:
            actions = [
                {"type": "blockdev-snapshot-internal-sync", "data": {"device": self._root(rec, d), "name": name}}
                for d in disks
            ]
            with self._frozen(rec, live):
                self.engine.sessions.qmp(rec, "transaction", {"actions": actions})

    @contextlib.contextmanager
    def _frozen(self, rec, live: str):
        """The guest's file systems frozen through its agent around a disk-only live
        snapshot, when the agent answers (vm/guest.py); ``self.frozen`` says whether,
        ``self.frozen_filesystems`` how many."""
        if live != RUNNING:  # a paused guest's agent cannot answer
            yield
            return
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import frozen_filesystems

        with frozen_filesystems(self.engine.run_dir, rec) as count:
            self.frozen, self.frozen_filesystems = count is not None, count or 0
            yield

    @staticmethod
    def _root(rec, disk: DiskSpec) -> str:
        """The root node of a running disk, which QEMU's internal snapshot commands want
        (they pass through a limited disk's throttle filter to the image); the disk as it
        runs, since limits added to the spec may wait for a restart."""
        running = {d.path: d for d in (rec.running_spec or rec.spec).disks}
        return top_node(running.get(disk.path, disk))

    def _reapply_live(self, rec) -> None:
        """What the spec sets live and a loaded snapshot brings back as it was: the balloon
        target (device state). CPU pins (host thread affinity) and I/O limits (throttle
        group objects) are not in the snapshot and stay as they are."""
        if (rec.running_spec or rec.spec).memory_balloon and rec.spec.memory_balloon:
            self.engine.tuner().set_balloon(rec)

    def _delete(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        self._drop_nvram(rec, name)
        disks = self._qcow2_disks(rec)
        # Only where it is: a delete cut off between disks is finished, not failed.
        disks = [d for d, snaps in zip(disks, self._per_disk(rec, disks)) if name in snaps]
        if live == STOPPED:
            self._offline_snapshots(rec, "delete", name, disks)
        else:
            for disk in disks:
                self.engine.sessions.qmp(
                    rec, "blockdev-snapshot-delete-internal-sync", {"device": self._root(rec, disk), "name": name}
                )

    def _revert(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        disks = self._qcow2_disks(rec)
        snapshot = self.list(rec)[name]
        if live != STOPPED and snapshot["vm_state_size"]:
            nodes = [node_names(d)[1] for d in disks]
            self._job(rec, "snapshot-load", {"tag": name, "vmstate": self._vmstate(rec, disks, name), "devices": nodes})
            self._restore_nvram(rec, name)  # the loaded RAM holds the flash as it was then
            self._reapply_live(rec)
            return

        def apply() -> None:  # disks only: they cannot change under a running guest
            self._offline_snapshots(rec, "apply", name, disks)
            self._restore_nvram(rec, name)

        self._offline(rec, live, params, apply)

    # -- external snapshots: overlay files ---------------------------------------------------
    def _external_create(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        disks = self._writable(rec)
        if power.disk_keys(self.engine, disks):
            raise SpecError(
                "type", "external snapshots of encrypted volumes are not supported; use an internal snapshot"
            )
        try:
            internal = self._internal_list(rec) if not self.store.list_layers(rec.uuid) else {}
        except SpecError:
            internal = {}
        if internal:
            raise SpecError(
                "type",
                "VM %s has internal snapshots (%s); external ones cannot be "
                "mixed with them" % (rec.name, ", ".join(internal)),
            )
        rows = self._new_rows(rec, name, disks)
        active = self.engine.resources.active_paths(rec)
        # Recorded first: a VM that switched to its overlays must never restart on the bases.
        self.store.add_layers(rec.uuid, rows)
        self._save_nvram(rec, name)
        made: List[ConfinedFile] = []
        try:
            with contextlib.ExitStack() as stack:
                if live == STOPPED:
                    for disk, row in zip(disks, rows):
                        top_fmt = "qcow2" if disk.disk_id in active else disk.format
                        self._make_overlay(stack, rec, disk, row[3], active.get(disk.disk_id, disk.path), top_fmt, made)
                else:
                    self._live_overlays(stack, rec, disks, rows, active, made, live)
        except BaseException:
            for created in made:  # ours only: a name someone else made is not touched
                with contextlib.suppress(OSError):
                    created.unlink()
            for base, layer_seq, _name, _overlay in rows:
                self.store.delete_layer(rec.uuid, base, layer_seq)
            self._drop_nvram(rec, name)
            raise

    def _new_rows(self, rec, name: str, disks: List[DiskSpec]) -> List[tuple]:
        """The disk_layers rows of a new external snapshot: one overlay per disk, next to it."""
        seq = max([layer["seq"] for layer in self.store.list_layers(rec.uuid)] or [0]) + 1
        rows = []
        for disk in disks:
            overlay = os.path.join(
                os.path.dirname(disk.path), "%s.%s.overlay.qcow2" % (os.path.basename(disk.path), name)
            )
            if os.path.lexists(overlay):  # an early, friendly word; O_EXCL is what holds
                raise SpecError("name", "%s exists already; pick another snapshot name" % overlay)
            rows.append((disk.path, seq, name, overlay))
        return rows

    def _live_overlays(
        self,
        stack: contextlib.ExitStack,
        rec,
        disks: List[DiskSpec],
        rows: List[tuple],
        active: Dict[str, str],
        made: List[ConfinedFile],
        live: str = RUNNING,
    ) -> None:
        """Each disk's overlay made by us (O_EXCL, 0600, confined), handed to QEMU as a
        descriptor set and added as a node; then one transaction of blockdev-snapshot puts
        every overlay on its image at the same instant. The overlay goes right on the image
        node, under a limited disk's throttle filter, so the limits keep applying. Nodes and
        descriptor sets are removed again if the switch did not happen."""
        seq = rows[0][1]
        timeout = self.engine.sessions.qmp_timeout
        with self.engine.sessions.session(rec) as qmp:
            try:
                tops = self._image_tops(rec, qmp, disks)
                actions = []
                for disk, row in zip(disks, rows):
                    below = active.get(disk.disk_id, disk.path)
                    fmt = "qcow2" if disk.disk_id in active else disk.format
                    created = self._make_overlay(stack, rec, disk, row[3], below, fmt, made)
                    readonly = os.open("/proc/self/fd/%d" % created.fd, os.O_RDONLY | _CLOEXEC)  # the same file
                    stack.callback(os.close, readonly)
                    node = overlay_nodes(disk, seq)[1]
                    fdset = qmp.add_fd_set((created.fd, readonly), node, timeout=timeout)
                    for blockdev in overlay_blockdevs(disk, seq, "/dev/fdset/%d" % fdset):
                        qmp.execute("blockdev-add", blockdev, timeout=timeout)
                    actions.append({"type": "blockdev-snapshot", "data": {"node": tops[disk.disk_id], "overlay": node}})
                with self._frozen(rec, live):
                    qmp.execute("transaction", {"actions": actions}, timeout=timeout)
            except BaseException:
                self._drop_overlays(qmp, [overlay_nodes(disk, seq) for disk in disks])
                raise

    @staticmethod
    def _drop_overlays(qmp, nodes: List[Tuple[str, str]], strict: bool = False) -> None:
        """The nodes and descriptor sets of overlays that QEMU did not switch to. Errors are
        raised only if ``strict`` (else the first error, being handled, is the one to report)."""
        with contextlib.suppress(*(() if strict else (InfinivirtError,))):
            have = {n["node-name"] for n in qmp.execute("query-named-block-nodes", {"flat": True})}
            for pair in nodes:
                for node in reversed(pair):
                    if node in have:
                        qmp.execute("blockdev-del", {"node-name": node})
            owners = {fmt_node for _file_node, fmt_node in nodes}
            for fdset in qmp.execute("query-fdsets"):
                if any(fd.get("opaque") in owners for fd in fdset.get("fds", [])):
                    qmp.execute("remove-fd", {"fdset-id": fdset["fdset-id"]})

    def _image_tops(self, rec, qmp, disks: List[DiskSpec]) -> Dict[str, str]:
        """disk_id -> the image node a running disk reads through (under its throttle
        filter, if any): the overlay of its newest live snapshot since the start, else the
        node the start made."""
        nodes = {n["node-name"] for n in qmp.execute("query-named-block-nodes", {"flat": True})}
        tops = {}
        for disk in disks:
            seqs = sorted((layer["seq"] for layer in self._chain(rec, disk)), reverse=True)
            live = [overlay_nodes(disk, seq)[1] for seq in seqs if overlay_nodes(disk, seq)[1] in nodes]
            tops[disk.disk_id] = live[0] if live else node_names(disk)[1]
        return tops

    def _has_layers(self, rec, name: str) -> bool:
        return any(layer["snapshot"] == name for layer in self.store.list_layers(rec.uuid))

    def _chain(self, rec, disk: DiskSpec) -> List[Dict[str, Any]]:
        return [layer for layer in self.store.list_layers(rec.uuid) if layer["base_path"] == disk.path]

    @staticmethod
    def _below(disk: DiskSpec, chain: List[Dict[str, Any]], index: int):
        """The image under layer ``index`` and its format."""
        return (chain[index - 1]["overlay"], "qcow2") if index else (disk.path, disk.format)

    def _external_revert(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        """Back to the disks as they were: a fresh overlay on the frozen image. Snapshots
        taken after this one are discarded with their overlays."""

        def revert() -> None:
            # Each step leaves rows that name existing files, newest first, and the row of
            # this snapshot stays: a run cut off anywhere is finished by the next one.
            for disk in self._writable(rec):
                chain = self._chain(rec, disk)
                index = next(i for i, layer in enumerate(chain) if layer["snapshot"] == name)
                for layer in reversed(chain[index + 1 :]):
                    self._unlink_overlay(rec, disk, layer["overlay"])
                    self.store.delete_layer(rec.uuid, disk.path, layer["seq"])
                    self._drop_nvram(rec, layer["snapshot"])
                below, fmt = self._below(disk, chain, index)
                self._replace_overlay(rec, disk, chain[index]["overlay"], below, fmt)
            self._restore_nvram(rec, name)

        self._offline(rec, live, params, revert)

    def _external_delete(self, rec, name: str, live: str, params: Dict[str, Any]) -> None:
        """Merge the snapshot's overlay into the image below it, keeping today's data."""

        def merge() -> None:
            for disk in self._writable(rec):
                chain = self._chain(rec, disk)
                index = next((i for i, layer in enumerate(chain) if layer["snapshot"] == name), None)
                if index is None:  # merged by a run that was cut off
                    continue
                if not os.path.lexists(chain[index]["overlay"]):  # merged and removed, row left
                    self.store.delete_layer(rec.uuid, disk.path, chain[index]["seq"])
                    continue
                below, fmt = self._below(disk, chain, index)
                with contextlib.ExitStack() as stack:
                    overlay = self._opened(stack, rec, disk, chain[index]["overlay"])
                    QemuImg().commit(overlay, self._below_chain(stack, rec, disk, chain, index))
                    if index + 1 < len(chain):
                        above = self._opened(stack, rec, disk, chain[index + 1]["overlay"])
                        QemuImg().rebase_unsafe(above, below, fmt)
                self._unlink_overlay(rec, disk, chain[index]["overlay"])
                self.store.delete_layer(rec.uuid, disk.path, chain[index]["seq"])
            self._drop_nvram(rec, name)

        self._offline(rec, live, params, merge)

    def _offline(self, rec, live: str, params: Dict[str, Any], work) -> None:
        """Run ``work`` on the images with no QEMU holding them: a running VM is stopped
        (as state stopped would, in the task's shutdown_mode) and started again afterwards."""
        if live != STOPPED:
            # Noted first: if this task is cut off, the next snapshot task starts the VM again.
            self.store.journal_add(rec.uuid, RESUME, live)
            self.warnings.extend(power.stop_vm(self.engine, rec, params, self._qemu_status(rec)))
        try:
            work()
        finally:  # also when the work failed: the VM goes back to running on what its disks hold
            if live != STOPPED:
                self._resume(rec, live)

    def _qemu_status(self, rec) -> Optional[str]:
        """QEMU's status for the stop (a paused guest's agent is not asked); None when QEMU
        cannot answer: the stop asks again and, forced, ends it."""
        try:
            return self.engine.sessions.query_status(rec)
        except QemuUnresponsive:
            return None

    def _job(self, rec, command: str, arguments: Dict[str, Any]) -> None:
        """Run a QMP job to its end and report its error, if any."""
        job_id = JOB_PREFIX + command
        with self.engine.sessions.session(rec) as qmp:
            qmp.execute_and_wait(
                command,
                dict(arguments, **{"job-id": job_id}),
                "JOB_STATUS_CHANGE",
                {"id": job_id, "status": "concluded"},
                timeout=JOB_TIMEOUT,
            )
            job = next((j for j in qmp.execute("query-jobs") if j["id"] == job_id), {})
            qmp.execute("job-dismiss", {"id": job_id})
        if job.get("error"):
            raise QemuError("VM %s: %s failed: %s" % (rec.name, command, job["error"]))


def _copy_file(rec, source: str, target: str) -> None:
    """Copy an NVRAM file into ``target``, 0600, never through a symlink at either end."""
    try:
        _copy_nofollow(source, target)
    except OSError as exc:
        why = "one of them is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise StateError(
            "VM %s: cannot copy its NVRAM from %s to %s: %s; nothing was written" % (rec.name, source, target, why)
        ) from None


def _copy_nofollow(source: str, target: str) -> None:
    flags = os.O_NOFOLLOW | _CLOEXEC
    src = os.open(source, os.O_RDONLY | flags)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o600)
        try:
            os.fchmod(dst, 0o600)
            with os.fdopen(src, "rb", closefd=False) as reader, os.fdopen(dst, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _predicted(existing: Dict[str, Any], name: str, action: Optional[str]) -> List[str]:
    names = set(existing)
    if action == "create":
        names.add(name)
    elif action == "delete":
        names.discard(name)
    return sorted(names)
