# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment: docs/awx/execution-environment.yml builds a context, and the
collection's own EE files (meta/execution-environment.yml, meta/ee-*.txt) merge into it.

``ansible-builder build`` needs podman or docker, which this machine has not; ``create`` writes
the whole build context, and the introspection step the build runs in the image is run here
on the work tree with the script the context carries.
"""

from __future__ import annotations

import subprocess
import sys

from .helpers import run, tool


def test_execution_environment_context(collection, repo_root, tmp_path):
    context = tmp_path / "context"
    result = run(
        [
            tool("ansible-builder"),
            "create",
            "-f",
            str(repo_root / "docs" / "awx" / "execution-environment.yml"),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=tmp_path,
        env=collection.env,
    )
    assert result.returncode == 0, result.describe()
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "infinivirt/infinivirt.core" in (context / "_build" / "requirements.yml").read_text()
    assert "ansible-core>=2.15,<2.20" in containerfile

    # What the build's introspection step gives for this collection, merged with the EE's own.
    merged_pip, merged_bindep = tmp_path / "pip.txt", tmp_path / "bindep.txt"
    done = subprocess.run(
        [
            sys.executable,
            str(context / "_build" / "scripts" / "introspect.py"),
            "introspect",
            "--user-pip",
            str(context / "_build" / "requirements.txt"),
            "--user-bindep",
            str(context / "_build" / "bindep.txt"),
            "--write-pip",
            str(merged_pip),
            "--write-bindep",
            str(merged_bindep),
            str(collection.root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pip = merged_pip.read_text()
    bindep = merged_bindep.read_text()
    assert "psycopg2-binary>=2.9" in pip and "infinivirt.core" in pip, pip
    assert "cryptography>=36.0" in pip, pip
    assert "libpq5 [platform:dpkg]" in bindep and "libpq [platform:rpm]" in bindep, bindep
    assert "openssh-clients [platform:rpm]" in bindep, bindep
