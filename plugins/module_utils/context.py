# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every service is built from: the store, this host's id, its paths and the secret key.

The Ansible binding makes one from the shared options; tests, benchmarks and the monitor make
one with ``HostContext.open``. The secret key is read (or made) only when a secret is used.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import check_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretBox, load_or_create_key
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store

DEFAULT_RUN_DIR = "/run/infinivirt"
DEFAULT_NVRAM_DIR = "/var/lib/infinivirt/nvram"
DEFAULT_STORAGE_ROOT = "/var/lib/infinivirt/images"


@dataclasses.dataclass
class HostContext:
    store: Any  # store.base.SqlStore
    host_id: str
    run_dir: str = DEFAULT_RUN_DIR
    lock_timeout: float = 60.0
    nvram_dir: str = DEFAULT_NVRAM_DIR
    # None: disk paths are not confined (library use); modules always pass a list.
    storage_roots: Optional[Sequence[str]] = None
    secret_key_file: Optional[str] = None  # None: secrets.box's default
    qemu_binary: Optional[str] = None
    # Where sysfs and devfs are (host/pci.py): "/" on a host, a fake tree in tests.
    sysfs_root: str = "/"
    _secret_box: Optional[SecretBox] = dataclasses.field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        db_url: str,
        run_dir: str = DEFAULT_RUN_DIR,
        host_id: Optional[str] = None,
        job_id: Optional[str] = None,
        **options: Any,
    ) -> "HostContext":
        """Open the store ``db_url`` names; ``host_id`` defaults to the host name. A run_dir
        other users could change is refused before anything is opened."""
        check_private_dir(run_dir, "run_dir")
        return cls(
            store=open_store(db_url, job_id=job_id), host_id=host_id or socket.gethostname(), run_dir=run_dir, **options
        )

    def secret_box(self) -> SecretBox:
        if self._secret_box is None:
            self._secret_box = SecretBox(load_or_create_key(self.secret_key_file))
        return self._secret_box

    def close(self) -> None:
        self.store.close()
