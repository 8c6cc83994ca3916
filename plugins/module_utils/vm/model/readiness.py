# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Readiness (pure): the ``wait_for`` and ``wait_timeout`` options, and the console tail a
failed start or wait returns (bounded, cleaned of escapes, secrets masked).

vm/readiness.py does the waiting; this file only decides what the options mean and what a
tail may show, so both are unit-tested without a guest.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

AGENT, IP, SSH, SERIAL = "agent", "ip", "ssh", "serial"
WAIT_KINDS = (AGENT, IP, SSH)  # the string forms; a dict {serial: REGEX} is the fourth
DEFAULT_WAIT_TIMEOUT = 300.0
TAIL_LINES = 40  # a failed start or wait returns at most this many console lines ...
TAIL_BYTES = 4096  # ... and at most this many bytes of them (UTF-8)
TAIL_READ = 64 * 1024  # how much of the end of the log is read to find them
MASK = "********"
# A cloud_init string shorter than this is masked only under a key that names a secret:
# masking every short word of user_data (root, sudo, a user name) would blank the console.
SHORT_SECRET = 6
SECRET_KEYS = ("pass", "secret", "token", "key")  # passwd, hashed_passwd, chpasswd, private_key, ...

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other escapes (ESC, intermediates, a
# final: charset designations and the like); then the C0/C1
# controls other than tab and newline (a bare CR ends a line, as a terminal shows it).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclasses.dataclass(frozen=True)
class WaitSpec:
    """What a task waits for once its VM runs: ``kind`` one of agent, ip, ssh, serial
    (then ``pattern`` is the regular expression), for at most ``timeout`` seconds (0: one
    look, no waiting)."""

    kind: str
    timeout: float
    pattern: Optional[str] = None

    @property
    def label(self) -> str:
        return "serial %r" % self.pattern if self.kind == SERIAL else self.kind

    @property
    def needs_address(self) -> bool:
        return self.kind in (IP, SSH)


def wait_timeout(value: Any) -> float:
    """``wait_timeout`` in seconds: a finite number, 0 or more (None: the default)."""
    if value is None:
        return DEFAULT_WAIT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error("wait_timeout", "must be a number of seconds (0 or more), got %r" % (value,))
    if not math.isfinite(value) or value < 0:
        raise _error("wait_timeout", "must be a finite number of seconds, 0 or more (0: look once), got %r" % value)
    return float(value)


def parse_wait(params: Dict[str, Any]) -> Optional[WaitSpec]:
    """The task's WaitSpec, None without ``wait_for``. A bad value fails naming the option
    before anything is done. ``wait_timeout`` is checked even without ``wait_for``."""
    timeout = wait_timeout(params.get("wait_timeout"))
    value = params.get("wait_for")
    if value is None:
        return None
    if isinstance(value, str) and value in WAIT_KINDS:
        return WaitSpec(value, timeout)
    if isinstance(value, dict) and set(value) == {SERIAL}:
        pattern = value[SERIAL]
        if not isinstance(pattern, str) or not pattern:
            raise _error("wait_for.serial", "must be a regular expression (a non-empty string)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _error("wait_for.serial", "is not a valid regular expression: %s" % exc) from None
        return WaitSpec(SERIAL, timeout, pattern)
    shown = value if isinstance(value, str) else type(value).__name__
    raise _error(
        "wait_for",
        "must be one of %s, or a dictionary {serial: REGEX}, got %r" % (", ".join(WAIT_KINDS), shown),
    )


def _error(field: str, reason: str) -> SpecError:
    return SpecError(field, reason)


def agent_address(entry: Dict[str, Any], macs: Sequence[str]) -> Optional[str]:
    """The first reachable address (IPv4 first) that a ``guest`` entry (vm/guest.py) has
    on one of the VM's NICs (``macs``)."""
    wanted = {mac.lower() for mac in macs}
    reachable = set(entry.get("ips") or ())  # no loopback, no link-local
    ips = [ip for nic in entry.get("interfaces") or () if nic.get("mac") in wanted for ip in nic.get("ips") or ()]
    ips = [ip for ip in ips if ip in reachable]
    ips.sort(key=lambda ip: ipaddress.ip_address(ip.split("%", 1)[0]).version)
    return ips[0] if ips else None


# -- the serial console ------------------------------------------------------------------
def clean_text(data: bytes) -> str:
    """Console bytes as text a result may carry: invalid UTF-8 replaced, terminal escapes
    and control characters removed, CR LF and bare CR as line ends."""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def mask(text: str, secrets: Iterable[str]) -> str:
    """Every occurrence of every secret replaced (longest first: a secret may hold another)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def console_tail(
    data: bytes,
    secrets: Iterable[str],
    whole: bool,
    max_lines: int = TAIL_LINES,
    max_bytes: int = TAIL_BYTES,
) -> List[str]:
    """The last lines of the console log from ``data``, its end (``whole``: the log's
    start too; otherwise the first, partial line is dropped). Cleaned, masked, then bounded
    to ``max_lines`` lines and ``max_bytes`` bytes (a longer line keeps its end)."""
    lines = clean_text(data).split("\n")
    if not whole:
        lines = lines[1:]
    secrets = [s for s in secrets if s]
    # Masked line by line: a secret spans no line end in what the guest printed, and
    # a secret holding a newline is masked by its lines.
    parts = [p for s in secrets for p in s.split("\n") if p]
    lines = [mask(line, secrets + parts).rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    kept: List[str] = []
    size = 0
    for line in reversed(lines[-max_lines:]):
        encoded = line.encode("utf-8")
        if size + len(encoded) + 1 > max_bytes:
            room = max_bytes - size - 1
            if room > 0 and not kept:  # one huge line: keep its end
                kept.append(encoded[-room:].decode("utf-8", errors="ignore"))
            break
        kept.append(line)
        size += len(encoded) + 1
    return list(reversed(kept))


def matching_line(lines: Sequence[str], pattern: str) -> Optional[str]:
    regex = re.compile(pattern)
    return next((line for line in lines if regex.search(line)), None)


# -- what counts as a secret -------------------------------------------------------------
def cloud_init_secrets(option: Any) -> List[str]:
    """The strings of a cloud_init option a console tail must not show: every string in
    user_data, vendor_data and users (string user_data parsed: a YAML string's values,
    and its lines), ssh_authorized_keys; short ones only under a key that names a secret.
    meta_data, network_config and hostname are not secret."""
    if not isinstance(option, dict):
        return []
    found: List[str] = []
    for key in ("user_data", "vendor_data", "users", "ssh_authorized_keys"):
        value = option.get(key)
        if isinstance(value, str):
            found += _text_secrets(value)
        else:
            _collect(value, False, found)
    return sorted(set(found))


def _text_secrets(text: str) -> List[str]:
    found: List[str] = []
    try:
        import yaml  # ansible-core's own dependency

        _collect(yaml.safe_load(text), False, found)
    except Exception:  # not YAML (a script): its lines are what could be echoed
        pass
    return found + [line.strip() for line in text.splitlines() if len(line.strip()) >= SHORT_SECRET]


def _collect(value: Any, secret_key: bool, found: List[str]) -> None:
    if isinstance(value, str):
        if len(value) >= SHORT_SECRET or (secret_key and value):
            found.append(value)
            found.extend(line.strip() for line in value.splitlines() if len(line.strip()) >= SHORT_SECRET)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(item, secret_key or any(word in str(key).lower() for word in SECRET_KEYS), found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, secret_key, found)
