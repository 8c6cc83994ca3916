# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Liveness against real processes: PID reuse and zombies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid as uuidlib

import pytest
from qemu_child import spawn, wait_exec

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    holds_file,
    kill_vm_process,
    process_carries,
    process_runs_vm,
    process_state,
    read_pidfile,
    run_daemonized,
    vm_processes,
)


def bystander(*args):
    """Another program that mentions the UUID, even as '-uuid UUID', or is even named QEMU."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"] + list(args))
    return wait_exec(proc, args[-1])


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_live_process_with_uuid_counts_as_running():
    marker = str(uuidlib.uuid4())
    proc = spawn(marker)
    try:
        assert process_runs_vm(proc.pid, marker)
        assert not process_runs_vm(proc.pid, str(uuidlib.uuid4())), "another VM's UUID"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_a_zombie_counts_as_dead():
    marker = str(uuidlib.uuid4())
    proc = spawn(marker)
    proc.kill()
    deadline = time.monotonic() + 10
    while process_state(proc.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process_state(proc.pid) == "Z"  # not reaped yet: still in /proc
    assert not process_runs_vm(proc.pid, marker)
    proc.wait()
    assert process_state(proc.pid) is None


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_kill_only_kills_the_vm_it_names():
    marker = str(uuidlib.uuid4())
    proc = spawn(marker)
    try:
        kill_vm_process(proc.pid, str(uuidlib.uuid4()))
        assert proc.poll() is None, "a process without the UUID must be left alone"
        kill_vm_process(proc.pid, marker)
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pidfile_parsing(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("%d\n" % os.getpid())
    bad.write_text("12x")
    assert read_pidfile(str(good)) == os.getpid()
    assert read_pidfile(str(bad)) is None
    assert read_pidfile(str(tmp_path / "missing")) is None


def test_run_daemonized_reports_stderr():
    rc, err = run_daemonized([sys.executable, "-c", "import sys; sys.exit('boom')"], timeout=10)
    assert rc == 1 and err == "boom"


@pytest.mark.qemu  # a real qemu-system-x86_64 (-machine none)
def test_vm_processes_finds_them_by_uuid():
    marker = str(uuidlib.uuid4())
    proc = spawn(marker)
    others = [bystander(marker), bystander("-uuid", marker)]
    try:
        assert vm_processes(marker) == [proc.pid]
        assert vm_processes(str(uuidlib.uuid4())) == []
    finally:
        for p in [proc] + others:
            p.kill()
            p.wait()


@pytest.mark.qemu  # real qemu-system-x86_64 (-machine none)
def test_vm_processes_of_one_pidfile_leave_the_other_side_alone(tmp_path):
    """A migration's two QEMUs carry one UUID; each host's run dir names its own pidfile."""
    marker = str(uuidlib.uuid4())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here, there = str(tmp_path / "a" / "vm.pid"), str(tmp_path / "b" / "vm.pid")
    mine, other = spawn(marker, "-pidfile", here), spawn(marker, "-pidfile", there)
    try:
        assert sorted(vm_processes(marker)) == sorted([mine.pid, other.pid]), "by UUID alone: both"
        assert vm_processes(marker, pidfile=here) == [mine.pid]
        assert vm_processes(marker, pidfile=there) == [other.pid]
        assert vm_processes(marker, pidfile=str(tmp_path / "vm.pid")) == []
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()


def test_only_a_qemu_started_with_the_uuid_is_the_vm():
    marker = str(uuidlib.uuid4())
    mentions, flag, named = bystander(marker), bystander("-uuid", marker), None
    # argv[0] "qemu-system-x86_64", executable python: /proc/PID/exe tells the truth.
    named = subprocess.Popen(
        ["qemu-system-x86_64", "-c", "import time; time.sleep(60)", "-uuid", marker], executable=sys.executable
    )
    wait_exec(named, marker)
    try:
        for proc in (mentions, flag, named):
            assert not process_runs_vm(proc.pid, marker), proc.args
            kill_vm_process(proc.pid, marker)
            assert proc.poll() is None, "a bystander must never be signalled"
    finally:
        for proc in (mentions, flag, named):
            proc.kill()
            proc.wait()


def test_a_dnsmasq_style_marker_is_found_in_any_program():
    marker = str(uuidlib.uuid4())
    proc = bystander("--marker", marker)
    try:
        assert process_carries(proc.pid, marker) and not process_carries(proc.pid, "x" + marker)
    finally:
        proc.kill()
        proc.wait()


def test_holds_file_sees_an_open_descriptor_of_the_entry_itself(tmp_path):
    path, link = tmp_path / "overlay.qcow2", tmp_path / "link"
    path.write_bytes(b"x")
    link.symlink_to(path)
    assert not holds_file(os.getpid(), str(path))
    fd = os.open(str(path), os.O_RDONLY)
    try:
        assert holds_file(os.getpid(), str(path))
        assert not holds_file(os.getpid(), str(link)), "the link itself is not what is open"
    finally:
        os.close(fd)
    assert not holds_file(os.getpid(), str(path))
    assert not holds_file(os.getpid(), str(tmp_path / "missing")) and not holds_file(None, str(path))
