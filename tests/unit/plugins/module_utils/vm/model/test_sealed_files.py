# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The digest of sealed files (a cloud-init seed, an unattend answer file) is keyed by its salt."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.sealed_files import files_digest, is_digest

FILES = {"Autounattend.xml": b"<unattend/>", "user-data": b"#cloud-config\npassword: hunter2\n"}


def test_the_digest_is_keyed_by_the_salt():
    one = files_digest(b"s" * 32, FILES)
    assert is_digest(one) and one == files_digest(b"s" * 32, dict(FILES))
    assert files_digest(b"t" * 32, FILES) != one  # without the salt, no guess can be tested
    assert files_digest(b"s" * 32, dict(FILES, x=b"")) != one
    # Names and contents are framed: moving a byte from a name to its content is a change.
    assert files_digest(b"s", {"ab": b"c"}) != files_digest(b"s", {"a": b"bc"})
    assert not is_digest("sha256:" + "0" * 64) and not is_digest(one + "0")
