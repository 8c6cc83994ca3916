# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Memory and CPU tuning on a real guest (TCG), read back from the guest and from /proc.

Two boots: one VM carries topology, NUMA, balloon, pins, vCPU and DIMM hot-plug (each
proven live, without a restart); one runs on 2M hugepages of a hugetlbfs mount made here.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import pytest
import serial_report
from helpers import vm_list, wait_for, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

pytestmark = [pytest.mark.qemu]

HUGE_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB"


def guest(sock, command):
    rc, out = serial_report.channel_command(sock, command)
    assert rc == 0, out
    return out


def guest_report(sock, section):
    return serial_report.parse_report(guest(sock, "report %s" % section))


def thread_affinity(pid):
    """Thread name -> Cpus_allowed_list of each thread of QEMU (debug-threads=on names the
    vCPU threads 'CPU <n>/TCG')."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as fh:
                name = fh.read().strip()
            with open("/proc/%d/task/%s/status" % (pid, tid)) as fh:
                allowed = re.search(r"^Cpus_allowed_list:\s*(\S+)", fh.read(), re.M).group(1)
        except OSError:
            continue  # a worker thread that ended meanwhile
        out.setdefault(name, set()).add(allowed)
    return out


def vcpu_pins(pid):
    return {name: allowed for name, allowed in thread_affinity(pid).items() if name.startswith("CPU ")}


def test_topology_numa_balloon_pins_and_hotplug_on_one_guest(service, guest_params):
    params = dict(
        guest_params,
        name="tuned",
        state="running",
        console_socket=True,
        vcpus=1,
        vcpus_max=2,
        cpu_topology={"sockets": 2, "cores": 1, "threads": 1},
        memory_mb=256,
        memory_max_mb=1024,
        memory_slots=2,
        numa=[
            {"cpus": "0", "memory_mb": 128},
            {"cpus": "1", "memory_mb": 128, "distances": {"0": 20}},
        ],
        memory_balloon=True,
        cpu_pinning={0: "1"},
        emulator_cpus="0",
        cpu_flags=["hv-spinlocks=0x1fff"],
    )
    out = service.ensure(params, check_mode=False)
    vm = out.vm
    pid, sock = vm["pid"], vm["console_socket_path"]
    rep = wait_ready(vm["serial_log"])
    # Topology and NUMA as asked: one vCPU of two possible, two nodes, node 1 at distance 20.
    assert (rep.cpus_online, rep.cpus_possible) == ("0", "0-1")
    nodes = guest(sock, "cat /sys/devices/system/node/online; cat /sys/devices/system/node/node1/distance")
    assert "0-1" in nodes and "20 10" in nodes
    # Pins applied before the guest ran: vCPU 0 on host CPU 1, every other thread on 0.
    assert vcpu_pins(pid) == {"CPU 0/TCG": {"1"}}
    assert all(allowed == {"0"} for name, allowed in thread_affinity(pid).items() if not name.startswith("CPU "))
    assert vm["balloon"]["actual_mb"] == 256

    # Balloon: MemTotal drops by exactly the ballooned 64 MiB, and comes back.
    before = rep.memtotal_kib
    out = service.ensure({"name": "tuned", "memory_target_mb": 192}, check_mode=False)
    assert out.actions == ["update", "set_balloon"] and out.vm["pid"] == pid
    assert wait_for(lambda: guest_report(sock, "memory").memtotal_kib == before - 65536)
    assert wait_for(lambda: vm_list(service, "tuned")[0]["balloon"]["actual_mb"] == 192)
    stats = vm_list(service, "tuned")[0]["balloon"]["stats"]
    assert stats.get("stat_total_memory", 0) > 0, stats
    out = service.ensure({"name": "tuned", "memory_target_mb": 0}, check_mode=False)
    assert out.vm["memory_target_mb"] is None
    assert wait_for(lambda: guest_report(sock, "memory").memtotal_kib == before)

    # vCPU hot-plug: the second socket arrives in node 1 and is pinned at once (default:
    # all host CPUs); then a live pin change, no restart.
    out = service.ensure({"name": "tuned", "vcpus": 2}, check_mode=False)
    assert out.actions == ["update", "hotplug_cpus"] and out.vm["pending_restart"] == []
    # The vCPU reaches the guest about 1 s after device_add; it arrives offline.
    assert wait_for(lambda: guest_report(sock, "cpus").cpus_present == "0-1")
    guest(sock, "online_all")
    assert wait_for(lambda: guest_report(sock, "cpus").cpus_online == "0-1")
    cpuinfo = guest(sock, "grep -E '^(physical id|core id)' /proc/cpuinfo; ls /sys/devices/system/node/node1")
    assert re.findall(r"physical id\s*:\s*(\d+)", cpuinfo) == ["0", "1"]
    assert "cpu1" in cpuinfo
    assert vcpu_pins(pid) == {"CPU 0/TCG": {"1"}, "CPU 1/TCG": {"0-1"}}
    check = service.ensure({"name": "tuned", "cpu_pinning": {0: "0", 1: "1"}}, check_mode=True)
    assert check.actions == ["update", "pin_cpus"]
    out = service.ensure({"name": "tuned", "cpu_pinning": {0: "0", 1: "1"}}, check_mode=False)
    assert out.actions == ["update", "pin_cpus"] and out.vm["pid"] == pid
    assert vcpu_pins(pid) == {"CPU 0/TCG": {"0"}, "CPU 1/TCG": {"1"}}

    # DIMM hot-plug: the guest's RAM grows by the DIMM.
    ram = guest_report(sock, "memory").system_ram_kib
    out = service.ensure({"name": "tuned", "memory_hotplug": [128]}, check_mode=False)
    assert out.actions == ["update", "hotplug_memory"] and out.vm["pending_restart"] == []
    assert wait_for(lambda: guest_report(sock, "memory").system_ram_kib == ram + 131072)

    # Exclusive pins: another VM may not pin to this one's host CPUs (refused at plan time).
    service.ensure({"name": "tuned", "cpu_pinning_exclusive": True}, check_mode=False)
    with pytest.raises(SpecError) as err:
        service.ensure(dict(guest_params, name="other", state="present", cpu_pinning={0: "1"}), check_mode=False)
    assert err.value.field == "cpu_pinning" and "tuned" in str(err.value)
    assert [v["name"] for v in vm_list(service)] == ["tuned"]
    final = service.ensure({"name": "tuned"}, check_mode=False)
    assert not final.changed and final.vm["pending_restart"] == [] and final.vm["pid"] == pid


def _read(path):
    with open(path) as fh:
        return int(fh.read().strip())


def _write(path, value):
    with open(path, "w") as fh:
        fh.write(str(value))


def _hugetlbfs_2m_mounts():
    with open("/proc/mounts") as fh:
        fields = [line.split() for line in fh]
    return [f[1] for f in fields if f[2] == "hugetlbfs" and ("pagesize=2M" in f[3] or "pagesize=2048k" in f[3])]


@pytest.fixture
def hugetlbfs():
    """A 2M hugetlbfs mount of our own; nr_hugepages restored after."""
    if not os.access(os.path.join(HUGE_2M, "nr_hugepages"), os.W_OK):
        pytest.fail("%s/nr_hugepages is not writable" % HUGE_2M)
    original = _read(os.path.join(HUGE_2M, "nr_hugepages"))
    mount = tempfile.mkdtemp(prefix="iv-huge")
    subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "none", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount], check=False)
        os.rmdir(mount)
        _write(os.path.join(HUGE_2M, "nr_hugepages"), original)


def test_hugepages_are_admitted_taken_and_given_back(service, guest_params, hugetlbfs):
    nr = os.path.join(HUGE_2M, "nr_hugepages")
    free = os.path.join(HUGE_2M, "free_hugepages")
    params = dict(guest_params, name="huge", state="running", memory_mb=256, hugepages="2M", memory_balloon=True)
    _write(nr, 4)
    have = _read(free)
    with pytest.raises(SpecError) as err:
        service.ensure(params, check_mode=False)
    assert err.value.field == "hugepages"
    assert "%d missing" % (128 - have) in str(err.value)
    assert vm_list(service) == []  # nothing was stored or started

    _write(nr, 160)
    assert _read(free) >= 128
    before = _read(free)
    vm = service.ensure(params, check_mode=False).vm
    wait_ready(vm["serial_log"])
    assert before - _read(free) == 128  # preallocated: every page of the guest taken
    with open("/proc/%d/cmdline" % vm["pid"]) as fh:
        cmdline = fh.read()
    # Any 2M hugetlbfs mount will do (a host may have its own, e.g. /dev/hugepages).
    assert any(mount in cmdline for mount in _hugetlbfs_2m_mounts()), cmdline
    service.ensure({"name": "huge", "state": "stopped", "stop_timeout": 30}, check_mode=False)
    assert wait_for(lambda: _read(free) == before)
