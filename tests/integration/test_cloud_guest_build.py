# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloud guest's cache (tests/guest/build_cloud_guest.py), without a second 100-second
build: a builder that finds the lock taken waits and reuses what the holder made, and a
failed build leaves nothing under the cache. A failing ``mmdebstrap`` stands first on PATH,
so any attempt to build shows."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow]

BUILDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guest", "build_cloud_guest.py")


@pytest.fixture
def no_mmdebstrap(tmp_path):
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "mmdebstrap").write_text("#!/bin/sh\necho 'E: mirror unreachable' >&2\nexit 25\n")
    (stub / "mmdebstrap").chmod(0o755)
    return dict(os.environ, PATH="%s:%s" % (stub, os.environ["PATH"]))


def builder(cache, env):
    return subprocess.Popen(
        [sys.executable, BUILDER, "--cache-dir", str(cache)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_a_second_builder_waits_on_the_lock_and_reuses_the_build(cloud_guest, tmp_path, no_mmdebstrap):
    cache = tmp_path / "cloud"
    cache.mkdir()
    with open(str(cache / ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # a first builder at work
        second = builder(cache, no_mmdebstrap)
        time.sleep(2)
        assert second.poll() is None, second.communicate()
        # The first builder finishes: its build appears whole, by rename.
        work = cache / ".work-first"
        work.mkdir()
        for name in ("disk.qcow2", "vmlinuz", "initrd.img", "meta.json"):
            os.symlink(str(cloud_guest.disk.parent / name), str(work / name))
        os.rename(str(work), str(cache / cloud_guest.key))
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    got = json.loads(out)
    assert got["disk"] == str(cache / cloud_guest.key / "disk.qcow2")
    assert got["kernel_cmdline"] == cloud_guest.kernel_cmdline


def test_a_failed_build_says_why_and_leaves_nothing(tmp_path, no_mmdebstrap):
    cache = tmp_path / "cloud"
    done = builder(cache, no_mmdebstrap)
    out, err = done.communicate(timeout=60)
    assert done.returncode == 1 and out == ""
    assert (
        err.strip().splitlines()[-1] == "build_cloud_guest: error: mmdebstrap failed (exit 25): E: mirror unreachable"
    )
    assert sorted(os.listdir(str(cache))) == [".lock"]
