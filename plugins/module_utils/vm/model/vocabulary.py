# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The words of a result (docs/architecture.md, "Result vocabulary"): what echoes the request
speaks the options' names (the diff, ``plan.changes``, ``pending_restart``); what is observed
has one name per fact. The spec's flat ``graphics_<x>`` fields are store columns, not words
a result uses: results say ``graphics.<x>``.

Pure: the VM entry, the diff and the planner all take their names from here.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import GRAPHICS_FIELDS, VmSpec

GRAPHICS = "graphics"
_GRAPHICS_PREFIX = GRAPHICS + "_"
CLOUD_INIT = "cloud_init"  # the spec keeps only cloud_init_digest of it
UNATTEND = "unattend"  # likewise unattend_digest


def option_name(field: str) -> str:
    """The option a user writes for a spec field: graphics_<x> (and the stored password's
    flag) belong to ``graphics``; every other field is its option's own name."""
    if field.startswith(CLOUD_INIT + "_"):
        return CLOUD_INIT
    if field.startswith(UNATTEND + "_"):
        return UNATTEND
    return GRAPHICS if field.startswith(_GRAPHICS_PREFIX) else field


def option_names(fields: Iterable[str]) -> List[str]:
    """Spec fields as the options they belong to, in order, each once."""
    names: List[str] = []
    for field in fields:
        name = option_name(field)
        if name not in names:
            names.append(name)
    return names


def spec_entry(spec: VmSpec) -> Dict[str, Any]:
    """The options a VM entry echoes (their stored values): the spec without its bookkeeping
    and without the flat graphics fields (the entry's ``graphics`` says them once)."""
    data = spec.to_dict()
    del data["defaulted"]  # bookkeeping (the diff shows what a preset filled in)
    return {k: v for k, v in data.items() if not k.startswith(_GRAPHICS_PREFIX)}


def graphics_entry(spec: VmSpec, port_in_use: Optional[int]) -> Dict[str, Any]:
    """The entry's display: ``port`` is the port QEMU listens on while it runs (else the one
    asked for), ``port_requested`` the option's value (None: the first free port from 5900)."""
    return {
        "type": spec.graphics_type,
        "listen": spec.graphics_listen,
        "port": port_in_use or spec.graphics_port,
        "port_requested": spec.graphics_port,
        "password_set": spec.graphics_password_set,
        "tls": {"cert_dir": spec.graphics_tls_dir} if spec.graphics_tls_dir else None,  # SPICE only
    }


def option_view(view: Mapping[str, Any], password: Optional[str] = None) -> Dict[str, Any]:
    """A diff view (spec.diff_view) in the options' shape: the graphics fields as the
    ``graphics`` option's suboptions, with ``password`` (a mask, never the secret) when given."""
    out = {k: v for k, v in view.items() if not k.startswith(_GRAPHICS_PREFIX)}
    graphics = {sub: view[field] for sub, field in GRAPHICS_FIELDS.items() if field in view}
    if view.get("graphics_tls_dir"):  # SPICE with TLS only: other displays' diffs keep their shape
        graphics["tls"] = {"cert_dir": view["graphics_tls_dir"]}
    if password is not None:
        graphics["password"] = password
    if graphics:
        out[GRAPHICS] = graphics
    return out
