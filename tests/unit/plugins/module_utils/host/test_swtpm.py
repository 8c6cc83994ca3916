# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's swtpm (the real /usr/bin/swtpm, no QEMU): started daemonized with its socket, known
by its pidfile argument, a stale one ended before a new start, ended by stop."""

from __future__ import annotations

import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host import swtpm
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import process_carries

pytestmark = pytest.mark.skipif(swtpm.binary() is None, reason="swtpm is not installed")


def files_in(path):
    state = path / "state"
    state.mkdir(mode=0o700)
    return swtpm.SwtpmFiles(
        state_dir=str(state),
        socket=str(path / "vm.tpm"),
        pidfile=str(path / "vm.swtpm.pid"),
        log=str(path / "vm.swtpm.log"),
    )


def test_start_restart_and_stop(tmp_path):
    files = files_in(tmp_path)
    first = swtpm.start(files)
    try:
        assert os.path.exists(files.socket) and swtpm.live_pid(files) == first
        assert process_carries(first, files.marker)
        second = swtpm.start(files)  # a stale swtpm (a crashed run's) is ended first
        assert second != first and not process_carries(first, files.marker)
        assert swtpm.live_pid(files) == second
    finally:
        ended = swtpm.stop(files)
    assert ended == second and swtpm.live_pid(files) is None and not process_carries(second, files.marker)
    assert swtpm.stop(files) is None  # nothing left to end


def test_a_failed_start_says_why(tmp_path):
    files = files_in(tmp_path)
    files = swtpm.SwtpmFiles(files.state_dir, str(tmp_path / "missing" / "vm.tpm"), files.pidfile, files.log)
    with pytest.raises(QemuError, match="swtpm failed to start"):
        swtpm.start(files)
    assert swtpm.live_pid(files) is None


def test_a_path_with_a_comma_is_refused(tmp_path):
    files = swtpm.SwtpmFiles(str(tmp_path / "a,b"), str(tmp_path / "s"), str(tmp_path / "p"), str(tmp_path / "l"))
    with pytest.raises(SpecError) as caught:
        swtpm.argv("/usr/bin/swtpm", files)
    assert caught.value.field == "tpm"
