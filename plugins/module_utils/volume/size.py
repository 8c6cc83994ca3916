# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Volume options as pure values: formats, preallocation modes and sizes.

``parse_size``: ``"10G"``, ``"1.5GiB"``, ``4096`` -> bytes (binary units, exact multiples of 512 only;
qemu-img would round up silently and break idempotence).
"""

from __future__ import annotations

import decimal
import re
from typing import Any, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import (  # noqa: F401  # pylint: disable=unused-import
    FORMATS,
    PREALLOCATIONS,
)

SECTOR = 512
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|(b))?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any, field: str = "size") -> int:
    """Bytes from an int or a string such as ``"10G"``, ``"512M"``, ``"1.5GiB"``, ``"4096"``.

    Units K, M, G, T are binary (1024-based), case-insensitive, optionally followed by
    ``B`` or ``iB``; no unit (or a bare ``B``) means bytes. The result must be positive and
    a multiple of 512: other values are refused rather than rounded, because qemu-img rounds
    them up and the volume would then never match what the task asks for.
    """
    if isinstance(value, bool) or value is None:
        raise SpecError(field, "must be a size such as 10G, 512M or a number of bytes, got %r" % (value,))
    if isinstance(value, int):
        amount = decimal.Decimal(value)
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise SpecError(
                field,
                "must be a size such as 10G, 512M, 1.5G or a number of bytes "
                "(units K, M, G, T, binary), got %r" % value,
            )
        number, unit = match.group(1), (match.group(2) or "").lower()
        amount = decimal.Decimal(number) * _UNITS[unit]
    else:
        raise SpecError(field, "must be a size such as 10G or a number of bytes, got %s" % type(value).__name__)
    if amount <= 0:
        raise SpecError(field, "must be greater than zero, got %r" % (value,))
    if amount != amount.to_integral_value():
        raise SpecError(field, "%r is not a whole number of bytes" % (value,))
    size = int(amount)
    if size % SECTOR:
        low = size - size % SECTOR
        raise SpecError(
            field,
            "%r is %d bytes, not a multiple of %d; use %s%d"
            % (value, size, SECTOR, "%d or " % low if low else "", low + SECTOR),
        )
    return size


def format_size(size: Optional[int]) -> Optional[str]:
    """``10737418240`` -> ``"10G"`` (exact binary units only), for messages."""
    if size is None:
        return None
    for unit in ("T", "G", "M", "K"):
        factor = _UNITS[unit.lower()]
        if size >= factor and size % factor == 0:
            return "%d%s" % (size // factor, unit)
    return "%d bytes" % size
