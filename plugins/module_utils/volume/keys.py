# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""LUKS passphrases of managed volumes: made here, sealed in the store, read back for QEMU."""

from __future__ import annotations

import base64
import os
from typing import Any, Callable, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretBox, SecretError
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context

LUKS_KEY = "luks_key"  # the secret column of the volumes table
LUKS_KEY_BYTES = 32


def new_luks_key() -> str:
    """A fresh LUKS passphrase: 32 random bytes in base64."""
    return base64.b64encode(os.urandom(LUKS_KEY_BYTES)).decode("ascii")


def read_luks_key(store: Any, secret_box: Callable[[], SecretBox], path: str) -> Optional[str]:
    """The LUKS passphrase of the managed volume at ``path`` (tried as given, then resolved),
    or None if no key is stored. For whoever hands the volume to QEMU (as a secret object)."""
    for candidate in dict.fromkeys((path, os.path.realpath(path))):
        token = store.get_secret(candidate, LUKS_KEY)
        if token:
            try:
                return secret_box().decrypt(token, secret_context(candidate, LUKS_KEY))
            except SecretError as exc:
                raise SecretError("cannot read the LUKS key of volume %s: %s" % (candidate, exc)) from None
    return None
