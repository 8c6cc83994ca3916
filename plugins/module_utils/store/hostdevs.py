# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host PCI functions held by VMs (infinivirt_gpu), mixed into every store.

One row per PCI function and host (the primary key), so a function is one VM's at most: a
claim checks and inserts all the rows of an assignment in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now
from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.store.batch import in_chunks

ROLE_DEVICE = "device"  # QEMU gets it
ROLE_GROUP = "group"  # another device of an IOMMU group that a VM's device is in

PCI_COLUMNS = (
    "host",
    "address",
    "vm_uuid",
    "primary_address",
    "role",
    "managed",
    "original_driver",
    "rom_file",
    "rom_dir",
    "x_vga",
    "sriov",
    "created_at",
)


@dataclasses.dataclass
class PciClaim:
    host: str
    address: str
    vm_uuid: str
    primary_address: str
    role: str = ROLE_DEVICE
    managed: bool = False
    original_driver: Optional[str] = None
    rom_file: Optional[str] = None  # resolved path (primary row only)
    rom_dir: Optional[str] = None  # the directory it was checked against
    x_vga: bool = False
    sriov: Optional[Dict[str, Any]] = None
    created_at: str = ""
    vm_name: Optional[str] = None  # read only: the holder's name

    def values(self) -> tuple:
        sriov = json.dumps(self.sriov, sort_keys=True) if self.sriov is not None else None
        return (
            self.host,
            self.address,
            self.vm_uuid,
            self.primary_address,
            self.role,
            self.managed,
            self.original_driver,
            self.rom_file,
            self.rom_dir,
            self.x_vga,
            sriov,
            self.created_at,
        )


def _claim(row: Dict[str, Any]) -> PciClaim:
    values = {c: row[c] for c in PCI_COLUMNS}
    values["managed"], values["x_vga"] = bool(values["managed"]), bool(values["x_vga"])
    values["sriov"] = json.loads(values["sriov"]) if values["sriov"] else None
    return PciClaim(vm_name=row.get("vm_name"), **values)


_SELECT = (
    "SELECT p.*, v.name AS vm_name FROM pci_assignments p LEFT JOIN vms v ON v.uuid = p.vm_uuid "
    "WHERE %s ORDER BY p.primary_address, p.role, p.address"
)


class PciStore:
    """Store methods for the ``pci_assignments`` table (migration 14), on SqlStore's
    plumbing (``transaction``, ``_read``)."""

    def list_pci(self, host: Optional[str] = None, vm_uuid: Optional[str] = None) -> List[PciClaim]:
        where, args = ["1 = 1"], []
        if host is not None:
            where.append("p.host = ?")
            args.append(host)
        if vm_uuid is not None:
            where.append("p.vm_uuid = ?")
            args.append(vm_uuid)
        rows = self._read(_SELECT % " AND ".join(where), tuple(args), "reading PCI assignments")
        return [_claim(r) for r in rows]

    def list_pci_of(self, vm_uuids: Sequence[str]) -> Dict[str, List[PciClaim]]:
        """list_pci(vm_uuid=...) of many VMs in one query (per IN_BATCH): uuid -> claims."""
        found: Dict[str, List[PciClaim]] = {uuid: [] for uuid in vm_uuids}
        for chunk, marks in in_chunks(vm_uuids):
            for row in self._read(_SELECT % ("p.vm_uuid IN (%s)" % marks), chunk, "reading PCI assignments"):
                found[row["vm_uuid"]].append(_claim(row))
        return found

    def claim_pci(self, claims: Sequence[PciClaim]) -> None:
        """Record ``claims`` (one host, one VM) in one transaction; a function another VM
        holds fails the whole claim, naming that VM. Rows this VM already has are kept."""
        if not claims:
            return
        host, vm_uuid = claims[0].host, claims[0].vm_uuid
        now = utc_now()
        with self.transaction("claiming PCI devices") as cur:
            for claim in claims:
                claim.created_at = claim.created_at or now
                cur.execute(
                    "INSERT INTO pci_assignments (%s) VALUES (%s) ON CONFLICT DO NOTHING"
                    % (", ".join(PCI_COLUMNS), ", ".join("?" * len(PCI_COLUMNS))),
                    claim.values(),
                )
            marks = ", ".join("?" * len(claims))
            cur.execute(
                "SELECT p.address, p.vm_uuid, v.name FROM pci_assignments p LEFT JOIN vms v ON v.uuid = p.vm_uuid "
                "WHERE p.host = ? AND p.address IN (%s) ORDER BY p.address" % marks,
                (host,) + tuple(c.address for c in claims),
            )
            for address, holder, name in cur.raw.fetchall():
                if holder != vm_uuid:
                    raise StateError(
                        "PCI device %s on host %s is assigned to VM %s; release it there first "
                        "(infinivirt_gpu state=absent)" % (address, host, name or holder)
                    )

    def update_pci(self, claim: PciClaim) -> None:
        with self.transaction("updating a PCI assignment") as cur:
            cur.execute(
                "UPDATE pci_assignments SET %s WHERE host = ? AND address = ?"
                % ", ".join("%s = ?" % c for c in PCI_COLUMNS[2:]),
                claim.values()[2:] + (claim.host, claim.address),
            )

    def release_pci(self, host: str, vm_uuid: str, addresses: Sequence[str]) -> None:
        with self.transaction("releasing PCI devices") as cur:
            for address in addresses:
                cur.execute(
                    "DELETE FROM pci_assignments WHERE host = ? AND address = ? AND vm_uuid = ?",
                    (host, address, vm_uuid),
                )
