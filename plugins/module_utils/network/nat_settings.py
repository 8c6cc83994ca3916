# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The settings of an infinivirt_net ``mode: nat`` network, validated: gateway, DHCP range,
lease time, DNS and the outbound interface. Pure: nothing here touches the host."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Dict, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.network.spec import BridgeSpec, nat_table_name
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_ifname

NAT_OPTIONS = ("dhcp", "dns", "outbound_interface")
DHCP_OPTIONS = ("enabled", "range_start", "range_end", "lease_time")
DEFAULT_LEASE_TIME = "1h"
MIN_LEASE_SECONDS = 120  # dnsmasq's own minimum
MAX_LEASE_SECONDS = 2**31 - 1
NAT_PREFIX_RANGE = (8, 30)
_LEASE_RE = re.compile(r"([0-9]+)([smhdw]?)")
_LEASE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclasses.dataclass(frozen=True)
class NatSettings:
    gateway: str  # the bridge's address with prefix, e.g. 10.77.0.1/24
    dhcp: bool = True
    range_start: str = ""
    range_end: str = ""
    lease_time: str = DEFAULT_LEASE_TIME
    lease_seconds: Optional[int] = 3600  # None: infinite
    dns: bool = True
    outbound_interface: Optional[str] = None

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.gateway)

    @property
    def subnet(self) -> str:
        return str(self.interface.network)

    def to_dict(self, network: str) -> Dict[str, Any]:
        return {
            "gateway": str(self.interface.ip),
            "subnet": self.subnet,
            "dhcp": {
                "enabled": self.dhcp,
                "range_start": self.range_start,
                "range_end": self.range_end,
                "lease_time": self.lease_time,
            },
            "dns": self.dns,
            "outbound_interface": self.outbound_interface,
            "table": nat_table_name(network),
        }

    def serves(self) -> bool:
        """Whether dnsmasq has anything to do."""
        return self.dhcp or self.dns


def default_range(gateway: ipaddress.IPv4Interface) -> Tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The hosts after the gateway up to the last usable address; when the gateway is the
    last usable address, the hosts before it."""
    net = gateway.network
    first, last = net.network_address + 1, net.broadcast_address - 1
    if gateway.ip < last:
        return gateway.ip + 1, last
    return first, gateway.ip - 1


def parse_lease_time(field: str, value: Any) -> Tuple[str, Optional[int]]:
    """(the value as given, normalized; seconds or None for infinite)."""
    if value is None:
        value = DEFAULT_LEASE_TIME
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecError(field, "must be a duration like 1h, 30m, 2d or 3600 (seconds), or infinite; got %r" % (value,))
    text = str(value).strip().lower()
    if text == "infinite":
        return text, None
    found = _LEASE_RE.fullmatch(text)
    if not found:
        raise SpecError(field, "%r is not a duration like 1h, 30m, 2d or 3600 (seconds), or infinite" % (value,))
    seconds = int(found.group(1)) * _LEASE_UNITS[found.group(2)]
    if seconds < MIN_LEASE_SECONDS:
        raise SpecError(field, "must be at least 2 minutes (dnsmasq's minimum), got %s" % text)
    if seconds > MAX_LEASE_SECONDS:
        raise SpecError(
            field,
            "must be at most %d seconds, got %s; use infinite for leases that do "
            "not expire" % (MAX_LEASE_SECONDS, text),
        )
    return text, seconds


def _host_address(field: str, value: Any, net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise SpecError(field, "must be an IPv4 address of the subnet %s, got %r" % (net, value))
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise SpecError(field, "%r is not an IPv4 address" % (value,)) from None
    if address.version != 4:
        raise SpecError(field, "%s is not an IPv4 address" % address)
    if address not in net:
        raise SpecError(field, "%s is outside the subnet %s of the gateway" % (address, net))
    if address in (net.network_address, net.broadcast_address):
        raise SpecError(
            field,
            "%s is the %s address of %s, not a host address"
            % (address, "network" if address == net.network_address else "broadcast", net),
        )
    return address


def validate_nat(params: Dict[str, Any], bridge: BridgeSpec) -> NatSettings:
    """The NAT settings of a validated bridge; SpecError naming the field otherwise."""
    iface = _gateway(bridge)
    enabled, first, last, lease_time, lease_seconds = _dhcp(params.get("dhcp"), iface)
    return NatSettings(
        gateway=str(iface),
        dhcp=enabled,
        range_start=str(first),
        range_end=str(last),
        lease_time=lease_time,
        lease_seconds=lease_seconds,
        dns=_dns(params.get("dns")),
        outbound_interface=_outbound(params.get("outbound_interface"), bridge),
    )


def _gateway(bridge: BridgeSpec) -> ipaddress.IPv4Interface:
    """The bridge's one address, a host address of an IPv4 subnet with room for hosts."""
    if len(bridge.addresses) != 1:
        raise SpecError(
            "addresses",
            "mode nat needs exactly one address, the gateway's IPv4 address "
            "with prefix length (like 10.77.0.1/24); got %d" % len(bridge.addresses),
        )
    field = "addresses[0]"
    iface = ipaddress.ip_interface(bridge.addresses[0])
    if iface.version != 4:
        raise SpecError(
            field, "mode nat needs an IPv4 gateway address (like 10.77.0.1/24), got %s" % bridge.addresses[0]
        )
    net = iface.network
    low, high = NAT_PREFIX_RANGE
    if not low <= net.prefixlen <= high:
        raise SpecError(
            field,
            "mode nat needs a prefix length from /%d to /%d (a subnet with room "
            "for hosts), got /%d" % (low, high, net.prefixlen),
        )
    if iface.ip in (net.network_address, net.broadcast_address):
        raise SpecError(
            field,
            "%s is the %s address of %s; the gateway needs a host address"
            % (iface.ip, "network" if iface.ip == net.network_address else "broadcast", net),
        )
    if iface.ip.is_loopback:
        raise SpecError(field, "%s is a loopback address" % iface.ip)
    return iface


