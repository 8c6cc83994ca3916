# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Volume rows (infinivirt_disk), mixed into every store.

A row says that Infinivirt manages the file at ``path`` (its resolved, absolute path) on
``host``, in which format, and whether it is LUKS-encrypted. The LUKS passphrase of an
encrypted volume lives in the ``luks_key`` column, sealed by ``secrets.SecretBox`` with the
context ``"<path>/luks_key"`` (``store.base.secret_context``); it is read and written with
the store's ``get_secret``/``set_secret`` and re-encrypted by key rotation like every other
secret.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.clock import utc_now

VOLUME_COLUMNS = ("path", "host", "format", "encrypted", "luks_key", "created_at", "updated_at")


@dataclasses.dataclass
class VolumeRecord:
    path: str
    host: str
    format: str  # qcow2 | raw (an encrypted raw volume is a LUKS file)
    encrypted: bool = False
    created_at: str = ""
    updated_at: str = ""


def _volume(row: Dict[str, Any]) -> VolumeRecord:
    return VolumeRecord(
        path=row["path"],
        host=row["host"],
        format=row["format"],
        encrypted=bool(row["encrypted"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class VolumeStore:
    """Store methods for the ``volumes`` table (migration 4).

    Written against ``SqlStore``'s plumbing (``transaction``, ``_read``; SQL with '?'
    placeholders), which every concrete store provides.
    """

    def get_volume(self, path: str) -> Optional[VolumeRecord]:
        rows = self._read(
            "SELECT path, host, format, encrypted, created_at, updated_at FROM volumes WHERE path = ?",
            (path,),
            "reading volume %s" % path,
        )
        return _volume(rows[0]) if rows else None

    def list_volumes(self, host: Optional[str] = None) -> List[VolumeRecord]:
        sql = "SELECT path, host, format, encrypted, created_at, updated_at FROM volumes"
        args: tuple = ()
        if host is not None:
            sql += " WHERE host = ?"
            args = (host,)
        rows = self._read(sql + " ORDER BY path", args, "reading volumes")
        return [_volume(row) for row in rows]

    def put_volume(self, record: VolumeRecord, luks_key_token: Optional[str] = None) -> None:
        """Insert the row, or replace every column of an existing one (a volume made anew
        at a path whose file had gone). The sealed key is written in the same transaction."""
        record.created_at = record.updated_at = utc_now()
        values = (
            record.path,
            record.host,
            record.format,
            bool(record.encrypted),
            luks_key_token,
            record.created_at,
            record.updated_at,
        )
        with self.transaction("recording volume %s" % record.path) as cur:
            cur.execute(
                "INSERT INTO volumes (%s) VALUES (%s) ON CONFLICT (path) DO UPDATE SET %s"
                % (
                    ", ".join(VOLUME_COLUMNS),
                    ", ".join("?" * len(VOLUME_COLUMNS)),
                    ", ".join("%s = excluded.%s" % (c, c) for c in VOLUME_COLUMNS[1:]),
                ),
                values,
            )

    def update_volume(self, record: VolumeRecord) -> None:
        """Write host, format and encrypted back (the key is left alone)."""
        record.updated_at = utc_now()
        with self.transaction("updating volume %s" % record.path) as cur:
            cur.execute(
                "UPDATE volumes SET host = ?, format = ?, encrypted = ?, updated_at = ? WHERE path = ?",
                (record.host, record.format, bool(record.encrypted), record.updated_at, record.path),
            )

    def delete_volume(self, path: str) -> None:
        """Drop the row and, with it, the sealed key."""
        with self.transaction("deleting volume %s" % path) as cur:
            cur.execute("DELETE FROM volumes WHERE path = ?", (path,))
