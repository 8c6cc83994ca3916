# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The test suite's own PostgreSQL cluster (scripts/pg-test-server.sh)."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlsplit, urlunsplit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_SCRIPT = os.path.join(REPO, "scripts", "pg-test-server.sh")


def pg_server(action: str) -> str:
    """start (idempotent; prints the admin URL), stop, status."""
    done = subprocess.run(["bash", PG_SCRIPT, action], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and action != "status":
        raise RuntimeError("pg-test-server.sh %s failed: %s" % (action, done.stderr))
    return done.stdout.strip()


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))
