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

With ``--copy-mb N`` (default 64) the guest also has a qcow2 data disk in its run dir with
N/4 MiB written, and each round adds a storage-copy migration per driver: the target (its own
empty disk of the same size) exports it over NBD, the source mirrors it there until ready,
migrates, and ends the mirror (vm/engine/storage_copy.py ``mirror``/``drop`` around ``send``,
against the same QMP commands by hand). Reported: wall time from the first mirror command to
the mirror's end, QEMU's total time and downtime of the RAM part. 0 skips it.

    .venv/bin/python bench/migration.py [--rounds 5] [--memory-mb 256] [--copy-mb 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
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
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records, storage_copy  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.incoming import listen  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.outgoing import recover, send  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import storage_copy as sc_model  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.migration import validate_request  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

PORT = 47400


def library_round(qmp, rec, target):
    req = validate_request({"name": rec.name, "to": "bench-b"}, "bench-a")
    listen(target.call, dataclasses.replace(rec, qmp_socket_path=target.qmp), req, target.uri)
    t0 = time.perf_counter()
    done = send(qmp, rec, req, target.uri, time.monotonic() + 300)
    return time.perf_counter() - t0, done["total_time_ms"], done["downtime_ms"]


def hand_round(qmp, rec, target, incoming=True):
    if incoming:
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


def library_copy_round(qmp, rec, target, facts, nbd_port):
    req = validate_request({"name": rec.name, "to": "bench-b"}, "bench-a")
    _export(target, facts, nbd_port)
    listen(target.call, dataclasses.replace(rec, qmp_socket_path=target.qmp), req, target.uri)
    t0 = time.perf_counter()
    ids = [f.disk_id for f in facts]
    storage_copy.mirror(qmp, rec, facts, ("127.0.0.1", nbd_port), ids, time.monotonic() + 300)
    done = send(qmp, rec, req, target.uri, time.monotonic() + 300)
    storage_copy.drop(qmp, rec, ids, force=False)
    return time.perf_counter() - t0, done["total_time_ms"], done["downtime_ms"]


def hand_copy_round(qmp, rec, target, facts, nbd_port):
    _export(target, facts, nbd_port)
    qmp_execute(target.qmp, "target", "migrate-incoming", {"uri": target.uri})
    socket = rec.qmp_socket_path
    t0 = time.perf_counter()
    for f in facts:
        node = {"driver": "nbd", "node-name": "hand-" + f.disk_id, "export": f.disk_id}
        node["server"] = {"type": "inet", "host": "127.0.0.1", "port": str(nbd_port)}
        qmp_execute(socket, "source", "blockdev-add", node)
        job = {"job-id": "hand-" + f.disk_id, "device": "n-" + f.disk_id, "target": "hand-" + f.disk_id}
        qmp_execute(socket, "source", "blockdev-mirror", dict(job, sync="full"))
    while not all(j["ready"] for j in qmp_execute(socket, "source", "query-block-jobs")):
        time.sleep(0.05)
    total, down = hand_round(qmp, rec, target, incoming=False)[1:]
    for f in facts:
        qmp_execute(socket, "source", "block-job-cancel", {"device": "hand-" + f.disk_id})
    while qmp_execute(socket, "source", "query-block-jobs"):
        time.sleep(0.05)
    for f in facts:
        qmp_execute(socket, "source", "blockdev-del", {"node-name": "hand-" + f.disk_id})
    return time.perf_counter() - t0, total, down


def _export(target, facts, nbd_port):
    target.call(None, "nbd-server-start", sc_model.nbd_server_start("127.0.0.1", nbd_port))
    for f in facts:
        target.call(None, "block-export-add", sc_model.export_add(f.disk_id))


def _target_disks(facts, run_dir):
    """A target's prepare: its own empty disk per copied disk (same name in its own dir)."""

    def prepare(target_dir):
        for f in facts:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", f.format, f.path.replace(run_dir, target_dir), str(f.virtual_size)],
                check=True,
            )

    return prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-mb", type=int, default=256)
    parser.add_argument("--copy-mb", type=int, default=64)
    args = parser.parse_args()
    guest = build_guest.build_guest()
    work = tempfile.mkdtemp(prefix="iv-bench")
    run_dir = os.path.join(work, "run")
    params = dict(name="mbench", memory_mb=args.memory_mb, accel="tcg", kernel=str(guest.kernel))
    params.update(initrd=str(guest.initrd), kernel_cmdline=guest.kernel_cmdline, state="running")
    service = VmService.open("sqlite:///%s/bench.db" % work, run_dir)
    results = {"infinivirt": [], "by_hand": []}
    if args.copy_mb:
        os.makedirs(run_dir, mode=0o700)
        data = os.path.join(run_dir, "data.qcow2")  # in the run dir: HandTarget moves it to its own dir
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", data, "%dM" % args.copy_mb], check=True)
        written = "write -P 0x5a 0 %dM" % max(1, args.copy_mb // 4)
        subprocess.run(["qemu-io", "-c", written, data], check=True, capture_output=True)
        params["disks"] = [{"path": data}]
        results.update(infinivirt_copy=[], by_hand_copy=[])
    try:
        vm = service.ensure(params, False).vm
        serial_report.wait_for_ready(vm["serial_log"], timeout=300)
        rec = records.load(service.store, "mbench")
        qmp = service.engine.sessions.qmp
        facts = storage_copy.gather(service.engine, rec) if args.copy_mb else []
        rounds = {
            "infinivirt": library_round,
            "by_hand": hand_round,
            "infinivirt_copy": lambda q, r, t: library_copy_round(q, r, t, facts, t.nbd_port),
            "by_hand_copy": lambda q, r, t: hand_copy_round(q, r, t, facts, t.nbd_port),
        }
        for i in range(args.rounds):
            order = list(results) if i % 2 == 0 else list(results)[::-1]  # load drift hits both
            for who in order:
                port = PORT + 10 * (i * len(results) + order.index(who))
                prepare = _target_disks(facts, run_dir) if facts else None
                target = HandTarget(vm["pid"], run_dir, port, prepare)
                target.nbd_port = port + 1
                try:
                    wall, total, down = rounds[who](qmp, rec, target)
                finally:
                    target.kill()
                recover(qmp, rec)  # the source guest runs again for the next round
                results[who].append({"wall_s": round(wall, 3), "total_time_ms": total, "downtime_ms": down})
                print("round %d %-15s %s" % (i + 1, who, results[who][-1]), file=sys.stderr)
    finally:
        service.ensure({"name": "mbench", "state": "absent", "force": True, "stop_timeout": 0}, False)
        service.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        who: {key: statistics.median(r[key] for r in rows) for key in ("wall_s", "total_time_ms", "downtime_ms")}
        for who, rows in results.items()
    }
    out = {"rounds": args.rounds, "memory_mb": args.memory_mb, "copy_mb": args.copy_mb, "summary": summary}
    print(json.dumps(dict(out, samples=results)))
    for who, s in summary.items():
        print(
            "%-15s median wall %.3f s, QEMU total %s ms, downtime %s ms"
            % (who, s["wall_s"], s["total_time_ms"], s["downtime_ms"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
