# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A start killed at every step (as an AWX job cancel or a dropped SSH session kills the
module: SIGKILL, no cleanup) is never resumed half-made: the next run gives the VM exactly
its firewall rules and a display password that works, and leaves no key file behind."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import key_material, links, nft_mentions, vm_list, vnc_auth_in

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import vm_processes
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import (
    engine,
    launch,
    process,
    resources,
    session,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

pytestmark = [pytest.mark.qemu, pytest.mark.netns]

PASSWORD = "s3cret"
MAC = "52:54:00:fa:00:01"


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_run_daemonized(monkeypatch):  # key files written, QEMU not yet spawned
    monkeypatch.setattr(process, "run_daemonized", die)


def _kill_after_spawn(monkeypatch):  # QEMU in prelaunch, nothing checked or applied yet
    real = launch.spawn

    def spawn_then_die(self, *args):
        real(self, *args)
        die()

    monkeypatch.setattr(launch, "spawn", spawn_then_die)


def _kill_at_firewall(monkeypatch):  # QEMU checked, its firewall not applied
    monkeypatch.setattr(resources.HostResources, "sync_firewall", die)


def _kill_at_display_password(monkeypatch):  # firewall applied, the password not set
    monkeypatch.setattr(session.QmpSessions, "setup_vnc", die)


def _kill_at_qmp(command, after):
    def patch(monkeypatch):
        real = session.QmpSessions.qmp

        def qmp(self, rec, cmd, *args, **kwargs):
            if cmd == command and not after:
                die()
            result = real(self, rec, cmd, *args, **kwargs)
            if cmd == command:
                die()
            return result

        monkeypatch.setattr(session.QmpSessions, "qmp", qmp)

    return patch


STEPS = {
    "before taps": lambda mp: mp.setattr(resources.HostResources, "make_taps", die),
    "before spawn": _kill_at_run_daemonized,
    "after spawn": _kill_after_spawn,
    "at firewall": _kill_at_firewall,
    "at display password": _kill_at_display_password,
    "before cont": _kill_at_qmp("cont", after=False),
    "after cont": _kill_at_qmp("cont", after=True),
}


def killed_start(db_url, run_dir, roots, key_file, params, step):
    """Run the start in a child that SIGKILLs itself at ``step``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            mp = pytest.MonkeyPatch()
            STEPS[step](mp)
            service = VmService.open(db_url, run_dir, storage_roots=roots, secret_key_file=key_file)
            service.ensure(params, False)
        finally:
            os._exit(3)  # the step was not reached
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "step %r not reached" % step


@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_start_killed_at_any_step_is_completed_by_the_next_run(workdir, images, bridge_ns, step):
    db_url, run_dir = "sqlite:///%s/faults.db" % workdir, os.path.join(workdir, "run")
    key_file = os.path.join(workdir, "secret.key")
    service = VmService.open(db_url, run_dir, storage_roots=[images], secret_key_file=key_file)
    try:
        sealed = os.path.join(images, "sealed.qcow2")
        DiskService(service.store, service.secret_box, service.hostname, [images]).ensure(
            {"path": sealed, "size": "16M", "encrypt": True}, False
        )
        params = {
            "name": "faulty",
            "state": "running",
            "accel": "tcg",
            "memory_mb": 64,
            "netns": bridge_ns,
            "nics": [{"bridge": "vmbr0", "mac": MAC}],
            "graphics": {"type": "vnc", "password": PASSWORD},
            "disks": [{"path": sealed}],
        }
        service.ensure(dict(params, state="present"), False)
        service.firewall.ensure(
            {
                "scope": "vm",
                "name": "faulty",
                "policy_in": "drop",
                "rules": [{"direction": "in", "protocol": "tcp", "ports": [22]}],
            },
            False,
        )

        killed_start(db_url, run_dir, [images], key_file, params, step)
        if step != "after cont":  # the guest never ran: a half-made start, not a running VM
            assert vm_list(service, "faulty")[0]["status"] in ("starting", "stopped")

        predicted = service.ensure(params, True)
        out = service.ensure(params, False)
        assert predicted.actions == out.actions
        if step == "after cont":  # the guest ran: that start was whole, only its row lagged
            assert not out.changed
        else:
            assert out.changed and out.actions[-1] == "start"
        vm = vm_list(service, "faulty")[0]
        assert vm["status"] == "running" and vm["error"] is None
        assert vm_processes(vm["uuid"]) == [vm["pid"]], "exactly one QEMU"
        tap = vm["taps"][0]
        assert links(bridge_ns)[tap]["master"] == "vmbr0"
        assert nft_mentions(bridge_ns, vm["uuid"]) and nft_mentions(bridge_ns, tap), "its firewall rules"
        assert vnc_auth_in(bridge_ns, vm["graphics"]["port"], PASSWORD) == "ok"
        assert key_material(run_dir) == [], "no LUKS key left on disk or tmpfs"
        assert not service.ensure(params, False).changed
    finally:
        service.ensure({"name": "faulty", "state": "absent", "force": True, "stop_timeout": 5}, False)
        service.close()


STOP_STEPS = {  # where a forced stop is killed: after QEMU ended, before ...
    "before files are released": (resources.HostResources, "release_files"),
    "before the row says stopped": (engine.Engine, "_mark_stopped"),
    "before the firewall is removed": (resources.HostResources, "sync_firewall"),
}


def killed_stop(db_url, run_dir, params, step):
    """Stop (forced) in a child that SIGKILLs itself when ``step`` (class, method) is called."""
    cls, method = step
    pid = os.fork()
    if pid == 0:
        try:
            mp = pytest.MonkeyPatch()
            mp.setattr(cls, method, die)
            VmService.open(db_url, run_dir).ensure(params, False)
        finally:
            os._exit(3)
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "%s not reached" % method


@pytest.mark.parametrize("step", sorted(STOP_STEPS))
def test_a_stop_killed_at_any_step_is_completed_by_the_next_run(workdir, bridge_ns, step):
    db_url, run_dir = "sqlite:///%s/stops.db" % workdir, os.path.join(workdir, "run")
    service = VmService.open(db_url, run_dir)
    params = {"name": "halting", "accel": "tcg", "memory_mb": 64, "netns": bridge_ns, "nics": [{"bridge": "vmbr0"}]}
    try:
        service.ensure(dict(params, state="present"), False)
        service.firewall.ensure({"scope": "vm", "name": "halting", "policy_in": "drop"}, False)
        vm = service.ensure(dict(params, state="running"), False).vm
        tap = vm["taps"][0]
        assert nft_mentions(bridge_ns, vm["uuid"]) and tap in links(bridge_ns)
        # No guest OS answers the power button here: force ends it (quit, then SIGKILL).
        stop = dict(params, state="stopped", force=True, stop_timeout=1)
        killed_stop(db_url, run_dir, stop, STOP_STEPS[step])
        service.ensure(stop, False)
        assert vm_list(service, "halting")[0]["status"] == "stopped"
        assert vm_processes(vm["uuid"]) == []
        assert tap not in links(bridge_ns), "the TAP went with the VM"
        assert not nft_mentions(bridge_ns, vm["uuid"]) and not nft_mentions(bridge_ns, tap), "its rules went too"
        assert not service.ensure(stop, False).changed
        assert service.ensure(dict(params, state="running"), False).vm["status"] == "running"
    finally:
        service.ensure({"name": "halting", "state": "absent", "force": True, "stop_timeout": 1}, False)
        service.close()
