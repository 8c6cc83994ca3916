# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The options of one VM: infinivirt_vm's argument_spec, which infinivirt_vms also checks
each entry of its ``vms`` list against, so both take exactly the same values."""

from __future__ import annotations

import copy
from typing import Any, Dict

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import (
    AIO_MODES,
    BUSES,
    CACHE_MODES,
    FORMATS,
    MEDIA,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import MODELS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.presets import PRESETS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    ACCELS,
    FIRMWARES,
    GRAPHICS_TYPES,
    MACHINE_TYPES,
    ON_CRASH,
    ON_POWEROFF,
    RTC_BASES,
    SHUTDOWN_MODES,
    VIDEO_MODELS,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import STATES
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.tuning import HUGEPAGE_SIZES, NUMA_POLICIES

_VM_OPTIONS: Dict[str, Any] = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=list(STATES)),
    vcpus=dict(type="int"),
    memory_mb=dict(type="int"),
    machine_type=dict(type="str", choices=list(MACHINE_TYPES)),
    cpu_model=dict(type="str"),
    cpu_flags=dict(type="list", elements="str"),
    accel=dict(type="str", choices=list(ACCELS)),
    kernel=dict(type="path"),
    initrd=dict(type="path"),
    kernel_cmdline=dict(type="str"),
    stop_timeout=dict(type="float", default=60.0),
    force=dict(type="bool", default=False),
    restart_on_change=dict(type="bool", default=False),
    digest=dict(type="str"),
    firmware=dict(type="str", choices=list(FIRMWARES)),
    secure_boot=dict(type="bool"),
    uefi_firmware=dict(type="path"),
    disks=dict(
        type="list",
        elements="dict",
        options=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=list(FORMATS)),
            bus=dict(type="str", choices=list(BUSES)),
            cache=dict(type="str", choices=list(CACHE_MODES)),
            aio=dict(type="str", choices=list(AIO_MODES)),
            iothread=dict(type="raw"),
            discard=dict(type="bool"),
            serial=dict(type="str"),
            readonly=dict(type="bool"),
            boot_order=dict(type="int"),
            media=dict(type="str", choices=list(MEDIA)),
            iops=dict(type="int"),
            iops_read=dict(type="int"),
            iops_write=dict(type="int"),
            bps=dict(type="int"),
            bps_read=dict(type="int"),
            bps_write=dict(type="int"),
            # Made from a template when first added (vm/model/clones.py). The choices are
            # volume/origin.py's CLONE_MODES, written out so a no-op task loads no volume code
            # (tests/unit/.../vm/model/test_clones.py holds the two equal).
            clone_from=dict(type="path"),
            clone_mode=dict(type="str", choices=["linked", "full"]),
            size=dict(type="str"),
        ),
    ),
    nics=dict(
        type="list",
        elements="dict",
        options=dict(
            network=dict(type="str"),
            bridge=dict(type="str"),
            model=dict(type="str", choices=list(MODELS)),
            mac=dict(type="str"),
            queues=dict(type="int"),
            vhost=dict(type="bool"),
            mtu=dict(type="int"),
            tap=dict(type="str"),
            ips=dict(type="list", elements="str"),
            rate_limit_mbit=dict(type="int"),
        ),
    ),
    netns=dict(type="str"),
    department=dict(type="str"),
    on_crash=dict(type="str", choices=list(ON_CRASH)),
    on_poweroff=dict(type="str", choices=list(ON_POWEROFF)),
    autostart=dict(type="bool"),
    autostart_order=dict(type="int"),
    autostart_delay=dict(type="int"),
    console_socket=dict(type="bool"),
    usb=dict(
        type="list",
        elements="dict",
        options=dict(
            vendor_id=dict(type="str"),
            product_id=dict(type="str"),
            bus=dict(type="int"),
            port=dict(type="str"),
        ),
    ),
    memory_balloon=dict(type="bool"),
    memory_target_mb=dict(type="int"),
    hugepages=dict(type="str", choices=list(HUGEPAGE_SIZES) + ["none"]),
    memory_shared=dict(type="bool"),
    memory_max_mb=dict(type="int"),
    memory_slots=dict(type="int"),
    memory_hotplug=dict(type="list", elements="int"),
    vcpus_max=dict(type="int"),
    cpu_topology=dict(
        type="dict",
        options=dict(sockets=dict(type="int"), dies=dict(type="int"), cores=dict(type="int"), threads=dict(type="int")),
    ),
    numa=dict(
        type="list",
        elements="dict",
        options=dict(
            cpus=dict(type="str"),
            memory_mb=dict(type="int", required=True),
            host_nodes=dict(type="str"),
            policy=dict(type="str", choices=list(NUMA_POLICIES)),
            distances=dict(type="dict"),
        ),
    ),
    cpu_pinning=dict(type="dict"),
    emulator_cpus=dict(type="str"),
    iothread_cpus=dict(type="str"),
    cpu_pinning_exclusive=dict(type="bool"),
    iothreads=dict(type="list", elements="str"),
    preset=dict(type="str", choices=list(PRESETS) + [""]),
    video_model=dict(type="str", choices=list(VIDEO_MODELS)),
    rtc_base=dict(type="str", choices=list(RTC_BASES)),
    hpet=dict(type="bool"),
    hyperv=dict(type="bool"),
    guest_agent=dict(type="bool"),
    tags=dict(type="list", elements="str"),
    labels=dict(type="dict"),
    shutdown_mode=dict(type="str", default="acpi", choices=list(SHUTDOWN_MODES)),
    # Platform devices (vm/model/devices.py validates them; false or {} turns one off). raw:
    # rng and vsock also take true, and a bad suboption is refused naming it (smbios.type1.serial).
    tpm=dict(type="raw"),
    rng=dict(type="raw"),
    watchdog=dict(type="raw"),
    smbios=dict(type="raw"),
    vsock=dict(type="raw"),
    # readiness (vm/model/readiness.py): agent, ip, ssh or {serial: REGEX}; no default, so
    # a task that does not wait imports none of it (300 s when unset)
    wait_for=dict(type="raw"),
    wait_timeout=dict(type="float"),
    graphics=dict(
        type="dict",
        options=dict(
            type=dict(type="str", choices=list(GRAPHICS_TYPES)),
            listen=dict(type="str"),
            port=dict(type="int"),
            password=dict(type="str", no_log=True),
            tls=dict(type="dict", options=dict(cert_dir=dict(type="str"))),  # SPICE only
        ),
    ),
    usb_tablet=dict(type="bool"),
    shared_dirs=dict(
        type="list",
        elements="dict",
        options=dict(
            source=dict(type="str", required=True), tag=dict(type="str", required=True), readonly=dict(type="bool")
        ),
    ),
    # cloud-init NoCloud seed (vm/model/cloud_init.py validates it). no_log on what may hold
    # passwords or keys; results show only cloud_init_digest.
    cloud_init=dict(
        type="dict",
        options=dict(
            user_data=dict(type="raw", no_log=True),
            meta_data=dict(type="dict"),
            network_config=dict(type="dict"),
            vendor_data=dict(type="raw", no_log=True),
            hostname=dict(type="str"),
            ssh_authorized_keys=dict(type="list", elements="str", no_log=True),
            users=dict(type="list", elements="raw", no_log=True),
        ),
    ),
    # Windows Setup's answer file on a CD-ROM (vm/model/unattend.py validates it; {} removes
    # it). The XML and inline files may hold passwords: no_log; results show unattend_digest.
    unattend=dict(
        type="dict",
        options=dict(
            autounattend=dict(type="str", no_log=True),
            files=dict(
                type="list",
                elements="dict",
                options=dict(
                    path=dict(type="str", required=True),
                    content=dict(type="str", no_log=True),
                    src=dict(type="path"),
                ),
                mutually_exclusive=[("content", "src")],
                required_one_of=[("content", "src")],
            ),
        ),
    ),
)


def vm_argument_spec() -> Dict[str, Any]:
    """A fresh copy (Ansible's validators may annotate the spec they are given)."""
    return copy.deepcopy(_VM_OPTIONS)
