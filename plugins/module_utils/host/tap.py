# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TAP devices for VM NICs, through pyroute2: made persistent before QEMU starts, attached
to a bridge, and removed after QEMU is gone.

QEMU opens a persistent TAP by name with the same multi-queue flag it was made with, so a
NIC with more than one queue needs a multi-queue TAP (the kernel refuses a mismatch).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError, _netlink


@dataclasses.dataclass(frozen=True)
class TapSpec:
    name: str
    bridge: str
    multi_queue: bool = False
    mtu: Optional[int] = None  # None: the bridge's MTU


def create_tap(spec: TapSpec, netns: Optional[str] = None) -> None:
    """Make the TAP (or take over a leftover of the same name), enslave it, bring it up."""
    with _netlink(netns) as ipr:
        bridge = ipr.link_lookup(ifname=spec.bridge)
        if not bridge:
            raise NetError("bridge %s does not exist%s" % (spec.bridge, _where(netns)))
        bridge_mtu = ipr.get_links(bridge[0])[0].get_attr("IFLA_MTU")
        for leftover in ipr.link_lookup(ifname=spec.name):  # a crashed run's: flags may differ
            ipr.link("del", index=leftover)
        # /dev/net/tun makes the device in the namespace of the thread that opens it.
        with nsutil.entered(netns):
            ipr.link(
                "add",
                ifname=spec.name,
                kind="tuntap",
                mode="tap",
                ifr={"no_pi": True, "vnet_hdr": True, "multi_queue": spec.multi_queue, "one_queue": False},
            )
        index = ipr.link_lookup(ifname=spec.name)[0]
        ipr.link("set", index=index, mtu=spec.mtu or bridge_mtu, master=bridge[0], state="up")


RATE_LATENCY = "50ms"  # how long a frame may wait in the shaper before it is dropped
RATE_HANDLE = 0x10000  # 1: the root qdisc
TC_ROOT = 0xFFFFFFFF


def rate_burst(rate_mbit: int) -> int:
    """tbf's bucket: 10 ms of traffic at the rate, at least 64 KiB (a TSO frame)."""
    return max(65536, rate_mbit * 1000000 // 8 // 100)


def set_rate_limit(name: str, rate_mbit: Optional[int], netns: Optional[str] = None) -> None:
    """Shape what the TAP sends (the guest receives) to ``rate_mbit`` with a tbf root
    qdisc, replaced in place on a change; None removes it (back to the default qdisc). The
    qdisc goes with the TAP."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise NetError("TAP %s does not exist%s" % (name, _where(netns)))
        if rate_mbit is None:
            if rate_limit_of(name, netns) is not None:
                ipr.tc("del", index=found[0], handle=RATE_HANDLE, parent=TC_ROOT)
            return
        ipr.tc(
            "replace",
            "tbf",
            found[0],
            RATE_HANDLE,
            rate="%dmbit" % rate_mbit,
            burst=rate_burst(rate_mbit),
            latency=RATE_LATENCY,
        )


def rate_limit_of(name: str, netns: Optional[str] = None) -> Optional[int]:
    """The rate (bytes per second) of the TAP's tbf root qdisc, or None."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        for qdisc in ipr.get_qdiscs(found[0]):
            if qdisc.get_attr("TCA_KIND") == "tbf" and qdisc["handle"] == RATE_HANDLE:
                return qdisc.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS")["rate"]
        return None


def remove_tap(name: str, netns: Optional[str] = None) -> bool:
    """Delete the TAP if it exists; return whether it did."""
    with _netlink(netns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])
        return bool(found)


def tap_exists(name: str, netns: Optional[str] = None) -> bool:
    with _netlink(netns) as ipr:
        return bool(ipr.link_lookup(ifname=name))


def _where(netns: Optional[str]) -> str:
    return " in network namespace %s" % netns if netns else ""
