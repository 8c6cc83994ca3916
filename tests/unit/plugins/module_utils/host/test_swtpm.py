# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's swtpm (the real /usr/bin/swtpm, no QEMU): started daemonized on paths with a comma
(none reaches its argv), known by the state directory it holds, a stale one ended before a
new start, ended by stop."""

from __future__ import annotations

import os
import socket

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm

pytestmark = pytest.mark.skipif(swtpm.binary() is None, reason="swtpm is not installed")


def files_in(path):
    path = path / "a,b=c"  # swtpm's own syntax cannot take this; the descriptors can
    state = path / "state"
    state.mkdir(parents=True, mode=0o700)
    return swtpm.SwtpmFiles(state_dir=str(state), socket=str(path / "vm.tpm"), pidfile=str(path / "vm.swtpm.pid"))


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as fh:
        return fh.read().decode()


def test_start_restart_and_stop(tmp_path):
    files = files_in(tmp_path)
    first = swtpm.start(files)
    try:
        assert swtpm.live_pid(files) == first and swtpm.is_ours(first, files.state_dir)
        assert str(tmp_path) not in cmdline(first)  # no path in its argv
        with socket.socket(socket.AF_UNIX) as client:  # the control socket answers
            client.connect(files.socket)
        assert oct(os.stat(files.socket).st_mode & 0o777) == "0o600"
        second = swtpm.start(files)  # a stale swtpm (a crashed run's) is ended first
        assert second != first and not swtpm.is_ours(first, files.state_dir)
        assert swtpm.live_pid(files) == second
        assert not swtpm.is_ours(second, str(tmp_path))  # another directory: not this VM's
    finally:
        ended = swtpm.stop(files)
    assert ended == second and swtpm.live_pid(files) is None and not swtpm.is_ours(second, files.state_dir)
    assert swtpm.stop(files) is None  # nothing left to end


def test_a_failed_start_says_why(tmp_path):
    files = files_in(tmp_path)
    missing = swtpm.SwtpmFiles(files.state_dir + "-gone", files.socket, files.pidfile)
    with pytest.raises(QemuError, match="swtpm cannot start: .*state-gone"):
        swtpm.start(missing)
    assert swtpm.live_pid(files) is None
