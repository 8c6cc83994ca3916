# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: infinivirt
short_description: Infinivirt VMs of every host, from the Infinivirt database
version_added: 0.1.0
description:
  - Lists the VMs in the Infinivirt database (O(db_url)), of every hypervisor that shares it
    or of those in O(host_ids), stopped VMs included (O(include_stopped)), in one query.
  - Reads the database directly from the controller; no hypervisor is contacted. The VM state
    is what its hypervisor last recorded.
  - The inventory source is a file whose name ends in C(.infinivirt.yml) or C(.infinivirt.yaml).
  - Each VM is a host named after the VM, with the variables C(infinivirt_uuid),
    C(infinivirt_host_id), C(infinivirt_status), C(infinivirt_vcpus), C(infinivirt_memory_mb),
    C(infinivirt_department), C(infinivirt_tags), C(infinivirt_labels), C(infinivirt_nics) (each
    with C(mac), C(network), C(bridge), C(ips) as configured and C(lease_ips)),
    C(infinivirt_ips) (the addresses the guest agent last reported, else the DHCP leases) and
    C(infinivirt_guest_ips_seen_at) (when the agent reported them).
  - "Groups: C(infinivirt_host_<host_id>), C(infinivirt_status_<status>), C(infinivirt_tag_<tag>)
    for each tag, and C(infinivirt_department_<department>) for the VM's firewall department (the
    C(department) option of M(infinivirt.core.infinivirt_vm)). Characters other than letters,
    digits and C(_) in a group name become C(_). Group by a label with O(keyed_groups), for
    example C(key: infinivirt_labels.team)."
  - Guest addresses come from two places. The QEMU guest agent can only be asked on the hypervisor
    that runs the VM, so M(infinivirt.core.infinivirt_vm) and M(infinivirt.core.infinivirt_vm_info)
    record the addresses an answering agent reports in the database, and this plugin reads them
    (V(agent)). The leases of an M(infinivirt.core.infinivirt_net) NAT network are in a file of
    dnsmasq's on the hypervisor, so they are known (V(leases)) only when the controller is that
    hypervisor.
author:
  - Infinivirt developers (@infinivirt)
