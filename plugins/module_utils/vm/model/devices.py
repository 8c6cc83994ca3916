# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Platform devices of a VM (issue 25, part A): a TPM 2.0 (swtpm), virtio-rng, a watchdog,
SMBIOS fields and vsock. Pure: the options' normal form, their checks and their argv.

Each option is stored as a dict in its normal form, or None (off), so an equal request is no
change. All of them change the VM's hardware: a running VM takes them at its next start.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice, check_int

DEVICE_FIELDS = ("tpm", "rng", "watchdog", "smbios", "vsock")

TPM_VERSIONS = ("2.0",)
TPM_DEVICES = {"q35": "tpm-crb", "pc": "tpm-tis"}

RNG_SOURCE = "/dev/urandom"
# QEMU's virtio-rng default is unlimited; 1 KiB per second still seeds a kernel at once and
# keeps one guest from draining the host's entropy pool on its own.
RNG_DEFAULTS = {"max_bytes": 1024, "period_ms": 1000}
RNG_MAX_BYTES = 1 << 30
RNG_PERIOD_MAX_MS = 3600 * 1000

WATCHDOG_MODELS = ("i6300esb",)
WATCHDOG_ACTIONS = ("reset", "poweroff", "pause", "none")

# SMBIOS fields QEMU's -smbios takes, per structure type; the option's key is QEMU's.
SMBIOS_TYPE1 = ("manufacturer", "product", "version", "serial", "sku", "family")
SMBIOS_TYPE3 = ("manufacturer", "serial", "asset", "sku")
SMBIOS_MAX = 64  # SMBIOS strings: QEMU takes more, firmware tables and readers often not
_SMBIOS_RE = re.compile(r"[\x20-\x7e]+")  # printable ASCII: no control characters, no NUL

VSOCK_CID_MIN = 3  # 0-2 are the hypervisor, reserved and the host
VSOCK_CID_MAX = 0xFFFFFFFE  # 0xffffffff is VMADDR_CID_ANY

_TRUE = (True, "true", "yes", "on")
_FALSE = (False, None, "false", "no", "off", "")


def _switch(field: str, value: Any) -> Optional[Dict[str, Any]]:
    """A boolean-or-dict option as a dict: true -> {}, false or {} -> None (off)."""
    if isinstance(value, str):
        value = value.lower()
    if isinstance(value, bool) or isinstance(value, str):
        if value in _TRUE:
            return {}
        if value in _FALSE:
            return None
        raise SpecError(field, "must be true, false or a dict, got %r" % (value,))
    if isinstance(value, Mapping):
        return dict(value) if value else None
    raise SpecError(field, "must be true, false or a dict, got %r" % (value,))


def _known(field: str, value: Mapping[str, Any], keys) -> None:
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise SpecError("%s.%s" % (field, unknown[0]), "is not an option of %s (known: %s)" % (field, ", ".join(keys)))


def normalize_tpm(value: Any) -> Optional[Dict[str, Any]]:
    tpm = _switch("tpm", value)
    if tpm is None:
        return None
    _known("tpm", tpm, ("version",))
    version = str(tpm.get("version") or "2.0")
    if version in ("1.2", "1"):
        raise SpecError(
            "tpm.version",
            "1.2 is not offered: Windows 11 and current firmware need TPM 2.0, and a 1.2 state "
            "cannot be upgraded later; use 2.0",
        )
    check_choice("tpm.version", version, TPM_VERSIONS)
    return {"version": version}


def normalize_rng(value: Any) -> Optional[Dict[str, Any]]:
    rng = _switch("rng", value)
    if rng is None:
        return None
    _known("rng", rng, tuple(RNG_DEFAULTS))
    out = dict(RNG_DEFAULTS)
    out.update({k: v for k, v in rng.items() if v is not None})
    out["max_bytes"] = check_int("rng.max_bytes", out["max_bytes"], 1, RNG_MAX_BYTES)
    out["period_ms"] = check_int("rng.period_ms", out["period_ms"], 1, RNG_PERIOD_MAX_MS)
    return out


def normalize_watchdog(value: Any) -> Optional[Dict[str, Any]]:
    watchdog = _switch("watchdog", value)
    if watchdog is None:
        return None
    _known("watchdog", watchdog, ("model", "action"))
    model = watchdog.get("model") or WATCHDOG_MODELS[0]
    action = watchdog.get("action") or "reset"
    return {
        "model": check_choice("watchdog.model", model, WATCHDOG_MODELS),
        "action": check_choice("watchdog.action", action, WATCHDOG_ACTIONS),
    }


