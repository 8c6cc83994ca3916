# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks shared by every spec: each raises SpecError naming the option."""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError


def check_int(field: str, value: Any, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, "must be an integer, got %r" % (value,))
    if value < low:
        raise SpecError(field, "must be at least %d, got %d" % (low, value))
    if high is not None and value > high:
        raise SpecError(field, "must be at most %d, got %d" % (high, value))
    return value


def check_choice(field: str, value: Any, choices: Tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(field, "must be one of %s, got %r" % (", ".join(choices), value))
    return value


_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def validate_label(field: str, value: Any) -> str:
    """A department or rule name: 1 to 32 letters, digits, '.', '_' or '-'."""
    if not isinstance(value, str) or not _LABEL_RE.match(value):
        raise SpecError(field, "%r must be 1 to 32 letters, digits, '.', '_' or '-', starting "
                        "with a letter or digit" % (value,))
    return value
