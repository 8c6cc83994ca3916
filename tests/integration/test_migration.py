# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live migration (issue 23), the proof on one machine and one boot of the test guest.

Two hosts are two network namespaces, each with its own host_id, run dir and bridge vmbr0,
joined by a veth pair that carries the migration stream (10.77.0.1 / 10.77.0.2); a third
namespace (the client) is on the same LAN as both bridges. Both hosts share one PostgreSQL
store, reached through its UNIX socket (the server listens on the root namespace's
loopback only). Each host's monitor and its tasks run inside its namespace (host_task.py).
No PID namespace is needed: a host's engine knows its own QEMU by the VM's UUID *and* its
own run dir's pidfile (QemuProcess.kill_all).

Proved, in order: the guest moves A -> B while it counts on its console, with its uptime and
counter going on (no restart), its firewall rules following it, answering pings from the
client after the move; A has no QEMU, TAP, rule or journal entry of it left and the row says
B. The guest has a local qcow2 data disk: each host sees its own files at the same path (B's
monitor and tasks run in a mount namespace where the disks' directory is a bind mount of
another), so every move copies it (storage auto -> copy: NBD export and block mirror); the
guest reads the same checksum of it after each move. Then a move back whose target QEMU is
killed mid-copy (throttled) leaves it running on B, owned by B, and nothing on A (no disk
file either). Last, B -> A with post-copy (and the disk copied): switched after the first
pass, the counter and uptime go on."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

import pytest
import serial_report
from helpers import guest_disks, guest_nics, links, make_image, nft_mentions, wait_for, wait_ready
from migration_lab import GUEST_IP, open_lab

from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.postgres, pytest.mark.netns, pytest.mark.slow]

RULE = {"direction": "in", "protocol": "tcp", "ports": [7001], "action": "drop"}  # its own rules to follow it
COUNTER = "(i=0; while :; do i=$((i+1)); echo tick=$i >/dev/ttyS0; sleep 1; done) </dev/null >/dev/null 2>&1 &"


@pytest.fixture
def lab(pg_url):
    with open_lab(pg_url) as lab:
        yield lab


def _shell(sock, command, timeout=60):
    rc, out = serial_report.channel_command(sock, command, timeout=timeout)
    assert rc == 0, out
    return out


def _uptime(sock):
    return float(_shell(sock, "cat /proc/uptime").strip().splitlines()[-1].split()[0])


