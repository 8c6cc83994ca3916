# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_net in a network namespace of the test's own: real bridges, real netlink,
checked with iproute2's JSON output."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from test_playbook import run_playbook

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
from ansible_collections.infinivirt.core.plugins.module_utils.network_service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store


@pytest.fixture
def netns():
    name = "ivt-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture
def nets(db_url, netns):
    store = open_store(db_url)
    yield NetworkService(store, "hv-test", netns)
    store.close()


def ip_json(netns, *args):
    out = subprocess.run(["ip", "-j", "-n", netns] + list(args), capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def bridge_facts(netns, name):
    links = [link for link in ip_json(netns, "-d", "link", "show") if link["ifname"] == name]
    if not links:
        return None
    link = links[0]
    addrs = sorted("%s/%d" % (a["local"], a["prefixlen"]) for entry in ip_json(netns, "addr", "show", "dev", name)
                   for a in entry["addr_info"] if not a["local"].startswith("fe80"))
    return {"kind": link["linkinfo"]["info_kind"], "mtu": link["mtu"],
            "stp": link["linkinfo"]["info_data"]["stp_state"], "addresses": addrs,
            "up": "UP" in link["flags"]}


def test_bridge_lifecycle(nets, netns):
    params = {"name": "ivbr0", "mtu": 1400, "stp": True, "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}
    predicted = nets.ensure(params, True)
    assert predicted["changed"] and predicted["actions"] == ["create"]
    assert bridge_facts(netns, "ivbr0") is None, "check mode created nothing"
    made = nets.ensure(params, False)
    assert made["changed"] and made["diff"] == predicted["diff"] and made["network"]["managed"]
    facts = bridge_facts(netns, "ivbr0")
    assert facts == {"kind": "bridge", "mtu": 1400, "stp": 1, "up": True,
                     "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}
    assert not nets.ensure(params, False)["changed"]
    assert not nets.ensure(params, True)["changed"]

    changed = nets.ensure(dict(params, mtu=1500, stp=False, addresses=["198.51.100.1/25"]), False)
    assert changed["changed"] and set(changed["actions"]) == {"mtu", "stp", "addresses"}
    facts = bridge_facts(netns, "ivbr0")
    assert (facts["mtu"], facts["stp"], facts["addresses"]) == (1500, 0, ["198.51.100.1/25"])

    gone = nets.ensure({"name": "ivbr0", "state": "absent"}, False)
    assert gone["changed"] and gone["actions"] == ["remove"]
    assert bridge_facts(netns, "ivbr0") is None and nets.store.get_network("ivbr0") is None
    assert not nets.ensure({"name": "ivbr0", "state": "absent"}, False)["changed"]


def test_an_existing_bridge_is_used_not_removed(nets, netns):
    subprocess.run(["ip", "-n", netns, "link", "add", "ext0", "type", "bridge"], check=True)
    used = nets.ensure({"name": "uplink", "bridge": "ext0"}, False)
    assert used["changed"] and not used["network"]["managed"] and used["actions"] == ["up"]
    assert nets.ensure({"name": "uplink", "state": "absent"}, False)["actions"] == ["forget"]
    assert bridge_facts(netns, "ext0") is not None


@pytest.mark.parametrize("params,field", [
    ({"name": "a-name-too-long-x"}, "name"),
    ({"name": "ok", "bridge": "br;rm -rf"}, "bridge"),
    ({"name": "ok", "mtu": 10}, "mtu"),
    ({"name": "ok", "addresses": ["192.0.2.1"]}, "addresses[0]"),
    ({"name": "ok", "addresses": ["300.1.1.1/24"]}, "addresses[0]"),
    ({"name": "ok", "addresses": ["224.0.0.1/4"]}, "addresses[0]"),
    ({"name": "ok", "mode": "nat"}, "mode"),
])
def test_bad_network_input_changes_nothing(nets, netns, params, field):
    with pytest.raises(SpecError) as err:
        nets.ensure(params, False)
    assert err.value.field == field
    assert [link["ifname"] for link in ip_json(netns, "link", "show")] == ["lo"]
    assert nets.store.get_network(params["name"]) is None


def test_a_non_bridge_interface_is_refused(nets, netns):
    subprocess.run(["ip", "-n", netns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
                   check=True)
    with pytest.raises(NetError) as err:
        nets.ensure({"name": "veth0"}, False)
    assert "is not a bridge" in str(err.value)


def test_net_module_four_steps(netns, tmp_path):
    done = run_playbook("net_bridge.yml", {"db_url": "sqlite:///%s/net.db" % tmp_path, "netns": netns})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert bridge_facts(netns, "pbbr0") is None, "removed at the end"
    assert "failed=0" in done.stdout
