# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The versioned machine type (pure). ``machine_type: q35`` is an alias QEMU resolves to its
newest version (``pc-q35-7.2`` on QEMU 7.2); a guest's hardware (ACPI tables, device defaults)
follows the version. The first start records what the alias meant (VmRecord.machine_resolved),
and every later start, on this host or a migration target, asks for that version: a QEMU
upgrade on one host changes no guest, and a migration stream fits its target."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

# The versioned names each machine_type alias resolves to (QEMU's machine families).
FAMILIES = {"q35": "pc-q35-", "pc": "pc-i440fx-"}


def belongs(machine_type: str, resolved: Optional[str]) -> bool:
    """Whether ``resolved`` is a version of ``machine_type`` (a VM whose machine_type was
    changed since its recorded start is resolved again)."""
    prefix = FAMILIES.get(machine_type)
    return bool(resolved) and prefix is not None and resolved.startswith(prefix) and len(resolved) > len(prefix)


def machine_to_run(machine_type: str, recorded: Optional[str]) -> str:
    """What ``-machine type=`` asks for: the recorded version, or the alias at a first start."""
    return recorded if recorded and belongs(machine_type, recorded) else machine_type


def resolve_alias(machine_type: str, machines: Sequence[Dict[str, Any]]) -> Optional[str]:
    """The versioned name of ``machine_type`` in QMP ``query-machines``'s reply (the entry whose
    ``alias`` it is); None when QEMU names none of this family."""
    for machine in machines:
        name = machine.get("name")
        if machine.get("alias") == machine_type and isinstance(name, str) and belongs(machine_type, name):
            return name
    return None
