# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Numbered schema migrations, shared by every backend.

Append a new (number, statements) entry; never edit an applied one. The SQL sticks to
types both SQLite and PostgreSQL accept.
"""

from __future__ import annotations

from typing import List, Tuple

# machine_configuration's columns after migration 12, in their order there.
_MC_12 = ", ".join(
    (
        "vm_uuid",
        "vcpus",
        "memory_mb",
        "machine_type",
        "cpu_model",
        "cpu_flags",
        "accel",
        "kernel",
        "initrd",
        "kernel_cmdline",
        "graphics_type",
        "graphics_listen",
        "graphics_port",
        "graphics_password",
        "graphics_password_set",
        "firmware",
        "secure_boot",
        "uefi_firmware",
        "disks",
        "console_socket",
        "nics",
        "netns",
        "department",
    )
)

MIGRATIONS: List[Tuple[int, List[str]]] = [
    (
        1,
        [
            """CREATE TABLE vms (
            uuid TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            host TEXT NOT NULL,
            status TEXT NOT NULL,
            version INTEGER NOT NULL DEFAULT 1,
            qemu_pid INTEGER,
            qmp_socket_path TEXT,
            serial_log_path TEXT,
            running_spec TEXT,
            launch_accel TEXT,
            launch_cpu TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
            # The VM's spec, plus columns for features planned then (migration 12 dropped those
            # nothing used). Columns later features fill start out NULL or at their defaults.
            """CREATE TABLE machine_configuration (
            vm_uuid TEXT PRIMARY KEY REFERENCES vms(uuid) ON DELETE CASCADE,
            vcpus INTEGER NOT NULL,
            memory_mb INTEGER NOT NULL,
            machine_type TEXT NOT NULL DEFAULT 'q35',
            cpu_model TEXT NOT NULL DEFAULT 'auto',
            cpu_flags TEXT NOT NULL DEFAULT '[]',
            accel TEXT NOT NULL DEFAULT 'auto',
            kernel TEXT,
            initrd TEXT,
            kernel_cmdline TEXT,
            tap_device_name TEXT,
            bridge TEXT,
            network_model TEXT NOT NULL DEFAULT 'virtio-net-pci',
            network_queues INTEGER NOT NULL DEFAULT 1,
            graphic_protocol TEXT,
            graphic_port INTEGER,
            graphic_password TEXT,
            graphic_host TEXT NOT NULL DEFAULT '127.0.0.1',
            disk_bus TEXT NOT NULL DEFAULT 'virtio',
            disk_cache_mode TEXT NOT NULL DEFAULT 'none',
            io_threads BOOLEAN NOT NULL DEFAULT FALSE,
            assigned_gpu_bus TEXT,
            gpu_rom_file TEXT,
            gpu_audio_bus TEXT,
            memory_balloon BOOLEAN NOT NULL DEFAULT FALSE,
            hugepages BOOLEAN NOT NULL DEFAULT FALSE,
            numa_config TEXT,
            cpu_pinning TEXT,
            uefi_firmware TEXT,
            secureboot BOOLEAN NOT NULL DEFAULT FALSE
        )""",
            # Host resources are journaled before they are created and dropped after they are
            # destroyed, so a crash at any point can be cleaned up later.
            """CREATE TABLE resources (
            vm_uuid TEXT NOT NULL,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (vm_uuid, kind, ref)
        )""",
        ],
    ),
    (
        2,
        [
            # Who holds a VM's lock (PostgreSQL advisory locks carry no such information), so
            # a waiter that times out can name the holder.
            """CREATE TABLE vm_locks (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            job_id TEXT,
            since TEXT NOT NULL
        )""",
        ],
    ),
    (
        3,
        [
            # Liveness reads the pidfile the VM was started with, even if run_dir changes later;
            # the display port QEMU picked (graphic_port is the one asked for, if any).
            "ALTER TABLE vms ADD COLUMN pidfile_path TEXT",
            "ALTER TABLE vms ADD COLUMN launch_graphic_port INTEGER",
            # Whether an (encrypted) display password exists: part of the spec, so a running VM
            # started without one reports that it needs a restart to ask for one.
            "ALTER TABLE machine_configuration ADD COLUMN graphic_password_set BOOLEAN NOT NULL DEFAULT FALSE",
        ],
    ),
    (
        4,
        [
            # The VM's disks, as a JSON list of DiskSpec dicts (see spec.py).
            "ALTER TABLE machine_configuration ADD COLUMN disks TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN console_socket BOOLEAN NOT NULL DEFAULT FALSE",
            # Volumes made by infinivirt_disk; an encrypted one keeps its LUKS key here, sealed.
            """CREATE TABLE volumes (
            path TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            format TEXT NOT NULL,
            encrypted BOOLEAN NOT NULL DEFAULT FALSE,
            luks_key TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        ],
    ),
    (
        5,
        [
            # bios or uefi; secureboot and uefi_firmware were there from the start.
            "ALTER TABLE machine_configuration ADD COLUMN firmware TEXT NOT NULL DEFAULT 'bios'",
        ],
    ),
    (
        6,
        [
            # External snapshots: each is an overlay file on top of a disk's image; the disk's
            # active image is its overlay with the highest seq (or the image itself).
            """CREATE TABLE disk_layers (
            vm_uuid TEXT NOT NULL,
            base_path TEXT NOT NULL,
            seq INTEGER NOT NULL,
            snapshot TEXT NOT NULL,
            overlay TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (vm_uuid, base_path, seq)
        )""",
        ],
    ),
    (
        7,
        [
            # Networks made by infinivirt_net. "managed": Infinivirt created the bridge (and may
            # remove it); an existing bridge is only used.
            """CREATE TABLE networks (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            mode TEXT NOT NULL,
            spec TEXT NOT NULL,
            managed BOOLEAN NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        ],
    ),
    (
        8,
        [
            # The VM's NICs (JSON list of NicSpec dicts, see nics.py), the network namespace its
            # QEMU and TAPs live in, and the firewall department it belongs to.
            "ALTER TABLE machine_configuration ADD COLUMN nics TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN netns TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN department TEXT",
        ],
    ),
    (
        9,
        [
            # infinivirt_firewall (see store/firewall.py): a rule set per scope (a department, or
            # a VM by UUID) with its default policies, its rules in order with the source of
            # each, and where a VM's rules are in the kernel.
            """CREATE TABLE firewall_rulesets (
            scope TEXT NOT NULL,
            owner TEXT NOT NULL,
            owner_name TEXT NOT NULL,
            policy_in TEXT NOT NULL,
            policy_out TEXT NOT NULL,
            anti_spoofing BOOLEAN NOT NULL DEFAULT FALSE,
            source_host TEXT,
            source_job_id TEXT,
            source_user TEXT,
            source_time TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (scope, owner)
        )""",
            """CREATE TABLE firewall_rules (
            scope TEXT NOT NULL,
            owner TEXT NOT NULL,
            position INTEGER NOT NULL,
            name TEXT,
            direction TEXT NOT NULL,
            protocol TEXT NOT NULL,
            ports TEXT NOT NULL DEFAULT '[]',
            cidr TEXT,
            action TEXT NOT NULL,
            comment TEXT,
            source_host TEXT,
            source_job_id TEXT,
            source_user TEXT,
            source_time TEXT NOT NULL,
            PRIMARY KEY (scope, owner, position)
        )""",
            """CREATE TABLE firewall_applied (
            vm_uuid TEXT NOT NULL,
            host TEXT NOT NULL,
            netns TEXT NOT NULL,
            department TEXT,
            PRIMARY KEY (vm_uuid, host, netns)
        )""",
        ],
    ),
    (
        10,
        [
            # Networks belong to a host: each hypervisor sharing one database has its own "default".
            """CREATE TABLE networks_by_host (
            name TEXT NOT NULL,
            host TEXT NOT NULL,
            mode TEXT NOT NULL,
            spec TEXT NOT NULL,
            managed BOOLEAN NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (host, name)
        )""",
            "INSERT INTO networks_by_host SELECT name, host, mode, spec, managed, created_at, updated_at FROM networks",
            "DROP TABLE networks",
            "ALTER TABLE networks_by_host RENAME TO networks",
        ],
    ),
    (
        11,
        [
            # One vocabulary: a column is named after its spec field, which is named after the
            # option (graphics.type -> graphics_type, secure_boot). RENAME COLUMN keeps the data
            # (SQLite 3.25+, PostgreSQL). Sealed display passwords keep their context (store.base).
            "ALTER TABLE machine_configuration RENAME COLUMN graphic_protocol TO graphics_type",
            "ALTER TABLE machine_configuration RENAME COLUMN graphic_host TO graphics_listen",
            "ALTER TABLE machine_configuration RENAME COLUMN graphic_port TO graphics_port",
            "ALTER TABLE machine_configuration RENAME COLUMN graphic_password TO graphics_password",
            "ALTER TABLE machine_configuration RENAME COLUMN graphic_password_set TO graphics_password_set",
            "ALTER TABLE machine_configuration RENAME COLUMN secureboot TO secure_boot",
            "ALTER TABLE vms RENAME COLUMN launch_graphic_port TO launch_graphics_port",
        ],
    ),
    (
        12,
        [
            # Drop the columns migration 1 made for features that do not exist (nothing read or
            # wrote them): tap_device_name, bridge, network_model, network_queues, disk_bus,
            # disk_cache_mode, io_threads, assigned_gpu_bus, gpu_rom_file, gpu_audio_bus,
            # memory_balloon, hugepages, numa_config, cpu_pinning. The table is rebuilt (SQLite
            # before 3.35 has no DROP COLUMN), copying every row's other columns.
            """CREATE TABLE machine_configuration_12 (
            vm_uuid TEXT PRIMARY KEY REFERENCES vms(uuid) ON DELETE CASCADE,
            vcpus INTEGER NOT NULL,
            memory_mb INTEGER NOT NULL,
            machine_type TEXT NOT NULL DEFAULT 'q35',
            cpu_model TEXT NOT NULL DEFAULT 'auto',
            cpu_flags TEXT NOT NULL DEFAULT '[]',
            accel TEXT NOT NULL DEFAULT 'auto',
            kernel TEXT,
            initrd TEXT,
            kernel_cmdline TEXT,
            graphics_type TEXT,
            graphics_listen TEXT NOT NULL DEFAULT '127.0.0.1',
            graphics_port INTEGER,
            graphics_password TEXT,
            graphics_password_set BOOLEAN NOT NULL DEFAULT FALSE,
            firmware TEXT NOT NULL DEFAULT 'bios',
            secure_boot BOOLEAN NOT NULL DEFAULT FALSE,
            uefi_firmware TEXT,
            disks TEXT NOT NULL DEFAULT '[]',
            console_socket BOOLEAN NOT NULL DEFAULT FALSE,
            nics TEXT NOT NULL DEFAULT '[]',
            netns TEXT,
            department TEXT
        )""",
            "INSERT INTO machine_configuration_12 (%s) SELECT %s FROM machine_configuration" % (_MC_12, _MC_12),
            "DROP TABLE machine_configuration",
            "ALTER TABLE machine_configuration_12 RENAME TO machine_configuration",
        ],
    ),
    (
        13,
        [
            # Host monitor: what to do on a crash or a guest power-off, and autostart.
            "ALTER TABLE machine_configuration ADD COLUMN on_crash TEXT NOT NULL DEFAULT 'destroy'",
            "ALTER TABLE machine_configuration ADD COLUMN on_poweroff TEXT NOT NULL DEFAULT 'stop'",
            "ALTER TABLE machine_configuration ADD COLUMN autostart BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE machine_configuration ADD COLUMN autostart_order INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE machine_configuration ADD COLUMN autostart_delay INTEGER NOT NULL DEFAULT 0",
            # The event log: what QEMU reported and what the monitor did; removed with the VM.
            """CREATE TABLE vm_events (
            id TEXT PRIMARY KEY,
            vm_uuid TEXT NOT NULL,
            vm_name TEXT NOT NULL,
            host TEXT NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
            "CREATE INDEX vm_events_by_vm ON vm_events (vm_uuid, at)",
        ],
    ),
    (
        14,
        [
            # USB passthrough: JSON list of devices; NULL means the VM has no USB controller.
            "ALTER TABLE machine_configuration ADD COLUMN usb TEXT",
            # Host PCI devices (infinivirt_gpu): one row per PCI function a VM holds on a host,
            # those QEMU gets (role 'device') and the other members of their IOMMU groups
            # (role 'group', held so no other VM takes them). The key makes a function one
            # VM's only. primary_address groups the rows of one assignment; its own row
            # carries the settings. original_driver: the host driver a managed rebind took
            # the function from, given back on release.
            """CREATE TABLE pci_assignments (
            host TEXT NOT NULL,
            address TEXT NOT NULL,
            vm_uuid TEXT NOT NULL,
            primary_address TEXT NOT NULL,
            role TEXT NOT NULL,
            managed BOOLEAN NOT NULL DEFAULT FALSE,
            original_driver TEXT,
            rom_file TEXT,
            rom_dir TEXT,
            x_vga BOOLEAN NOT NULL DEFAULT FALSE,
            sriov TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (host, address)
        )""",
            "CREATE INDEX pci_assignments_by_vm ON pci_assignments (vm_uuid)",
        ],
    ),
    (
        15,
        [
            # Memory and CPU tuning (issue 14): balloon, memory backing and hot-plug, CPU
            # topology and hot-plug, guest NUMA nodes, CPU pinning. JSON columns as text.
            "ALTER TABLE machine_configuration ADD COLUMN memory_balloon BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE machine_configuration ADD COLUMN memory_target_mb INTEGER",
            "ALTER TABLE machine_configuration ADD COLUMN hugepages TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN memory_shared BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE machine_configuration ADD COLUMN memory_max_mb INTEGER",
            "ALTER TABLE machine_configuration ADD COLUMN memory_slots INTEGER",
            "ALTER TABLE machine_configuration ADD COLUMN memory_hotplug TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN vcpus_max INTEGER",
            "ALTER TABLE machine_configuration ADD COLUMN cpu_topology TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE machine_configuration ADD COLUMN numa TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN cpu_pinning TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE machine_configuration ADD COLUMN emulator_cpus TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN iothread_cpus TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN cpu_pinning_exclusive BOOLEAN NOT NULL DEFAULT FALSE",
        ],
    ),
    (
        16,
        [
            # Issue 14 (I/O and presets): shared I/O threads, the preset's name, the VM-level
            # options it governs (effective values), and which options a task left unset.
            # Disk limits and NIC rate limits live in the disks/nics JSON.
            "ALTER TABLE machine_configuration ADD COLUMN iothreads TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN preset TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN video_model TEXT NOT NULL DEFAULT 'vga'",
            "ALTER TABLE machine_configuration ADD COLUMN rtc_base TEXT NOT NULL DEFAULT 'utc'",
            "ALTER TABLE machine_configuration ADD COLUMN hpet BOOLEAN NOT NULL DEFAULT TRUE",
            "ALTER TABLE machine_configuration ADD COLUMN hyperv BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE machine_configuration ADD COLUMN defaulted TEXT NOT NULL DEFAULT '[]'",
        ],
    ),
    (
        17,
        [
            # Host-scoped claims (issue 18): values of a kind (host CPUs pinned; vsock CIDs and
            # display ports later) held by an owner (a VM's UUID) on a host, shared or
            # exclusive, checked and taken in one serialized transaction (store/claims.py).
            # owner_name: the holder named in a refusal, also before its VM row is written.
            """CREATE TABLE host_claims (
            host TEXT NOT NULL,
            kind TEXT NOT NULL,
            value TEXT NOT NULL,
            owner TEXT NOT NULL,
            owner_name TEXT NOT NULL,
            exclusive BOOLEAN NOT NULL DEFAULT FALSE,
            created_at TEXT NOT NULL,
            PRIMARY KEY (host, kind, value, owner)
        )""",
            "CREATE INDEX host_claims_by_owner ON host_claims (owner, kind)",
        ],
    ),
    (
        18,
        [
            # Issue 20: the start time of qemu_pid (clock ticks since boot, /proc/PID/stat),
            # so a no-op task knows the recorded QEMU is alive without asking it over QMP.
            # BIGINT: ticks outgrow 32 bits after 248 days at 100 Hz.
            "ALTER TABLE vms ADD COLUMN qemu_started BIGINT",
        ],
    ),
    (
        19,
        [
            # Issue 21 (cloud-init): the seed's digest (a spec field) and the cloud_init
            # option itself, sealed (store.base.SECRET_COLUMNS).
            "ALTER TABLE machine_configuration ADD COLUMN cloud_init_digest TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN cloud_init TEXT",
        ],
    ),
    (
        20,
        [
            # Issue 21 item 3: the QEMU guest agent's channel (guest_agent: true).
            "ALTER TABLE machine_configuration ADD COLUMN guest_agent BOOLEAN NOT NULL DEFAULT FALSE",
        ],
    ),
    (
        21,
        [
            # Issue 21 (Windows unattend): the answer file ISO's keyed digest (a spec field)
            # and its files with the digest's salt, sealed (store.base.SECRET_COLUMNS).
            "ALTER TABLE machine_configuration ADD COLUMN unattend_digest TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN unattend TEXT",
        ],
    ),
    (
        22,
        [
            # Issue 22: the VM's tags (JSON list) and labels (JSON object), what the inventory
            # plugin groups VMs by; and the guest addresses last reported by a VM's agent, so
            # the inventory (on the controller, where no agent can be asked) knows them.
            "ALTER TABLE machine_configuration ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE machine_configuration ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'",
            """CREATE TABLE guest_addresses (
            vm_uuid TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            interfaces TEXT NOT NULL DEFAULT '[]',
            ips TEXT NOT NULL DEFAULT '[]',
            seen_at TEXT NOT NULL
        )""",
        ],
    ),
    (
        23,
        [
            # Issue 23 (migration): the versioned machine type QEMU resolved machine_type to at
            # the VM's first start (e.g. pc-q35-7.2); later starts and a migration target run
            # that one, so a QEMU upgrade on one host does not change the guest's hardware.
            "ALTER TABLE vms ADD COLUMN machine_resolved TEXT",
        ],
    ),
    (
        24,
        [
            # Issue 23: live migration requests, where the source task and the target host's
            # monitor meet (store/handovers.py; states in vm/model/migration.py).
            """CREATE TABLE vm_handovers (
            vm_uuid TEXT PRIMARY KEY,
            vm_name TEXT NOT NULL,
            source TEXT NOT NULL,
            target TEXT NOT NULL,
            state TEXT NOT NULL,
            options TEXT NOT NULL,
            uri TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
            "CREATE INDEX vm_handovers_by_target ON vm_handovers (target, state)",
        ],
    ),
    (
        25,
        [
            # Issue 25 part A: platform devices, each JSON in its normal form or NULL (off)
            # (vm/model/devices.py). A vsock CID a VM holds is a host claim (store/claims.py).
            "ALTER TABLE machine_configuration ADD COLUMN tpm TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN rng TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN watchdog TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN smbios TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN vsock TEXT",
        ],
    ),
    (
        26,
        [
            # Issue 25 part B: SPICE's TLS directory, the USB tablet (NULL: on with a display)
            # and the virtiofs shares (JSON list of {source, tag, readonly}).
            "ALTER TABLE machine_configuration ADD COLUMN graphics_tls_dir TEXT",
            "ALTER TABLE machine_configuration ADD COLUMN usb_tablet BOOLEAN",
            "ALTER TABLE machine_configuration ADD COLUMN shared_dirs TEXT NOT NULL DEFAULT '[]'",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]
