# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Options every infinivirt module shares (see COMMON_ARGUMENT_SPEC in
    # plugins/module_utils/ansible_binding.py).
    DOCUMENTATION = r"""
options:
  db_url:
    description:
      - Where Infinivirt keeps VM state.
      - V(sqlite:////absolute/path.db) selects the embedded SQLite store, the default.
      - If not set, the environment variable E(INFINIVIRT_DB_URL) is used.
      - A password in the URL is kept out of task output.
    type: str
    default: sqlite:////var/lib/infinivirt/infinivirt.db
  run_dir:
    description:
      - Directory for each VM's pidfile, QMP socket and serial console log.
      - If not set, the environment variable E(INFINIVIRT_RUN_DIR) is used.
      - The QMP socket path (this directory plus 40 characters) must fit in 107 bytes.
    type: path
    default: /run/infinivirt
  lock_timeout:
    description:
      - Seconds to wait for another operation on the same VM to finish before failing.
      - The error names the process that holds the lock.
    type: float
    default: 60.0
  qemu_binary:
    description:
      - Path of the QEMU system emulator.
      - By default C(qemu-system-x86_64) is looked up on E(PATH).
    type: path
requirements:
  - python >= 3.9
  - qemu.qmp >= 0.0.3 (on the managed host)
  - QEMU (qemu-system-x86_64) on the managed host
"""
