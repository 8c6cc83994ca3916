# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""virtiofsd's adapter without a guest: a missing daemon is a clear error; a daemon that exits
at once reports its own message; one that makes its socket is found by it and ended, socket
and all (a small Python stand-in plays the daemon: it carries --socket-path like the real one)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.host import virtiofsd
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import processes_carrying

FAKE = (
    "import socket, sys, time\n"
    "path = sys.argv[1].split('=', 1)[1]\n"
    "s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(1)\n"
    "time.sleep(60)\n"
)


def test_no_daemon_names_the_package(tmp_path):
    with pytest.raises(QemuError, match="shared_dirs needs virtiofsd .*install the virtiofsd package"):
        virtiofsd.binary([str(tmp_path / "virtiofsd")])


def test_a_daemon_that_exits_says_why(tmp_path):
    sock = str(tmp_path / "fs0.sock")
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('no such dir'); sys.exit(3)", virtiofsd.marker(sock)]
    with pytest.raises(QemuError, match=r"virtiofsd exited \(status 3\): no such dir"):
        virtiofsd.start(argv, sock)


def test_started_then_stopped_with_its_socket(tmp_path):
    sock = str(tmp_path / "fs0.sock")
    pid = virtiofsd.start([sys.executable, "-c", FAKE, virtiofsd.marker(sock)], sock)
    assert processes_carrying(virtiofsd.marker(sock)) == [pid] and os.path.exists(sock)
    assert virtiofsd.stop(sock) == [pid]
    assert processes_carrying(virtiofsd.marker(sock)) == [] and not os.path.exists(sock)
    assert virtiofsd.stop(sock) == [], "nothing left: a second stop is a no-op"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
def test_a_readonly_share_is_readonly_below_its_own_mounts_too(tmp_path):
    """The daemon's namespace: the share and a file system mounted inside it are read-only
    there; the host's own mounts stay writable."""
    share, inner = tmp_path / "share", tmp_path / "share" / "inner"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "iv-test", str(inner)], check=True)
    try:
        script = "for d in %s %s; do touch $d/new 2>&1; done; cat %s/seen" % (share, inner, inner)
        (inner / "seen").write_text("inner file\n")
        done = subprocess.run(
            ["sh", "-c", script],
            preexec_fn=virtiofsd._readonly_bind(str(share)),
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.stdout.count("Read-only file system") == 2, done.stdout + done.stderr
        assert "inner file" in done.stdout, "still readable"
        assert sorted(os.listdir(inner)) == ["seen"] and sorted(os.listdir(share)) == ["inner"]
        (inner / "host").write_text("the host's mount is unchanged\n")
    finally:
        subprocess.run(["umount", str(inner)], check=True)
