# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The remote display beyond VNC (issue 25, pure): SPICE's option string, the checks of
``video_model``, ``graphics.tls`` and ``usb_tablet``, and the USB tablet's devices.

The SPICE password, like VNC's, never reaches argv: ``disable-ticketing=off`` makes SPICE
refuse every client until QMP ``set_password`` (protocol spice) gives it one.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Dict, List

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_abs_path
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import XHCI_BUS
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.usb import controller as usb_controller

SPICE = "spice"
# SPICE has no "first free port" of its own: the start takes one from this range, which VNC's
# to=99 uses too, claimed per host (vm/engine/display_port.py), so two VMs never share one.
DISPLAY_PORTS = range(5900, 6000)
TABLET_ID = "tablet0"
# Directories QEMU must never read keys from (a cert_dir there is a mistake, not a choice).
_SYSTEM_TREES = ("/proc", "/sys", "/dev")


def validate_display(spec) -> None:
    """``video_model``, ``graphics.tls`` and ``usb_tablet`` against the display they serve."""
    if spec.graphics_type != "none" and spec.video_model == "none":
        raise SpecError(
            "video_model",
            "none gives the %s display no screen to show; pick a video card or set graphics.type none"
            % spec.graphics_type,
        )
    if spec.graphics_tls_dir is not None:
        if spec.graphics_type != SPICE:
            raise SpecError("graphics.tls", "needs graphics.type spice (VNC here has no TLS)")
        validate_abs_path("graphics.tls.cert_dir", spec.graphics_tls_dir)
        if any(spec.graphics_tls_dir == t or spec.graphics_tls_dir.startswith(t + "/") for t in _SYSTEM_TREES):
            raise SpecError("graphics.tls.cert_dir", "must not be under /proc, /sys or /dev")
    if spec.usb_tablet is not None and not isinstance(spec.usb_tablet, bool):
        raise SpecError("usb_tablet", "must be true or false")


def tablet_on(spec) -> bool:
    """``usb_tablet`` unset: a tablet whenever a display is on (an absolute pointer, so the
    guest's cursor follows the client's)."""
    return spec.graphics_type != "none" if spec.usb_tablet is None else spec.usb_tablet


def tablet_devices(spec) -> List[Dict[str, Any]]:
    """The tablet on the VM's xHCI controller; the controller too when ``usb`` gives none."""
    if not tablet_on(spec):
        return []
    devices = [] if spec.usb is not None else [usb_controller()]
    return devices + [{"driver": "usb-tablet", "id": TABLET_ID, "bus": XHCI_BUS}]


def spice_option(spec, port: int, escape: Callable[[str, str], str]) -> str:
    """-spice's value for ``port`` (the TLS port when graphics.tls is set: no plain one then).
    ``escape`` is argv.opt_value. No password in it: ticketing is on when one is stored."""
    parts = ["addr=%s" % spec.graphics_listen]
    if ipaddress.ip_address(spec.graphics_listen).version == 6:
        parts.append("ipv6=on")
    if spec.graphics_tls_dir:
        parts += ["tls-port=%d" % port, "x509-dir=%s" % escape("graphics.tls.cert_dir", spec.graphics_tls_dir)]
    else:
        parts.append("port=%d" % port)
    parts.append("disable-ticketing=%s" % ("off" if spec.graphics_password_set else "on"))
    return ",".join(parts)