def _disk_sha(sock, dev):
    """The guest's own SHA-256 of its data disk (page cache dropped: read from the device)."""
    out = _shell(sock, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/%s bs=1M 2>/dev/null | sha256sum" % dev)
    return out.strip().splitlines()[-1].split()[0]


def _ticks(serial_log):
    with open(serial_log, errors="replace") as fh:
        return [int(n) for n in re.findall(r"tick=(\d+)", fh.read())]


def test_a_running_guest_moves_between_hosts_and_a_killed_target_changes_nothing(lab, guest_params):
    params = dict(guest_params, name="mover", memory_mb=128, console_socket=True, state="running")
    data = make_image(os.path.join(lab.disks, "data.qcow2"), "qcow2", 8)  # A's; B has none yet
    disks = [{"path": data, "serial": "data"}]
    vm = lab.task("hv-a", "vm", dict(params, nics=[{"bridge": "vmbr0"}], disks=disks))["vm"]
    uuid, tap = vm["uuid"], vm["taps"][0]
    wait_ready(vm["serial_log"])
    sock_a = vm["console_socket_path"]
    nics, _pci = guest_nics(sock_a)
    name = next(n["name"] for n in nics if n["mac"] == vm["nics"][0]["mac"])
    _shell(sock_a, "ip addr add %s/24 dev %s && ip link set %s up" % (GUEST_IP, name, name))
    _shell(sock_a, COUNTER)
    dev = guest_disks(sock_a)["data"]["name"]
    _shell(sock_a, "dd if=/dev/urandom of=/dev/%s bs=1M count=6 conv=fsync 2>/dev/null && sync" % dev)
    written = _disk_sha(sock_a, dev)
    assert wait_for(lab.pings, 20), "the client reaches the guest on A"
    rules = {"scope": "vm", "name": "mover", "anti_spoofing": False, "rules": [RULE]}
    assert lab.task("hv-a", "firewall", rules).get("changed"), "a rule set of its own"
    assert lab.pings(), "its rules let pings through"
    assert nft_mentions(lab.ns["hv-a"], uuid), "its rules on A"
    before = _uptime(sock_a)
    assert wait_for(lambda: _ticks(vm["serial_log"]), 10), "the guest counts on its console"
    counted_a = _ticks(vm["serial_log"])  # A's console log goes with A's side

    # 1. A -> B, live.
    began = time.monotonic()
    moved = lab.task("hv-a", "migrate", {"name": "mover", "to": "hv-b", "max_downtime_ms": 100})
    took = time.monotonic() - began
    assert moved.get("changed") and moved["vm"]["host"] == "hv-b", moved
    paths_b = VmPaths.for_vm(lab.run["hv-b"], uuid)
    assert _uptime(paths_b.console_socket) > before, "the guest's clock went on: no restart"
    assert wait_for(lambda: _ticks(paths_b.serial_log), 10), "the counter goes on, on B's console"
    assert _ticks(paths_b.serial_log)[0] >= counted_a[-1], (counted_a[-3:], _ticks(paths_b.serial_log)[:3])
    with open(paths_b.serial_log, errors="replace") as fh:
        assert "boot kernel=" not in fh.read(), "B's console shows no new boot"
    assert lab.pings(), "the client reaches the guest on B"
    copied = moved["migration"]
    assert copied["storage"] == "copy" and copied["copied_disks"] == [data] and copied["storage_bytes"] > 0, copied
    assert _disk_sha(paths_b.console_socket, dev) == written, "the guest reads the same data disk on B"
    on_b = os.path.join(lab.b_disks, "data.qcow2")
    same = subprocess.run(["qemu-img", "compare", "-U", data, on_b], capture_output=True, text=True, check=False)
    assert same.returncode == 0, "A's file is left as it was at the move: %s" % same.stdout
    assert any("copied to hv-b" in w for w in moved.get("warnings", [])), moved
    os.unlink(data)  # as the warning says: the next move copies the disk back here
    store = open_store(lab.db_url)
    try:
        row = store.get_vm("mover")
        assert (row.host, row.qemu_pid) == ("hv-b", lab.qemus(uuid, "hv-b")[0]), "the row says B and B's QEMU"
        assert lab.qemus(uuid, "hv-a") == [], "no QEMU of it on A"
        assert tap not in links(lab.ns["hv-a"]) and tap in links(lab.ns["hv-b"]), "its TAP moved"
        assert not nft_mentions(lab.ns["hv-a"], uuid) and nft_mentions(lab.ns["hv-b"], uuid), "its rules moved"
        assert store.journal_list(uuid + "@hv-a") == [] and store.journal_list(uuid + "@hv-b") == []
        assert not any(uuid in f for f in os.listdir(lab.run["hv-a"])), os.listdir(lab.run["hv-a"])
        numbers = moved["migration"]
        print("A -> B: %.2f s task, %s" % (took, numbers))

        # 2. B -> A, throttled; A's incoming QEMU is killed mid-copy: nothing changes.
        def kill_target():
            if wait_for(lambda: lab.qemus(uuid, "hv-a"), 20):
                time.sleep(1.0)  # the stream is under way
                for pid in lab.qemus(uuid, "hv-a"):
                    os.kill(pid, 9)

        killer = threading.Thread(target=kill_target)
        killer.start()
        failed = lab.task("hv-b", "migrate", {"name": "mover", "to": "hv-a", "bandwidth_mbit": 8, "timeout": 60})
        killer.join()
        assert "was not migrated and runs on hv-b as before" in failed.get("error", ""), failed
        row = store.get_vm("mover")
        assert (row.host, row.qemu_pid) == ("hv-b", lab.qemus(uuid, "hv-b")[0]), "still B's"
        ticks = len(_ticks(paths_b.serial_log))
        assert wait_for(lambda: len(_ticks(paths_b.serial_log)) > ticks, 10), "the guest runs on B"
        assert lab.pings(), "and answers"
        assert wait_for(lambda: store.journal_list(uuid + "@hv-a") == [], 10), "A's side cleaned"
        assert lab.qemus(uuid, "hv-a") == [] and tap not in links(lab.ns["hv-a"])
        assert not nft_mentions(lab.ns["hv-a"], uuid), "no rule of it on A"
        assert not any(uuid in f for f in os.listdir(lab.run["hv-a"])), os.listdir(lab.run["hv-a"])
        assert os.listdir(lab.disks) == [], "no disk file (nor marker) left on A"
        assert _disk_sha(paths_b.console_socket, dev) == written, "B's disk as it was"

        # 3. B -> A with post-copy, the disk copied too: switched after the first pass.
        ticks = _ticks(paths_b.serial_log)[-1]
        up = _uptime(paths_b.console_socket)
        # Not zeros: QEMU sends a zero page as a flag, so a pass over them is instant and converges.
        dirty = "(while :; do yes dirty-page | head -c 8388608 >/tmp/dirt; done)"
        dirty += " </dev/null >/dev/null 2>&1 &"
        _shell(paths_b.console_socket, dirty + " echo $! >/tmp/dirt.pid")  # pre-copy alone would not converge
        time.sleep(1.0)  # the writer runs (a starved TCG guest dirties little)
        post = {"name": "mover", "to": "hv-a", "postcopy": True, "max_downtime_ms": 1, "bandwidth_mbit": 200}
        back = lab.task("hv-b", "migrate", post)
        assert back.get("changed") and back["vm"]["host"] == "hv-a", back
        numbers = back["migration"]
        assert numbers["storage"] == "copy", numbers
        assert numbers["postcopy_switched"], "a guest that keeps writing does not converge: %s" % numbers
        paths_a = VmPaths.for_vm(lab.run["hv-a"], uuid)
        assert _uptime(paths_a.console_socket) > up, "no restart after post-copy"
        _shell(paths_a.console_socket, "kill $(cat /tmp/dirt.pid)")
        assert wait_for(lambda: _ticks(paths_a.serial_log), 10), "the counter goes on, on A's console"
        assert _ticks(paths_a.serial_log)[0] >= ticks, (ticks, _ticks(paths_a.serial_log)[:3])
        assert _disk_sha(paths_a.console_socket, dev) == written, "the guest reads the same data disk on A"
        assert lab.qemus(uuid, "hv-b") == [] and store.get_vm("mover").host == "hv-a"
        print("B -> A post-copy: %s" % numbers)
        kinds = [e["kind"] for e in store.list_events(uuid, limit=60)]
        for kind in ("migration_started", "migrated_in", "migrated", "migration_failed", "migration_storage_ready"):
            assert kind in kinds, kinds
        assert kinds.index("migration_postcopy_switched") < kinds.index("migration_started"), "this move's switch"
    finally:
        store.close()
