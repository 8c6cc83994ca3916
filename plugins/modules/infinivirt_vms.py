#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_vms
short_description: Converge many QEMU/KVM virtual machines of one host in one task
version_added: 0.1.0
description:
  - Does for each entry of O(vms) what one M(infinivirt.core.infinivirt_vm) task with the
    entry's options does, several at once (see O(parallel)), and returns each VM's result.
  - Each VM is locked on its own while it is worked on, never the whole host, so
    M(infinivirt.core.infinivirt_vm) tasks on other VMs run beside this one.
  - A VM that fails does not stop the others. Every other entry is still converged and
    reported; the task then fails with a message that names each failed entry.
  - An entry is known by its C(name). A missing, invalid or repeated name, or bad
    O(defaults), fail the task before any VM is touched. Any other error fails only its
    entry, with a message that starts with the entry and the option at fault, for example
    C(vms[3].disks[0].path).
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
attributes:
  check_mode:
    support: full
    details:
      - Each VM is planned as M(infinivirt.core.infinivirt_vm) plans it; RV(vms[].plan.actions) lists what a
        real run does.
  diff_mode:
    support: full
    details: Each changed VM's diff is shown under its name, and returned in RV(vms[].diff).
  idempotent:
    support: partial
    details: An entry whose C(state) is V(restarted) always restarts its VM and reports a change.
options:
  vms:
    description:
      - The VMs, each a dictionary with the options of M(infinivirt.core.infinivirt_vm)
        (C(name) required; C(state), C(vcpus), C(memory_mb), C(disks), C(nics),
        C(graphics), C(stop_timeout), C(force), C(shutdown_mode), and so on). They are checked exactly as that
        module checks them and have the same defaults. The options shared by all modules
        (O(db_url), O(run_dir), ...) are options of this task, not of an entry.
      - Results come back in this order.
      - An entry's C(wait_for) and C(wait_timeout) (or those of O(defaults)) are waited for
        once every entry is converged, for all VMs together. Each C(wait_timeout) counts from
        the same moment, so N VMs take about the longest timeout, not N times it. A VM that is
        not ready in time fails its entry (with C(console_tail)); the others are unaffected.
    type: list
    elements: dict
    required: true
  defaults:
    description:
      - Options of M(infinivirt.core.infinivirt_vm) merged into every entry of O(vms); what
        an entry sets wins. A dictionary option (C(graphics), C(labels)) is merged key by key, so an
        entry may set only C(graphics.password); a list (C(disks), C(nics), C(cpu_flags)) is
        replaced whole by the entry's. An entry's key set to V(null) counts as unset.
      - C(stop_timeout), C(force) and C(shutdown_mode) here also apply to the VMs O(exclusive)
        stops or removes (with C(shutdown_mode=agent), a VM whose agent does not answer is
        powered off with the ACPI button, with a warning).
      - Cannot hold C(name).
    type: dict
    default: {}
  parallel:
    description:
      - How many VMs are worked on at once; V(1) does one after the other.
      - Default, the number of CPUs of the host.
    type: int
  exclusive:
    description:
      - Also bring every VM of this host (whose O(host_id) it last ran on) that O(vms) does
        not name to O(exclusive_state). VMs of other hosts are left alone. They are reported
        in RV(unlisted).
    type: bool
    default: false
  exclusive_state:
    description:
      - What O(exclusive) does with the VMs O(vms) does not name, V(stopped) or V(absent)
        (removed with their files), as M(infinivirt.core.infinivirt_vm) would.
    type: str
    choices: [stopped, absent]
    default: stopped
  allow_empty:
    description:
      - With O(exclusive), an empty O(vms) is refused (the task fails and nothing is done,
        also in check mode) unless this is V(true), because it stops or removes every VM of
        the host. A variable that is undefined and defaults to an empty list would otherwise
        wipe a hypervisor.
      - Set it only in a task that means to empty the host.
    type: bool
    default: false
notes:
  - Each worker opens a database connection of its own, so with PostgreSQL the task holds
    up to O(parallel) + 1 connections.
seealso:
  - module: infinivirt.core.infinivirt_vm
  - module: infinivirt.core.infinivirt_vm_info
"""

EXAMPLES = r"""
- name: Web servers from cloud images, each reachable over SSH when the task returns
  infinivirt.core.infinivirt_vms:
    defaults:
      state: running
      memory_mb: 1024
      guest_agent: true
      nics: [{network: nat0}]
      wait_for: ssh
      wait_timeout: 600  # for all of them together, not per VM
    vms:
      - {name: web11, disks: [{path: /var/lib/infinivirt/images/web11.qcow2}], cloud_init: {hostname: web11}}
      - {name: web12, disks: [{path: /var/lib/infinivirt/images/web12.qcow2}], cloud_init: {hostname: web12}}
  register: web

- name: They join the inventory (a failed one has console_tail instead)
  ansible.builtin.add_host:
    name: "{{ item.name }}"
    ansible_host: "{{ item.vm.ready.address }}"
  loop: "{{ web.vms | rejectattr('failed') }}"
  loop_control:
    label: "{{ item.name }}"

- name: Three small VMs running on this host, four at a time at most
  infinivirt.core.infinivirt_vms:
    parallel: 4
    defaults:
      state: running
      vcpus: 1
      memory_mb: 512
      kernel: /var/lib/infinivirt/images/vmlinuz
      initrd: /var/lib/infinivirt/images/initrd.img
      graphics:
        type: vnc
    vms:
      - name: web01
        graphics:
          password: "{{ vault_web01_vnc_password }}"
      - name: web02
        memory_mb: 1024
      - name: db01
        state: stopped
  register: fleet

- name: Show what happened to each
  ansible.builtin.debug:
    msg: "{{ fleet.summary }}"

