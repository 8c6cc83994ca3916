# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guest disk throughput: ``cache=none,aio=native`` with an I/O thread against the default
(``cache=writeback,aio=threads``, no I/O thread), measured inside one test guest in one run.

The guest (2 vCPUs) gets two raw virtio disks of the same size in the same directory, one
per configuration. In turns, it reads and then writes each disk sequentially with busybox
``dd`` and O_DIRECT (64 KiB blocks, so the guest's page cache is out of the way); the time
is the guest's own (/proc/uptime around dd). Medians of the rounds in MiB/s. Under TCG the
guest's CPU emulation dominates; compare the two configurations with each other, not with
KVM figures. The host's page cache serves the writeback disk's reads after the first round.

    .venv/bin/python bench/disk_io.py [--size-mb 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "guest")]

from collection_path import install_on_sys_path  # noqa: E402

install_on_sys_path()

import build_guest  # noqa: E402
import serial_report  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import VmInfo  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService  # noqa: E402

CONFIGS = {
    "none+native+iothread": {"cache": "none", "aio": "native", "iothread": True, "serial": "FAST"},
    "writeback (default)": {"serial": "DFLT"},
}


def timed_dd(sock, command):
    """Seconds the guest spends in one dd (its own clock)."""
    rc, out = serial_report.channel_command(sock, "cat /proc/uptime; %s 2>/dev/null; cat /proc/uptime" % command, 600)
    if rc != 0:
        raise SystemExit("dd failed in the guest: %s" % out)
    start, end = (float(line.split()[0]) for line in out.strip().splitlines()[-2:])
    return end - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    guest = build_guest.build_guest()
    work = tempfile.mkdtemp(prefix="iv-diskio-")  # on a file system with O_DIRECT (not tmpfs)
    service = VmService.open("sqlite:///%s/state.db" % work, os.path.join(work, "run"))
    try:
        disks = []
        for options in CONFIGS.values():
            path = os.path.join(work, "%s.raw" % options["serial"])
            subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "%dM" % args.size_mb], check=True)
            # Allocate the file: a first write in the guest does not measure the file system.
            subprocess.run(["fallocate", "-l", "%dM" % args.size_mb, path], check=True)
            disks.append(dict(options, path=path, format="raw"))
        vm = service.ensure(
            {
                "name": "diskio",
                "state": "running",
                "vcpus": 2,
                "memory_mb": 256,
                "accel": "tcg",
                "kernel": str(guest.kernel),
                "initrd": str(guest.initrd),
                "kernel_cmdline": guest.kernel_cmdline,
                "console_socket": True,
                "disks": disks,
            },
            False,
        ).vm
        serial_report.wait_for_ready(vm["serial_log"], timeout=180)
        sock = vm["console_socket_path"]
        rc, out = serial_report.channel_command(sock, "report disks")
        devices = {d["serial"]: d["name"] for d in serial_report.parse_report(out).disks}
        count = args.size_mb * 16
        results = {name: {"read": [], "write": []} for name in CONFIGS}
        for _round in range(args.rounds):
            for name, options in CONFIGS.items():
                dev = devices[options["serial"]]
                read = timed_dd(sock, "dd if=/dev/%s of=/dev/null bs=64k count=%d iflag=direct" % (dev, count))
                write = timed_dd(sock, "dd if=/dev/zero of=/dev/%s bs=64k count=%d oflag=direct" % (dev, count))
                results[name]["read"].append(args.size_mb / read)
                results[name]["write"].append(args.size_mb / write)
        print(
            "guest disk throughput, %d MiB sequential, 64 KiB O_DIRECT, %d rounds (MiB/s)" % (args.size_mb, args.rounds)
        )
        print("%-24s %12s %12s" % ("configuration", "read median", "write median"))
        for name, figures in results.items():
            print(
                "%-24s %12.1f %12.1f" % (name, statistics.median(figures["read"]), statistics.median(figures["write"]))
            )
    finally:
        for entry in VmInfo(service.engine).list():
            service.ensure({"name": entry["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
        service.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
