# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Keys handed to children as descriptors with no name on any filesystem."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd


def test_a_secret_fd_has_no_name_and_is_closed_after():
    with secret_fd("passphrase-x") as key:
        target = os.readlink(key.path)
        assert target.startswith(("/memfd:", "pipe:")), target  # nothing on any filesystem
        with open(key.path, "rb") as fh:
            assert fh.read() == b"passphrase-x"  # no newline: QEMU reads the file whole
        # A child process reads it through its own copy of the descriptor.
        done = subprocess.run(["cat", key.path], pass_fds=(key.fd,), capture_output=True, check=True)
        assert done.stdout == b"passphrase-x"
    with pytest.raises(OSError):
        os.fstat(key.fd)


def test_a_secret_fd_is_closed_on_error():
    with pytest.raises(RuntimeError):
        with secret_fd("k") as key:
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        os.fstat(key.fd)
