# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start, stop, pause and resume one VM's QEMU process.

Start: QEMU is spawned paused (-S) and daemonized, checked over QMP, then let run with
`cont`. Stop: ACPI power button (`system_powerdown`), then, only with force, `quit` and
SIGKILL. Every file QEMU makes for a VM is journaled in the store before it exists and
dropped from the journal after it is gone. A transition has finished when a method returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from typing import Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.context import DEFAULT_NVRAM_DIR
from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    InfinivirtError,
    QemuError,
    QmpError,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host import netns as nsutil
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import NetError
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    kill_vm_process,
    process_runs_vm,
    read_pidfile,
    run_daemonized,
    vm_processes,
    wait_until_gone,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.tap import TapSpec, create_tap, remove_tap
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.argv import LaunchContext, build_argv
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import (
    HostPaths,
    probe,
    resolve_accel,
    resolve_cpu,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession
from ansible_collections.infinivirt.core.plugins.module_utils.vm.disks import (
    SPARE_ROOT_PORTS,
    DiskSpec,
    HotplugPlan,
    blockdevs,
    device,
    device_id,
    node_names,
    secret_id,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.firmware import ensure_nvram, firmware_files
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import (
    NicHotplugPlan,
    NicSpec,
    pcie_slot,
    queue_count,
    use_vhost,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import device as nic_device
from ansible_collections.infinivirt.core.plugins.module_utils.vm.nics import netdev as nic_netdev
from ansible_collections.infinivirt.core.plugins.module_utils.vm.preflight import check_vhost
from ansible_collections.infinivirt.core.plugins.module_utils.vm.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.states import (
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
    fold_status,
)

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the trailing NUL
POWERDOWN_RESEND = 5.0  # a guest still booting has not opened its power button yet
UNPLUG_TIMEOUT = 30.0  # the guest's PCIe hot-plug driver takes ~5 s (attention button delay)
QUIT_GRACE = 5.0
DYING_GRACE = 2.0  # how long a QEMU that refused QMP may take to be gone, when it is ending



@dataclasses.dataclass(frozen=True)
class VmPaths:
    pidfile: str
    qmp_socket: str
    serial_log: str
    console_socket: str

    @classmethod
    def for_vm(cls, run_dir: str, uuid: str) -> "VmPaths":
        base = os.path.join(run_dir, uuid)
        paths = cls(pidfile=base + ".pid", qmp_socket=base + ".qmp",
                    serial_log=base + ".serial.log", console_socket=base + ".console")
        if len(paths.qmp_socket.encode()) > SOCKET_PATH_MAX:
            reason = "%s is too long: the QMP socket path %s exceeds the %d-byte limit of a " \
                "UNIX socket" % (run_dir, paths.qmp_socket, SOCKET_PATH_MAX)
            raise SpecError("run_dir", reason)
        return paths

    def journal(self, console: bool = False) -> List[tuple]:
        files = [("pidfile", self.pidfile), ("qmp_socket", self.qmp_socket),
                 ("serial_log", self.serial_log)]
        return files + ([("console_socket", self.console_socket)] if console else [])


def systemd_scope_prefix(uuid: str, name: str, systemd_dir: str = "/run/systemd/system",
                         runner: Optional[str] = None) -> List[str]:
    """Where systemd is PID 1, run QEMU in its own scope so systemd tracks it and does not
    kill it with the session that started it."""
    runner = runner or shutil.which("systemd-run")
    if not os.path.isdir(systemd_dir) or runner is None:
        return []
    return [runner, "--scope", "--quiet", "--collect", "--unit=infinivirt-%s" % uuid,
            "--slice=infinivirt.slice", "--description=Infinivirt VM %s" % name,
            "--property=KillMode=process"]


class Lifecycle:
    def __init__(self, store, run_dir: str, qemu_binary: Optional[str] = None,
                 host_paths: HostPaths = HostPaths(), start_timeout: float = 60.0,
                 qmp_timeout: float = 10.0, nvram_dir: str = DEFAULT_NVRAM_DIR,
                 firewall=None):
        self.store = store
        self.firewall = firewall  # firewall.service.FirewallService, or None
        self.run_dir = run_dir
        self.nvram_dir = nvram_dir
        self.qemu_binary = qemu_binary
        self.host_paths = host_paths
        self.start_timeout = start_timeout
        self.qmp_timeout = qmp_timeout

    # -- observing --------------------------------------------------------------------
    def pidfile(self, rec: VmRecord) -> str:
        return rec.pidfile_path or VmPaths.for_vm(self.run_dir, rec.uuid).pidfile

    def live_pid(self, rec: VmRecord) -> Optional[int]:
        """The PID of this VM's QEMU, from its pidfile, if that process really is it."""
        pid = read_pidfile(self.pidfile(rec))
        return pid if process_runs_vm(pid, rec.uuid, self.host_paths.proc) else None

    def is_alive(self, rec: VmRecord) -> bool:
        return self.live_pid(rec) is not None

    def query_status(self, rec: VmRecord) -> Optional[str]:
        """QEMU's own run state (query-status), or None when no process runs."""
        pid = self.live_pid(rec)
        if pid is None:
            return None
        try:
            return self.qmp(rec, "query-status")["status"]
        except QmpError:
            # A QEMU that is ending (crashed, or killed) resets the connection; its threads
            # may outlive the refusal by some milliseconds. One that stays is really broken.
            if wait_until_gone(pid, rec.uuid, DYING_GRACE, self.host_paths.proc):
                return None
            raise

    def live_state(self, rec: VmRecord) -> str:
        return fold_status(self.query_status(rec))

    def qmp(self, rec: VmRecord, command: str, arguments: Optional[dict] = None):
        with QmpSession(rec.qmp_socket_path, rec.name, self.qmp_timeout) as qmp:
            return qmp.execute(command, arguments, timeout=self.qmp_timeout)

    def reconcile(self, rec: VmRecord, state: str) -> bool:
        """Bring the row in line with what runs (a guest that powered itself off, a run
        that could not save its result). Returns whether the row was rewritten."""
        pid = self.live_pid(rec) if state != STOPPED else None
        if rec.status == state and rec.qemu_pid == pid:
            return False
        if state == STOPPED:
            self.release_files(rec, keep_serial_log=True)
            self._clear_launch(rec)
        rec.status, rec.qemu_pid = state, pid
        self.store.update_vm(rec)
        if state == STOPPED:
            self.sync_firewall(rec)  # a crashed VM's rules go with its TAPs
        return True

    # -- starting ---------------------------------------------------------------------
    def plan_launch(self, rec: VmRecord) -> tuple:
        """Resolve accelerator and CPU for this host: (accel, cpu, binary, warnings).
        Writes nothing but the probe cache, and that only once run_dir exists."""
        cache = os.path.join(self.run_dir, "probe-cache.json") if os.path.isdir(self.run_dir) else None
        caps = probe(self.qemu_binary, cache, self.host_paths)
        accel, warnings = resolve_accel(rec.spec.accel, caps)
        cpu, cpu_warnings = resolve_cpu(rec.spec.cpu_model, rec.spec.cpu_flags, accel, caps)
        return accel, cpu, caps.binary, warnings + cpu_warnings

    def start(self, rec: VmRecord, paused: bool = False,
              graphic_password: Optional[str] = None,
              disk_keys: Optional[Dict[str, str]] = None,
              nic_bridges: Optional[Dict[str, str]] = None) -> List[str]:
        """Start the VM and return warnings. On failure nothing of it is left behind.
        The display password reaches QEMU over QMP while the guest is still paused.
        ``nic_bridges``: MAC -> the bridge each NIC's TAP joins."""
        if rec.spec.graphics_password_set and graphic_password is None:
            raise StateError("VM %s: its display password could not be read" % rec.name)
        if self.is_alive(rec):
            raise StateError("VM %s is already running as PID %s" % (rec.name, self.live_pid(rec)))
        paths = VmPaths.for_vm(self.run_dir, rec.uuid)
        vhost = check_vhost(rec.spec)
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        accel, cpu, binary, warnings = self.plan_launch(rec)
        self.release_files(rec, keep_serial_log=False)  # leftovers of a crashed run
        for kind, ref in paths.journal(rec.spec.console_socket):
            self.store.journal_add(rec.uuid, kind, ref)
        # Recorded before QEMU exists: if the database is lost mid-start, the next run
        # finds the process through this pidfile instead of starting a second one.
        code = template = nvram = None
        if rec.spec.firmware == "uefi":  # before anything is recorded: OVMF may be missing
            code, template = firmware_files(rec.spec.secure_boot, rec.spec.uefi_firmware)
        rec.status, rec.qemu_pid = STARTING, None
        rec.pidfile_path, rec.qmp_socket_path, rec.serial_log_path = (
            paths.pidfile, paths.qmp_socket, paths.serial_log)
        rec.running_spec, rec.launch_accel, rec.launch_cpu = rec.spec, accel, cpu
        self.store.update_vm(rec)

        if template is not None:
            nvram = self.nvram_path(rec)
            self.store.journal_add(rec.uuid, "nvram", nvram)  # kept until the VM is removed
            ensure_nvram(nvram, template)
        try:
            self._make_taps(rec, rec.spec.nics, nic_bridges or {})
        except InfinivirtError:
            self._abort_start(rec)
            raise
        secret_files = self._write_disk_keys(rec, disk_keys or {})
        ctx = LaunchContext(binary=binary, uuid=rec.uuid, accel=accel, cpu=cpu, vhost_available=vhost,
                            firmware_code=code, nvram=nvram, disk_secret_files=secret_files,
                            disk_active_paths=self.active_paths(rec),
                            pidfile=paths.pidfile, qmp_socket=paths.qmp_socket,
                            serial_log=paths.serial_log,
                            console_socket=paths.console_socket if rec.spec.console_socket else None)
        argv = systemd_scope_prefix(rec.uuid, rec.name) + build_argv(rec.spec, ctx)
        try:
            rc, stderr = run_daemonized(argv, self.start_timeout, nsutil.preexec(rec.spec.netns))
        finally:  # QEMU has read them (or failed): keys do not stay on disk
            self._drop_disk_keys(rec, secret_files)
        try:
            if rc != 0:
                raise QemuError("VM %s: QEMU failed to start (exit %d): %s"
                                % (rec.name, rc, stderr or "no message"))
            rec.qemu_pid = self.live_pid(rec)
            if rec.qemu_pid is None:
                raise QemuError("VM %s: QEMU exited right after starting" % rec.name)
            status = self.qmp(rec, "query-status")["status"]
            if status != "prelaunch":
                raise QemuError("VM %s: expected QEMU in prelaunch state, found %s"
                                % (rec.name, status))
            self.sync_firewall(rec)  # before the guest sends its first frame
            if rec.spec.graphics_type == "vnc":
                rec.launch_graphics_port = self._setup_vnc(rec, graphic_password)
            if not paused:
                self.qmp(rec, "cont")
        except (InfinivirtError, KeyError, TypeError, ValueError) as exc:
            self._abort_start(rec)
            if isinstance(exc, InfinivirtError):
                raise
            raise QemuError("VM %s: unexpected QMP reply while starting: %r" % (rec.name, exc)) from exc
        rec.status = PAUSED if paused else RUNNING
        self.store.update_vm(rec)
        return warnings

    def _make_taps(self, rec: VmRecord, nics, bridges: Dict[str, str]) -> None:
        """Each NIC's TAP, journaled before it exists, on its bridge."""
        for nic in nics:
            self.store.journal_add(rec.uuid, "tap", nsutil.ns_ref(rec.spec.netns, nic.tap_name))
            create_tap(TapSpec(name=nic.tap_name, bridge=bridges[nic.mac],
                               multi_queue=queue_count(nic, rec.spec.vcpus) > 1, mtu=nic.mtu),
                       rec.spec.netns)

    def _drop_tap(self, rec: VmRecord, ref: str) -> None:
        netns, tap = nsutil.parse_ns_ref(ref)
        try:
            remove_tap(tap, netns)
        except (NetError, nsutil.NetnsError, SpecError):
            pass  # its namespace is gone, and the TAP with it
        self.store.journal_remove(rec.uuid, "tap", ref)

    def active_paths(self, rec: VmRecord) -> Dict[str, str]:
        """disk_id -> the top overlay of each disk that has external snapshots."""
        top: Dict[str, str] = {}
        by_path = {d.path: d for d in rec.spec.disks}
        for layer in self.store.list_layers(rec.uuid):  # ordered by seq
            if layer["base_path"] in by_path:
                top[by_path[layer["base_path"]].disk_id] = layer["overlay"]
        return top

    def _write_disk_keys(self, rec: VmRecord, disk_keys: Dict[str, str]) -> Dict[str, str]:
        """One 0600 file per encrypted disk for QEMU's secret objects, journaled first."""
        files = {}
        for disk_id, key in disk_keys.items():
            path = os.path.join(self.run_dir, "%s.%s.key" % (rec.uuid, disk_id))
            self.store.journal_add(rec.uuid, "disk_key", path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(key)
            files[disk_id] = path
        return files

    def _drop_disk_keys(self, rec: VmRecord, files: Dict[str, str]) -> None:
        for path in files.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            self.store.journal_remove(rec.uuid, "disk_key", path)

    def _setup_vnc(self, rec: VmRecord, password: Optional[str]) -> int:
        """Set the password (if any) and return the port QEMU listens on."""
        if password is not None:
            self.set_graphic_password(rec, password)
        return int(self.qmp(rec, "query-vnc")["service"])

    def set_graphic_password(self, rec: VmRecord, password: str) -> None:
        """Also works live; open sessions keep going (QEMU cannot drop VNC clients)."""
        self.qmp(rec, "set_password", {"protocol": "vnc", "password": password})

    # -- disks while running ------------------------------------------------------------
    def hotplug_disks(self, rec: VmRecord, plan: HotplugPlan,
                      disk_keys: Optional[Dict[str, str]] = None) -> None:
        """Unplug, then plug, as the plan says; the running spec follows each step, so a
        failure half-way leaves the row telling what the VM really has. An encrypted disk's
        key goes to QEMU inside QMP (object-add), never through argv or a file."""
        disk_keys = disk_keys or {}
        running = list(rec.running_spec.disks)
        for disk in plan.remove:
            with QmpSession(rec.qmp_socket_path, rec.name, self.qmp_timeout) as qmp:
                # The guest must let go of the device: wait for QEMU to say it is gone.
                qmp.execute_and_wait("device_del", {"id": device_id(disk)}, "DEVICE_DELETED",
                                     {"device": device_id(disk)}, timeout=UNPLUG_TIMEOUT)
                for node in reversed(node_names(disk)):
                    qmp.execute("blockdev-del", {"node-name": node}, timeout=self.qmp_timeout)
                if any(o.get("name") == secret_id(disk) for o in
                       qmp.execute("qom-list", {"path": "/objects"}, timeout=self.qmp_timeout)):
                    qmp.execute("object-del", {"id": secret_id(disk)}, timeout=self.qmp_timeout)
            running = [d for d in running if d.path != disk.path]
            self._record_running_disks(rec, running)
        for disk in plan.add:
            with QmpSession(rec.qmp_socket_path, rec.name, self.qmp_timeout) as qmp:
                bus = self._free_root_port(qmp) if rec.spec.machine_type == "q35" and disk.bus == "virtio" else None
                key = disk_keys.get(disk.disk_id)
                if key is not None:
                    qmp.execute("object-add", {"qom-type": "secret", "id": secret_id(disk),
                                               "format": "raw", "data": key}, timeout=self.qmp_timeout)
                for node in blockdevs(disk, encrypted=key is not None):
                    qmp.execute("blockdev-add", node, timeout=self.qmp_timeout)
                qmp.execute("device_add", device(disk, bus), timeout=self.qmp_timeout)
            running.append(disk)
            self._record_running_disks(rec, running)

    def _free_root_port(self, qmp: QmpSession) -> str:
        for bus in qmp.execute("query-pci", timeout=self.qmp_timeout):
            for dev in bus.get("devices", []):
                bridge = dev.get("pci_bridge")
                if dev.get("qdev_id", "").startswith("rp") and bridge is not None \
                        and not bridge.get("devices"):
                    return dev["qdev_id"]
        raise StateError("no free PCIe slot is left for another disk or NIC; restart the VM "
                         "to get %d new ones" % SPARE_ROOT_PORTS)

    def _record_running_disks(self, rec: VmRecord, disks: List[DiskSpec]) -> None:
        rec.running_spec = dataclasses.replace(rec.running_spec, disks=tuple(disks))
        self.store.update_vm(rec)

    # -- NICs while running ---------------------------------------------------------------
    def hotplug_nics(self, rec: VmRecord, plan: NicHotplugPlan, bridges: Dict[str, str]) -> None:
        """Unplug, then plug (netdev_add + device_add on a free root port); the running
        spec follows each step, like hotplug_disks."""
        vhost = check_vhost(rec.spec)
        running = list(rec.running_spec.nics)
        netns = rec.running_spec.netns
        for nic in plan.remove:
            with QmpSession(rec.qmp_socket_path, rec.name, self.qmp_timeout) as qmp:
                qmp.execute_and_wait("device_del", {"id": nic.device_id}, "DEVICE_DELETED",
                                     {"device": nic.device_id}, timeout=UNPLUG_TIMEOUT)
                qmp.execute("netdev_del", {"id": nic.netdev_id}, timeout=self.qmp_timeout)
            self._drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
            running = [n for n in running if n.mac != nic.mac]
            self._record_running_nics(rec, running)
        vcpus = rec.running_spec.vcpus
        for nic in plan.add:
            self._make_taps(rec, [nic], bridges)
            try:  # a NIC that did not make it leaves no TAP behind
                with QmpSession(rec.qmp_socket_path, rec.name, self.qmp_timeout) as qmp:
                    bus = self._free_root_port(qmp) if pcie_slot(nic, rec.running_spec.machine_type) else None
                    qmp.execute("netdev_add", nic_netdev(nic, vcpus, use_vhost(nic, vhost)),
                                timeout=self.qmp_timeout)
                    try:
                        qmp.execute("device_add", nic_device(nic, vcpus, bus), timeout=self.qmp_timeout)
                    except QmpError:
                        qmp.execute("netdev_del", {"id": nic.netdev_id}, timeout=self.qmp_timeout)
                        raise
            except InfinivirtError:
                self._drop_tap(rec, nsutil.ns_ref(netns, nic.tap_name))
                raise
            running.append(nic)
            self._record_running_nics(rec, running)
        self.sync_firewall(rec)

    def _record_running_nics(self, rec: VmRecord, nics: List[NicSpec]) -> None:
        rec.running_spec = dataclasses.replace(rec.running_spec, nics=tuple(nics))
        self.store.update_vm(rec)

    def resize_disk(self, rec: VmRecord, disk: DiskSpec, size: int) -> None:
        """Grow a disk of a running VM; the guest sees the new capacity at once."""
        self.qmp(rec, "block_resize", {"node-name": node_names(disk)[1], "size": size})

    def _abort_start(self, rec: VmRecord) -> None:
        # By pidfile, and by UUID too: a QEMU that timed out may not have written it yet.
        pids = set(vm_processes(rec.uuid, self.host_paths.proc))
        pid = read_pidfile(self.pidfile(rec))
        if pid:
            pids.add(pid)
        for pid in pids:
            kill_vm_process(pid, rec.uuid, self.host_paths.proc)
        self.release_files(rec, keep_serial_log=False)
        self._mark_stopped(rec)
        with contextlib.suppress(InfinivirtError):  # the start's own error is the one to report
            self.sync_firewall(rec)

    def sync_firewall(self, rec: VmRecord) -> None:
        """The VM's nftables state follows its TAPs: there while it runs, gone when not."""
        if self.firewall is not None:
            self.firewall.sync_vm(rec)

    # -- stopping ---------------------------------------------------------------------
    def stop(self, rec: VmRecord, timeout: float, force: bool,
             qemu_status: Optional[str] = None) -> None:
        """Power the guest off through ACPI; with force, quit/kill it after the timeout.
        ``qemu_status`` saves a QMP round trip when the caller has just asked QEMU."""
        rec.qemu_pid = self.live_pid(rec)
        if rec.qemu_pid is not None:
            status = qemu_status or self.qmp(rec, "query-status")["status"]
            if status == "prelaunch":  # the guest never ran: nothing to shut down
                self._quit(rec)
            else:
                if status != "running":
                    self.qmp(rec, "cont")  # a paused guest cannot see the power button
                if not self._powerdown(rec, timeout):
                    if not force:
                        raise StateError(
                            "VM %s did not power off within stop_timeout=%g s after the ACPI "
                            "power button; raise stop_timeout, or set force: true to end it "
                            "anyway" % (rec.name, timeout))
                    self._quit(rec)
        self.release_files(rec, keep_serial_log=True)
        self._mark_stopped(rec)
        self.sync_firewall(rec)

    def _powerdown(self, rec: VmRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.qmp(rec, "system_powerdown")
            except QmpError:
                if not self.is_alive(rec):
                    return True  # it went away between our checks
                raise
            resend_at = min(deadline, time.monotonic() + POWERDOWN_RESEND)
            if wait_until_gone(rec.qemu_pid, rec.uuid, resend_at - time.monotonic(),
                               self.host_paths.proc):
                return True
            if time.monotonic() >= deadline:
                return False

    def _quit(self, rec: VmRecord) -> None:
        try:
            self.qmp(rec, "quit")
        except QmpError:
            pass  # fall through to SIGKILL
        if not wait_until_gone(rec.qemu_pid, rec.uuid, QUIT_GRACE, self.host_paths.proc):
            kill_vm_process(rec.qemu_pid, rec.uuid, self.host_paths.proc)

    def _mark_stopped(self, rec: VmRecord) -> None:
        rec.status = STOPPED
        rec.qemu_pid = None
        self._clear_launch(rec)
        self.store.update_vm(rec)

    @staticmethod
    def _clear_launch(rec: VmRecord) -> None:
        rec.running_spec = None
        rec.launch_accel = rec.launch_cpu = rec.launch_graphics_port = None

    # -- pausing ----------------------------------------------------------------------
    def pause(self, rec: VmRecord) -> None:
        self.qmp(rec, "stop")
        rec.status = PAUSED
        self.store.update_vm(rec)

    def resume(self, rec: VmRecord) -> None:
        self.qmp(rec, "cont")
        rec.status = RUNNING
        self.store.update_vm(rec)

    # -- host resources ---------------------------------------------------------------
    def nvram_path(self, rec: VmRecord) -> str:
        return os.path.join(self.nvram_dir, rec.uuid + ".fd")

    def release_files(self, rec: VmRecord, keep_serial_log: bool, keep_nvram: bool = True) -> None:
        """Remove the journaled files and TAPs of a VM whose process is gone. The NVRAM
        outlives the process (it is the VM's firmware settings) until the VM is removed."""
        for kind, ref in self.store.journal_list(rec.uuid):
            if (keep_serial_log and kind == "serial_log") or (keep_nvram and kind == "nvram"):
                continue
            if kind == "tap":
                self._drop_tap(rec, ref)
                continue
            try:
                os.unlink(ref)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise QemuError("VM %s: cannot remove %s %s: %s" % (rec.name, kind, ref, exc)) from exc
            self.store.journal_remove(rec.uuid, kind, ref)
