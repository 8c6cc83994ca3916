#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_vm_info
short_description: Report Infinivirt VMs with their live state
version_added: 0.1.0
description:
  - Lists one VM or all VMs in the Infinivirt database, with the run state read from the
    live QEMU process, not only from the database. A VM the database records as running is
    known to run from its pidfile, C(/proc) (PID, start time, UUID) and QEMU's own event log;
    QEMU is asked over QMP (C(query-status)) when these and the database disagree, or when
    the VM is paused or starting.
  - With a shared PostgreSQL O(db_url) it lists the VMs of every host; for a VM that
    another host owns, RV(vms[].status) is what that host last recorded and
    RV(vms[].qemu_status) is null.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
  - infinivirt.core.attributes.info_module
options:
  name:
    description:
      - Name of one VM. When omitted, all VMs are listed.
    type: str
  host_devices:
    description:
      - Also list this host's PCI devices that a VM could take with
        M(infinivirt.core.infinivirt_gpu), with their IOMMU groups and drivers, in
        RV(host_devices), read from sysfs (under O(sysfs_root)).
    type: bool
    default: false
  tags:
    description:
      - List only the VMs that carry every one of these tags
        (O(infinivirt.core.infinivirt_vm#module:tags)).
    type: list
    elements: str
  labels:
    description:
      - List only the VMs whose labels (O(infinivirt.core.infinivirt_vm#module:labels)) have
        every one of these keys with this value.
    type: dict
  hosts:
    description:
      - List only the VMs owned by one of these hypervisors (their O(host_id), RV(vms[].host)).
      - Not named C(host_id), which is the option that names the host this task runs as.
    type: list
    elements: str
  status:
    description:
      - List only the VMs in one of these states (RV(vms[].status), as read at the time of the listing).
    type: list
    elements: str
    choices: [running, paused, stopped]
seealso:
  - module: infinivirt.core.infinivirt_gpu
  - module: infinivirt.core.infinivirt_vm
"""

EXAMPLES = r"""
- name: Read one VM
  infinivirt.core.infinivirt_vm_info:
    name: web01
  register: web01_info

- name: Show its state
  ansible.builtin.debug:
    msg: "{{ web01_info.vms[0].status }} (QEMU says {{ web01_info.vms[0].qemu_status }})"

- name: List every VM
  infinivirt.core.infinivirt_vm_info:
  register: all_vms

- name: List the running VMs tagged web on hypervisor hv-a, of the sales department label
  infinivirt.core.infinivirt_vm_info:
    tags: [web]
    labels:
      department: sales
    hosts: [hv-a]
    status: [running]
  register: web_vms

- name: List the PCI devices a VM could take, with IOMMU groups and drivers
  infinivirt.core.infinivirt_vm_info:
    host_devices: true
  register: host
"""

RETURN = r"""
vms:
  description:
    - The VMs found, sorted by name; empty when O(name) names no VM.
    - Each entry has the fields of RV(infinivirt.core.infinivirt_vm#module:vm) plus RV(vms[].qemu_status),
      RV(vms[].error), RV(vms[].crashed), RV(vms[].leftovers), RV(vms[].events), RV(vms[].snapshots)
      and RV(vms[].host_devices); not C(ready), which only a task that waits (C(wait_for)) returns.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: VM name.
      type: str
    uuid:
      description: VM UUID.
      type: str
    status:
      description: V(running), V(paused) or V(stopped), from the live process.
      type: str
    qemu_status:
      description: QEMU's own run state (for example V(running), V(paused), V(prelaunch)),
        from QMP C(query-status) or, for a VM that runs as recorded, from its event log; null
        when no QEMU process runs, or V(unresponsive) when a live QEMU does not answer (see
        RV(vms[].error)).
      type: str
      sample: running
    error:
      description:
        - Null, or why this VM's state could not be read, for example a QEMU stopped with
          SIGSTOP or hung. The other VMs are listed all the same; a task with
          O(infinivirt.core.infinivirt_vm#module:state=stopped) and
          O(infinivirt.core.infinivirt_vm#module:force=true) ends such a QEMU.
      type: str
    pid:
      description: PID of the QEMU process, or null.
      type: int
    qmp_socket:
      description: QMP socket path, or null.
      type: str
    serial_log:
      description: File that receives the guest's first serial port.
      type: str
    vcpus:
      description: Number of virtual CPUs.
      type: int
    memory_mb:
      description: Guest memory in MiB.
      type: int
    host:
      description: The hypervisor that owns the VM.
      type: str
    tags:
      description: The VM's tags (see O(infinivirt.core.infinivirt_vm#module:tags)).
      type: list
      elements: str
    labels:
      description: The VM's labels (see O(infinivirt.core.infinivirt_vm#module:labels)).
      type: dict
    digest:
      description: SHA-256 of the stored definition (see M(infinivirt.core.infinivirt_vm)).
      type: str
    crashed:
      description:
        - Whether the VM's QEMU ended without a shutdown. True when the host monitor recorded
          a crash (the row says C(crashed) until the VM starts again), or when the row still
          says the VM runs but no QEMU is left (nothing cleaned it up yet; see
          RV(vms[].leftovers)).
      type: bool
    leftovers:
      description:
        - What a QEMU that is gone left on this host (journaled files and TAPs, as
          C(kind)/C(ref)); empty while it runs or once cleaned up. The host monitor, or the
          next M(infinivirt.core.infinivirt_vm) task on the VM, removes them.
      type: list
      elements: dict
      contains:
        kind:
          description: V(pidfile), V(qmp_socket), V(events_socket), V(event_log), V(console_socket) or V(tap).
          type: str
        ref:
          description: The file path, or C(netns/tap) for a TAP.
          type: str
    events:
      description:
        - The VM's newest events (at most 10, newest first) from the host monitor's event
          log - QEMU's (C(shutdown), C(reset), C(stop), C(resume), C(guest_panicked),
          C(block_io_error), C(device_deleted), C(balloon_change), ...) and the monitor's own
          (C(crashed), C(stopped), C(restarted), C(restart_failed) with the error,
          C(restart_limit), C(autostarted), C(cleanup_failed), ...).
      type: list
      elements: dict
      contains:
        at:
          description: When (UTC, ISO 8601).
          type: str
        kind:
          description: What happened.
          type: str
        detail:
          description: The event's data (for a shutdown, C(guest) and C(reason)).
          type: dict
        host:
          description: The host the monitor ran on.
          type: str
    snapshots:
      description: The VM's snapshots, internal ones present on every writable disk and external
        ones (see M(infinivirt.core.infinivirt_snapshot)); empty for another host's VM.
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
          description: When it was taken, in seconds since the epoch; null for an external one.
          type: int
    pending_restart:
      description: Options changed since the running VM was started.
      type: list
      elements: str
    host_devices:
      description: The host PCI devices assigned to the VM (M(infinivirt.core.infinivirt_gpu)).
      type: list
      elements: dict
      contains:
        address:
          description: The assignment's PCI address.
          type: str
        host:
          description: The host the device is on (the VM starts only there).
          type: str
        functions:
          description: The functions QEMU gets.
          type: list
          elements: str
        group_devices:
          description: The other devices of their IOMMU groups, held for the VM.
          type: list
          elements: str
        managed:
          description: Whether the devices were rebound to vfio-pci by Infinivirt (their drivers come back on release).
          type: bool
        rom_file:
          description: The ROM file, or null.
          type: str
        x_vga:
          description: Whether the device is the guest's primary VGA.
          type: bool
        sriov:
          description: The O(infinivirt.core.infinivirt_gpu#module:sriov) request that named the VF, or null.
          type: dict
          contains:
            pf:
              description: The physical function's address.
              type: str
            vf:
              description: The VF's number.
              type: int
            num_vfs:
              description: How many VFs were asked for, or null.
              type: int
            mac:
              description: The VF's MAC address, or null.
              type: str
            vlan:
              description: The VF's VLAN, or null.
              type: int
host_devices:
  description: This host's PCI devices, read from sysfs.
  returned: when O(host_devices=true)
  type: dict
  contains:
    iommu_enabled:
      description: Whether the kernel made IOMMU groups (an IOMMU is on).
      type: bool
    vfio_loaded:
      description: Whether the C(vfio-pci) driver is loaded.
      type: bool
    devices:
      description: Every PCI device but bridges, sorted by address.
      type: list
      elements: dict
      contains:
        address:
          description: PCI address C(DDDD:BB:SS.F).
          type: str
        vendor_id:
          description: Vendor id, for example V(0x10de).
          type: str
        device_id:
          description: Device id.
          type: str
        class:
          description: PCI class code, for example V(0x030000) (VGA).
          type: str
        driver:
          description: The driver bound to it, or null.
          type: str
        iommu_group:
          description: Its IOMMU group, or null when the IOMMU is off.
          type: str
        iommu_group_devices:
          description: Every device of its IOMMU group (all go to one VM together).
          type: list
          elements: str
        sriov_totalvfs:
          description: How many VFs an SR-IOV physical function supports; null for other devices.
          type: int
        sriov_numvfs:
          description: How many VFs it has now; null for other devices.
          type: int
        physfn:
          description: For a VF, its physical function's address; else null.
          type: str
        assigned_to:
          description: The VM holding it, or null.
          type: str
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            name=dict(type="str"),
            host_devices=dict(type="bool", default=False),
            tags=dict(type="list", elements="str"),
            labels=dict(type="dict"),
            hosts=dict(type="list", elements="str"),
            status=dict(type="list", elements="str", choices=["running", "paused", "stopped"]),
        ),
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )
    filters = {key: module.params[key] for key in ("tags", "labels", "hosts", "status")}
    module.run(lambda ctx: info_result(ctx, module.params["name"], module.params["host_devices"], filters))


if __name__ == "__main__":
    main()
