# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Where the job id of an AWX job comes from."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.plugin_utils.job import job_id_of

# Imports Ansible: tests/integration/test_cores.py runs it under every supported core.
pytestmark = pytest.mark.ansible_core


def test_awx_variables_come_first():
    assert job_id_of({"awx_job_id": 4711, "tower_job_id": 1}, {"JOB_ID": "2"}) == "4711"
    assert job_id_of({"tower_job_id": 12}, {"JOB_ID": "2"}) == "12"


def test_then_the_controller_environment():
    env = {"JOB_ID": "9", "TOWER_JOB_ID": "8", "AWX_JOB_ID": "7", "INFINIVIRT_JOB_ID": "nightly"}
    assert job_id_of({}, env) == "nightly"
    del env["INFINIVIRT_JOB_ID"]
    assert job_id_of({}, env) == "7"
    assert job_id_of({"awx_job_id": ""}, {"JOB_ID": "9"}) == "9"


def test_none_without_a_job():
    assert job_id_of({}, {}) is None
