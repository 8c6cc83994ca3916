# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Options every infinivirt module shares (see COMMON_ARGUMENT_SPEC in
    # plugins/module_utils/ansible_binding.py).
    DOCUMENTATION = r"""
options:
  host_config:
    description:
      - The host configuration file, a JSON object the C(infinivirt.core.host) role writes
        (key by key optional) with the host's O(db_url), O(run_dir), O(storage_roots),
        O(secret_key_file), O(nvram_dir) and O(host_id), which the modules and the monitor read.
      - Each of those options that is not set in the task (nor by its environment variable) is
        taken from this file, and else has the built-in default its description names.
      - A missing file is fine (the built-in defaults); one that cannot be read, is not JSON,
        has a value of the wrong type or a key not listed above is an error naming the file
        and the key.
      - If not set, the environment variable E(INFINIVIRT_HOST_CONFIG) is used.
    type: path
    default: /etc/infinivirt/host.json
  db_url:
    description:
      - Where Infinivirt keeps VM state.
      - V(sqlite:////absolute/path.db) selects the embedded SQLite store, the default.
      - V(postgresql://user:password@host:port/database) selects a PostgreSQL store that
        several hypervisors share; it needs C(psycopg2) on the managed host. The schema is
        created and migrated on first use.
      - If not set, the environment variable E(INFINIVIRT_DB_URL) is used.
      - A password in the URL is kept out of task output.
      - If not set, the host configuration file's (O(host_config)), else
        V(sqlite:////var/lib/infinivirt/infinivirt.db).
    type: str
  run_dir:
    description:
      - Directory for each VM's pidfile, QMP socket and serial console log.
      - If not set, the environment variable E(INFINIVIRT_RUN_DIR) is used.
      - The QMP socket path (this directory plus 40 characters) must fit in 107 bytes.
      - If not set, the host configuration file's (O(host_config)), else V(/run/infinivirt).
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another operation on the same VM to finish before failing.
      - The error names the process that holds the lock.
    type: float
    default: 60.0
  secret_key_file:
    description:
      - File holding the key (32 random bytes, base64) that encrypts secrets such as display
        passwords in the database, with AES-256-GCM. Created with mode 0600 on first use; an
        existing file must be owned by the user running the module and not readable by others.
      - The environment variable E(INFINIVIRT_SECRET_KEY) (the key in base64), when set,
        is used instead of the file.
      - Every host sharing a database needs the same key.
      - If not set, the host configuration file's (O(host_config)), else
        V(/var/lib/infinivirt/secret.key).
    type: path
  storage_roots:
    description:
      - Directories that disk images must live in. A path outside them, also through a
        symlink or C(..), is refused.
      - If not set, the host configuration file's (O(host_config)), else
        V([/var/lib/infinivirt/images]).
    type: list
    elements: path
  nvram_dir:
    description:
      - Directory of the NVRAM files of UEFI VMs (one per VM, mode 0600, kept across stops).
      - If not set, the host configuration file's (O(host_config)), else
        V(/var/lib/infinivirt/nvram).
    type: path
  host_id:
    description:
      - Name of this hypervisor in the database. VMs record the host that runs them; a VM
        running on another host cannot be changed from this one.
      - If not set, the environment variable E(INFINIVIRT_HOST_ID) is used, then the host
        configuration file's (O(host_config)), and then the host name.
    type: str
  job_id:
    description:
      - An identifier of the job running this task, for example the AWX/Tower job id
        (C({{ awx_job_id }})). It is recorded with the VM lock, so whoever waits for the lock in
        vain is told which job holds it.
      - If not set, it is taken on the controller from the variables C(awx_job_id) or
        C(tower_job_id) (AWX and Automation Controller set them for every job), or else from the
        controller's environment variables E(INFINIVIRT_JOB_ID), E(AWX_JOB_ID), E(TOWER_JOB_ID) or
        E(JOB_ID) (the job's execution environment has E(JOB_ID)); a module run without the
        collection's action plugins reads the same variables on the managed host.
    type: str
  qemu_binary:
    description:
      - Path of the QEMU system emulator.
      - By default C(qemu-system-x86_64) is looked up on E(PATH).
    type: path
  sysfs_root:
    description:
      - The directory under which C(sys/) and C(dev/) are read and written for host devices
        (M(infinivirt.core.infinivirt_gpu), a VM start with assigned PCI devices, the device
        list of M(infinivirt.core.infinivirt_vm_info)).
      - V(/) on a host; tests point it at a fake sysfs tree.
      - If not set, the environment variable E(INFINIVIRT_SYSFS_ROOT) is used.
    type: path
    default: /
requirements:
  - python >= 3.9
  - qemu.qmp >= 0.0.3 (on the managed host)
  - psycopg2 >= 2.8 (on the managed host, for a PostgreSQL O(db_url))
  - cryptography >= 36.0 (on the managed host, to store secrets)
  - QEMU (qemu-system-x86_64) on the managed host
"""
