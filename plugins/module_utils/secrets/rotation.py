# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Re-encrypt every stored secret under a new key, in one transaction."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import (
    KEY_ENV,
    SecretBox,
    load_or_create_key,
    rotate,
    token_key_id,
)
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context


def rotate_key(store, key_file: Optional[str], new_key_file: str, check_mode: bool) -> Dict[str, Any]:
    """Seal every secret with the key in ``new_key_file`` (created if missing).

    The current key comes from ``INFINIVIRT_SECRET_KEY`` or ``key_file`` and must exist: a
    key made up now could not open anything. Idempotent: secrets already under the new key
    are left alone, so a rotation cut short is finished by running it again.
    """
    if not os.path.isabs(new_key_file):
        raise SpecError("new_key_file", "must be an absolute path, got %r" % new_key_file)
    secrets = store.all_secrets()
    if not os.path.exists(new_key_file):
        if check_mode:  # the key would be created: every secret would move to it
            return {"changed": True, "rotated": len(secrets), "secrets": len(secrets), "key_id": None}
    new_box = SecretBox(load_or_create_key(new_key_file, env={}))
    stale = [s for s in secrets if token_key_id(s[2]) != new_box.key_id]
    result = {"changed": bool(stale), "rotated": len(stale), "secrets": len(secrets), "key_id": new_box.key_id}
    if not stale or check_mode:
        return result
    if KEY_ENV not in os.environ and not (key_file and os.path.exists(key_file)):
        raise SpecError(
            "secret_key_file", "the current key file %s does not exist, so the stored secrets cannot be read" % key_file
        )
    old_box = SecretBox(load_or_create_key(key_file))
    pairs = [(token, secret_context(owner, column)) for owner, column, token in stale]
    new_tokens = rotate(pairs, old_box, new_box)
    store.replace_secrets([(owner, column, token, new) for (owner, column, token), new in zip(stale, new_tokens)])
    return result
