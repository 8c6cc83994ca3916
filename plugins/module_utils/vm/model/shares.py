# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``shared_dirs`` (issue 25, pure): host directories a guest mounts over virtiofs.

Each share is one virtiofsd (vm/engine/virtiofs.py starts it before QEMU, on a socket in
run_dir) and one ``vhost-user-fs-pci`` device with the share's tag; the guest mounts it with
``mount -t virtiofs TAG DIR``. virtiofsd reads the guest's RAM, so the VM needs
``memory_shared``. Where a source may be is the host's business (storage roots, checked by
the start's preflight); here only what needs no host: the shape of each entry.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_abs_path

SHARES_MAX = 8
TAG_MAX = 36  # the virtio-fs config space holds 36 bytes of tag
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Never shared: the whole host, or the kernel's views of it.
FORBIDDEN_SOURCES = ("/", "/proc", "/sys", "/dev")
# virtiofsd flavours: QEMU 7.2's C daemon, and the Rust one that replaced it (Debian 13).
C_VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
RUST_VIRTIOFSD = "/usr/libexec/virtiofsd"


def normalize_shares(items: Optional[Sequence[Any]]) -> List[Dict[str, Any]]:
    """The option's entries in their stored form: {source, tag, readonly} (readonly false
    when unset), so an equal request is no change. Shape errors are validate_shares'."""
    out: List[Dict[str, Any]] = []
    for item in items or ():
        if not isinstance(item, Mapping):
            out.append(item)  # refused by validate_shares, naming the entry
            continue
        entry = {"source": item.get("source"), "tag": item.get("tag"), "readonly": item.get("readonly")}
        if entry["readonly"] is None:
            entry["readonly"] = False
        if isinstance(entry["source"], str) and len(entry["source"]) > 1:
            entry["source"] = entry["source"].rstrip("/")
        out.append(entry)
    return out


def validate_shares(shares: Sequence[Any], memory_shared: bool) -> None:
    """Each entry's source, tag and readonly; tags unique; shared memory on."""
    if len(shares) > SHARES_MAX:
        raise SpecError("shared_dirs", "at most %d shares, got %d" % (SHARES_MAX, len(shares)))
    tags: Dict[str, int] = {}
    for index, share in enumerate(shares):
        name = "shared_dirs[%d]" % index
        if not isinstance(share, Mapping):
            raise SpecError(name, "must be a dict with source and tag")
        check_source(name + ".source", share.get("source"))
        tag = share.get("tag")
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag) or len(tag) > TAG_MAX:
            raise SpecError(
                name + ".tag",
                "must be 1 to %d letters, digits, '.', '_' or '-' (starting with a letter or digit), got %r"
                % (TAG_MAX, tag),
            )
        if tag in tags:
            raise SpecError(name + ".tag", "%r is already the tag of shared_dirs[%d]" % (tag, tags[tag]))
        tags[tag] = index
        if not isinstance(share.get("readonly"), bool):
            raise SpecError(name + ".readonly", "must be true or false")
    if shares and not memory_shared:
        raise SpecError("shared_dirs", "needs memory_shared: true (virtiofsd reads the guest's memory)")


def check_source(field: str, source: Any) -> None:
    validate_abs_path(field, source)
    parts = source.split("/")
    if ".." in parts or "." in parts or "//" in source:
        raise SpecError(field, "must be a plain absolute path (no '.', '..' or '//'), got %r" % source)
    if source in FORBIDDEN_SOURCES or any(source.startswith(t + "/") for t in FORBIDDEN_SOURCES[1:]):
        raise SpecError(field, "must not be /, nor under /proc, /sys or /dev, got %r" % source)


def share_ids(index: int) -> str:
    return "fs%d" % index


def share_devices(
    shares: Sequence[Mapping[str, Any]], sockets: Sequence[str], escape: Callable[[str, str], str]
) -> List[Tuple[str, Dict[str, Any]]]:
    """Each share's vhost-user chardev (virtiofsd's socket) and vhost-user-fs-pci device.
    ``escape`` is argv.opt_value."""
    if len(sockets) != len(shares):
        raise ValueError("shared_dirs: %d shares but %d virtiofsd sockets" % (len(shares), len(sockets)))
    out: List[Tuple[str, Dict[str, Any]]] = []
    for index, (share, socket) in enumerate(zip(shares, sockets)):
        ident = share_ids(index)
        device = {"driver": "vhost-user-fs-pci", "id": ident, "chardev": ident, "tag": share["tag"]}
        out.append(("socket,id=%s,path=%s" % (ident, escape("run_dir", socket)), device))
    return out


def virtiofsd_argv(binary: str, socket: str, share: Mapping[str, Any]) -> Tuple[List[str], bool]:
    """virtiofsd's argv for one share, and whether the caller must make the source read-only
    itself (QEMU 7.2's C daemon has no read-only mode; the Rust one has --readonly)."""
    if binary.endswith("/lib/qemu/virtiofsd"):
        # FUSE's -o splits at commas; a backslash escapes one (and itself).
        source = share["source"].replace("\\", "\\\\").replace(",", "\\,")
        argv = [binary, "--socket-path=%s" % socket, "-o", "source=%s" % source, "-o", "cache=auto"]
        return argv, bool(share["readonly"])
    argv = [binary, "--socket-path=%s" % socket, "--shared-dir=%s" % share["source"], "--cache=auto"]
    return argv + (["--readonly"] if share["readonly"] else []), False
