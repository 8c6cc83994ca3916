# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Volume rows (infinivirt_disk): to be filled in; mixed into every store."""

from __future__ import annotations


class VolumeStore:
    """Store methods for the ``volumes`` table (migration 4)."""
