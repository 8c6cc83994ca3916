# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``guest`` entry built from the guest agent's replies, and when the agent is asked."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import (
    DISABLED,
    NOT_ANSWERING,
    entry_from,
    freeze_count,
    guest_entry,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

# What qemu-ga 7.2 (Debian 12) answers to guest-network-get-interfaces, trimmed.
INTERFACES = [
    {
        "name": "lo",
        "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
            {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
        ],
    },
    {
        "name": "enp1s0",
        "hardware-address": "52:54:00:AB:CD:01",
        "ip-addresses": [
            {"ip-address-type": "ipv6", "ip-address": "fd00::5", "prefix": 64},
            {"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:feab:cd01", "prefix": 64},
            {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24},
        ],
        "statistics": {"rx-bytes": 1},
    },
    {"name": "dummy0"},  # no address, no MAC
]


def test_entry_from_the_agent_replies():
    osinfo = {
        "id": "debian",
        "version-id": "12",
        "pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "kernel-release": "x",
    }
    entry = entry_from("web01", osinfo, INTERFACES)
    assert entry["agent"] == "answering"
    assert entry["hostname"] == "web01"
    assert entry["os"] == {"id": "debian", "version": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    assert entry["interfaces"][1] == {
        "name": "enp1s0",
        "mac": "52:54:00:ab:cd:01",  # as infinivirt writes MACs
        "ips": ["fd00::5", "fe80::5054:ff:feab:cd01", "10.0.2.15"],
    }
    assert entry["interfaces"][2] == {"name": "dummy0", "mac": None, "ips": []}
    # no loopback or link-local address; IPv4 first
    assert entry["ips"] == ["10.0.2.15", "fd00::5"]


def test_entry_from_odd_replies():
    entry = entry_from(None, "not a dict", None)
    assert entry["hostname"] is None
    assert entry["os"] == {"id": None, "version": None, "pretty_name": None}
    assert entry["interfaces"] == [] and entry["ips"] == []


def _rec(spec, running=None, status="running"):
    return VmRecord(uuid="u-1", name=spec.name, host="h", status=status, spec=spec, running_spec=running)


def test_the_agent_is_asked_only_when_its_channel_runs(tmp_path):
    with_agent, without = VmSpec(name="a", guest_agent=True), VmSpec(name="a")
    run_dir = str(tmp_path)  # no socket in it: an asked agent would be "not answering"
    assert guest_entry(_rec(without, without), "running", run_dir)["agent"] == DISABLED
    # started without the channel, guest_agent turned on since (a pending restart)
    assert guest_entry(_rec(with_agent, without), "running", run_dir)["agent"] == DISABLED
    assert guest_entry(_rec(with_agent, None, "stopped"), "stopped", run_dir)["agent"] == NOT_ANSWERING
    assert guest_entry(_rec(without, None, "stopped"), "stopped", run_dir)["agent"] == DISABLED
    assert guest_entry(_rec(with_agent, with_agent), "running", run_dir)["agent"] == NOT_ANSWERING
    assert guest_entry(_rec(with_agent, with_agent), "running", run_dir, local=False)["agent"] == NOT_ANSWERING


def test_the_freeze_count_is_the_agents_number():
    assert freeze_count(2) == 2
    assert freeze_count(0) == 0
    # not a count: an agent that said something else froze an unknown number, reported as 0
    for odd in (True, -1, "2", None, 2.0, {"n": 2}):
        assert freeze_count(odd) == 0
