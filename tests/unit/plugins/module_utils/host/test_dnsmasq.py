# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dnsmasq's lease file, as wait_for: ip reads it."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.host.dnsmasq import (
    leasefile_of,
    parse_leases,
    read_leases,
)

# As dnsmasq 2.89 writes it: IPv4 leases, then the server DUID and IPv6 leases.
LEASES = """\
1765050000 52:54:00:AB:00:01 10.79.0.61 web01 ff:00:ab:00:01
1765050100 52:54:00:ab:00:02 10.79.0.62 * *
garbage line
1765050200 not-a-mac 10.79.0.63 x *
soon 52:54:00:ab:00:04 10.79.0.64 x *
duid 00:01:00:01:2c:9a:1b:2e:52:54:00:12:34:56
1765050300 1234 fd00::5 web01 00:01:00:01
1765050400 52:54:00:ab:00:02 10.79.0.72 * *
"""


def test_parse_leases():
    assert parse_leases(LEASES) == {
        "52:54:00:ab:00:01": ("10.79.0.61", "1765050000"),  # the MAC lowercased
        "52:54:00:ab:00:02": ("10.79.0.72", "1765050400"),  # renewed elsewhere: the last line
    }
    assert parse_leases("") == {}


def test_read_leases(tmp_path):
    assert read_leases(str(tmp_path / "missing.leases")) == {}
    path = tmp_path / "net-x.dnsmasq.leases"
    path.write_bytes(LEASES.encode() + b"\xff\xfe\n")
    assert read_leases(str(path))["52:54:00:ab:00:01"][0] == "10.79.0.61"


def test_the_lease_file_beside_the_pidfile():
    assert leasefile_of("/run/infinivirt/net-a.dnsmasq.pid") == "/run/infinivirt/net-a.dnsmasq.leases"
    assert leasefile_of("/x/other") == "/x/other.leases"
