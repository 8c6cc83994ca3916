# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""From an image to a host Ansible reaches (issue 21), on ONE boot of the cloud guest (TCG:
minutes). A playbook (playbooks/wait_ssh.yml) makes a NAT network in a namespace, a linked
clone of the cached cloud guest and a VM with ``cloud_init`` (hostname, SSH key, a user with
a password, runcmd, network_config), ``guest_agent`` and ``wait_for: ssh``; it adds the guest
with ``add_host`` and runs ``hostname`` ON it over SSH (the controller reaches the namespace
through a ProxyCommand). The test goes on with the running VM: cloud-init read the seed from
the SCSI CD-ROM (vm/cloud_seed.py, host/iso.py), ran runcmd, applied network_config (the second
NIC's static address) and let users in; the inventory plugin (issue 22) groups it by tag and
a play on that group reaches it; infinivirt_backup's point is ``frozen`` through the agent;
the real qemu-ga (infinivirt_vm_info's agent entry, the
freeze count of a live snapshot, infinivirt_vms' exclusive powering it off through the agent:
QEMU's event log shows a guest-shutdown and no POWERDOWN, the ACPI power button); without
booting again, a changed seed is a pending restart and a new ISO, a rerun no change, no secret
in the database or a result, and the ISO gone with the VM. Snapshots' and exclusive's routing
of ``shutdown_mode`` to that same stop (vm/power.py), and the ACPI fallback of a silent agent,
are in test_agent_stop_fallback.py and test_guest_agent_live.py on the tiny guest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
import yaml
from collection_path import collections_root
from helpers import qemu_event_log, qemu_events, vm_list, wait_serial
from qemu_procs import kill_leftovers

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.guest_agent import GuestAgent
from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import BackupService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import VmBatch, prepare
from ansible_collections.infinivirt.core.plugins.module_utils.vm.cloud_seed import seed_path
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import info_result
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService
from ansible_collections.infinivirt.core.plugins.modules import infinivirt_vm

pytestmark = [pytest.mark.qemu, pytest.mark.guest, pytest.mark.slow, pytest.mark.netns, pytest.mark.playbook]

BOOT_TIMEOUT = float(os.environ.get("INFINIVIRT_CLOUD_TIMEOUT", "420"))  # TCG on a loaded 2-core host
HERE = os.path.dirname(os.path.abspath(__file__))
HOSTNAME = "cloudy-web01"
NAME = "web01"  # the playbook's VM
MAC, MAC_STATIC = "52:54:00:c1:00:02", "52:54:00:c1:00:03"  # the NAT lease's NIC; network_config's static one
STATIC_IP = "192.168.77.10"  # network_config's address on the second NIC (no route needed to it)
NAT_CIDR = "10.79.0.0/24"  # the playbook's NAT network
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


def ssh(netns, key, address, command, timeout=20):
    argv = ["ip", "netns", "exec", netns, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
    return subprocess.run(
        argv + ["debian@" + address, command], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def netns():
    name = "ivssh-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=True)


def sha256_of(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_a_playbook_boots_the_cloud_guest_and_reaches_it(cloud_guest, workdir, images, netns):
    key = os.path.join(workdir, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "infinivirt-test", "-f", key], check=True)
    with open(key + ".pub") as fh:
        pubkey = fh.read().strip()
    password = "Pl41n-t3xt-never-stored"
    cloud_init = {
        "hostname": HOSTNAME,
        "ssh_authorized_keys": [pubkey],
        "users": ["default", {"name": "ops", "plain_text_passwd": password, "lock_passwd": False}],
        # The last stage writes a marker to the console: proof that user-data ran.
        "user_data": {"runcmd": [["sh", "-c", "echo INFINIVIRT-CLOUD hostname=$(hostname) > /dev/ttyS0"]]},
        "network_config": {
            "version": 2,
            "ethernets": {
                "nat": {"match": {"macaddress": MAC}, "dhcp4": True},
                "fixed": {"match": {"macaddress": MAC_STATIC}, "addresses": [STATIC_IP + "/24"]},
            },
        },
    }
    svc = ServiceOfThePlaybook(workdir, images, cloud_guest, netns)
    t0 = time.monotonic()
    try:
        address, waited = the_playbook_reaches_the_guest(svc, cloud_guest, cloud_init, key)
        t_play = time.monotonic() - t0
        count = the_guest_and_its_agent_report(svc, cloud_init, netns, key, address)
        print(
            "cloud guest: wait_for ssh met %s s after the start at %s; playbook %.0f s; %d file systems frozen"
            % (waited, address, t_play, count)
        )
        the_seed_changes_without_a_boot(svc, cloud_init, [pubkey.split()[1], password])
    finally:
        svc.close()
    assert kill_leftovers(workdir) == [], "a QEMU was left running"


class ServiceOfThePlaybook:
    """What the playbook's tasks were given (module_defaults), and a VmService on the same."""

    def __init__(self, workdir, images, cloud_guest, netns):
        self.workdir, self.netns = workdir, netns
        self.settings = {
            "db_url": "sqlite:///%s/cloud.db" % workdir,
            "run_dir": os.path.join(workdir, "run"),
            "nvram_dir": os.path.join(workdir, "nvram"),
            "key_file": os.path.join(workdir, "secret.key"),
            "images": images,
        }
        self.vms = VmService.open(
            self.settings["db_url"],
            self.settings["run_dir"],
            storage_roots=[images, os.path.dirname(str(cloud_guest.disk))],
            nvram_dir=self.settings["nvram_dir"],
            secret_key_file=self.settings["key_file"],
        )
        self.params = {
            "name": NAME,
            "accel": "tcg",
            "vcpus": 2,
            "memory_mb": 1024,
            "kernel": str(cloud_guest.kernel),
            "initrd": str(cloud_guest.initrd),
            "kernel_cmdline": cloud_guest.kernel_cmdline,
            "disks": [{"path": os.path.join(images, "web01.qcow2")}],
            "netns": netns,
            "nics": [{"network": "sshnat0", "mac": MAC}, {"network": "sshnat0", "mac": MAC_STATIC}],
            "guest_agent": True,
            "tags": ["sshproof"],
            "state": "running",
        }

    def close(self):
        for vm in vm_list(self.vms):
            self.vms.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 5}, False)
        nets = NetworkService(self.vms.ctx.store, self.vms.ctx.host_id, self.netns, run_dir=self.settings["run_dir"])
        nets.ensure({"name": "sshnat0", "state": "absent"}, False)
        self.vms.close()


def the_playbook_reaches_the_guest(svc, cloud_guest, cloud_init, key):
    """playbooks/wait_ssh.yml as a user runs it; returns the address it waited on and when."""
    inventory = os.path.join(svc.workdir, "inventory")
    with open(inventory, "w") as fh:  # localhost's interpreter here: extra vars would win on the guest too
        fh.write("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    extra = dict(
        svc.settings,
        template=str(cloud_guest.disk),
        kernel=str(cloud_guest.kernel),
        initrd=str(cloud_guest.initrd),
        kernel_cmdline=cloud_guest.kernel_cmdline,
        netns=svc.netns,
        cloud_init=cloud_init,
        macs=[MAC, MAC_STATIC],
        privkey=key,
        proxy="%s %s" % (sys.executable, os.path.join(HERE, "netns_connect.py")),
        boot_timeout=BOOT_TIMEOUT,
    )
    env = dict(
        os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0"
    )
    book = os.path.join(HERE, "playbooks", "wait_ssh.yml")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, "-v", book]
    done = subprocess.run(
        argv + ["-e", json.dumps(extra)],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT + 600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert "failed=0" in done.stdout
    found = re.search(r"WAIT_SSH_OK address=(\S+) waited=([\d.]+)", done.stdout)
    assert found, done.stdout[-3000:]
    # The task results (-v prints them) hold neither the SSH key's body nor the password.
    results = done.stdout.split("TASK [The VM, waited for", 1)[1]
    for secret in (cloud_init["ssh_authorized_keys"][0].split()[1], cloud_init["users"][1]["plain_text_passwd"]):
        assert secret not in results
    return found.group(1), found.group(2)


def the_guest_and_its_agent_report(svc, cloud_init, netns, key, address):
    """The seed on the CD-ROM, runcmd, users, network_config, the inventory plugin, qemu-ga.
    Returns the freeze count."""
    vm = vm_list(svc.vms, NAME)[0]
    iso = seed_path(svc.settings["nvram_dir"], vm["uuid"])
    assert stat.S_IMODE(os.stat(iso).st_mode) == 0o600
    log = vm["serial_log"]
    deadline = time.monotonic() + 120  # SSH answered already: cloud-init is (nearly) done
    marker = wait_serial(log, r"INFINIVIRT-CLOUD hostname=(\S+)", deadline)
    assert marker and marker.group(1) == HOSTNAME, console_tail(log)
    # cloud-init's own final line names the data source: the seed on the SCSI CD-ROM.
    final = wait_serial(
        log, r"Cloud-init v\. \S+ finished at .*Datasource (DataSourceNoCloud \[seed=(\S+?)\])", deadline
    )
    assert final and final.group(2) == "/dev/sr0", console_tail(log)

    done = ssh(netns, key, address, "hostname; id -un; cat /var/lib/cloud/data/instance-id; id -un ops")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [HOSTNAME, "debian", vm["uuid"], "ops"]  # instance-id: the VM's UUID
    a_play_on_a_plugin_group_reaches(svc, key, address)
    # infinivirt_backup freezes the file systems through the agent for its point (issue 24).
    backup = BackupService(svc.vms.engine).ensure({"vm": NAME, "target": os.path.join(svc.workdir, "bk")}, False)
    assert backup["kind"] == "full" and backup["consistency"] == "frozen", backup
    return the_agent_reports_and_quiesces(svc.vms, vm)


def the_seed_changes_without_a_boot(svc, cloud_init, secrets):
    """The same task again: no change. A new seed: a pending restart, the running VM
    untouched; its next start (paused: no second boot) writes it; absent removes it."""
    params = dict(svc.params, cloud_init=cloud_init)
    vm = vm_list(svc.vms, NAME)[0]
    iso = seed_path(svc.settings["nvram_dir"], vm["uuid"])
    first_iso = sha256_of(iso)
    again = svc.vms.ensure(params, False)
    assert not again.changed, again.plan
    renamed = dict(params, cloud_init=dict(cloud_init, hostname="cloudy-web02"))
    changed = svc.vms.ensure(renamed, False)
    assert changed.changed and changed.plan["changes"] == {"cloud_init": "restart"}
    assert changed.vm["pending_restart"] == ["cloud_init"] and changed.vm["status"] == "running"
    assert changed.vm["cloud_init_digest"] != again.vm["cloud_init_digest"]
    assert sha256_of(iso) == first_iso  # the running QEMU keeps the seed it booted with
    assert not svc.vms.ensure(renamed, False).changed

    # Neither the database nor any result holds the key or the password in plain text.
    files = [os.path.join(svc.workdir, n) for n in os.listdir(svc.workdir) if n.startswith("cloud.db")]
    db = b"".join(open(f, "rb").read() for f in files if os.path.isfile(f))  # the db, its WAL
    for secret in secrets:
        assert secret.encode() not in db
        for result in (again, changed):
            assert secret not in repr(result.result())

    exclusive_powers_it_off_through_the_agent(svc.vms, vm, vm["serial_log"])
    assert os.path.exists(iso)  # it outlives the process, like the NVRAM
    svc.vms.ensure(dict(renamed, state="paused"), False)
    assert sha256_of(iso) != first_iso
    with open(iso, "rb") as fh:
        assert b"local-hostname: cloudy-web02" in fh.read()
    gone = svc.vms.ensure({"name": NAME, "state": "absent", "force": True, "stop_timeout": 0}, False)
    assert gone.changed and not os.path.exists(iso)


def console_tail(log):
    with open(log, "rb") as fh:
        return "console tail:\n" + fh.read().decode(errors="replace")[-4000:]


def the_agent_reports_and_quiesces(svc, vm):
    """infinivirt_vm_info and infinivirt_vm list what qemu-ga says; a live disk-only snapshot
    freezes the file systems through the agent and thaws them (the count is the agent's: a
    freeze of our own counts the same, and its thaw too). Returns that count."""
    listed = info_result(svc.ctx, NAME)["vms"][0]
    guest = listed["guest"]
    assert guest["agent"] == "answering", guest
    assert guest["hostname"] == HOSTNAME
    assert guest["os"]["id"] == "debian" and guest["os"]["version"] == "12"
    # network_config: the first NIC asked the NAT network's DHCP, the second has the static address
    by_mac = {i["mac"]: i["ips"] for i in guest["interfaces"]}
    assert any(ip.startswith("10.79.0.") for ip in by_mac.get(MAC, ())), guest["interfaces"]
    assert STATIC_IP in by_mac.get(MAC_STATIC, ()), guest["interfaces"]
    assert STATIC_IP in guest["ips"] and "127.0.0.1" not in guest["ips"]
    assert_shape(guest, documented_guest())

    snap = SnapshotService(svc.engine).ensure({"vm": NAME, "name": "quiesced"}, False)
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


def a_play_on_a_plugin_group_reaches(svc, key, address):
    """The inventory plugin (issue 22), reading only the database, makes the guest's
    ansible_host of the addresses infinivirt_vm_info recorded from its agent; a play on a
    group of the plugin's runs ``hostname`` on the guest over SSH (ssh run inside the
    namespace, where the guest's network is)."""
    workdir = svc.workdir
    listed = info_result(svc.vms.ctx, NAME)["vms"][0]
    assert listed["guest"]["agent"] == "answering" and address in listed["guest"]["ips"], listed["guest"]
    recorded = svc.vms.ctx.store.guest_addresses()[listed["uuid"]]
    assert address in recorded["ips"] and any(i["mac"] == MAC for i in recorded["interfaces"])

    source = os.path.join(workdir, "fleet.infinivirt.yml")
    with open(source, "w") as fh:
        json.dump(
            {
                "plugin": "infinivirt.core.infinivirt",
                "db_url": "sqlite:///%s/cloud.db" % workdir,
                "ansible_host_source": ["agent"],
                "preferred_cidr": NAT_CIDR,  # not the static NIC's address
                "compose": {"ansible_user": "'debian'"},
            },
            fh,
        )
    wrapper = os.path.join(workdir, "ssh-in-ns")
    with open(wrapper, "w") as fh:
        fh.write('#!/bin/sh\nexec ip netns exec %s ssh "$@"\n' % svc.netns)
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
    found = json.loads(listed.stdout)["_meta"]["hostvars"][NAME]["ansible_host"]
    assert (found.get("__ansible_unsafe") if isinstance(found, dict) else found) == address

    done = subprocess.run(
        [os.path.join(bindir, "ansible-playbook"), "-i", source, play],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "GUEST-SAYS %s AT %s" % (HOSTNAME, address) in done.stdout
    assert NAME in done.stdout and "ok=2" in done.stdout


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
