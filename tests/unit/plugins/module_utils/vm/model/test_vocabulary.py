# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The result vocabulary (docs/architecture.md, "Result vocabulary"): one name per fact in
the VM entry, the options' names in the diff and in pending_restart."""

from __future__ import annotations

import dataclasses

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, diff_view
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import (
    graphics_entry,
    option_names,
    option_view,
    spec_entry,
)

VNC = VmSpec(name="vm", graphics_type="vnc", graphics_listen="::1", graphics_port=5907, graphics_password_set=True)


def test_the_entry_has_no_flat_graphics_keys():
    entry = spec_entry(VNC)
    assert [k for k in entry if k.startswith("graphics")] == []
    assert "defaulted" not in entry
    assert entry["name"] == "vm" and entry["memory_mb"] == VNC.memory_mb


def test_graphics_port_is_the_port_in_use_and_port_requested_the_option():
    fixed = graphics_entry(VNC, 5907)
    assert fixed == {
        "type": "vnc",
        "listen": "::1",
        "port": 5907,
        "port_requested": 5907,
        "password_set": True,
        "tls": None,
    }
    # asked for 5907, still running on the automatic port it was started with
    assert graphics_entry(VNC, 5901)["port"] == 5901 and graphics_entry(VNC, 5901)["port_requested"] == 5907
    automatic = dataclasses.replace(VNC, graphics_port=None)
    assert graphics_entry(automatic, 5903)["port"] == 5903 and graphics_entry(automatic, 5903)["port_requested"] is None
    # not running: the port asked for, or null for automatic
    assert graphics_entry(VNC, None)["port"] == 5907
    assert graphics_entry(automatic, None)["port"] is None


def test_the_diff_has_the_graphics_options_shape():
    view = option_view(diff_view(VNC), "********")
    assert [k for k in view if k.startswith("graphics_")] == []
    assert view["graphics"] == {"type": "vnc", "listen": "::1", "port": 5907, "password": "********"}
    assert "password" not in option_view(diff_view(VNC))["graphics"]


def test_option_names_of_spec_fields():
    fields = ["memory_mb", "graphics_port", "graphics_password_set", "disks", "graphics_type"]
    assert option_names(fields) == ["memory_mb", "graphics", "disks"]
