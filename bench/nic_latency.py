# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guest-to-guest round-trip time over an Infinivirt bridge, per NIC configuration.

Two test guests (2 vCPUs each) on one bridge in a network namespace of the bench's own; the
first pings the second (busybox ping, one packet every 0.2 s) and the per-packet times are
taken from its output. Configurations, measured in the same run: virtio-net with one queue,
virtio-net with two queues (multi-queue), and vhost-net for both when the host has
/dev/vhost-net. The baseline is the host kernel's own path between two namespaces joined by
a veth pair on the same kind of bridge (no guest at all). Under TCG the guest's CPU
emulation dominates; compare the configurations with each other, not with KVM figures.

    .venv/bin/python bench/nic_latency.py [--count 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid as uuidlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "guest")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

import build_guest  # noqa: E402
import serial_report  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import vhost_available  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

_TIME_RE = re.compile(r"time=([0-9.]+) ms")


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


def rtts(output):
    return [float(t) for t in _TIME_RE.findall(output)]


def summary(times):
    ordered = sorted(times)
    return {"median": statistics.median(ordered), "p90": ordered[int(len(ordered) * 0.9) - 1], "n": len(ordered)}


def baseline(netns, count):
    """Host-only path: two client namespaces on the bridge through veth pairs."""
    clients = []
    for index in (1, 2):
        client = "%s-c%d" % (netns, index)
        ip("netns", "add", client)
        ip("-n", netns, "link", "add", "veth%d" % index, "type", "veth", "peer", "name", "eth0", "netns", client)
        ip("-n", netns, "link", "set", "veth%d" % index, "master", "vmbr0", "up")
        ip("-n", client, "addr", "add", "10.98.0.%d/24" % (100 + index), "dev", "eth0")
        ip("-n", client, "link", "set", "eth0", "up")
        clients.append(client)
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", clients[0], "busybox", "ping", "-c", str(count), "-i", "0.2", "10.98.0.102"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return rtts(out)
    finally:
        for client in clients:
            ip("netns", "del", client, check=False)


def guest_rtts(service, guest, netns, nic, count):
    params = {
        "kernel": str(guest.kernel),
        "initrd": str(guest.initrd),
        "kernel_cmdline": guest.kernel_cmdline,
        "accel": "tcg",
        "vcpus": 2,
        "console_socket": True,
        "state": "running",
        "netns": netns,
    }
    vms = []
    for index in (1, 2):
        vm = service.ensure(
            dict(params, name="lat%d" % index, nics=[dict(nic, bridge="vmbr0", mac="52:54:00:98:00:%02x" % index)]),
            False,
        ).vm
        vms.append(vm)
    try:
        for index, vm in enumerate(vms, 1):
            serial_report.wait_for_ready(vm["serial_log"], timeout=180)
            rc, out = serial_report.channel_command(
                vm["console_socket_path"], "ip addr add 10.98.0.%d/24 dev eth0 && ip link set eth0 up" % index
            )
            assert rc == 0, out
        serial_report.channel_command(vms[0]["console_socket_path"], "ping -c 3 -W 5 10.98.0.2", timeout=60)
        rc, out = serial_report.channel_command(
            vms[0]["console_socket_path"], "ping -c %d -i 0.2 10.98.0.2" % count, timeout=count + 60
        )
        return rtts(out)
    finally:
        for index in (1, 2):
            service.ensure({"name": "lat%d" % index, "state": "absent", "force": True, "stop_timeout": 5}, False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30, help="pings per guest pair and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    guest = build_guest.build_guest()
    netns = "ivbench-%s" % uuidlib.uuid4().hex[:6]
    work = tempfile.mkdtemp(prefix="ivbench")
    ip("netns", "add", netns)
    ip("-n", netns, "link", "add", "vmbr0", "type", "bridge")
    ip("-n", netns, "link", "set", "vmbr0", "up")
    service = VmService.open("sqlite:///%s/state.db" % work, os.path.join(work, "run"))
    configs = [
        ("virtio, 1 queue, no vhost", {"queues": 1, "vhost": False}),
        ("virtio, 2 queues, no vhost", {"queues": 2, "vhost": False}),
    ]
    if vhost_available():
        configs += [
            ("virtio, 1 queue, vhost", {"queues": 1, "vhost": True}),
            ("virtio, 2 queues, vhost", {"queues": 2, "vhost": True}),
        ]
    samples = {label: [] for label, _nic in configs}
    try:
        results = [("host veth baseline", summary(baseline(netns, args.count)))]
        for _round in range(args.rounds):  # interleaved, so drift on a noisy host hits all alike
            for label, nic in configs:
                samples[label] += guest_rtts(service, guest, netns, nic, args.count)
        results += [(label, summary(samples[label])) for label, _nic in configs]
    finally:
        service.close()
        ip("netns", "del", netns, check=False)
        shutil.rmtree(work, ignore_errors=True)
    base = results[1][1]["median"]
    print("%-30s %10s %10s %5s %18s" % ("path", "median ms", "p90 ms", "n", "vs 1 queue"))
    for label, stats in results:
        ratio = stats["median"] / base
        print("%-30s %10.3f %10.3f %5d %17.2fx" % (label, stats["median"], stats["p90"], stats["n"], ratio))
    if not vhost_available():
        print("(no /dev/vhost-net on this host: vhost-net configurations not measured)")


if __name__ == "__main__":
    main()
