# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a start does for the platform devices (vm/model/devices.py) on this host: the host
checks, the VM's swtpm and its state, and the guest's vsock CID. Imported by the start and
the host checks only.

- TPM: the state directory ``<nvram_dir>/<uuid>.tpm`` (0700) is journaled as ``tpm_state``
  and kept with the VM like its NVRAM (resources.KEPT_WITH_VM); the swtpm process is
  journaled by its pidfile (``swtpm``) before it exists and ended with QEMU's files
  (resources.release_files: a stop, an aborted start, the monitor's clean-up of a dead QEMU).
- vsock: the CID is a host claim (store/claims.py) of the VM, exclusive; a VM keeps the one
  it got while it stays on the host, so the guest's address does not change between starts.
  The claim goes with the VM (``absent``).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import ClaimConflict, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import SWTPM, TPM_STATE, tpm_state_dir
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.devices import VSOCK_CID_MAX, VSOCK_CID_MIN

SWTPM_FILE = "swtpm_file"  # journal kind: its socket
VSOCK_DEVICE = "/dev/vhost-vsock"
CLAIM_VSOCK = "vsock CID"  # host claims of guest CIDs
CLAIM_ATTEMPTS = 20


def check_host(spec: Any, vsock_device: str = VSOCK_DEVICE, swtpm_binary: Optional[Callable[[], Any]] = None) -> None:
    """Refuse, naming the option, a device this host cannot give (before anything is made)."""
    if spec.tpm is not None and (swtpm_binary or swtpm.binary)() is None:
        raise SpecError("tpm", "this host has no swtpm (install the swtpm package; the host role does)")
    if spec.vsock is not None and not os.path.exists(vsock_device):
        raise SpecError(
            "vsock",
            "this host has no %s (load the vhost_vsock kernel module, or leave vsock unset)" % vsock_device,
        )


def tpm_files(run_dir: str, nvram_dir: str, uuid: str) -> swtpm.SwtpmFiles:
    base = os.path.join(run_dir, uuid)
    return swtpm.SwtpmFiles(
        state_dir=tpm_state_dir(nvram_dir, uuid),
        socket=base + ".swtpm",  # not <uuid>.tpm: that is the state directory when nvram_dir is run_dir
        pidfile=base + ".swtpm.pid",
    )


def start_tpm(engine, rec) -> Optional[str]:
    """The VM's swtpm, journaled before it exists, on its kept state; its control socket."""
    if rec.spec.tpm is None:
        return None
    files = tpm_files(engine.run_dir, engine.resources.nvram_dir, rec.uuid)
    store = engine.store
    key = engine.resources.key(rec)  # this host's side of it during a migration
    store.journal_add(key, TPM_STATE, files.state_dir)  # kept until the VM is removed
    os.makedirs(os.path.dirname(files.state_dir), mode=0o700, exist_ok=True)
    if not os.path.isdir(files.state_dir):
        os.mkdir(files.state_dir, 0o700)
    os.chmod(files.state_dir, 0o700)
    store.journal_add_many(key, [(SWTPM, files.pidfile), (SWTPM_FILE, files.socket)])
    try:
        swtpm.start(files)
    except Exception:
        engine.resources.release_files(rec, keep_serial_log=True)  # a half-started swtpm and its files
        raise
    return files.socket


def stop_swtpm(pidfile: str, state_dir: str) -> None:
    """End the swtpm a journal entry names (if it still runs) and remove its pidfile."""
    swtpm.stop(swtpm.SwtpmFiles(state_dir=state_dir, socket="", pidfile=pidfile))
    if os.path.lexists(pidfile):
        os.unlink(pidfile)


def claim_vsock(store, host: str, rec, incoming: bool = False) -> Optional[int]:
    """The guest CID of this start: vsock.cid when pinned, else the one the VM holds on this
    host, else the lowest free one. Taken as an exclusive claim in the store's serialized
    claim transaction: two starts that pick the same free CID cannot both get it (the loser
    picks again). A migration target's start (``incoming``) takes the source's CID."""
    if rec.spec.vsock is None:
        return None
    if incoming:
        return claim_incoming_vsock(store, host, rec)
    pinned = rec.spec.vsock.get("cid")
    if pinned is not None:
        try:
            store.claim_host(host, CLAIM_VSOCK, rec.uuid, rec.name, {str(pinned): True})
        except ClaimConflict as exc:
            raise SpecError("vsock.cid", "CID %d is held by VM %s on host %s" % (pinned, exc.holder, host)) from None
        return pinned
    for _attempt in range(CLAIM_ATTEMPTS):
        claims = store.list_host_claims(host, CLAIM_VSOCK)
        mine = [int(c["value"]) for c in claims if c["owner"] == rec.uuid]
        if mine:
            return mine[0]
        taken = {int(c["value"]) for c in claims}
        cid = next(n for n in range(VSOCK_CID_MIN, VSOCK_CID_MIN + len(taken) + 1) if n not in taken)
        if cid > VSOCK_CID_MAX:
            raise SpecError("vsock", "no guest CID is free on host %s" % host)
        try:
            store.claim_host(host, CLAIM_VSOCK, rec.uuid, rec.name, {str(cid): True})
            return cid
        except ClaimConflict:
            continue  # another VM's start took it between the read and the claim
    raise SpecError("vsock", "could not claim a guest CID on host %s (too many concurrent starts)" % host)


def claim_incoming_vsock(store, host: str, rec) -> int:
    """A migration target's CID: the one the guest has on its source host (a running guest's
    address cannot change), claimed here while the source keeps its own claim. SpecError
    naming the CID when another VM holds it here."""
    held = [
        int(c["value"])
        for c in store.list_host_claims(kind=CLAIM_VSOCK)
        if c["owner"] == rec.uuid and c["host"] != host
    ]
    if not held:
        raise SpecError("vsock", "VM %s has no guest CID recorded on its source host: restart it there once" % rec.name)
    cid = held[0]
    try:
        store.claim_host(host, CLAIM_VSOCK, rec.uuid, rec.name, {str(cid): True}, other_hosts_kept=True)
    except ClaimConflict as exc:
        raise SpecError(
            "vsock",
            "CID %d, the guest's address on its source host, is held by VM %s on host %s, and a running "
            "guest's CID cannot change: migrate it to another host, or stop it and start it here"
            % (cid, exc.holder, host),
        ) from None
    return cid


# -- snapshots: the TPM's state is copied with the NVRAM (vm/snapshots.py) ---------------------
def tpm_snapshot_dir(nvram_dir: str, uuid: str, name: str) -> str:
    return "%s.snapshot-%s" % (tpm_state_dir(nvram_dir, uuid), name)


def save_tpm(engine, rec, name: str) -> None:
    """A copy of the TPM's state as the snapshot ``name`` (journaled, removed with the VM)."""
    nvram_dir = engine.resources.nvram_dir
    source = tpm_state_dir(nvram_dir, rec.uuid)
    if rec.spec.tpm is None or not os.path.isdir(source):
        return
    target = tpm_snapshot_dir(nvram_dir, rec.uuid, name)
    engine.store.journal_add(rec.uuid, TPM_STATE, target)
    if not os.path.isdir(target):
        os.mkdir(target, 0o700)
    copy_state(source, target)


def restore_tpm(engine, rec, name: str) -> None:
    """The snapshot's TPM state back in place, unless a swtpm runs on it: then QEMU has just
    loaded the snapshot's TPM state from its saved RAM into that swtpm."""
    files = tpm_files(engine.run_dir, engine.resources.nvram_dir, rec.uuid)
    source = tpm_snapshot_dir(engine.resources.nvram_dir, rec.uuid, name)
    if os.path.isdir(source) and os.path.isdir(files.state_dir) and swtpm.live_pid(files) is None:
        copy_state(source, files.state_dir)


def drop_tpm(engine, rec, name: str) -> None:
    target = tpm_snapshot_dir(engine.resources.nvram_dir, rec.uuid, name)
    if os.path.isdir(target):
        shutil.rmtree(target)
        engine.store.journal_remove(rec.uuid, TPM_STATE, target)


def copy_state(source: str, target: str) -> None:
    """Make ``target``'s regular files those of ``source`` (0600, no link followed)."""
    wanted = {e.name for e in os.scandir(source) if e.is_file(follow_symlinks=False)}
    for entry in os.scandir(target):
        if entry.name not in wanted and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
    for name in sorted(wanted):
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        src = os.open(os.path.join(source, name), os.O_RDONLY | flags)
        try:
            tmp = os.path.join(target, ".%s.tmp" % name)
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, 0o600)
            try:
                while True:
                    chunk = os.read(src, 1 << 20)
                    if not chunk:
                        break
                    os.write(dst, chunk)
            finally:
                os.close(dst)
            os.replace(tmp, os.path.join(target, name))
        finally:
            os.close(src)
