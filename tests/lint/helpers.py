# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for the collection-level lint/packaging tests: find a tool, run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "infinivirt"
NAME = "core"
FQCN_PREFIX = "%s.%s." % (NAMESPACE, NAME)


def list_modules() -> List[str]:
    """Short names of the modules in plugins/modules (without .py)."""
    return sorted(
        p.stem
        for p in (REPO_ROOT / "plugins" / "modules").glob("*.py")
        if p.name != "__init__.py" and not p.name.startswith("_")
    )


def tool(name: str) -> str:
    """Path of a command-line tool: next to the running interpreter (the repo venv), else on PATH.

    Fails the test (never skips) when the tool is missing.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(str(candidate), os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        "required tool %r not found next to %s or on PATH; run scripts/install.sh "
        "(it installs requirements-test.txt into the venv)" % (name, sys.executable)
    )
    raise AssertionError("unreachable")  # pytest.fail() raises


@dataclass
class Result:
    argv: Sequence[str]
    returncode: int
    output: str
    seconds: float

    def describe(self) -> str:
        return "$ %s\n(rc=%d, %.1f s)\n%s" % (" ".join(self.argv), self.returncode, self.seconds, self.output)


def run(argv: Sequence[str], cwd: Path, env: Optional[dict] = None, timeout: float = 1800) -> Result:
    """Run a command with stdout+stderr merged and stdin closed; never raises on rc != 0."""
    start = time.monotonic()
    proc = subprocess.run(
        list(argv),
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return Result(list(argv), proc.returncode, proc.stdout, time.monotonic() - start)


def tool_env(collections_root: Path) -> dict:
    """Environment for the tools: repo venv first on PATH, the work tree as the only collection."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_root)
    # Never let an installed copy (e.g. /usr/share/ansible/collections) shadow the work tree.
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "False"
    env.pop("ANSIBLE_CONFIG", None)
    env["ANSIBLE_NOCOLOR"] = "1"
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    return env
