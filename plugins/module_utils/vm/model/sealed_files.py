# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The digest a spec keeps of files it seals in the store (a cloud-init seed, an unattend
answer file): HMAC-SHA256 under a random salt sealed with the files. Unkeyed, the digest in
the database and in every task result would let anyone test a guessed password against it."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Mapping, Optional

SALT_BYTES = 32
_DIGEST_RE = re.compile(r"hmac-sha256:[0-9a-f]{64}")


def files_digest(salt: bytes, files: Mapping[str, bytes]) -> str:
    """HMAC-SHA256 under ``salt`` of the files' names and contents, each length-framed."""
    mac = hmac.new(salt, digestmod=hashlib.sha256)
    for name in sorted(files):
        for part in (name.encode("utf-8"), files[name]):
            mac.update(b"%d:" % len(part) + part)
    return "hmac-sha256:" + mac.hexdigest()


def is_digest(value: Optional[str]) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None
