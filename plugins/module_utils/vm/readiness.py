# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waiting for a started VM to be ready (``wait_for``), and the console tail of a failure.

Imported only by a task that waits or whose start failed. Every VM of a task is polled in
turn against its own deadline (one deadline for all of infinivirt_vms' VMs, not one after
the other); each probe is short (the agent and SSH get at most PROBE_TIMEOUT), so a silent
VM does not hold the others. Nothing here holds the VM's lock or a QMP connection.

Where an address comes from: the DHCP leases of the VM's NICs on NAT networks (the file
the network's dnsmasq keeps, found through the network's resource journal), else the guest
agent. SSH is tried from inside the VM's network namespace: a socket made there.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host import dnsmasq
from ansible_collections.infinivirt.core.plugins.module_utils.host.netns import entered, parse_ns_ref
from ansible_collections.infinivirt.core.plugins.module_utils.network.plan import J_DNSMASQ
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import ANSWERING, guest_entry, has_agent
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.readiness import (
    AGENT,
    SERIAL,
    SSH,
    TAIL_READ,
    WaitSpec,
    agent_address,
    clean_text,
    cloud_init_secrets,
    console_tail,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import RUNNING

PROBE_TIMEOUT = 2.0  # the most one look at one VM's agent or SSH port may take
POLL_INTERVAL = 1.0  # between two rounds over the VMs that are not ready yet
SSH_PORT = 22
LEASES, FROM_AGENT = "leases", "agent"


class NotReady(StateError):
    """A start or a wait failed; ``result`` holds what the failed task returns besides msg
    (``console_tail``)."""

    def __init__(self, message: str, tail: Sequence[str]):
        super().__init__(message)
        self.result = {"console_tail": list(tail)}


@dataclasses.dataclass(frozen=True)
class LeaseSource:
    mac: str
    network: str
    leasefile: str


def check_wait(engine, spec: VmSpec, wait: WaitSpec) -> List[LeaseSource]:
    """Fail (naming wait_for) when nothing could ever satisfy ``wait`` for this VM; the
    lease files its NICs on NAT networks get addresses in. Reads only."""
    if wait.kind == AGENT and not spec.guest_agent:
        raise SpecError("wait_for", "agent needs the agent's channel: set guest_agent: true")
    if not wait.needs_address:
        return []
    if not spec.nics:
        raise SpecError("wait_for", "%s needs a NIC (the VM has none)" % wait.kind)
    sources = lease_sources(engine, spec)
    if not sources and not spec.guest_agent:
        raise SpecError(
            "wait_for",
            "%s needs an address source: guest_agent: true, or a NIC on a NAT network "
            "(infinivirt_net mode: nat), whose DHCP leases tell the address" % wait.kind,
        )
    return sources


def check_running(rec: VmRecord, wait: WaitSpec, host_id: str, started: bool) -> None:
    """A VM this task does not start is waited for as it runs: on this host, and (for
    ``agent``) with the agent's channel in its running process."""
    if started:
        return
    if rec.host != host_id:
        raise StateError("wait_for: VM %s runs on host %s; wait for it from there" % (rec.name, rec.host))
    if wait.kind == AGENT and rec.running_spec is not None and not rec.running_spec.guest_agent:
        raise SpecError(
            "wait_for",
            "agent: VM %s runs without the agent's channel (guest_agent was off when it started); "
            "restart it (state: restarted) to add it" % rec.name,
        )


def lease_sources(engine, spec: VmSpec) -> List[LeaseSource]:
    """The lease file of each NIC on a NAT network of this host (the dnsmasq pidfile its
    network's journal records, so another run_dir of infinivirt_net is found too)."""
    found = []
    for nic in spec.nics:
        if nic.network is None:
            continue
        row = engine.store.get_network(nic.network, engine.host_id)
        if row is None or row.get("mode") != "nat":
            continue
        journal = engine.store.journal_list("network:%s:%s" % (engine.host_id, nic.network))
        pidfiles = [parse_ns_ref(ref)[1] for kind, ref in journal if kind == J_DNSMASQ]
        if pidfiles:
            leasefile = dnsmasq.leasefile_of(pidfiles[0])
        else:
            leasefile = dnsmasq.DnsmasqFiles.for_network(engine.run_dir, nic.network).leasefile
        found.append(LeaseSource(nic.mac.lower(), nic.network, leasefile))
    return found


def lease_baseline(sources: Sequence[LeaseSource]) -> Dict[str, str]:
    """MAC -> expiry of the leases before a start: only a lease granted after it counts."""
    baseline = {}
    for source in sources:
        lease = dnsmasq.read_leases(source.leasefile).get(source.mac)
        if lease is not None:
            baseline[source.mac] = lease[1]
    return baseline


class Waiter:
    """One VM's wait: ``poll`` looks once; ``error`` is set when it failed."""

    def __init__(
        self,
        rec: VmRecord,
        wait: WaitSpec,
        sources: Sequence[LeaseSource] = (),
        baseline: Optional[Dict[str, str]] = None,
        started: bool = False,
        params: Optional[Dict[str, Any]] = None,
    ):
        self.rec = rec
        self.wait = wait
        self.sources = list(sources)
        self.baseline = dict(baseline or {})
        self.started = started  # this task started the VM: its log is this boot's
        self.params = params or {}
        self.address: Optional[str] = None
        self.source: Optional[str] = None
        self.seconds = 0.0
        self.error: Optional[NotReady] = None
        self.deadline = 0.0
        self._offset = 0
        self._partial = b""
        self._agent_said = "not asked"

    # -- looking ------------------------------------------------------------------------------
    def poll(self, engine, now: float) -> bool:
        """One look; True when ready."""
        budget = max(0.05, min(PROBE_TIMEOUT, self.deadline - now))
        if self.wait.kind == SERIAL:
            return self._serial_matches(engine)
        if self.wait.kind == AGENT:
            return self._agent_answers(engine, budget)
        if self.address is None:
            self.address, self.source = self._address(engine, budget)
        if self.address is None:
            return False
        if self.wait.kind != SSH:
            return True
        return ssh_answers(_netns(self.rec), self.address, budget)

    def _agent_answers(self, engine, budget: float) -> bool:
        entry = guest_entry(self.rec, RUNNING, engine.run_dir, timeout=budget)
        self._agent_said = entry["agent"]
        return entry["agent"] == ANSWERING

    def _address(self, engine, budget: float) -> Tuple[Optional[str], Optional[str]]:
        for source in self.sources:
            lease = dnsmasq.read_leases(source.leasefile).get(source.mac)
            if lease is not None and self.baseline.get(source.mac) != lease[1]:
                return lease[0], LEASES
        if not has_agent(self.rec, RUNNING):
            return None, None
        entry = guest_entry(self.rec, RUNNING, engine.run_dir, timeout=budget)
        self._agent_said = entry["agent"]
        address = agent_address(entry, [nic.mac for nic in _spec(self.rec).nics])
        return (address, FROM_AGENT) if address else (None, None)

    def _serial_matches(self, engine) -> bool:
        path = serial_log(engine, self.rec)
        try:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < self._offset:  # a new log (the VM restarted)
                    self._offset, self._partial = 0, b""
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return False
        self._offset += len(data)
        data = self._partial + data
        complete, newline, self._partial = data.rpartition(b"\n")
        regex = re.compile(self.wait.pattern or "")
        # The unfinished last line counts too: a prompt ("login: ") ends without a newline.
        chunks = ([complete] if newline else []) + ([self._partial] if self._partial else [])
        return any(regex.search(line) for chunk in chunks for line in clean_text(chunk).split("\n"))

    # -- failing ------------------------------------------------------------------------------
    def timed_out(self, engine) -> NotReady:
        why = {
            AGENT: "its guest agent did not answer (%s)" % self._agent_said,
            SERIAL: "no line of its serial console matched %r" % self.wait.pattern,
        }.get(self.wait.kind) or self._address_story()
        message = (
            "VM %s is not ready: wait_for %s timed out after %.0f s (wait_timeout %g): %s. The VM is left "
            "running; console_tail holds the last lines of its serial console"
            % (self.rec.name, self.wait.kind, self.seconds, self.wait.timeout, why)
        )
        return NotReady(message, tail_of(engine, self.rec, self.params))

    def stopped(self, engine) -> NotReady:
        message = (
            "VM %s stopped while the task waited for %s (after %.0f s); console_tail holds the last lines "
            "of its serial console" % (self.rec.name, self.wait.kind, self.seconds)
        )
        return NotReady(message, tail_of(engine, self.rec, self.params))

    def _address_story(self) -> str:
        if self.address is None:
            leases = ", ".join("%s (MAC %s)" % (s.network, s.mac) for s in self.sources) or "no NAT network"
            return "no address yet: none in the DHCP leases of %s; the guest agent: %s" % (leases, self._agent_said)
        return "address %s (from the %s) found, but TCP port %d did not answer with an SSH banner" % (
            self.address,
            "DHCP leases" if self.source == LEASES else "guest agent",
            SSH_PORT,
        )

    # -- the result -----------------------------------------------------------------------------
    def ready_entry(self) -> Dict[str, Any]:
        value: Any = {SERIAL: self.wait.pattern} if self.wait.kind == SERIAL else self.wait.kind
        return {
            "wait_for": value,
            "address": self.address,
            "address_source": self.source,
            "seconds": round(self.seconds, 1),
        }

    def fill(self, engine, vm: Dict[str, Any]) -> None:
        """The VM entry after the wait: ``ready``, and ``guest`` read again (one agent
        round trip); without an answering agent, ``guest.ips`` holds the leased address."""
        vm["ready"] = self.ready_entry()
        guest = guest_entry(self.rec, RUNNING, engine.run_dir, local=self.rec.host == engine.host_id)
        if guest["agent"] != ANSWERING and self.address and not guest["ips"]:
            guest["ips"] = [self.address]
        vm["guest"] = guest


def wait_all(engine, waiters: Sequence[Waiter], clock: Callable[[], float] = time.monotonic) -> None:
    """Poll every waiter in turn until each is ready, failed or past its deadline
    (``wait_timeout`` from now: one start for all). A timeout of 0 looks once."""
    began = clock()
    for waiter in waiters:
        waiter.deadline = began + waiter.wait.timeout
    pending = list(waiters)
    while pending:
        for waiter in list(pending):
            now = clock()
            ready = waiter.poll(engine, now)
            waiter.seconds = clock() - began
            if ready:
                pending.remove(waiter)
            elif not engine.process.is_alive(waiter.rec):
                waiter.error = waiter.stopped(engine)
                pending.remove(waiter)
            elif clock() >= waiter.deadline:
                waiter.error = waiter.timed_out(engine)
                pending.remove(waiter)
        if pending:
            nearest = min(w.deadline for w in pending)
            time.sleep(max(0.0, min(POLL_INTERVAL, nearest - clock())))


# -- probes ----------------------------------------------------------------------------------
def ssh_answers(netns: Optional[str], address: str, timeout: float) -> bool:
    """Whether an SSH server answers on ``address``:22 with its banner. The socket is made
    inside ``netns`` (so it connects there), then used from here."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with entered(netns):
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, SSH_PORT))
        banner = b""
        while b"\n" not in banner and len(banner) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            banner += chunk
        return banner.startswith(b"SSH-")
    except OSError:
        return False
    finally:
        sock.close()


def _spec(rec: VmRecord) -> VmSpec:
    return rec.running_spec if rec.running_spec is not None else rec.spec


def _netns(rec: VmRecord) -> Optional[str]:
    return _spec(rec).netns


# -- the console tail ----------------------------------------------------------------------
def serial_log(engine, rec: VmRecord) -> str:
    return rec.serial_log_path or VmPaths.for_vm(engine.run_dir, rec.uuid).serial_log


def tail_of(engine, rec: VmRecord, params: Optional[Dict[str, Any]] = None) -> List[str]:
    """The last lines of the VM's serial console, every secret the task knows masked; []
    when there is no log."""
    try:
        with open(serial_log(engine, rec), "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL_READ))
            data = fh.read(TAIL_READ)
    except OSError:
        return []
    return console_tail(data, task_secrets(engine, rec, params or {}), whole=size <= TAIL_READ)


def task_secrets(engine, rec: VmRecord, params: Dict[str, Any]) -> List[str]:
    """Every secret value the task knows of the VM: the display password (given or
    stored), the LUKS keys of its disks, the strings of its cloud_init (given or stored).
    One that cannot be read is skipped: what cannot be read cannot be printed from here."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm import power

    found = [str((params.get("graphics") or {}).get("password") or "")]
    found += cloud_init_secrets(params.get("cloud_init"))
    readers = (
        lambda: [power.graphics_password(engine, rec) or ""],
        lambda: list(power.disk_keys(engine, _spec(rec).disks).values()),
        lambda: cloud_init_secrets(_stored_cloud_init(engine, rec)),
    )
    for read in readers:
        try:
            found += read()
        except (InfinivirtError, ValueError):
            continue
    return [value for value in found if value]


def _stored_cloud_init(engine, rec: VmRecord) -> Any:
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import opened

    payload = opened(engine, rec.uuid)
    return payload["option"] if payload else None


def with_console_tail(exc: InfinivirtError, engine, rec: VmRecord, params: Dict[str, Any]) -> InfinivirtError:
    """``exc`` (a failed start) carrying the console tail in its ``result``."""
    result = dict(getattr(exc, "result", None) or {})
    result.setdefault("console_tail", tail_of(engine, rec, params))
    exc.result = result  # type: ignore[attr-defined]
    return exc
