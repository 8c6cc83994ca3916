# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host configuration: one JSON file the host role writes and both the modules (through
the binding's shared options) and the monitor read, so a host's paths are said once.

    {"db_url": ..., "run_dir": ..., "storage_roots": [...], "secret_key_file": ...,
     "nvram_dir": ..., "host_id": ...}

Every key is optional. Precedence, per key: a value set in the task or on the monitor's command
line (or their environment variables) > this file > the built-in default. A missing file means
the defaults; an unreadable or malformed one, a value of the wrong type or an unknown key is an
error naming the file and the key.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.context import (
    DEFAULT_NVRAM_DIR,
    DEFAULT_RUN_DIR,
    DEFAULT_STORAGE_ROOT,
)
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import DEFAULT_KEY_FILE
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import DEFAULT_DB_URL

DEFAULT_HOST_CONFIG = "/etc/infinivirt/host.json"

# Key -> built-in default. host_id None: the host's name (HostContext.open).
DEFAULTS: Dict[str, Any] = {
    "db_url": DEFAULT_DB_URL,
    "run_dir": DEFAULT_RUN_DIR,
    "storage_roots": [DEFAULT_STORAGE_ROOT],
    "secret_key_file": DEFAULT_KEY_FILE,
    "nvram_dir": DEFAULT_NVRAM_DIR,
    "host_id": None,
}
PATH_KEYS = ("run_dir", "secret_key_file", "nvram_dir")


class HostConfigError(InfinivirtError):
    """The host configuration file cannot be used; the message names the file (and key)."""


def load(path: str) -> Dict[str, Any]:
    """The keys ``path`` sets, checked; {} when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise HostConfigError("host configuration %s cannot be read: %s" % (path, exc)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HostConfigError("host configuration %s is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(data, dict):
        raise HostConfigError("host configuration %s must hold a JSON object" % path)
    for key, value in data.items():
        problem = _problem(key, value)
        if problem:
            raise HostConfigError("host configuration %s: key %r %s" % (path, key, problem))
    return data


def _problem(key: str, value: Any) -> Optional[str]:
    if key not in DEFAULTS:
        return "is not known (known keys: %s)" % ", ".join(sorted(DEFAULTS))
    if key == "storage_roots":
        if not isinstance(value, list) or not value:
            return "must be a non-empty list of absolute paths"
        if not all(isinstance(item, str) and os.path.isabs(item) for item in value):
            return "must list absolute paths only"
        return None
    if key == "host_id" and value is None:
        return None
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if key in PATH_KEYS and not os.path.isabs(value):
        return "must be an absolute path"
    return None


def resolve(given: Dict[str, Any], path: Optional[str]) -> Dict[str, Any]:
    """Every key of DEFAULTS: the value in ``given`` unless it is None, else the file's at
    ``path`` (None: no file), else the built-in default."""
    from_file = load(path) if path else {}
    values = {}
    for key, default in DEFAULTS.items():
        value = given.get(key)
        if value is None:
            value = from_file.get(key, default)
        values[key] = list(value) if isinstance(value, list) else value
    return values
