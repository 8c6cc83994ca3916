# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test stand-in for roles/host/files/infinivirt-monitor, until the real one lands.

It keeps the monitor's contract: ``--db-url URL --run-dir DIR [--host-id ID] [--once]``,
runs in the foreground, logs to stderr, and stops on SIGTERM.
"""

import argparse
import os
import signal
import sys
import time


def main():
    parser = argparse.ArgumentParser(prog="infinivirt-monitor")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--host-id")
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    sys.stderr.write(
        "fake monitor %d: db %s, run dir %s, PGPASSWORD %s\n"
        % (os.getpid(), args.db_url, args.run_dir, "set" if os.environ.get("PGPASSWORD") else "unset")
    )
    sys.stderr.flush()
    while not stop and not args.once:
        time.sleep(0.1)
    sys.stderr.write("fake monitor %d: stopped\n" % os.getpid())


if __name__ == "__main__":
    main()
