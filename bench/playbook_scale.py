# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Playbook cost per VM count: a loop of infinivirt_vm, one infinivirt_vms task, and the
ansible.builtin.ping floor of the same shape.

For each count (1, 10, 50, 100 by default) and round, one ansible-playbook run against localhost
times each task (a callback records task start to result): a first converge (create and
start), a no-op converge, a forced stop, a no-op stop and infinivirt_vm_info of all VMs,
once as a loop of infinivirt_vm over N names (info: a loop of infinivirt_vm_info by name)
and once as one infinivirt_vms task (info: one infinivirt_vm_info task); the floor is a
loop of ping over N items and one ping task. Counts and the order of the two ways are
interleaved between rounds. VMs are firmware only (no disk, no kernel), 1 vCPU, 64 MiB,
TCG; state lives in a temp dir and every VM is removed (absent, force) at the end. Runs on
any host with QEMU and Ansible (no bench farm).

Printed: medians per count, way and phase, each one's ratio to its floor (loop: the ping
loop; one task: the single ping), the per-VM slope between consecutive counts, and the
cost per VM of each way and phase (the median over N) with its slope from 10 (or the
smallest count) to the largest: flat cost means the two slopes match.

    .venv/bin/python bench/playbook_scale.py [--counts 1,10,50,100] [--rounds 3] [--stop-timeout 0]
        [--ways loop,vms]   (--ways vms: the bulk task alone, minutes instead of most of an hour)
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests")]

from collection_path import collections_root  # noqa: E402

PHASES = ("converge_first", "converge_noop", "stop_forced", "stop_noop", "info")
WAYS = ("loop", "vms")  # a loop of infinivirt_vm; one infinivirt_vms task
FLOOR = {"loop": "ping_loop", "vms": "ping_single"}
VM = {"accel": "tcg", "memory_mb": 64, "vcpus": 1}

# Times every task from its start to its result on the one host, into $BENCH_TIMES.
CALLBACK = """
import json, os, time
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.rows, self.name, self.start = [], None, None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.name, self.start = task.get_name(), time.perf_counter()

    def _done(self, result, failed):
        res = result._result
        self.rows.append(dict(task=self.name, seconds=time.perf_counter() - self.start,
                              changed=bool(res.get("changed")), failed=failed, msg=str(res.get("msg", ""))[:300]))

    def v2_runner_on_ok(self, result):
        self._done(result, False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, True)

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["BENCH_TIMES"], "w") as fh:
            json.dump(self.rows, fh)
"""


def loop_tasks(stop_timeout):
    vm = dict(VM, name="{{ item }}")
    tasks = [
        ("converge_first", "infinivirt.core.infinivirt_vm", dict(vm, state="running")),
        ("converge_noop", "infinivirt.core.infinivirt_vm", dict(vm, state="running")),
        (
            "stop_forced",
            "infinivirt.core.infinivirt_vm",
            dict(name="{{ item }}", state="stopped", force=True, stop_timeout=stop_timeout),
        ),
        (
            "stop_noop",
            "infinivirt.core.infinivirt_vm",
            dict(name="{{ item }}", state="stopped", force=True, stop_timeout=stop_timeout),
        ),
        ("info", "infinivirt.core.infinivirt_vm_info", dict(name="{{ item }}")),
    ]
    return [{"name": "loop " + phase, module: args, "loop": "{{ names }}"} for phase, module, args in tasks]


def vms_tasks(stop_timeout):
    stop = dict(state="stopped", force=True, stop_timeout=stop_timeout)
    tasks = [
        ("converge_first", dict(defaults=dict(VM, state="running"))),
        ("converge_noop", dict(defaults=dict(VM, state="running"))),
        ("stop_forced", dict(defaults=stop)),
        ("stop_noop", dict(defaults=stop)),
    ]
    out = [
        {"name": "vms " + phase, "infinivirt.core.infinivirt_vms": dict(args, vms="{{ entries }}")}
        for phase, args in tasks
    ]
    out.append({"name": "vms info", "infinivirt.core.infinivirt_vm_info": {}})
    return out


def cleanup_task(stop_timeout):
    return {
        "name": "cleanup",
        "infinivirt.core.infinivirt_vms": dict(
            vms=[],
            exclusive=True,
            exclusive_state="absent",
            allow_empty=True,
            defaults=dict(force=True, stop_timeout=stop_timeout),
        ),
    }


def playbook(order, stop_timeout, db_url, run_dir):
    tasks = [{"name": "floor ping_single", "ansible.builtin.ping": {}}]
    if "loop" in order:
        tasks.insert(0, {"name": "floor ping_loop", "ansible.builtin.ping": {}, "loop": "{{ names }}"})
    for way in order:
        tasks += loop_tasks(stop_timeout) if way == "loop" else vms_tasks(stop_timeout)
        tasks.append(cleanup_task(stop_timeout))
    return [
        {
            "name": "playbook scale",
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {"group/infinivirt.core.infinivirt": {"db_url": db_url, "run_dir": run_dir}},
            "tasks": tasks,
        }
    ]