def normalize_smbios(value: Any) -> Optional[Dict[str, Any]]:
    """{type1: {...}, type3: {...}}: each value printable ASCII, 1-64 characters (QEMU's
    comma escaping is argv's job)."""
    smbios = _switch("smbios", value)
    if smbios is None:
        return None
    _known("smbios", smbios, ("type1", "type3"))
    out: Dict[str, Dict[str, str]] = {}
    for table, keys in (("type1", SMBIOS_TYPE1), ("type3", SMBIOS_TYPE3)):
        fields = smbios.get(table) or {}
        if not isinstance(fields, Mapping):
            raise SpecError("smbios.%s" % table, "must be a dict of %s" % ", ".join(keys))
        _known("smbios.%s" % table, fields, keys)
        values = {}
        for key, text in sorted(fields.items()):
            if text is None:
                continue
            name = "smbios.%s.%s" % (table, key)
            if not isinstance(text, str) or not _SMBIOS_RE.fullmatch(text):
                raise SpecError(name, "must be printable ASCII text (no control characters), got %r" % (text,))
            if len(text) > SMBIOS_MAX:
                raise SpecError(name, "must be at most %d characters, got %d" % (SMBIOS_MAX, len(text)))
            values[key] = text
        if values:
            out[table] = values
    return out or None


def normalize_vsock(value: Any) -> Optional[Dict[str, Any]]:
    """{cid: N} pins the guest's CID; {cid: None}: the lowest free one on the host, at start."""
    vsock = _switch("vsock", value)
    if vsock is None:
        return None
    _known("vsock", vsock, ("cid",))
    cid = vsock.get("cid")
    if cid is not None:
        cid = check_int("vsock.cid", cid, VSOCK_CID_MIN, VSOCK_CID_MAX)
    return {"cid": cid}


NORMALIZERS = {
    "tpm": normalize_tpm,
    "rng": normalize_rng,
    "watchdog": normalize_watchdog,
    "smbios": normalize_smbios,
    "vsock": normalize_vsock,
}


def merge_devices(params: Mapping[str, Any], base: Dict[str, Any]) -> None:
    """The device options a task sets, in their normal form (false / {} turn one off)."""
    for field, normalize in NORMALIZERS.items():
        if params.get(field) is not None:
            base[field] = normalize(params[field])


def validate_devices(spec: Any) -> None:
    """A stored or merged spec's devices are in normal form (normalizing is idempotent)."""
    for field, normalize in NORMALIZERS.items():
        value = getattr(spec, field)
        if value is not None and normalize(value) != value:
            raise SpecError(field, "is not in its normal form: %r" % (value,))


# -- argv -------------------------------------------------------------------------------------
def _escape(value: str) -> str:
    """QemuOpts escaping: a comma is written as two (the values are checked printable)."""
    return value.replace(",", ",,")


def _json(obj: Dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def tpm_args(spec: Any, socket_path: Optional[str]) -> List[str]:
    """QEMU's TPM front end on the VM's swtpm (its control socket): CRB on q35, TIS on pc."""
    if spec.tpm is None or socket_path is None:
        return []
    return [
        "-chardev",
        "socket,id=chrtpm,path=%s" % _escape(socket_path),
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        _json({"driver": TPM_DEVICES.get(spec.machine_type, "tpm-tis"), "tpmdev": "tpm0", "id": "tpm"}),
    ]


def rng_args(spec: Any) -> List[str]:
    if spec.rng is None:
        return []
    return [
        "-object",
        _json({"qom-type": "rng-random", "id": "rng0", "filename": RNG_SOURCE}),
        "-device",
        _json(
            {
                "driver": "virtio-rng-pci",
                "rng": "rng0",
                "id": "rng",
                "max-bytes": spec.rng["max_bytes"],
                "period": spec.rng["period_ms"],
            }
        ),
    ]


def watchdog_args(spec: Any) -> List[str]:
    if spec.watchdog is None:
        return []
    return [
        "-device",
        _json({"driver": spec.watchdog["model"], "id": "watchdog"}),
        "-action",
        "watchdog=%s" % spec.watchdog["action"],
    ]


def smbios_args(spec: Any) -> List[str]:
    argv: List[str] = []
    for table, number in (("type1", 1), ("type3", 3)):
        fields = (spec.smbios or {}).get(table)
        if fields:
            parts = ["type=%d" % number] + ["%s=%s" % (key, _escape(text)) for key, text in sorted(fields.items())]
            argv += ["-smbios", ",".join(parts)]
    return argv


def vsock_args(spec: Any, cid: Optional[int]) -> List[str]:
    if spec.vsock is None or cid is None:
        return []
    return ["-device", _json({"driver": "vhost-vsock-pci", "id": "vsock", "guest-cid": cid})]


def platform_args(spec: Any, tpm_socket: Optional[str] = None, vsock_cid: Optional[int] = None) -> List[str]:
    """The argv of every device of this file, in a fixed order."""
    return (
        tpm_args(spec, tpm_socket)
        + rng_args(spec)
        + watchdog_args(spec)
        + smbios_args(spec)
        + vsock_args(spec, vsock_cid)
    )
