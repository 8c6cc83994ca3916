# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place that imports Ansible: module set-up, shared options, error mapping."""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import HAS_QEMU_QMP, QEMU_QMP_IMPORT_ERROR
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import DEFAULT_KEY_FILE
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import DEFAULT_DB_URL
from ansible_collections.infinivirt.core.plugins.module_utils.store.postgres import (
    HAS_PSYCOPG2,
    PSYCOPG2_IMPORT_ERROR,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.lifecycle import DEFAULT_NVRAM_DIR
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

DEFAULT_RUN_DIR = "/run/infinivirt"
DEFAULT_STORAGE_ROOT = "/var/lib/infinivirt/images"

# Documented once in plugins/doc_fragments/common.py.
COMMON_ARGUMENT_SPEC: Dict[str, Any] = dict(
    db_url=dict(type="str", default=DEFAULT_DB_URL, no_log=False,
                fallback=(env_fallback, ["INFINIVIRT_DB_URL"])),
    run_dir=dict(type="path", default=DEFAULT_RUN_DIR,
                 fallback=(env_fallback, ["INFINIVIRT_RUN_DIR"])),
    lock_timeout=dict(type="float", default=60.0),
    qemu_binary=dict(type="path"),
    secret_key_file=dict(type="path", default=DEFAULT_KEY_FILE, no_log=False),
    storage_roots=dict(type="list", elements="path", default=[DEFAULT_STORAGE_ROOT]),
    nvram_dir=dict(type="path", default=DEFAULT_NVRAM_DIR),
    host_id=dict(type="str", fallback=(env_fallback, ["INFINIVIRT_HOST_ID"])),
    job_id=dict(type="str", fallback=(env_fallback, ["INFINIVIRT_JOB_ID", "JOB_ID"])),
)


class InfinivirtModule:
    """AnsibleModule plus the collection's shared options and error handling."""

    def __init__(self, argument_spec: Dict[str, Any], **kwargs: Any):
        spec = dict(COMMON_ARGUMENT_SPEC)
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        password = urlsplit(self.module.params["db_url"]).password
        if password:
            self.module.no_log_values.add(password)
        if self.module.params["db_url"].startswith(("postgresql:", "postgres:")) and not HAS_PSYCOPG2:
            self.module.fail_json(msg=missing_required_lib("psycopg2"),
                                  exception=PSYCOPG2_IMPORT_ERROR)
        if not HAS_QEMU_QMP:
            self.module.fail_json(msg=missing_required_lib("qemu.qmp"),
                                  exception=QEMU_QMP_IMPORT_ERROR)

    @property
    def params(self) -> Dict[str, Any]:
        return self.module.params

    def run(self, action: Callable[[VmService], Dict[str, Any]]) -> None:
        """Run ``action`` against a VmService and exit with its result."""
        params = self.module.params
        try:
            service = VmService(params["db_url"], params["run_dir"], params["qemu_binary"],
                                params["lock_timeout"], hostname=params["host_id"],
                                job_id=params["job_id"], secret_key_file=params["secret_key_file"],
                                storage_roots=params["storage_roots"], nvram_dir=params["nvram_dir"])
            try:
                result = action(service)
            finally:
                service.close()
        except InfinivirtError as exc:
            self.module.fail_json(msg=str(exc))
        except Exception as exc:  # a bug: keep the traceback for the report
            self.module.fail_json(msg="unexpected error: %s" % exc,
                                  exception=traceback.format_exc())
        for warning in result.pop("warnings", []):
            self.module.warn(warning)
        self.module.exit_json(**result)
