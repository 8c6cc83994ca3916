# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a VM holds on the host besides its process: journaled files, TAPs, disk images
opened by descriptor, its NVRAM, its firewall state, and hugepages admitted at start.

Every file or TAP is journaled in the store before it exists and dropped from the journal
after it is gone. TAPs, paths and preflight are imported where used: a task that only reads
or stops a VM does not load them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import HostPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import queue_count
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord, firewall_vm

# A journal note, not a file: the VM was stopped by a task that must start it again as
# the note says (running or paused); the next such task does it if this one was cut off.
RESUME = "resume"
# The cloud-init seed ISO (vm/cloud_seed.py): like the NVRAM, kept until the VM is removed.
CLOUD_INIT_SEED = "cloud_init"
UNATTEND_MEDIA = "unattend"  # the Windows answer file ISO (vm/unattend_media.py), likewise
TPM_STATE, SWTPM = "tpm_state", "swtpm"  # the TPM's state directory; a swtpm, by its pidfile (platform.py)
# A disk a migration target made for a storage copy (vm/engine/storage_copy.py): kept by the
# start's clean-up of leftovers, removed by an abort; the handover drops its entry (the VM's disk).
MIGRATED_DISK = "migrated_disk"
KEPT_WITH_VM = ("nvram", RESUME, CLOUD_INIT_SEED, UNATTEND_MEDIA, TPM_STATE, MIGRATED_DISK)  # outlive the process


