# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``infinivirt-monitor``: the host monitor's command line (roles/host/files/infinivirt-monitor).

    infinivirt-monitor --db-url URL --run-dir DIR [--host-id ID] [--once]

Runs in the foreground and logs to stderr; ``--once`` reconciles, autostarts after a boot,
and exits (for cron or a pipeline step). SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.context import (
    DEFAULT_NVRAM_DIR,
    DEFAULT_RUN_DIR,
    DEFAULT_STORAGE_ROOT,
    HostContext,
)
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.service import BOOT_ID, Monitor
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import DEFAULT_KEY_FILE
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import DEFAULT_DB_URL


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infinivirt-monitor", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db-url", default=os.environ.get("INFINIVIRT_DB_URL", DEFAULT_DB_URL))
    parser.add_argument("--run-dir", default=os.environ.get("INFINIVIRT_RUN_DIR", DEFAULT_RUN_DIR))
    parser.add_argument("--host-id", default=None, help="default: this host's name")
    parser.add_argument("--once", action="store_true", help="reconcile, autostart after a boot, and exit")
    parser.add_argument("--secret-key-file", default=DEFAULT_KEY_FILE)
    parser.add_argument("--storage-root", action="append", dest="storage_roots", help="repeat for each root")
    parser.add_argument("--nvram-dir", default=DEFAULT_NVRAM_DIR)
    parser.add_argument("--lock-timeout", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between store scans")
    parser.add_argument("--boot-id-file", default=BOOT_ID, help="what tells one host boot from the next")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    if args.poll <= 0:
        parser.error("--poll must be greater than 0")
    if args.lock_timeout < 0:
        parser.error("--lock-timeout must not be negative")
    args.storage_roots = args.storage_roots or [DEFAULT_STORAGE_ROOT]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level, format="%(asctime)s infinivirt-monitor %(levelname)s %(message)s"
    )

    def open_context() -> HostContext:
        return HostContext.open(
            args.db_url,
            args.run_dir,
            host_id=args.host_id,
            job_id="infinivirt-monitor",
            lock_timeout=args.lock_timeout,
            nvram_dir=args.nvram_dir,
            storage_roots=args.storage_roots,
            secret_key_file=args.secret_key_file,
        )

    log = logging.getLogger("infinivirt.monitor")
    try:
        open_context().close()  # a bad URL or run_dir is an error now, not a retry loop
    except StoreError as exc:  # a server not up yet (boot order): the monitor keeps trying
        log.error("%s; will retry", exc)
    except InfinivirtError as exc:
        log.error("%s", exc)
        return 2
    monitor = Monitor(open_context, poll=args.poll, boot_id_file=args.boot_id_file)
    return monitor.once() if args.once else monitor.run()
