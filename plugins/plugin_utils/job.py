# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Controller side of every module: hand the module the job id of the AWX job running it.

AWX and Automation Controller set the extra variables awx_job_id/tower_job_id and, in the
execution environment, the variable JOB_ID. Modules run on the hypervisor, where neither is
seen over SSH; so the action plugin reads them on the controller and passes ``job_id``,
which the VM locks record and lock timeouts name.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from ansible.plugins.action.normal import ActionModule as NormalAction

JOB_VARS = ("awx_job_id", "tower_job_id")
JOB_ENV = ("INFINIVIRT_JOB_ID", "AWX_JOB_ID", "TOWER_JOB_ID", "JOB_ID")


def job_id_of(task_vars: Mapping[str, Any], environ: Mapping[str, str]) -> Optional[str]:
    """The job id: the AWX variables first, then the controller's environment."""
    for name in JOB_VARS:
        value = task_vars.get(name)
        if value not in (None, ""):
            return str(value)
    for name in JOB_ENV:
        value = environ.get(name)
        if value:
            return value
    return None


class JobIdAction(NormalAction):
    """The normal action, with ``job_id`` filled in when the task (or module_defaults) left it out."""

    def run(self, tmp=None, task_vars=None):
        if self._task.args.get("job_id") in (None, ""):
            job = job_id_of(task_vars or {}, os.environ)
            if job is not None:
                self._task.args["job_id"] = job
        return super().run(tmp, task_vars)