def _dhcp(dhcp: Any, iface: ipaddress.IPv4Interface):
    """(enabled, range start, range end, lease time, lease seconds) of the dhcp option."""
    if dhcp is None:
        dhcp = {}
    if not isinstance(dhcp, dict):
        raise SpecError("dhcp", "must be a dictionary with enabled, range_start, range_end, lease_time")
    unknown = sorted(set(dhcp) - set(DHCP_OPTIONS))
    if unknown:
        raise SpecError("dhcp", "unknown option %s (known: %s)" % (", ".join(unknown), ", ".join(DHCP_OPTIONS)))
    enabled = dhcp.get("enabled")
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise SpecError("dhcp.enabled", "must be true or false, got %r" % (enabled,))
    first, last = _dhcp_range(dhcp.get("range_start"), dhcp.get("range_end"), iface)
    lease_time, lease_seconds = parse_lease_time("dhcp.lease_time", dhcp.get("lease_time"))
    return enabled, first, last, lease_time, lease_seconds


def _dhcp_range(
    start: Any, end: Any, iface: ipaddress.IPv4Interface
) -> Tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """Both ends given, or neither (the default range); never around the gateway."""
    if start is None and end is None:
        return default_range(iface)
    if start is None or end is None:
        missing = "dhcp.range_start" if start is None else "dhcp.range_end"
        other = "dhcp.range_end" if start is None else "dhcp.range_start"
        raise SpecError(
            missing, "is required with %s (give both ends of the range, or neither for the default)" % other
        )
    net = iface.network
    first = _host_address("dhcp.range_start", start, net)
    last = _host_address("dhcp.range_end", end, net)
    if first > last:
        raise SpecError("dhcp.range_end", "%s comes before dhcp.range_start %s" % (last, first))
    if first <= iface.ip <= last:
        raise SpecError(
            "dhcp.range_start",
            "the range %s to %s contains the gateway %s; start it "
            "after the gateway or end it before" % (first, last, iface.ip),
        )
    return first, last


def _dns(dns: Any) -> bool:
    if dns is None:
        return True
    if not isinstance(dns, bool):
        raise SpecError("dns", "must be true or false, got %r" % (dns,))
    return dns


def _outbound(outbound: Any, bridge: BridgeSpec) -> Optional[str]:
    if outbound is not None:
        validate_ifname("outbound_interface", outbound)
        if outbound == bridge.name:
            raise SpecError(
                "outbound_interface",
                "%s is the network's own bridge; name the interface "
                "that leads out (or leave it unset for any other)" % outbound,
            )
    return outbound
