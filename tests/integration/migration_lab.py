# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two hosts on one machine for the live migration tests (test_migration.py,
test_migration_devices.py): hv-a and hv-b are network namespaces with their own host_id,
run dir (also their nvram_dir) and bridge vmbr0, joined by a veth pair that carries the
stream (10.77.0.1 / 10.77.0.2); a third namespace (the client) shares a LAN with both
bridges. Both hosts share one PostgreSQL store, reached through its UNIX socket. Each
host's monitor and its tasks run inside its namespace (host_task.py); B's also in a mount
namespace where the disks' directory (``disks``, the hosts' storage root) is a bind mount of
another, so each host has its own files at the same paths, as two machines would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid as uuidlib
from urllib.parse import urlsplit, urlunsplit

from monitor_proc import MonitorProcess
from qemu_procs import qemu_processes

HOST_TASK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_task.py")
PG_DIR = os.environ.get("INFINIVIRT_PG_DIR", "/var/tmp/infinivirt-pg")
GUEST_IP = "10.88.0.10"  # a guest on the client's LAN
BIND = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'  # B's disks: same path, other files


def _ip(*args):
    subprocess.run(["ip"] + list(args), check=True)


def _socket_url(url):
    """The same database through the server's UNIX socket (any network namespace)."""
    parts = urlsplit(url)
    port = parts.port or 5432
    netloc = "%s:%s@" % (parts.username, parts.password)
    return urlunsplit(parts._replace(netloc=netloc, query="host=%s&port=%d" % (PG_DIR, port)))


class Lab:
    """Hosts hv-a and hv-b (namespaces, bridges, run dirs, monitors) and a client."""

    def __init__(self, db_url):
        tag = uuidlib.uuid4().hex[:6]
        self.db_url = db_url
        self.ns = {"hv-a": "ivma-" + tag, "hv-b": "ivmb-" + tag, "client": "ivmc-" + tag}
        self.addr = {"hv-a": "10.77.0.1", "hv-b": "10.77.0.2"}
        self.run = {h: tempfile.mkdtemp(prefix="iv-%s-" % h) for h in ("hv-a", "hv-b")}
        self.monitors = {}
        self.storage = tempfile.mkdtemp(prefix="iv-mig-disks-")
        self.disks, self.b_disks = os.path.join(self.storage, "disks"), os.path.join(self.storage, "b-disks")
        os.mkdir(self.disks)
        os.mkdir(self.b_disks)
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.ns["client"], "link", "add", "lan", "type", "bridge")
        _ip("-n", self.ns["client"], "addr", "add", "10.88.0.1/24", "dev", "lan")
        _ip("-n", self.ns["client"], "link", "set", "lan", "up")
        _ip("link", "add", "mga-" + tag, "type", "veth", "peer", "name", "mgb-" + tag)
        for host, side in (("hv-a", "a"), ("hv-b", "b")):
            ns = self.ns[host]
            _ip("-n", ns, "link", "add", "vmbr0", "type", "bridge")
            _ip("-n", ns, "link", "set", "vmbr0", "up")
            veth = "mg%s-%s" % (side, tag)  # the stream's link
            _ip("link", "set", veth, "netns", ns)
            _ip("-n", ns, "addr", "add", self.addr[host] + "/24", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            lan, uplink = "l%s-%s" % (side, tag), "u%s-%s" % (side, tag)  # vmbr0 <-> the client's LAN
            _ip("link", "add", lan, "type", "veth", "peer", "name", uplink)
            _ip("link", "set", lan, "netns", ns)
            _ip("-n", ns, "link", "set", lan, "master", "vmbr0", "up")
            _ip("link", "set", uplink, "netns", self.ns["client"])
            _ip("-n", self.ns["client"], "link", "set", uplink, "master", "lan", "up")

    def monitor(self, host):
        log = os.path.join(self.run[host], "monitor.log")
        mon = MonitorProcess(
            self.db_url,
            self.run[host],
            host,
            log,
            roots=[self.disks],
            extra=["--migration-address", self.addr[host], "--nvram-dir", self.run[host]],
        )
        mon.argv = self.inside(host) + mon.argv
        self.monitors[host] = mon.start()

    def inside(self, host):
        """The argv prefix that runs a command on ``host``: its network namespace, and for B
        a mount namespace where B's disks are at the same path as A's."""
        prefix = ["ip", "netns", "exec", self.ns[host]]
        if host == "hv-b":
            prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", BIND, "sh", self.b_disks, self.disks]
            prefix += ["ip", "netns", "exec", self.ns[host]]
        return prefix

    def task(self, host, action, params):
        job = {"db_url": self.db_url, "run_dir": self.run[host], "host_id": host, "action": action, "params": params}
        done = subprocess.run(
            self.inside(host) + [sys.executable, HOST_TASK, json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def pings(self):
        argv = ["ip", "netns", "exec", self.ns["client"], "busybox", "ping", "-c", "2", "-W", "2", GUEST_IP]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def qemus(self, uuid, host):
        """The VM's QEMUs started from ``host``'s run dir (its monitor's argv names it too)."""
        return sorted(set(qemu_processes(uuid)) & set(qemu_processes(self.run[host])))

    def close(self):
        for mon in self.monitors.values():
            mon.stop()
        for run in self.run.values():
            for pid in set(qemu_processes(run)) - {m.proc.pid for m in self.monitors.values()}:
                os.kill(pid, 9)
            shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(self.storage, ignore_errors=True)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def open_lab(pg_url):
    """A Lab on the test's database, both monitors running; everything removed after."""
    lab = Lab(_socket_url(pg_url))
    try:
        lab.monitor("hv-a")
        lab.monitor("hv-b")
        yield lab
    finally:
        lab.close()
