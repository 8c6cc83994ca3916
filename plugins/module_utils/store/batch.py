# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reads of many VMs at once (issue 20): one query per table for a whole listing, not one
per VM, so its cost grows with the rows and not with round trips."""

from __future__ import annotations

from typing import Iterator, Sequence, Tuple

# Values bound in one IN (...): far below SQLite's oldest limit of 999 variables.
IN_BATCH = 500


def in_chunks(values: Sequence[str]) -> Iterator[Tuple[Tuple[str, ...], str]]:
    """(values, "?, ?, ...") for each query of an IN list: one for up to IN_BATCH values."""
    values = list(dict.fromkeys(values))  # each once, in order
    for start in range(0, len(values), IN_BATCH):
        chunk = tuple(values[start : start + IN_BATCH])
        yield chunk, ", ".join("?" * len(chunk))
