# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""qemu-img argument forms: user paths inside json: names, secrets by file."""

from __future__ import annotations

import json

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import (
    _json_filename,
    _secret_object,
)


def test_user_paths_are_json_strings():
    path = "/img/a,b'c\"d=e,driver=raw.qcow2"
    name = _json_filename("qcow2", path)
    assert name.startswith("json:")
    assert json.loads(name[5:]) == {
        "driver": "qcow2",
        "file": {"driver": "file", "filename": path},
        "encrypt": {"key-secret": "infinivirt-sec0"},
    }
    assert json.loads(_json_filename("luks", path)[5:])["key-secret"] == "infinivirt-sec0"
    assert json.loads(_secret_object("/dev/shm/k,x/key"))["file"] == "/dev/shm/k,x/key"
