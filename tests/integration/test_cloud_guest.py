# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloud guest made by infinivirt_vm with its ``cloud_init`` option: the module seals the
option, writes the CIDATA ISO (vm/cloud_seed.py, host/iso.py) at start and attaches it as a
read-only SCSI CD-ROM next to a throwaway overlay of the cloud guest. One boot (TCG: minutes)
proves that cloud-init read the seed from the CD-ROM, set the hostname, ran runcmd, applied
the network config, and let user ``debian`` in over SSH with the injected key; then, without
booting again, that a changed seed is a pending restart and a new ISO, a rerun no change, no
secret in the database or the result, and the ISO gone with the VM. The same boot, with the
guest agent and a tag, proves the inventory plugin (issue 22): a play on a group of the
plugin's reaches the guest over SSH at the address the plugin found; and the real qemu-ga
(issue 21): ``wait_for: ip`` on a bridge (no leases) waits for the agent's address,
infinivirt_vm_info lists the agent with the hostname the seed set and the NIC's MAC and
address, a live snapshot freezes and thaws the file systems through the agent and reports its
count, and infinivirt_vms' ``exclusive`` with ``shutdown_mode: agent`` powers the guest off
through it. QEMU's own event log tells which way: the ACPI power button (QMP
``system_powerdown``) makes QEMU emit POWERDOWN, a guest-shutdown does not. Snapshots' and
exclusive's routing of ``shutdown_mode`` to that same stop, and the ACPI fallback of a silent
agent, are in test_agent_stop_fallback.py and test_guest_agent_live.py on the tiny guest."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml
from collection_path import collections_root
from helpers import overlay_of, qemu_event_log, qemu_events, wait_serial

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.guest_agent import GuestAgent
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import seed_path
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.modules import infinivirt_vm

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns, pytest.mark.playbook]

BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host
HOSTNAME = "cloudy-web01"
MAC = "52:54:00:c1:00:02"
HOST_IP, GUEST_IP = "10.77.0.1", "10.77.0.2"
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


