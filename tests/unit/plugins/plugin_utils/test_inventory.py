# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The inventory plugin's pure parts (plugins/plugin_utils/inventory.py): dnsmasq lease files,
which address becomes ansible_host, group names."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.plugin_utils.inventory import (
    check_sources,
    default_groups,
    leases_of,
    pick_ansible_host,
)

pytestmark = pytest.mark.ansible_core  # plugin_utils: the controller side, under each supported core

MAC_A, MAC_B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"


def _vm(**over):
    vm = {
        "name": "v",
        "host_id": "hv-a.example",
        "status": "running",
        "department": None,
        "tags": [],
        "labels": {},
        "nics": [
            {"mac": MAC_A, "network": "default", "bridge": None, "ips": [], "lease_ips": ["10.77.0.20"]},
            {"mac": MAC_B, "network": None, "bridge": "br-lan", "ips": [], "lease_ips": []},
        ],
        "guest_interfaces": [
            {"name": "eth0", "mac": MAC_A, "ips": ["10.77.0.21", "fd00::21"]},
            {"name": "eth1", "mac": MAC_B, "ips": ["192.168.5.9"]},
        ],
        "guest_ips": ["10.77.0.21", "192.168.5.9", "fd00::21"],
    }
    vm.update(over)
    return vm


def test_leases_of_a_mac_unexpired_and_its_last_line(tmp_path):
    # dnsmasq keeps one lease per MAC; a MAC listed twice keeps its last line.
    path = tmp_path / "net-default.dnsmasq.leases"
    path.write_text(
        "2000 %s 10.77.0.5 old *\n"
        "3000 %s 10.77.0.6 new 01:52\n"
        "1000 %s 10.77.0.4 gone *\n"
        "0 %s 10.77.0.7 forever *\n"
        "garbage line\n" % (MAC_A, MAC_A.upper(), MAC_B, "52:54:00:00:00:0c")
    )
    assert leases_of(str(path), MAC_A, now=1500) == ["10.77.0.6"]
    assert leases_of(str(path), MAC_A, now=3500) == []  # expired
    assert leases_of(str(path), MAC_B, now=1500) == []  # expired
    assert leases_of(str(path), "52:54:00:00:00:0c", now=10**10) == ["10.77.0.7"]  # 0: infinite
    assert leases_of(str(tmp_path / "missing"), MAC_A) == []


def test_sources_are_tried_in_order():
    vm = _vm(labels={"ip": "203.0.113.4"})
    assert pick_ansible_host(vm, ["agent"]) == "10.77.0.21"  # IPv4 first, in reported order
    assert pick_ansible_host(vm, ["leases", "agent"]) == "10.77.0.20"
    assert pick_ansible_host(vm, ["label:ip"]) == "203.0.113.4"
    assert pick_ansible_host(vm, ["label:missing", "leases"]) == "10.77.0.20"
    assert pick_ansible_host(vm, ["none", "agent"]) is None
    quiet = _vm(guest_interfaces=[], guest_ips=[])
    assert pick_ansible_host(quiet, ["agent", "leases"]) == "10.77.0.20"
    assert pick_ansible_host(_vm(guest_interfaces=[], guest_ips=[], nics=[]), ["agent", "leases"]) is None


def test_a_preferred_network_or_cidr_comes_first():
    vm = _vm()
    assert pick_ansible_host(vm, ["agent"], network="br-lan") == "192.168.5.9"
    assert pick_ansible_host(vm, ["agent"], cidr="192.168.0.0/16") == "192.168.5.9"
    assert pick_ansible_host(vm, ["agent"], cidr="fd00::/64") == "fd00::21"
    assert pick_ansible_host(vm, ["agent"], cidr="198.51.100.0/24") == "10.77.0.21", "a preference, not a filter"


def test_default_groups_are_safe_names():
    vm = _vm(status="stopped", department="sales.eu", tags=["web", "prod-1"])
    assert default_groups(vm) == [
        "infinivirt_host_hv_a_example",
        "infinivirt_status_stopped",
        "infinivirt_department_sales_eu",
        "infinivirt_tag_web",
        "infinivirt_tag_prod_1",
    ]


@pytest.mark.parametrize("sources", [["dhcp"], ["agent", "label:"], ["Agent"]])
def test_unknown_sources_are_named(sources):
    with pytest.raises(ValueError) as err:
        check_sources(sources)
    assert "ansible_host_source[%d]" % (len(sources) - 1) in str(err.value)
