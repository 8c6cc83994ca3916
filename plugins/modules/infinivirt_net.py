#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_net
short_description: Manage Infinivirt networks (Linux bridges, NAT) on a hypervisor
version_added: 0.1.0
description:
  - Manages a named network on the host the task runs on, backed by a Linux bridge made
    through netlink (pyroute2), with its MTU, spanning tree and addresses.
  - A bridge that already exists is used and brought in line with the options; O(state=absent)
    removes only a bridge that Infinivirt created, and forgets one it only used.
  - O(mode=nat) makes a private IPv4 network like libvirt's default one. The bridge's single
    address is the gateway; an nftables table of the network's own,
    C(ip infinivirt_nat_<name>), masquerades traffic from the subnet to anything outside it
    and accepts forwarded traffic from the bridge and the replies back to it; IPv4 forwarding
    is turned on; and dnsmasq serves DHCP (and DNS) on the bridge only. All of it lives in
    O(netns) (or the host's namespace).
  - The table's accept rules cannot override a C(drop) in another table's forward chain (in
    nftables a drop in any base chain is final); a host firewall that drops forwarded traffic
    must allow the bridge itself.
  - IPv4 forwarding (C(net.ipv4.ip_forward) of the namespace) is never turned off again, also
    not by O(state=absent), because other networks and software may need it.
  - dnsmasq runs with its whole configuration on its command line (the host's
    C(/etc/dnsmasq.conf) is not read), its pidfile C(net-<name>.dnsmasq.pid) and lease file
    C(net-<name>.dnsmasq.leases) in O(run_dir). A rerun restarts it only when it is not
    running or its configuration changed; a flushed or altered nftables table is rewritten.
  - If a step of making the network fails, what the task had created is removed again and the
    error names the failed step. O(state=absent) stops dnsmasq, removes its files, the
    nftables table and (if Infinivirt made it) the bridge.
author:
  - Infinivirt developers (@infinivirt)
extends_documentation_fragment:
  - infinivirt.core.common
  - infinivirt.core.attributes
  - infinivirt.core.attributes.actiongroup_infinivirt
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the network, also the default bridge name (at most 15 characters).
      - It names the nftables table and the dnsmasq files of a O(mode=nat) network.
      - Networks belong to the host the task runs on; hosts sharing a database each have their
        own network of a name. V(default) and V(all) cannot name an interface, so a network
        called so needs O(bridge).
    type: str
    required: true
  state:
    description: V(present) makes the network match; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - V(bridge), a plain Linux bridge.
      - V(nat), a bridge with a private IPv4 subnet behind masquerading NAT, with DHCP and DNS
        from dnsmasq. It needs C(nft) (nftables) and C(dnsmasq) (Debian package
        C(dnsmasq-base)) on the host.
    type: str
    choices: [bridge, nat]
    default: bridge
  bridge:
    description:
      - Name of the Linux bridge, if not O(name); at most 15 letters, digits, V(.), V(_) or
        V(-), not V(default) or V(all).
    type: str
  mtu:
    description: MTU of the bridge, 68 to 65535; unset leaves the kernel's value.
    type: int
  stp:
    description: Run the spanning tree protocol on the bridge.
    type: bool
    default: false
  addresses:
    description:
      - The bridge's IP addresses with prefix length (V(192.0.2.1/24)); others are removed.
      - With O(mode=nat), exactly one IPv4 address, the gateway of the subnet (like
        V(10.77.0.1/24)), with a prefix length from 8 to 30.
    type: list
    elements: str
    default: []
  netns:
    description:
      - Network namespace to manage the network in; unset is the host's own.
      - It must exist (it is never created), and a network stays in the namespace it was made
        in (remove it to move it).
    type: str
  dhcp:
    description:
      - DHCP service of a O(mode=nat) network; only with O(mode=nat).
      - Unset is the same as an empty dictionary, DHCP on with the defaults below.
    type: dict
    suboptions:
      enabled:
        description: Serve DHCP on the bridge.
        type: bool
        default: true
      range_start:
        description:
          - First address handed out; give both ends of the range or neither.
          - The range must lie inside the subnet and not contain the gateway.
          - Unset, the range runs from the address after the gateway to the last usable one
            (when the gateway is the last usable address, from the first usable one to the
            address before it).
        type: str
      range_end:
        description: Last address handed out; see O(dhcp.range_start).
        type: str
      lease_time:
        description:
          - How long a lease lasts, in seconds (V(3600)) or with a unit V(m), V(h), V(d), V(w)
            (V(30m), V(12h)), at least 2 minutes; or V(infinite).
        type: str
        default: 1h
  dns:
    description:
      - With O(mode=nat), dnsmasq also answers DNS queries on the gateway address (from the
        host's C(/etc/hosts), forwarding the rest to the resolvers of the host's
        C(/etc/resolv.conf)) and DHCP offers it as the DNS server.
      - V(false) turns DNS off (and the DHCP DNS server option with it).
      - Unset is V(true) for O(mode=nat); only with O(mode=nat).
    type: bool
  outbound_interface:
    description:
      - With O(mode=nat), masquerade only traffic that leaves through this interface.
      - Unset masquerades traffic leaving through any interface except the bridge.
    type: str
requirements:
  - pyroute2 (on the managed host)
  - nftables (C(nft)) and dnsmasq (Debian package C(dnsmasq-base)), for O(mode=nat)
"""

EXAMPLES = r"""
- name: A bridge for VMs, with an address on the host side
  infinivirt.core.infinivirt_net:
    name: vmbr0
    mtu: 9000
    addresses:
      - 192.0.2.1/24

- name: A NAT network like libvirt's default one (DHCP from .2 to .254, DNS on the gateway)
  infinivirt.core.infinivirt_net:
    name: natbr0
    mode: nat
    addresses:
      - 10.77.0.1/24

- name: NAT out of eth0 only, a smaller DHCP range with day-long leases, no DNS
  infinivirt.core.infinivirt_net:
    name: natbr1
    mode: nat
    addresses:
      - 10.78.0.1/24
    outbound_interface: eth0
    dns: false
    dhcp:
      range_start: 10.78.0.100
      range_end: 10.78.0.199
      lease_time: 1d

- name: Remove a network (dnsmasq, nftables table and bridge)
  infinivirt.core.infinivirt_net:
    name: natbr0
    state: absent
"""

RETURN = r"""
network:
  description: The network after the task (predicted in check mode).
  returned: always
  type: dict
  contains:
    name:
      description: Network name.
      type: str
    state:
      description: V(present) or V(absent).
      type: str
    mode:
      description: V(bridge) or V(nat).
      type: str
    netns:
      description: The network namespace the network lives in; null for the host's own.
      type: str
    bridge:
      description: Linux bridge name.
      type: str
    mtu:
      description: MTU asked for, or null.
      type: int
    stp:
      description: Spanning tree on or off.
      type: bool
    addresses:
      description: The bridge's addresses.
      type: list
      elements: str
    managed:
      description: Whether Infinivirt created the bridge (and removes it with O(state=absent)).
      type: bool
    nat:
      description: The NAT settings of a O(mode=nat) network, defaults filled in.
      returned: when O(mode=nat)
      type: dict
      contains:
        gateway:
          description: The gateway (the bridge's address), like V(10.77.0.1).
          type: str
        subnet:
          description: The private subnet, like V(10.77.0.0/24).
          type: str
        dhcp:
          description: O(dhcp) with the range and lease time in effect.
          type: dict
        dns:
          description: Whether dnsmasq answers DNS.
          type: bool
        outbound_interface:
          description: The only interface masqueraded traffic leaves through, or null for any.
          type: str
        table:
          description: The network's nftables table (family C(ip)), like V(infinivirt_nat_natbr0).
          type: str
actions:
  description:
    - What was (or would be) done, in order. Bridge - V(create), V(mtu), V(stp), V(addresses),
      V(up), V(remove), V(forget). NAT - V(ip_forward) (forwarding turned on), V(nftables)
      (table written or repaired), V(dnsmasq) (started or restarted), V(dnsmasq-stop),
      V(nftables-remove).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import MODES, NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.validation import PRESENT_ABSENT


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=list(PRESENT_ABSENT)),
            mode=dict(type="str", default="bridge", choices=list(MODES)),
            bridge=dict(type="str"),
            mtu=dict(type="int"),
            stp=dict(type="bool", default=False),
            addresses=dict(type="list", elements="str", default=[]),
            netns=dict(type="str"),
            dhcp=dict(
                type="dict",
                options=dict(
                    enabled=dict(type="bool", default=True),
                    range_start=dict(type="str"),
                    range_end=dict(type="str"),
                    lease_time=dict(type="str", default="1h"),
                ),
            ),
            dns=dict(type="bool"),
            outbound_interface=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    module.run(
        lambda ctx: NetworkService(
            ctx.store, ctx.host_id, params["netns"], run_dir=ctx.run_dir, lock_timeout=ctx.lock_timeout
        ).ensure(params, module.check_mode)
    )


if __name__ == "__main__":
    main()
