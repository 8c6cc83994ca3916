# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guest addresses last reported by a VM's QEMU guest agent, mixed into every store.

An agent can be asked only on the hypervisor that runs the VM; the inventory plugin runs on
the controller. So infinivirt_vm and infinivirt_vm_info write down what the agent said
whenever they ask it, and the inventory reads that (with the time it was seen)."""

from __future__ import annotations

import json
from typing import Any, Dict, List

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now


class GuestAddressStore:
    """Needs the host store's ``transaction`` and ``_read``."""

    def record_guest_addresses(self, vm_uuid: str, host: str, interfaces: List[Dict[str, Any]], ips: List[str]) -> None:
        """Replace the VM's recorded addresses (interfaces: name, mac, ips, as vm/guest.py lists them)."""
        with self.transaction("recording guest addresses") as cur:
            cur.execute("DELETE FROM guest_addresses WHERE vm_uuid = ?", (vm_uuid,))
            cur.execute(
                "INSERT INTO guest_addresses (vm_uuid, host, interfaces, ips, seen_at) VALUES (?, ?, ?, ?, ?)",
                (vm_uuid, host, json.dumps(interfaces, sort_keys=True), json.dumps(ips), utc_now()),
            )

    def guest_addresses(self) -> Dict[str, Dict[str, Any]]:
        """Every VM's recorded addresses: uuid -> {host, interfaces, ips, seen_at}."""
        rows = self._read(
            "SELECT vm_uuid, host, interfaces, ips, seen_at FROM guest_addresses", (), "reading guest addresses"
        )
        return {
            row["vm_uuid"]: {
                "host": row["host"],
                "interfaces": json.loads(row["interfaces"] or "[]"),
                "ips": json.loads(row["ips"] or "[]"),
                "seen_at": row["seen_at"],
            }
            for row in rows
        }
