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
  - A new volume is created with O(size), as a linked clone of O(backing_file), from an image
    (O(source), a local file or an C(http://) or C(https://) URL) or from a template volume (O(clone_from)).
    An existing
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
      and whether the volume is recorded in the database, before and after. In check mode a
      volume from a URL not in the image cache yet has no predicted size.
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
  source:
    description:
      - Make a new volume from this image, a local file (an absolute path) or an C(http://) or
        C(https://) URL, in any format C(qemu-img) reads (probed), copied into O(format)
        (default V(qcow2)). With O(size), the volume is then grown to it (never smaller than
        the image).
      - A URL needs O(checksum). It is downloaded into the image cache (see O(image_cache_dir))
        under its digest, so another volume from the same image downloads nothing; a dropped
        connection is resumed with an HTTP Range request (or started again), up to 5 attempts.
        A download that does not match O(checksum) is not kept. Check mode downloads nothing.
      - Every file the image reads (backing files, a qcow2 data file, VMDK extents) must lie
        inside O(storage_roots); an image reading any other file is refused, naming it. The
        source file itself may lie anywhere (it is only read).
      - A user name or password in the URL is refused. This module's results and messages
        show the URL without its query string, but Ansible echoes the option as given in the
        task's C(invocation) (with C(-v)), so keep tokens that must stay secret out of it.
      - Only used to create the volume; an existing volume is left as it is (a rerun is not a
        change), and the volume keeps no record of its source.
      - Cannot be combined with O(clone_from), O(backing_file) or O(encrypt).
    type: str
  checksum:
    description:
      - The SHA-256 digest of O(source), as V(sha256:) followed by 64 hexadecimal digits.
        Required for a URL, optional for a local file (then the file is hashed before it is
        copied). A mismatch fails the task and leaves nothing behind.
    type: str
  clone_from:
    description:
      - Make a new volume from this template volume, which must lie inside O(storage_roots),
        with its backing files, and must not be encrypted. See O(clone_mode).
      - A linked clone of a template that a VM definition lists as a writable disk is refused
        (the VM's writes would corrupt the clone); make the disk read-only in that VM or use
        V(full). A full clone of a template a running VM has open for writing is refused by
        C(qemu-img)'s image locking.
      - Only used to create the volume, like O(source).
    type: path
  clone_mode:
    description:
      - V(linked) makes a qcow2 overlay whose backing file is O(clone_from) (fast, small; the
        template must then stay unchanged). V(full) copies the template into an independent
        volume of O(format).
      - Default is V(linked) when O(clone_from) is set.
    type: str
    choices: [linked, full]
  image_cache_dir:
    description:
      - Directory for the images downloaded by O(source), inside O(storage_roots). It is
        made (mode 0700) when missing. Default is the directory C(.infinivirt-images) in the
        first storage root. Nothing in it is ever removed by the collection.
    type: path
notes:
  - Volumes are created with mode 0600.
  - A volume made from O(source) or O(clone_from) is written under a hidden temporary name
    next to it and appears under its own name only complete.
  - Disks of M(infinivirt.core.infinivirt_vm) cannot name a template yet; make the volume with
    this module first.
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

- name: A volume from a cloud image, downloaded once and cached by its checksum
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/debian-12-base.qcow2
    source: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2
    checksum: "sha256:{{ debian_image_sha256 }}"

- name: A linked clone of that template, grown to 20 GiB
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web03.qcow2
    clone_from: /var/lib/infinivirt/images/debian-12-base.qcow2
    size: 20G

- name: An independent raw copy of the template
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web04.img
    clone_from: /var/lib/infinivirt/images/debian-12-base.qcow2
    clone_mode: full
    format: raw

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
    source:
      description:
        - What this task made (in check mode, would make) the volume from, O(source) (a URL
          without its query string) or the resolved path of O(clone_from); null when the task
          did not make the volume from an image or template (also on a rerun).
      type: str
      sample: https://images.example.com/debian-12.qcow2
    cached:
      description:
        - For a volume made from a URL in this task, whether the image was in the image cache
          already (V(true), nothing was downloaded); null otherwise.
      type: bool
      sample: false
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

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS, PREALLOCATIONS
from ansible_collections.infinivirt.core.plugins.module_utils.validation import PRESENT_ABSENT
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.live_resize import resize_attached_disk
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import CLONE_MODES
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
            source=dict(type="str"),
            checksum=dict(type="str"),
            clone_from=dict(type="path"),
            clone_mode=dict(type="str", choices=list(CLONE_MODES)),
            image_cache_dir=dict(type="path"),
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
