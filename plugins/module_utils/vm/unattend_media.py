# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``unattend`` option of a VM: planned by a task, sealed in the store, written as an ISO
(``Autounattend.xml`` and the extra files) at start.

- A task checks the option (vm/model/unattend.py), reads each ``src`` file (a regular file,
  bounded), and keeps only the keyed digest of the ISO's files in the spec
  (``unattend_digest``): a change is a change of that field, a pending restart for a running
  VM. The files themselves and the digest's salt are sealed with the SecretBox in the
  ``unattend`` column: the answer file usually holds an administrator password.
- A start (vm/power.py) opens them again, checks them against the digest, and writes the ISO
  (host/iso.py) when it is missing or differs: ``<nvram_dir>/<uuid>.unattend.iso``, 0600,
  journaled (kind ``unattend``), kept across stops like the cloud-init seed, removed with
  the VM.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from typing import Any, Dict, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import MAX_PLAINTEXT_BYTES
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import UNATTEND_MEDIA
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import unattend
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.sealed_files import SALT_BYTES, files_digest

UNATTEND = "unattend"  # the store's secret column, and the option's name
# What one sealed token may carry (secrets/box.py). The size bounds of vm/model/unattend.py
# keep most options well below; many long non-ASCII paths could still pass them.
MAX_SEALED_BYTES = MAX_PLAINTEXT_BYTES
# Pseudo file systems: their "files" are the host's state (a process's environment, ...).
_NOT_SOURCES = ("/proc", "/sys", "/dev")


def plan_media(engine, option: Any, uuid: str, stored_digest: Optional[str]) -> Tuple[Optional[str], Optional[Dict]]:
    """(the digest the spec takes, the payload to seal or None when the stored one stands).
    ``{}`` removes the CD-ROM: (None, {}). Bad input raises SpecError naming unattend.<field>.
    Reads the src files and the stored salt; writes nothing (check mode runs it too)."""
    if not unattend.given(option):
        return None, ({} if stored_digest else None)
    answer, entries = unattend.check_option({k: v for k, v in option.items() if v is not None})
    contents = [(e["path"], _content(i, e)) for i, e in enumerate(entries)]
    files = unattend.media_files(answer, contents)
    salt = _stored_salt(engine, uuid) if stored_digest else None
    salt = salt or os.urandom(SALT_BYTES)
    digest = files_digest(salt, files)
    if digest == stored_digest:
        return digest, None
    payload = {
        "salt": salt.hex(),
        "files": {name: base64.b64encode(data).decode() for name, data in files.items()},
    }
    if len(_sealed_text(payload).encode("utf-8")) > MAX_SEALED_BYTES:
        raise SpecError(
            "%s.files" % UNATTEND,
            "take more room than one sealed value holds; use fewer, shorter names or smaller files",
        )
    return digest, payload


def seal(box, uuid: str, payload: Dict[str, Any]) -> Optional[str]:
    """The token the unattend column keeps (None for no CD-ROM)."""
    return box.encrypt(_sealed_text(payload), secret_context(uuid, UNATTEND)) if payload else None


def _sealed_text(payload: Dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


def media_path(nvram_dir: str, uuid: str) -> str:
    return os.path.join(nvram_dir, uuid + ".unattend.iso")


def media_iso(engine, rec: VmRecord) -> Optional[str]:
    """Write the VM's answer file ISO if it is missing or differs (before QEMU starts); its
    path, or None when the VM has no unattend."""
    if not rec.spec.unattend_digest:
        return None
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import require_pycdlib

    require_pycdlib(UNATTEND)
    from ansible_collections.infinivirt.core.plugins.module_utils.host.iso import tree_iso_bytes, write_iso

    payload = _opened(engine, rec.uuid)
    files = {name: base64.b64decode(data) for name, data in payload["files"].items()} if payload else {}
    if not payload or files_digest(bytes.fromhex(payload["salt"]), files) != rec.spec.unattend_digest:
        raise StateError("VM %s: its unattend files are not in the database as planned; set unattend again" % rec.name)
    path = media_path(engine.resources.nvram_dir, rec.uuid)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    engine.store.journal_add(engine.resources.key(rec), UNATTEND_MEDIA, path)  # first: removed with the VM
    if _sha256(path) != hashlib.sha256(tree_iso_bytes(files, unattend.LABEL)).hexdigest():
        write_iso(path, files, unattend.LABEL, tree=True)
    return path


def _content(index: int, entry: Dict[str, str]) -> bytes:
    if "content" in entry:
        return entry["content"].encode("utf-8")
    return read_source("%s.files[%d].src" % (UNATTEND, index), entry["src"])


def read_source(field: str, path: str) -> bytes:
    """A src file's bytes: a regular file outside /proc, /sys and /dev, at most MAX_FILE."""
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + "/") for top in _NOT_SOURCES):
        raise SpecError(field, "must be a regular file, not in /proc, /sys or /dev")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError(field, "%s does not exist" % path) from None
    except OSError as exc:
        raise SpecError(field, "%s cannot be read: %s" % (path, exc.strerror)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # checked on what was opened
        os.close(fd)
        raise SpecError(field, "%s is not a regular file" % path)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(unattend.MAX_FILE + 1)
        except OSError as exc:
            raise SpecError(field, "%s cannot be read: %s" % (path, exc.strerror)) from None
    if len(data) > unattend.MAX_FILE:
        raise SpecError(field, "%s is larger than %d bytes" % (path, unattend.MAX_FILE))
    return data


def _stored_salt(engine, uuid: str) -> Optional[bytes]:
    payload = _opened(engine, uuid)
    return bytes.fromhex(payload["salt"]) if payload else None


def _opened(engine, uuid: str) -> Optional[Dict[str, Any]]:
    token = engine.store.get_secret(uuid, UNATTEND)
    if not token:
        return None
    return json.loads(engine.ctx.secret_box().decrypt(token, secret_context(uuid, UNATTEND)))


def _sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None
