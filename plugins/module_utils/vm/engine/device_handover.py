# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a VM's devices need when it moves live (issues 23 and 25; docs/architecture.md
"Migration", "Devices across a live migration"). Imported by a migration only.

- The target builds the device set the source runs: the recorded running spec, corrected
  here first where it no longer says what the QEMU has (a VM started before ``usb_tablet``
  existed has no tablet; its unset option now means one).
- ``shared_dirs``: QEMU 7.2's vhost-user-fs device blocks migration: refused before
  anything is asked of the target.
- The TPM's state and the UEFI variables travel in the stream into the target's own files in
  its ``nvram_dir``; a target whose ``nvram_dir`` already has them (shared with the source,
  or a leftover) refuses: swtpm 0.7 locks its state directory, and each side removes its
  own files when it is done with the VM.
- Display ports and vsock CIDs are host claims: the target claims its own while the
  source keeps its claim; each side releases its host's when it lets the VM go.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import tpm_state_dir
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.display import TABLET_ID, tablet_on
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord

CLAIMED_PER_HOST = ("display port", "vsock CID")  # display_port.CLAIM_DISPLAY, platform.CLAIM_VSOCK


def live_blocker(spec) -> Optional[SpecError]:
    """What in ``spec`` cannot move live (None: nothing)."""
    if spec.shared_dirs:
        return SpecError(
            "shared_dirs",
            "QEMU 7.2's vhost-user-fs device (virtiofs) blocks live migration: stop the VM and move "
            "it offline, or remove shared_dirs first",
        )
    return None


def check_source(engine, rec: VmRecord, check_mode: bool) -> None:
    """The source, before it asks the target: refuse what cannot move (nothing changed), and
    make the recorded running spec say what this QEMU has (not in check mode)."""
    blocker = live_blocker(rec.running_spec or rec.spec)
    if blocker is not None:
        raise StateError("VM %s cannot move live: %s" % (rec.name, blocker))
    if not check_mode:
        align_tablet(engine, rec)


def align_tablet(engine, rec: VmRecord) -> bool:
    """A running spec whose ``usb_tablet`` disagrees with the QEMU (started before the option
    existed: no tablet, while the unset option now means one) is corrected to what runs, so
    the target builds the same devices; the tablet then comes with the next restart
    (pending_restart says so). Whether the row was rewritten."""
    running = rec.running_spec
    if running is None:
        return False
    children = engine.sessions.qmp(rec, "qom-list", {"path": "/machine/peripheral"})
    present = any(child.get("name") == TABLET_ID for child in children)
    if tablet_on(running) == present:
        return False
    rec.running_spec = dataclasses.replace(running, usb_tablet=present)
    records.save(engine.store, rec)
    return True


def target_refusal(engine, rec: VmRecord) -> Optional[str]:
    """Why this host cannot take ``rec``'s devices over (None: it can), before anything is made."""
    running = rec.running_spec or rec.spec
    blocker = live_blocker(running)
    if blocker is not None:
        return str(blocker)
    kept = []
    if running.tpm is not None:
        kept.append(("TPM state", tpm_state_dir(engine.resources.nvram_dir, rec.uuid)))
    if running.firmware == "uefi":
        kept.append(("UEFI variables", engine.resources.nvram_path(rec)))
    for what, path in kept:
        if os.path.lexists(path):
            return (
                "nvram_dir: the VM's %s %s already exists on host %s (an nvram_dir shared with %s, or a "
                "leftover): the stream carries them into files of this host's own; give each host its own "
                "nvram_dir, or remove the leftover" % (what, path, engine.host_id, rec.host)
            )
    return None


def release_claims_here(store, uuid: str, host: str) -> None:
    """One side's display port and vsock CID claims, the other side's kept."""
    for kind in CLAIMED_PER_HOST:
        store.release_host_claims(uuid, kind, host=host)
