# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live migration time and downtime: infinivirt's source half (vm/engine/outgoing.py ``send``,
with the target told by vm/engine/incoming.py) against QEMU's own ``migrate`` driven by hand
over QMP, in the same run, on the same guest.

One test guest (1 vCPU, ``--memory-mb``) is started by infinivirt and left idle once ready.
Each round, for each side in turn, a target QEMU is started by hand from the source's own
command line (tests/integration/migration_target.py) with ``-incoming defer``; the guest
migrates to it over loopback TCP; the target is killed and the source guest let run again
(``cont``). Reported: the wall time from ``migrate`` to ``completed`` as each driver sees it,
and QEMU's own ``total-time`` and ``downtime``. Same downtime limit (300 ms) both sides, no
bandwidth limit. Medians of the rounds. The stream never leaves the machine: compare the two
drivers with each other, not with a network.

    .venv/bin/python bench/migration.py [--rounds 5] [--memory-mb 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [
    os.path.join(REPO, "tests"),
    os.path.join(REPO, "tests", "guest"),
    os.path.join(REPO, "tests", "integration"),
]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

import build_guest  # noqa: E402
import serial_report  # noqa: E402
from migration_target import HandTarget  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import qmp_execute  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import recover, send  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import validate_request  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

PORT = 47400


def library_round(qmp, rec, target):
    req = validate_request({"name": rec.name, "to": "bench-b"}, "bench-a")
    listen(target.call, dataclasses.replace(rec, qmp_socket_path=target.qmp), req, target.uri)
    t0 = time.perf_counter()
    done = send(qmp, rec, req, target.uri, time.monotonic() + 300)
    return time.perf_counter() - t0, done["total_time_ms"], done["downtime_ms"]


def hand_round(qmp, rec, target):
    qmp_execute(target.qmp, "target", "migrate-incoming", {"uri": target.uri})
    socket = rec.qmp_socket_path
    qmp_execute(socket, "source", "migrate-set-parameters", {"downtime-limit": 300})
    t0 = time.perf_counter()
    qmp_execute(socket, "source", "migrate", {"uri": target.uri})
    while True:
        reply = qmp_execute(socket, "source", "query-migrate")
        if reply["status"] == "completed":
            return time.perf_counter() - t0, reply["total-time"], reply["downtime"]
        assert reply["status"] not in ("failed", "cancelled"), reply
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-mb", type=int, default=256)
    args = parser.parse_args()
    guest = build_guest.build_guest()
    work = tempfile.mkdtemp(prefix="iv-bench")
    run_dir = os.path.join(work, "run")
    params = dict(name="mbench", memory_mb=args.memory_mb, accel="tcg", kernel=str(guest.kernel))
    params.update(initrd=str(guest.initrd), kernel_cmdline=guest.kernel_cmdline, state="running")
    service = VmService.open("sqlite:///%s/bench.db" % work, run_dir)
    results = {"infinivirt": [], "by_hand": []}
    try:
        vm = service.ensure(params, False).vm
        serial_report.wait_for_ready(vm["serial_log"], timeout=300)
        rec = records.load(service.store, "mbench")
        qmp = service.engine.sessions.qmp
        for i in range(args.rounds):
            order = ("infinivirt", "by_hand") if i % 2 == 0 else ("by_hand", "infinivirt")  # load drift hits both
            for who in order:
                target = HandTarget(vm["pid"], run_dir, PORT + len(results[who]) * 2 + (who == "by_hand"))
                try:
                    wall, total, down = (library_round if who == "infinivirt" else hand_round)(qmp, rec, target)
                finally:
                    target.kill()
                recover(qmp, rec)  # the source guest runs again for the next round
                results[who].append({"wall_s": round(wall, 3), "total_time_ms": total, "downtime_ms": down})
                print("round %d %-10s %s" % (i + 1, who, results[who][-1]), file=sys.stderr)
    finally:
        service.ensure({"name": "mbench", "state": "absent", "force": True, "stop_timeout": 0}, False)
        service.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        who: {key: statistics.median(r[key] for r in rows) for key in ("wall_s", "total_time_ms", "downtime_ms")}
        for who, rows in results.items()
    }
    print(json.dumps({"rounds": args.rounds, "memory_mb": args.memory_mb, "summary": summary, "samples": results}))
    for who, s in summary.items():
        print(
            "%-10s median wall %.3f s, QEMU total %s ms, downtime %s ms"
            % (who, s["wall_s"], s["total_time_ms"], s["downtime_ms"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
