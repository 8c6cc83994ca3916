# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM NICs with real guests on a real bridge, inside a network namespace of the test's own:
TAPs, MACs, models, queues, guest-to-guest traffic, hot-plug, and no leftovers."""

from __future__ import annotations

import os
import signal

import pytest
import serial_report
from helpers import guest_nics, links, nft_mentions, nft_ruleset, run_playbook, vm_list, wait_for, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import preflight

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.playbook]

VENDOR_IDS = {"e1000": ("0x8086", "0x100e"), "rtl8139": ("0x10ec", "0x8139")}


@pytest.fixture
def netns(bridge_ns):
    """A namespace of the test's own with a bridge vmbr0 (the integration conftest's)."""
    return bridge_ns


def shell(sock, command, timeout=30):
    rc, out = serial_report.channel_command(sock, command, timeout=timeout)
    return rc, out


def pings(sock, address):
    rc, out = shell(sock, "ping -c 2 -W 2 %s" % address, timeout=30)
    return rc == 0 and "2 packets received" in out


def configure_ip(sock, mac, cidr):
    """Give the guest NIC with this MAC an address (busybox ip), by MAC, not by name."""
    nics, _pci = guest_nics(sock)
    name = next(n["name"] for n in nics if n["mac"] == mac)
    rc, out = shell(sock, "ip addr add %s dev %s && ip link set %s up" % (cidr, name, name))
    assert rc == 0, out
    return name


def test_two_guests_talk_over_a_bridge_and_nics_plug_live(service, guest_params, netns, monkeypatch):
    # A: 2 vCPUs, a virtio NIC with a generated MAC (2 queues by default) and an e1000.
    a = dict(
        guest_params,
        name="nic-a",
        state="running",
        vcpus=2,
        console_socket=True,
        netns=netns,
        nics=[{"bridge": "vmbr0"}, {"bridge": "vmbr0", "model": "e1000"}],
    )
    # B: an explicit MAC, one queue, a smaller MTU.
    b = dict(
        guest_params,
        name="nic-b",
        state="running",
        console_socket=True,
        netns=netns,
        nics=[{"bridge": "vmbr0", "mac": "52:54:00:0b:00:01", "mtu": 1400}],
    )
    predicted = service.ensure(a, True).vm
    vm_a = service.ensure(a, False).vm
    assert [n["mac"] for n in predicted["nics"]] == [n["mac"] for n in vm_a["nics"]], (
        "check mode shows the MACs a real run gives"
    )
    vm_b = service.ensure(b, False).vm
    mac_a, mac_e1000 = vm_a["nics"][0]["mac"], vm_a["nics"][1]["mac"]
    assert mac_a.startswith("52:54:00:") and mac_a != mac_e1000
    tap_a, tap_b = vm_a["taps"][0], vm_b["taps"][0]
    assert tap_a == "iv" + mac_a.replace(":", "") and tap_b == "iv5254000b0001"

    # The TAPs live in the namespace, on the bridge; none in the host's own namespace.
    ns_links = links(netns)
    for tap in vm_a["taps"] + vm_b["taps"]:
        assert ns_links[tap]["master"] == "vmbr0" and ns_links[tap]["linkinfo"]["info_kind"] == "tun"
        assert tap not in links()
    assert ns_links[tap_a]["linkinfo"]["info_data"].get("multi_queue") is True
    assert not ns_links[tap_b]["linkinfo"]["info_data"].get("multi_queue")
    assert ns_links[tap_b]["mtu"] == 1400

    wait_ready(vm_a["serial_log"])
    wait_ready(vm_b["serial_log"])
    sock_a, sock_b = vm_a["console_socket_path"], vm_b["console_socket_path"]
    nics_a, pci_a = guest_nics(sock_a)
    assert [(n["mac"], n["driver"], n["queues_rx"], n["queues_tx"]) for n in nics_a] == [(mac_a, "virtio_net", 2, 2)]
    # The cloud kernel has no e1000 driver, but the card is on the bus with Intel's ids.
    assert ("0x8086", "0x100e", "none") in [(p["vendor"], p["device"], p["driver"]) for p in pci_a]
    nics_b, _pci = guest_nics(sock_b)
    assert [(n["mac"], n["queues_rx"], n["mtu"]) for n in nics_b] == [("52:54:00:0b:00:01", 1, 1400)]

    # Guest to guest across the bridge.
    configure_ip(sock_a, mac_a, "10.99.0.1/24")
    configure_ip(sock_b, "52:54:00:0b:00:01", "10.99.0.2/24")
    rc, out = shell(sock_a, "ping -c 2 -W 3 10.99.0.2", timeout=30)
    assert rc == 0 and "2 packets received" in out, out

    # A rerun of either task changes nothing (the generated MACs are kept).
    assert not service.ensure(a, False).changed
    assert not service.ensure(b, False).changed

    # A VM rule on B that drops ICMP coming in stops A's ping; removing it lets it through.
    fw = service.firewall
    block_icmp = {
        "scope": "vm",
        "name": "nic-b",
        "rules": [{"direction": "in", "protocol": "icmp", "action": "drop", "comment": "no pings"}],
    }
    assert fw.ensure(block_icmp, False)["changed"]
    assert not fw.ensure(block_icmp, False)["changed"], "a rerun changes nothing"
    assert not pings(sock_a, "10.99.0.2")
    fw.ensure({"scope": "vm", "name": "nic-b", "state": "absent"}, False)
    assert pings(sock_a, "10.99.0.2")
    # A department rule blocks it too, for every member; leaving the department lifts it.
    dept = {"scope": "department", "name": "lab", "rules": [{"direction": "out", "protocol": "icmp", "action": "drop"}]}
    fw.ensure(dept, False)
    assert service.ensure(dict(a, department="lab"), False).actions == ["update"]
    assert not pings(sock_a, "10.99.0.2")
    assert service.ensure(dict(a, department=""), False).actions == ["update"]
    assert pings(sock_a, "10.99.0.2")
    service.ensure(dict(a, department="lab"), False)
    fw.ensure(
        {
            "scope": "vm",
            "name": "nic-a",
            "rules": [{"direction": "in", "protocol": "tcp", "ports": [22], "cidr": "10.99.0.0/24"}],
        },
        False,
    )
    assert nft_mentions(netns, vm_a["uuid"]), "A's chains exist while it runs"

    # Hot-plug a second virtio NIC into B: the guest sees it; then unplug it.
    hot = dict(b, nics=b["nics"] + [{"bridge": "vmbr0", "mac": "52:54:00:0b:00:02"}])
    out = service.ensure(hot, False)
    assert out.actions == ["update", "hotplug_nics"] and out.vm["pending_restart"] == []
    assert wait_for(lambda: any(n["mac"] == "52:54:00:0b:00:02" for n in guest_nics(sock_b)[0]))
    assert links(netns)["iv5254000b0002"]["master"] == "vmbr0"
    assert not service.ensure(hot, False).changed
    assert service.ensure(b, False).actions == ["update", "hotplug_nics"]
    assert [n["mac"] for n in guest_nics(sock_b)[0]] == ["52:54:00:0b:00:01"]
    assert "iv5254000b0002" not in links(netns)
    # A NIC that cannot be plugged (vhost-net asked for where there is none) leaves no TAP.
    monkeypatch.setattr(preflight, "vhost_available", lambda: False)
    with pytest.raises(SpecError) as err:
        service.ensure(
            dict(b, nics=b["nics"] + [{"bridge": "vmbr0", "mac": "52:54:00:0b:00:03", "vhost": True}]), False
        )
    assert err.value.field == "nics[1].vhost" and "iv5254000b0003" not in links(netns)
    service.ensure(b, False)

    # Removing A takes its TAPs and every chain, map element and rule of it; B crashing
    # (SIGKILL) and being noticed takes B's TAP and firewall state too.
    fw.ensure(
        {
            "scope": "vm",
            "name": "nic-b",
            "rules": [{"direction": "in", "protocol": "udp", "ports": ["5000-5010"], "action": "drop"}],
        },
        False,
    )
    assert nft_mentions(netns, vm_b["uuid"])
    service.ensure({"name": "nic-a", "state": "absent", "force": True, "stop_timeout": 5}, False)
    assert not set(vm_a["taps"]) & set(links(netns))
    assert not nft_mentions(netns, vm_a["uuid"]) and not nft_mentions(netns, tap_a)
    os.kill(vm_list(service, "nic-b")[0]["pid"], signal.SIGKILL)
    assert wait_for(lambda: vm_list(service, "nic-b")[0]["status"] == "stopped")
    service.ensure({"name": "nic-b", "state": "stopped"}, False)  # reconciles the crash
    assert [name for name in links(netns) if name.startswith("iv")] == []
    assert nft_ruleset(netns) == [], "the last VM took the table with it"


@pytest.mark.parametrize(
    "nic, field",
    [
        ({"bridge": "a-bridge-name-too-long"}, "nics[0].bridge"),
        ({"bridge": "br 0"}, "nics[0].bridge"),
        ({"bridge": "vmbr0", "tap": "tap;rm"}, "nics[0].tap"),
        ({"bridge": "vmbr0", "mac": "01:00:5e:00:00:01"}, "nics[0].mac"),
        ({"bridge": "vmbr0", "mac": "52:54:00:zz:00:01"}, "nics[0].mac"),
        ({"bridge": "vmbr0", "model": "ne2k"}, "nics[0].model"),
        ({"bridge": "vmbr0", "model": "e1000", "queues": 2}, "nics[0].queues"),
        ({"bridge": "vmbr0", "queues": 64}, "nics[0].queues"),
        ({"bridge": "vmbr0", "ips": ["10.0.0.1/24"]}, "nics[0].ips[0]"),
        ({"network": "no-such-net"}, "nics[0].network"),
        ({}, "nics[0]"),
    ],
)
def test_bad_nics_change_nothing(service, guest_params, netns, nic, field):
    with pytest.raises(SpecError) as err:
        service.ensure(dict(guest_params, name="bad-nic", state="running", netns=netns, nics=[nic]), False)
    assert err.value.field == field
    assert vm_list(service, "bad-nic") == []
    assert [name for name in links(netns) if name.startswith("iv")] == []


def test_vhost_asked_for_without_vhost_net_fails_the_start_cleanly(service, guest_params, netns, monkeypatch):
    monkeypatch.setattr(preflight, "vhost_available", lambda: False)  # as here: no /dev/vhost-net
    with pytest.raises(SpecError, match="no /dev/vhost-net") as err:
        service.ensure(
            dict(guest_params, name="vhost", state="running", netns=netns, nics=[{"bridge": "vmbr0", "vhost": True}]),
            False,
        )
    assert err.value.field == "nics[0].vhost"
    assert vm_list(service, "vhost") == []
    assert [name for name in links(netns) if name.startswith("iv")] == []


def test_a_mac_of_another_vm_is_refused(service, guest_params, netns):
    service.ensure(
        dict(guest_params, name="mac-1", netns=netns, nics=[{"bridge": "vmbr0", "mac": "52:54:00:00:00:aa"}]), False
    )
    with pytest.raises(SpecError, match="52:54:00:00:00:aa is the MAC of a NIC of VM mac-1"):
        service.ensure(
            dict(guest_params, name="mac-2", netns=netns, nics=[{"bridge": "vmbr0", "mac": "52:54:00:00:00:AA"}]), False
        )
    assert vm_list(service, "mac-2") == []


def test_a_missing_bridge_fails_the_start_cleanly(service, guest_params, netns):
    with pytest.raises(Exception, match="bridge nobr does not exist"):
        service.ensure(dict(guest_params, name="nobr", state="running", netns=netns, nics=[{"bridge": "nobr"}]), False)
    vm = vm_list(service, "nobr")
    assert vm == [] or vm[0]["status"] == "stopped"
    assert [name for name in links(netns) if name.startswith("iv")] == []


def test_a_vm_on_a_nat_network_gets_a_lease_and_pins_the_network(service, guest_params, netns, workdir):
    nets = NetworkService(service.store, service.hostname, netns, run_dir=os.path.join(workdir, "run"))
    nets.ensure(
        {
            "name": "natnet",
            "mode": "nat",
            "addresses": ["10.97.0.1/24"],
            "dhcp": {"range_start": "10.97.0.50", "range_end": "10.97.0.60"},
        },
        False,
    )
    try:
        vm = service.ensure(
            dict(
                guest_params,
                name="nat-vm",
                state="running",
                console_socket=True,
                netns=netns,
                nics=[{"network": "natnet"}],
            ),
            False,
        ).vm
        assert links(netns)[vm["taps"][0]]["master"] == "natnet"
        wait_ready(vm["serial_log"])
        rc, out = shell(
            vm["console_socket_path"],
            "ip link set eth0 up && udhcpc -i eth0 -n -q -f -t 10 -T 2 -s /bin/true",
            timeout=60,
        )
        assert rc == 0 and "lease of 10.97.0.5" in out and "obtained from 10.97.0.1" in out, out

        # A network that a VM's NIC names cannot be removed; without the VM it can.
        with pytest.raises(StateError, match="network natnet is used by the NICs of VM nat-vm"):
            nets.ensure({"name": "natnet", "state": "absent"}, False)
        assert "natnet" in links(netns)
        service.ensure({"name": "nat-vm", "state": "absent", "force": True, "stop_timeout": 5}, False)
    finally:
        removed = nets.ensure({"name": "natnet", "state": "absent"}, False)
    assert removed["changed"] and "natnet" not in links(netns)


def test_network_stack_playbook_reruns_change_nothing(guest_params, workdir, netns):
    done = run_playbook(
        "network_stack.yml",
        {
            "kernel": guest_params["kernel"],
            "initrd": guest_params["initrd"],
            "kernel_cmdline": guest_params["kernel_cmdline"],
            "netns": netns,
            "db_url": "sqlite:///%s/pb.db" % workdir,
            "run_dir": os.path.join(workdir, "run"),
        },
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    assert [name for name in links(netns) if name.startswith("iv") or name == "pbnat"] == []
    assert nft_ruleset(netns) == []
