#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_backup
short_description: Back up, restore and prune an Infinivirt VM's disks
version_added: 0.2.0
description:
  - Takes a backup point of every writable disk of a VM, running or stopped, into
    C(<target>/<vm>/), a local directory or a mounted share; a point is a directory with a
    qcow2 file per disk and the VM's definition, listed in C(<target>/<vm>/manifest.json).
    The directory alone restores the VM, also on another host.
  - A full point copies the whole disk; an incremental one copies only the clusters written
    since the point before (a persistent dirty bitmap named C(infinivirt-backup) on each
    qcow2 disk), and its files name the point before as their qcow2 backing file.
  - A running VM is copied by its own QEMU (C(blockdev-backup) jobs started in one QMP
    transaction with the bitmap's reset), while the guest keeps running; a stopped VM's
    images by a C(qemu-storage-daemon) of the task's own, with the same jobs, so the bitmap
    stays right either way.
  - When the running VM's guest agent (O(infinivirt.core.infinivirt_vm#module:guest_agent))
    answers, its file systems are frozen for the instant the copy starts; RV(consistency)
    says V(frozen), V(crash) (crash-consistent) or V(offline) (the VM was stopped).
  - An encrypted volume (made by M(infinivirt.core.infinivirt_disk)) is backed up into a
    qcow2 file encrypted with the same key; the key reaches QEMU and qemu-img as a
    descriptor, never in argv.
  - A point counts once it is complete. Its files are written under C(<id>.part/), synced
    and renamed, and only then listed in the manifest. A task cut off (killed, QEMU killed,
    disk full) leaves the earlier points usable; the next task removes what it left, and
    an incremental point it asks for becomes a full one, with RV(fallback_reason) saying why
    (also when the bitmap is missing or QEMU ended without storing it, or a disk is raw).
  - O(state=restored) copies a point (its full point and incrementals) into new qcow2
    files in O(restore_dir), and with O(restore_as) defines a new stopped VM on them from
    the saved definition. It never writes over an existing file.
  - VMs with external snapshots (M(infinivirt.core.infinivirt_snapshot)) are refused.
  - M(infinivirt.core.infinivirt_backup_info) lists the points.
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
    support: none
  idempotent:
    support: none
    details:
      O(state=present) takes a new point on every run; O(state=restored) refuses to run twice into the same files.
options:
  vm:
    description: Name of the VM (for O(state=restored), the name its backups are kept under).
    type: str
    required: true
  target:
    description:
      - The backup directory, an absolute path. The VM's points go into C(<target>/<vm>/).
        Both are made (mode 0700) if missing, and must belong to root and not be writable
        by other users.
    type: path
    required: true
  state:
    description:
      - V(present) takes a new backup point; V(absent) deletes O(point) and the incremental
        points that need it, or every point of the VM when O(point) is not given;
        V(restored) restores O(point).
    type: str
    choices: [present, restored, absent]
    default: present
  mode:
    description:
      - The kind of a new point. V(auto) takes an incremental point when one can be taken
        and a full one otherwise; V(incremental) does the same but reports in
        RV(fallback_reason) why it took a full one; V(full) always takes a full one (and
        starts a new chain).
    type: str
    choices: [full, incremental, auto]
    default: auto
  keep:
    description:
      - How many chains (a full point with its incremental points) to keep after a new
        point; older chains are deleted whole, so an incremental point never loses its full
        point. Unset keeps every point.
    type: int
  point:
    description:
      - The id of a point (RV(point.id)), or V(latest), for O(state=restored) (default
        V(latest)) and O(state=absent).
    type: str
  restore_dir:
    description:
      - Where O(state=restored) writes the restored disks, C(<restore_as or vm>-<disk_id>.qcow2),
        mode 0600. Made (0700) if missing. Required with O(state=restored).
    type: path
  restore_as:
    description:
      - With O(state=restored), the name of a new VM to define (stopped) from the definition
        saved with the point, on the restored disks, with the point's UEFI variable store and
        TPM state (RV(point.firmware)); its NICs get new MAC addresses. It must not exist.
    type: str
seealso:
  - module: infinivirt.core.infinivirt_backup_info
  - module: infinivirt.core.infinivirt_snapshot
"""

EXAMPLES = r"""
- name: Nightly backup of web01, incremental when it can be, four chains kept
  infinivirt.core.infinivirt_backup:
    vm: web01
    target: /srv/backup
    keep: 4

- name: A full point (a new chain) every Sunday
  infinivirt.core.infinivirt_backup:
    vm: web01
    target: /srv/backup
    mode: full

- name: Restore the newest point as a new VM
  infinivirt.core.infinivirt_backup:
    vm: web01
    target: /srv/backup
    state: restored
    point: latest
    restore_dir: /var/lib/infinivirt/images
    restore_as: web01-restored

- name: Delete one point and the incremental points after it
  infinivirt.core.infinivirt_backup:
    vm: web01
    target: /srv/backup
    state: absent
    point: 20261206T221500Z-00
"""

RETURN = r"""
kind:
  description:
    - The kind of the new point (predicted in check mode), V(full) or V(incremental); null unless O(state=present).
  returned: always
  type: str
  sample: incremental
fallback_reason:
  description: Why a point asked for as V(incremental) is a full one; null otherwise.
  returned: always
  type: str
  sample: backup point 20261206T221500Z-00 did not finish
consistency:
  description:
    - V(frozen) (the guest agent froze the file systems), V(crash) (crash-consistent, as the
      agent did not answer or the VM has none) or V(offline) (the VM was stopped); null when
      no point was taken.
  returned: always
  type: str
  sample: frozen
point:
  description:
    - The new point (O(state=present)) or the restored one (O(state=restored)); null in check mode for a new point.
  returned: always
  type: dict
  contains:
    id:
      description: The point's id, its UTC time and a counter.
      type: str
      sample: 20261206T221500Z-00
    time:
      description: When it was taken (UTC, ISO 8601).
      type: str
    kind:
      description: V(full) or V(incremental).
      type: str
    size:
      description: Bytes of the point's files.
      type: int
    chain:
      description: The ids of the points a restore of this one reads, its full point first.
      type: list
      elements: str
    consistency:
      description: V(frozen), V(crash) or V(offline), as RV(infinivirt.core.infinivirt_backup#module:consistency).
      type: str
    firmware:
      description:
        - The VM's firmware state saved with the point beside its disks, V(nvram) (its UEFI
          variable store) and V(tpm) (its TPM's state); O(infinivirt.core.infinivirt_backup#module:restore_as)
          gives them to the VM it makes. Copied as files, of a running VM as a crash would leave them.
      type: list
      elements: str
    disks:
      description: One entry per disk of the point.
      type: list
      elements: dict
      contains:
        disk_id:
          description: The disk's id (from its path at backup time), also the file's name in the point.
          type: str
        path:
          description: The disk's path when the point was taken.
          type: str
        serial:
          description: The disk's serial, or null.
          type: str
        format:
          description: The disk's format, V(qcow2) or V(raw) (the point's file is qcow2 either way).
          type: str
        encrypted:
          description: Whether the disk, and so the point's file, is LUKS-encrypted.
          type: bool
        file:
          description: The point's file, relative to C(<target>/<vm>/).
          type: str
        size:
          description: Bytes of the point's file.
          type: int
points:
  description: The VM's complete points after the task, oldest first.
  returned: when O(state) is V(present) or V(absent)
  type: list
  elements: dict
  contains:
    id:
      description: The point's id, its UTC time and a counter.
      type: str
      sample: 20261206T221500Z-00
    time:
      description: When it was taken (UTC, ISO 8601).
      type: str
    kind:
      description: V(full) or V(incremental).
      type: str
    size:
      description: Bytes of the point's files.
      type: int
    chain:
      description: The ids of the points a restore of this one reads, its full point first.
      type: list
      elements: str
    consistency:
      description: V(frozen), V(crash) or V(offline), as RV(infinivirt.core.infinivirt_backup#module:consistency).
      type: str
    firmware:
      description:
        - The VM's firmware state saved with the point beside its disks, V(nvram) (its UEFI
          variable store) and V(tpm) (its TPM's state); O(infinivirt.core.infinivirt_backup#module:restore_as)
          gives them to the VM it makes. Copied as files, of a running VM as a crash would leave them.
      type: list
      elements: str
    disks:
      description: One entry per disk of the point.
      type: list
      elements: dict
      contains:
        disk_id:
          description: The disk's id (from its path at backup time), also the file's name in the point.
          type: str
        path:
          description: The disk's path when the point was taken.
          type: str
        serial:
          description: The disk's serial, or null.
          type: str
        format:
          description: The disk's format, V(qcow2) or V(raw) (the point's file is qcow2 either way).
          type: str
        encrypted:
          description: Whether the disk, and so the point's file, is LUKS-encrypted.
          type: bool
        file:
          description: The point's file, relative to C(<target>/<vm>/).
          type: str
        size:
          description: Bytes of the point's file.
          type: int
removed:
  description: Ids of the points deleted (by O(keep) or O(state=absent)).
  returned: when O(state) is V(present) or V(absent)
  type: list
  elements: str
cleaned:
  description: Leftovers of a cut-off backup task that this task removed (C(<id>.part) directories, unlisted points).
  returned: when O(state) is V(present) or V(absent)
  type: list
  elements: str
restored:
  description: The restored disk files.
  returned: when O(state=restored)
  type: list
  elements: dict
  contains:
    disk_id:
      description: The disk's id in the point.
      type: str
    path:
      description: The restored qcow2 file, C(<restore_dir>/<restore_as or vm>-<disk_id>.qcow2).
      type: str
vm:
  description: The new VM's name (O(restore_as)), or null.
  returned: when O(state=restored)
  type: str
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import BackupService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.backup import MODES, STATES


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            vm=dict(type="str", required=True),
            target=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=list(STATES)),
            mode=dict(type="str", default="auto", choices=list(MODES)),
            keep=dict(type="int"),
            point=dict(type="str"),
            restore_dir=dict(type="path"),
            restore_as=dict(type="str"),
        ),
        supports_check_mode=True,
        required_if=[("state", "restored", ("restore_dir",))],
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )

    module.run(lambda ctx: BackupService(acting_engine(ctx)).ensure(module.params, module.check_mode))


if __name__ == "__main__":
    main()
