# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Full backup throughput (infinivirt_backup, vm/backup.py) against ``qemu-img convert`` of
the same disk, in one run.

One qcow2 disk filled with random data (qemu-io, host side) belongs to a firmware-only VM
(no guest OS: the copy is what is measured, not the guest). In turns, each round takes
  - ``qemu-img convert -O qcow2`` of the disk (the VM stopped),
  - a full backup point of the stopped VM (qemu-storage-daemon + blockdev-backup),
  - a full backup point of the running VM (its own QEMU + blockdev-backup),
each timed by the wall clock around the whole task (the backup's includes its manifest,
its qemu-img create and its fsyncs). Medians of the rounds in MiB/s of data in the disk.

    .venv/bin/python bench/backup_throughput.py [--size-mb 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import BackupService  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="iv-bench-backup-")
    images = os.path.join(work, "images")
    os.makedirs(images)
    disk = os.path.join(images, "data.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "%dM" % args.size_mb], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %dM" % args.size_mb, disk], check=True, capture_output=True
    )
    svc = VmService.open("sqlite:///%s/state.db" % work, os.path.join(work, "run"), storage_roots=[images])
    backups = BackupService(svc.engine)
    vm = {"name": "bench", "accel": "tcg", "disks": [{"path": disk}]}
    results = {"qemu-img convert": [], "backup, VM stopped": [], "backup, VM running": []}
    try:
        for index in range(args.rounds):
            copy = os.path.join(work, "copy-%d.qcow2" % index)
            results["qemu-img convert"].append(
                timed(lambda: subprocess.run(["qemu-img", "convert", "-O", "qcow2", disk, copy], check=True))  # noqa: B023
            )
            os.unlink(copy)
            params = {"vm": "bench", "target": os.path.join(work, "backups"), "mode": "full", "keep": 1}
            svc.ensure(dict(vm, state="stopped"), False)
            results["backup, VM stopped"].append(timed(lambda: backups.ensure(params, False)))  # noqa: B023
            svc.ensure(dict(vm, state="running"), False)
            results["backup, VM running"].append(timed(lambda: backups.ensure(params, False)))  # noqa: B023
            svc.ensure({"name": "bench", "state": "stopped", "force": True, "stop_timeout": 0}, False)
    finally:
        svc.ensure({"name": "bench", "state": "absent", "force": True, "stop_timeout": 0}, False)
        svc.close()
        shutil.rmtree(work, ignore_errors=True)
    print("%d MiB of data, %d rounds, median:" % (args.size_mb, args.rounds))
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print("  %-20s %7.1f MiB/s  (%.2f s)" % (name, args.size_mb / median, median))


if __name__ == "__main__":
    main()
