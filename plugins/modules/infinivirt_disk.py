#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_disk
short_description: Create, grow, convert and remove qcow2 and raw disk volumes, optionally LUKS-encrypted
version_added: 0.1.0
description:
  - Manages one disk image file (a volume) on the host the task runs on, with C(qemu-img).
    Volumes live under the directories listed in O(storage_roots) (a shared option of the
    collection); any other path is refused.
  - A new volume is created with O(size), or as a linked clone of O(backing_file). An existing
    one is grown when O(size) is larger, shrunk only with O(force=true), and converted to
    another O(format) only with O(convert=true). Options left unset keep the volume as it is.
  - Growing a volume that a running VM on this host has attached is done live, over QMP
    (C(block_resize)), so the guest sees the new size at once. Shrinking and converting are
    offline operations; QEMU's image locking makes them fail on a volume a running VM uses.
  - With O(encrypt=true) the volume is LUKS-encrypted (a qcow2 volume with C(encrypt.format=luks),
    or a raw LUKS file). Its passphrase is 32 random bytes, stored encrypted in the database
    (see O(secret_key_file)) and handed to QEMU as a secret object in a private 0600 file,
    never on a command line.
  - The database records each volume (path, format, encryption, key). An image already at
    O(path) that Infinivirt did not create is adopted (recorded) on the first run, which
    reports a change; an encrypted one cannot be adopted, as its key is unknown.
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
    details: The diff shows the path, state, format, size in bytes, encryption, backing file
      and whether the volume is recorded in the database, before and after.
  idempotent:
    support: full
options:
  path:
    description:
      - Absolute path of the volume file. It must lie inside one of O(storage_roots) once
        symlinks and V(..) are resolved; the directory it is in must exist.
      - Commas, quotes and V(=) in the path are fine; control characters are refused.
      - The volume is known by its resolved path, which RV(volume.path) returns.
    type: path
    required: true
  state:
    description:
      - V(present) creates the volume or brings it to the options given.
      - V(absent) deletes the file and its database row (with its key). It is refused while
        a VM definition lists the volume among its disks, while another volume uses it as
        its backing file, and while a process (a running VM) has it open for writing.
    type: str
    choices: [present, absent]
    default: present
  format:
    description:
      - Image format. Default for a new volume is V(qcow2); an existing volume keeps its format.
      - A different format for an existing volume needs O(convert=true).
    type: str
    choices: [qcow2, raw]
  size:
    description:
      - Virtual size (what the guest sees) as bytes or with a binary unit, for example
        V(10G), V(512M), V(1.5G), V(10GiB) or V(4096). Units K, M, G and T are powers of 1024.
      - It must be a multiple of 512 bytes; other values are refused rather than rounded.
      - Required to create a volume, unless O(backing_file) is given (its size is used).
      - A larger size grows the volume; a smaller one needs O(force=true).
    type: str
  backing_file:
    description:
      - Create the volume as a linked clone (qcow2 overlay) of this image, which must exist
        inside O(storage_roots) and must not be encrypted. Needs O(format=qcow2).
      - Only at creation; an existing volume with another backing file is an error.
    type: path
  backing_format:
    description:
      - Format of O(backing_file). Default is the format recorded for it in the database,
        else the one C(qemu-img) detects.
    type: str
    choices: [qcow2, raw]
  preallocation:
    description:
      - How much space to allocate when creating, growing or converting the volume.
        V(metadata) (qcow2, or an encrypted raw volume) allocates the image metadata only;
        V(falloc) reserves the space with C(fallocate); V(full) writes it out.
      - Not possible with O(backing_file); a live resize does not preallocate. It is not
        recorded, so changing it alone changes nothing.
    type: str
    choices: ['off', metadata, falloc, full]
  encrypt:
    description:
      - Create the volume LUKS-encrypted. Only at creation; changing it for an existing
        volume is an error. Cannot be combined with O(backing_file).
    type: bool
  convert:
    description:
      - Allow converting an existing volume to O(format). The volume is copied into a new
        file next to it, which then replaces it in one rename; a linked clone converted this
        way loses its backing file (its data is copied in). Refused while a VM definition
        lists the volume or a running process uses it.
    type: bool
    default: false
  force:
    description:
      - Allow shrinking the volume (a O(size) smaller than the current one). Data beyond the
        new end is lost.
    type: bool
    default: false
