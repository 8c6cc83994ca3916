# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cloud-init's NoCloud seed: from the ``cloud_init`` option to the seed's files.

``seed_files(option, instance_id)`` validates the option and returns ``{name: bytes}`` for
``meta-data`` and ``user-data`` (always: NoCloud needs both) and ``network-config`` and
``vendor-data`` (when given). host/iso.py writes them as the ``CIDATA`` volume.

- ``user_data``: a dict, written as ``#cloud-config`` YAML, or a string passed as is (a
  ``#cloud-config`` string must be a YAML mapping; other strings must start with a marker
  cloud-init knows, or it ignores them).
- ``meta_data``: a dict; ``instance-id`` defaults to ``instance_id`` (the VM's UUID).
- ``network_config``: network config version 2, as a dict.
- ``vendor_data``: like ``user_data``.
- Short forms: ``hostname`` (meta-data ``local-hostname``), ``ssh_authorized_keys`` (the
  default user's keys) and ``users`` (cloud-config ``users``) go into the seed; one that
  contradicts the same value set in full is an error.

The output is a pure function of the input (mapping keys sorted), so the same option gives
the same bytes, and the same ISO. Errors name the field and never echo values: user data
may hold passwords.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

OPTION = "cloud_init"
KEYS = ("user_data", "meta_data", "network_config", "vendor_data", "hostname", "ssh_authorized_keys", "users")
CLOUD_CONFIG = "#cloud-config"
# First lines cloud-init acts on (its "user data formats"); anything else it ignores.
USER_DATA_MARKERS = (
    CLOUD_CONFIG,
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "#cloud-config-archive",
    "#cloud-config-jsonp",
    "## template: jinja",
    "Content-Type:",
)
_HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_KEY_RE = re.compile(r"(ssh-|ecdsa-|sk-)\S+ \S+( .*)?")


def seed_files(option: Any, instance_id: str) -> Dict[str, bytes]:
    """The NoCloud seed of ``option`` (the ``cloud_init`` dict) as {file name: bytes}."""
    if not isinstance(option, Mapping):
        raise SpecError(OPTION, "must be a dict of %s" % ", ".join(KEYS))
    unknown = sorted(str(k) for k in option if k not in KEYS)
    if unknown:
        raise SpecError("%s.%s" % (OPTION, unknown[0]), "is not an option of cloud_init; known: %s" % ", ".join(KEYS))
    meta = _meta_data(option, instance_id)
    files = {"meta-data": _dump("meta_data", meta).encode(), "user-data": _user_data(option).encode()}
    if option.get("network_config") is not None:
        files["network-config"] = _dump("network_config", _network_config(option["network_config"])).encode()
    if option.get("vendor_data") is not None:
        files["vendor-data"] = _text_or_config("vendor_data", option["vendor_data"])[0].encode()
    return files


def legacy_digest(files: Mapping[str, bytes]) -> str:
    """The unkeyed sha256 of the seed's files that specs kept before the digest was keyed
    (vm/model/sealed_files.py): still recognised, so such a seed is not "changed" until it is."""
    digest = hashlib.sha256()
    for name in sorted(files):
        for part in (name.encode(), files[name]):
            digest.update(b"%d:" % len(part) + part)
    return "sha256:" + digest.hexdigest()


def canonical(option: Mapping[str, Any]) -> str:
    """The option as sealed in the store: JSON of its set keys, sorted."""
    return json.dumps({k: v for k, v in option.items() if v is not None}, sort_keys=True)


def given(option: Any) -> bool:
    """Whether a cloud_init value asks for a seed: {} (or every key unset) removes it."""
    return isinstance(option, Mapping) and any(v is not None for v in option.values())


def _field(name: str) -> str:
    return "%s.%s" % (OPTION, name)


def _meta_data(option: Mapping[str, Any], instance_id: str) -> Dict[str, Any]:
    meta = option.get("meta_data")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise SpecError(_field("meta_data"), "must be a dict (instance-id, local-hostname, ...)")
    meta = dict(meta)
    meta.setdefault("instance-id", instance_id)
    if not isinstance(meta["instance-id"], str) or not meta["instance-id"].strip():
        raise SpecError(_field("meta_data.instance-id"), "must be a non-empty string")
    if "local-hostname" in meta:
        _check_hostname("meta_data.local-hostname", meta["local-hostname"])
    hostname = option.get("hostname")
    if hostname is not None:
        _check_hostname("hostname", hostname)
        if meta.setdefault("local-hostname", hostname) != hostname:
            raise SpecError(_field("hostname"), "contradicts cloud_init.meta_data.local-hostname; set one of them")
    return meta


def _check_hostname(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME_RE.fullmatch(value):
        raise SpecError(_field(name), "must be a host name: labels of 1 to 63 letters, digits or '-', separated by '.'")


def _user_data(option: Mapping[str, Any]) -> str:
    """user-data: the given text or config, with the short forms merged into the config."""
    given = option.get("user_data")
    text, config = _text_or_config("user_data", "" if given is None else given)
    shorts = {name: option[name] for name in ("ssh_authorized_keys", "users") if option.get(name) is not None}
    if not shorts:
        return text if given is not None else CLOUD_CONFIG + "\n"
    if config is None:
        raise SpecError(
            _field(sorted(shorts)[0]),
            "cannot be merged into a user_data that is not #cloud-config; write it into user_data",
        )
    config = dict(config)
    if "ssh_authorized_keys" in shorts:
        keys = _check_keys(shorts["ssh_authorized_keys"])
        known = config.get("ssh_authorized_keys") or []
        known = [known] if isinstance(known, str) else list(known)
        config["ssh_authorized_keys"] = known + [k for k in keys if k not in known]
    if "users" in shorts:
        if "users" in config:
            raise SpecError(_field("users"), "contradicts users in cloud_init.user_data; set one of them")
        config["users"] = _check_users(shorts["users"])
    return _cloud_config("user_data", config)


def _text_or_config(name: str, value: Any):
    """(text of the file, its cloud-config mapping or None) of a user_data/vendor_data."""
    if isinstance(value, Mapping):
        return _cloud_config(name, value), dict(value)
    if not isinstance(value, str):
        raise SpecError(_field(name), "must be a dict (written as #cloud-config) or a string")
    if value == "":
        return CLOUD_CONFIG + "\n", {}
    if not value.startswith(USER_DATA_MARKERS):
        raise SpecError(
            _field(name),
            "a string must start with #cloud-config, #!, #include, a MIME header or another cloud-init "
            "user data marker; cloud-init ignores anything else",
        )
    if not value.startswith(CLOUD_CONFIG) or value.startswith(("#cloud-config-archive", "#cloud-config-jsonp")):
        return value, None
    config = _load(name, value)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise SpecError(_field(name), "#cloud-config must be a YAML mapping (key: value lines)")
    return value, dict(config)


def _load(name: str, text: str) -> Any:
    import yaml  # ansible-core's own dependency; imported where first needed

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # Problem and position only: the snippet YAML would quote may hold a password.
        mark = exc.problem_mark
        where = " at line %d, column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise SpecError(_field(name), "is not valid YAML: %s%s" % (exc.problem or exc.context, where)) from None
    except yaml.YAMLError:
        raise SpecError(_field(name), "is not valid YAML") from None


def _cloud_config(name: str, config: Mapping[str, Any]) -> str:
    return CLOUD_CONFIG + "\n" + _dump(name, config)


def _dump(name: str, data: Any) -> str:
    import yaml

    try:
        # Sorted keys: the same option gives the same bytes. No line folding of long keys.
        return yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1 << 20)
    except yaml.YAMLError:
        raise SpecError(
            _field(name),
            "holds a value that cannot be written as YAML (only strings, numbers, booleans, lists and dicts)",
        ) from None


def _network_config(value: Any) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(_field("network_config"), "must be a dict (network config version 2)")
    inner = value.get("network", value)
    if not isinstance(inner, Mapping) or inner.get("version") != 2:
        raise SpecError(_field("network_config.version"), "must be 2 (only network config version 2 is supported)")
    return dict(value)


def _check_keys(value: Any) -> List[str]:
    field = _field("ssh_authorized_keys")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(field, "must be a list of public keys")
    for index, key in enumerate(value):
        if not isinstance(key, str) or "\n" in key.strip() or not _KEY_RE.fullmatch(key.strip()):
            raise SpecError(
                "%s[%d]" % (field, index), "must be one OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
            )
    return [key.strip() for key in value]


def _check_users(value: Any) -> List[Any]:
    if not isinstance(value, (list, tuple)):
        raise SpecError(_field("users"), "must be a list of users ('default' or dicts with a name)")
    for index, user in enumerate(value):
        name: Optional[Any] = user if isinstance(user, str) else user.get("name") if isinstance(user, Mapping) else None
        if not isinstance(name, str) or not name:
            raise SpecError("%s[%d]" % (_field("users"), index), "must be 'default' or a dict with a name")
    return [dict(u) if isinstance(u, Mapping) else u for u in value]
