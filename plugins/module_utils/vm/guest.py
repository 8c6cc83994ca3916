# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a VM's QEMU guest agent says (``guest`` in a VM's entry), and a shutdown through it.

An agent is asked only for a VM whose process runs with the agent's channel; one that does
not answer within GUEST_TIMEOUT is listed as not answering, so a listing of many VMs waits
at most that long for each silent one.
"""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any, Dict, Iterator, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.guest_agent import GuestAgent, GuestAgentError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import RUNNING, STOPPED

ANSWERING = "answering"
NOT_ANSWERING = "not answering"
DISABLED = "disabled"
GUEST_TIMEOUT = 2.0  # the most one VM's agent may take to answer all of a listing's questions
FREEZE_TIMEOUT = 60.0  # a freeze syncs every file system first: slow under TCG or heavy writes


def has_agent(rec: VmRecord, state: str) -> bool:
    """Whether the process (or, stopped, the definition) has the agent's channel."""
    spec = rec.running_spec if state != STOPPED and rec.running_spec is not None else rec.spec
    return bool(spec.guest_agent)


def agent_socket(run_dir: str, rec: VmRecord) -> str:
    return VmPaths.for_vm(run_dir, rec.uuid).guest_agent_socket


def guest_entry(
    rec: VmRecord, state: str, run_dir: str, local: bool = True, timeout: float = GUEST_TIMEOUT
) -> Dict[str, Any]:
    """The ``guest`` entry: the agent's status and what it reports (a running VM of this
    host only: another host's agent cannot be asked from here)."""
    if not has_agent(rec, state):
        return empty_entry(DISABLED)
    if state != RUNNING or not local:
        return empty_entry(NOT_ANSWERING)
    try:
        with GuestAgent(agent_socket(run_dir, rec), timeout, total=timeout) as agent:
            hostname = agent.host_name()
            osinfo = agent.osinfo()
            interfaces = agent.interfaces()
    except GuestAgentError:
        return empty_entry(NOT_ANSWERING)
    return entry_from(hostname, osinfo, interfaces)


def empty_entry(agent: str) -> Dict[str, Any]:
    return {
        "agent": agent,
        "hostname": None,
        "os": {"id": None, "version": None, "pretty_name": None},
        "interfaces": [],
        "ips": [],
    }


def entry_from(hostname: Any, osinfo: Any, interfaces: Any) -> Dict[str, Any]:
    """The entry from the agent's replies (guest-get-host-name, guest-get-osinfo,
    guest-network-get-interfaces); a field the agent left out is None."""
    osinfo = osinfo if isinstance(osinfo, dict) else {}
    nics = [_interface(item) for item in interfaces or () if isinstance(item, dict)]
    ips = [ip for nic in nics for ip in nic["ips"] if _reachable(ip)]
    return {
        "agent": ANSWERING,
        "hostname": hostname if isinstance(hostname, str) else None,
        "os": {"id": osinfo.get("id"), "version": osinfo.get("version-id"), "pretty_name": osinfo.get("pretty-name")},
        "interfaces": nics,
        # IPv4 first: the address a playbook usually wants is ips[0]
        "ips": sorted(ips, key=lambda ip: ipaddress.ip_address(ip).version),
    }


def _interface(item: Dict[str, Any]) -> Dict[str, Any]:
    mac = item.get("hardware-address")
    return {
        "name": item.get("name"),
        "mac": mac.lower() if isinstance(mac, str) else None,
        "ips": [
            a["ip-address"]
            for a in item.get("ip-addresses") or ()
            if isinstance(a, dict) and isinstance(a.get("ip-address"), str)
        ],
    }


def _reachable(ip: str) -> bool:
    """Not loopback, not link-local: an address another host can reach the guest at."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    return not (address.is_loopback or address.is_link_local)


def shutdown_through_agent(run_dir: str, rec: VmRecord, timeout: float = GUEST_TIMEOUT) -> Optional[str]:
    """Ask the agent to power the guest off (guest-shutdown, which it does not answer).
    None when asked; otherwise why not (the caller falls back to ACPI)."""
    if rec.running_spec is None or not rec.running_spec.guest_agent:
        return "the running VM has no guest agent channel (guest_agent was off when it started)"
    try:
        with GuestAgent(agent_socket(run_dir, rec), timeout, total=timeout) as agent:
            agent.shutdown()
    except GuestAgentError as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def frozen_filesystems(run_dir: str, rec: VmRecord) -> Iterator[Optional[int]]:
    """Freeze the guest's file systems through its agent for the block; yields how many the
    agent froze, or None when they are not frozen (no agent channel, or no answer within
    GUEST_TIMEOUT; the block runs anyway, as a crash-consistent snapshot). Thawed on the way
    out, also on failure, and also when the freeze itself failed half-way."""
    if rec.running_spec is None or not rec.running_spec.guest_agent:
        yield None
        return
    try:
        agent = GuestAgent(agent_socket(run_dir, rec), GUEST_TIMEOUT).__enter__()
    except GuestAgentError:
        yield None
        return
    agent.timeout = FREEZE_TIMEOUT
    try:
        try:
            count: Optional[int] = freeze_count(agent.fsfreeze_freeze())
        except GuestAgentError:
            count = None
        yield count
    finally:
        try:
            agent.fsfreeze_thaw()
        except GuestAgentError:
            _thaw_again(run_dir, rec)
        finally:
            agent.close()


def freeze_count(reply: Any) -> int:
    """guest-fsfreeze-freeze's reply, the number of file systems frozen; 0 if it is not one."""
    return reply if isinstance(reply, int) and not isinstance(reply, bool) and reply >= 0 else 0


def _thaw_again(run_dir: str, rec: VmRecord) -> None:
    """A second session for the thaw (the first one broke): a guest must not stay frozen.
    The agent thaws by itself only after its own (long) timeout."""
    with contextlib.suppress(GuestAgentError):
        with GuestAgent(agent_socket(run_dir, rec), FREEZE_TIMEOUT) as agent:
            agent.fsfreeze_thaw()
