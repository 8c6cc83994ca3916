# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host monitor: one process per host that follows every running VM on it.

It reads each VM's event monitor (a second QMP socket added at start, so a task's own QMP
session stays free), records events in the store's event log, and when a QEMU ends it
does what the modules would do on their next task, at once: under the VM's lock, the
journaled files, TAPs and firewall rules go, the row says ``stopped`` or ``crashed``, and
``on_crash``/``on_poweroff`` may start the VM again. A stop made by a task is told apart
by the row (the task marks it stopped before it lets go of the lock).

One thread, a selector over the event sockets; the store is reopened after an outage and
what happened meanwhile is handled then (events wait in memory, bounded).
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import time
from typing import Any, Callable, Deque, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.clock import event_time
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, LockTimeout, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import kill_vm_process
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.policy import (
    CRASH,
    autostart_order,
    ending,
    log_entry,
    respond,
)
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.qmp_events import (
    EventConnection,
    EventsUnavailable,
    read_event_log,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import (
    CRASHED,
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
)

LIVE_STATUSES = (RUNNING, PAUSED, STARTING)
OUTBOX_MAX = 10000  # events kept in memory while the store is away
RESTART_BURST = 3  # restarts of one VM allowed within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0
CLEANUP_ATTEMPTS = 5
RECEIVING_POLL = 0.02  # seconds between looks at an incoming migration's QEMU
PAUSE_LOCK_WAIT = 0.2  # a task holding the VM sets its status itself
BOOT_ID = "/proc/sys/kernel/random/boot_id"
AUTOSTART_MARKER = "autostart.boot"


class Monitor:
    """``open_context`` makes a HostContext (called again after a store outage)."""

    def __init__(
        self,
        open_context: Callable[[], Any],
        poll: float = 0.5,
        log: Optional[logging.Logger] = None,
        boot_id_file: str = BOOT_ID,
        migration_address: Optional[str] = None,
    ):
        self.open_context = open_context
        self.poll = poll
        self.log = log or logging.getLogger("infinivirt.monitor")
        self.boot_id_file = boot_id_file
        self.engine: Optional[Engine] = None
        self.selector = selectors.DefaultSelector()
        self.watching: Dict[str, EventConnection] = {}  # VM uuid -> its event stream
        self.names: Dict[str, str] = {}  # VM uuid -> name, for the event log
        self.gone: Dict[str, List[Dict[str, Any]]] = {}  # QEMU ended: uuid -> its last events
        self.panicked: Dict[str, int] = {}  # uuid -> PID of a QEMU whose guest panicked
        self.paused: Dict[str, bool] = {}  # uuid -> paused (STOP) or running (RESUME) since
        self.attempts: Dict[str, int] = {}
        self.outbox: Deque[Dict[str, Any]] = collections.deque(maxlen=OUTBOX_MAX)
        self.stopping = False
        self._store_down_since: Optional[float] = None
        self.migration_address = migration_address  # where sources reach this host's QEMUs
        self.receiver = None  # monitor.receiving.Receiver, made when a migration request comes

    # -- the store, reopened after an outage ----------------------------------------------
    def _service(self) -> Optional[Engine]:
        if self.engine is None:
            try:
                self.engine = acting_engine(self.open_context())
            except InfinivirtError as exc:
                if self._store_down_since is None:
                    self._store_down_since = time.monotonic()
                    self.log.error("state store unavailable, will retry: %s", exc)
                return None
            if self._store_down_since is not None:
                self.log.info("state store back after %.1f s", time.monotonic() - self._store_down_since)
                self._store_down_since = None
        return self.engine

    def _store_failed(self, exc: Exception) -> None:
        self.log.error("state store failed, will retry: %s", exc)
        self._store_down_since = time.monotonic()
        if self.engine is not None:
            try:
                self.engine.close()
            except Exception:  # noqa: BLE001 -- a broken connection may fail to close
                pass
        self.engine = None

    def record(self, uuid: str, kind: str, detail: Optional[Dict[str, Any]] = None, at: Optional[str] = None) -> None:
        """Queue an event; stamped now (not when stored: the store may be away)."""
        host = self.engine.host_id if self.engine is not None else ""
        self.outbox.append(
            {
                "vm_uuid": uuid,
                "vm_name": self.names.get(uuid, ""),
                "host": host,
                "kind": kind,
                "detail": detail or {},
                "at": at or event_time(),
            }
        )

    def flush(self) -> None:
        svc = self._service()
        if svc is None or not self.outbox:
            return
        batch = list(self.outbox)
        for event in batch:
            event["host"] = event["host"] or svc.host_id
        try:
            svc.store.add_events(batch)
        except StoreError as exc:
            self._store_failed(exc)
            return
        for _sent in batch:
            self.outbox.popleft()

    # -- the two ways to run ----------------------------------------------------------------
    def once(self) -> int:
        """Reconcile every VM of this host (and autostart after a boot), then return."""
        self.refresh()
        self.settle()
        self.resume_restarts()
        self.autostart()
        self.flush()
        self.close()
        return 0 if self.engine is not None or not self.gone else 1

    def run(self) -> int:
        """Follow the VMs until SIGTERM or SIGINT."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        self.log.info("monitor started (PID %d)", os.getpid())
        self.refresh()
        self.settle()
        self.resume_restarts()
        self.autostart()
        last_refresh = time.monotonic()
        while not self.stopping:
            try:
                receiving = self.receiver is not None and self.receiver.busy()
                for key, _mask in self.selector.select(timeout=RECEIVING_POLL if receiving else self.poll):
                    self._read(key.fileobj)
                if receiving:
                    self.receive()  # the guest waits paused while the stream ends: downtime
                if time.monotonic() - last_refresh >= self.poll:
                    self.refresh()
                    self.receive()
                    last_refresh = time.monotonic()
                self.settle()
                self.flush()
            except Exception:  # noqa: BLE001 -- one bad round must not end the host's monitor
                self.log.exception("unexpected error; going on")
                time.sleep(self.poll)
        self.flush()
        self.close()
        self.log.info("monitor stopped")
        return 0

    def _stop(self, *_args: Any) -> None:
        self.stopping = True

    def close(self) -> None:
        for conn in list(self.watching.values()):
            self._unwatch(conn)
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # -- following the VMs -------------------------------------------------------------------
    def refresh(self) -> None:
        """Attach to VMs that run and are not followed yet; a VM whose row says it runs but
        whose QEMU is gone (or never answered on its event socket) is handled as ended."""
        svc = self._service()
        if svc is None:
            return
        host_vms = self._host_vms(svc)
        if host_vms is None:
            return
        self.names = {rec.uuid: rec.name for rec in host_vms}
        for rec in host_vms:
            if rec.status not in LIVE_STATUSES or rec.uuid in self.gone:
                continue
            pid = svc.process.live_pid(rec)
            conn = self.watching.get(rec.uuid)
            if conn is not None and conn.pid == pid:
                continue
            if conn is not None:  # its QEMU ended (or a task restarted it): take what it said last
                self._drain(conn)
                self._unwatch(conn)
            if pid is None:
                self.gone[rec.uuid] = conn.events if conn is not None else []
                continue
            try:
                conn = EventConnection(VmPaths.for_vm(svc.run_dir, rec.uuid).events_socket, rec.uuid, pid)
            except EventsUnavailable as exc:  # started before the monitor existed: polled instead
                self.log.debug("VM %s: no event stream (%s); checking its process instead", rec.name, exc)
                continue
            self.watching[rec.uuid] = conn
            self.selector.register(conn, selectors.EVENT_READ)
            self.log.info("following VM %s (PID %s)", rec.name, pid)

    def receive(self) -> None:
        """Answer and follow the migrations to this host (monitor/receiving.py)."""
        svc = self._service()
        if svc is None:
            return
        try:
            if self.receiver is None:
                if not svc.store.handovers_to(svc.host_id, ["requested", "listening", "sent", "taking"]):
                    return  # the receiving code is loaded by the first request only
                from ansible_collections.infinivirt.core.plugins.module_utils.monitor.receiving import Receiver

                self.receiver = Receiver(self.migration_address, self.log, self.record)
            self.receiver.poll(svc)
        except StoreError as exc:
            self._store_failed(exc)

    def _drain(self, conn: EventConnection) -> None:
        """Read what is still waiting on a stream whose QEMU is gone (its SHUTDOWN, say)."""
        try:
            while True:
                fresh = conn.read()
                if not fresh:
                    return
                self._note(conn, fresh)
        except EOFError:
            pass

    def _host_vms(self, svc: Engine) -> Optional[List[VmRecord]]:
        """This host's VMs, or None while the store is away."""
        try:
            return records.load_all(svc.store, host=svc.host_id)
        except StoreError as exc:
            self._store_failed(exc)
            return None

    def _unwatch(self, conn: EventConnection) -> None:
        self.selector.unregister(conn)
        conn.close()
        self.watching.pop(conn.uuid, None)

    def _read(self, conn: EventConnection) -> None:
        try:
            fresh = conn.read()
        except EOFError:
            self._unwatch(conn)
            self.gone[conn.uuid] = list(conn.events)
            return
        self._note(conn, fresh)

    def _note(self, conn: EventConnection, fresh: List[Dict[str, Any]]) -> None:
        """Log QEMU's events; a guest panic is acted on in settle."""
        for message in fresh:
            entry = log_entry(message)
            if entry is not None:
                stamp = message.get("timestamp") or {}
                at = event_time(stamp["seconds"] + stamp.get("microseconds", 0) / 1e6) if "seconds" in stamp else None
                self.record(conn.uuid, entry["kind"], entry["detail"], at)
            if message.get("event") == "GUEST_PANICKED" and conn.pid is not None:
                self.panicked[conn.uuid] = conn.pid
            if message.get("event") in ("STOP", "RESUME"):
                self.paused[conn.uuid] = message["event"] == "STOP"

    # -- when a QEMU ends -----------------------------------------------------------------
    def settle(self) -> None:
        """Handle every VM whose QEMU ended (or whose guest panicked)."""
        for uuid, pid in list(self.panicked.items()):
            self._on_panic(uuid, pid)
        for uuid, paused in list(self.paused.items()):
            self._follow_pause(uuid, paused)
        for uuid in list(self.gone):
            svc = self._service()
            if svc is None:
                return
            try:
                self._settle(svc, uuid, self.gone[uuid])
            except StoreError as exc:
                self._store_failed(exc)
                return
            except LockTimeout:
                continue  # a task holds the VM: try again on the next round
            except InfinivirtError as exc:
                self.attempts[uuid] = self.attempts.get(uuid, 0) + 1
                self.log.error("VM %s: cleanup failed (attempt %d): %s", self.names.get(uuid), self.attempts[uuid], exc)
                if self.attempts[uuid] < CLEANUP_ATTEMPTS:
                    continue
                self.record(uuid, "cleanup_failed", {"error": str(exc), "attempts": self.attempts[uuid]})
            self.gone.pop(uuid, None)
            self.attempts.pop(uuid, None)

    def _fresh(self, svc: Engine, uuid: str) -> Optional[VmRecord]:
        rec = records.load_by_uuid(svc.store, uuid)
        return rec if rec is not None and rec.host == svc.host_id else None

    def _settle(self, svc: Engine, uuid: str, events: List[Dict[str, Any]]) -> None:
        rec = self._fresh(svc, uuid)
        if rec is None:
            return
        with svc.store.vm_lock(rec.name, svc.lock_timeout):
            rec = self._fresh(svc, uuid)  # a task may have changed it while we waited
            if rec is None or svc.process.is_alive(rec) or rec.status not in LIVE_STATUSES:
                return  # removed, started again, or stopped by the task itself (or another monitor)
            started = time.monotonic()
            if rec.status == STARTING:  # a start cut off before QEMU ran: not a crash
                svc.clean_up_dead(
                    rec, STOPPED, lambda: [self._event(svc, rec, "start_abandoned", {"cleaned_in_ms": _ms(started)})]
                )
                return
            how = ending(self._last_words(svc, rec, events))
            response = respond(how, rec.spec.on_crash, rec.spec.on_poweroff)
            policy = "on_crash" if how == CRASH else "on_poweroff"
            restart = response.restart and self._budget_left(svc, rec)
            kind = CRASHED if response.status == CRASHED else "stopped"
            version = rec.version + 1  # the row's, once this cleanup wrote it

            def decided() -> List[Dict[str, Any]]:
                # Written with the row: a monitor killed after it does not do it twice, and
                # one killed before it leaves the row live for the next monitor to handle.
                detail = {"how": how, "reason": response.reason, "cleaned_in_ms": _ms(started)}
                if restart:
                    detail.update(restart_pending=True, version=version)
                decision = [self._event(svc, rec, kind, detail)]
                if response.restart and not restart:
                    limit = {"restarts": RESTART_BURST, "within_s": RESTART_WINDOW}
                    decision.append(self._event(svc, rec, "restart_limit", limit))
                return decision

            svc.clean_up_dead(rec, response.status, decided)
            self.log.info("VM %s: %s; cleaned up, now %s", rec.name, response.reason, response.status)
            if restart:
                self._restart(svc, rec, policy)

    def _last_words(self, svc: Engine, rec: VmRecord, events: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """QEMU's events of the run that ended: from the file QEMU wrote them to (complete even
        if no monitor was following it), else those this monitor read on the socket."""
        logged = read_event_log(VmPaths.for_vm(svc.run_dir, rec.uuid).event_log + ".out")
        return events if logged is None else logged

    def _budget_left(self, svc: Engine, rec: VmRecord) -> bool:
        """At most RESTART_BURST restarts per RESTART_WINDOW, counted in the store's event
        log under the VM's lock: every monitor, and a restarted one, sees the same count."""
        since = event_time(time.time() - RESTART_WINDOW)
        return svc.store.count_events(rec.uuid, "restarted", since) < RESTART_BURST

    def _restart(self, svc: Engine, rec: VmRecord, policy: str) -> None:
        """Start the VM again (the caller holds its lock). A failure is recorded; the row
        stays crashed and the crashed run's serial log stays (as .1)."""
        try:  # "restarted" is written with the row that says it runs: never one without the other
            power.start_vm(svc, rec, events=[self._event(svc, rec, "restarted", {"policy": policy})])
        except StoreError:
            raise
        except InfinivirtError as exc:
            self.log.error("VM %s: restart (%s) failed: %s", rec.name, policy, exc)
            svc.store.add_events([self._event(svc, rec, "restart_failed", {"policy": policy, "error": str(exc)})])
            return
        self.log.info("VM %s: started again (%s)", rec.name, policy)

    def _event(self, svc: Engine, rec: VmRecord, kind: str, detail: Dict[str, Any]) -> Dict[str, Any]:
        """An event of the monitor's own, written at once (not through the outbox)."""
        return {
            "vm_uuid": rec.uuid,
            "vm_name": rec.name,
            "host": svc.host_id,
            "kind": kind,
            "detail": detail,
            "at": event_time(),
        }

    def resume_restarts(self) -> None:
        """A monitor killed between a VM's cleanup and its restart left the decision in the
        store (restart_pending, with the row's version): the next monitor carries it out,
        once, unless anything changed the row since."""
        svc = self._service()
        host_vms = self._host_vms(svc) if svc is not None else None
        for rec in host_vms or []:
            if rec.status not in (CRASHED, STOPPED) or self._pending(svc, rec) is None:
                continue
            try:
                with svc.store.vm_lock(rec.name, svc.lock_timeout):
                    fresh = self._fresh(svc, rec.uuid)
                    how = self._pending(svc, fresh) if fresh is not None else None
                    if how is not None and fresh.status in (CRASHED, STOPPED) and not svc.process.is_alive(fresh):
                        self._restart(svc, fresh, "on_crash" if how == CRASH else "on_poweroff")
            except StoreError as exc:
                self._store_failed(exc)
                return
            except InfinivirtError as exc:  # LockTimeout: a task is at work on it, and decides
                self.log.error("VM %s: pending restart not done: %s", rec.name, exc)

    @staticmethod
    def _pending(svc: Engine, rec: VmRecord) -> Optional[str]:
        """How the VM ended, if its last cleanup left a restart to do and the row is as it left it."""
        for event in svc.store.list_events(rec.uuid, limit=10):
            if event["kind"] in (CRASHED, "stopped", "start_abandoned", "restarted", "restart_failed"):
                detail = event["detail"]
                pending = detail.get("restart_pending") and detail.get("version") == rec.version
                return detail.get("how") if pending else None
        return None

    def _follow_pause(self, uuid: str, paused: bool) -> None:
        """The row follows a pause or resume made outside a task (a guest panic, an I/O
        error, a QMP client). A task at work on the VM sets the row itself: then skip."""
        del self.paused[uuid]
        svc = self._service()
        if svc is None:
            return
        try:
            rec = self._fresh(svc, uuid)
            if rec is None or rec.status not in (RUNNING, PAUSED):
                return
            with svc.store.vm_lock(rec.name, PAUSE_LOCK_WAIT):
                rec = self._fresh(svc, uuid)
                status = PAUSED if paused else RUNNING
                if rec is not None and rec.status in (RUNNING, PAUSED) and rec.status != status:
                    rec.status = status  # the latest event wins; the task's QMP session stays free
                    records.save(svc.store, rec)
        except StoreError as exc:
            self._store_failed(exc)
        except InfinivirtError:  # LockTimeout: a task is at work; or QEMU is ending
            return

    def _on_panic(self, uuid: str, pid: int) -> None:
        """A guest panicked (QEMU paused it): preserve leaves it for inspection; otherwise
        QEMU is ended and the VM handled as crashed when its stream closes."""
        svc = self._service()
        if svc is None:
            return
        try:
            rec = self._fresh(svc, uuid)
        except StoreError as exc:
            self._store_failed(exc)
            return
        del self.panicked[uuid]
        if rec is None or rec.spec.on_crash == "preserve":
            return
        kill_vm_process(pid, uuid, svc.host_paths.proc)

    # -- autostart --------------------------------------------------------------------------
    def autostart(self) -> None:
        """Once per host boot: start the autostart VMs in order, waiting each one's delay."""
        svc = self._service()
        if svc is None:
            return
        boot = _read(self.boot_id_file)
        marker = os.path.join(svc.run_dir, AUTOSTART_MARKER)
        if boot is None or _read(marker) == boot:
            return
        host_vms = self._host_vms(svc)
        if host_vms is None:
            return
        for rec in autostart_order(host_vms):
            try:
                with svc.store.vm_lock(rec.name, svc.lock_timeout):
                    rec = self._fresh(svc, rec.uuid)
                    if rec is None or not rec.spec.autostart or svc.process.is_alive(rec):
                        continue
                    self.names[rec.uuid] = rec.name
                    power.start_vm(svc, rec)
                self.log.info("VM %s: autostarted", rec.name)
                self.record(rec.uuid, "autostarted", {"order": rec.spec.autostart_order})
            except StoreError as exc:
                self._store_failed(exc)
                return  # the marker is not written: the next round tries again
            except InfinivirtError as exc:
                self.log.error("VM %s: autostart failed: %s", rec.name, exc)
                self.record(rec.uuid, "autostart_failed", {"error": str(exc)})
            if rec.spec.autostart_delay:
                time.sleep(rec.spec.autostart_delay)
        try:
            ensure_private_dir(svc.run_dir, "run_dir")
            _write_private(marker, boot)
        except (OSError, InfinivirtError) as exc:
            self.log.error("cannot record that autostart ran for this boot: %s", exc)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _write_private(path: str, text: str) -> None:
    """Replace ``path`` (in the private run_dir) without following a planted link."""
    tmp = "%s.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)