notes:
  - Volumes are created with mode 0600.
  - Converting an encrypted volume, or a raw one into qcow2, may allocate the whole virtual
    size (encrypted data has no holes).
seealso:
  - module: infinivirt.core.infinivirt_vm
  - module: infinivirt.core.infinivirt_secret_key
"""

EXAMPLES = r"""
- name: A 20 GiB qcow2 volume
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web01.qcow2
    size: 20G

- name: A linked clone of a base image
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web02.qcow2
    backing_file: /var/lib/infinivirt/images/debian-12-base.qcow2

- name: An encrypted raw volume, fully allocated
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/db01-data.img
    format: raw
    size: 100G
    encrypt: true
    preallocation: falloc

- name: Grow it (live when a running VM has it attached)
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/db01-data.img
    size: 200G

- name: Convert a raw volume to qcow2 in place
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/legacy.img
    format: qcow2
    convert: true

- name: Volumes in another directory, with the state database on PostgreSQL
  infinivirt.core.infinivirt_disk:
    path: /srv/vm-disks/app01.qcow2
    size: 10G
    storage_roots:
      - /srv/vm-disks
    db_url: postgresql://infinivirt@db.example.com/infinivirt

- name: Remove a volume
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web02.qcow2
    state: absent
"""

RETURN = r"""
volume:
  description:
    - The volume after the task. In check mode, the fields the task would set are
      predicted, while RV(volume.actual_size) and RV(volume.info) describe the file as it is
      now (null and empty for a volume not created yet).
    - With O(state=absent), only RV(volume.path) and RV(volume.state).
  returned: always
  type: dict
  contains:
    path:
      description: Resolved absolute path of the volume.
      type: str
      sample: /var/lib/infinivirt/images/web01.qcow2
    state:
      description: V(present) or V(absent).
      type: str
      sample: present
    format:
      description: V(qcow2) or V(raw) (an encrypted raw volume is a LUKS file).
      type: str
      sample: qcow2
    virtual_size:
      description: Size the guest sees, in bytes.
      type: int
      sample: 21474836480
    actual_size:
      description: Space the file takes on the host, in bytes.
      type: int
      sample: 200704
    encrypted:
      description: Whether the volume is LUKS-encrypted.
      type: bool
      sample: false
    backing_file:
      description: The backing file of a linked clone, or null.
      type: str
      sample: /var/lib/infinivirt/images/debian-12-base.qcow2
    backing_format:
      description: Format of the backing file, or null.
      type: str
      sample: qcow2
    attached_to:
      description: Name of the running VM that took a live resize in this task, or null.
      type: str
      sample: db01
    used_by:
      description: Names of the VMs whose definition lists this volume among their disks.
      type: list
      elements: str
      sample: []
    host:
      description: The hypervisor (O(host_id)) the volume is recorded for.
      type: str
      sample: hv01
    info:
      description: What C(qemu-img info --output=json) reports about the file; nothing in it is secret.
      type: dict
      sample:
        virtual-size: 21474836480
        filename: /var/lib/infinivirt/images/web01.qcow2
        format: qcow2
        actual-size: 200704
        cluster-size: 65536
        dirty-flag: false
"""

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS, PREALLOCATIONS
from ansible_collections.infinivirt.core.plugins.module_utils.validation import PRESENT_ABSENT
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.live_resize import resize_attached_disk
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=list(PRESENT_ABSENT)),
            format=dict(type="str", choices=list(FORMATS)),
            size=dict(type="str"),
            backing_file=dict(type="path"),
            backing_format=dict(type="str", choices=list(FORMATS)),
            preallocation=dict(type="str", choices=list(PREALLOCATIONS)),
            encrypt=dict(type="bool"),
            convert=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )

    params = module.params
    module.run(
        lambda ctx: DiskService(
            ctx.store,
            ctx.secret_box,
            ctx.host_id,
            ctx.storage_roots,
            live_resize=lambda path, size: resize_attached_disk(ctx, path, size),
            lock_timeout=ctx.lock_timeout,
        ).ensure(params, module.check_mode)
    )


if __name__ == "__main__":
    main()
