# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloud guest takes a NoCloud seed: vm/model/cloud_init.py makes the files, host/iso.py
the CIDATA ISO, infinivirt_vm's disk options attach it as a read-only SCSI CD-ROM next to a
throwaway overlay of the cloud guest. One boot (TCG: minutes) proves that cloud-init read the
seed from the CD-ROM, set the hostname, ran runcmd, applied the network config, and let user
``debian`` in over SSH with the injected key."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.host.iso import write_iso
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.cloud_init import seed_files

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns]

BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host
HOSTNAME = "cloudy-web01"
MAC = "52:54:00:c1:00:02"
HOST_IP, GUEST_IP = "10.77.0.1", "10.77.0.2"


def wait_serial(path, pattern, deadline):
    """The first match of ``pattern`` in the serial log, or None at ``deadline``."""
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as fh:
                found = re.search(pattern, fh.read().decode(errors="replace"))
        except FileNotFoundError:
            found = None
        if found:
            return found
        time.sleep(1)
    return None


def ssh(netns, key, command, timeout=20):
    argv = ["ip", "netns", "exec", netns, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    return subprocess.run(
        argv + ["debian@" + GUEST_IP, command], capture_output=True, text=True, timeout=timeout, check=False
    )


def overlay_of(base, path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, path], check=True)
    return path


def test_cloud_init_takes_the_seed_from_a_cdrom(cloud_guest, disk_service, images, workdir, bridge_ns):
    svc = disk_service
    subprocess.run(["ip", "-n", bridge_ns, "addr", "add", HOST_IP + "/24", "dev", "vmbr0"], check=True)
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "infinivirt-test", "-f", key], check=True)
    with open(key + ".pub") as fh:
        pubkey = fh.read().strip()

    root = overlay_of(str(cloud_guest.disk), os.path.join(images, "root.qcow2"))
    seed = os.path.join(images, "seed.iso")
    params = {
        "name": "cloudy",
        "accel": "tcg",
        "vcpus": 2,
        "memory_mb": 1024,
        "kernel": str(cloud_guest.kernel),
        "initrd": str(cloud_guest.initrd),
        "kernel_cmdline": cloud_guest.kernel_cmdline,
        "disks": [{"path": root}, {"path": seed, "format": "raw", "bus": "scsi", "media": "cdrom"}],
        "netns": bridge_ns,
        "nics": [{"bridge": "vmbr0", "mac": MAC}],
        "state": "stopped",
    }
    # The seed wants the VM's UUID (instance-id), the VM wants an existing disk: a first seed,
    # replaced in place once the VM exists (what the module will do when cloud_init changes).
    write_iso(seed, seed_files({}, "iid-placeholder"))
    made = svc.ensure(params, False)
    option = {
        "hostname": HOSTNAME,
        "ssh_authorized_keys": [pubkey],
        # The last stage writes a marker to the console: proof that user-data ran.
        "user_data": {"runcmd": [["sh", "-c", "echo INFINIVIRT-CLOUD hostname=$(hostname) > /dev/ttyS0"]]},
        "network_config": {
            "version": 2,
            "ethernets": {"nic0": {"match": {"macaddress": MAC}, "addresses": [GUEST_IP + "/24"]}},
        },
    }
    files = seed_files(option, made.vm["uuid"])  # instance-id: the VM's UUID
    write_iso(seed, files)

    t0 = time.monotonic()
    started = svc.ensure(dict(params, state="running"), False)
    assert started.changed
    log = started.vm["serial_log"]
    deadline = t0 + BOOT_TIMEOUT
    marker = wait_serial(log, r"INFINIVIRT-CLOUD hostname=(\S+)", deadline)
    t_marker = time.monotonic() - t0
    with open(log, "rb") as fh:
        tail = fh.read().decode(errors="replace")[-3000:]
    assert marker, "cloud-init never ran the seed's runcmd in %.0f s; console tail:\n%s" % (BOOT_TIMEOUT, tail)
    assert marker.group(1) == HOSTNAME
    # cloud-init's own final line names the data source: the seed on the SCSI CD-ROM.
    final = wait_serial(
        log, r"Cloud-init v\. \S+ finished at .*Datasource (DataSourceNoCloud \[seed=(\S+?)\])", deadline
    )
    assert final and final.group(2) == "/dev/sr0", tail

    # SSH as debian with the injected key, over the static address of network-config.
    while True:
        done = ssh(bridge_ns, key, "hostname; id -un; cat /var/lib/cloud/data/instance-id")
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    t_ssh = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [HOSTNAME, "debian", made.vm["uuid"]]
    print("cloud guest: runcmd marker %.0f s, ssh %.0f s after start" % (t_marker, t_ssh))
