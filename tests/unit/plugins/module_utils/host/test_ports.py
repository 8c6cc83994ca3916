# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""port_free: a port some socket listens on is not free; once it is closed, it is."""

from __future__ import annotations

import socket

from ansible_collections.infinivirt.core.plugins.module_utils.host.ports import port_free


def test_a_listening_port_is_taken_and_free_again_after():
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            listener.bind((address, 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            assert not port_free(address, port)
        assert port_free(address, port)
