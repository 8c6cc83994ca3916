# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where a new volume comes from, decided without touching anything (pure).

``origin_from_params`` validates ``source``, ``checksum``, ``clone_from`` and ``clone_mode``
into an ``Origin``; ``plan_make`` decides what to do to make the volume from it (the steps
volume/image.py carries out), from what qemu-img said of the image (when it is on this host
already) and which VMs list the template as a writable disk.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS
from ansible_collections.infinivirt.core.plugins.module_utils.validation import CONTROL_RE
from ansible_collections.infinivirt.core.plugins.module_utils.volume.plan import Plan, VolumeState, check_metadata
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import format_size

CLONE_MODES = ("linked", "full")
URL_SCHEMES = ("http", "https")
_SHA256_RE = re.compile(r"sha256:([0-9a-fA-F]{64})")

# Steps of a plan (Plan.steps), in the order volume/image.py runs them.
DOWNLOAD = "download"  # fetch the URL into the image cache (resumed, checked, renamed)
VERIFY = "verify"  # hash the file that is copied (a local source, a cached download) against checksum
CHECK_CHAIN = "check_chain"  # every file the image reads must lie inside the storage roots
CONVERT = "convert"  # qemu-img convert into a temporary name, linked to the volume's name
OVERLAY = "overlay"  # a qcow2 overlay whose backing file is the template
GROW = "grow"  # the volume made larger than the image


@dataclasses.dataclass(frozen=True)
class Origin:
    """A validated source: ``kind`` url, file or clone; ``location`` the URL or the path as
    given (resolved by the service); ``sha256`` the expected digest (hex, lower case)."""

    kind: str
    location: str
    sha256: Optional[str] = None
    clone_mode: Optional[str] = None

    @property
    def option(self) -> str:
        """The option an error about the image names."""
        return "clone_from" if self.kind == "clone" else "source"

    @property
    def shown(self) -> str:
        return shown_url(self.location) if self.kind == "url" else self.location


