# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_disk shows of an image: never a secret."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import public_info


def test_public_info_drops_secrets():
    info = {
        "filename": 'json:{"key-secret": "s"}',
        "format": "qcow2",
        "format-specific": {"data": {"encrypt": {"key-secret": "s", "format": "luks"}}},
    }
    assert public_info(info) == {"format": "qcow2", "format-specific": {"data": {"encrypt": {"format": "luks"}}}}
