# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A migration target QEMU started by hand (tests/integration/test_migration.py and
bench/migration.py): the source QEMU's own command line, its run dir paths moved to a
fresh directory, plus ``-incoming defer``: what the target host will run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile

from helpers import wait_for
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute

EVENT_LOG_INPUT = b'{"execute": "qmp_capabilities"}\n'


def _path_of(arg: str) -> str:
    return arg.split("path=")[-1].split(",")[0]


class HandTarget:
    """Started paused and waiting (QEMU's ``inmigrate``); ``uri`` is where it will listen."""

    def __init__(self, source_pid: int, source_run_dir: str, port: int, prepare=None):
        """``prepare(dir)`` runs before QEMU starts (e.g. creates the disks a storage copy fills)."""
        self.dir = tempfile.mkdtemp(prefix="iv-mig-b")
        with open("/proc/%d/cmdline" % source_pid, "rb") as fh:
            argv = [a.decode() for a in fh.read().split(b"\0") if a]
        first = next(i for i, a in enumerate(argv) if "qemu-system" in os.path.basename(a))  # after a scope prefix
        moved = source_run_dir.replace(",", ",,")  # as QEMU's option syntax escapes it
        argv = [a.replace(moved, self.dir).replace(source_run_dir, self.dir) for a in argv[first:]]
        for arg in argv:  # QEMU's event log: a pipe chardev on <path>.in/.out made beforehand
            if arg.startswith("pipe,"):
                with open(_path_of(arg) + ".in", "wb") as fh:
                    fh.write(EVENT_LOG_INPUT)
                open(_path_of(arg) + ".out", "wb").close()
        self.qmp = re.search(r"path=([^,]+\.qmp)", " ".join(argv)).group(1)
        self.console = next((_path_of(a) for a in argv if _path_of(a).endswith(".console")), None)
        self.serial = next(_path_of(a) for a in argv if a.startswith("file,id=serial0"))
        if prepare is not None:
            prepare(self.dir)
        done = subprocess.run(argv + ["-incoming", "defer"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        with open(argv[argv.index("-pidfile") + 1]) as fh:
            self.pid = int(fh.read())
        self.uri = "tcp:127.0.0.1:%d" % port

    def call(self, _rec, command, arguments=None):
        """engine.sessions.qmp's shape, on this QEMU."""
        return qmp_execute(self.qmp, "target", command, arguments)

    def status(self) -> str:
        return self.call(None, "query-status")["status"]

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: self.pid not in qemu_processes(self.dir), 10)
        shutil.rmtree(self.dir, ignore_errors=True)
