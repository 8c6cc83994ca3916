# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``cloud_init`` option of a VM: planned by a task, sealed in the store, written as a
NoCloud seed ISO at start.

- A task validates the option into the seed's files (vm/model/cloud_init.py) and keeps only
  their digest in the spec (``cloud_init_digest``): a change shows as a change of that field,
  a pending restart for a running VM. The digest is keyed by a random salt
  (vm/model/sealed_files.py), so neither the database nor a task result lets anyone test a
  guessed password against it. The option and the salt are sealed with the SecretBox in the
  ``cloud_init`` column (it may hold passwords), like the display password.
- A start (vm/power.py) opens it again and writes the ISO (host/iso.py) when it is missing
  or differs: ``<nvram_dir>/<uuid>.cidata.iso``, mode 0600. It lives in nvram_dir, not
  run_dir, because like the NVRAM it belongs to the VM, not to one QEMU process: it is
  journaled, outlives stops and host reboots, and is removed with the VM.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import MissingLibrary, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import MAX_PLAINTEXT_BYTES
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import CLOUD_INIT_SEED
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import cloud_init
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.sealed_files import SALT_BYTES, files_digest

CLOUD_INIT = "cloud_init"  # the store's secret column, and the option's name


def plan_seed(
    option: Any, uuid: str, stored_digest: Optional[str], stored_salt: Callable[[], Optional[bytes]]
) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(the digest the spec takes, the payload to seal or None when the stored one stands).
    ``{}`` removes the seed: (None, {}). Bad input raises SpecError naming cloud_init.<field>.
    ``stored_salt`` opens the sealed seed's salt (asked only when a digest is stored); a seed
    sealed before digests were keyed keeps its old digest until the option changes."""
    if not cloud_init.given(option):
        return None, ({} if stored_digest else None)
    option = {k: v for k, v in option.items() if v is not None}
    files = cloud_init.seed_files(option, uuid)
    if stored_digest is not None and stored_digest == cloud_init.legacy_digest(files):
        return stored_digest, None
    salt = (stored_salt() if stored_digest else None) or os.urandom(SALT_BYTES)
    digest = files_digest(salt, files)
    payload = {"salt": salt.hex(), "option": option}
    size = len(_sealed_text(payload).encode("utf-8"))
    if size > MAX_PLAINTEXT_BYTES:  # it is sealed whole: a bigger one could never be opened again
        raise SpecError(
            cloud_init.OPTION,
            "is %d bytes as stored, more than the %d one sealed value holds; keep big files out of "
            "user_data (let the guest fetch them)" % (size, MAX_PLAINTEXT_BYTES),
        )
    return digest, (None if digest == stored_digest else payload)


def seal(box, uuid: str, payload: Dict[str, Any]) -> Optional[str]:
    """The token the cloud_init column keeps (None for no seed): the option and its salt."""
    return box.encrypt(_sealed_text(payload), secret_context(uuid, CLOUD_INIT)) if payload else None


def _sealed_text(payload: Dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True)


def opened(engine, uuid: str) -> Optional[Dict[str, Any]]:
    """The sealed seed, {"salt": hex or None, "option": {...}}, or None when there is none.
    A token sealed before digests were keyed holds the option alone (no key of the option
    is named "salt" or "option")."""
    token = engine.store.get_secret(uuid, CLOUD_INIT)
    if not token:
        return None
    sealed = json.loads(engine.ctx.secret_box().decrypt(token, secret_context(uuid, CLOUD_INIT)))
    return sealed if set(sealed) == {"salt", "option"} else {"salt": None, "option": sealed}


def stored_salt(engine, uuid: str) -> Optional[bytes]:
    payload = opened(engine, uuid)
    return bytes.fromhex(payload["salt"]) if payload and payload["salt"] else None


def seed_path(nvram_dir: str, uuid: str) -> str:
    return os.path.join(nvram_dir, uuid + ".cidata.iso")


def seed_iso(engine, rec: VmRecord) -> Optional[str]:
    """Write the VM's seed ISO if it is missing or differs (before QEMU starts); its path,
    or None when the VM has no cloud_init."""
    if not rec.spec.cloud_init_digest:
        return None
    require_pycdlib()
    from ansible_collections.infinivirt.core.plugins.module_utils.host.iso import iso_bytes, write_iso

    payload = opened(engine, rec.uuid)
    if payload is None:
        raise StateError("VM %s: its cloud_init is not in the database; set cloud_init again" % rec.name)
    files = cloud_init.seed_files(payload["option"], rec.uuid)
    path = seed_path(engine.resources.nvram_dir, rec.uuid)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    engine.store.journal_add(engine.resources.key(rec), CLOUD_INIT_SEED, path)  # first: removed with the VM
    if _sha256(path) != hashlib.sha256(iso_bytes(files)).hexdigest():
        write_iso(path, files)
    return path


def require_pycdlib(purpose: str = CLOUD_INIT) -> None:
    """pycdlib is needed only by a VM with cloud_init or unattend (the binding says so as
    Ansible does)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.host import iso

    if not iso.HAS_PYCDLIB:
        raise MissingLibrary("pycdlib", purpose, iso.PYCDLIB_IMPORT_ERROR or "")


def _sha256(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None
