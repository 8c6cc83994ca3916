# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Linux bridges, through pyroute2 (netlink): read one, make it match a spec, remove it.

Every function takes ``netns``: None is the host's own network namespace; tests (and users
who keep VMs in a namespace) name another, which must exist (SpecError on field netns).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import check_netns, entered

try:
    from typing import Protocol
except ImportError:  # Python < 3.8: annotations only
    Protocol = object


class BridgeSpec(Protocol):
    """What a bridge should be (network.spec.BridgeSpec is one): the adapter takes any object
    of this shape, so host/ does not import the network package."""

    name: str
    stp: bool
    mtu: Optional[int]
    addresses: Sequence[str]


class NetError(InfinivirtError):
    """The kernel refused a network change."""


@dataclasses.dataclass(frozen=True)
class BridgeState:
    mtu: int
    stp: bool
    addresses: Tuple[str, ...]
    up: bool


def _canonical(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr))


@contextlib.contextmanager
def _netlink(netns: Optional[str]) -> Iterator[Any]:
    """A netlink socket of namespace ``netns``, which must exist: it is opened from inside
    the namespace (pyroute2's own ``IPRoute(netns=...)`` would create a missing one), and
    the block runs back in this thread's own namespace."""
    # Imported here: only a task that touches a bridge or a TAP pays for pyroute2. Through
    # pyroute2.iproute it would cost the same: importing it runs pyroute2/__init__.py first.
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:
        raise NetError("the Python library pyroute2 cannot be imported on this host: %s" % exc) from None
    with entered(check_netns("netns", netns)):
        ipr = IPRoute()
    try:
        with ipr:
            yield ipr
    except NetlinkError as exc:
        raise NetError("netlink refused the change: %s" % (exc.args[1] if len(exc.args) > 1 else exc)) from exc


def read_bridge(name: str, netns: Optional[str] = None) -> Optional[BridgeState]:
    """The bridge as the kernel has it, None if no such interface; NetError if it is not a bridge."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge":
            raise NetError("%s exists and is not a bridge" % name)
        stp = bool(info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_BR_STP_STATE"))
        addresses = tuple(
            sorted(
                _canonical("%s/%d" % (a.get_attr("IFA_ADDRESS"), a["prefixlen"]))
                for a in ipr.get_addr(index=found[0])
                if not (a["family"] == 10 and a.get_attr("IFA_ADDRESS", "").startswith("fe80"))
            )
        )
        return BridgeState(mtu=link.get_attr("IFLA_MTU"), stp=stp, addresses=addresses, up=bool(link["flags"] & 1))


def changes(spec: BridgeSpec, state: Optional[BridgeState]) -> List[str]:
    """What apply_bridge would change: create, mtu, stp, addresses, up."""
    if state is None:
        return ["create"]
    wanted = tuple(sorted(_canonical(a) for a in spec.addresses))
    diff = []
    if spec.mtu is not None and spec.mtu != state.mtu:
        diff.append("mtu")
    if spec.stp != state.stp:
        diff.append("stp")
    if wanted != state.addresses:
        diff.append("addresses")
    if not state.up:
        diff.append("up")
    return diff


def apply_bridge(spec: BridgeSpec, netns: Optional[str] = None) -> None:
    state = read_bridge(spec.name, netns)
    with _netlink(netns) as ipr:
        if state is None:
            ipr.link("add", ifname=spec.name, kind="bridge", br_stp_state=int(spec.stp))
        index = ipr.link_lookup(ifname=spec.name)[0]
        if state is not None and state.stp != spec.stp:
            ipr.link("set", index=index, kind="bridge", br_stp_state=int(spec.stp))
        if spec.mtu is not None:
            ipr.link("set", index=index, mtu=spec.mtu)
        have = set(state.addresses if state else ())
        wanted = {_canonical(a) for a in spec.addresses}
        for cidr in sorted(have - wanted):
            iface = ipaddress.ip_interface(cidr)
            ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        for cidr in sorted(wanted - have):
            iface = ipaddress.ip_interface(cidr)
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        ipr.link("set", index=index, state="up")


def remove_bridge(name: str, netns: Optional[str] = None) -> None:
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])
