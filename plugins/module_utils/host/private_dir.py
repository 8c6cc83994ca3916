# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Directories root writes its sockets, pidfiles and logs in (run_dir): only root may change
them, or anything above them, or another user could make root follow a planted link."""

from __future__ import annotations

import os
import stat

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

PRIVATE_MODE = 0o700


def _unsafe_parent(st: os.stat_result, uid: int) -> bool:
    """Another user may replace an entry here: the directory is theirs, or writable by them
    without the sticky bit of a root-owned /tmp (which keeps our entries ours)."""
    if st.st_uid not in (0, uid):
        return True
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return bool(writable) and not (st.st_mode & stat.S_ISVTX and st.st_uid == 0)


def check_private_dir(path: str, field: str) -> None:
    """Refuse ``path`` when it is not a directory, belongs to another user, is writable by
    others, or sits under a directory another user may change; tighten an existing one to
    0700. Raises SpecError naming ``field``; a missing ``path`` is fine (made later)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise SpecError(field, "%s exists and is not a directory" % path)
    real = os.path.realpath(path)
    uid = os.geteuid()
    if os.path.isdir(real):
        st = os.stat(real)
        if st.st_uid != uid:
            raise SpecError(field, "%s belongs to uid %d, not to uid %d that runs the VMs" % (path, st.st_uid, uid))
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SpecError(
                field,
                "%s is writable by other users (mode %04o): they could plant links root would "
                "follow; use a directory only root can write (mode 0700)" % (path, stat.S_IMODE(st.st_mode)),
            )
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(real, PRIVATE_MODE)  # sockets, pidfiles and logs are nobody else's business
    parent = os.path.dirname(real)
    while True:
        if os.path.isdir(parent) and _unsafe_parent(os.stat(parent), uid):
            raise SpecError(
                field,
                "%s lies under %s, which another user may change (owner uid %d, mode %04o); "
                "use a directory under one only root can write"
                % (path, parent, os.stat(parent).st_uid, stat.S_IMODE(os.stat(parent).st_mode)),
            )
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def ensure_private_dir(path: str, field: str) -> None:
    """Make ``path`` (0700) if it is missing, and check it as check_private_dir does, after
    making it too (another user may have won the race to make it first)."""
    check_private_dir(path, field)
    os.makedirs(path, mode=PRIVATE_MODE, exist_ok=True)
    check_private_dir(path, field)
