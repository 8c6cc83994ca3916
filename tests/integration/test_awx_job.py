# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM lock held by an AWX job: whoever waits for it in vain is told the job's id.

AWX passes ``awx_job_id`` as an extra variable; the collection's action plugins hand it to
the module on the hypervisor (plugins/plugin_utils/job.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from collection_path import collections_root
from helpers import HERE, run_playbook
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.errors import LockTimeout
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store

pytestmark = [pytest.mark.qemu, pytest.mark.playbook]


def wait_until_locked(db_url: str, name: str, timeout: float = 120.0) -> str:
    store = open_store(db_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with store.vm_lock(name, timeout=0.05):
                    pass
            except LockTimeout as exc:
                return str(exc)
            time.sleep(0.1)
    finally:
        store.close()
    raise AssertionError("nobody took the lock of VM %s" % name)


def test_lock_timeout_names_the_awx_job(workdir):
    common = {"db_url": "sqlite:///%s/awx.db" % workdir, "run_dir": os.path.join(workdir, "run"), "vm": "awxvm"}
    done = run_playbook("awx_job.yml", dict(common, step="start"))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    holder = None
    try:
        # The AWX job: stops a guest that ignores ACPI, holding the lock for stop_timeout.
        extra = dict(common, step="hold", awx_job_id=4711, ansible_python_interpreter=sys.executable)
        holder = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                "-i",
                "localhost,",
                "-c",
                "local",
                "-e",
                json.dumps(extra),
                os.path.join(HERE, "playbooks", "awx_job.yml"),
            ],
            env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert "(job 4711)" in wait_until_locked(common["db_url"], "awxvm")
        # Another job waits in vain, and is told which job holds the VM.
        done = run_playbook("awx_job.yml", dict(common, step="wait"))
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert "the lock is held by job 4711" in done.stdout
        # End the guest so the holder's stop returns now rather than after its stop_timeout.
        for name in os.listdir(common["run_dir"]):
            if name.endswith(".pid"):
                with open(os.path.join(common["run_dir"], name)) as f:
                    os.kill(int(f.read().split()[0]), signal.SIGKILL)
        out = holder.communicate(timeout=300)[0]
        assert holder.returncode == 0, out
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        run_playbook("awx_job.yml", dict(common, step="remove"))
        assert kill_leftovers(workdir) == [], "a QEMU outlived the test"
