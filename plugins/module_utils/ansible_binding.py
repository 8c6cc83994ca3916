# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place that imports Ansible: module set-up, shared options, error mapping."""

from __future__ import annotations

import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.common.parameters import remove_values

from ansible_collections.infinivirt.core.plugins.module_utils import host_config
from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, MissingLibrary

# Documented once in plugins/doc_fragments/common.py. The options of the host configuration
# file (module_utils/host_config.py) have no default here: an unset one is taken from the
# file, else from host_config.DEFAULTS.
COMMON_ARGUMENT_SPEC: Dict[str, Any] = dict(
    host_config=dict(
        type="path",
        default=host_config.DEFAULT_HOST_CONFIG,
        fallback=(env_fallback, ["INFINIVIRT_HOST_CONFIG"]),
    ),
    db_url=dict(type="str", no_log=False, fallback=(env_fallback, ["INFINIVIRT_DB_URL"])),
    run_dir=dict(type="path", fallback=(env_fallback, ["INFINIVIRT_RUN_DIR"])),
    lock_timeout=dict(type="float", default=60.0),
    qemu_binary=dict(type="path"),
    secret_key_file=dict(type="path", no_log=False),
    storage_roots=dict(type="list", elements="path"),
    nvram_dir=dict(type="path"),
    host_id=dict(type="str", fallback=(env_fallback, ["INFINIVIRT_HOST_ID"])),
    # The action plugins fill job_id in on the controller (plugins/plugin_utils/job.py); these
    # cover a module run without them (the same names, as the managed host sees them).
    job_id=dict(type="str", fallback=(env_fallback, ["INFINIVIRT_JOB_ID", "AWX_JOB_ID", "TOWER_JOB_ID", "JOB_ID"])),
    sysfs_root=dict(type="path", default="/", fallback=(env_fallback, ["INFINIVIRT_SYSFS_ROOT"])),
)

# A Python library a module needs on the managed host: (name, imported?, import traceback).
Requirement = Tuple[str, bool, Optional[str]]


class InfinivirtModule:
    """AnsibleModule plus the collection's shared options and error handling.

    ``requirements``: the libraries the module's own service needs (qemu.qmp for the modules
    that speak QMP); psycopg2 is added when db_url names PostgreSQL."""

    def __init__(self, argument_spec: Dict[str, Any], requirements: Sequence[Requirement] = (), **kwargs: Any):
        spec = dict(COMMON_ARGUMENT_SPEC)
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self._resolve_host_config()
        password = urlsplit(self.module.params["db_url"]).password
        if password:
            self.module.no_log_values.add(password)
        needed = list(requirements)
        if self.module.params["db_url"].startswith(("postgresql:", "postgres:")):
            from ansible_collections.infinivirt.core.plugins.module_utils.store import postgres

            needed.append(("psycopg2", postgres.HAS_PSYCOPG2, postgres.PSYCOPG2_IMPORT_ERROR))
        for name, present, import_error in needed:
            if not present:
                self.module.fail_json(msg=missing_required_lib(name), exception=import_error)

    def _resolve_host_config(self) -> None:
        """Fill the unset shared options in from the host configuration file, else the
        built-in defaults, so the rest of the module sees every one set."""
        params = self.module.params
        given = {key: params.get(key) for key in host_config.DEFAULTS}
        try:
            params.update(host_config.resolve(given, params["host_config"]))
        except InfinivirtError as exc:
            self.module.fail_json(msg=str(exc))

    @property
    def params(self) -> Dict[str, Any]:
        return self.module.params

    @property
    def check_mode(self) -> bool:
        return self.module.check_mode

    @property
    def diff_mode(self) -> bool:
        return self.module._diff

    def context(self) -> HostContext:
        params = self.module.params
        return HostContext.open(
            params["db_url"],
            params["run_dir"],
            host_id=params["host_id"],
            job_id=params["job_id"],
            lock_timeout=params["lock_timeout"],
            nvram_dir=params["nvram_dir"],
            storage_roots=params["storage_roots"],
            secret_key_file=params["secret_key_file"],
            qemu_binary=params["qemu_binary"],
            sysfs_root=params["sysfs_root"],
        )

    def run(self, action: Callable[[HostContext], Dict[str, Any]]) -> None:
        """Run ``action`` against the host context and exit with its result. A ``diff``
        in the result is kept only in diff mode; ``warnings`` become Ansible warnings."""
        try:
            ctx = self.context()
            try:
                result = action(ctx)
            finally:
                ctx.close()
        except MissingLibrary as exc:  # a library only this task's options need
            self.module.fail_json(
                msg="%s (needed for %s)" % (missing_required_lib(exc.library), exc.purpose), exception=exc.import_error
            )
        except InfinivirtError as exc:  # ``result``: what a failure returns besides msg (console_tail)
            self._finish(self.module.fail_json, dict(msg=str(exc), **(getattr(exc, "result", None) or {})))
        except Exception as exc:  # a bug: keep the traceback for the report
            self.module.fail_json(msg="unexpected error: %s" % exc, exception=traceback.format_exc())
        if not self.module._diff:
            result.pop("diff", None)
        for warning in result.pop("warnings", []):
            self.module.warn(warning)
        if result.get("failed"):  # a partial failure that still reports its results
            self._finish(self.module.fail_json, result)
        self._finish(self.module.exit_json, result)

    def _finish(self, exit_method: Callable[..., Any], result: Dict[str, Any]) -> None:
        """Exit with ``result``. Ansible hides every string of a no_log option wherever it
        appears in the output, and cloud_init's user_data and users are no_log as a whole: a
        runcmd of ``sh`` turned ``wait_for: ssh`` into ``s********``. The echo of the task's
        options (invocation) is masked with all of them, as Ansible would; the results, which
        never hold cloud_init's content, are not masked with its short strings."""
        short = _short_strings(_cloud_init_options(self.module.params)) & self.module.no_log_values
        if not short:  # most tasks: Ansible's own masking is right
            exit_method(**result)
            return
        invocation = {"module_args": remove_values(self.module.params, self.module.no_log_values)}
        self.module.no_log_values.difference_update(short)
        exit_method(invocation=invocation, **result)


