# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the real host monitor script (roles/host/files/infinivirt-monitor) as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from collection_path import REPO, collections_root

SCRIPT = os.path.join(REPO, "roles", "host", "files", "infinivirt-monitor")
KILLED_AT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitor_killed_at.py")


class MonitorProcess:
    def __init__(self, db_url, run_dir, host_id, log_path, key_file=None, roots=(), extra=(), kill_at=None):
        """``kill_at``: a step of monitor_killed_at.STEPS where the monitor kills itself."""
        script = [KILLED_AT, kill_at] if kill_at else [SCRIPT]
        self.argv = [sys.executable] + script + ["--db-url", db_url, "--run-dir", run_dir, "--host-id", host_id]
        self.argv += ["--poll", "0.2", "--lock-timeout", "30"]
        if key_file:
            self.argv += ["--secret-key-file", key_file]
        for root in roots:
            self.argv += ["--storage-root", root]
        self.argv += list(extra)
        self.log_path = log_path
        self.proc = None

    def env(self):
        return dict(os.environ, INFINIVIRT_COLLECTIONS_PATH=collections_root())

    def start(self):
        log = open(self.log_path, "ab")  # noqa: SIM115 -- the child keeps it
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env())
        log.close()
        return self

    def once(self, timeout=120):
        return subprocess.run(
            self.argv + ["--once"], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def wait_log(self, text, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False
