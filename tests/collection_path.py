# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the work tree importable as ``ansible_collections.infinivirt.core``.

A symlink in a temp directory stands in for an installed collection (a link inside the
repo would loop for tools that walk the tree).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collections_root() -> str:
    """Return the directory holding ``ansible_collections``, creating the link if needed."""
    tag = hashlib.sha1(REPO.encode()).hexdigest()[:10]
    root = os.path.join(tempfile.gettempdir(), "infinivirt-collections-%s" % tag)
    link = os.path.join(root, "ansible_collections", "infinivirt", "core")
    if os.path.realpath(link) != REPO:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        tmp = "%s.%d" % (link, os.getpid())
        os.symlink(REPO, tmp)
        os.replace(tmp, link)
    return root


def install_on_sys_path() -> str:
    root = collections_root()
    if root not in sys.path:
        sys.path.insert(0, root)
    return root
