#!/usr/bin/python
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: infinivirt_firewall
short_description: Manage firewall rules of Infinivirt VMs and departments
version_added: 0.1.0
description:
  - Manages the firewall rule set of a department (O(scope=department)) or of one VM
    (O(scope=vm)). A VM belongs to at most one department, named by the C(department) option
    of M(infinivirt.core.infinivirt_vm); its traffic must pass the department's rules and
    then its own.
  - Rules are stored in the state database, with the source of each (host, O(job_id), user and
    time of the task that set it). A VM's rules are in the kernel only while it runs, in the
    network namespace of its TAP devices, as nftables chains in table C(bridge infinivirt)
    that filter frames on the Linux bridge; they go with the VM when it stops or is removed,
    and the table goes with the last VM.
  - Each change is one atomic nftables transaction (JSON through C(nft -j -f -)); a rerun with
    nothing to change changes nothing. A rerun also puts back what was changed by hand in
    nftables, for a VM everything its filtering needs, for a department its own chains.
  - A change to a running VM applies at once; for a stopped VM it is stored and applied when it
    starts. A department change is applied to the running VMs of the department on the host
    the task runs on (run it on every hypervisor that runs members).
  - Within a chain, V(accept) means the scope lets the packet through (the next scope
    decides), V(drop) is final, and the policy applies to what no rule matched. Traffic
    between two VMs passes the sender's rules (direction V(out)) and the receiver's
    (direction V(in)).
  - Replies are allowed without conntrack, which the bridge family needs
    C(nf_conntrack_bridge) for. An accepted rule also accepts, the other way, TCP segments
    with ACK from the same ports, UDP datagrams from the same ports and ICMP echo replies,
    to or from the same CIDR.
  - ARP, IPv6 neighbour and router discovery, DHCP and DHCPv6 client exchanges and ICMP
    errors always pass (after anti-spoofing).
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
  scope:
    description:
      - V(department) for the rules of a department, shared by its VMs; V(vm) for the rules
        of one VM.
    type: str
    choices: [department, vm]
    required: true
  name:
    description:
      - The department name (1 to 32 letters, digits, V(.), V(_) or V(-)) with
        O(scope=department), a VM known to Infinivirt with O(scope=vm).
      - A department needs no other definition; VMs join it through their C(department) option.
    type: str
    required: true
  state:
    description: V(present) sets the rule set; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  rules:
    description:
      - The rules, in order; the first that matches decides for its scope. The list replaces the
        stored one.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: An identifier for the rule, unique in the list (letters, digits, V(.), V(_), V(-)).
        type: str
      direction:
        description: V(in) for traffic to the VM, V(out) for traffic from it.
        type: str
        choices: [in, out]
        required: true
      protocol:
        description: V(icmp) is ICMP over IPv4, V(icmpv6) over IPv6; V(any) matches every frame.
        type: str
        choices: [tcp, udp, icmp, icmpv6, any]
        default: any
      ports:
        description:
          - Destination ports (the VM's for V(in), the remote one's for V(out)), each a number or
            a range such as V(8000-8080). Only with V(tcp) and V(udp); empty means all.
        type: list
        elements: str
        default: []
      cidr:
        description:
          - The remote side, an IPv4 or IPv6 network such as V(192.0.2.0/24) (host bits unset)
            or a single address; the source for V(in), the destination for V(out). Unset is any.
        type: str
      action:
        description:
          - What to do with a match. V(reject) needs a kernel with C(CONFIG_NFT_BRIDGE_REJECT)
            and fails clearly on others.
        type: str
        choices: [accept, drop, reject]
        default: accept
      comment:
        description:
          - A note kept with the rule and shown in C(nft list ruleset); at most 64 bytes,
            without quotes, semicolons, braces, V(#), backslashes or control characters.
        type: str
  policy_in:
    description: What happens to traffic to the VM that no rule of this scope matched.
    type: str
    choices: [accept, drop]
    default: accept
  policy_out:
    description: What happens to traffic from the VM that no rule of this scope matched.
    type: str
    choices: [accept, drop]
    default: accept
  anti_spoofing:
    description:
      - With O(scope=vm), drop frames from the VM with a source MAC other than its NIC's; when
        the NIC has C(ips), also IPv4 and IPv6 packets (and ARP) from other addresses, and
        frames that are not IPv4, IPv6 or ARP. DHCP requests from 0.0.0.0, IPv6 link-local
        addresses and the unspecified address stay allowed.
      - Unset is V(true) with O(scope=vm); not allowed with O(scope=department).
    type: bool
notes:
  - A VM with neither VM rules nor a department is not filtered at all.
  - Needs the C(nft) command (Debian package C(nftables)) on the managed host.
"""

EXAMPLES = r"""
- name: Department web allows only HTTP(S) and ICMP in
  infinivirt.core.infinivirt_firewall:
    scope: department
    name: web
    policy_in: drop
    rules:
      - name: http
        direction: in
        protocol: tcp
        ports: [80, 443]
      - direction: in
        protocol: icmp

- name: The VM web01 also takes SSH from the admin network, and may not send mail
  infinivirt.core.infinivirt_firewall:
    scope: vm
    name: web01
    rules:
      - direction: in
        protocol: tcp
        ports: [22]
        cidr: 192.0.2.0/24
        comment: admins
      - direction: out
        protocol: tcp
        ports: [25, "587-588"]
        action: drop

- name: Remove the rules of VM web01 (its department's still apply)
  infinivirt.core.infinivirt_firewall:
    scope: vm
    name: web01
    state: absent
"""

RETURN = r"""
firewall:
  description: The rule set after the task (predicted in check mode).
  returned: always
  type: dict
  contains:
    scope:
      description: V(department) or V(vm).
      type: str
    name:
      description: Department or VM name.
      type: str
    state:
      description: V(present) or V(absent).
      type: str
    policy_in:
      description: Default policy for traffic to the VM.
      type: str
      returned: when present
    policy_out:
      description: Default policy for traffic from the VM.
      type: str
      returned: when present
    anti_spoofing:
      description: Whether anti-spoofing is on (always false for a department).
      type: bool
      returned: when present
    rules:
      description:
        - The rules as in O(rules), normalized (ports as strings, networks with their prefix
          length), each with its RV(firewall.rules[].source).
      type: list
      elements: dict
      returned: when present
      contains:
        source:
          description: The task that set the rule.
          type: dict
          contains:
            host:
              description: O(host_id) of the host the task ran on.
              type: str
            job_id:
              description: O(job_id) of the task, or null.
              type: str
            user:
              description: User the task ran as, or null.
              type: str
            time:
              description: When the task set the rule (UTC, ISO 8601).
              type: str
kernel_changes:
  description:
    - What was (or would be) changed in nftables, one sentence per transaction, e.g.
      V(VM web01 in network namespace tenant1).
  returned: always
  type: list
  elements: str
rules_applied:
  description: How many nftables rules the transactions wrote (or would write).
  returned: always
  type: int
"""

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import InfinivirtModule
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.rules import (
    ACTIONS,
    DIRECTIONS,
    POLICIES,
    PROTOCOLS,
    SCOPES,
)
from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService
from ansible_collections.infinivirt.core.plugins.module_utils.validation import PRESENT_ABSENT
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.records import firewall_directory


def main() -> None:
    module = InfinivirtModule(
        argument_spec=dict(
            scope=dict(type="str", required=True, choices=list(SCOPES)),
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=list(PRESENT_ABSENT)),
            rules=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str"),
                    direction=dict(type="str", required=True, choices=list(DIRECTIONS)),
                    protocol=dict(type="str", default="any", choices=list(PROTOCOLS)),
                    ports=dict(type="list", elements="str", default=[]),
                    cidr=dict(type="str"),
                    action=dict(type="str", default="accept", choices=list(ACTIONS)),
                    comment=dict(type="str"),
                ),
            ),
            policy_in=dict(type="str", default="accept", choices=list(POLICIES)),
            policy_out=dict(type="str", default="accept", choices=list(POLICIES)),
            anti_spoofing=dict(type="bool"),
        ),
        supports_check_mode=True,
    )

    module.run(
        lambda ctx: FirewallService(ctx.store, ctx.host_id, firewall_directory(ctx.store), ctx.lock_timeout).ensure(
            module.params, module.check_mode
        )
    )


if __name__ == "__main__":
    main()
