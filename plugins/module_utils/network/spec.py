# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A network's bridge as the user asks for it: a pure, validated model (host.net applies it)."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_int, validate_ifname

NAT_TABLE_PREFIX = "infinivirt_nat_"


def nat_table_name(network: str) -> str:
    """The nftables table (family ip) of a NAT network."""
    return NAT_TABLE_PREFIX + network


@dataclasses.dataclass(frozen=True)
class BridgeSpec:
    name: str
    mtu: Optional[int] = None  # None: leave the kernel's value
    stp: bool = False
    addresses: Tuple[str, ...] = ()  # CIDR, e.g. 192.0.2.1/24

    def to_dict(self) -> dict:
        return {"bridge": self.name, "mtu": self.mtu, "stp": self.stp, "addresses": list(self.addresses)}


def validate_bridge(spec: BridgeSpec) -> BridgeSpec:
    validate_ifname("bridge", spec.name)
    if spec.mtu is not None:
        check_int("mtu", spec.mtu, 68, 65535)
    for index, cidr in enumerate(spec.addresses):
        field = "addresses[%d]" % index
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError:
            raise SpecError(field, "%r is not an address with a prefix length, like 192.0.2.1/24" % (cidr,)) from None
        if "/" not in str(cidr):
            raise SpecError(field, "%r needs a prefix length, like %s/24" % (cidr, cidr))
        if iface.ip.is_multicast or iface.ip.is_unspecified:
            raise SpecError(field, "%s cannot be an interface address" % iface.ip)
    return spec
