# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lock waits under contention, on both backends.

N processes call ensure(state: running) on one running VM at once (a no-op each: the lock
is the contended resource). Reported per backend: the median time to take the VM lock, the
median whole-call latency, and an uncontended call measured in the same run as baseline.

    .venv/bin/python bench/lock_wait.py [--callers 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

from pgtest import pg_server, with_database  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

VM = {"name": "bench-lock", "accel": "tcg", "memory_mb": 32, "stop_timeout": 1, "force": True}


def timed_service(db_url, run_dir):
    """A VmService whose lock acquisitions are timed."""
    service = VmService.open(db_url, run_dir, lock_timeout=300)
    waits = []
    real_lock = service.store.vm_lock

    class Timed:
        def __init__(self, name, timeout):
            self.inner = real_lock(name, timeout)

        def __enter__(self):
            t0 = time.perf_counter()
            self.inner.__enter__()
            waits.append(time.perf_counter() - t0)

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    service.store.vm_lock = Timed
    return service, waits


def _caller(db_url, run_dir, barrier, out):
    service, waits = timed_service(db_url, run_dir)
    barrier.wait(60)
    t0 = time.perf_counter()
    service.ensure(dict(VM, state="running"), False)
    out.put((waits[0], time.perf_counter() - t0))
    service.close()


def measure(db_url, run_dir, callers, rounds):
    service, waits = timed_service(db_url, run_dir)
    service.ensure(dict(VM, state="running"), False)
    alone = []
    for _n in range(callers):
        t0 = time.perf_counter()
        service.ensure(dict(VM, state="running"), False)
        alone.append(time.perf_counter() - t0)
    lock_waits, calls = [], []
    for _r in range(rounds):
        barrier, out = multiprocessing.Barrier(callers), multiprocessing.Queue()
        procs = [multiprocessing.Process(target=_caller, args=(db_url, run_dir, barrier, out)) for _n in range(callers)]
        for p in procs:
            p.start()
        for _p in procs:
            wait, call = out.get(timeout=300)
            lock_waits.append(wait)
            calls.append(call)
        for p in procs:
            p.join(30)
    service.ensure(dict(VM, state="absent"), False)
    service.close()
    return {
        "uncontended_call_median_s": round(statistics.median(alone), 4),
        "contended_lock_wait_median_s": round(statistics.median(lock_waits), 4),
        "contended_lock_wait_max_s": round(max(lock_waits), 4),
        "contended_call_median_s": round(statistics.median(calls), 4),
        "samples": len(calls),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iv-benchlock")
    admin = pg_server("start")
    import psycopg2

    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute("DROP DATABASE IF EXISTS iv_bench_lock WITH (FORCE)")
    conn.cursor().execute("CREATE DATABASE iv_bench_lock")
    results = {}
    try:
        for backend, url in (
            ("sqlite", "sqlite:///%s/bench.db" % work),
            ("postgresql", with_database(admin, "iv_bench_lock")),
        ):
            results[backend] = measure(url, os.path.join(work, "run-" + backend), args.callers, args.rounds)
    finally:
        conn.cursor().execute("DROP DATABASE IF EXISTS iv_bench_lock WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"callers": args.callers, "rounds": args.rounds, "results": results}, indent=1))
    for backend, r in results.items():
        print(
            "%s: lock wait median %.1f ms (max %.1f ms) with %d callers; call median %.1f ms "
            "contended vs %.1f ms alone (ratio %.1f)"
            % (
                backend,
                r["contended_lock_wait_median_s"] * 1000,
                r["contended_lock_wait_max_s"] * 1000,
                args.callers,
                r["contended_call_median_s"] * 1000,
                r["uncontended_call_median_s"] * 1000,
                r["contended_call_median_s"] / r["uncontended_call_median_s"],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
