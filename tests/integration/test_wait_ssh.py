# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SSH proof of issue 21, as a user runs it: ansible-playbook makes a NAT network in a
namespace, a linked clone of the cached cloud guest, and a VM with cloud_init (hostname, SSH
key) and wait_for: ssh; then runs ``hostname`` ON the guest over SSH (the controller reaches
the namespace through a ProxyCommand) and checks it, and that the agent reports the address
the task waited on (the DHCP lease). One boot of the cloud guest (TCG: minutes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from collection_path import collections_root
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.host import dnsmasq

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns, pytest.mark.playbook]

HERE = os.path.dirname(os.path.abspath(__file__))
BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host


@pytest.fixture
def netns():
    name = "ivssh-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def test_a_playbook_reaches_its_new_guest_over_ssh(cloud_guest, workdir, netns):
    images = os.path.join(workdir, "images")
    os.makedirs(images)
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub") as fh:
        pubkey = fh.read().strip()
    run_dir = os.path.join(workdir, "run")
    # localhost's interpreter in the inventory, not in extra vars (those would win on the guest too)
    inventory = os.path.join(workdir, "inventory")
    with open(inventory, "w") as fh:
        fh.write("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    extra = {
        "db_url": "sqlite:///%s/ssh.db" % workdir,
        "run_dir": run_dir,
        "nvram_dir": os.path.join(workdir, "nvram"),
        "key_file": os.path.join(workdir, "secret.key"),
        "images": images,
        "template": str(cloud_guest.disk),
        "kernel": str(cloud_guest.kernel),
        "initrd": str(cloud_guest.initrd),
        "kernel_cmdline": cloud_guest.kernel_cmdline,
        "netns": netns,
        "pubkey": pubkey,
        "privkey": key,
        "proxy": "%s %s" % (sys.executable, os.path.join(HERE, "netns_connect.py")),
        "boot_timeout": BOOT_TIMEOUT,
    }
    env = dict(
        os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0"
    )
    leases = dnsmasq.DnsmasqFiles.for_network(run_dir, "sshnat0").leasefile
    seen = {}

    def lease_watch():
        seen.update(dnsmasq.read_leases(leases))

    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                "-i",
                inventory,
                "-e",
                json.dumps(extra),
                "-v",
                os.path.join(HERE, "playbooks", "wait_ssh.yml"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT + 600,
            check=False,
        )
    finally:
        assert kill_leftovers(workdir) == [], "the playbook left a QEMU running"
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    found = re.search(r"WAIT_SSH_OK address=(\S+) waited=([\d.]+)", done.stdout)
    assert found, done.stdout[-3000:]
    print(
        "wait_for ssh: the guest answered on %s %s s after its start; the playbook took %.0f s"
        % (found.group(1), found.group(2), took)
    )
