# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host monitor's memory over many VM start/stop cycles, and its crash cleanup time.

A real monitor (roles/host/files/infinivirt-monitor) follows one firmware-only VM that a
VmService starts and ends N times, alternating a task's forced stop with a kill -9 that the
monitor cleans up. Reported: the monitor's RSS every 100 cycles, and the median and max
time from kill -9 to a cleaned-up, crashed row.

    .venv/bin/python bench/monitor_memory.py [--cycles 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "integration")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

from monitor_proc import MonitorProcess  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import wait_until_gone  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

VM = {"name": "bench-cycler", "accel": "tcg", "memory_mb": 64}
STOP = {"name": "bench-cycler", "state": "stopped", "force": True, "stop_timeout": 0.1}


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid, encoding="ascii") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iv-benchmon")
    db_url, run_dir = "sqlite:///%s/bench.db" % work, os.path.join(work, "run")
    service = VmService.open(db_url, run_dir, lock_timeout=60)
    monitor = MonitorProcess(db_url, run_dir, service.hostname, os.path.join(work, "monitor.log"))
    monitor.start()
    rss, cleanups = {}, []
    try:
        assert monitor.wait_log("monitor started"), monitor.log()
        for cycle in range(1, args.cycles + 1):
            vm = service.ensure(dict(VM, state="running"), False).vm
            if not monitor.wait_log("following VM bench-cycler (PID %d)" % vm["pid"]):
                raise RuntimeError("the monitor did not attach:\n" + monitor.log()[-2000:])
            if cycle % 2:
                service.ensure(STOP, False)
            else:
                killed = time.monotonic()
                os.kill(vm["pid"], signal.SIGKILL)
                wait_until_gone(vm["pid"], vm["uuid"], 10)
                while records.load(service.store, "bench-cycler").status != "crashed":
                    if time.monotonic() - killed > 10:
                        raise RuntimeError("not cleaned up:\n" + monitor.log()[-2000:])
                    time.sleep(0.005)
                cleanups.append(time.monotonic() - killed)
            if cycle % 100 == 0 or cycle == 1:
                rss[cycle] = rss_kib(monitor.proc.pid)
                print("cycle %d: monitor RSS %d KiB" % (cycle, rss[cycle]), flush=True)
        service.ensure(dict(VM, state="absent", force=True, stop_timeout=0.1), False)
    finally:
        monitor.stop()
        service.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "cycles": args.cycles,
        "rss_kib": rss,
        "kill_to_clean_ms": {
            "median": round(statistics.median(cleanups) * 1000, 1),
            "max": round(max(cleanups) * 1000, 1),
            "samples": len(cleanups),
        },
    }
    print(json.dumps(result, indent=1))
    first = min(k for k in rss if k >= 100) if any(k >= 100 for k in rss) else 1
    print(
        "monitor RSS %d KiB at cycle %d, %d KiB at cycle %d; kill -9 to clean: median %.0f ms, max %.0f ms"
        % (
            rss[first],
            first,
            rss[args.cycles],
            args.cycles,
            result["kill_to_clean_ms"]["median"],
            result["kill_to_clean_ms"]["max"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