requirements:
  - psycopg2 on the controller, for a PostgreSQL O(db_url)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it makes the file an Infinivirt inventory source.
    type: str
    required: true
    choices: [infinivirt.core.infinivirt]
  db_url:
    description:
      - The Infinivirt database, as the modules' C(db_url) names it - V(sqlite:////path/to.db) (or
        just the absolute path of the file), or V(postgresql://user@host:port/database).
      - An SQLite file must exist; it is not created.
    type: str
    default: sqlite:////var/lib/infinivirt/infinivirt.db
    env:
      - name: INFINIVIRT_DB_URL
  db_password:
    description:
      - The PostgreSQL password, when it is not in O(db_url). A vaulted value works.
      - Never written in a message, the cache or the inventory.
    type: str
    env:
      - name: INFINIVIRT_DB_PASSWORD
  host_ids:
    description:
      - List only the VMs of these hypervisors (their C(host_id)). Empty, every host's.
    type: list
    elements: str
    default: []
  include_stopped:
    description:
      - Also list VMs that are stopped, or crashed, as last recorded.
    type: bool
    default: true
  ansible_host_source:
    description:
      - Where C(ansible_host) comes from, tried in this order until one gives an address.
      - V(agent), the addresses the guest agent last reported (recorded by the modules); V(leases),
        the DHCP leases of NAT networks (only when the controller is the VM's hypervisor);
        V(label:<key>), the value of the VM's label C(<key>); V(none), no C(ansible_host) (the
        VM name is used).
      - Without an address, no C(ansible_host) is set.
    type: list
    elements: str
    default: [agent, leases]
  preferred_network:
    description:
      - Among the addresses of one source, those of the NIC on this network (the NIC's C(network),
        or its C(bridge)) come first.
    type: str
  preferred_cidr:
    description:
      - Among the addresses of one source, those inside this CIDR come first (before
        O(preferred_network)'s).
    type: str
"""

EXAMPLES = r"""
# fleet.infinivirt.yml: every VM of a shared PostgreSQL database, grouped by label
plugin: infinivirt.core.infinivirt
db_url: postgresql://infinivirt@db.example.com/infinivirt
# the password from the environment variable INFINIVIRT_DB_PASSWORD
include_stopped: false
ansible_host_source: [agent, leases, "label:ip"]
preferred_cidr: 10.77.0.0/24
keyed_groups:
  - key: infinivirt_labels.team
    prefix: team
    default_value: none
groups:
  big: infinivirt_memory_mb >= 4096
compose:
  ansible_user: "'debian'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/tmp/infinivirt-inventory
cache_timeout: 300
"""

import re  # noqa: E402

from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402

NAME = "infinivirt.core.infinivirt"
_SUFFIXES = (".infinivirt.yml", ".infinivirt.yaml")
# Keys of an inventory source besides the options (the base class's own).
_ALWAYS_KNOWN = ("plugin",)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = NAME

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        unknown = sorted(str(k) for k in config if k not in self._options and k not in _ALWAYS_KNOWN)
        if unknown:  # ansible-core would ignore it: a typo would silently change nothing
            raise AnsibleParserError(
                "%s inventory: unknown option %s in %s (known: %s)"
                % (NAME, ", ".join(unknown), path, ", ".join(sorted(self._options)))
            )
        key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        fleet = None
        if use_cache and cache:
            try:
                fleet = self._cache[key]  # a hit asks no database
            except KeyError:
                fleet = None
        if fleet is None:
            fleet = self._query()
            if use_cache:
                self._cache[key] = fleet
        self._populate(fleet)

    def _query(self):
        from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
        from ansible_collections.infinivirt.core.plugins.plugin_utils.inventory import check_schema, read_fleet

        password = self.get_option("db_password")
        password = str(password) if password else None  # a vaulted value decrypts here
        try:
            store = self._open(password)
            try:
                check_schema(store)
                return read_fleet(store, self.get_option("host_ids") or (), self.get_option("include_stopped"))
            finally:
                store.close()
        except InfinivirtError as exc:
            raise AnsibleParserError(_scrub("%s inventory: %s" % (NAME, exc), password)) from None
        except ImportError as exc:
            raise AnsibleParserError("%s inventory: db_url: %s" % (NAME, exc)) from None

    def _open(self, password):
        import os

        from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
        from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store

        url = self.get_option("db_url")
        if url.startswith("/"):
            url = "sqlite:///" + url
        if url.startswith("sqlite:///") and not os.path.isfile(url[len("sqlite:///") :]):
            # open_store would make a new, empty database: an empty inventory hides the typo.
            raise SpecError("db_url", "no Infinivirt database at %s" % url[len("sqlite:///") :])
        return open_store(url, password=password, read_only=True)

    def _populate(self, fleet):
        from ansible_collections.infinivirt.core.plugins.plugin_utils.inventory import (
            check_sources,
            default_groups,
            host_vars,
            pick_ansible_host,
        )

        try:
            sources = check_sources(self.get_option("ansible_host_source"))
            cidr = self.get_option("preferred_cidr")
            if cidr:
                import ipaddress

                ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise AnsibleParserError("%s inventory: %s" % (NAME, _option_message(exc, "preferred_cidr"))) from None
        strict = self.get_option("strict")
        for vm in fleet:
            name = self.inventory.add_host(vm["name"])
            variables = host_vars(vm)
            address = pick_ansible_host(vm, sources, self.get_option("preferred_network"), cidr)
            if address:
                variables["ansible_host"] = address
            for key, value in variables.items():
                self.inventory.set_variable(name, key, value)
            for group in default_groups(vm):
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)


def _option_message(exc, option):
    text = str(exc)
    return text if text.startswith("ansible_host_source") else "%s: %s" % (option, text)


def _scrub(text, password):
    """No password in a message, whatever the database library put in it."""
    if password:
        text = text.replace(password, "********")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1********@", text)
