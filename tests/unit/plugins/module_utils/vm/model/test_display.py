# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SPICE's option string, the display checks (video_model, graphics.tls, usb_tablet), the USB
tablet's devices, and how the planner applies the new display options (pure, no QEMU)."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import opt_value
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.display import (
    spice_option,
    tablet_devices,
    tablet_on,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_summary, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    VmSpec,
    merge_params,
    validate,
    validate_graphics_password,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import graphics_entry, option_view

SPICE = VmSpec(name="vm", graphics_type="spice")


def test_spice_option_never_holds_a_password_and_turns_ticketing_on_with_one():
    assert spice_option(SPICE, 5901, opt_value) == "addr=127.0.0.1,port=5901,disable-ticketing=on"
    locked = dataclasses.replace(SPICE, graphics_password_set=True)
    assert spice_option(locked, 5901, opt_value) == "addr=127.0.0.1,port=5901,disable-ticketing=off"
    tls = dataclasses.replace(locked, graphics_tls_dir="/etc/pki/a,b", graphics_listen="::1")
    # TLS: the claimed port is the TLS port, no plain one; commas in the directory doubled.
    assert spice_option(tls, 5902, opt_value) == (
        "addr=::1,ipv6=on,tls-port=5902,x509-dir=/etc/pki/a,,b,disable-ticketing=off"
    )


def test_the_tablet_follows_the_display_unless_set():
    assert tablet_on(SPICE) and not tablet_on(VmSpec(name="vm"))
    assert not tablet_on(dataclasses.replace(SPICE, usb_tablet=False))
    assert tablet_on(VmSpec(name="vm", usb_tablet=True))
    # Its own controller only when the usb option gives none.
    assert [d["driver"] for d in tablet_devices(SPICE)] == ["qemu-xhci", "usb-tablet"]
    assert [d["driver"] for d in tablet_devices(dataclasses.replace(SPICE, usb=()))] == ["usb-tablet"]
    assert tablet_devices(VmSpec(name="vm")) == []


@pytest.mark.parametrize(
    "changes,field,phrase",
    [
        ({"video_model": "none"}, "video_model", "no screen"),
        ({"video_model": "matrox"}, "video_model", "must be one of"),
        ({"graphics_type": "rdp"}, "graphics.type", "must be one of"),
        ({"graphics_type": "vnc", "graphics_tls_dir": "/etc/pki"}, "graphics.tls", "needs graphics.type spice"),
        ({"graphics_tls_dir": "pki"}, "graphics.tls.cert_dir", "absolute"),
        ({"graphics_tls_dir": "/proc/self"}, "graphics.tls.cert_dir", "/proc"),
        ({"usb_tablet": "yes"}, "usb_tablet", "true or false"),
    ],
)
def test_bad_display_values_name_the_option(changes, field, phrase):
    with pytest.raises(SpecError) as err:
        validate(dataclasses.replace(SPICE, **changes))
    assert err.value.field == field and phrase in str(err.value)


def test_video_model_none_is_fine_without_a_display_and_spice_passwords_have_no_vnc_limit():
    validate(VmSpec(name="vm", video_model="none"))
    validate_graphics_password(SPICE, "a much longer password than eight bytes", stored=False)
    with pytest.raises(SpecError, match="at most 8"):
        validate_graphics_password(dataclasses.replace(SPICE, graphics_type="vnc"), "123456789", stored=False)
    with pytest.raises(SpecError, match="is required"):
        validate_graphics_password(dataclasses.replace(SPICE, graphics_listen="0.0.0.0"), None, stored=False)


def test_graphics_tls_merges_and_is_shown_in_the_options_shape():
    spec = merge_params({"name": "vm", "graphics": {"type": "spice", "tls": {"cert_dir": "/etc/pki/spice"}}}, None)
    assert spec.graphics_tls_dir == "/etc/pki/spice"
    assert graphics_entry(spec, 5903)["tls"] == {"cert_dir": "/etc/pki/spice"}
    assert option_view({"graphics_type": "spice", "graphics_tls_dir": "/etc/pki/spice"})["graphics"] == {
        "type": "spice",
        "tls": {"cert_dir": "/etc/pki/spice"},
    }
    off = merge_params({"name": "vm", "graphics": {"tls": {}}}, spec)
    assert off.graphics_tls_dir is None and off.graphics_type == "spice"
    kept = merge_params({"name": "vm"}, spec)
    assert kept.graphics_tls_dir == "/etc/pki/spice" and kept.usb_tablet is None


@pytest.mark.parametrize(
    "changes,option",
    [
        ({"video_model": "qxl"}, "video_model"),
        ({"usb_tablet": False}, "usb_tablet"),
        ({"graphics_listen": "::1"}, "graphics"),
        ({"graphics_tls_dir": "/etc/pki"}, "graphics"),
        ({"memory_shared": True, "shared_dirs": ({"source": "/srv/a", "tag": "a", "readonly": False},)}, "shared_dirs"),
    ],
)
def test_the_new_options_wait_for_a_restart_on_a_running_vm(changes, option):
    running = VmSpec(name="vm", graphics_type="spice")
    wanted = dataclasses.replace(running, **changes)
    rec = VmRecord(uuid="u", name="vm", host="h", status="running", spec=running, running_spec=running, qemu_pid=1)
    plan = plan_vm(rec, Live("running"), Desired("running", wanted), "h")
    summary = plan_summary(plan)
    assert plan.actions == ["update"] and summary["changes"][option] == "restart", summary
    assert summary["restart_needed"] is True
