# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The inventory plugin's ansible_host reaches a real guest: one boot of the cloud guest (TCG:
minutes) with the guest agent, in a bridge of a namespace of the test's own. infinivirt_vm_info
asks the agent and records its addresses; the plugin, reading only the database, makes the
VM's ansible_host of them; a play on a group of the plugin's runs ``hostname`` on the guest
over SSH (ssh run inside the namespace, where the guest's network is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from collection_path import collections_root
from helpers import overlay_of, wait_serial

from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns, pytest.mark.playbook]

BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host
HOSTNAME = "inv-ssh01"
MAC = "52:54:00:c1:00:31"
HOST_IP, GUEST_IP = "10.77.3.1", "10.77.3.2"
PLAY = """
- name: A group of the inventory plugin
  hosts: infinivirt_tag_sshproof
  gather_facts: false
  tasks:
    - name: Ask the guest its name
      ansible.builtin.command: hostname
      register: name
      changed_when: false
    - name: Say it
      ansible.builtin.debug:
        msg: "GUEST-SAYS {{ name.stdout }} AT {{ ansible_host }}"
"""


def test_a_play_on_a_plugin_group_reaches_the_guest_over_ssh(cloud_guest, cloud_service, images, workdir, bridge_ns):
    svc = cloud_service
    subprocess.run(["ip", "-n", bridge_ns, "addr", "add", HOST_IP + "/24", "dev", "vmbr0"], check=True)
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub") as fh:
        pubkey = fh.read().strip()
    root = overlay_of(str(cloud_guest.disk), os.path.join(images, "root.qcow2"))
    params = {
        "name": "invssh",
        "accel": "tcg",
        "vcpus": 2,
        "memory_mb": 1024,
        "kernel": str(cloud_guest.kernel),
        "initrd": str(cloud_guest.initrd),
        "kernel_cmdline": cloud_guest.kernel_cmdline,
        "disks": [{"path": root}],
        "netns": bridge_ns,
        "nics": [{"bridge": "vmbr0", "mac": MAC}],
        "guest_agent": True,
        "tags": ["sshproof"],
        "labels": {"team": "blue"},
        "cloud_init": {
            "hostname": HOSTNAME,
            "ssh_authorized_keys": [pubkey],
            "user_data": {"runcmd": [["sh", "-c", "echo INFINIVIRT-INV-READY > /dev/ttyS0"]]},
            "network_config": {
                "version": 2,
                "ethernets": {"nic0": {"match": {"macaddress": MAC}, "addresses": [GUEST_IP + "/24"]}},
            },
        },
        "state": "running",
    }
    t0 = time.monotonic()
    started = svc.ensure(params, False)
    log = started.vm["serial_log"]
    ready = wait_serial(log, r"INFINIVIRT-INV-READY", t0 + BOOT_TIMEOUT)
    with open(log, "rb") as fh:
        tail = fh.read().decode(errors="replace")[-3000:]
    assert ready, "cloud-init never finished in %.0f s; console tail:\n%s" % (BOOT_TIMEOUT, tail)
    t_ready = time.monotonic() - t0

    # infinivirt_vm_info asks the agent (on this hypervisor) and records what it says.
    guest = info_result(svc.ctx, "invssh")["vms"][0]["guest"]
    assert guest["agent"] == "answering" and GUEST_IP in guest["ips"], guest
    recorded = svc.ctx.store.guest_addresses()[started.vm["uuid"]]
    assert GUEST_IP in recorded["ips"] and any(i["mac"] == MAC for i in recorded["interfaces"])

    source = os.path.join(workdir, "fleet.infinivirt.yml")
    with open(source, "w") as fh:
        json.dump(
            {
                "plugin": "infinivirt.core.infinivirt",
                "db_url": "sqlite:///%s/cloud.db" % workdir,
                "ansible_host_source": ["agent"],
                "preferred_cidr": "10.77.3.0/24",
                "compose": {"ansible_user": "'debian'"},
            },
            fh,
        )
    wrapper = os.path.join(workdir, "ssh-in-ns")
    with open(wrapper, "w") as fh:
        fh.write('#!/bin/sh\nexec ip netns exec %s ssh "$@"\n' % bridge_ns)
    os.chmod(wrapper, 0o755)
    play = os.path.join(workdir, "play.yml")
    with open(play, "w") as fh:
        fh.write(PLAY)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_INVENTORY_ENABLED="infinivirt.core.infinivirt",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
        ANSIBLE_SSH_EXECUTABLE=wrapper,
        ANSIBLE_PRIVATE_KEY_FILE=key,
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_SSH_ARGS="-o UserKnownHostsFile=/dev/null -o ConnectTimeout=20",
    )
    bindir = os.path.dirname(sys.executable)
    listed = subprocess.run(
        [os.path.join(bindir, "ansible-inventory"), "-i", source, "--list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)["_meta"]["hostvars"]["invssh"]["ansible_host"]
    assert (found.get("__ansible_unsafe") if isinstance(found, dict) else found) == GUEST_IP

    # The guest's sshd may come up a little after cloud-init's marker: a few tries.
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(
            [os.path.join(bindir, "ansible-playbook"), "-i", source, play],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(5)
    t_play = time.monotonic() - t0
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "GUEST-SAYS %s AT %s" % (HOSTNAME, GUEST_IP) in done.stdout
    assert "invssh" in done.stdout and "ok=2" in done.stdout
    print("inventory ssh proof: cloud-init ready %.0f s, play done %.0f s after start" % (t_ready, t_play))