def ssh(netns, key, command, timeout=20):
    argv = ["ip", "netns", "exec", netns, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    return subprocess.run(
        argv + ["debian@" + GUEST_IP, command], capture_output=True, text=True, timeout=timeout, check=False
    )


def sha256_of(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_infinivirt_vm_cloud_init_boots_the_cloud_guest(cloud_guest, cloud_service, images, workdir, bridge_ns):
    svc = cloud_service
    subprocess.run(["ip", "-n", bridge_ns, "addr", "add", HOST_IP + "/24", "dev", "vmbr0"], check=True)
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "infinivirt-test", "-f", key], check=True)
    with open(key + ".pub") as fh:
        pubkey = fh.read().strip()
    password = "Pl41n-t3xt-never-stored"

    root = overlay_of(str(cloud_guest.disk), os.path.join(images, "root.qcow2"))
    cloud_init = {
        "hostname": HOSTNAME,
        "ssh_authorized_keys": [pubkey],
        "users": ["default", {"name": "ops", "plain_text_passwd": password, "lock_passwd": False}],
        # The last stage writes a marker to the console: proof that user-data ran.
        "user_data": {"runcmd": [["sh", "-c", "echo INFINIVIRT-CLOUD hostname=$(hostname) > /dev/ttyS0"]]},
        "network_config": {
            "version": 2,
            "ethernets": {"nic0": {"match": {"macaddress": MAC}, "addresses": [GUEST_IP + "/24"]}},
        },
    }
    params = {
        "name": "cloudy",
        "accel": "tcg",
        "vcpus": 2,
        "memory_mb": 1024,
        "kernel": str(cloud_guest.kernel),
        "initrd": str(cloud_guest.initrd),
        "kernel_cmdline": cloud_guest.kernel_cmdline,
        "disks": [{"path": root}],
        "netns": bridge_ns,
        "nics": [{"bridge": "vmbr0", "mac": MAC}],
        "cloud_init": cloud_init,
        "guest_agent": True,
        "tags": ["sshproof"],
        "state": "running",
    }

    t0 = time.monotonic()
    # wait_for: ip on a bridge (no DHCP leases to read): the address comes from the agent.
    started = svc.ensure(dict(params, wait_for="ip", wait_timeout=BOOT_TIMEOUT), False)
    assert started.changed
    assert started.vm["ready"]["address"] == GUEST_IP and started.vm["ready"]["address_source"] == "agent"
    assert GUEST_IP in started.vm["guest"]["ips"]
    t_ip = time.monotonic() - t0
    uuid = started.vm["uuid"]
    iso = seed_path(os.path.join(workdir, "nvram"), uuid)
    assert stat.S_IMODE(os.stat(iso).st_mode) == 0o600
    first_iso = sha256_of(iso)
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
        done = ssh(bridge_ns, key, "hostname; id -un; cat /var/lib/cloud/data/instance-id; id -un ops")
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    t_ssh = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [HOSTNAME, "debian", uuid, "ops"]  # instance-id: the VM's UUID
    a_play_on_a_plugin_group_reaches(svc, workdir, bridge_ns, key, "cloudy")
    t_play = time.monotonic() - t0
    count = the_agent_reports_and_quiesces(svc, started.vm)
    print(
        "cloud guest: agent's address %.0f s, runcmd marker %.0f s, ssh %.0f s, inventory play %.0f s after "
        "start; %d file systems frozen" % (t_ip, t_marker, t_ssh, t_play, count)
    )

    # The same task again: no change. A new seed: a pending restart, the running VM untouched.
    again = svc.ensure(params, False)
    assert not again.changed and again.vm["cloud_init_digest"] == started.vm["cloud_init_digest"]
    renamed = dict(params, cloud_init=dict(cloud_init, hostname="cloudy-web02"))
    changed = svc.ensure(renamed, False)
    assert changed.changed and changed.plan["changes"] == {"cloud_init": "restart"}
    assert changed.vm["pending_restart"] == ["cloud_init"] and changed.vm["status"] == "running"
    assert changed.vm["cloud_init_digest"] != started.vm["cloud_init_digest"]
    assert sha256_of(iso) == first_iso  # the running QEMU keeps the seed it booted with
    assert not svc.ensure(renamed, False).changed

    # Neither the database nor any result holds the key or the password in plain text.
    files = [os.path.join(workdir, n) for n in os.listdir(workdir) if n.startswith("cloud.db")]
    db = b"".join(open(f, "rb").read() for f in files if os.path.isfile(f))  # the db, its WAL
    for secret in (pubkey.split()[1], password):
        assert secret.encode() not in db
        for result in (started, again, changed):
            assert secret not in repr(result.result())

    exclusive_powers_it_off_through_the_agent(svc, started.vm, log)

    # The next start (paused: no second boot) writes the new seed; removing the VM removes it.
    assert os.path.exists(iso)  # it outlives the process, like the NVRAM
    svc.ensure(dict(renamed, state="paused"), False)
    assert sha256_of(iso) != first_iso
    with open(iso, "rb") as fh:
        assert b"local-hostname: cloudy-web02" in fh.read()
    gone = svc.ensure({"name": "cloudy", "state": "absent", "force": True, "stop_timeout": 0}, False)
    assert gone.changed and not os.path.exists(iso)


def the_agent_reports_and_quiesces(svc, vm):
    """infinivirt_vm_info and infinivirt_vm list what qemu-ga says; a live disk-only snapshot
    freezes the file systems through the agent and thaws them (the count is the agent's: a
    freeze of our own counts the same, and its thaw too). Returns that count."""
    listed = info_result(svc.ctx, "cloudy")["vms"][0]
    guest = listed["guest"]
    assert guest["agent"] == "answering", guest
    assert guest["hostname"] == HOSTNAME
    assert guest["os"]["id"] == "debian" and guest["os"]["version"] == "12"
    nic = [i for i in guest["interfaces"] if i["mac"] == MAC]
    assert nic and GUEST_IP in nic[0]["ips"], guest["interfaces"]
    assert GUEST_IP in guest["ips"] and "127.0.0.1" not in guest["ips"]
    assert_shape(guest, documented_guest())

    snap = SnapshotService(svc.engine).ensure({"vm": "cloudy", "name": "quiesced"}, False)
    assert snap["changed"] and snap["frozen"] is True and snap["frozen_filesystems"] >= 1, snap
    sock = VmPaths.for_vm(svc.ctx.run_dir, vm["uuid"]).guest_agent_socket
    with GuestAgent(sock, 60) as agent:
        assert agent.fsfreeze_status() == "thawed"
        count = agent.fsfreeze_freeze()
        try:
            assert agent.fsfreeze_status() == "frozen"
        finally:
            thawed = agent.fsfreeze_thaw()
    assert snap["frozen_filesystems"] == count == thawed
    return count


