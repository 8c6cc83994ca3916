# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fills in job_id from the AWX job (plugins/plugin_utils/job.py)."""

from __future__ import annotations

from ansible_collections.infinivirt.core.plugins.plugin_utils.job import JobIdAction


class ActionModule(JobIdAction):
    pass
