#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_net
short_description: Manage Infinivirt networks (Linux bridges) on a hypervisor
version_added: 0.1.0
description:
  - Manages a named network on the host the task runs on, backed by a Linux bridge made
    through netlink (pyroute2), with its MTU, spanning tree and addresses.
  - A bridge that already exists is used and brought in line with the options; O(state=absent)
    removes only a bridge that Infinivirt created, and forgets one it only used.
  - Only O(mode=bridge) exists so far.
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
    description: Name of the network, also the default bridge name (at most 15 characters).
    type: str
    required: true
  state:
    description: V(present) makes the bridge match; V(absent) removes the network.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description: V(bridge), a plain Linux bridge.
    type: str
    choices: [bridge]
    default: bridge
  bridge:
    description: Name of the Linux bridge, if not O(name); at most 15 letters, digits, V(.), V(_) or V(-).
    type: str
  mtu:
    description: MTU of the bridge, 68 to 65535; unset leaves the kernel's value.
    type: int
  stp:
    description: Run the spanning tree protocol on the bridge.
    type: bool
    default: false
  addresses:
    description: The bridge's IP addresses with prefix length (V(192.0.2.1/24)); others are removed.
    type: list
    elements: str
    default: []
  netns:
    description: Network namespace to manage the bridge in; unset is the host's own.
    type: str
requirements:
  - pyroute2 (on the managed host)
"""

EXAMPLES = r"""
- name: A bridge for VMs, with an address on the host side
  infinivirt.core.infinivirt_net:
    name: vmbr0
    mtu: 9000
    addresses:
      - 192.0.2.1/24
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
actions:
  description: What was (or would be) done to the bridge, e.g. V(create), V(mtu), V(addresses), V(up), V(remove).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.network_service import NetworkService


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            mode=dict(type="str", default="bridge", choices=["bridge"]),
            bridge=dict(type="str"),
            mtu=dict(type="int"),
            stp=dict(type="bool", default=False),
            addresses=dict(type="list", elements="str", default=[]),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )

    def ensure(service):
        result = NetworkService(service.store, service.hostname, module.params["netns"]).ensure(
            module.params, module.module.check_mode)
        if not module.module._diff:
            result.pop("diff")
        return result

    module.run(ensure)


if __name__ == "__main__":
    main()
