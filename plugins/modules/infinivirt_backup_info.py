#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_backup_info
short_description: List the backup points of an Infinivirt VM
version_added: 0.2.0
description:
  - Lists the complete backup points that M(infinivirt.core.infinivirt_backup) took of a
    VM into a backup directory, oldest first, with their time, size, kind and chain, read
    from C(<target>/<vm>/manifest.json) (the VM need not exist on this host).
  - A point being written, or left by a task that was cut off, is not listed.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
  - infinivirt.core.attributes.info_module
options:
  vm:
    description: Name of the VM.
    type: str
    required: true
  target:
    description: The backup directory, as O(infinivirt.core.infinivirt_backup#module:target).
    type: path
    required: true
seealso:
  - module: infinivirt.core.infinivirt_backup
"""

EXAMPLES = r"""
- name: What backups of web01 are there
  infinivirt.core.infinivirt_backup_info:
    vm: web01
    target: /srv/backup
  register: backups

- name: Restore the newest point
  infinivirt.core.infinivirt_backup:
    vm: web01
    target: /srv/backup
    state: restored
    point: "{{ backups.points[-1].id }}"
    restore_dir: /var/lib/infinivirt/images
"""

RETURN = r"""
points:
  description: The VM's complete backup points, oldest first; empty when there are none.
  returned: always
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
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import list_points


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(vm=dict(type="str", required=True), target=dict(type="path", required=True)),
        supports_check_mode=True,
    )
    module.run(lambda ctx: {"changed": False, "points": list_points(module.params["target"], module.params["vm"])})


if __name__ == "__main__":
    main()
