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
  - A stopped VM moves offline, by ownership only (the store names O(to) as its host; no
    monitor is asked, and its disks must be at the same paths there). What this host kept
    of it while stopped (a UEFI VM's NVRAM, seed ISOs) is removed, with a warning for a UEFI
    VM, which starts there with the firmware's default variables.
  - Storage must be shared (the same disk paths on both hosts); the target checks every disk
    is there. Copying local disks during the migration is not supported yet.
  - The events C(migration_started), C(migrated), C(migration_failed) (this host) and
    C(migration_listening), C(migrated_in), C(migration_refused) (the target) go to the
    VM's event log (M(infinivirt.core.infinivirt_vm_info)).
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
    description: Limit of the migration stream in Mbit/s; unset, QEMU's own limit.
    type: int
  auto_converge:
    description: Slow the guest's vCPUs down when its memory changes faster than the stream.
    type: bool
    default: false
  postcopy:
    description:
      - Enable QEMU's post-copy capability at both ends. The switch to post-copy is not made
        yet, so the migration completes as pre-copy.
    type: bool
    default: false
  storage:
    description:
      - V(shared) (the same disk paths on both hosts) or V(auto) (shared, checked by the
        target). V(copy) is refused, since copying disks is not supported yet.
    type: str
    choices: [shared, copy, auto]
    default: auto
  timeout:
    description: Seconds for the whole migration, the target's answer included.
    type: int
    default: 600
notes:
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
"""

RETURN = r"""
vm:
  description: The VM after the task (name, uuid, host, status, version).
  returned: success
  type: dict
migration:
  description: What the live migration took; absent when nothing was done, in check mode and offline.
  returned: when a running VM was migrated
  type: dict
  contains:
    transferred_bytes:
      description: Bytes of guest RAM sent (QEMU's C(query-migrate)).
      type: int
    downtime_ms:
      description: How long the guest was paused, as QEMU measured it.
      type: int
    total_time_ms:
      description: QEMU's own duration of the migration.
      type: int
    duration_s:
      description: The whole task's migration, the target's answer and the clean-up here included.
      type: float
plan:
  description:
    - What the task does (or did); V(how) is V(live) (a running VM), V(offline) (a stopped
      one) or V(none) (the VM is on O(to) already).
  returned: success
  type: dict
  sample:
    how: live
    from: hv-a
    to: hv-b
    storage: shared
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
