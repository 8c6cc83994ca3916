# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What one module run costs on the hypervisor, against ansible.builtin.ping.

A playbook on localhost starts one firmware-only VM (TCG, 64 MiB) and keeps the AnsiballZ
files (ANSIBLE_KEEP_REMOTE_FILES) of a no-op `infinivirt_vm`, a no-op `infinivirt_vms`, an
`infinivirt_vm_info` of that VM and a `ping`. Each file is then run again and again as Ansible
runs it (the interpreter given the AnsiballZ file), interleaved, and the CPU time (user +
system) of each run is read from the kernel: wall time on a shared 2-core machine is noise,
a run's CPU time much less so. The library's bytecode cache is measured on and off
(INFINIVIRT_BYTECODE_CACHE=off: every run compiles, as before the cache).

Printed: per module and cache setting the median and minimum CPU seconds of a run and the
ratios of the medians to ping's. The VM is removed at the end.

    .venv/bin/python bench/module_cost.py [--runs 15]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests")]

from collection_path import collections_root  # noqa: E402

VM = {"name": "bench-cost", "accel": "tcg", "memory_mb": 64, "vcpus": 1}
TASKS = [
    ("infinivirt_vm", dict(VM, state="running")),
    ("infinivirt_vms", {"vms": [dict(VM)]}),
    ("infinivirt_vm_info", {"name": VM["name"]}),
]


def playbook(work, tasks):
    defaults = {"db_url": "sqlite:///%s/bench.db" % work, "run_dir": os.path.join(work, "run")}
    return [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "module_defaults": {"group/infinivirt.core.infinivirt": defaults},
            "tasks": tasks,
        }
    ]


def ansible(work, plays, keep=None):
    path = os.path.join(work, "play.json")
    with open(path, "w") as fh:
        json.dump(plays, fh)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1")
    if keep:
        env.update(ANSIBLE_KEEP_REMOTE_FILES="1", ANSIBLE_REMOTE_TMP=keep, ANSIBLE_PIPELINING="False")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", path]
    argv += ["-e", "ansible_python_interpreter=%s" % sys.executable]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit("playbook failed:\n" + done.stdout[-3000:])


def keep_payloads(work):
    """The AnsiballZ file of each no-op task and of ping: {label: path}."""
    keep = os.path.join(work, "keep")
    os.makedirs(keep)
    tasks = [{"infinivirt.core.%s" % module: args} for module, args in TASKS]
    ansible(work, playbook(work, [tasks[0]]))  # the VM runs: the kept tasks are no-ops
    ansible(work, playbook(work, tasks + [{"ansible.builtin.ping": {}}]), keep=keep)
    payloads = {}
    for module in [task[0] for task in TASKS] + ["ping"]:
        (found,) = glob.glob(os.path.join(keep, "*", "AnsiballZ_%s.py" % module))
        payloads[module] = shutil.copy(found, os.path.join(work, "AnsiballZ_%s.py" % module))
    shutil.rmtree(keep)
    return payloads


def cpu_of_run(path, environ):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, path], env=environ, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or '"failed": true' in done.stdout:
        raise SystemExit("%s failed: %s" % (os.path.basename(path), done.stdout[-2000:]))
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(payloads, runs, cache):
    ways = [("ping", "-", payloads["ping"], os.environ)]
    for module in [task[0] for task in TASKS]:
        for setting in ("on", "off"):
            env = dict(os.environ, INFINIVIRT_BYTECODE_CACHE=cache if setting == "on" else "off")
            ways.append((module, setting, payloads[module], env))
    for way in ways:  # warm: the first run fills the cache
        cpu_of_run(way[2], way[3])
    times = {(way[0], way[1]): [] for way in ways}
    for _round in range(runs):
        for module, setting, path, env in ways:
            times[(module, setting)].append(cpu_of_run(path, env))
    return times


def report(times):
    ping = statistics.median(times[("ping", "-")])
    print("%-20s %-6s %9s %9s %8s" % ("module", "cache", "median s", "min s", "x ping"))
    for (module, setting), values in times.items():
        median = statistics.median(values)
        print("%-20s %-6s %9.3f %9.3f %7.2fx" % (module, setting, median, min(values), median / ping))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ivc-", dir="/tmp")  # short: UNIX socket paths
    try:
        payloads = keep_payloads(work)
        report(measure(payloads, args.runs, os.path.join(work, "bytecode")))
    finally:
        remove = {"name": VM["name"], "state": "absent", "force": True, "stop_timeout": 0}
        ansible(work, playbook(work, [{"infinivirt.core.infinivirt_vm": remove}]))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
