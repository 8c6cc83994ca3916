#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_gpu
short_description: Assign a host PCI device (GPU, NIC, NVMe drive, SR-IOV VF) to an Infinivirt VM
version_added: 0.1.0
description:
  - Gives a host PCI device to a VM through VFIO (C(vfio-pci)), or takes it back. Any PCI
    device works, not only GPUs - a GPU with its HDMI audio function, a NIC, an NVMe drive,
    or a virtual function of an SR-IOV network card (O(sriov)).
  - A running VM gets the device hot-plugged on a free PCIe root port; a stopped one gets it
    at its next start. Releasing it from a running VM unplugs it and waits until QEMU
    reports C(DEVICE_DELETED), that is until the guest let go.
  - Before anything changes, the module checks that the address exists in sysfs, that the
    IOMMU is on, that C(vfio-pci) is loaded, that every device of the device's IOMMU group is
    bound to C(vfio-pci) or to no driver (with O(managed=true) it rebinds them), that no other
    VM holds any device of the group, and that O(rom_file) is a readable regular file inside
    O(rom_dir). Each failure says what is wrong; nothing is half-made.
  - The kernel side (IOMMU kernel arguments, vfio modules) is the host role's; this module
    reports clearly when it was not done.
  - A device is assigned to one VM at a time, on one host; the VM then starts only on that
    host. M(infinivirt.core.infinivirt_vm_info) lists the assignable devices with their IOMMU
    groups and drivers (O(infinivirt.core.infinivirt_vm_info#module:host_devices=true)), and
    each VM's assignments.
  - Removing a VM (M(infinivirt.core.infinivirt_vm) O(infinivirt.core.infinivirt_vm#module:state=absent))
    releases its devices and gives managed ones their drivers back.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
attributes:
  check_mode:
    support: full
    details: With O(sriov) and VFs still to be made, check mode cannot tell the VF's address.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  vm:
    description:
      - Name of the VM (made with M(infinivirt.core.infinivirt_vm)).
      - Its O(infinivirt.core.infinivirt_vm#module:machine_type) must be V(q35).
    type: str
    required: true
  address:
    description:
      - The host PCI address C(DDDD:BB:SS.F), for example V(0000:01:00.0), as C(lspci -D) prints it.
      - Required unless O(sriov) names the device.
    type: str
  functions:
    description:
      - Which functions of the device's slot the VM gets, for multi-function devices such as a
        GPU with its HDMI audio - V(all) (every function sysfs lists on the slot), or a list of
        function numbers (V([0, 1])), which must include the function of O(address) and
        function 0.
      - The functions reach the guest as one multi-function device on one PCIe root port.
      - When not set, the VM gets the function of O(address) alone.
    type: raw
  rom_file:
    description:
      - An option ROM (VBIOS) QEMU gives the device instead of the device's own.
      - It must resolve, after symlinks and C(..), to a readable regular file inside O(rom_dir).
    type: path
  rom_dir:
    description: The directory ROM files must be in.
    type: path
    default: /var/lib/infinivirt/roms
  x_vga:
    description: Make the device the guest's primary VGA (QEMU C(x-vga=on)), for GPUs only.
    type: bool
    default: false
  managed:
    description:
      - Rebind the device and the other devices of its IOMMU group from their host drivers
        to C(vfio-pci) (through C(driver_override)), and give them their drivers back on
        release.
      - When V(false), a device still bound to a host driver is refused.
    type: bool
    default: false
  sriov:
    description:
      - Name the device as virtual function O(sriov.vf) of an SR-IOV physical function
        instead of by O(address).
    type: dict
    suboptions:
      pf:
        description: PCI address of the physical function.
        type: str
        required: true
      vf:
        description: Number of the VF, from 0.
        type: int
        required: true
      num_vfs:
        description:
          - How many VFs the PF should have when VF O(sriov.vf) does not exist yet; they are
            made through sysfs (C(sriov_numvfs)). Existing VFs are never changed while any is
            assigned.
        type: int
      mac:
        description: MAC address of the VF, set on the PF (C(ip link set PF vf N mac)).
        type: str
      vlan:
        description: VLAN of the VF (0 for none), set on the PF.
        type: int
  state:
    description: V(present) assigns the device; V(absent) releases it.
    type: str
    default: present
    choices: [present, absent]
seealso:
  - module: infinivirt.core.infinivirt_vm
  - module: infinivirt.core.infinivirt_vm_info
"""

EXAMPLES = r"""
- name: Give a GPU and its HDMI audio to a VM, rebinding them from the host drivers
  infinivirt.core.infinivirt_gpu:
    vm: gaming01
    address: "0000:01:00.0"
    functions: all
    managed: true
    x_vga: true
    rom_file: /var/lib/infinivirt/roms/gtx1080.rom

- name: Give an NVMe drive (already bound to vfio-pci)
  infinivirt.core.infinivirt_gpu:
    vm: db01
    address: "0000:05:00.0"

- name: Give VF 2 of a NIC, making 4 VFs if needed, with a MAC and VLAN
  infinivirt.core.infinivirt_gpu:
    vm: web01
    sriov:
      pf: "0000:3b:00.0"
      vf: 2
      num_vfs: 4
      mac: "52:54:00:aa:bb:02"
      vlan: 100
    managed: true

- name: Take the GPU back (unplugged from a running VM, host drivers restored)
  infinivirt.core.infinivirt_gpu:
    vm: gaming01
    address: "0000:01:00.0"
    state: absent
"""

RETURN = r"""
assignment:
  description: The assignment as it is (or, in check mode, would be).
  returned: always
  type: dict
  contains:
    vm:
      description: The VM's name.
      type: str
    address:
      description:
        - The device's PCI address (a VF's, with O(sriov)).
        - Null when nothing was found to release, or in check mode when the VF does not exist yet.
      type: str
    functions:
      description: The host functions the VM gets, function 0 first.
      returned: when a device is assigned or released
      type: list
      elements: str
    device_ids:
      description: QEMU's device ids of the functions (C(hostdev-DDDD-BB-SS-F)).
      returned: when a device is assigned or released
      type: list
      elements: str
    group_devices:
      description: The other devices of the IOMMU groups, held for the VM so no other VM takes them.
      returned: when a device is assigned or released
      type: list
      elements: str
    drivers:
      description: Each device's driver now (null when unbound), by address.
      returned: when a device is assigned or released
      type: dict
    rom_file:
      description: The ROM file's real path, or null.
      returned: when a device is assigned or released
      type: str
    x_vga:
      description: Whether the device is the guest's primary VGA.
      returned: when a device is assigned or released
      type: bool
actions:
  description:
    - What the task did (or would do in check mode), in order - V(create_vfs), V(set_vf),
      V(claim), V(update), V(bind_vfio), V(hotplug) to assign; V(unplug),
      V(restore_drivers), V(release) to release.
  returned: always
  type: list
  elements: str
  sample: [claim, bind_vfio, hotplug]
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import DEFAULT_ROM_DIR, PciService


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            vm=dict(type="str", required=True),
            address=dict(type="str"),
            functions=dict(type="raw"),
            rom_file=dict(type="path"),
            rom_dir=dict(type="path", default=DEFAULT_ROM_DIR),
            x_vga=dict(type="bool", default=False),
            managed=dict(type="bool", default=False),
            sriov=dict(
                type="dict",
                options=dict(
                    pf=dict(type="str", required=True),
                    vf=dict(type="int", required=True),
                    num_vfs=dict(type="int"),
                    mac=dict(type="str"),
                    vlan=dict(type="int"),
                ),
            ),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        mutually_exclusive=[("address", "sriov")],
        required_one_of=[("address", "sriov")],
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )
    module.run(lambda ctx: PciService.of(acting_engine(ctx)).ensure(module.params, module.check_mode))


if __name__ == "__main__":
    main()