class HostResources:
    """The host resources of the VMs in ``store``. ``firewall`` returns the
    firewall.service.FirewallService (built on first use), or is None: no firewall."""

    def __init__(
        self,
        store,
        nvram_dir: str,
        host_paths: HostPaths = HostPaths(),
        storage_roots: Optional[Sequence[str]] = None,
        firewall: Optional[Callable[[], Any]] = None,
        host_id: str = "",
    ):
        self.store = store
        self.host_id = host_id
        # VMs with a QEMU on each of two hosts (a migration) whose side here is journaled
        # apart: the target's incoming start, and the source's leftovers after the handover
        self.apart: Set[str] = set()
        self.nvram_dir = nvram_dir
        self.host_paths = host_paths
        self.storage_roots = storage_roots  # disk images are opened confined to these
        self.firewall = firewall

    def key(self, rec: VmRecord) -> str:
        """The journal key of this host's side of ``rec``: its UUID, or, for a VM kept
        ``apart`` during a migration, ``<uuid>@<this host>`` (store.handovers.side_key): the
        other host journals the same names under the other key."""
        if rec.uuid in self.apart:
            from ansible_collections.infinivirt.core.plugins.module_utils.store.handovers import side_key

            return side_key(rec.uuid, self.host_id)
        return rec.uuid

    # -- memory, firewall, NVRAM ------------------------------------------------------
    def admit_memory(self, rec: VmRecord) -> Optional[str]:
        """A VM on hugepages starts only with its hugetlbfs mount and enough free pages
        (SpecError naming hugepages, with the count missing). Returns the mount."""
        if rec.spec.hugepages is None:
            return None
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import (
            check_hugepages,
            hugepage_path,
        )

        path = hugepage_path(rec.spec, self.host_paths.proc)
        check_hugepages(rec.spec, self.host_paths.sys)
        return path

    def sync_firewall(self, rec: VmRecord) -> None:
        """The VM's nftables state follows its TAPs: there while it runs, gone when not."""
        if self.firewall is not None:
            self.firewall().sync_vm(firewall_vm(rec))

    def nvram_path(self, rec: VmRecord) -> str:
        return os.path.join(self.nvram_dir, rec.uuid + ".fd")

    # -- TAPs -------------------------------------------------------------------------
    def make_taps(self, rec: VmRecord, nics, bridges: Dict[str, str]) -> None:
        """Each NIC's TAP, journaled before it exists, on its bridge."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
        from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import (
            TapSpec,
            create_tap,
            set_rate_limit,
        )

        for nic in nics:
            self.store.journal_add(self.key(rec), "tap", nsutil.ns_ref(rec.spec.netns, nic.tap_name))
            create_tap(
                TapSpec(
                    name=nic.tap_name,
                    bridge=bridges[nic.mac],
                    multi_queue=queue_count(nic, rec.spec.vcpus) > 1,
                    mtu=nic.mtu,
                ),
                rec.spec.netns,
            )
            if nic.rate_limit_mbit is not None:
                set_rate_limit(nic.tap_name, nic.rate_limit_mbit, rec.spec.netns)

    def drop_tap(self, rec: VmRecord, ref: str) -> None:
        from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
        from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
        from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import remove_tap

        netns, tap = nsutil.parse_ns_ref(ref)
        try:
            remove_tap(tap, netns)
        except (NetError, nsutil.NetnsError, SpecError):
            pass  # its namespace is gone, and the TAP with it
        self.store.journal_remove(self.key(rec), "tap", ref)

    # -- disk images ------------------------------------------------------------------
    def image_chains(self, rec: VmRecord) -> Dict[str, List[str]]:
        """disk_id -> its images, base first, of each disk that has external snapshots."""
        chains: Dict[str, List[str]] = {}
        by_path = {d.path: d for d in rec.spec.disks}
        for layer in self.store.list_layers(rec.uuid):  # ordered by seq
            disk = by_path.get(layer["base_path"])
            if disk is not None:
                chains.setdefault(disk.disk_id, [disk.path]).append(layer["overlay"])
        return chains

    def active_paths(self, rec: VmRecord) -> Dict[str, str]:
        """disk_id -> the top overlay of each disk that has external snapshots."""
        return {disk_id: chain[-1] for disk_id, chain in self.image_chains(rec).items()}

    def open_images(
        self, stack: contextlib.ExitStack, rec: VmRecord
    ) -> Tuple[Dict[str, Tuple[int, ...]], Dict[str, Tuple[Tuple[int, ...], ...]]]:
        """Descriptors of each disk's top image, and of the images below it (base first) for
        a disk with external snapshots (see open_image). Nothing when no roots are set."""
        if not self.storage_roots:
            return {}, {}
        chains = self.image_chains(rec)
        tops, below = {}, {}
        for index, disk in enumerate(rec.spec.disks):
            field = "disks[%d].path" % index
            chain = chains.get(disk.disk_id, [disk.path])
            tops[disk.disk_id] = self.open_image(stack, disk, chain[-1], field)
            if len(chain) > 1:
                below[disk.disk_id] = tuple(self.open_image(stack, disk, path, field) for path in chain[:-1])
        return tops, below

    def open_image(self, stack: contextlib.ExitStack, disk, path: str, field: str) -> Tuple[int, ...]:
        """Descriptors of ``path``, resolved inside the storage roots now and opened without
        following any link, so QEMU gets the file that was checked (a symlink swapped in
        since fails the task). Read-write and read-only, as QEMU picks from a descriptor set
        by access mode. They stay open until ``stack`` closes."""
        from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import open_confined, resolve_in_roots

        real = resolve_in_roots(path, self.storage_roots, field)
        modes = (os.O_RDONLY,) if disk.readonly or disk.media == "cdrom" else (os.O_RDWR, os.O_RDONLY)
        try:
            return tuple(stack.enter_context(open_confined(real, mode, field=field)).fd for mode in modes)
        except FileNotFoundError:
            raise SpecError(field, "%s does not exist" % real) from None

    # -- journaled files --------------------------------------------------------------
    def rotate_serial_log(self, rec: VmRecord, paths: VmPaths) -> None:
        """QEMU truncates the serial log it opens: the last run's (which may tell why it
        crashed) is kept as ``.1``, one back, and removed with the VM."""
        if os.path.lexists(paths.serial_log):
            older = paths.serial_log + ".1"
            self.store.journal_add(self.key(rec), "serial_log", older)
            os.replace(paths.serial_log, older)

    def release_files(self, rec: VmRecord, keep_serial_log: bool, keep_nvram: bool = True) -> None:
        """Remove the journaled files and TAPs of a VM whose process is gone. The NVRAM
        outlives the process (it is the VM's firmware settings) until the VM is removed.
        Entries of the files removed leave the journal in one transaction, after the files."""
        gone: List[Tuple[str, str]] = []
        key = self.key(rec)
        try:
            # A swtpm ends before anything else goes: its state directory may go after it.
            for kind, ref in sorted(self.store.journal_list(key), key=lambda entry: entry[0] != SWTPM):
                if (keep_serial_log and kind == "serial_log") or (keep_nvram and kind in KEPT_WITH_VM):
                    continue
                if kind == "tap":
                    self.drop_tap(rec, ref)
                    continue
                if kind in (SWTPM, TPM_STATE):
                    _end_tpm(kind, ref, tpm_state_dir(self.nvram_dir, rec.uuid))
                    gone.append((kind, ref))
                    continue
                if kind == "virtiofsd":  # vm/engine/virtiofs.py: the daemon too, not only its socket
                    from ansible_collections.infinivirt.core.plugins.module_utils.host.virtiofsd import stop

                    stop(ref)
                if kind != RESUME:  # a note, not a file
                    _unlink(rec, kind, ref)
                gone.append((kind, ref))
        finally:
            self.store.journal_remove_many(key, gone)

    def remove_file(self, rec: VmRecord, kind: str, ref: str) -> None:
        """One journaled file, then its journal entry."""
        _unlink(rec, kind, ref)
        self.store.journal_remove(self.key(rec), kind, ref)


def tpm_state_dir(nvram_dir: str, uuid: str) -> str:
    """The TPM's state (tpm: swtpm's files), next to the VM's NVRAM."""
    return os.path.join(nvram_dir, uuid + ".tpm")


def _end_tpm(kind: str, ref: str, state_dir: str) -> None:
    import shutil

    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.platform import stop_swtpm

    if kind == SWTPM:
        stop_swtpm(ref, state_dir)
    else:
        shutil.rmtree(ref, ignore_errors=True)


def _unlink(rec: VmRecord, kind: str, ref: str) -> None:
    try:
        os.unlink(ref)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise QemuError("VM %s: cannot remove %s %s: %s" % (rec.name, kind, ref, exc)) from exc