def exclusive_powers_it_off_through_the_agent(svc, vm, log):
    """exclusive with defaults.shutdown_mode: agent powers the unlisted VM off through its
    agent: the same stop as infinivirt_vm's own (vm/power.py), with the batch's params."""
    prepared = prepare(
        [],
        {"shutdown_mode": "agent", "stop_timeout": BOOT_TIMEOUT},
        lambda e, p: validate_options(vm_argument_spec(), e, p),
    )
    batch = VmBatch(svc.ctx, lambda: pytest.fail("one VM needs no worker context"), parallel=1)
    with qemu_event_log(svc, vm) as events_file:
        result = batch.converge(
            [], False, exclusive_state="stopped", stop_params=prepared.stop_params, allow_empty=True
        )
        if result.get("failed"):
            with open(log, "rb") as fh:
                pytest.fail(
                    "the stop failed: %s; console:\n%s" % (result["msg"], fh.read()[-4000:].decode(errors="replace"))
                )
        assert_agent_shutdown(qemu_events(events_file))
    (stopped,) = result["unlisted"]
    assert stopped["changed"] and stopped["vm"]["status"] == "stopped"
    assert stopped["warnings"] == [] and result["warnings"] == []
    assert stopped["vm"]["guest"]["agent"] == "not answering"


def a_play_on_a_plugin_group_reaches(svc, workdir, bridge_ns, key, name):
    """The inventory plugin (issue 22), reading only the database, makes the guest's
    ansible_host of the addresses infinivirt_vm_info recorded from its agent; a play on a
    group of the plugin's runs ``hostname`` on the guest over SSH (ssh run inside the
    namespace, where the guest's network is). Returns the play's output."""
    guest = info_result(svc.ctx, name)["vms"][0]["guest"]
    assert guest["agent"] == "answering" and GUEST_IP in guest["ips"], guest
    uuid = info_result(svc.ctx, name)["vms"][0]["uuid"]
    recorded = svc.ctx.store.guest_addresses()[uuid]
    assert GUEST_IP in recorded["ips"] and any(i["mac"] == MAC for i in recorded["interfaces"])

    source = os.path.join(workdir, "fleet.infinivirt.yml")
    with open(source, "w") as fh:
        json.dump(
            {
                "plugin": "infinivirt.core.infinivirt",
                "db_url": "sqlite:///%s/cloud.db" % workdir,
                "ansible_host_source": ["agent"],
                "preferred_cidr": GUEST_IP.rsplit(".", 1)[0] + ".0/24",
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
    found = json.loads(listed.stdout)["_meta"]["hostvars"][name]["ansible_host"]
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
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "GUEST-SAYS %s AT %s" % (HOSTNAME, GUEST_IP) in done.stdout
    assert name in done.stdout and "ok=2" in done.stdout


def documented_guest():
    """RETURN's vm.guest, as nested key sets."""
    doc = yaml.safe_load(infinivirt_vm.RETURN)["vm"]["contains"]["guest"]["contains"]
    return doc


def assert_shape(value, doc):
    """Every key the entry has is documented and every documented key is there, nested."""
    assert set(value) == set(doc)
    for key, entry in doc.items():
        if "contains" not in entry:
            continue
        items = value[key] if entry.get("type") == "list" else [value[key]]
        for item in items:
            assert_shape(item, entry["contains"])


def assert_agent_shutdown(events):
    """QEMU ended on the guest's own power-off (guest-shutdown), not the ACPI power button."""
    names = [e["event"] for e in events]
    assert "POWERDOWN" not in names, names  # no ACPI power button
    shutdown = [e for e in events if e["event"] == "SHUTDOWN"]
    assert shutdown and shutdown[0]["data"]["reason"] == "guest-shutdown", events
