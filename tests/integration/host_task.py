# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One task of one host, run inside that host's network namespace (``ip netns exec NS python
host_task.py JSON``), as a module run on that host would: the library's VM service, firewall
or migration service on the host's own context. JSON: db_url, run_dir, host_id, action
(vm, firewall, migrate), params. Prints the result as JSON, or {"error": message}."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError  # noqa: E402


def run(job: dict) -> dict:
    ctx = HostContext.open(job["db_url"], job["run_dir"], host_id=job["host_id"], nvram_dir=job["run_dir"])
    try:
        if job["action"] == "vm":
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

            return VmService(ctx).ensure(job["params"], False).result()
        if job["action"] == "firewall":
            from ansible_collections.infinivirt.core.plugins.module_utils.firewall.service import FirewallService
            from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

            firewall = FirewallService(ctx.store, ctx.host_id, records.firewall_directory(ctx.store))
            return firewall.ensure(job["params"], False)
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.acting import acting_engine
        from ansible_collections.infinivirt.core.plugins.module_utils.vm.migration import MigrationService

        return MigrationService(acting_engine(ctx)).migrate(job["params"], False)
    finally:
        ctx.close()


if __name__ == "__main__":
    try:
        print(json.dumps(run(json.loads(sys.argv[1])), default=str))
    except InfinivirtError as exc:
        print(json.dumps({"error": str(exc)}))