def shown_url(url: str) -> str:
    """The URL as results and messages show it: no user information, query or fragment
    (signed URLs carry their token there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def parse_checksum(value: Optional[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    match = _SHA256_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SpecError("checksum", 'must be "sha256:" followed by 64 hexadecimal digits, got %r' % (value,))
    return match.group(1).lower()


def _check_url(source: str) -> None:
    try:
        parts = urlsplit(source)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise SpecError("source", "%s is not a valid URL: %s" % (shown_url(source), exc)) from None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise SpecError("source", "only http:// and https:// URLs are supported, got %s" % shown_url(source))
    if "@" in parts.netloc:
        raise SpecError(
            "source", "a user name or password in the URL is not supported (it would show in logs and results)"
        )


def _exclusive(params: dict, source: object, clone_from: object) -> None:
    if source and clone_from:
        raise SpecError("clone_from", "cannot be combined with source: a volume is made from one of them")
    if (source or clone_from) and params.get("backing_file"):
        raise SpecError(
            "backing_file", "cannot be combined with %s" % ("source" if source else "clone_from (use clone_mode)")
        )
    if (source or clone_from) and params.get("encrypt"):
        raise SpecError(
            "encrypt",
            "cannot be combined with %s: images and templates are copied unencrypted"
            % ("source" if source else "clone_from"),
        )
    if params.get("clone_mode") is not None and not clone_from:
        raise SpecError("clone_mode", "needs clone_from")
    if params.get("checksum") not in (None, "") and not source:
        raise SpecError("checksum", "needs source (it is the expected digest of the source)")


def origin_from_params(params: dict) -> Optional[Origin]:
    """The Origin the options ask for, or None (an empty volume or a backing_file clone)."""
    source, clone_from = params.get("source") or None, params.get("clone_from") or None
    sha256 = parse_checksum(params.get("checksum"))
    clone_mode = params.get("clone_mode")
    if clone_mode is not None and clone_mode not in CLONE_MODES:
        raise SpecError("clone_mode", "must be one of %s, got %r" % (", ".join(CLONE_MODES), clone_mode))
    _exclusive(params, source, clone_from)
    if clone_from is not None:
        return Origin("clone", clone_from, clone_mode=clone_mode or "linked")
    if source is None:
        return None
    if not isinstance(source, str) or CONTROL_RE.search(source):
        raise SpecError("source", "must be a URL or an absolute path without control characters")
    if "://" in source:
        _check_url(source)
        if sha256 is None:
            raise SpecError(
                "checksum", "is required with a URL source (sha256:<hex>): a download is only kept if it matches"
            )
        return Origin("url", source, sha256=sha256)
    if not source.startswith("/"):
        raise SpecError("source", "must be an http:// or https:// URL or an absolute path, got %r" % source)
    return Origin("file", source, sha256=sha256)


def plan_make(
    path: str,
    origin: Origin,
    fmt: Optional[str],
    size: Optional[int],
    preallocation: Optional[str],
    image: Optional[VolumeState],
    writers: Sequence[str] = (),
) -> Plan:
    """The plan to create ``path`` from ``origin``. ``image``: the source image or template as
    qemu-img reads it, None for a download not in the cache yet (then the plan predicts less);
    ``writers``: VMs whose definition lists the template as a writable disk."""
    plan = Plan(actions=["create"], format=fmt or "qcow2")
    if image is not None and image.encrypted:
        raise SpecError(
            origin.option, "%s is encrypted; only unencrypted images and templates can be copied" % origin.shown
        )
    if origin.kind == "clone" and origin.clone_mode == "linked":
        _plan_linked(plan, path, origin, image, writers)
        if preallocation not in (None, "off"):
            raise SpecError(
                "preallocation", "must be off (or unset) for a linked clone: qemu-img cannot preallocate one"
            )
    else:
        plan.steps = _fetch_steps(origin, image) + [CHECK_CHAIN, CONVERT]
    check_metadata(preallocation, plan.format, False)
    plan.size = image.virtual_size if image is not None else None
    if size is not None and plan.size is not None and size < plan.size:
        raise SpecError(
            "size",
            "%s is smaller than the image %s (%s); a volume is never made smaller than its source"
            % (format_size(size), origin.shown, format_size(plan.size)),
        )
    if size is not None and size != plan.size:
        if OVERLAY not in plan.steps:
            plan.steps.append(GROW)
        plan.size = size
    if image is None:
        plan.warnings.append(
            "%s is not in the image cache yet: check mode does not download it, so its size is not known" % origin.shown
        )
    return plan


def _fetch_steps(origin: Origin, image: Optional[VolumeState]) -> list:
    if origin.kind == "url" and image is None:
        return [DOWNLOAD]
    # A cache entry is checked again too: the bytes copied are the bytes checked.
    return [VERIFY] if origin.sha256 else []


def _plan_linked(plan: Plan, path: str, origin: Origin, image: Optional[VolumeState], writers: Sequence[str]) -> None:
    if plan.format != "qcow2":
        raise SpecError(
            "clone_mode", "linked needs format qcow2 (a raw volume has no backing file); use clone_mode: full"
        )
    if origin.location == path:
        raise SpecError("clone_from", "must be another file than path")
    if writers:
        raise SpecError(
            "clone_from",
            "%s is a writable disk of VM %s; a linked clone of it would break when the VM writes to it: "
            "make it read-only there, or use clone_mode: full" % (origin.location, ", ".join(writers)),
        )
    driver = image.driver if image is not None else None
    if driver not in FORMATS:
        raise SpecError("clone_from", "%s is a %s image; a template must be qcow2 or raw" % (origin.location, driver))
    plan.steps = [CHECK_CHAIN, OVERLAY]
    plan.backing_file = origin.location
    plan.backing_format = driver