# cloud_init strings shorter than this (``sh``, ``-c``, ``default``, a user name) are no
# secrets worth hiding in results, and hiding them garbles any value that contains them.
SHORT_NO_LOG_STRING = 8


def _cloud_init_options(value: Any) -> List[Any]:
    """Every ``cloud_init`` option in a module's params (infinivirt_vms: in defaults and entries)."""
    found: List[Any] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "cloud_init" and item is not None:
                found.append(item)
            else:
                found.extend(_cloud_init_options(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_cloud_init_options(item))
    return found


def _short_strings(value: Any) -> Set[str]:
    if isinstance(value, str):
        return {value} if len(value) < SHORT_NO_LOG_STRING else set()
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return set().union(*(_short_strings(item) for item in items)) if items else set()


def validate_options(
    argument_spec: Dict[str, Any], params: Dict[str, Any], path: str
) -> Tuple[Dict[str, Any], List[str], Set[str]]:
    """Check ``params`` as AnsibleModule checks its own (types, choices, required, suboptions)
    and return (validated params, errors, no_log values). Each error names ``path`` and the
    list position of a suboption (``vms[3].disks[0]: ...``), which Ansible's do not."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible.module_utils.errors import UnsupportedError

    shallow = {key: {k: v for k, v in option.items() if k != "options"} for key, option in argument_spec.items()}
    checked = ArgumentSpecValidator(shallow).validate(params)
    values = dict(checked.validated_parameters)
    errors = [
        "%s: %s%s" % (path, "unsupported parameters: " if isinstance(err, UnsupportedError) else "", err.msg)
        for err in checked.errors.errors
    ]
    hidden = set(checked._no_log_values)
    for key, option in argument_spec.items():
        value = values.get(key)
        if "options" not in option or not value or not isinstance(value, (dict, list)):
            continue
        items = value if isinstance(value, list) else [value]
        done = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):  # reported above (elements: dict)
                done.append(item)
                continue
            where = "%s.%s[%d]" % (path, key, index) if isinstance(value, list) else "%s.%s" % (path, key)
            sub_values, sub_errors, sub_hidden = validate_options(option["options"], item, where)
            done.append(sub_values)
            errors += sub_errors
            hidden |= sub_hidden
        values[key] = done if isinstance(value, list) else done[0]
    return values, errors, hidden
