# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks shared by every spec: each raises SpecError naming the option."""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

# The state option of modules that make or remove one thing (a disk, a network, a rule set).
PRESENT_ABSENT = ("present", "absent")


def check_int(field: str, value: Any, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, "must be an integer, got %r" % (value,))
    if value < low:
        raise SpecError(field, "must be at least %d, got %d" % (low, value))
    if high is not None and value > high:
        raise SpecError(field, "must be at most %d, got %d" % (high, value))
    return value


def check_choice(field: str, value: Any, choices: Tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(field, "must be one of %s, got %r" % (", ".join(choices), value))
    return value


_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def validate_label(field: str, value: Any) -> str:
    """A department or rule name: 1 to 32 letters, digits, '.', '_' or '-'."""
    if not isinstance(value, str) or not _LABEL_RE.fullmatch(value):
        raise SpecError(
            field, "%r must be 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit" % (value,)
        )
    return value


NAME_MAX = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  # refused in names, paths and QEMU option values


def validate_name(name: Any) -> str:
    """A VM name becomes part of file names and QEMU's -name: keep it boring."""
    if not isinstance(name, str) or not name:
        raise SpecError("name", "is required and must be a non-empty string")
    if len(name) > NAME_MAX:
        raise SpecError("name", "must be at most %d characters, got %d" % (NAME_MAX, len(name)))
    if CONTROL_RE.search(name):
        raise SpecError("name", "must not contain control characters")
    if ".." in name or not _NAME_RE.fullmatch(name):
        raise SpecError(
            "name",
            "%r may only contain letters, digits, '.', '_' and '-', must start with a letter "
            "or digit, and must not contain '..' (it is used in file names)" % name,
        )
    return name


IFNAME_MAX = 15  # IFNAMSIZ - 1
RESERVED_IFNAMES = ("default", "all")  # sysctl directories under net.ipv4.conf
_IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def validate_ifname(field: str, name: Any, reserved_ok: bool = False) -> str:
    """An interface name the kernel accepts. ``reserved_ok``: the name is only a label (a
    network's), which may be "default" even though no interface may be called that."""
    if not isinstance(name, str) or not name:
        raise SpecError(field, "is required")
    if name in RESERVED_IFNAMES and not reserved_ok:
        raise SpecError(
            field,
            "%r is reserved by the kernel (net.ipv4.conf.%s) and cannot name "
            "an interface; choose another name" % (name, name),
        )
    if len(name) > IFNAME_MAX:
        raise SpecError(
            field, "%r is longer than the kernel's %d characters for an interface name" % (name, IFNAME_MAX)
        )
    if not _IFNAME_RE.fullmatch(name):
        raise SpecError(
            field, "%r may only contain letters, digits, '.', '_' and '-', starting with a letter or digit" % (name,)
        )
    return name


_NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_netns_name(field: str, name: Any) -> Optional[str]:
    """None (the host's namespace) or a namespace name; whether it exists is a host check."""
    if name is None:
        return None
    if not isinstance(name, str) or not _NETNS_RE.fullmatch(name):
        raise SpecError(field, "%r is not a network namespace name (letters, digits, '.', '_', '-')" % (name,))
    return name


def validate_abs_path(field: str, path: Any) -> str:
    """A non-empty absolute path without control characters (a host check says whether it
    exists)."""
    if not isinstance(path, str) or not path:
        raise SpecError(field, "must be a non-empty path")
    if CONTROL_RE.search(path):
        raise SpecError(field, "must not contain control characters")
    if not path.startswith("/"):
        raise SpecError(field, "must be an absolute path, got %r" % path)
    return path
