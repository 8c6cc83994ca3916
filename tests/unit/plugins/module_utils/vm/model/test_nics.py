# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""NIC specs: stable generated MACs, validation, queue defaults and live-change planning."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import ns_ref, parse_ns_ref
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import (
    NicSpec,
    derived_mac,
    device,
    merge_nics,
    netdev,
    plan_nic_hotplug,
    queue_count,
    use_vhost,
    validate_mac,
    validate_nics,
)


def test_a_generated_mac_is_the_same_in_check_mode_and_for_a_vm_made_again():
    assert merge_nics([{"bridge": "br0"}], (), seed="web01") == merge_nics([{"bridge": "br0"}], (), seed="web01")
    assert merge_nics([{"bridge": "br0"}], (), seed="web01") != merge_nics([{"bridge": "br0"}], (), seed="web02")


def test_a_generated_mac_is_kept_by_the_nic_at_the_same_position():
    first = merge_nics([{"bridge": "br0"}, {"bridge": "br1"}], ())
    macs = [n.mac for n in first]
    assert all(m.startswith("52:54:00:") for m in macs) and len(set(macs)) == 2
    again = merge_nics([{"bridge": "br0"}, {"bridge": "br1"}], first)
    assert again == first
    # A third NIC gets a new MAC that none of the others (nor other VMs') has.
    more = merge_nics([{"bridge": "br0"}, {"bridge": "br1"}, {"bridge": "br0"}], first, taken_macs=macs)
    assert more[:2] == first and more[2].mac not in macs


def test_a_stored_mac_now_given_to_another_nic_is_not_reused():
    stored = merge_nics([{"bridge": "br0"}], ())
    nics = merge_nics([{"bridge": "br0"}, {"bridge": "br1", "mac": stored[0].mac.upper()}], stored)
    assert nics[1].mac == stored[0].mac and nics[0].mac != stored[0].mac


def test_generated_macs_avoid_taken_ones():
    taken = [derived_mac("vm", 0, attempt) for attempt in range(5)]
    mac = merge_nics([{"bridge": "br0"}], (), taken, seed="vm")[0].mac
    assert mac == derived_mac("vm", 0, 5)


@pytest.mark.parametrize(
    "mac, reason",
    [
        ("01:00:5e:00:00:01", "multicast"),
        ("ff:ff:ff:ff:ff:ff", "multicast"),
        ("00:00:00:00:00:00", "all-zero"),
        ("52:54:00:00:00", "not a MAC"),
        ("52-54-00-00-00-01", "not a MAC"),
        (42, "not a MAC"),
    ],
)
def test_bad_macs(mac, reason):
    with pytest.raises(SpecError, match=reason) as err:
        validate_mac("nics[0].mac", mac)
    assert err.value.field == "nics[0].mac"


def test_validation_names_the_field():
    good = NicSpec(bridge="br0", mac="52:54:00:00:00:01")
    validate_nics([good])
    with pytest.raises(SpecError) as err:
        validate_nics([good, NicSpec(bridge="br0", mac="52:54:00:00:00:01")])
    assert err.value.field == "nics[1].mac"
    with pytest.raises(SpecError) as err:
        validate_nics([good, NicSpec(bridge="br0", mac="52:54:00:00:00:02", tap="iv525400000001")])
    assert err.value.field == "nics[1].tap"
    with pytest.raises(SpecError) as err:
        validate_nics([NicSpec(bridge="br0", network="net", mac="52:54:00:00:00:03")])
    assert err.value.field == "nics[0]"
    with pytest.raises(SpecError) as err:
        validate_nics([NicSpec(bridge="br0", model="rtl8139", vhost=True, mac="52:54:00:00:00:03")])
    assert err.value.field == "nics[0].vhost"


def test_queues_default_to_vcpus_for_virtio_only():
    virtio = NicSpec(bridge="br0", mac="52:54:00:00:00:01")
    assert [queue_count(virtio, v) for v in (1, 2, 4, 16)] == [1, 2, 4, 8]
    assert queue_count(NicSpec(bridge="br0", model="e1000", mac="52:54:00:00:00:02"), 4) == 1
    assert queue_count(NicSpec(bridge="br0", queues=3, mac="52:54:00:00:00:03"), 1) == 3
    dev = device(virtio, 4, "rp2")
    assert (dev["mq"], dev["vectors"], dev["bus"]) == (True, 10, "rp2")
    assert "mq" not in device(virtio, 1, None) and "bus" not in device(virtio, 1, None)
    assert netdev(virtio, 4, True)["queues"] == 4 and "queues" not in netdev(virtio, 1, True)


def test_vhost_is_used_where_the_host_has_it_unless_asked_otherwise():
    nic = NicSpec(bridge="br0", mac="52:54:00:00:00:01")
    assert use_vhost(nic, True) and not use_vhost(nic, False)
    assert not use_vhost(NicSpec(bridge="br0", mac="52:54:00:00:00:01", vhost=False), True)
    assert not use_vhost(NicSpec(bridge="br0", mac="52:54:00:00:00:01", model="e1000"), True)


def test_hotplug_plan():
    a = NicSpec(bridge="br0", mac="52:54:00:00:00:01")
    b = NicSpec(bridge="br0", mac="52:54:00:00:00:02")
    e1000 = NicSpec(bridge="br0", mac="52:54:00:00:00:03", model="e1000")
    plan = plan_nic_hotplug([a], [a, b])
    assert (plan.add, plan.remove, plan.live) == ((b,), (), True)
    assert plan_nic_hotplug([a, b], [b]).remove == (a,)
    assert not plan_nic_hotplug([a], [a, e1000]).live, "emulated cards are not hot-plugged"
    assert not plan_nic_hotplug([a], [NicSpec(bridge="br1", mac=a.mac)]).live, "a changed NIC needs a restart"


def test_ns_refs_keep_the_namespace():
    assert parse_ns_ref(ns_ref("ns1", "iv1")) == ("ns1", "iv1")
    assert parse_ns_ref(ns_ref(None, "iv1")) == (None, "iv1")