def run_round(work, count, order, stop_timeout, env):
    db_url = "sqlite:///%s/bench.db" % work
    book = os.path.join(work, "scale.yml")
    with open(book, "w") as fh:
        json.dump(playbook(order, stop_timeout, db_url, os.path.join(work, "run")), fh)  # JSON is YAML
    names = ["scale-%03d" % i for i in range(count)]
    times = os.path.join(work, "times.json")
    args = [
        os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "ansible_python_interpreter=%s" % sys.executable,
        "-e",
        json.dumps({"names": names, "entries": [{"name": n} for n in names]}),
        book,
    ]
    done = subprocess.run(args, env=dict(env, BENCH_TIMES=times), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit("ansible-playbook failed:\n%s\n%s" % (done.stdout[-4000:], done.stderr[-2000:]))
    with open(times) as fh:
        rows = json.load(fh)
    samples = {}
    for row in rows:
        if row["task"] == "cleanup":
            continue
        way, phase = row["task"].split(" ", 1)
        if row["failed"] or (phase.endswith("noop") and row["changed"]):
            print("warning: %s (%d VMs) %s" % (row["task"], count, row), file=sys.stderr)
        samples[(way, phase)] = row["seconds"]
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,10,50,100", help="VM counts, comma separated (default 1,10,50,100)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ways", default=",".join(WAYS), help="loop, vms or both (default loop,vms)")
    parser.add_argument(
        "--stop-timeout", type=float, default=0.0, help="stop_timeout of the forced stop (0: power off at once)"
    )
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.counts.split(",")})
    ways = tuple(w for w in WAYS if w in args.ways.split(","))
    if not ways:
        parser.error("--ways: name loop, vms or both")
    work = tempfile.mkdtemp(prefix="iv-scale")
    plugins = os.path.join(work, "callbacks")
    os.makedirs(plugins)
    with open(os.path.join(plugins, "bench_timer.py"), "w") as fh:
        fh.write(CALLBACK)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_CALLBACK_PLUGINS=plugins,
        ANSIBLE_CALLBACKS_ENABLED="bench_timer",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    results = {}  # (count, way, phase) -> [seconds]
    started = time.monotonic()
    try:
        for rnd in range(args.rounds):
            # Interleave: counts in turn, and the two ways swap places every round.
            for count in counts if rnd % 2 == 0 else list(reversed(counts)):
                order = ways if (rnd + counts.index(count)) % 2 == 0 else tuple(reversed(ways))
                for key, seconds in run_round(work, count, order, args.stop_timeout, env).items():
                    results.setdefault((count,) + key, []).append(seconds)
                print(
                    "round %d, %d VMs done (%.0f s so far)" % (rnd + 1, count, time.monotonic() - started),
                    file=sys.stderr,
                )
    finally:
        db_url, run_dir = "sqlite:///%s/bench.db" % work, os.path.join(work, "run")
        book = os.path.join(work, "cleanup.yml")
        with open(book, "w") as fh:  # whatever a failed round left
            json.dump(
                [dict(playbook((), args.stop_timeout, db_url, run_dir)[0], tasks=[cleanup_task(args.stop_timeout)])], fh
            )
        cleanup = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local"]
        cleanup += ["-e", "ansible_python_interpreter=%s" % sys.executable, book]
        subprocess.run(cleanup, env=env, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    report(results, counts, args.rounds, ways)
    return 0


def report(results, counts, rounds, ways=WAYS):
    med = {key: statistics.median(values) for key, values in results.items()}
    summary = {}
    print("\nmedians over %d rounds, seconds (ratio to the floor of the same shape)" % rounds)
    header = "%-16s" % "phase" + "".join("%22s" % ("%s, %d VMs" % (way, n)) for n in counts for way in ways)
    print(header)
    for phase in PHASES:
        line = "%-16s" % phase
        for n in counts:
            for way in ways:
                value, floor = med[(n, way, phase)], med[(n, "floor", FLOOR[way])]
                summary["%s/%s/%d" % (way, phase, n)] = {"median_s": round(value, 3), "ratio": round(value / floor, 2)}
                line += "%22s" % ("%.2f (%.1fx)" % (value, value / floor))
        print(line)
    floors = tuple(FLOOR[way] for way in ways)
    for floor in floors:
        print("%-16s" % ("floor " + floor) + "".join("%22s" % ("%.2f" % med[(n, "floor", floor)]) for n in counts))
    if len(counts) > 1:
        print("\nper-VM slope, seconds per added VM")
        for a, b in zip(counts, counts[1:]):
            for way in ways + ("floor",):
                phases = PHASES if way != "floor" else floors
                slopes = {p: (med[(b, way, p)] - med[(a, way, p)]) / (b - a) for p in phases}
                summary["slope/%s/%d-%d" % (way, a, b)] = {p: round(s, 4) for p, s in slopes.items()}
                print("%3d->%-3d %-6s %s" % (a, b, way, "  ".join("%s %.3f" % item for item in slopes.items())))
    if len(counts) > 1:
        per_vm(med, counts, summary, ways)
    print(json.dumps({"rounds": rounds, "counts": counts, "summary": summary}, indent=1))


def per_vm(med, counts, summary, ways):
    """Seconds per VM at each count, and the slope over the whole range (from 10 VMs when
    measured: one VM is mostly the task's fixed cost)."""
    low = min((n for n in counts if n >= 10), default=counts[0])
    high = counts[-1]
    if low == high:
        low = counts[0]
    print("\nseconds per VM (median / N), and the slope %d->%d VMs" % (low, high))
    for way in ways:
        for phase in PHASES:
            costs = ["%d: %.4f" % (n, med[(n, way, phase)] / n) for n in counts]
            slope = (med[(high, way, phase)] - med[(low, way, phase)]) / (high - low)
            summary["per_vm/%s/%s" % (way, phase)] = {
                "per_vm_s": {str(n): round(med[(n, way, phase)] / n, 4) for n in counts},
                "slope_%d_%d" % (low, high): round(slope, 4),
            }
            print("%-5s %-16s %s   slope %.4f" % (way, phase, "  ".join(costs), slope))


if __name__ == "__main__":
    sys.exit(main())
