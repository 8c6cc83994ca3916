#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_migrate
short_description: Move a running Infinivirt VM to another host live
version_added: 0.1.0
description:
  - Moves a running VM from the host the task runs on to another host that shares the same
    PostgreSQL store (live migration, QEMU's pre-copy), while the guest keeps running.
  - The task writes a request in the store; the target host's monitor
    (C(infinivirt-monitor), run by the role C(infinivirt.core.host), started with
    C(--migration-address)) starts the VM there waiting for the stream, with the same TAPs,
    bridges, firewall rules, display password, LUKS keys, hugepages and the machine version
    recorded at the VM's first start, and answers with where it listens. The stream goes
    straight from QEMU to QEMU.
  - The store names the target as the VM's host only once the guest runs there. Any failure
    before that (the target refuses, the stream breaks, the target QEMU dies, O(timeout))
    leaves the guest running here as before, and the target removes what it made.
  - The VM's lock is held for the whole task; another task on the VM waits, then fails naming
    the holder. A task cut off half-way leaves its request in the store; the next
    C(infinivirt_migrate) task on the VM finishes it (the guest runs again here, or this
    host's leftovers are removed).
  - After the move this host's QEMU, files, TAPs and firewall rules of the VM are removed.
  - A stopped VM moves offline. With O(storage=shared), or without disks, by ownership only
    (the store names O(to) as its host; no monitor is asked, and its disks must be at the
    same paths there). Otherwise the target's monitor checks its disks as for a live move
    (shared, copied, or refused naming the disk) and copies those it lacks without starting
    QEMU anywhere (it serves them over NBD from a C(qemu-storage-daemon); this host writes
    them with C(qemu-img convert), at most O(bandwidth_mbit)); the store names O(to) once
    they are there. Any failure leaves the VM on this host and the target without the disks
    it made. What this host kept of it while stopped (a UEFI VM's NVRAM, seed ISOs) is
    removed, with a warning for a UEFI VM, which starts there with the firmware's default
    variables.
  - Storage is shared or copied, per disk. The source writes a marker file (a fresh token)
    beside each disk; a disk whose marker the target sees at the same path is shared (the same
    file on both hosts). Any other disk is copied during the migration; the target creates it at
    the same path, which must be inside its storage roots and must not exist there yet, with
    the same format and virtual size (a linked clone on the same backing file, which must
    exist at the same path there), exports it over NBD, and this host mirrors it there
    (C(blockdev-mirror)) until the copy follows every write, then migrates the RAM. The file
    on this host is left as it was at the move, and no longer used (a warning names it).
  - Refused naming the disk, as they are not copied; LUKS-encrypted volumes (the key does not
    move), disks with external snapshots, read-only disks and CD-ROMs missing on the target. If the
    copy fails (the target dies, a mirror job fails, O(timeout)), the guest runs on here on its
    own disks and the target removes the disk files it made.
  - The events C(migration_started), C(migration_storage_ready),
    C(migration_postcopy_switched), C(migrated), C(migration_failed) (this host) and
    C(migration_listening), C(migration_storage_export), C(migrated_in), C(migration_refused)
    (the target) go to the VM's event log (M(infinivirt.core.infinivirt_vm_info)).
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
    support: full
    details: A VM that is on O(to) already is left alone.
options:
  name:
    description: Name of the VM; it must be on the host the task runs on.
    type: str
    required: true
  to:
    description:
      - The target host, as its monitor knows itself (its C(host_id), by default its inventory
        hostname). It must share this host's store.
    type: str
    required: true
  max_downtime_ms:
    description: The longest pause of the guest QEMU may plan for the last pass, in milliseconds.
    type: int
    default: 300
  bandwidth_mbit:
    description:
      - Limit of the migration stream in Mbit/s; unset, QEMU's own limit. It limits the copy
        of each disk too (the mirror job's speed).
    type: int
  auto_converge:
    description: Slow the guest's vCPUs down when its memory changes faster than the stream.
    type: bool
    default: false
  postcopy:
    description:
      - Switch to post-copy after the first pass over the guest's RAM (QEMU's
        C(dirty-sync-count) reaches 2); the guest then runs on the target, which fetches the
        pages it still lacks from this host. A guest that converges in pre-copy completes
        before the switch (RV(migration.postcopy_switched) says which happened).
      - With disks copied, the mirrors end at the switch, before the guest runs there.
      - A failure after the switch (the stream breaks, either QEMU dies) cannot be undone; the
        guest's memory is split between the two hosts, so it cannot run again here. The task
        fails saying so, this host's QEMU is left paused, and the guest must be started again.
        Nothing lets that QEMU run again here. M(infinivirt.core.infinivirt_vm) refuses to
        resume a guest a migration paused, a stop ends its QEMU without letting it run, and
        the next task of this module on the VM fails saying the same (event
        C(migration_postcopy_switched)).
    type: bool
    default: false
  storage:
    description:
      - V(shared) (every disk must be the same file on both hosts), V(copy) (every writable
        disk is copied; one the target shares is refused, it would be copied onto itself) or
        V(auto) (each disk shared when it is the same file there, else copied).
    type: str
    choices: [shared, copy, auto]
    default: auto
  timeout:
    description: Seconds for the whole migration, the target's answer included.
    type: int
    default: 600
notes:
  - "The stream (the guest's RAM) and, with O(storage=copy), the disks' NBD exports go over
    plain TCP to the target monitor's C(--migration-address), neither encrypted nor
    authenticated: that address must be on a network only the hypervisors reach."
  - "Devices move with the VM as it runs: the target builds the devices of the VM's running
    definition (not changes made since, which wait for a restart there too). Before the
    request, a running definition that leaves O(infinivirt.core.infinivirt_vm#module:usb_tablet)
    unset while the QEMU has no tablet (a VM started by an older version) is corrected to
    C(false), so the target builds no tablet either."
  - "A TPM (C(tpm)) moves live: the target starts its own C(swtpm) on a state directory in its
    own C(nvram_dir), QEMU carries the TPM's state in the stream, and this host's C(swtpm) and
    state directory are removed after the move. A UEFI VM's variables move the same way into
    the target's own NVRAM file. A target whose C(nvram_dir) already holds the VM's TPM state
    or NVRAM (an C(nvram_dir) shared between hosts, or a leftover) refuses, naming the path:
    each host needs its own C(nvram_dir)."
  - "SPICE and VNC displays get a port claimed on the target and their password set there over
    QMP; this host's port claim is released after the move. A C(vsock) guest keeps its CID:
    the target claims the same CID, or refuses naming it when another VM holds it there."
  - "A VM with C(shared_dirs) cannot move live (QEMU 7.2's virtiofs device blocks migration):
    refused before the target is asked, nothing changed. Stop it and move it offline."
  - "Offline, a TPM VM's state is removed from this host like the NVRAM, with a warning: it
    starts on O(to) with a new TPM."
seealso:
  - module: infinivirt.core.infinivirt_vm
"""

EXAMPLES = r"""
- name: Move web01 from hv-a to hv-b
  hosts: hv-a
  tasks:
    - name: Migrate
      infinivirt.core.infinivirt_migrate:
        name: web01
        to: hv-b
        max_downtime_ms: 200
        bandwidth_mbit: 2000
        auto_converge: true
      register: moved

    - name: Show the numbers
      ansible.builtin.debug:
        msg: "{{ moved.migration.transferred_bytes }} bytes, {{ moved.migration.downtime_ms }} ms down"

- name: Move db01 off hv-a, copying its local disks, with post-copy
  hosts: hv-a
  tasks:
    - name: Migrate
      infinivirt.core.infinivirt_migrate:
        name: db01
        to: hv-b
        storage: copy
        postcopy: true
        timeout: 3600
"""

RETURN = r"""
vm:
  description: The VM after the task.
  returned: success
  type: dict
  contains:
    name:
      description: The VM's name.
      type: str
    uuid:
      description: The VM's UUID.
      type: str
    host:
      description: The host the store names as the VM's (O(to) after a move).
      type: str
    status:
      description: The VM's status in the store (V(running), V(stopped), ...).
      type: str
    version:
      description: The VM row's version (it grows with each change of the row).
      type: int
migration:
  description:
    - What the migration took; absent when nothing was done, in check mode, and for an offline
      move by ownership only (O(storage=shared) or a VM without disks).
  returned: when a running VM was migrated, or a stopped VM with its disks checked or copied
  type: dict
  contains:
    transferred_bytes:
      description: Bytes of guest RAM sent (QEMU's C(query-migrate)).
      returned: live
      type: int
    downtime_ms:
      description: How long the guest was paused, as QEMU measured it.
      returned: live
      type: int
    total_time_ms:
      description: QEMU's own duration of the migration.
      returned: live
      type: int
    duration_s:
      description: The whole task's migration, the target's answer and the clean-up here included.
      type: float
    postcopy_switched:
      description: Whether the migration switched to post-copy (O(postcopy)).
      returned: live
      type: bool
    storage:
      description: V(copy) when a disk was copied, else V(shared).
      type: str
    storage_bytes:
      description:
        - Bytes the disk mirrors went through (QEMU's job offsets; unallocated and zero areas
          count too, though they cross the network as zeroes).
        - Offline, the bytes of data copied (C(qemu-img map)'s data areas; zero and
          unallocated areas are not sent).
      returned: when a disk was copied
      type: int
    copied_disks:
      description: The paths of the disks copied (the files here are no longer used).
      returned: when a disk was copied
      type: list
      elements: str
plan:
  description:
    - What the task does (or did); V(how) is V(live) (a running VM), V(offline) (a stopped
      one) or V(none) (the VM is on O(to) already).
  returned: success
  type: dict
  contains:
    how:
      description: V(live), V(offline) or V(none).
      type: str
    from:
      description: The VM's host before the task.
      type: str
    to:
      description: O(to).
      type: str
    storage:
      description: O(storage) (with V(auto) the target decides per disk; RV(migration.storage) says what was done).
      type: str
    max_downtime_ms:
      description: O(max_downtime_ms).
      type: int
    bandwidth_mbit:
      description: O(bandwidth_mbit), or null.
      type: int
    auto_converge:
      description: O(auto_converge).
      type: bool
    postcopy:
      description: O(postcopy).
      type: bool
    timeout:
      description: O(timeout).
      type: int
  sample:
    how: live
    from: hv-a
    to: hv-b
    storage: auto
    max_downtime_ms: 300
    bandwidth_mbit: null
    auto_converge: false
    postcopy: false
    timeout: 600
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import MigrationService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import STORAGE_MODES


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            to=dict(type="str", required=True),
            max_downtime_ms=dict(type="int", default=300),
            bandwidth_mbit=dict(type="int"),
            auto_converge=dict(type="bool", default=False),
            postcopy=dict(type="bool", default=False),
            storage=dict(type="str", default="auto", choices=list(STORAGE_MODES)),
            timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )

    module.run(lambda ctx: MigrationService(acting_engine(ctx)).migrate(module.params, module.check_mode))


if __name__ == "__main__":
    main()
