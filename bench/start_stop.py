# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Start and stop latency: Infinivirt's library against bare QEMU, interleaved.

Start: from the call to QEMU reporting `running` over QMP. Library = VmService.ensure
(state: running), which validates, locks, writes the store, spawns paused, checks and
`cont`s. Baseline = the same VM's argv without -S, `-daemonize`, then a QMP handshake
and `query-status`. Stop: from the request to the process being gone, once the guest has
reported ready (its ACPI power button open). Library = ensure(state: stopped); baseline =
QMP `system_powerdown` and a wait on the PID.

    .venv/bin/python bench/start_stop.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "guest")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

import build_guest  # noqa: E402
import serial_report  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import read_pidfile, wait_until_gone  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe import find_binary  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402


def library_round(service, params):
    t0 = time.perf_counter()
    out = service.ensure(dict(params, state="running"), False)
    start = time.perf_counter() - t0
    serial_report.wait_for_ready(out.vm["serial_log"], timeout=180)
    t0 = time.perf_counter()
    service.ensure({"name": params["name"], "state": "stopped"}, False)
    stop = time.perf_counter() - t0
    return start, stop


def baseline_round(spec, run_dir):
    vm_uuid = str(uuidlib.uuid4())
    base = os.path.join(run_dir, vm_uuid)
    ctx = LaunchContext(
        binary=find_binary(),
        uuid=vm_uuid,
        accel="tcg",
        cpu="max",
        pidfile=base + ".pid",
        qmp_socket=base + ".qmp",
        serial_log=base + ".log",
    )
    argv = [a for a in build_argv(spec, ctx) if a != "-S"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    with QmpSession(ctx.qmp_socket, "baseline") as qmp:
        assert qmp.execute("query-status")["status"] == "running"
    start = time.perf_counter() - t0
    pid = read_pidfile(ctx.pidfile)
    serial_report.wait_for_ready(ctx.serial_log, timeout=180)
    t0 = time.perf_counter()
    with QmpSession(ctx.qmp_socket, "baseline") as qmp:
        qmp.execute("system_powerdown")
    assert wait_until_gone(pid, vm_uuid, 60, interval=0.005)
    stop = time.perf_counter() - t0
    for suffix in (".pid", ".qmp", ".log"):
        if os.path.exists(base + suffix):
            os.unlink(base + suffix)
    return start, stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    guest = build_guest.build_guest()
    work = tempfile.mkdtemp(prefix="iv-bench")
    params = dict(
        name="bench",
        vcpus=1,
        memory_mb=256,
        accel="tcg",
        kernel=str(guest.kernel),
        initrd=str(guest.initrd),
        kernel_cmdline=guest.kernel_cmdline,
    )
    spec = VmSpec(**params)
    service = VmService.open("sqlite:///%s/bench.db" % work, os.path.join(work, "run"))
    os.makedirs(os.path.join(work, "base"))
    results = {"library": {"start": [], "stop": []}, "baseline": {"start": [], "stop": []}}
    try:
        for i in range(args.rounds):
            # Alternate which goes first so drift in machine load hits both alike.
            order = ("library", "baseline") if i % 2 == 0 else ("baseline", "library")
            for who in order:
                if who == "library":
                    start, stop = library_round(service, params)
                else:
                    start, stop = baseline_round(spec, os.path.join(work, "base"))
                results[who]["start"].append(start)
                results[who]["stop"].append(stop)
                print("round %d %-8s start %.3f s  stop %.3f s" % (i + 1, who, start, stop), file=sys.stderr)
    finally:
        service.ensure({"name": "bench", "state": "absent", "force": True, "stop_timeout": 10}, False)
        service.close()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for phase in ("start", "stop"):
        lib = statistics.median(results["library"][phase])
        base = statistics.median(results["baseline"][phase])
        summary[phase] = {
            "library_median_s": round(lib, 4),
            "baseline_median_s": round(base, 4),
            "ratio": round(lib / base, 2),
        }
    print(json.dumps({"rounds": args.rounds, "accel": "tcg", "summary": summary, "samples": results}, indent=1))
    for phase, s in summary.items():
        print(
            "%s: library median %.3f s, bare QEMU median %.3f s, ratio %.2f"
            % (phase, s["library_median_s"], s["baseline_median_s"], s["ratio"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
