# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Paths users give for images: they must stay inside the storage roots, through symlinks
and '..' alike (a string prefix test is not enough)."""

from __future__ import annotations

import os
from typing import Any, List, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import CONTROL_RE


def resolve_roots(roots: Any) -> List[str]:
    """The storage roots, each resolved through symlinks; SpecError("storage_roots")."""
    if isinstance(roots, str) or not isinstance(roots, (list, tuple)) or not roots:
        raise SpecError("storage_roots", "must be a non-empty list of absolute directory paths, got %r" % (roots,))
    resolved = []
    for root in roots:
        if not isinstance(root, str) or not root:
            raise SpecError("storage_roots", "every entry must be a non-empty path, got %r" % (root,))
        if CONTROL_RE.search(root):
            raise SpecError("storage_roots", "%r contains control characters" % root)
        if not os.path.isabs(root):
            raise SpecError("storage_roots", "%r is not an absolute path" % root)
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise SpecError("storage_roots", "%s does not exist or is not a directory (create it first)" % root)
        resolved.append(real)
    return resolved


def _inside(candidate: str, root: str) -> bool:
    return candidate != root and os.path.commonpath([root, candidate]) == root


def resolve_in_roots(path: Any, roots: Sequence[str], field: str = "path") -> str:
    """The real path of ``path``, which must name a file inside one of ``roots``.

    The file itself may not exist yet: its parent directory is resolved and the name joined
    to it; if the name exists (a file, or a symlink even dangling) it is resolved too, so a
    symlink pointing outside the roots is refused like a ``..`` that climbs out of them.
    """
    real_roots = resolve_roots(roots)
    if not isinstance(path, str) or not path:
        raise SpecError(field, "must be a non-empty absolute path")
    if CONTROL_RE.search(path):
        raise SpecError(field, "must not contain control characters, got %r" % path)
    if not os.path.isabs(path):
        raise SpecError(field, "must be an absolute path, got %r" % path)
    parent, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise SpecError(field, "must name a file, not a directory, got %r" % path)
    candidate = os.path.join(os.path.realpath(parent), name)
    if os.path.lexists(candidate):
        candidate = os.path.realpath(candidate)
    if not any(_inside(candidate, root) for root in real_roots):
        shown = path if candidate == path else "%s (which resolves to %s)" % (path, candidate)
        raise SpecError(
            field,
            "%s is outside the storage roots %s; use a path inside them or add "
            "its directory to storage_roots" % (shown, ", ".join(real_roots)),
        )
    return candidate
