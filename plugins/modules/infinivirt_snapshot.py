#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_snapshot
short_description: Take, revert and delete snapshots of an Infinivirt VM's disks
version_added: 0.1.0
description:
  - Manages a named snapshot across all writable disks of a VM at once, either internal
    (inside each qcow2 image) or external (an overlay file per disk, for any image format).
  - An internal snapshot needs every writable disk in qcow2.
  - A stopped VM is snapshotted, reverted and cleaned up with C(qemu-img).
  - A running VM is snapshotted live. Without O(memory), one QMP transaction snapshots every
    disk atomically; reverting such a snapshot stops the VM (as
    M(infinivirt.core.infinivirt_vm) O(infinivirt.core.infinivirt_vm#module:state=stopped)
    does), reverts the disks and starts it again. With O(memory=true) the RAM and device
    state are saved too (QMP C(snapshot-save)), and reverting (C(snapshot-load)) restores
    the running guest without a restart, then sets the balloon to the VM's
    O(infinivirt.core.infinivirt_vm#module:memory_target_mb) again.
  - An external snapshot (O(type=external)) freezes each disk's current image and puts a new
    qcow2 overlay (C(<image>.<name>.overlay.qcow2), beside the image, mode 0600) on top; a
    running VM switches to the overlays in one QMP transaction. The module creates each
    overlay itself (never through a symbolic link) and hands it to QEMU as a descriptor;
    the overlay goes under a disk's I/O limits, which keep applying. Reverting discards the changes made
    since (and any external snapshot taken after it) and starts over on a fresh overlay;
    deleting merges the overlay into the image below, keeping today's data. Both work on
    closed images, so a running VM is stopped and started again for them. A disk with
    external snapshots cannot be hot-unplugged or grown until they are deleted, and
    encrypted volumes take internal snapshots only.
  - When a running VM has the QEMU guest agent
    (O(infinivirt.core.infinivirt_vm#module:guest_agent)) and it answers, a live snapshot
    without O(memory) freezes the guest's file systems (C(guest-fsfreeze-freeze)) for the
    moment of the QMP transaction and thaws them after, also when the snapshot fails;
    RV(frozen) says whether and RV(frozen_filesystems) how many. Otherwise the snapshot is crash-consistent.
  - A UEFI VM's NVRAM is copied with each snapshot and restored on revert.
  - A task cut off half-way (a cancelled job, a lost connection) is finished or undone by the
    next run of the same task; a VM it had stopped to revert or delete is started again.
  - M(infinivirt.core.infinivirt_vm_info) lists a VM's snapshots.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: partial
    details: O(state=reverted) always reverts and reports a change.
options:
  vm:
    description: Name of the VM.
    type: str
    required: true
  name:
    description:
      - Name of the snapshot, 1 to 64 letters, digits, V(.), V(_) or V(-).
      - A snapshot counts as present only when every writable disk has it.
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot unless it exists; V(absent) deletes it if it exists;
        V(reverted) returns the disks (and, for a snapshot with memory, the running guest)
        to it.
    type: str
    choices: [present, absent, reverted]
    default: present
  type:
    description:
      - V(internal) or V(external), for a new snapshot. An existing snapshot is reverted or
        deleted as what it is.
    type: str
    choices: [internal, external]
    default: internal
  memory:
    description:
      - Also save the running VM's RAM and device state, so that a revert resumes the guest
        where it was. Needs a running VM.
      - The state is saved into the first writable disk that is not encrypted (QEMU cannot
        write it into an encrypted image); a VM whose disks are all encrypted is refused.
    type: bool
    default: false
  stop_timeout:
    description:
      - Seconds to wait for the guest to power off when reverting a disk-only snapshot of a
        running VM.
      - V(0) waits for nothing. With O(force=true) QEMU is ended at once; without it the task
        fails at once if the VM is not off. A negative value is an error.
    type: float
    default: 60.0
  force:
    description:
      - When reverting a disk-only snapshot of a running VM whose guest does not power off
        within O(stop_timeout), end QEMU instead of failing.
    type: bool
    default: false
  shutdown_mode:
    description:
      - How the task powers a running VM off when it has to stop it (to revert a disk-only
        snapshot, or to revert or delete an external one), as
        O(infinivirt.core.infinivirt_vm#module:shutdown_mode) does for
        M(infinivirt.core.infinivirt_vm).
      - V(acpi) presses the ACPI power button.
      - V(agent) asks the guest agent (C(guest-shutdown), see
        O(infinivirt.core.infinivirt_vm#module:guest_agent)); when the agent does not answer
        within 2 seconds (or the VM runs without its channel, or is paused), the ACPI power
        button is pressed instead, with a warning.
      - Either way O(stop_timeout) bounds the whole wait and O(force) ends QEMU after it.
    type: str
    choices: [acpi, agent]
    default: acpi
seealso:
  - module: infinivirt.core.infinivirt_vm
  - module: infinivirt.core.infinivirt_vm_info
"""

EXAMPLES = r"""
- name: Snapshot web01 before an upgrade, with its memory
  infinivirt.core.infinivirt_snapshot:
    vm: web01
    name: before-upgrade
    memory: true

- name: Roll back
  infinivirt.core.infinivirt_snapshot:
    vm: web01
    name: before-upgrade
    state: reverted

- name: Roll back disks only; the guest is shut down through its agent for it
  infinivirt.core.infinivirt_snapshot:
    vm: db01
    name: before-migration
    state: reverted
    shutdown_mode: agent
    stop_timeout: 120

- name: Freeze the disks of db01 under overlay files (works for raw images too)
  infinivirt.core.infinivirt_snapshot:
    vm: db01
    name: nightly
    type: external

- name: Drop the snapshot
  infinivirt.core.infinivirt_snapshot:
    vm: web01
    name: before-upgrade
    state: absent
"""

RETURN = r"""
action:
  description: What was done (predicted in check mode) - V(create), V(delete), V(revert), or null.
  returned: always
  type: str
  sample: create
frozen:
  description:
    - Whether the guest's file systems were frozen through its guest agent for this task's
      live snapshot; V(false) when nothing was taken live or the agent did not answer.
  returned: always
  type: bool
  sample: true
frozen_filesystems:
  description:
    - How many file systems the guest agent froze for this task's live snapshot (its answer
      to C(guest-fsfreeze-freeze)); V(0) when RV(frozen) is V(false).
  returned: always
  type: int
  sample: 2
snapshots:
  description: The VM's snapshots after the task.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Snapshot name.
      type: str
    type:
      description: V(internal) or V(external).
      type: str
    vm_state_size:
      description: Bytes of saved RAM and device state; 0 for a disk-only snapshot.
      type: int
    date_sec:
      description: When it was taken, in seconds since the epoch.
      type: int
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import SHUTDOWN_MODES
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import STATES, TYPES, SnapshotService


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            vm=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=list(STATES)),
            type=dict(type="str", default="internal", choices=list(TYPES)),
            memory=dict(type="bool", default=False),
            stop_timeout=dict(type="float", default=60.0),
            force=dict(type="bool", default=False),
            shutdown_mode=dict(type="str", default="acpi", choices=list(SHUTDOWN_MODES)),
        ),
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )

    module.run(lambda ctx: SnapshotService(acting_engine(ctx)).ensure(module.params, module.check_mode))


if __name__ == "__main__":
    main()
