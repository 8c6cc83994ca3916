# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sizes as users write them, and as they are shown."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import format_size, parse_size

G = 1 << 30
M = 1 << 20


# -- parse_size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10G", 10 * G),
        ("10g", 10 * G),
        ("10GiB", 10 * G),
        ("10gib", 10 * G),
        ("10GB", 10 * G),
        ("512M", 512 * M),
        ("1.5G", 3 * G // 2),
        (" 2 T ", 2 << 40),
        ("4096", 4096),
        ("4096B", 4096),
        ("1K", 1024),
        ("0.5K", 512),
        (".5M", M // 2),
        (512, 512),
        (10 * G, 10 * G),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "value,phrase",
    [
        ("0", "greater than zero"),
        (0, "greater than zero"),
        (-512, "greater than zero"),
        ("1000", "not a multiple of 512; use 512 or 1024"),
        ("100", "use 512"),
        ("1.3K", "not a whole number"),
        ("0.1G", "not a whole number"),
        ("10X", "must be a size"),
        ("G", "must be a size"),
        ("", "must be a size"),
        ("1e9", "must be a size"),
        ("-1G", "must be a size"),
        ("10 G B", "must be a size"),
        ("10iB", "must be a size"),
        ("1,5G", "must be a size"),
        (True, "must be a size"),
        (None, "must be a size"),
        (1.5, "got float"),
    ],
)
def test_bad_sizes_name_the_option(value, phrase):
    with pytest.raises(SpecError) as err:
        parse_size(value)
    assert err.value.field == "size"
    assert phrase in str(err.value)


def test_format_size():
    assert format_size(10 * G) == "10G"
    assert format_size(512 * M) == "512M"
    assert format_size(2048) == "2K"
    assert format_size(3 * 512) == "1536 bytes"
    assert format_size(None) is None


# -- resolve_in_roots ---------------------------------------------------------------------