- name: Only these VMs may run here; the others are shut down through their agent, forced after 30 s
  infinivirt.core.infinivirt_vms:
    exclusive: true
    defaults:
      shutdown_mode: agent
      stop_timeout: 30
      force: true
    vms:
      - name: web01
        state: running
      - name: web02
        state: running

- name: Remove every VM of this host (an empty vms needs allow_empty)
  infinivirt.core.infinivirt_vms:
    vms: []
    exclusive: true
    exclusive_state: absent
    allow_empty: true
    defaults:
      force: true
"""

RETURN = r"""
vms:
  description:
    - One result per entry of O(vms), in the same order.
    - Each holds what M(infinivirt.core.infinivirt_vm) returns for that VM (RV(vms[].vm),
      RV(vms[].changed), RV(vms[].plan)), plus RV(vms[].name), RV(vms[].failed) and, for a
      failed entry, RV(vms[].msg) instead of RV(vms[].vm) and RV(vms[].plan).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
      sample: web01
    changed:
      description: Whether the VM was changed (would be, in check mode).
      type: bool
    failed:
      description: Whether this entry failed.
      type: bool
    msg:
      description: Why the entry failed, naming it, for example C(vms[3].memory_mb) followed by the reason.
      type: str
      returned: when failed
    vm:
      description:
        - The VM after the task, as RV(infinivirt.core.infinivirt_vm#module:vm) describes it.
        - Also returned by an entry whose wait (C(wait_for)) failed.
      type: dict
      returned: unless failed, and when a wait failed
    console_tail:
      description:
        - The last lines of the VM's serial console, secrets masked, when its start or its wait
          (C(wait_for)) failed, as RV(infinivirt.core.infinivirt_vm#module:console_tail) describes it.
      type: list
      elements: str
      returned: when the entry's start or wait failed
    plan:
      description:
        - The plan for this VM, as RV(infinivirt.core.infinivirt_vm#module:plan) describes it (the
          same in check mode).
      type: dict
      returned: unless failed
      contains:
        actions:
          description:
            - What is done to the VM in order (in check mode, what a real run does), from
              V(abort_start), V(create), V(update), V(set_password), V(hotplug_disks),
              V(hotplug_nics), V(hotplug_usb), V(hotplug_cpus), V(hotplug_memory),
              V(set_balloon), V(pin_cpus), V(stop), V(start), V(pause), V(resume), V(delete).
              Empty when nothing. V(clone_disks) comes first when the VM's disks are made from a
              template (C(disks[].clone_from)); RV(vms[].plan.disk_clones) lists them.
          type: list
          elements: str
          sample: [update, stop, start]
        changes:
          description: Changed option -> V(live), V(restart) or V(next_start).
          type: dict
          sample: {memory_mb: restart}
        restart_needed:
          description: Whether changes stay pending a restart after the task.
          type: bool
        disk_clones:
          description:
            - The disks made from a template for this VM, as
              RV(infinivirt.core.infinivirt_vm#module:plan.disk_clones) describes them.
          type: list
          elements: dict
          returned: when the task makes disks from a template
          contains:
            disk:
              description: The disk's place in C(disks), for example V(disks[0]).
              type: str
            path:
              description: The disk made.
              type: str
            clone_from:
              description: The template.
              type: str
            clone_mode:
              description: V(linked) or V(full).
              type: str
            size:
              description: The disk's virtual size in bytes.
              type: int
            backing_file:
              description: The template, for a linked clone; null for a full one.
              type: str
    warnings:
      description: Warnings about this VM (also given as the task's warnings).
      type: list
      elements: str
      returned: unless failed
    diff:
      description: The VM before and after, in diff mode.
      type: dict
      returned: in diff mode, unless failed
unlisted:
  description:
    - With O(exclusive), one result per VM of this host that O(vms) does not name (sorted by
      name), as RV(vms) describes; empty otherwise.
  returned: always
  type: list
  elements: dict
summary:
  description: Counts over RV(vms) and RV(unlisted).
  returned: always
  type: dict
  contains:
    total:
      description: Number of VMs.
      type: int
    changed:
      description: VMs changed.
      type: int
    unchanged:
      description: VMs that did not fail and needed no change.
      type: int
    failed:
      description: VMs that failed.
      type: int
    unlisted:
      description: VMs that O(exclusive) acted on.
      type: int
    actions:
      description: How many VMs each action was done to.
      type: dict
      sample: {create: 2, start: 3, stop: 1}
    status:
      description: How many VMs are in each status after the task (failed ones left out).
      type: dict
      sample: {running: 3, stopped: 1}
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import (
    InfinivirtModule,
    validate_options,
)
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import EXCLUSIVE_STATES, VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            vms=dict(type="list", elements="dict", required=True),
            defaults=dict(type="dict", default={}),
            parallel=dict(type="int"),
            exclusive=dict(type="bool", default=False),
            exclusive_state=dict(type="str", default="stopped", choices=list(EXCLUSIVE_STATES)),
            allow_empty=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )
    params = module.params
    spec = vm_argument_spec()
    prepared = prepare(params["vms"], params["defaults"], lambda entry, path: validate_options(spec, entry, path))
    module.module.no_log_values.update(prepared.secrets)  # before any output can show them

    def converge(ctx):
        batch = VmBatch(ctx, module.context, params["parallel"])
        if prepared.problems:
            raise InfinivirtError("nothing was done: %s" % "; ".join(prepared.problems))
        return batch.converge(
            prepared.entries,
            module.check_mode,
            diff=module.diff_mode,
            exclusive_state=params["exclusive_state"] if params["exclusive"] else None,
            stop_params=prepared.stop_params,
            allow_empty=params["allow_empty"],
        )

    module.run(converge)


if __name__ == "__main__":
    main()
