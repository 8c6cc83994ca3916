# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_net in a network namespace of the test's own: real bridges, real netlink,
checked with iproute2's JSON output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from helpers import run_playbook
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_carries, read_pidfile
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store

pytestmark = [pytest.mark.netns, pytest.mark.playbook]


@pytest.fixture
def netns():
    name = "ivt-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


@pytest.fixture
def run_dir(tmp_path):
    path = str(tmp_path / "run")
    yield path
    for pid in dnsmasq_pids(path):  # never leave a dnsmasq behind, whatever the test did
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def nets(db_url, netns, run_dir):
    store = open_store(db_url)
    yield NetworkService(store, "hv-test", netns, run_dir=run_dir)
    store.close()


@pytest.fixture
def more_netns():
    """Namespaces for a DHCP client and an upstream router, made on demand."""
    made = []

    def make():
        name = "ivt-%s" % uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=True)


def ip_json(netns, *args):
    out = subprocess.run(["ip", "-j", "-n", netns] + list(args), capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def bridge_facts(netns, name):
    links = [link for link in ip_json(netns, "-d", "link", "show") if link["ifname"] == name]
    if not links:
        return None
    link = links[0]
    addrs = sorted(
        "%s/%d" % (a["local"], a["prefixlen"])
        for entry in ip_json(netns, "addr", "show", "dev", name)
        for a in entry["addr_info"]
        if not a["local"].startswith("fe80")
    )
    return {
        "kind": link["linkinfo"]["info_kind"],
        "mtu": link["mtu"],
        "stp": link["linkinfo"]["info_data"]["stp_state"],
        "addresses": addrs,
        "up": "UP" in link["flags"],
    }


def test_bridge_lifecycle(nets, netns):
    params = {"name": "ivbr0", "mtu": 1400, "stp": True, "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}
    predicted = nets.ensure(params, True)
    assert predicted["changed"] and predicted["actions"] == ["create"]
    assert bridge_facts(netns, "ivbr0") is None, "check mode created nothing"
    made = nets.ensure(params, False)
    assert made["changed"] and made["diff"] == predicted["diff"] and made["network"]["managed"]
    facts = bridge_facts(netns, "ivbr0")
    assert facts == {
        "kind": "bridge",
        "mtu": 1400,
        "stp": 1,
        "up": True,
        "addresses": ["192.0.2.1/24", "2001:db8::1/64"],
    }
    assert not nets.ensure(params, False)["changed"]
    assert not nets.ensure(params, True)["changed"]

    changed = nets.ensure(dict(params, mtu=1500, stp=False, addresses=["198.51.100.1/25"]), False)
    assert changed["changed"] and set(changed["actions"]) == {"mtu", "stp", "addresses"}
    facts = bridge_facts(netns, "ivbr0")
    assert (facts["mtu"], facts["stp"], facts["addresses"]) == (1500, 0, ["198.51.100.1/25"])

    gone = nets.ensure({"name": "ivbr0", "state": "absent"}, False)
    assert gone["changed"] and gone["actions"] == ["remove"]
    assert bridge_facts(netns, "ivbr0") is None and nets.store.get_network("ivbr0", "hv-test") is None
    assert not nets.ensure({"name": "ivbr0", "state": "absent"}, False)["changed"]


def test_an_existing_bridge_is_used_not_removed(nets, netns):
    subprocess.run(["ip", "-n", netns, "link", "add", "ext0", "type", "bridge"], check=True)
    used = nets.ensure({"name": "uplink", "bridge": "ext0"}, False)
    assert used["changed"] and not used["network"]["managed"] and used["actions"] == ["up"]
    assert nets.ensure({"name": "uplink", "state": "absent"}, False)["actions"] == ["forget"]
    assert bridge_facts(netns, "ext0") is not None


@pytest.mark.parametrize(
    "params,field",
    [
        ({"name": "a-name-too-long-x"}, "name"),
        ({"name": "ok", "bridge": "br;rm -rf"}, "bridge"),
        ({"name": "ok", "mtu": 10}, "mtu"),
        ({"name": "ok", "addresses": ["192.0.2.1"]}, "addresses[0]"),
        ({"name": "ok", "addresses": ["300.1.1.1/24"]}, "addresses[0]"),
        ({"name": "ok", "addresses": ["224.0.0.1/4"]}, "addresses[0]"),
        ({"name": "ok", "mode": "vxlan"}, "mode"),
        ({"name": "ok", "dhcp": {"enabled": True}}, "dhcp"),
        ({"name": "ok", "dns": False}, "dns"),
        ({"name": "ok", "outbound_interface": "eth0"}, "outbound_interface"),
    ],
)
def test_bad_network_input_changes_nothing(nets, netns, params, field):
    with pytest.raises(SpecError) as err:
        nets.ensure(params, False)
    assert err.value.field == field
    assert [link["ifname"] for link in ip_json(netns, "link", "show")] == ["lo"]
    assert nets.store.get_network(params["name"], "hv-test") is None


def test_a_non_bridge_interface_is_refused(nets, netns):
    subprocess.run(["ip", "-n", netns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"], check=True)
    with pytest.raises(NetError) as err:
        nets.ensure({"name": "veth0"}, False)
    assert "is not a bridge" in str(err.value)


def test_net_module_four_steps(netns, tmp_path):
    done = run_playbook("net_bridge.yml", {"db_url": "sqlite:///%s/net.db" % tmp_path, "netns": netns})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert bridge_facts(netns, "pbbr0") is None, "removed at the end"
    assert "failed=0" in done.stdout


# -- mode: nat ------------------------------------------------------------------------------

NAT_TABLE_PREFIX = "infinivirt_nat_"


def in_ns(netns, *argv, check=True, timeout=20):
    return subprocess.run(
        ["ip", "netns", "exec", netns] + list(argv), capture_output=True, text=True, check=check, timeout=timeout
    )


def nft_tables(netns):
    listed = json.loads(in_ns(netns, "nft", "-j", "list", "ruleset").stdout or '{"nftables": []}')
    return {(item["table"]["family"], item["table"]["name"]) for item in listed["nftables"] if "table" in item}


def nft_rules(netns, table):
    listed = json.loads(in_ns(netns, "nft", "-j", "list", "table", "ip", table).stdout)
    return [item["rule"] for item in listed["nftables"] if "rule" in item]


def ip_forward(netns):
    return in_ns(netns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


def dnsmasq_pids(run_dir):
    """Live (not zombie) dnsmasq processes with a pidfile in run_dir."""
    return qemu_processes("--pid-file=%s/" % os.path.abspath(run_dir))


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as fh:
        return fh.read().decode().split("\0")[:-1]


def veth(ns_a, name_a, ns_b, name_b):
    subprocess.run(
        ["ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b], check=True
    )


def ping(netns, address):
    return in_ns(netns, "busybox", "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc calls this with the lease in its environment
if [ "$1" = bound ]; then
    ip addr add "$ip/$mask" dev "$interface"
    ip route add default via "$router" dev "$interface"
    echo "LEASE ip=$ip mask=$mask router=$router dns=$dns lease=$lease server=$serverid"
fi
"""


def udhcpc(netns, ifname, tmp_path):
    """Ask for a lease with the host's busybox udhcpc; return the lease's fields."""
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    done = in_ns(
        netns, "busybox", "udhcpc", "-i", ifname, "-n", "-q", "-f", "-t", "8", "-T", "1", "-s", str(script), check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LEASE ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    return dict(field.split("=", 1) for field in lines[0].split()[1:])


def pidfile_of(run_dir, name):
    return os.path.join(run_dir, "net-%s.dnsmasq.pid" % name)


def dnsmasq_of(run_dir, name):
    """The live dnsmasq of network ``name`` (by its pidfile and command line), or None."""
    path = pidfile_of(run_dir, name)
    pid = read_pidfile(path)
    return pid if pid and process_carries(pid, "--pid-file=" + path) else None


def same_netns(pid, netns):
    return os.readlink("/proc/%d/ns/net" % pid) == "net:[%d]" % os.stat("/run/netns/" + netns).st_ino


def assert_nothing_made(nets, netns, run_dir, name):
    assert [link["ifname"] for link in ip_json(netns, "link", "show")] == ["lo"]
    assert nft_tables(netns) == set()
    assert dnsmasq_pids(run_dir) == []
    assert nets.store.get_network(name, "hv-test") is None
    assert nets.store.journal_list("network:hv-test:" + name) == []


def test_nat_gives_dhcp_leases_and_masquerades(nets, netns, run_dir, more_netns, tmp_path):
    params = {
        "name": "ivnat0",
        "mode": "nat",
        "addresses": ["10.77.0.1/24"],
        "dhcp": {"range_start": "10.77.0.100", "range_end": "10.77.0.150", "lease_time": "10m"},
    }
    predicted = nets.ensure(params, True)
    assert predicted["changed"] and predicted["actions"] == ["create", "ip_forward", "nftables", "dnsmasq"]
    assert_nothing_made(nets, netns, run_dir, "ivnat0")  # check mode
    assert ip_forward(netns) == "0"

    made = nets.ensure(params, False)
    assert made["changed"] and made["actions"] == predicted["actions"] and made["diff"] == predicted["diff"]
    assert made["network"]["netns"] == netns and made["network"]["managed"]
    nat = {
        "gateway": "10.77.0.1",
        "subnet": "10.77.0.0/24",
        "dns": True,
        "outbound_interface": None,
        "dhcp": {"enabled": True, "range_start": "10.77.0.100", "range_end": "10.77.0.150", "lease_time": "10m"},
        "table": "infinivirt_nat_ivnat0",
    }
    assert made["network"]["nat"] == nat
    row = nets.store.get_network("ivnat0", "hv-test")  # what a VM's NIC looks up by name
    assert row["mode"] == "nat"
    assert {k: row["spec"][k] for k in ("bridge", "netns", "mode", "nat")} == {
        "bridge": "ivnat0",
        "netns": netns,
        "mode": "nat",
        "nat": nat,
    }
    assert bridge_facts(netns, "ivnat0")["addresses"] == ["10.77.0.1/24"]
    assert ip_forward(netns) == "1"
    assert nft_tables(netns) == {("ip", "infinivirt_nat_ivnat0")}
    masquerade = nft_rules(netns, "infinivirt_nat_ivnat0")[0]
    prefix = {"prefix": {"addr": "10.77.0.0", "len": 24}}
    assert masquerade["chain"] == "postrouting" and masquerade["expr"][-1] == {"masquerade": None}
    assert [m["match"]["right"] for m in masquerade["expr"][:2]] == [prefix, prefix]
    assert [m["match"]["op"] for m in masquerade["expr"][:2]] == ["==", "!="]
    pid = dnsmasq_of(run_dir, "ivnat0")
    assert pid and same_netns(pid, netns) and dnsmasq_pids(run_dir) == [pid]
    args = cmdline(pid)
    assert {
        "--interface=ivnat0",
        "--bind-interfaces",
        "--except-interface=lo",
        "--conf-file=/dev/null",
        "--dhcp-authoritative",
        "--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,600",
    } <= set(args)

    # (1) DHCP: a client on the bridge gets a lease from our dnsmasq
    client = more_netns()
    veth(netns, "ivc0", client, "eth0")
    subprocess.run(["ip", "-n", netns, "link", "set", "ivc0", "master", "ivnat0", "up"], check=True)
    subprocess.run(["ip", "-n", client, "link", "set", "eth0", "up"], check=True)
    lease = udhcpc(client, "eth0", tmp_path)
    assert 100 <= int(lease["ip"].split(".")[3]) <= 150 and lease["ip"].startswith("10.77.0.")
    assert (lease["router"], lease["dns"], lease["server"], lease["lease"]) == (
        "10.77.0.1",
        "10.77.0.1",
        "10.77.0.1",
        "600",
    )
    with open(os.path.join(run_dir, "net-ivnat0.dnsmasq.leases")) as fh:
        assert lease["ip"] in fh.read()

    # (2) masquerade: the upstream has no route back to 10.77.0.0/24
    upstream = more_netns()
    veth(netns, "ivup0", upstream, "eth0")
    subprocess.run(["ip", "-n", netns, "addr", "add", "198.51.100.1/24", "dev", "ivup0"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "ivup0", "up"], check=True)
    subprocess.run(["ip", "-n", upstream, "addr", "add", "198.51.100.2/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", upstream, "link", "set", "eth0", "up"], check=True)
    assert [r["dst"] for r in ip_json(upstream, "route", "show")] == ["198.51.100.0/24"]
    assert ping(client, "198.51.100.2")
    in_ns(netns, "nft", "flush", "table", "ip", "infinivirt_nat_ivnat0")
    assert not ping(client, "198.51.100.2"), "without the masquerade rule the upstream cannot answer"
    repaired = nets.ensure(params, False)
    assert repaired["changed"] and repaired["actions"] == ["nftables"]
    assert ping(client, "198.51.100.2")
    assert dnsmasq_of(run_dir, "ivnat0") == pid, "repairing the table left dnsmasq alone"

    # (4) absent removes dnsmasq, its files, the table and the bridge; forwarding stays on
    gone = nets.ensure({"name": "ivnat0", "state": "absent"}, False)
    assert gone["changed"] and gone["actions"] == ["dnsmasq-stop", "nftables-remove", "remove"]
    assert not process_carries(pid, "--pid-file=" + pidfile_of(run_dir, "ivnat0"))
    assert dnsmasq_pids(run_dir) == [] and os.listdir(run_dir) == []
    assert nft_tables(netns) == set()
    assert bridge_facts(netns, "ivnat0") is None
    assert nets.store.get_network("ivnat0", "hv-test") is None
    assert nets.store.journal_list("network:hv-test:ivnat0") == []
    assert ip_forward(netns) == "1"
    assert not ping(client, "198.51.100.2")
    assert not nets.ensure({"name": "ivnat0", "state": "absent"}, False)["changed"]


def test_nat_rerun_changes_nothing_and_drift_is_repaired(nets, netns, run_dir):
    params = {"name": "ivnat1", "mode": "nat", "addresses": ["10.88.0.1/24"]}
    assert nets.ensure(params, False)["changed"]
    pid = dnsmasq_of(run_dir, "ivnat1")
    assert pid

    # (3) idempotence: nothing changes, nothing restarts
    for check_mode in (True, False):
        again = nets.ensure(params, check_mode)
        assert not again["changed"] and again["actions"] == []
        assert again["diff"]["before"] == again["diff"]["after"]
    assert dnsmasq_of(run_dir, "ivnat1") == pid

    # drift: a flushed table, a deleted table, forwarding off, a dead dnsmasq
    in_ns(netns, "nft", "flush", "table", "ip", "infinivirt_nat_ivnat1")
    predicted = nets.ensure(params, True)
    assert predicted["actions"] == ["nftables"] and predicted["diff"]["before"]["runtime"]["nftables"] == "drifted"
    assert nets.ensure(params, False)["actions"] == ["nftables"]
    assert len(nft_rules(netns, "infinivirt_nat_ivnat1")) == 3
    in_ns(netns, "nft", "delete", "table", "ip", "infinivirt_nat_ivnat1")
    in_ns(netns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
    assert nets.ensure(params, False)["actions"] == ["ip_forward", "nftables"]
    assert ip_forward(netns) == "1" and len(nft_rules(netns, "infinivirt_nat_ivnat1")) == 3
    assert dnsmasq_of(run_dir, "ivnat1") == pid
    os.kill(pid, signal.SIGKILL)
    # A loaded machine (three xdist workers) once took longer than 5 s to end it.
    deadline = time.monotonic() + 30
    while dnsmasq_of(run_dir, "ivnat1") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not dnsmasq_of(run_dir, "ivnat1"), "the killed dnsmasq is still there"
    restarted = nets.ensure(params, False)
    assert restarted["changed"] and restarted["actions"] == ["dnsmasq"]
    assert restarted["diff"]["before"]["runtime"]["dnsmasq"] == "stopped"
    new_pid = dnsmasq_of(run_dir, "ivnat1")
    assert new_pid and new_pid != pid and dnsmasq_pids(run_dir) == [new_pid]
    assert not nets.ensure(params, False)["changed"]

    # a changed configuration restarts dnsmasq with it; the table stays
    no_dns = dict(params, dns=False, dhcp={"lease_time": "2h"})
    changed = nets.ensure(no_dns, False)
    assert changed["actions"] == ["dnsmasq"] and changed["diff"]["before"]["runtime"]["dnsmasq"] == "outdated"
    third = dnsmasq_of(run_dir, "ivnat1")
    assert third != new_pid and dnsmasq_pids(run_dir) == [third]
    assert "--port=0" in cmdline(third) and "--dhcp-range=10.88.0.2,10.88.0.254,255.255.255.0,7200" in cmdline(third)
    assert not nets.ensure(no_dns, False)["changed"]
    # a new outbound interface rewrites the table only
    assert nets.ensure(dict(no_dns, outbound_interface="eth0"), False)["actions"] == ["nftables"]
    assert dnsmasq_of(run_dir, "ivnat1") == third

    # back to a plain bridge: dnsmasq and the table go, the bridge stays
    plain = nets.ensure({"name": "ivnat1", "addresses": ["10.88.0.1/24"]}, False)
    assert plain["actions"] == ["dnsmasq-stop", "nftables-remove"]
    assert dnsmasq_pids(run_dir) == [] and nft_tables(netns) == set()
    assert bridge_facts(netns, "ivnat1")["addresses"] == ["10.88.0.1/24"]
    assert "nat" not in nets.store.get_network("ivnat1", "hv-test")["spec"]
    assert nets.store.journal_list("network:hv-test:ivnat1") == [("bridge", "%s/ivnat1" % netns)]
    assert not nets.ensure({"name": "ivnat1", "addresses": ["10.88.0.1/24"]}, False)["changed"]
    assert nets.ensure({"name": "ivnat1", "state": "absent"}, False)["actions"] == ["remove"]
    assert nets.store.journal_list("network:hv-test:ivnat1") == []


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"addresses": ["2001:db8::1/64"]}, "addresses[0]"),
        ({"addresses": ["10.77.0.1/24", "10.78.0.1/24"]}, "addresses"),
        ({"addresses": []}, "addresses"),
        ({"dhcp": {"range_start": "10.99.0.10", "range_end": "10.99.0.20"}}, "dhcp.range_start"),
        ({"dhcp": {"range_start": "10.77.0.1", "range_end": "10.77.0.20"}}, "dhcp.range_start"),
        ({"dhcp": {"range_start": "10.77.0.30", "range_end": "10.77.0.20"}}, "dhcp.range_end"),
        ({"dhcp": {"lease_time": "60"}}, "dhcp.lease_time"),
        ({"outbound_interface": "ivnat9"}, "outbound_interface"),
    ],
)
def test_bad_nat_input_changes_nothing(nets, netns, run_dir, extra, field):
    params = dict({"name": "ivnat9", "mode": "nat", "addresses": ["10.77.0.1/24"]}, **extra)
    for check_mode in (True, False):
        with pytest.raises(SpecError) as err:
            nets.ensure(params, check_mode)
        assert err.value.field == field
    assert_nothing_made(nets, netns, run_dir, "ivnat9")
    assert ip_forward(netns) == "0" and not os.path.exists(run_dir)


@pytest.mark.parametrize("mode", ["bridge", "nat"])
def test_a_missing_namespace_is_an_error_not_created(db_url, run_dir, mode):
    missing = "ivt-missing-%s" % uuid.uuid4().hex[:8]
    store = open_store(db_url)
    try:
        with pytest.raises(SpecError) as err:
            NetworkService(store, "hv-test", missing, run_dir=run_dir).ensure(
                {"name": "ivnat8", "mode": mode, "addresses": ["10.77.0.1/24"]}, False
            )
        assert err.value.field == "netns" and "does not exist" in str(err.value)
        assert not os.path.exists("/run/netns/" + missing)
        assert store.get_network("ivnat8", "hv-test") is None and dnsmasq_pids(run_dir) == []
    finally:
        store.close()


def test_a_failed_step_undoes_what_the_run_made(nets, netns, run_dir):
    import socket

    from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import entered

    with entered(netns):  # take the DHCP port, so dnsmasq cannot start
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("0.0.0.0", 67))
    try:
        with pytest.raises(NetError) as err:
            nets.ensure({"name": "ivnat2", "mode": "nat", "addresses": ["10.66.0.1/24"]}, False)
    finally:
        taken.close()
    message = str(err.value)
    assert message.startswith("network ivnat2: starting dnsmasq failed: dnsmasq did not start")
    assert "Address already in use" in message
    assert message.endswith("undone: removed nftables table infinivirt_nat_ivnat2, removed bridge ivnat2")
    assert_nothing_made(nets, netns, run_dir, "ivnat2")
    assert os.listdir(run_dir) == []


def test_net_module_nat_playbook(netns, tmp_path):
    run_dir = str(tmp_path / "run")
    done = run_playbook("net_nat.yml", {"db_url": "sqlite:///%s/net.db" % tmp_path, "netns": netns, "run_dir": run_dir})
    try:
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "failed=0" in done.stdout
        assert bridge_facts(netns, "pbnat0") is None, "removed at the end"
        assert nft_tables(netns) == set() and dnsmasq_pids(run_dir) == []
    finally:
        for pid in dnsmasq_pids(run_dir):
            os.kill(pid, signal.SIGKILL)


def test_two_nat_networks_share_a_namespace(nets, netns, run_dir):
    for index in (1, 2):
        made = nets.ensure({"name": "ivnat%d" % index, "mode": "nat", "addresses": ["10.7%d.0.1/24" % index]}, False)
        assert made["changed"] and "dnsmasq" in made["actions"]
    pids = [dnsmasq_of(run_dir, "ivnat%d" % index) for index in (1, 2)]
    assert all(pids) and sorted(dnsmasq_pids(run_dir)) == sorted(pids)
    assert nft_tables(netns) == {("ip", "infinivirt_nat_ivnat1"), ("ip", "infinivirt_nat_ivnat2")}
    for index in (1, 2):
        assert not nets.ensure(
            {"name": "ivnat%d" % index, "mode": "nat", "addresses": ["10.7%d.0.1/24" % index]}, False
        )["changed"]
    assert nets.ensure({"name": "ivnat1", "state": "absent"}, False)["changed"]
    assert nft_tables(netns) == {("ip", "infinivirt_nat_ivnat2")} and dnsmasq_pids(run_dir) == [pids[1]]


def test_absent_cleans_up_what_a_crashed_run_left(nets, netns, run_dir):
    """A run that died after making the pieces but before recording the network: the
    journal still names them, so state: absent finds and removes them."""
    params = {"name": "ivnat3", "mode": "nat", "addresses": ["10.33.0.1/24"]}
    nets.ensure(params, False)
    nets.store.delete_network("ivnat3", "hv-test")  # as if the row had never been written
    adopted = nets.ensure(params, True)
    assert adopted["network"]["managed"], "the journal says Infinivirt made the bridge"
    predicted = nets.ensure({"name": "ivnat3", "state": "absent"}, True)
    assert predicted["changed"] and predicted["actions"] == ["dnsmasq-stop", "nftables-remove", "remove"]
    assert nets.ensure({"name": "ivnat3", "state": "absent"}, False)["actions"] == predicted["actions"]
    assert_nothing_made(nets, netns, run_dir, "ivnat3")
    assert not nets.ensure({"name": "ivnat3", "state": "absent"}, False)["changed"]


@pytest.mark.both_backends  # the store is the subject
def test_each_host_has_its_own_network_of_a_name(db_url, netns, more_netns, run_dir):
    """Hypervisors sharing one database each have their own "default"."""
    store = open_store(db_url)
    other_ns = more_netns()
    try:
        here = NetworkService(store, "hv-a", netns, run_dir=run_dir)
        there = NetworkService(store, "hv-b", other_ns, run_dir=run_dir)
        with pytest.raises(SpecError, match="bridge: 'default' is reserved by the kernel"):
            here.ensure({"name": "default"}, False)  # no interface may be called that
        assert here.ensure({"name": "default", "bridge": "virbr0", "addresses": ["192.0.2.1/24"]}, False)["changed"]
        assert there.ensure({"name": "default", "bridge": "virbr0", "addresses": ["198.51.100.1/24"]}, False)["changed"]
        assert bridge_facts(netns, "virbr0")["addresses"] == ["192.0.2.1/24"]
        assert bridge_facts(other_ns, "virbr0")["addresses"] == ["198.51.100.1/24"]
        assert store.get_network("default", "hv-b")["spec"]["netns"] == other_ns
        assert not here.ensure({"name": "default", "bridge": "virbr0", "addresses": ["192.0.2.1/24"]}, False)["changed"]
        assert here.ensure({"name": "default", "state": "absent"}, False)["changed"]
        assert bridge_facts(netns, "virbr0") is None and store.get_network("default", "hv-a") is None
        assert bridge_facts(other_ns, "virbr0") is not None and store.get_network("default", "hv-b")
        there.ensure({"name": "default", "state": "absent"}, False)
    finally:
        store.close()
