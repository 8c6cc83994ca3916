# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``infinivirt-monitor``: the host monitor's command line (roles/host/files/infinivirt-monitor).

    infinivirt-monitor [--config FILE] [--db-url URL] [--run-dir DIR] [--host-id ID] [--once]

Runs in the foreground and logs to stderr; ``--once`` reconciles, autostarts after a boot,
and exits (for cron or a pipeline step). SIGTERM stops it. The host's paths come from the
host configuration file the host role writes (module_utils/host_config.py); a flag given here
(or INFINIVIRT_DB_URL, INFINIVIRT_RUN_DIR, INFINIVIRT_HOST_ID) overrides the file's value.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils import host_config
from ansible_collections.infinivirt.core.plugins.module_utils.context import HostContext
from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, StoreError
from ansible_collections.infinivirt.core.plugins.module_utils.host.private_dir import ensure_private_dir
from ansible_collections.infinivirt.core.plugins.module_utils.host.process import lock_pidfile
from ansible_collections.infinivirt.core.plugins.module_utils.monitor.service import BOOT_ID, Monitor

# In run_dir: held (flock) by the running monitor, so a second one on the host refuses to run
# and the role's supervisor finds a monitor it lost (roles/host/files/infinivirt-supervise).
PIDFILE = "monitor.pid"


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="infinivirt-monitor", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--config",
        default=os.environ.get("INFINIVIRT_HOST_CONFIG", host_config.DEFAULT_HOST_CONFIG),
        help="the host configuration file (default: %(default)s); its values are the defaults of the flags below",
    )
    parser.add_argument("--db-url", default=os.environ.get("INFINIVIRT_DB_URL"))
    parser.add_argument("--run-dir", default=os.environ.get("INFINIVIRT_RUN_DIR"))
    parser.add_argument(
        "--host-id",
        default=os.environ.get("INFINIVIRT_HOST_ID"),  # as the modules read it: one host, one id
        help="default: INFINIVIRT_HOST_ID, else the host configuration's, else this host's name",
    )
    parser.add_argument("--once", action="store_true", help="reconcile, autostart after a boot, and exit")
    parser.add_argument("--secret-key-file")
    parser.add_argument("--storage-root", action="append", dest="storage_roots", help="repeat for each root")
    parser.add_argument("--nvram-dir")
    parser.add_argument("--lock-timeout", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between store scans")
    parser.add_argument("--boot-id-file", default=BOOT_ID, help="what tells one host boot from the next")
    parser.add_argument(
        "--migration-address",
        default=None,
        help="the address of this host that migration sources connect to (none: migrations here are refused)",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    if args.poll <= 0:
        parser.error("--poll must be greater than 0")
    if args.lock_timeout < 0:
        parser.error("--lock-timeout must not be negative")
    try:
        vars(args).update(host_config.resolve(vars(args), args.config))
    except InfinivirtError as exc:
        parser.error(str(exc))
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
    monitor = Monitor(
        open_context, poll=args.poll, boot_id_file=args.boot_id_file, migration_address=args.migration_address
    )
    if args.once:
        return monitor.once()
    lock_fd = hold_lock(args.run_dir, log)
    if lock_fd is None:
        return 3
    try:
        return monitor.run()
    finally:
        os.close(lock_fd)


def hold_lock(run_dir: str, log: logging.Logger) -> Optional[int]:
    """The fd holding run_dir's monitor lock, or None (logged) when another monitor has it."""
    pidfile = os.path.join(run_dir, PIDFILE)
    try:
        ensure_private_dir(run_dir, "run_dir")  # as a VM start makes it
        lock_fd, holder = lock_pidfile(pidfile)
    except InfinivirtError as exc:
        log.error("%s", exc)
        return None
    except OSError as exc:
        log.error("cannot lock %s: %s", pidfile, exc.strerror or exc)
        return None
    if lock_fd is None:
        log.error(
            "another monitor (PID %s) runs for run_dir %s (it holds %s): not starting a second",
            holder,
            run_dir,
            pidfile,
        )
    return lock_fd
