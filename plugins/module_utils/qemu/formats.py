# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The image formats and preallocation modes Infinivirt lets qemu-img use: pure values, so
the volume and VM models can offer them as choices without loading the qemu-img adapter."""

from __future__ import annotations

FORMATS = ("qcow2", "raw")
PREALLOCATIONS = ("off", "metadata", "falloc", "full")
