# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Kill points for the fault tests: each ``patch(mp)`` makes the process SIGKILL itself at
one step (right before or after a QMP command or a method), as an AWX job cancel or a
dropped SSH session would; ``run_killed`` runs a task in a child killed that way. Also
``rig_in_tmp``, the body of a module-scoped rig fixture, and ``bridge_netns``, the network
namespace such a rig runs in."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import traceback
import uuid

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.qemu import qmp as qmp_module


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def after_qmp(command):
    """Kill right after QEMU answered ``command`` (before anything else is recorded)."""

    def patch(mp):
        real = qmp_module.QmpSession.execute

        def execute(self, cmd, *args, **kwargs):
            result = real(self, cmd, *args, **kwargs)
            if cmd == command:
                die()
            return result

        mp.setattr(qmp_module.QmpSession, "execute", execute)

    return patch


def at_qmp(command):
    """Kill right before ``command`` is sent."""

    def patch(mp):
        real = qmp_module.QmpSession.execute

        def execute(self, cmd, *args, **kwargs):
            if cmd == command:
                die()
            return real(self, cmd, *args, **kwargs)

        mp.setattr(qmp_module.QmpSession, "execute", execute)

    return patch


def after_unplug_request(mp):
    """Kill once device_del was sent, before QEMU says the guest let go of the device."""

    def execute_and_wait(self, command, arguments, *_rest, **_kwargs):
        self.execute(command, arguments)
        die()

    mp.setattr(qmp_module.QmpSession, "execute_and_wait", execute_and_wait)


def after_unplugged(mp):
    real = qmp_module.QmpSession.execute_and_wait

    def execute_and_wait(self, *args, **kwargs):
        real(self, *args, **kwargs)
        die()

    mp.setattr(qmp_module.QmpSession, "execute_and_wait", execute_and_wait)


def after_method(cls, method):
    """Kill right after ``cls.method`` returned."""

    def patch(mp):
        real = getattr(cls, method)

        def call_then_die(self, *args, **kwargs):
            real(self, *args, **kwargs)
            die()

        mp.setattr(cls, method, call_then_die)

    return patch


def at_method(cls, method):
    """Kill when ``cls.method`` is called, before it does anything."""
    return lambda mp: mp.setattr(cls, method, die)


def bridge_netns(prefix):
    """A network namespace of the test's own, with bridge vmbr0 up in it."""
    netns = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    for argv in (
        ["ip", "netns", "add", netns],
        ["ip", "-n", netns, "link", "add", "vmbr0", "type", "bridge"],
        ["ip", "-n", netns, "link", "set", "vmbr0", "up"],
    ):
        subprocess.run(argv, check=True)
    return netns


def run_killed(task, step):
    """Run ``task()`` in a child that SIGKILLs itself at ``step`` (an error before the step
    is printed, and fails the test as the step not reached)."""
    pid = os.fork()
    if pid == 0:
        try:
            mp = pytest.MonkeyPatch()
            step(mp)
            task()
        except BaseException:  # noqa: BLE001 -- shown in the test's output
            traceback.print_exc()
        finally:
            os._exit(3)
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the step was not reached"


def rig_in_tmp(cls, guest, prefix):
    """A module-scoped rig: ``cls(guest, tmp)`` in a scratch directory; at the end its VMs
    (``vm_names``) are removed, its service closed and its namespace deleted."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    made = cls(guest, tmp)
    yield made
    for name in made.vm_names:
        made.service.ensure({"name": name, "state": "absent", "force": True, "stop_timeout": 5}, False)
    made.service.close()
    subprocess.run(["ip", "netns", "del", made.netns], check=True)
    shutil.rmtree(tmp, ignore_errors=True)
