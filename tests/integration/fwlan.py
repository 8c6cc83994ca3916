# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A LAN of the test's own for firewall tests: a namespace with a Linux bridge (the
"hypervisor", 10.77.0.1) and guest namespaces joined to it by veth pairs whose bridge ends
are named like Infinivirt TAPs. Nothing touches the machine's own namespace."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from typing import List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

HOST_IP = "10.77.0.1"
# A TCP client that can pick its source port (busybox nc cannot): prints what it reads.
_CLIENT = """
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.settimeout(1)
sock.bind(("", int(sys.argv[3])))
sock.connect((sys.argv[1], int(sys.argv[2])))
print(sock.recv(100).decode().strip())
"""


def sh(*args: str, check: bool = True, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, input=stdin, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(args), done.stderr))
    return done


@dataclasses.dataclass
class Guest:
    netns: str
    mac: str
    ip: str

    @property
    def nic(self) -> NicSpec:
        return NicSpec(bridge="br0", mac=self.mac)

    @property
    def tap(self) -> str:
        return self.nic.tap_name


class Lan:
    def __init__(self, guests: int = 3):
        self.tag = uuid.uuid4().hex[:6]
        self.netns = "ivfw-%s" % self.tag
        self.guests: List[Guest] = []
        sh("ip", "netns", "add", self.netns)
        self.ns("ip", "link", "set", "lo", "up")
        self.ns("ip", "link", "add", "br0", "type", "bridge")
        self.ns("ip", "addr", "add", HOST_IP + "/24", "dev", "br0")
        self.ns("ip", "link", "set", "br0", "up")
        for index in range(1, guests + 1):
            self.add_guest(index)

    def ns(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.netns, *args, check=check)

    def add_guest(self, index: int) -> Guest:
        guest = Guest(
            netns="%s-g%d" % (self.netns, index),
            mac="52:54:00:77:%s:%02x" % (self.tag[:2], index),
            ip="10.77.0.%d" % (10 + index),
        )
        sh("ip", "netns", "add", guest.netns)
        sh(
            "ip",
            "-n",
            self.netns,
            "link",
            "add",
            guest.tap,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            guest.netns,
        )
        sh("ip", "-n", self.netns, "link", "set", guest.tap, "master", "br0", "up")
        for args in (
            ["link", "set", "lo", "up"],
            ["link", "set", "eth0", "address", guest.mac],
            ["addr", "add", guest.ip + "/24", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
        ):
            sh("ip", "-n", guest.netns, *args)
        self.guests.append(guest)
        return guest

    def close(self) -> None:
        for guest in self.guests:
            sh("ip", "netns", "del", guest.netns, check=False)
        sh("ip", "netns", "del", self.netns, check=False)

    def flush_neighbours(self) -> None:
        for netns in [self.netns] + [g.netns for g in self.guests]:
            sh("ip", "-n", netns, "neigh", "flush", "all", check=False)

    # -- what the kernel has ----------------------------------------------------------------
    def ruleset(self) -> str:
        return self.ns("nft", "list", "ruleset").stdout

    def ruleset_json(self) -> list:
        return [
            item
            for item in json.loads(self.ns("nft", "-j", "list", "ruleset").stdout)["nftables"]
            if "metainfo" not in item
        ]

    # -- traffic ------------------------------------------------------------------------------
    def reach(self, pairs: Sequence[Tuple[Optional[Guest], str]]) -> List[bool]:
        """Ping each (from guest, or None for the hypervisor, to address) at once."""
        procs = []
        for src, dst in pairs:
            netns = src.netns if src is not None else self.netns
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "1", dst],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return [proc.wait(timeout=30) == 0 for proc in procs]

    def tcp(self, guest: Guest, port: int, client: Optional[Guest] = None) -> Optional[str]:
        """Connect to a one-shot busybox nc server in the guest; what it answered, or None."""
        return self._tcp(guest.netns, guest.ip, port, client.netns if client else self.netns)

    def tcp_to_host(self, client: Guest, port: int, source_port: Optional[int] = None) -> Optional[str]:
        """The same from a guest to a server on the hypervisor side of the bridge."""
        return self._tcp(self.netns, HOST_IP, port, client.netns, source_port)

    @staticmethod
    def _tcp(
        server_ns: str, server_ip: str, port: int, client_ns: str, source_port: Optional[int] = None
    ) -> Optional[str]:
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, "busybox", "nc", "-l", "-p", str(port), "-e", "busybox", "echo", "pong"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _attempt in range(100):  # until it listens
                if ":%d " % port in sh("ip", "netns", "exec", server_ns, "ss", "-ltn").stdout:
                    break
                time.sleep(0.02)
            done = sh(
                "ip",
                "netns",
                "exec",
                client_ns,
                sys.executable,
                "-c",
                _CLIENT,
                server_ip,
                str(port),
                str(source_port or 0),
                check=False,
            )
            return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
        finally:
            server.kill()
            server.wait()


def vm_record(
    lan: Lan,
    guest: Guest,
    name: str,
    department: Optional[str] = None,
    running: bool = True,
    ips: Sequence[str] = (),
    host: str = "hv-test",
) -> VmRecord:
    nic = dataclasses.replace(guest.nic, ips=tuple(ips))
    spec = VmSpec(name=name, nics=(nic,), netns=lan.netns, department=department)
    return VmRecord(
        uuid=str(uuid.uuid4()),
        name=name,
        host=host,
        status="running" if running else "stopped",
        spec=spec,
        running_spec=spec if running else None,
    )
