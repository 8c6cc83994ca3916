# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real child processes for liveness tests: a QEMU started as Infinivirt starts one."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest


def wait_exec(proc, marker):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/%d/cmdline" % proc.pid, "rb") as fh:
            if marker.encode() in fh.read():
                return proc
        time.sleep(0.01)
    raise AssertionError("child never exec'd")


def spawn(marker, *extra):
    """A real QEMU started as Infinivirt starts one (-uuid UUID), with no machine to run;
    ``extra`` arguments appended (e.g. -pidfile PATH)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    proc = subprocess.Popen(
        [
            qemu,
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-uuid",
            marker,
            "-monitor",
            "none",
            "-serial",
            "none",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_exec(proc, marker)
