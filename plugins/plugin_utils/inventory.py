# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of the inventory plugin (plugins/inventory/infinivirt.py): read the fleet
from the store, and turn each VM into host variables, groups and an ``ansible_host``.

``read_fleet`` is the one place that reads (the store, and the dnsmasq lease files of NAT
networks when the controller is their hypervisor); what it returns is plain JSON, which the
inventory cache keeps. Everything after it is pure.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.host.dnsmasq import leasefile_of, read_leases
from ansible_collections.infinivirt.core.plugins.module_utils.network.plan import J_DNSMASQ

PREFIX = "infinivirt_"
SOURCES = ("agent", "leases", "none")  # and label:<key>
STOPPED_STATES = ("stopped", "crashed")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def safe_group(*parts: str) -> str:
    """A group name Ansible accepts without warnings: letters, digits and '_'."""
    return _UNSAFE.sub("_", "_".join(parts))


def check_sources(sources: Sequence[str]) -> List[str]:
    """The ansible_host_source list, each agent, leases, none or label:<key>; ValueError
    says which one is wrong."""
    for index, source in enumerate(sources):
        if source in SOURCES or (source.startswith("label:") and len(source) > len("label:")):
            continue
        raise ValueError("ansible_host_source[%d]: %r must be agent, leases, label:<key> or none" % (index, source))
    return list(sources)


# -- reading (store and lease files) ------------------------------------------------------------
def check_schema(store) -> None:
    """The store (opened read-only) has the schema this code reads; SpecError naming db_url."""
    from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StoreError
    from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import LATEST

    try:
        version = store.schema_version()
    except StoreError as exc:
        raise SpecError("db_url", "%s is not an Infinivirt database: %s" % (store.describe(), exc)) from None
    if version < LATEST:
        raise SpecError(
            "db_url",
            "the schema of %s is at version %d, this collection reads version %d: run an Infinivirt "
            "task (any module) against it first, which migrates it" % (store.describe(), version, LATEST),
        )


def read_fleet(store, host_ids: Sequence[str] = (), include_stopped: bool = True) -> List[Dict[str, Any]]:
    """Every VM of the store (of ``host_ids`` only, when given) as plain data: the row's
    definition, the addresses its guest agent last reported, and its NICs' DHCP leases."""
    addresses = store.guest_addresses()
    leasefiles: Dict[str, Optional[str]] = {}
    fleet = []
    for row in store.list_vms():
        if host_ids and row.host not in host_ids:
            continue
        if not include_stopped and row.status in STOPPED_STATES:
            continue
        nics = [_nic(nic) for nic in row.spec.get("nics") or ()]
        for nic in nics:
            if nic["network"]:
                nic["lease_ips"] = _lease_ips(store, leasefiles, row.host, nic["network"], nic["mac"])
        seen = addresses.get(row.uuid) or {}
        fleet.append(
            {
                "name": row.name,
                "uuid": row.uuid,
                "host_id": row.host,
                "status": row.status,
                "vcpus": row.spec.get("vcpus"),
                "memory_mb": row.spec.get("memory_mb"),
                "department": row.spec.get("department"),
                "tags": list(row.spec.get("tags") or ()),
                "labels": dict(row.spec.get("labels") or {}),
                "nics": nics,
                "guest_interfaces": seen.get("interfaces") or [],
                "guest_ips": seen.get("ips") or [],
                "guest_seen_at": seen.get("seen_at"),
            }
        )
    return fleet


def _nic(nic: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "mac": (nic.get("mac") or "").lower(),
        "network": nic.get("network"),
        "bridge": nic.get("bridge"),
        "ips": list(nic.get("ips") or ()),
        "lease_ips": [],
    }


def _lease_ips(store, files: Dict[str, Optional[str]], host: str, network: str, mac: str) -> List[str]:
    key = "%s/%s" % (host, network)
    if key not in files:
        files[key] = _leasefile(store, host, network)
    path = files[key]
    return leases_of(path, mac) if path else []


