# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one way to start a VM, and to stop one as a task asks. ``start_vm`` gathers what
the spec needs (display password, disk keys, NIC bridges, host PCI devices), then calls
engine.Engine.start. infinivirt_vm, snapshots and the host monitor's restarts and
autostarts all start through it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import wait_until_gone
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretError
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import GUEST_TIMEOUT, shutdown_through_agent
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import GRAPHICS_PASSWORD
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, shutdown_mode, stop_timeout


def start_vm(
    engine: Engine,
    rec: VmRecord,
    paused: bool = False,
    bridges: Optional[Dict[str, str]] = None,
    events: Sequence[Dict[str, Any]] = (),
    pci=None,
) -> List[str]:
    """Start a stopped VM with everything its spec needs; the only caller of Engine.start.
    The caller holds the VM's lock. ``events`` are written with the row once it runs.
    ``pci``: the vm.passthrough.PciService to ask (default: one on the context's sysfs).
    Returns warnings."""
    inputs = _start_inputs(engine, rec, bridges, pci, paused=paused, events=tuple(events))
    rec.host = engine.host_id  # a stopped VM moves to the host that starts it
    return engine.start(rec, inputs)


def receive_vm(engine: Engine, rec: VmRecord, incoming, bridges: Optional[Dict[str, str]] = None) -> VmRecord:
    """Start ``rec`` (the source's row) here as a migration target (``incoming``:
    vm.engine.launch.Incoming), gathered as start_vm gathers a start; returns the VM as
    this host runs it (Engine.start_incoming). Its files are journaled apart from the
    source's from the first one (HostResources.key)."""
    # the devices the source runs (its running spec), not a definition changed since
    rec = dataclasses.replace(rec, spec=rec.running_spec or rec.spec)
    engine.resources.apart.add(rec.uuid)
    try:
        return engine.start_incoming(rec, _start_inputs(engine, rec, bridges, None, incoming=incoming))
    except BaseException:
        engine.resources.apart.discard(rec.uuid)
        raise


def _start_inputs(engine: Engine, rec: VmRecord, bridges: Optional[Dict[str, str]], pci, **more: Any):
    """What Engine.start needs besides the record (launch.StartInputs), read and checked."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import StartInputs  # start-only

    bridges = nic_bridges(engine, rec.spec) if bridges is None else bridges
    keys = disk_keys(engine, rec.spec.disks)
    password = graphics_password(engine, rec)
    seed = None
    if rec.spec.cloud_init_digest:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import seed_iso

        seed = seed_iso(engine, rec)
    answers = None
    if rec.spec.unattend_digest:
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.unattend_media import media_iso

        answers = media_iso(engine, rec)
    if pci is None:
        from ansible_collections.infinivirt.core.plugins.module_utils.host.pci import SysfsRoot
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import PciService

        pci = PciService(engine, SysfsRoot(engine.ctx.sysfs_root))
    host_devices = pci.devices_for_start(rec)  # before the row moves to this host
    return StartInputs(
        graphics_password=password,
        disk_keys=keys,
        nic_bridges=bridges,
        host_devices=host_devices,
        cloud_init_iso=seed,
        unattend_iso=answers,
        **more,
    )


def stop_vm(engine: Engine, rec: VmRecord, params: Dict[str, Any], qemu_status: Optional[str] = None) -> List[str]:
    """Stop as the task's shutdown_mode, stop_timeout (0: no wait) and force say; returns
    warnings (an agent that did not answer, so ACPI powered the guest off)."""
    timeout, force = stop_timeout(params), bool(params.get("force"))
    warnings: List[str] = []
    if shutdown_mode(params) == "agent":
        timeout, warnings = _agent_shutdown(engine, rec, timeout, force, qemu_status)
    engine.stop(rec, timeout, force, qemu_status)
    return warnings


def _agent_shutdown(
    engine: Engine, rec: VmRecord, timeout: float, force: bool, qemu_status: Optional[str]
) -> Tuple[float, List[str]]:
    """guest-shutdown through the agent, then wait for QEMU to end; what is left of the
    timeout for engine.stop (which finds QEMU gone, or ends it when forced). An agent that
    does not answer: a warning, and the ACPI power button does it."""
    pid = engine.process.live_pid(rec)
    if pid is None or timeout <= 0:  # nothing runs, or no wait at all: engine.stop says what happens
        return timeout, []
    began = time.monotonic()
    if qemu_status not in (None, "running"):
        reason: Optional[str] = "the guest is not running (QEMU status %s)" % qemu_status
    else:
        reason = shutdown_through_agent(engine.run_dir, rec, min(timeout / 2, GUEST_TIMEOUT))  # half left for ACPI
    left = max(0.0, timeout - (time.monotonic() - began))
    if reason is not None:
        warning = "VM %s: shutdown_mode agent: %s; the ACPI power button was used instead" % (rec.name, reason)
        return left, [warning]
    if wait_until_gone(pid, rec.uuid, left, engine.host_paths.proc):
        return left, []
    if not force:
        raise StateError(
            "VM %s did not power off within stop_timeout=%g s after guest-shutdown through its "
            "guest agent; raise stop_timeout, or set force: true to end it anyway" % (rec.name, timeout)
        )
    return 0.0, []  # forced: engine.stop ends QEMU at once


def decrypt_password(engine: Engine, rec: VmRecord, token: str) -> str:
    try:
        return engine.ctx.secret_box().decrypt(token, secret_context(rec.uuid, GRAPHICS_PASSWORD))
    except SecretError as exc:
        raise SecretError("cannot read the display password of VM %s: %s" % (rec.name, exc)) from None


def graphics_password(engine: Engine, rec: VmRecord) -> Optional[str]:
    if not rec.spec.graphics_password_set:
        return None
    token = engine.store.get_secret(rec.uuid, GRAPHICS_PASSWORD)
    return decrypt_password(engine, rec, token) if token else None


def disk_keys(engine: Engine, disks: Sequence[DiskSpec]) -> Dict[str, str]:
    """LUKS passphrases of the encrypted volumes (made by infinivirt_disk) among disks."""
    keys = {}
    for disk in disks:
        volume = engine.store.get_volume(os.path.realpath(disk.path))
        if volume is not None and volume.encrypted:
            from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key

            key = read_luks_key(engine.store, engine.ctx.secret_box, volume.path)
            if key is None:
                raise SecretError("volume %s is encrypted but its key is not in the database" % volume.path)
            keys[disk.disk_id] = key
    return keys


def nic_bridges(engine: Engine, spec: VmSpec) -> Dict[str, str]:
    """MAC -> bridge of each NIC; a network must exist on this host, in the VM's namespace."""
    bridges = {}
    for index, nic in enumerate(spec.nics):
        if nic.bridge is not None:
            bridges[nic.mac] = nic.bridge
            continue
        row = engine.store.get_network(nic.network, engine.host_id)
        field = "nics[%d].network" % index
        if row is None:
            raise SpecError(
                field,
                "network %s does not exist on host %s (create it with "
                "infinivirt.core.infinivirt_net)" % (nic.network, engine.host_id),
            )
        netns = row["spec"].get("netns")
        if netns != spec.netns:
            raise SpecError(
                field,
                "network %s is in network namespace %s, the VM in %s; set "
                "netns to match" % (nic.network, netns or "(host)", spec.netns or "(host)"),
            )
        bridges[nic.mac] = row["spec"]["bridge"]
    return bridges
