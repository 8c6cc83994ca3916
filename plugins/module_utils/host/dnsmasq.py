# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""dnsmasq as the DHCP (and DNS) server of one network: started inside the network's
namespace, bound to its bridge only, configured on its command line alone.

The whole configuration is on the command line (``--conf-file=/dev/null``: the host's
/etc/dnsmasq.conf is never read), so ``/proc/PID/cmdline`` tells both that a process is
this network's dnsmasq (it carries the network's ``--pid-file=``) and whether it runs the
wanted configuration (the command line is equal to the one we would start).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from typing import Dict, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    process_carries,
    processes_carrying,
    read_pidfile,
    wait_until_gone,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.programs import find_program

# Process states
RUNNING, STOPPED, OUTDATED = "running", "stopped", "outdated"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class DnsmasqConfig:
    bridge: str
    gateway: str  # the bridge's IPv4 address, e.g. 10.77.0.1
    netmask: str  # e.g. 255.255.255.0
    dhcp_range: Optional[Tuple[str, str]] = None  # None: no DHCP
    lease: str = "3600"  # seconds, or "infinite"
    lease_max: int = 1000
    dns: bool = True


@dataclasses.dataclass(frozen=True)
class DnsmasqFiles:
    pidfile: str
    leasefile: str

    @classmethod
    def for_network(cls, run_dir: str, network: str) -> "DnsmasqFiles":
        base = os.path.join(os.path.abspath(run_dir), "net-%s.dnsmasq" % network)
        return cls(pidfile=base + ".pid", leasefile=base + ".leases")

    @property
    def token(self) -> str:
        """The argument that marks a process as this network's dnsmasq."""
        return "--pid-file=" + self.pidfile


def binary() -> str:
    path = find_program("dnsmasq")
    if path is None:
        raise NetError(
            "mode nat needs dnsmasq for DHCP and DNS: it is not installed on this "
            "host (Debian/Ubuntu: apt install dnsmasq-base)"
        )
    return os.path.realpath(path)  # the same argv[0] whatever PATH finds it through (/sbin -> /usr/sbin)


def argv(program: str, config: DnsmasqConfig, files: DnsmasqFiles) -> List[str]:
    args = [
        program,
        "--conf-file=/dev/null",
        files.token,
        "--bind-interfaces",
        "--interface=" + config.bridge,
        "--except-interface=lo",
        "--listen-address=" + config.gateway,
    ]
    if config.dhcp_range is not None:
        args += [
            "--dhcp-range=%s,%s,%s,%s" % (config.dhcp_range[0], config.dhcp_range[1], config.netmask, config.lease),
            "--dhcp-leasefile=" + files.leasefile,
            "--dhcp-authoritative",
            "--dhcp-lease-max=%d" % config.lease_max,
        ]
    if not config.dns:
        args.append("--port=0")  # no DNS, and no DNS server offered by DHCP
    return args


def _cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return [arg.decode("utf-8", "replace") for arg in fh.read().split(b"\0") if arg]
    except OSError:
        return []


def processes(files: DnsmasqFiles) -> List[int]:
    """Live processes that are this network's dnsmasq: the pidfile's, else any found."""
    pid = read_pidfile(files.pidfile)
    if pid and process_carries(pid, files.token):
        return [pid]
    return processes_carrying(files.token)  # pidfile lost or stale: look for a stray one


def status(wanted: List[str], files: DnsmasqFiles, netns: Optional[str]) -> Tuple[str, Optional[int]]:
    """(RUNNING, pid) with the wanted command line in the wanted namespace, (OUTDATED, pid)
    when it runs otherwise, (STOPPED, None) when none runs."""
    found = processes(files)
    if not found:
        return STOPPED, None
    pid = found[0]
    if len(found) == 1 and _cmdline(pid) == wanted and nsutil.process_ns_id(pid) == nsutil.ns_id(netns):
        return RUNNING, pid
    return OUTDATED, pid


def start(wanted: List[str], files: DnsmasqFiles, netns: Optional[str]) -> int:
    """Start dnsmasq (it daemonizes once it listens) and return its PID."""
    try:
        ensure_private_dir(os.path.dirname(files.pidfile), "run_dir")
    except OSError as exc:
        raise NetError("cannot create the run directory %s: %s" % (os.path.dirname(files.pidfile), exc)) from exc
    _unlink(files.pidfile)
    try:
        done = nsutil.run(wanted, netns, timeout=START_TIMEOUT)
    except OSError as exc:
        raise NetError("cannot run dnsmasq: %s" % exc) from exc
    except subprocess.TimeoutExpired:
        raise NetError("dnsmasq did not finish starting within %g s" % START_TIMEOUT) from None
    if done.returncode != 0:
        raise NetError(
            "dnsmasq did not start (exit status %d): %s" % (done.returncode, (done.stderr or done.stdout).strip())
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        pid = read_pidfile(files.pidfile)
        if pid and process_carries(pid, files.token):
            return pid
        if time.monotonic() > deadline:
            raise NetError("dnsmasq started but %s names no live dnsmasq" % files.pidfile)
        time.sleep(0.01)


def stop(files: DnsmasqFiles, timeout: float = STOP_TIMEOUT) -> List[int]:
    """End every process that is this network's dnsmasq (SIGTERM, then SIGKILL) and remove
    its pidfile; return the PIDs it ended."""
    ended = []
    for pid in processes(files):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not process_carries(pid, files.token):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if wait_until_gone(pid, files.token, timeout, owned=process_carries):
                break
        else:
            raise NetError("dnsmasq (PID %d) did not exit after SIGKILL" % pid)
        ended.append(pid)
    _unlink(files.pidfile)
    return ended


def remove_files(files: DnsmasqFiles) -> None:
    for path in (files.pidfile, files.leasefile):
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NetError("cannot remove %s: %s" % (path, exc)) from exc


# -- DHCP leases (what infinivirt_vm's wait_for: ip reads when a guest has no agent) -------
def parse_leases(text: str) -> Dict[str, Tuple[str, str]]:
    """dnsmasq's lease file ("EXPIRY MAC IP HOSTNAME CLIENT-ID" per line) as lowercase
    MAC -> (IPv4 address, expiry); IPv6 ("duid" lines and later) and bad lines are skipped.
    A MAC listed twice keeps its last line."""
    leases: Dict[str, Tuple[str, str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0] == "duid":
            continue
        expiry, mac, address = fields[0], fields[1].lower(), fields[2]
        if not expiry.isdigit() or len(mac.split(":")) != 6 or address.count(".") != 3:
            continue
        leases[mac] = (address, expiry)
    return leases


def read_leases(leasefile: str) -> Dict[str, Tuple[str, str]]:
    """parse_leases of the file; empty when it does not exist (yet)."""
    try:
        with open(leasefile, encoding="utf-8", errors="replace") as fh:
            return parse_leases(fh.read())
    except OSError:
        return {}


def leasefile_of(pidfile: str) -> str:
    """The lease file beside a network's pidfile (DnsmasqFiles.for_network names both)."""
    base = pidfile[: -len(".pid")] if pidfile.endswith(".pid") else pidfile
    return base + ".leases"
