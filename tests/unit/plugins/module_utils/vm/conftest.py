# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VmService on the test's database with its own NVRAM directory and secret key."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService


@pytest.fixture
def svc(tmp_path, db_url):
    # run_dir holds UNIX sockets (108 bytes at most): tmp_path under xdist is too long for them.
    run = tempfile.mkdtemp(prefix="iv-svc-")
    service = VmService.open(
        db_url,
        run,
        hostname="hv-test",
        nvram_dir=str(tmp_path / "nvram"),
        secret_key_file=str(tmp_path / "secret.key"),
    )
    yield service
    service.close()
    shutil.rmtree(run, ignore_errors=True)