def _leasefile(store, host: str, network: str) -> Optional[str]:
    """The lease file of a NAT network's dnsmasq (beside the pidfile its journal names), if
    this machine has it: only on the network's hypervisor."""
    for kind, ref in store.journal_list("network:%s:%s" % (host, network)):
        if kind == J_DNSMASQ:
            path = leasefile_of(ref.split("/", 1)[1] if "/" in ref else ref)
            if os.path.isfile(path):
                return path
    return None


def leases_of(path: str, mac: str, now: Optional[float] = None) -> List[str]:
    """The address dnsmasq leased to ``mac``, if its lease has not expired (expiry 0 is
    infinite): host/dnsmasq.py reads the file as the readiness wait does."""
    lease = read_leases(path).get(mac.lower())
    if lease is None:
        return []
    address, expiry = lease
    now = time.time() if now is None else now
    return [address] if int(expiry) == 0 or int(expiry) > now else []


# -- pure: host variables, groups, ansible_host ---------------------------------------------
def host_vars(vm: Dict[str, Any]) -> Dict[str, Any]:
    """The VM's variables, each under PREFIX."""
    ips = list(vm["guest_ips"]) or [ip for nic in vm["nics"] for ip in nic["lease_ips"]]
    return {
        PREFIX + "uuid": vm["uuid"],
        PREFIX + "host_id": vm["host_id"],
        PREFIX + "status": vm["status"],
        PREFIX + "vcpus": vm["vcpus"],
        PREFIX + "memory_mb": vm["memory_mb"],
        PREFIX + "department": vm["department"],
        PREFIX + "tags": vm["tags"],
        PREFIX + "labels": vm["labels"],
        PREFIX + "nics": vm["nics"],
        PREFIX + "ips": ips,
        PREFIX + "guest_ips_seen_at": vm["guest_seen_at"],
    }


def default_groups(vm: Dict[str, Any]) -> List[str]:
    """infinivirt_host_<id>, infinivirt_status_<status>, infinivirt_department_<department>
    and infinivirt_tag_<tag> of each tag."""
    groups = [safe_group(PREFIX + "host", vm["host_id"]), safe_group(PREFIX + "status", vm["status"])]
    if vm["department"]:
        groups.append(safe_group(PREFIX + "department", vm["department"]))
    groups += [safe_group(PREFIX + "tag", tag) for tag in vm["tags"]]
    return groups


def pick_ansible_host(
    vm: Dict[str, Any], sources: Sequence[str], network: Optional[str] = None, cidr: Optional[str] = None
) -> Optional[str]:
    """The first address the sources (in order) give; among one source's addresses, those of
    ``network`` (a NIC's network or bridge) and inside ``cidr`` come first, then IPv4."""
    for source in sources:
        if source == "none":
            return None
        if source.startswith("label:"):
            value = vm["labels"].get(source[len("label:") :])
            if value:
                return value
            continue
        found = _candidates(vm, source)
        if found:
            return sorted(found, key=lambda item: _rank(item, vm["nics"], network, cidr))[0][1]
    return None


def _candidates(vm: Dict[str, Any], source: str) -> List[tuple]:
    """(mac, ip) pairs a source knows; the agent's in the order it reported them."""
    if source == "agent":
        pairs = [(i.get("mac"), ip) for i in vm["guest_interfaces"] for ip in i.get("ips") or ()]
        return [(mac, ip) for mac, ip in pairs if ip in vm["guest_ips"]]
    return [(nic["mac"], ip) for nic in vm["nics"] for ip in nic["lease_ips"]]


def _rank(item: tuple, nics: Iterable[Dict[str, Any]], network: Optional[str], cidr: Optional[str]) -> tuple:
    mac, ip = item
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    on_network = network is None or any(
        nic["mac"] == mac and network in (nic["network"], nic["bridge"]) for nic in nics
    )
    in_cidr = cidr is None or address in ipaddress.ip_network(cidr, strict=False)
    return (not in_cidr, not on_network, address.version)
