#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_vm
short_description: Define, start, stop, pause and remove QEMU/KVM virtual machines without libvirt
version_added: 0.1.0
description:
  - Manages one virtual machine on the host the task runs on. Infinivirt builds the QEMU
    command line itself, drives QEMU over QMP and keeps the VM's state in a database.
  - A VM is started paused, checked over QMP and then let run, so when a task returns the
    transition has finished. A stopped VM has no process left.
  - Options left unset keep the stored value of an existing VM and take the documented
    default for a new one, so O(state=stopped) with only O(name) never reconfigures a VM.
  - A changed option that a running VM cannot take live is stored, shown in the diff and
    reported as a warning and in RV(vm.pending_restart) until the VM is restarted;
    O(restart_on_change=true) restarts it at once.
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
    details: O(state=restarted) always restarts the VM and reports a change.
options:
  name:
    description:
      - Name of the VM, unique in the database.
      - Up to 64 characters from letters, digits, V(.), V(_) and V(-); it must start with a
        letter or a digit and must not contain V(..).
    type: str
    required: true
  state:
    description:
      - V(present) defines the VM (or updates its definition) and leaves a running VM running
        and a stopped one stopped.
      - V(running) starts it; a paused VM is resumed.
      - V(stopped) presses the ACPI power button and waits up to O(stop_timeout) seconds for
        the guest to power off; with O(force=true) a guest that does not is ended.
      - V(paused) pauses the vCPUs (a stopped VM is started paused).
      - V(restarted) stops the VM (as V(stopped)) and starts it again; always a change.
      - V(absent) stops the VM as V(stopped) would and removes it, its files and its
        database row.
    type: str
    choices: [present, running, stopped, paused, restarted, absent]
    default: present
  vcpus:
    description:
      - Number of virtual CPUs, from 1 to the number of CPUs of the host.
      - Default for a new VM is V(1).
    type: int
  memory_mb:
    description:
      - Guest memory in MiB, at least 16.
      - Default for a new VM is V(512).
    type: int
  machine_type:
    description:
      - QEMU machine type. V(q35) is a PCIe machine (recommended); V(pc) is the older
        i440FX machine for legacy guests.
      - Default for a new VM is V(q35).
      - V(q35) and V(pc) are aliases of QEMU's newest version of each machine (V(pc-q35-7.2) on
        QEMU 7.2). The version of the VM's first start is recorded, and later starts ask for
        it, so a QEMU upgrade does not change the guest's hardware. Changing O(machine_type)
        records the new one's version at the next start.
    type: str
    choices: [q35, pc]
  cpu_model:
    description:
      - QEMU CPU model name, for example V(host), V(max), V(qemu64) or V(EPYC).
      - V(auto) uses V(host) under KVM and V(max) under TCG.
      - V(host) under TCG is replaced by V(max) with a warning. On a host that is itself a
        VM, V(host) gets C(-arch-capabilities), which nested KVM cannot set.
      - Default for a new VM is V(auto).
    type: str
  cpu_flags:
    description:
      - CPU feature flags added to the model, each V(+feature), V(-feature), or a property
        with a plain value (letters, digits, V(.), V(_), V(-)) such as V(hv-spinlocks=0x1fff).
    type: list
    elements: str
  accel:
    description:
      - Accelerator. V(auto) uses KVM only where it really works (C(/dev/kvm) usable and
        C(kvm_intel) or C(kvm_amd) loaded) and otherwise TCG software emulation, with a
        warning. V(kvm) and V(tcg) force one.
      - Default for a new VM is V(auto).
    type: str
    choices: [auto, kvm, tcg]
  kernel:
    description:
      - Absolute path of a kernel image for direct kernel boot.
    type: path
  initrd:
    description:
      - Absolute path of an initial ramdisk for direct kernel boot. Needs O(kernel).
    type: path
  kernel_cmdline:
    description:
      - Kernel command line for direct kernel boot. Needs O(kernel).
    type: str
  firmware:
    description:
      - V(bios) (SeaBIOS) or V(uefi) (OVMF). A UEFI VM gets its own NVRAM (variable store)
        in O(nvram_dir), copied from OVMF's template on first start and kept until the VM
        is removed.
      - Default for a new VM is V(bios).
    type: str
    choices: [bios, uefi]
  secure_boot:
    description:
      - UEFI Secure Boot with Microsoft's keys enrolled (needs V(uefi) and V(q35); SMM is
        turned on). Default for a new VM is V(false).
    type: bool
  uefi_firmware:
    description:
      - Path of another OVMF code image than Debian's C(OVMF_CODE_4M.fd) (or its
        C(secboot) variant).
    type: path
  disks:
    description:
      - The VM's disks and CD-ROMs, in order. Images must exist (see
        C(infinivirt.core.infinivirt_disk)) and lie inside O(storage_roots), or be made from
        a template by this task (O(disks[].clone_from)).
      - Each disk is attached with C(-blockdev) and C(-device) written as JSON, so any file
        name works.
      - On a running VM, adding or removing a V(virtio) disk (or a V(scsi) one, if the VM
        started with a SCSI disk) is done live by hot-plug; the task waits until the guest
        has released an unplugged disk. New limits (O(disks[].iops), O(disks[].bps) and
        their read/write variants) of a disk that started with a limit apply live too (QMP
        C(qom-set) on its throttle group). Any other disk change needs a restart, as does
        the first limit of a disk that started without one.
      - O(disks[].bus), O(disks[].cache), O(disks[].aio) and O(disks[].iothread) left
        unset come from O(preset) (or the defaults given below).
      - On V(q35), every PCI disk gets its own PCIe root port, plus 4 spare ports for
        hot-plug.
      - Left unset, the stored list is kept; V([]) removes every disk.
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path of the image.
        type: path
        required: true
      format:
        description: Image format. Default V(qcow2).
        type: str
        choices: [qcow2, raw]
      bus:
        description:
          - V(virtio) (virtio-blk, the default without a preset), V(scsi) (virtio-scsi),
            V(sata) (AHCI, q35 only) or V(ide).
        type: str
        choices: [virtio, scsi, sata, ide]
      cache:
        description:
          - Host cache mode. Default V(writeback). V(none) and V(directsync) bypass the
            host page cache (O_DIRECT).
        type: str
        choices: [none, writeback, writethrough, directsync, unsafe]
      aio:
        description: I/O backend. Default V(threads); V(native) needs O(disks[].cache) V(none) or V(directsync).
        type: str
        choices: [threads, native, io_uring]
      iothread:
        description:
          - V(virtio) disks only. V(true) gives the disk an I/O thread of its own; the name
            of one of O(iothreads) puts the disk on that shared thread; V(false) (the default
            without a preset) runs its I/O in QEMU's main loop.
        type: raw
      discard:
        description: Pass the guest's TRIM/discard requests to the image. Default V(false).
        type: bool
      serial:
        description: Serial number the guest sees, 1 to 20 letters, digits, V(.), V(_), V(-).
        type: str
      readonly:
        description: Attach read-only. Default V(false).
        type: bool
      boot_order:
        description: Boot priority (1 boots first), unique among the disks.
        type: int
      media:
        description: V(disk) (default) or V(cdrom) (bus V(scsi), V(sata) or V(ide); read-only).
        type: str
        choices: [disk, cdrom]
      iops:
        description:
          - Limit of I/O operations per second, reads and writes together (1 to 10^15).
            Left out, no limit. Not with O(disks[].iops_read) or O(disks[].iops_write).
          - A throttled disk gets a throttle group (C(-object throttle-group)) and a
            C(throttle) filter node above its format node. See O(disks) for live changes.
        type: int
      iops_read:
        description: Limit of read operations per second (see O(disks[].iops)).
        type: int
      iops_write:
        description: Limit of write operations per second (see O(disks[].iops)).
        type: int
      bps:
        description:
          - Limit of bytes per second, reads and writes together (1 to 10^15). Left out,
            no limit. Not with O(disks[].bps_read) or O(disks[].bps_write).
        type: int
      bps_read:
        description: Limit of bytes read per second (see O(disks[].bps)).
        type: int
      bps_write:
        description: Limit of bytes written per second (see O(disks[].bps)).
        type: int
      clone_from:
        description:
          - A template volume to make the disk from, on first create, as
            C(infinivirt.core.infinivirt_disk) makes a volume with its
            O(infinivirt.core.infinivirt_disk#module:clone_from) (the same code, so the same checks,
            and the disk registered as a managed volume).
          - The disk is made when the task first adds it to the VM (it creates the VM, or adds
            the disk to its list) and O(disks[].path) does not exist; before the VM's row is
            written, and before a start or a hot-plug of the disk. When the path exists, the
            template is not read and the disk is used as it is, so a rerun changes nothing.
          - A disk the VM already has is never made again, also when its file went missing
            (a start then fails naming O(disks[].path)).
          - O(disks[].clone_from), O(disks[].clone_mode) and O(disks[].size) are stored with
            the disk as they were when it was added. A later task that asks for another
            template, mode or size for an existing disk changes nothing (no change, no
            restart) and returns a warning; grow a disk with
            C(infinivirt.core.infinivirt_disk).
          - The template and every file it reads (its backing chain) must lie inside
            O(storage_roots), and must not be encrypted. A linked clone of a template that a
            VM (this one or another) lists as a writable disk is refused.
          - Errors name the disk's option (C(disks[1].clone_from), C(disks[1].size), ...)
            and leave nothing behind (no disk, no volume row, no VM, no QEMU). If a task that
            creates the VM fails later (its start), the disks it cloned are removed with it.
          - Removing the VM (O(state=absent)) keeps its disks, cloned ones too, as it keeps
            every disk; remove them with C(infinivirt.core.infinivirt_disk).
          - Check mode makes nothing and lists the disks in RV(plan.disk_clones).
        type: path
      clone_mode:
        description:
          - V(linked) (the default) makes a qcow2 overlay whose backing file is the template
            (needs O(disks[].format=qcow2)); V(full) copies the template into a volume of its
            own, in O(disks[].format). Needs O(disks[].clone_from).
        type: str
        choices: [linked, full]
      size:
        description:
          - Virtual size of the disk made from O(disks[].clone_from) (for example V(20G)), at
            least the template's; left out, the template's size. Used only when the disk is
            made. Needs O(disks[].clone_from).
        type: str
  nics:
    description:
      - The VM's network cards, in order. Each is a TAP device that Infinivirt makes on the
        host (persistent, with multi-queue when the NIC has more than one queue), attaches
        to a bridge and removes when the VM stops, plus a QEMU C(-netdev tap) and C(-device).
      - On a running VM, adding or removing a V(virtio-net-pci) NIC is done live by
        hot-plug (C(netdev_add) and C(device_add) on a spare PCIe root port on V(q35)); the
        task waits until the guest has released an unplugged NIC. A new
        O(nics[].rate_limit_mbit) applies live. Any other NIC change needs a restart.
      - O(nics[].model) left unset comes from O(preset).
      - A NIC is known by its MAC. Left out, a MAC is derived from the VM's name and the NIC's
        position (in V(52:54:00), unique among the VMs in the database; check mode shows the
        one a real run gives) and kept by the NIC at the same position in the list.
      - Left unset, the stored list is kept; V([]) removes every NIC.
    type: list
    elements: dict
    suboptions:
      network:
        description:
          - Name of a network made by C(infinivirt.core.infinivirt_net) on this host, in the
            VM's O(netns). Give this or O(nics[].bridge).
        type: str
      bridge:
        description: Name of an existing Linux bridge in the VM's O(netns). Give this or O(nics[].network).
        type: str
      model:
        description:
          - V(virtio-net-pci) (the default without a preset; paravirtual, multi-queue,
            hot-pluggable), V(e1000), V(e1000e) or V(rtl8139) (emulated cards for guests
            without virtio drivers).
        type: str
        choices: [virtio-net-pci, e1000, e1000e, rtl8139]
      mac:
        description: Unicast MAC address, like V(52:54:00:12:34:56); generated when left out.
        type: str
      queues:
        description:
          - Queue pairs of a V(virtio-net-pci) NIC, 1 to 8. Default, one per vCPU (at most 8).
        type: int
      vhost:
        description:
          - Use the host kernel's vhost-net for the packet path (V(virtio-net-pci) only).
          - Default, vhost-net is used when the host has C(/dev/vhost-net). V(true) on a
            host without it fails the start with a clear message.
        type: bool
      mtu:
        description:
          - MTU of the TAP, and the MTU a V(virtio-net-pci) NIC advertises to the guest.
            Default, the bridge's MTU.
        type: int
      tap:
        description: Name of the TAP device (at most 15 characters). Default, V(iv) and the MAC's 12 hex digits.
        type: str
      ips:
        description:
          - IP addresses the guest is given on this NIC (no prefix length). Used by the
            anti-spoofing rules of C(infinivirt.core.infinivirt_firewall); Infinivirt does
            not configure the guest.
        type: list
        elements: str
      rate_limit_mbit:
        description:
          - Limit, in Mbit/s (1 to 32000), of the traffic the guest receives on this NIC,
            shaped by a C(tbf) queueing discipline on the TAP's egress (burst 10 ms of traffic, at
            least 64 KiB; 50 ms latency). Traffic the guest sends is not limited.
          - Changes apply live; the discipline goes with the TAP. Left out, no limit.
        type: int
  netns:
    description:
      - Network namespace (from C(ip netns)) that QEMU and the VM's TAPs live in, and where
        its bridges and networks must be. Default, the host's own; V("") goes back to it.
      - QEMU is started inside it, so a display listening on an address is reachable there.
    type: str
  department:
    description:
      - Firewall department of the VM (see C(infinivirt.core.infinivirt_firewall)); its
        traffic passes the department's rules and its own. A change applies at once, also
        to a running VM. V("") takes the VM out of its department.
    type: str
  on_crash:
    description:
      - What the host monitor (C(infinivirt-monitor), see the C(infinivirt.core.host) role)
        does when the VM's QEMU ends without a shutdown (killed, crashed) or its guest
        kernel panics.
      - V(destroy) cleans up (TAPs, firewall rules, sockets) and leaves the VM C(crashed);
        V(restart) does that and starts it again (at most 3 times a minute);
        V(preserve) leaves a panicked guest paused for inspection (a dead QEMU is cleaned
        up as with V(destroy)).
      - Default for a new VM is V(destroy). Applies at once, also to a running VM.
    type: str
    choices: [destroy, restart, preserve]
  on_poweroff:
    description:
      - What the host monitor does when the guest powers itself off. V(stop) leaves it
        stopped; V(restart) starts it again. A stop asked for by a task is never undone.
      - Default for a new VM is V(stop). Applies at once, also to a running VM.
    type: str
    choices: [stop, restart]
  autostart:
    description:
      - Start the VM when the host monitor first runs after the host booted (once per boot).
      - Default for a new VM is V(false).
    type: bool
  autostart_order:
    description:
      - Autostart VMs start by this number, lowest first; equal numbers by name.
      - Default for a new VM is V(0).
    type: int
  autostart_delay:
    description:
      - Seconds the monitor waits after autostarting this VM before the next one (0 to 3600).
      - Default for a new VM is V(0).
    type: int
  usb:
    description:
      - Host USB devices passed through to the VM, on an xHCI controller (C(qemu-xhci)).
      - Each entry names a device by O(usb[].vendor_id) and O(usb[].product_id), or by
        O(usb[].bus) and O(usb[].port) (where it is plugged in). A device that is not plugged
        in yet is accepted; QEMU attaches it when it appears.
      - Setting O(usb) at all, also to V([]), gives the VM the controller. On a running VM
        with the controller, devices are hot-plugged and unplugged (unplug waits for QEMU's
        C(DEVICE_DELETED)); a running VM started without it needs a restart for its first
        USB device (see RV(vm.pending_restart)).
      - Unset keeps the stored list; a new VM has no USB controller.
    type: list
    elements: dict
    suboptions:
      vendor_id:
        description: USB vendor id, four hex digits (V(0x046d)), as C(lsusb) prints it.
        type: str
      product_id:
        description: USB product id, four hex digits (V(0xc52b)).
        type: str
      bus:
        description: Host USB bus number (1 to 255).
        type: int
      port:
        description: Host port path on that bus, through hubs (V(1), V(1.4)).
        type: str
  console_socket:
    description:
      - Give the VM a second serial port (the guest's C(ttyS1)) on a UNIX socket in
        O(run_dir), returned as RV(vm.console_socket_path), for an interactive console
        (C(socat - UNIX-CONNECT:<path>)). Default for a new VM is V(false).
    type: bool
  memory_balloon:
    description:
      - Give the VM a C(virtio-balloon-pci) device with free page reporting, and have QEMU
        poll the guest's memory statistics every 2 seconds (RV(vm.balloon)). Needs a restart
        to add or remove. Default for a new VM is V(false).
    type: bool
  memory_target_mb:
    description:
      - Balloon target in MiB, applied live with QMP C(balloon) (no restart), and the guest gives
        back the difference. V(0) clears it (the guest gets all its memory
        back). Needs O(memory_balloon); between 16 and O(memory_mb) plus O(memory_hotplug).
    type: int
  hugepages:
    description:
      - Back the guest's RAM with hugepages of this size (C(memory-backend-file) on the
        host's hugetlbfs mount of that page size, found in C(/proc/mounts), preallocated).
        Before a start the host must have enough free pages of the size
        (C(/sys/kernel/mm/hugepages/hugepages-<N>kB/free_hugepages); per host node for
        O(numa) nodes bound with O(numa[].policy=bind)); else the task fails, saying how
        many are missing, before anything starts. O(memory_mb), each O(numa[].memory_mb) and
        O(memory_hotplug) size must be whole pages. V(none) goes back to ordinary memory.
    type: str
    choices: [2M, 1G, none]
  memory_shared:
    description:
      - Map the guest's RAM shared (C(share=on)), with C(memory-backend-memfd) without hugepages,
        C(share=on) on hugetlbfs with them; needed by vhost-user devices. Default V(false).
    type: bool
  memory_max_mb:
    description:
      - Most memory (MiB) the VM may reach with hot-plugged DIMMs (C(-m maxmem)); enables
        memory hot-plug with O(memory_slots) DIMM slots. V(0) turns hot-plug off.
    type: int
  memory_slots:
    description:
      - DIMM slots for memory hot-plug (1 to 256, default 8). Needs O(memory_max_mb).
    type: int
  memory_hotplug:
    description:
      - Sizes in MiB (multiples of 128) of DIMMs beyond O(memory_mb), in order. Appending one
        to a running VM adds it live (C(object-add) + C(device_add pc-dimm)); removing one
        waits for a restart. Boot memory plus DIMMs must fit in O(memory_max_mb).
    type: list
    elements: int
  vcpus_max:
    description:
      - Most vCPUs the VM may have (C(-smp maxcpus)); raising O(vcpus) up to it on a running
        VM plugs vCPUs live (C(device_add) of the type C(query-hotpluggable-cpus) lists; the
        guest brings them online). Fewer vCPUs wait for a restart. V(0) clears it.
    type: int
  cpu_topology:
    description:
      - Guest CPU topology. The product of its counts must equal O(vcpus_max), or O(vcpus)
        without it. An empty dict clears it.
    type: dict
    suboptions:
      sockets:
        description: Sockets (required when the topology is set).
        type: int
      dies:
        description: Dies per socket (default 1).
        type: int
      cores:
        description: Cores per die (required when the topology is set).
        type: int
      threads:
        description: Threads per core (required when the topology is set).
        type: int
  numa:
    description:
      - Guest NUMA nodes, node N being the N-th entry. Every vCPU (up to O(vcpus_max)) is in
        exactly one node and the nodes' memory adds up to O(memory_mb). Each node's memory is
        a backend of its own, optionally bound to host NUMA nodes. An empty list removes
        them (at the next start).
    type: list
    elements: dict
    suboptions:
      cpus:
        description: The node's vCPUs, a list like V(0-1,4).
        type: str
      memory_mb:
        description: The node's memory in MiB.
        type: int
        required: true
      host_nodes:
        description: Host NUMA nodes for its memory, a list like V(0) or V(0-1).
        type: str
      policy:
        description: How the memory follows O(numa[].host_nodes) (default V(bind)).
        type: str
        choices: [bind, preferred, interleave]
      distances:
        description:
          - Distance to other nodes, by node index (V(11) to V(255); to itself V(10)).
            When any node has distances, each pair of nodes needs one in at least one
            direction.
        type: dict
  cpu_pinning:
    description:
      - Host CPUs for each vCPU, a dict from vCPU index (V(0), V(1), ...) to a host CPU list
        such as V(2) or V(3-4). Applied with
        C(sched_setaffinity) to the vCPU threads QEMU reports (C(query-cpus-fast)) while a
        start is still paused, and live (no restart) when changed; a vCPU without a pin may
        run on every host CPU. An empty dict removes the pins.
    type: dict
  emulator_cpus:
    description:
      - Host CPUs for QEMU's other threads (main loop, workers), a list like V(0-1). Live.
        An empty string removes the pin.
    type: str
  iothread_cpus:
    description:
      - Host CPUs for the disks' I/O threads (C(query-iothreads)), a list like V(2). Live.
        An empty string removes the pin.
    type: str
  cpu_pinning_exclusive:
    description:
      - Keep the host CPUs this VM pins to (O(cpu_pinning), O(emulator_cpus),
        O(iothread_cpus)) for it alone among the VMs of its host. A task that would make the
        pins of two VMs overlap where either is exclusive fails naming O(cpu_pinning). VMs
        without pins are not restricted. Needs O(cpu_pinning).
      - This holds when tasks (or the entries of one M(infinivirt.core.infinivirt_vms) task)
        change two VMs at the same moment. The host CPUs a VM pins are claimed for it in
        the database in one transaction, and only one of two overlapping claims succeeds.
    type: bool
  iothreads:
    description:
      - Names of I/O threads (C(-object iothread)) that V(virtio) disks share by naming
        one in O(disks[].iothread). A letter, then up to 31 letters, digits, V(_) or V(-);
        at most 64. Every listed thread is made at start, used or not.
      - A change needs a restart (a disk hot-plugged onto a thread the running VM lacks
        gets it made live). Left unset, the stored list is kept; V([]) removes them.
    type: list
    elements: str
  preset:
    description:
      - Defaults for a kind of guest, filled into the options the task leaves unset.
        Options the task sets always win.
      - V(linux) - disks V(virtio), cache V(none), aio V(native), an I/O thread each;
        NICs V(virtio-net-pci) (vhost-net and one queue pair per vCPU stay automatic);
        video V(virtio); RTC in UTC; HPET on.
      - V(windows) - disks V(sata), cache V(none), aio V(native); NICs V(e1000e);
        video V(vga); RTC in local time; HPET off; O(hyperv) on.
      - V(legacy) - disks V(ide), cache V(writeback), aio V(threads); NICs V(rtl8139);
        video V(cirrus); RTC in local time; HPET off.
      - Disks on V(cache=none) need a file system with O_DIRECT (not tmpfs); set
        O(disks[].cache) where that is not so.
      - The preset's name is stored, and what a task leaves unset is resolved again on
        every run, so changing the preset changes exactly the options it fills (a spec
        change; a running VM reports them in RV(vm.pending_restart)). V("") removes the
        preset, and those options go back to the defaults.
      - In diff mode, the after state shows the effective values, and C(preset_filled)
        maps each option the preset filled in (as written in a task, like
        C(disks[0].cache)) to its value.
    type: str
    choices: [linux, windows, legacy, ""]
  video_model:
    description:
      - The video card of a display (O(graphics.type) V(vnc) or V(spice)) - V(vga) (std VGA,
        C(-device VGA)), V(virtio) (C(virtio-vga)), V(cirrus) (C(cirrus-vga)), V(bochs)
        (C(bochs-display)), V(qxl) (C(qxl-vga), the card SPICE clients know best), V(ramfb)
        (a firmware framebuffer) or V(none).
      - V(none) with a display is refused (the display would have no screen); without a
        display no card is added whatever the value.
      - Left unset, from O(preset); else V(vga). A change waits for a restart.
    type: str
    choices: [vga, virtio, cirrus, bochs, qxl, ramfb, none]
  usb_tablet:
    description:
      - A USB tablet (C(usb-tablet)) on the VM's xHCI controller, so the guest's pointer
        follows the client's. The controller is added when O(usb) gives none.
      - Left unset, on whenever the VM has a display (O(graphics.type) is not V(none)).
      - A change waits for a restart.
    type: bool
  shared_dirs:
    description:
      - Host directories the guest mounts over virtiofs (C(mount -t virtiofs TAG DIR)).
      - Each share is served by a C(virtiofsd) of its own (the Rust C(/usr/libexec/virtiofsd)
        when installed, else QEMU 7.2's C(/usr/lib/qemu/virtiofsd)), started before QEMU on
        a socket in O(run_dir), journaled, and ended with the VM.
      - Needs O(memory_shared=true) (virtiofsd reads the guest's memory).
      - At most 8 shares. A change waits for a restart; V([]) removes them all.
    type: list
    elements: dict
    suboptions:
      source:
        description:
          - An existing directory on the host. With O(storage_roots) set it must be inside
            them, but not a root itself; never V(/), nor under C(/proc), C(/sys) or C(/dev).
        type: str
        required: true
      tag:
        description:
          - The name the guest mounts it by; 1 to 36 letters, digits, C(.), C(_) or C(-),
            unique in the VM.
        type: str
        required: true
      readonly:
        description:
          - The guest may read but not write (C(--readonly) of the Rust daemon; with the C
            daemon, a read-only bind mount of the source in the daemon's own mount
            namespace; file systems mounted below the source are read-only there too).
          - Unset is V(false).
        type: bool
  rtc_base:
    description:
      - Whether the guest's real-time clock runs in V(utc) or V(localtime)
        (C(-rtc base=localtime), what Windows expects).
      - Left unset, from O(preset); else V(utc).
    type: str
    choices: [utc, localtime]
  hpet:
    description:
      - Whether the machine has an HPET timer (V(false) adds C(hpet=off) to C(-machine)).
      - Left unset, from O(preset); else V(true).
    type: bool
  hyperv:
    description:
      - Give the guest the Hyper-V enlightenments Windows uses (C(hv-relaxed),
        C(hv-vapic), C(hv-spinlocks=0x1fff), C(hv-vpindex), C(hv-runtime), C(hv-time),
        C(hv-synic), C(hv-stimer), C(hv-frequencies)), added to C(-cpu) by Infinivirt
        (not through O(cpu_flags)).
      - Under TCG, C(hv-vpindex) (QEMU refuses it without KVM) and C(hv-synic) and
        C(hv-stimer) (which build on it) are left out, with a warning.
      - Left unset, from O(preset) (V(windows) turns it on); else V(false).
    type: bool
  guest_agent:
    description:
      - Give the VM the QEMU guest agent's channel, a virtio-serial port named
        C(org.qemu.guest_agent.0) on a UNIX socket in O(run_dir). A guest with
        C(qemu-guest-agent) installed starts the agent when the port appears.
      - Infinivirt then asks the agent for the guest's host name, OS and network interfaces
        (RV(vm.guest)), and can power the guest off through it (O(shutdown_mode=agent)).
      - Changing it on a running VM is a pending restart. Default for a new VM is V(false).
    type: bool
  tpm:
    description:
      - A TPM 2.0 for the guest (Windows 11 and Server 2025 need one), as a dict with C(version)
        V("2.0") (the default; V(true) is the same). C(version) V(1.2) is refused, because a 1.2
        state cannot become 2.0 later.
      - Each VM gets its own C(swtpm) process (package C(swtpm), which the host role installs),
        started before QEMU and ended with it (also when QEMU dies), and a C(tpm-crb) device
        on q35 (C(tpm-tis) on pc).
      - The TPM's state is kept in C(<nvram_dir>/<uuid>.tpm) (mode 0700) across stops and
        restarts, like the UEFI NVRAM, and removed with the VM (O(state=absent)).
      - V(false) or V({}) removes the TPM (its state stays until the VM is removed). Every
        change is a pending restart on a running VM. Unset keeps the stored value; a new VM
        has none.
    type: raw
  rng:
    description:
      - A virtio-rng device fed from the host's C(/dev/urandom), so a guest does not starve for
        entropy at its first boot. V(true), or a dict with C(max_bytes) (1 to 2^30, default
        V(1024)) and C(period_ms) (1 to 3600000, default V(1000)), at most C(max_bytes) bytes per
        C(period_ms), so one guest cannot drain the host's pool.
      - V(false) or V({}) removes it. Every change is a pending restart on a running VM. Unset
        keeps the stored value; a new VM has none.
    type: raw
  watchdog:
    description:
      - A watchdog device the guest must keep feeding, as a dict with C(model) (V(i6300esb),
        the default) and C(action), what QEMU does when it expires, V(reset) (default),
        V(poweroff), V(pause) or V(none).
      - The host monitor records the expiry as a C(watchdog) entry (with the action) in the
        VM's event log.
      - The guest needs a driver for it (Linux C(i6300esb); Debian's cloud kernels lack it).
      - V(false) or V({}) removes it. Every change is a pending restart on a running VM. Unset
        keeps the stored value; a new VM has none.
    type: raw
  smbios:
    description:
      - SMBIOS fields the guest reads from its firmware tables (C(/sys/class/dmi/id) on Linux;
        cloud-init and licensing tools use them), as a dict with C(type1), the system's
        C(manufacturer), C(product), C(version), C(serial), C(sku) and C(family), and C(type3),
        the chassis' C(manufacturer), C(serial), C(asset) and C(sku), each a dict of those keys.
      - Values are printable ASCII, 1 to 64 characters; a comma is passed to QEMU escaped. The
        system UUID is always the VM's own.
      - V({}) removes them. Every change is a pending restart on a running VM. Unset keeps the
        stored value; a new VM has none.
    type: raw
  vsock:
    description:
      - A virtio socket (C(vhost-vsock-pci)) between host and guest. V(true) gives the guest the
        lowest context ID (CID) from 3 up that no other VM of the host holds; a dict with C(cid)
        asks for that CID (3 to 4294967294), refused when another VM of the host holds it.
      - The CID is claimed in the database at the VM's start (two VMs started at the same time
        cannot get the same one) and kept by the VM while it stays on the host, so its address
        does not change between starts; it is freed when the VM is removed.
      - The host needs C(/dev/vhost-vsock) (kernel module C(vhost_vsock)); without it the task
        fails naming O(vsock) before anything is changed.
      - V(false) or V({}) removes it. Every change is a pending restart on a running VM. Unset
        keeps the stored value; a new VM has none.
    type: raw
  tags:
    description:
      - Tags of the VM, for inventories to group it by (the C(infinivirt.core.infinivirt)
        inventory plugin makes a group C(infinivirt_tag_<tag>) of each), and for
        M(infinivirt.core.infinivirt_vm_info) to filter by.
      - Each 1 to 63 letters, digits, V(.), V(_) or V(-), starting with a letter or digit;
        no tag twice; at most 64.
      - Never a restart, also for a running VM. Unset keeps the stored tags; V([]) removes them.
    type: list
    elements: str
  labels:
    description:
      - Labels of the VM, key to value, for inventories to group it by (the inventory plugin's
        C(keyed_groups)) and for M(infinivirt.core.infinivirt_vm_info) to filter by.
      - Keys as tags; values strings of at most 256 characters without control characters
        (quote numbers and booleans); at most 64 labels.
      - Never a restart, also for a running VM. Unset keeps the stored labels; V({}) removes them.
    type: dict
  wait_for:
    description:
      - After the converge, when the VM ends up running (never in check mode, never for
        V(stopped), V(paused) or V(absent)), wait until the guest is ready, at most
        O(wait_timeout); the VM's lock is not held while waiting.
      - V(agent) waits until the guest agent answers (needs O(guest_agent=true), else the
        task fails before doing anything).
      - V(ip) waits for an address on one of the VM's NICs, from the DHCP leases of a NIC on
        a NAT network (M(infinivirt.core.infinivirt_net) C(mode=nat); only a lease granted
        after this task's start counts), else from the guest agent. Without either source
        the task fails before doing anything.
      - V(ssh) waits for that address, then for TCP port 22 to answer with an SSH banner,
        tried from inside the VM's O(netns) (never from the host's namespace when the VM has
        one).
      - A dictionary whose one key C(serial) holds a regular expression (C(serial=REGEX)) waits
        for a line of the serial console (RV(vm.serial_log), terminal escapes removed) that it
        matches (Python C(re.search); the last, unfinished line counts too, for a prompt). When
        this task started the VM, only lines of this boot count (the log starts anew with each
        start); otherwise the whole log of the running QEMU.
      - When the wait fails (the timeout passes, or the VM stops), the task fails with a message that
        says which wait and after how long, and RV(console_tail); the VM is left as it is (running).
      - Unset, the task does not wait (and asks nothing more of the guest than without it).
    type: raw
  wait_timeout:
    description:
      - The most seconds O(wait_for) waits. V(0) looks once and fails at once if the guest is
        not ready. Must be a finite number, 0 or more.
      - Default 300 seconds.
    type: float
  shutdown_mode:
    description:
      - How V(stopped) (and V(absent) of a running VM) asks the guest to power off.
      - V(acpi) presses the ACPI power button.
      - V(agent) asks the guest agent (C(guest-shutdown), see O(guest_agent)); when the
        agent does not answer within 2 seconds (or the VM runs without its channel, or is
        paused), the ACPI power button is pressed instead, with a warning.
      - Either way O(stop_timeout) bounds the whole wait and O(force) ends QEMU after it.
    type: str
    choices: [acpi, agent]
    default: acpi
  graphics:
    description:
      - Remote display of the VM's screen.
      - Unset suboptions keep their stored values (defaults for a new VM).
    type: dict
    suboptions:
      type:
        description:
          - V(vnc) gives the VM a VNC display, V(spice) a SPICE display; V(none) has no display.
          - Default for a new VM is V(none).
        type: str
        choices: [none, vnc, spice]
      listen:
        description:
          - IP address the display listens on.
          - Default for a new VM is V(127.0.0.1).
        type: str
      port:
        description:
          - TCP port of the display, from 5900. When unset, the first free port from 5900
            to 5999 (VNC - QEMU takes it; SPICE - the start claims it in the store, so two
            VMs started at once never share one, and skips ports in use); RV(vm.graphics.port)
            tells which.
        type: int
      password:
        description:
          - Password of the display; for VNC 1 to 8 bytes (VNC compares only 8 bytes).
          - SPICE - the display refuses every client until QEMU has the password
            (C(disable-ticketing=off), the password set over QMP C(set_password)).
          - Required when O(graphics.listen) is not a loopback address; on loopback, no
            password lets any local client in.
          - Stored encrypted with AES-256-GCM (see O(secret_key_file)) and handed to QEMU
            over QMP, never on its command line. A new password reaches a running VM at
            once; clients already connected stay connected.
          - Left unset, the stored password is kept; switching O(graphics.type) to C(vnc) refuses
            a kept password longer than 8 bytes.
        type: str
      tls:
        description:
          - SPICE only - serve the display over TLS from the certificates in O(graphics.tls.cert_dir)
            (QEMU's C(x509-dir) - C(ca-cert.pem), C(server-cert.pem), C(server-key.pem)).
            The display's port is then its TLS port; no plain port is opened.
          - V({}) turns TLS off. A change waits for a restart.
        type: dict
        suboptions:
          cert_dir:
            description: An existing directory, not under C(/proc), C(/sys) or C(/dev).
            type: str
  cloud_init:
    description:
      - A cloud-init NoCloud seed for the guest, written as an ISO 9660 volume labelled
        C(CIDATA) and attached read-only as a SCSI CD-ROM (on a virtio-scsi controller of
        its own), which cloud-init in a cloud image reads at boot.
      - The ISO is built with the Python library C(pycdlib) when the VM starts, if it is
        missing or its content changed; it is kept (mode 0600, in the directory of the
        NVRAM files, O(nvram_dir)) while the VM exists and removed with the VM.
      - The option is stored encrypted like O(graphics.password); the VM's definition and
        the results keep only the digest of the seed, RV(vm.cloud_init_digest).
      - A change on a running VM takes effect at the next start (it is listed in
        RV(vm.pending_restart)), or at once with O(restart_on_change=true). The same
        content again is no change.
      - Left unset, the stored seed is kept; V({}) removes it.
      - Errors name the suboption at fault (C(cloud_init.user_data), ...) and change nothing.
    type: dict
    suboptions:
      user_data:
        description:
          - The user data. A dictionary is written as C(#cloud-config) YAML; a string is
            written as is and must start with a marker cloud-init knows (C(#cloud-config),
            C(#!), C(#include), a MIME header, ...). A C(#cloud-config) string must be a
            valid YAML mapping.
        type: raw
      meta_data:
        description:
          - The meta data. C(instance-id) defaults to the VM's UUID; C(local-hostname) is
            the guest's host name (see O(cloud_init.hostname)).
        type: dict
      network_config:
        description:
          - Network configuration version 2 (C(version) V(2), with or without a top-level
            C(network) key).
        type: dict
      vendor_data:
        description:
          - Vendor data, as O(cloud_init.user_data).
        type: raw
      hostname:
        description:
          - The guest's host name (meta data C(local-hostname)).
        type: str
      ssh_authorized_keys:
        description:
          - OpenSSH public keys of the default user (cloud-config C(ssh_authorized_keys)),
            merged into O(cloud_init.user_data), which must then be cloud-config.
        type: list
        elements: str
      users:
        description:
          - Cloud-config C(users) (V(default) or dictionaries with a C(name)), merged into
            O(cloud_init.user_data), which must then be cloud-config and have no C(users).
        type: list
        elements: raw
  unattend:
    description:
      - A Windows answer file for an unattended install, on an ISO 9660 volume (Joliet
        names) labelled C(UNATTEND) with C(Autounattend.xml) in its root, attached read-only
        as a CD-ROM on the machine's own SATA controller (AHCI; on O(machine_type=pc), IDE),
        in its last slot. Windows Setup has drivers for AHCI and IDE built in (not for
        virtio), and looks for C(Autounattend.xml) in the root of each CD it sees. Boot
        from the Windows installation ISO given in O(disks) (C(media=cdrom)); this CD-ROM
        is not bootable.
      - The ISO is built with the Python library C(pycdlib) when the VM starts, if it is
        missing or its content changed; it is kept (mode 0600, in O(nvram_dir)) while the
        VM exists and removed with the VM.
      - The files are stored encrypted like O(graphics.password) (answer files hold
        passwords); the VM's definition and the results keep only a keyed digest,
        RV(vm.unattend_digest).
      - A change on a running VM takes effect at the next start (it is listed in
        RV(vm.pending_restart)), or at once with O(restart_on_change=true). The same
        content again is no change (a O(unattend.files[].src) file is read by every task
        that sets the option).
      - The files are bounded (256 KiB for the answer file, 384 KiB for the whole ISO,
        256 files); put drivers on a CD-ROM disk of their own in O(disks).
      - Left unset, the stored files are kept; V({}) removes the CD-ROM.
      - Errors name the suboption at fault (C(unattend.autounattend),
        C(unattend.files[2].path), ...), never quote the text, and change nothing.
    type: dict
    suboptions:
      autounattend:
        description:
          - The text of the C(autounattend.xml), written as is in UTF-8 (not re-serialized).
          - Required unless O(unattend) is V({}). It must be well-formed XML whose root is
            C(unattend) in the namespace C(urn:schemas-microsoft-com:unattend), without a
            DOCTYPE.
        type: str
      files:
        description:
          - More files for the ISO, each with O(unattend.files[].content) or
            O(unattend.files[].src).
        type: list
        elements: dict
        suboptions:
          path:
            description:
              - The file's path on the ISO, relative to its root, with C(/) between
                directories (V($OEM$/$$/Setup/Scripts/SetupComplete.cmd)).
              - No C(..), C(.) or empty parts; at most 64 bytes per name in UTF-8, 240 characters in all
                and 8 levels; none of C(*), C(:), C(;), C(?), C(\), C(<), C(>), C("), C(|)
                or control characters; no name ending in C(.) or a space; not the same path
                as another (or as C(Autounattend.xml)) when case is ignored, as Windows
                ignores it.
            type: str
            required: true
          content:
            description:
              - The file's text, written in UTF-8.
            type: str
          src:
            description:
              - An absolute path of a regular file on the hypervisor, read by the task (not
                in C(/proc), C(/sys) or C(/dev)); its content is stored with the option.
            type: path
  stop_timeout:
    description:
      - Seconds to wait for the guest to power off after the ACPI power button (or the guest
        agent's shutdown, O(shutdown_mode)).
      - V(0) waits for nothing. With O(force=true) QEMU is ended at once (QMP C(quit), then
        C(SIGKILL)) without pressing the power button; without it, a VM that is not off fails
        the task at once and is left as it was (a paused VM stays paused).
      - A negative value is an error.
    type: float
    default: 60.0
  force:
    description:
      - When the guest does not power off within O(stop_timeout), end QEMU (QMP C(quit),
        then C(SIGKILL)) instead of failing.
    type: bool
    default: false
  digest:
    description:
      - The RV(vm.digest) of the VM as last read. When given, the task fails without changing
        anything if the VM's stored definition has changed since (optimistic concurrency).
    type: str
  restart_on_change:
    description:
      - Restart a running or paused VM at once when a changed option needs a restart.
    type: bool
    default: false
requirements:
  - pycdlib >= 1.12.0 (on the managed host, only for O(cloud_init) and O(unattend))
notes:
  - A VM counts as running only when its pidfile names a live process whose command line
    carries the VM's UUID.
seealso:
  - module: infinivirt.core.infinivirt_vm_info
"""

EXAMPLES = r"""
- name: A VM from a cloud image, with its host name and an SSH key set by cloud-init
  infinivirt.core.infinivirt_vm:
    name: web02
    memory_mb: 1024
    disks:
      - path: /var/lib/infinivirt/images/web02.qcow2
    nics:
      - network: default
    cloud_init:
      hostname: web02
      ssh_authorized_keys:
        - "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
      user_data:
        packages: [nginx]
    state: running

- name: Install Windows unattended from its ISO, with an answer file and a first-logon script
  infinivirt.core.infinivirt_vm:
    name: win01
    preset: windows
    firmware: uefi
    memory_mb: 4096
    disks:
      - path: /var/lib/infinivirt/images/win01.qcow2
        bus: sata
      - path: /var/lib/infinivirt/iso/Win11_x64.iso
        format: raw
        bus: sata
        media: cdrom
        readonly: true
        boot_order: 1
    unattend:
      autounattend: "{{ lookup('ansible.builtin.template', 'autounattend.xml.j2') }}"
      files:
        - path: $OEM$/$$/Setup/Scripts/SetupComplete.cmd
          src: /srv/windows/SetupComplete.cmd
    state: running

- name: Boot a small VM from a kernel and an initramfs
  infinivirt.core.infinivirt_vm:
    name: web01
    state: running
    vcpus: 2
    memory_mb: 1024
    kernel: /var/lib/infinivirt/images/vmlinuz
    initrd: /var/lib/infinivirt/images/initrd.img
    kernel_cmdline: console=ttyS0 panic=-1

- name: Power it off through ACPI, ending it if it has not stopped after 2 minutes
  infinivirt.core.infinivirt_vm:
    name: web01
    state: stopped
    stop_timeout: 120
    force: true

- name: Give it more memory and restart it if it is running
  infinivirt.core.infinivirt_vm:
    name: web01
    memory_mb: 2048
    restart_on_change: true

- name: Give it a VNC display on this host's loopback, with a password from the vault
  infinivirt.core.infinivirt_vm:
    name: web01
    graphics:
      type: vnc
      password: "{{ vault_web01_vnc_password }}"

- name: Two NICs, one on a NAT network and one on an existing bridge with 4 queues
  infinivirt.core.infinivirt_vm:
    name: web01
    nics:
      - network: default
      - bridge: br-storage
        mac: "52:54:00:aa:bb:01"
        queues: 4
        mtu: 9000

- name: A tuned VM - NUMA, hugepages, pinned vCPUs, balloon and hot-plug room
  infinivirt.core.infinivirt_vm:
    name: db01
    state: running
    vcpus: 2
    vcpus_max: 4
    cpu_topology: {sockets: 2, cores: 2, threads: 1}
    memory_mb: 4096
    memory_max_mb: 8192
    hugepages: 2M
    memory_balloon: true
    numa:
      - {cpus: "0-1", memory_mb: 2048, host_nodes: "0", policy: bind, distances: {"1": 20}}
      - {cpus: "2-3", memory_mb: 2048, host_nodes: "1", policy: bind}
    cpu_pinning: {0: "2", 1: "3"}
    emulator_cpus: "0-1"
    cpu_pinning_exclusive: true

- name: Give back 1 GiB through the balloon, add a DIMM and two vCPUs, live
  infinivirt.core.infinivirt_vm:
    name: db01
    memory_target_mb: 3072
    memory_hotplug: [1024]
    vcpus: 4
- name: A VM whose 20 GiB root disk is a linked clone of a cloud image template (made once)
  infinivirt.core.infinivirt_vm:
    name: web03
    memory_mb: 1024
    state: running
    disks:
      - path: /var/lib/infinivirt/images/web03.qcow2
        clone_from: /var/lib/infinivirt/templates/debian-12.qcow2
        size: 20G
    nics:
      - network: default
    cloud_init:
      hostname: web03

- name: A Linux guest from the linux preset, two disks on one shared I/O thread, limits
  infinivirt.core.infinivirt_vm:
    name: db01
    preset: linux
    iothreads: [io0]
    disks:
      - path: /var/lib/infinivirt/images/db01.qcow2
        iothread: io0
      - path: /var/lib/infinivirt/images/db01-data.qcow2
        iothread: io0
        iops: 2000
        bps: 104857600  # 100 MiB/s; a new value applies to the running VM
    nics:
      - network: default
        rate_limit_mbit: 200  # traffic to the guest; applies live

- name: A Windows guest (SATA, e1000e, local-time RTC, no HPET, Hyper-V enlightenments)
  infinivirt.core.infinivirt_vm:
    name: win01
    preset: windows
    memory_mb: 4096
    vcpus: 2
    disks:
      - path: /var/lib/infinivirt/images/win01.qcow2
        bus: virtio  # explicit options win over the preset (needs the virtio-win drivers)
    graphics:
      type: vnc

- name: A VM with the QEMU guest agent, powered off through it
  infinivirt.core.infinivirt_vm:
    name: web02
    guest_agent: true
    state: stopped
    shutdown_mode: agent

- name: A linked clone of a cloud image
  infinivirt.core.infinivirt_disk:
    path: /var/lib/infinivirt/images/web03.qcow2
    clone_from: /var/lib/infinivirt/images/debian-12-genericcloud.qcow2
    clone_mode: linked

- name: A VM on a NAT network, reachable over SSH when the task returns
  infinivirt.core.infinivirt_vm:
    name: web03
    memory_mb: 1024
    disks:
      - path: /var/lib/infinivirt/images/web03.qcow2
    nics:
      - network: nat0  # infinivirt_net mode: nat: its DHCP leases tell the address
    guest_agent: true
    cloud_init:
      hostname: web03
      ssh_authorized_keys:
        - "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
    state: running
    wait_for: ssh
    wait_timeout: 600
  register: web03

- name: The new guest joins the inventory; later plays configure it over SSH
  ansible.builtin.add_host:
    name: web03
    ansible_host: "{{ web03.vm.ready.address }}"
    ansible_user: debian  # the cloud image's default user, who got the key
    groups: [new_guests]

- name: A VM that is ready when its console says so
  infinivirt.core.infinivirt_vm:
    name: appliance1
    state: running
    wait_for:
      serial: "login:"
    wait_timeout: 120

- name: Remove it
  infinivirt.core.infinivirt_vm:
    name: web01
    state: absent
- name: A Windows 11 VM with a TPM 2.0, entropy, a watchdog and its serial number in SMBIOS
  infinivirt.core.infinivirt_vm:
    name: win11
    state: running
    preset: windows
    firmware: uefi
    secure_boot: true
    memory_mb: 4096
    disks: [{path: /var/lib/infinivirt/images/win11.qcow2}]
    tpm: {version: "2.0"}
    rng: true
    watchdog: {action: reset}
    smbios:
      type1: {manufacturer: Example Corp, product: Desktop, serial: "WIN11-0042"}
      type3: {asset: "ASSET-7"}
"""

RETURN = r"""
vm:
  description: The VM after the task (predicted in check mode).
  returned: always
  type: dict
  contains:
    name:
      description: VM name.
      type: str
      sample: web01
    uuid:
      description: VM UUID, also QEMU's C(-uuid). Absent when O(state=absent) found no VM.
      type: str
      sample: 0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11
    status:
      description: V(running), V(paused), V(stopped) or V(absent).
      type: str
      sample: running
    pid:
      description: PID of the QEMU process, or null when it is not running.
      type: int
      sample: 12345
    qmp_socket:
      description: Path of the QMP socket, or null when it is not running.
      type: str
      sample: /run/infinivirt/0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11.qmp
    serial_log:
      description: File that receives the guest's first serial port.
      type: str
      sample: /run/infinivirt/0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11.serial.log
    ready:
      description: What the task waited for (O(wait_for)) and what it found.
      returned: when the task waited (O(wait_for), not in check mode, the VM running)
      type: dict
      contains:
        wait_for:
          description: The O(wait_for) that was met.
          type: raw
          sample: ssh
        address:
          description: The guest's address (V(ip) and V(ssh)), null for the other waits.
          type: str
          sample: 10.77.0.61
        address_source:
          description: >-
            Where the address came from: V(leases) (the DHCP leases of a NAT network) or V(agent)
            (the guest agent); null without an address.
          type: str
          sample: leases
        seconds:
          description: How long the wait took, in seconds.
          type: float
          sample: 94.2
    host:
      description: The hypervisor that owns the VM (O(host_id) of the host that last started it).
      type: str
    version:
      description: Row version in the database; it grows with every write.
      type: int
    vcpus:
      description: Number of virtual CPUs.
      type: int
    memory_mb:
      description: Guest memory in MiB.
      type: int
    machine_type:
      description: QEMU machine type.
      type: str
    cpu_model:
      description: CPU model as requested.
      type: str
    cpu_flags:
      description: CPU feature flags as requested.
      type: list
      elements: str
    accel:
      description: Accelerator as requested.
      type: str
    accel_in_use:
      description: Accelerator the running QEMU uses (V(kvm) or V(tcg)), or null.
      type: str
      sample: tcg
    cpu_in_use:
      description: The C(-cpu) value the running QEMU got, or null.
      type: str
      sample: max
    kernel:
      description: Kernel for direct kernel boot.
      type: str
    initrd:
      description: Initial ramdisk for direct kernel boot.
      type: str
    kernel_cmdline:
      description: Kernel command line.
      type: str
    firmware:
      description: V(bios) or V(uefi).
      type: str
    nvram:
      description: Path of a UEFI VM's NVRAM file, or null.
      type: str
    disks:
      description:
        - The VM's disks as stored (see O(disks)). A disk added with O(disks[].clone_from)
          also has C(clone_from), C(clone_mode) and C(size) as they were when it was added.
      type: list
      elements: dict
    nics:
      description: The VM's NICs as stored (see O(nics)), with the MAC each was given.
      type: list
      elements: dict
    taps:
      description: TAP device of each NIC, in the order of RV(vm.nics).
      type: list
      elements: str
    netns:
      description: Network namespace of the VM, or null for the host's.
      type: str
    department:
      description: Firewall department, or null.
      type: str
    tags:
      description: Tags of the VM (see O(tags)).
      type: list
      elements: str
    labels:
      description: Labels of the VM (see O(labels)).
      type: dict
    on_crash:
      description: What the host monitor does when the VM crashes (see O(on_crash)).
      type: str
    on_poweroff:
      description: What the host monitor does when the guest powers off (see O(on_poweroff)).
      type: str
    autostart:
      description: Whether the host monitor starts the VM after a host boot (see O(autostart)).
      type: bool
    autostart_order:
      description: Position among the autostart VMs (see O(autostart_order)).
      type: int
    autostart_delay:
      description: Seconds waited after autostarting it (see O(autostart_delay)).
      type: int
    secure_boot:
      description: Whether UEFI Secure Boot is on (see O(secure_boot)).
      type: bool
    uefi_firmware:
      description: OVMF code image as requested, or null for the distribution's default.
      type: str
    console_socket:
      description: Whether the VM has a second serial port on a UNIX socket (see O(console_socket)).
      type: bool
    usb:
      description: The VM's USB devices as stored (see O(usb)); null when the VM has no USB controller.
      type: list
      elements: dict
    console_socket_path:
      description: UNIX socket of the guest's second serial port while it runs, or null.
      type: str
    iothreads:
      description: Named I/O threads (see O(iothreads)).
      type: list
      elements: str
    preset:
      description: The preset (see O(preset)), or null.
      type: str
    video_model:
      description: Video card of the display, effective value (see O(video_model)).
      type: str
    rtc_base:
      description: V(utc) or V(localtime), effective value (see O(rtc_base)).
      type: str
    hpet:
      description: Whether the machine has an HPET, effective value (see O(hpet)).
      type: bool
    hyperv:
      description: Whether the Hyper-V enlightenments are on, effective value (see O(hyperv)).
      type: bool
    cloud_init_digest:
      description:
        - A keyed digest (HMAC-SHA256 under a random salt stored encrypted with the option)
          of the cloud-init seed's files (O(cloud_init)), or null when the VM has no seed. It
          changes when the seed's content changes; the content itself is never returned.
        - A VM whose seed was set by an earlier version keeps its unkeyed C(sha256:) digest
          until its O(cloud_init) changes.
      type: str
      sample: hmac-sha256:5f0c6a3bd7a1c2e4f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6
    unattend_digest:
      description:
        - A keyed digest (HMAC-SHA256 under a random salt stored encrypted with the files)
          of the answer file ISO's files (O(unattend)), or null when the VM has none. It
          changes when their content changes; the content itself is never returned.
      type: str
      sample: hmac-sha256:0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d
    guest_agent:
      description: Whether the VM has the guest agent's channel (O(guest_agent)).
      type: bool
    tpm:
      description: The TPM (O(tpm)) as C({version}), or null.
      type: dict
    rng:
      description: The virtio-rng device (O(rng)) as C({max_bytes, period_ms}), or null.
      type: dict
    watchdog:
      description: The watchdog (O(watchdog)) as C({model, action}), or null.
      type: dict
    smbios:
      description: The SMBIOS fields (O(smbios)) as C({type1, type3}), or null.
      type: dict
    vsock:
      description: The vsock device (O(vsock)) as C({cid}) (a null CID takes the lowest free one at start), or null.
      type: dict
    usb_tablet:
      description: O(usb_tablet) as stored; null means on whenever the VM has a display.
      type: bool
    shared_dirs:
      description: The virtiofs shares (O(shared_dirs)), each C(source), C(tag), C(readonly).
      type: list
      elements: dict
    guest:
      description:
        - What the QEMU guest agent reports, asked when the task ends (see O(guest_agent)).
        - Asked only for a running VM of this host whose QEMU runs with the agent's channel,
          and for at most 2 seconds, so a silent agent does not hold the task.
        - After a wait (O(wait_for)) it is asked again; when the agent does not answer, C(ips)
          holds the address the wait found in the DHCP leases (RV(vm.ready.address_source)).
      type: dict
      contains:
        agent:
          description:
            - V(answering); V(not answering) (the VM does not run, runs on another host, the
              guest has no agent, or the agent is busy or not started yet); V(disabled) (the
              running QEMU, or a stopped VM's definition, has no agent channel).
          type: str
          sample: answering
        hostname:
          description: The guest's host name, or null when the agent does not answer.
          type: str
          sample: web01
        os:
          description: The guest's OS (C(guest-get-osinfo)); its values are null when the agent does not answer.
          type: dict
          contains:
            id:
              description: The OS's ID (C(os-release) C(ID)).
              type: str
              sample: debian
            version:
              description: Its version (C(os-release) C(VERSION_ID)).
              type: str
              sample: "12"
            pretty_name:
              description: Its full name (C(os-release) C(PRETTY_NAME)).
              type: str
              sample: Debian GNU/Linux 12 (bookworm)
        interfaces:
          description: The guest's network interfaces, loopback included; empty when the agent does not answer.
          type: list
          elements: dict
          contains:
            name:
              description: The interface's name in the guest.
              type: str
              sample: enp1s0
            mac:
              description: Its MAC address (lower case), null when it has none.
              type: str
              sample: "52:54:00:12:34:56"
            ips:
              description: Its IP addresses (without prefix length), link-local and loopback included.
              type: list
              elements: str
              sample: ["10.0.2.15", "fe80::5054:ff:fe12:3456"]
        ips:
          description: Every address of every interface but loopback and link-local ones, IPv4 first.
          type: list
          elements: str
          sample: ["10.0.2.15"]
    graphics:
      description: The display (O(graphics)); never the password.
      type: dict
      contains:
        type:
          description: V(none), V(vnc) or V(spice), O(graphics.type).
          type: str
        listen:
          description: Address the display listens on, O(graphics.listen).
          type: str
          sample: 127.0.0.1
        port:
          description: Port the display listens on while the VM runs; when it does not run,
            RV(vm.graphics.port_requested).
          type: int
          sample: 5900
        port_requested:
          description: The port asked for, O(graphics.port); null for the first free one from 5900.
          type: int
        password_set:
          description: Whether a display password is stored (the password itself is never returned).
          type: bool
        tls:
          description: SPICE over TLS, C({cert_dir}) (O(graphics.tls)); null without TLS.
          type: dict
    memory_balloon:
      description: Whether the VM has a balloon device (O(memory_balloon)).
      type: bool
    memory_target_mb:
      description: The balloon target in MiB (O(memory_target_mb)), or null for all of the memory.
      type: int
    hugepages:
      description: Hugepage size backing the guest's RAM (V(2M), V(1G)), or null.
      type: str
    memory_shared:
      description: Whether the guest's RAM is shared (O(memory_shared)).
      type: bool
    memory_max_mb:
      description: Memory hot-plug ceiling in MiB (O(memory_max_mb)), or null.
      type: int
    memory_slots:
      description: DIMM slots asked for (O(memory_slots)), or null (8 with O(memory_max_mb)).
      type: int
    memory_hotplug:
      description: Sizes in MiB of the DIMMs beyond O(memory_mb).
      type: list
      elements: int
    vcpus_max:
      description: vCPU hot-plug ceiling (O(vcpus_max)), or null.
      type: int
    cpu_topology:
      description: Keys C(sockets), C(dies), C(cores), C(threads); empty when not set.
      type: dict
    numa:
      description: Guest NUMA nodes, each with C(cpus), C(memory_mb), C(host_nodes), C(policy)
        and C(distances) (keyed by node index as text), lists in canonical form (V(0-1,4)).
      type: list
      elements: dict
    cpu_pinning:
      description: vCPU index (as text) to host CPU list in canonical form.
      type: dict
      sample: {"0": "2", "1": "3-4"}
    emulator_cpus:
      description: Host CPUs of QEMU's other threads, or null.
      type: str
    iothread_cpus:
      description: Host CPUs of the disks' I/O threads, or null.
      type: str
    cpu_pinning_exclusive:
      description: Whether this VM's pinned host CPUs are its own (O(cpu_pinning_exclusive)).
      type: bool
    balloon:
      description:
        - The balloon of a running VM that has one, else null. C(actual_mb) is the guest's
          memory as C(query-balloon) reports it; C(stats) the guest's memory statistics
          (C(qom-get guest-stats), keys such as C(stat_free_memory), C(stat_total_memory),
          C(stat_available_memory) in bytes; statistics the guest has not sent are left
          out); C(last_update) when the guest last sent them (seconds since the epoch, 0
          before the first).
      type: dict
      sample: {"actual_mb": 3072, "stats": {"stat_free_memory": 2845736960}, "last_update": 1700000000}
    digest:
      description: SHA-256 of the stored definition; pass it back as O(digest) to refuse
        changes made by someone else in between.
      type: str
      sample: 5e3c0c3b7f1d2f4b9d5a0e8c6b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c
    pending_restart:
      description: Options changed since the running VM was started, which need a restart, by
        their option names (V(graphics) for any of its suboptions, as in RV(plan.changes)).
      type: list
      elements: str
      sample: [memory_mb]
plan:
  description:
    - What the task does and how each change applies, decided before anything is touched (the
      same in check mode as in the real run of the same task).
  returned: always
  type: dict
  contains:
    actions:
      description:
        - What is done to the VM, in order, from V(abort_start), V(create), V(update),
          V(set_password), V(hotplug_disks), V(hotplug_nics), V(hotplug_usb),
          V(hotplug_cpus), V(hotplug_memory), V(set_balloon), V(pin_cpus), V(stop),
          V(start), V(pause), V(resume), V(delete). Empty when nothing.
        - V(clone_disks) (first, when there are disks to make from a template; see
          RV(plan.disk_clones)) comes before all of them.
      type: list
      elements: str
      sample: [update, hotplug_disks]
    disk_clones:
      description:
        - The disks this task makes from a template (O(disks[].clone_from)), in the order of
          O(disks) (in check mode, the ones a real run makes).
      returned: when the task makes disks from a template
      type: list
      elements: dict
      contains:
        disk:
          description: The disk's place in O(disks).
          type: str
          sample: disks[0]
        path:
          description: The disk made.
          type: str
        clone_from:
          description: The template, as O(disks[].clone_from) names it.
          type: str
        clone_mode:
          description: V(linked) or V(full).
          type: str
        size:
          description: The disk's virtual size in bytes (the template's, or O(disks[].size)).
          type: int
          sample: 21474836480
        backing_file:
          description: The template, for a linked clone; null for a full one.
          type: str
    changes:
      description:
        - One entry per option the task changes (graphics and disks as their whole option),
          saying how this task applies it.
        - V(live) applies it to the running VM now (hot-plug, balloon, CPU pins, display
          password, firewall department, monitor policies).
        - V(restart) stores it for a running VM that takes it only when restarted, by this task
          (O(restart_on_change), O(state=restarted)) or, see RV(plan.restart_needed), a later one.
        - V(next_start) means the VM does not run after the task (it is stopped, created by
          this task, or stopped by it) and takes the change when it starts, also when this task
          starts it.
      type: dict
      sample: {memory_mb: restart, disks: live}
    restart_needed:
      description: Whether changes stay pending a restart after the task (RV(vm.pending_restart) lists them).
      type: bool
      sample: false
console_tail:
  description:
    - The last lines of the VM's serial console (at most 40 lines and 4096 bytes, terminal escapes
      and control characters removed), when a start or a wait (O(wait_for)) failed, so a user
      without a shell on the host sees why.
    - Every secret the task knows is replaced by C(********) - the display password, the LUKS keys
      of the VM's disks, and the strings of O(cloud_init) (C(user_data), C(vendor_data), C(users),
      C(ssh_authorized_keys); a string shorter than 6 characters only under a key that names a
      secret, such as C(password) or C(chpasswd)).
  returned: when a start or a wait failed
  type: list
  elements: str
  sample: ["[  OK  ] Reached target Network.", "Debian GNU/Linux 12 web01 ttyS0"]
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService


def main() -> None:
    module = InfinivirtModule(
        argument_spec=vm_argument_spec(),
        supports_check_mode=True,
        requirements=[("qemu.qmp", HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR)],
    )

    module.run(lambda ctx: VmService(ctx).ensure(module.params, module.check_mode).result())


if __name__ == "__main__":
    main()
