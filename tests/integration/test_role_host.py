# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role infinivirt.core.host: its Molecule scenario, and its parts one by one.

Real hosts parts run for real (apt, pip, sysfs hugepage pools, bridges in a namespace of the
test's own, the supervised monitor); what cannot exist here (GRUB, an IOMMU, vfio modules, a
reboot) is a fake sysfs/procfs tree and a fake GRUB defaults file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest
from collection_path import REPO, collections_root
from helpers import vm_list, wait_for

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records

pytestmark = [pytest.mark.role, pytest.mark.playbook]

ROLE = os.path.join(REPO, "roles", "host")
FAKE_MONITOR = os.path.join(REPO, "tests", "integration", "role", "fake_monitor.py")
SUPERVISOR = os.path.join(ROLE, "files", "infinivirt-supervise")
NODE0_2M = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"


def monitor_src() -> str:
    """The role's monitor once it ships one, else the test stand-in that keeps its contract."""
    real = os.path.join(ROLE, "files", "infinivirt-monitor")
    return real if os.path.exists(real) else FAKE_MONITOR


def ansible_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
        ANSIBLE_NOCOLOR="1",
        NO_COLOR="1",
        ANSIBLE_PIPELINING="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    env.pop("ANSIBLE_CONFIG", None)
    env.update(extra)
    return env


def tool(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not installed next to %s; run scripts/install.sh" % (name, sys.executable))
    return path


# -- Molecule --------------------------------------------------------------------------------


def test_molecule_scenario():
    """converge, idempotence (changed=0), check mode, verify (a TCG VM runs, the monitor runs)."""
    tag = uuid.uuid4().hex[:8]
    root = tempfile.mkdtemp(prefix="ivmol-")
    netns = "ivmol-%s" % tag
    env = ansible_env(
        INFINIVIRT_MOLECULE_ROOT=root,
        INFINIVIRT_MOLECULE_NETNS=netns,
        INFINIVIRT_MOLECULE_MONITOR_SRC=monitor_src(),
        MOLECULE_NO_LOG="false",
    )
    # Molecule keeps a scenario's state (e.g. "prepared") in ~/.ansible/tmp across runs:
    # start from none, so prepare.yml always runs.
    subprocess.run([tool("molecule"), "reset"], cwd=ROLE, env=env, capture_output=True, check=True)
    try:
        done = subprocess.run(
            [tool("molecule"), "test"],
            cwd=ROLE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-12000:]
        out = done.stdout
        # Molecule's summary; idempotence fails when the second converge changed anything.
        for action in ("prepare", "converge", "idempotence", "check", "verify", "cleanup"):
            assert "default > %s: Executed: Successful" % action in out, out[-6000:]
    finally:
        pidfile = os.path.join(root, "run", "monitor.supervise.pid")
        if os.path.exists(pidfile):  # the scenario failed before its cleanup: stop the monitor
            subprocess.run([sys.executable, SUPERVISOR, "stop", "--pidfile", pidfile, "--timeout", "5"], check=False)
        subprocess.run(["ip", "netns", "delete", netns], stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(root, ignore_errors=True)
    assert not os.path.exists(os.path.join("/run/netns", netns)), "the scenario's cleanup left its namespace"


# -- the role's parts, one by one --------------------------------------------------------------


@pytest.fixture
def scratch():
    root = tempfile.mkdtemp(prefix="ivrole-")
    for sub in ("sys/kernel/iommu_groups", "sys/module", "proc", "etc/default", "etc/modprobe.d", "etc/modules-load.d"):
        os.makedirs(os.path.join(root, sub))
    with open(os.path.join(root, "proc", "cmdline"), "w") as f:
        f.write("BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro\n")
    with open(os.path.join(root, "proc", "cpuinfo"), "w") as f:
        f.write("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    yield root
    pidfile = os.path.join(root, "run", "monitor.supervise.pid")
    if os.path.exists(pidfile):
        subprocess.run([sys.executable, SUPERVISOR, "stop", "--pidfile", pidfile, "--timeout", "5"], check=False)
    for mount in hugetlbfs_under(root):
        subprocess.run(["umount", mount], check=False)
    shutil.rmtree(root, ignore_errors=True)


def hugetlbfs_under(root: str) -> list:
    with open("/proc/mounts") as f:
        lines = [line.split() for line in f]
    return [parts[1] for parts in lines if parts[2] == "hugetlbfs" and parts[1].startswith(root + "/")]


def role_vars(root: str, **overrides) -> dict:
    """The role on a scratch root, with the test's own venv (left alone: no packages)."""
    values = dict(
        infinivirt_host_install_packages=False,
        # The collection is installed here (scripts/install.sh); the molecule scenario copies
        # the library, which costs a module run per file, once per role run.
        infinivirt_host_monitor_library=False,
        infinivirt_host_venv=sys.prefix,
        infinivirt_host_python_packages=[],
        infinivirt_host_state_dir=os.path.join(root, "lib"),
        infinivirt_host_run_dir=os.path.join(root, "run"),
        infinivirt_host_nvram_dir=os.path.join(root, "lib", "nvram"),
        infinivirt_host_storage_roots=[os.path.join(root, "images")],
        infinivirt_host_db_url="sqlite:///%s/lib/infinivirt.db" % root,
        infinivirt_host_secret_key_file=os.path.join(root, "lib", "secret.key"),
        infinivirt_host_config_file=os.path.join(root, "etc", "infinivirt", "host.json"),
        infinivirt_host_hugetlbfs_dir=os.path.join(root, "huge"),
        infinivirt_host_fstab_file=os.path.join(root, "etc", "fstab"),
        infinivirt_host_sysfs_root=os.path.join(root, "sys"),
        infinivirt_host_proc_root=os.path.join(root, "proc"),
        infinivirt_host_grub_defaults_file=os.path.join(root, "etc", "default", "grub"),
        infinivirt_host_grub_update_command=["touch", os.path.join(root, "grub-updated")],
        infinivirt_host_modules_load_dir=os.path.join(root, "etc", "modules-load.d"),
        infinivirt_host_modprobe_dir=os.path.join(root, "etc", "modprobe.d"),
        infinivirt_host_monitor_enabled=False,
        infinivirt_host_monitor_src=monitor_src(),
        infinivirt_host_monitor_path=os.path.join(root, "libexec", "infinivirt-monitor"),
        infinivirt_host_monitor_supervisor_path=os.path.join(root, "libexec", "infinivirt-supervise"),
        infinivirt_host_monitor_log=os.path.join(root, "monitor.log"),
        infinivirt_host_monitor_stop_timeout=5,
    )
    values.update(overrides)
    return values


PLAYBOOK = """
- name: Run the role
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Role
      ansible.builtin.include_role:
        name: infinivirt.core.host
        tasks_from: "{{ item }}"
      loop: "{{ role_tasks | default(['main.yml']) }}"
    - name: Report the role's facts
      ansible.builtin.copy:
        content: "{{ report | to_json }}"
        dest: "{{ report_file }}"
        mode: "0600"
      vars:
        report:
          reboot_required: "{{ infinivirt_host_reboot_required | default(None) }}"
          reboot_reasons: "{{ infinivirt_host_reboot_reasons | default(None) }}"
          vfio: "{{ infinivirt_host_vfio_status | default(None) }}"
          monitor: "{{ infinivirt_host_monitor | default(None) }}"
          python: "{{ infinivirt_host_python_interpreter | default(None) }}"
      check_mode: false
      changed_when: false
"""


def run_role(root: str, variables: dict, check: bool = False):
    """ansible-playbook with the role; returns (returncode, changed count, facts, output)."""
    playbook = os.path.join(root, "play.yml")
    with open(playbook, "w") as f:
        f.write(PLAYBOOK)
    report = os.path.join(root, "report.json")
    if os.path.exists(report):
        os.unlink(report)
    extra = dict(variables, report_file=report, ansible_python_interpreter=sys.executable)
    argv = [tool("ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", json.dumps(extra), playbook]
    if check:
        argv.append("--check")
    done = subprocess.run(argv, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout + done.stderr
    recap = [line for line in done.stdout.splitlines() if line.startswith("localhost ")]
    changed = int(recap[-1].split("changed=")[1].split()[0]) if recap else -1
    facts = json.load(open(report)) if os.path.exists(report) else None
    return done.returncode, changed, facts, out


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_kernel_args_go_to_grub_and_ask_for_a_reboot(scratch):
    grub = os.path.join(scratch, "etc", "default", "grub")
    write(grub, 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=2 iommu=off"\nGRUB_TIMEOUT=5\n')
    for module in ("vfio", "vfio_iommu_type1", "vfio_pci"):
        os.makedirs(os.path.join(scratch, "sys", "module", module))
    variables = role_vars(
        scratch,
        infinivirt_host_hugepages_boot=[{"size": "2M", "count": 16}],
        infinivirt_host_hugepages_default_size="2M",
        infinivirt_host_vfio_enabled=True,
        infinivirt_host_vfio_ids=["1002:67df"],
        infinivirt_host_kernel_args=["mitigations=auto"],
        role_tasks=["vfio.yml", "kernel_args.yml"],
    )
    wanted = (
        "default_hugepagesz=2M hugepagesz=2M hugepages=16 amd_iommu=on iommu=pt vfio-pci.ids=1002:67df mitigations=auto"
    )

    # Check mode: says it would change GRUB and the vfio files, writes nothing.
    rc, changed, facts, out = run_role(scratch, variables, check=True)
    assert rc == 0, out[-6000:]
    assert changed == 3, out[-6000:]  # modules-load.d, modprobe.d, GRUB
    assert "amd_iommu" not in read(grub)
    assert not os.path.exists(os.path.join(scratch, "grub-updated"))

    rc, changed, facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    # Other arguments and lines stay; the role's keys are replaced, not duplicated.
    assert read(grub) == 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet %s"\nGRUB_TIMEOUT=5\n' % wanted
    assert os.path.exists(os.path.join(scratch, "grub-updated")), "the GRUB update command did not run"
    assert facts["reboot_required"] is True
    assert facts["reboot_reasons"] == ["the running kernel lacks %s" % wanted, "the IOMMU is not active"]
    assert facts["vfio"]["iommu"] == "amd" and facts["vfio"]["modules_missing"] == []
    assert read(os.path.join(scratch, "etc", "modprobe.d", "infinivirt-vfio-pci.conf")).endswith(
        "options vfio-pci ids=1002:67df\n"
    )
    assert "vfio_iommu_type1" in read(os.path.join(scratch, "etc", "modules-load.d", "infinivirt-vfio.conf"))

    # Idempotent: no change, no second GRUB update.
    os.unlink(os.path.join(scratch, "grub-updated"))
    rc, changed, facts, out = run_role(scratch, variables)
    assert (rc, changed) == (0, 0), out[-6000:]
    assert not os.path.exists(os.path.join(scratch, "grub-updated"))

    # After the "reboot": the kernel has the arguments and an IOMMU group exists.
    write(os.path.join(scratch, "proc", "cmdline"), "BOOT_IMAGE=/vmlinuz ro quiet %s\n" % wanted)
    os.makedirs(os.path.join(scratch, "sys", "kernel", "iommu_groups", "0"))
    rc, changed, facts, out = run_role(scratch, variables)
    assert (rc, changed) == (0, 0), out[-6000:]
    assert facts["reboot_required"] is False and facts["reboot_reasons"] == []


def test_no_grub_defaults_is_an_error_not_a_guess(scratch):
    variables = role_vars(
        scratch, infinivirt_host_hugepages_boot=[{"size": "1G", "count": 2}], role_tasks=["kernel_args.yml"]
    )
    rc, _changed, _facts, out = run_role(scratch, variables)
    assert rc != 0
    assert "does not exist, so this host does not boot through GRUB" in out
    assert "hugepagesz=1G hugepages=2" in out
    # Reporting only: no boot loader touched, the reboot still asked for.
    rc, changed, facts, out = run_role(scratch, dict(variables, infinivirt_host_manage_boot_loader=False))
    assert (rc, changed) == (0, 0), out[-6000:]
    assert facts["reboot_required"] is True


def test_hugepages_per_numa_node_on_the_real_sysfs(scratch):
    if not os.path.exists(NODE0_2M):
        pytest.skip("no NUMA node 0 with 2 MB hugepages in sysfs")
    before = read(NODE0_2M).strip()
    variables = role_vars(
        scratch,
        infinivirt_host_sysfs_root="/sys",
        infinivirt_host_hugepages=[{"size_kb": 2048, "count": int(before) + 3, "node": 0}],
        role_tasks=["hugepages.yml"],
    )
    try:
        # The pool, and its hugetlbfs: mount point, fstab line, mount.
        rc, changed, _facts, out = run_role(scratch, variables, check=True)
        assert rc == 0 and changed == 4, out[-6000:]
        assert read(NODE0_2M).strip() == before
        rc, changed, _facts, out = run_role(scratch, variables)
        assert rc == 0 and changed == 4, out[-6000:]
        assert int(read(NODE0_2M)) == int(before) + 3
        rc, changed, _facts, out = run_role(scratch, variables)
        assert (rc, changed) == (0, 0), out[-6000:]
        # A size the kernel does not have fails with its path named.
        bad = dict(variables, infinivirt_host_hugepages=[{"size_kb": 4, "count": 1, "node": 0}])
        rc, _changed, _facts, out = run_role(scratch, bad)
        assert rc != 0 and "this kernel has no hugepages of 4 kB on NUMA node 0" in out, out[-4000:]
    finally:
        write(NODE0_2M, before + "\n")
    assert read(NODE0_2M).strip() == before


GLOBAL_2M = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"


def test_hugetlbfs_is_mounted_and_a_hugepages_vm_starts(scratch):
    """Item 11 of issue 18: the role mounts a hugetlbfs per pool size (now and in fstab)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

    before = read(GLOBAL_2M).strip()
    mount = os.path.join(scratch, "huge", "hugepages-2048kB")
    fstab = os.path.join(scratch, "etc", "fstab")
    write(fstab, "# <file system> <mount point> <type> <options> <dump> <pass>\nproc /proc proc defaults 0 0\n")
    variables = role_vars(
        scratch,
        infinivirt_host_sysfs_root="/sys",
        infinivirt_host_hugepages=[{"size_kb": 2048, "count": int(before) + 40}],
        infinivirt_host_hugetlbfs_dir=os.path.join(scratch, "huge"),
        infinivirt_host_fstab_file=fstab,
        role_tasks=["hugepages.yml"],
    )
    service = None
    try:
        rc, changed, _facts, out = run_role(scratch, variables, check=True)
        assert rc == 0 and changed == 4, out[-6000:]  # pool, mount point, fstab, mount
        assert hugetlbfs_under(scratch) == [] and "proc /proc" in read(fstab) and "hugetlbfs" not in read(fstab)
        rc, changed, _facts, out = run_role(scratch, variables)
        assert rc == 0 and changed == 4, out[-6000:]
        assert hugetlbfs_under(scratch) == [mount]
        assert read(fstab).endswith("proc /proc proc defaults 0 0\nhugetlbfs %s hugetlbfs pagesize=2048K 0 0\n" % mount)
        rc, changed, _facts, out = run_role(scratch, variables)
        assert (rc, changed) == (0, 0), out[-6000:]
        rc, changed, _facts, out = run_role(scratch, variables, check=True)
        assert (rc, changed) == (0, 0), out[-6000:]

        os.makedirs(os.path.join(scratch, "run"), mode=0o700, exist_ok=True)
        service = VmService.open("sqlite:///%s/huge.db" % scratch, os.path.join(scratch, "run"), lock_timeout=30)
        vm = service.ensure(
            {"name": "huge", "state": "running", "accel": "tcg", "memory_mb": 64, "vcpus": 1, "hugepages": "2M"}, False
        ).vm
        assert vm["status"] == "running"
        with open("/proc/%d/cmdline" % vm["pid"], "rb") as f:
            assert mount.encode() in f.read(), "the guest's RAM is not on the role's hugetlbfs"
    finally:
        if service is not None:
            for entry in vm_list(service):
                service.ensure({"name": entry["name"], "state": "absent", "force": True, "stop_timeout": 0}, False)
            service.close()
        for path in hugetlbfs_under(scratch):
            subprocess.run(["umount", path], check=False)
        write(GLOBAL_2M, before + "\n")
    assert read(GLOBAL_2M).strip() == before

    # Something else mounted there is an error, not a second mount on top.
    os.makedirs(mount, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", mount], check=True)
    try:
        rc, _changed, _facts, out = run_role(
            scratch, dict(variables, infinivirt_host_hugepages=[{"size_kb": 2048, "count": int(before)}])
        )
        assert rc != 0 and 'holds "tmpfs' in out and "not a hugetlbfs of 2048 kB pages" in out, out[-4000:]
    finally:
        subprocess.run(["umount", mount], check=False)


def supervisor_state(root: str) -> dict:
    done = subprocess.run(
        [sys.executable, SUPERVISOR, "status", "--pidfile", os.path.join(root, "run", "monitor.supervise.pid")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def monitor_vars(root: str, **overrides) -> dict:
    """Only the role's monitor tasks, with the test's own Python as the venv's."""
    os.makedirs(os.path.join(root, "lib"), mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(root, "run"), mode=0o700, exist_ok=True)
    values = dict(
        infinivirt_host_monitor_enabled=True,
        infinivirt_host_python_interpreter=sys.executable,
        infinivirt_host__python_ready=True,
        # The monitor reads the host configuration: without it, it would use the real host's.
        role_tasks=["host_config.yml", "monitor.yml"],
    )
    values.update(overrides)
    return role_vars(root, **values)


def test_supervised_monitor_starts_restarts_and_stops(scratch):
    variables = monitor_vars(scratch)
    rc, changed, facts, out = run_role(scratch, variables, check=True)
    assert rc == 0 and changed > 0, out[-6000:]
    assert "systemd is not PID 1 on this host" in out
    assert not os.path.exists(os.path.join(scratch, "run", "monitor.supervise.pid"))

    rc, changed, facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    state = supervisor_state(scratch)
    assert state["running"] and facts["monitor"]["pid"] == state["pid"]
    assert state["argv"][:2] == [sys.executable, variables["infinivirt_host_monitor_path"]]
    assert state["argv"][2:] == ["--config", variables["infinivirt_host_config_file"]]
    child = state["child"]
    assert child and os.path.exists("/proc/%d" % child)

    rc, changed, _facts, out = run_role(scratch, variables)
    assert (rc, changed) == (0, 0), out[-6000:]
    assert supervisor_state(scratch)["child"] == child

    # The monitor dies: its supervisor starts it again.
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: supervisor_state(scratch)["child"] not in (None, child)), "no restart"
    restarted = supervisor_state(scratch)["child"]
    assert "PID %d exited" % child in read(os.path.join(scratch, "monitor.log"))

    # Another host configuration: the monitor is restarted to read it (check mode says so first).
    other = dict(variables, infinivirt_host_id="hv-test-1")
    config = variables["infinivirt_host_config_file"]
    rc, changed, _facts, out = run_role(scratch, other, check=True)
    assert rc == 0 and changed == 2, out[-6000:]  # the file, the monitor
    assert "hv-test-1" not in read(config) and supervisor_state(scratch)["child"] == restarted
    rc, changed, _facts, out = run_role(scratch, other)
    assert rc == 0 and changed == 2, out[-6000:]
    assert json.loads(read(config))["host_id"] == "hv-test-1"
    assert supervisor_state(scratch)["child"] not in (None, restarted)
    supervisor = supervisor_state(scratch)["pid"]

    stopped = dict(other, infinivirt_host_monitor_state="stopped")
    rc, changed, _facts, out = run_role(scratch, stopped, check=True)
    assert rc == 0 and changed == 1 and supervisor_state(scratch)["running"], out[-6000:]
    rc, changed, facts, out = run_role(scratch, stopped)
    assert rc == 0 and changed == 1, out[-6000:]
    assert facts["monitor"]["running"] is False
    assert not supervisor_state(scratch)["running"]
    assert wait_for(lambda: not os.path.exists("/proc/%d" % supervisor), 10)
    assert "stopped" in read(os.path.join(scratch, "monitor.log")).splitlines()[-1]
    rc, changed, _facts, out = run_role(scratch, stopped)
    assert (rc, changed) == (0, 0), out[-6000:]


def monitors(path: str) -> list:
    """PIDs of the live monitors started from ``path`` (not their supervisors)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if len(args) > 1 and args[1] == path.encode():
            found.append(int(entry))
    return sorted(found)


def test_a_killed_supervisor_leaves_one_monitor_or_none(scratch):
    """Item 9 of issue 18: the monitor holds run_dir/monitor.pid locked, so a rerun after its
    supervisor was killed ends the orphan instead of starting a second monitor, a second one
    refuses to run, and monitor_state: stopped ends an orphan too."""
    variables = monitor_vars(scratch)
    path = variables["infinivirt_host_monitor_path"]
    rc, _changed, _facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    first = supervisor_state(scratch)
    assert wait_for(lambda: monitors(path) == [first["child"]]), monitors(path)
    pidfile = os.path.join(scratch, "run", "monitor.pid")
    assert wait_for(lambda: os.path.exists(pidfile) and json.loads(read(pidfile) or "{}").get("pid") == first["child"])

    # A second monitor on the same run_dir refuses to run beside the first.
    second = subprocess.run(
        [sys.executable, path, "--config", variables["infinivirt_host_config_file"]],
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 3, second.stderr
    assert "another monitor (PID %d) runs for run_dir" % first["child"] in second.stderr

    os.kill(first["pid"], signal.SIGKILL)  # the supervisor only: its monitor lives on
    assert wait_for(lambda: not supervisor_state(scratch)["running"])
    assert monitors(path) == [first["child"]]
    rc, changed, _facts, out = run_role(scratch, variables, check=True)
    assert rc == 0 and changed == 1 and monitors(path) == [first["child"]], out[-6000:]
    rc, changed, _facts, out = run_role(scratch, variables)
    assert rc == 0 and changed == 1, out[-6000:]
    now = supervisor_state(scratch)
    assert now["running"] and now["child"] != first["child"]
    assert wait_for(lambda: monitors(path) == [now["child"]]), monitors(path)

    # Killed again, then stopped: the orphan goes too.
    os.kill(now["pid"], signal.SIGKILL)
    assert wait_for(lambda: not supervisor_state(scratch)["running"])
    stopped = dict(variables, infinivirt_host_monitor_state="stopped")
    rc, changed, _facts, out = run_role(scratch, stopped)
    assert rc == 0 and changed == 1, out[-6000:]
    assert wait_for(lambda: monitors(path) == [], 10), monitors(path)
    rc, changed, _facts, out = run_role(scratch, stopped)
    assert (rc, changed) == (0, 0), out[-6000:]


def test_monitor_gets_the_database_password_from_its_environment(scratch):
    """A PostgreSQL password goes to a 0600 file and PGPASSWORD, never onto the command line."""
    url = "postgresql://infinivirt:s3cr%2Bt@127.0.0.1:5/infinivirt"
    variables = monitor_vars(scratch, infinivirt_host_db_url=url)
    rc, _changed, _facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    assert "s3cr" not in out
    state = supervisor_state(scratch)
    assert not any("s3cr" in arg for arg in state["argv"])
    config = variables["infinivirt_host_config_file"]
    assert json.loads(read(config))["db_url"] == "postgresql://infinivirt@127.0.0.1:5/infinivirt"
    assert oct(os.stat(config).st_mode & 0o777) == "0o644"
    env_file = os.path.join(scratch, "lib", "monitor.env")
    assert oct(os.stat(env_file).st_mode & 0o777) == "0o600"
    assert read(env_file) == "PGPASSWORD=s3cr+t\n"
    with open("/proc/%d/environ" % state["child"], "rb") as f:
        assert b"PGPASSWORD=s3cr+t\x00" in f.read()


def test_systemd_unit_quotes_arguments_and_specifiers(scratch):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")), keep_trailing_newline=True
    )
    unit = env.get_template("infinivirt-monitor.service.j2").render(
        ansible_managed="managed",
        infinivirt_host__db_password="x",
        infinivirt_host__monitor_env_file="/var/lib/infinivirt/monitor.env",
        infinivirt_host__monitor_argv=[
            "/opt/iv/bin/python",
            "/usr/local/libexec/m",
            "--db-url",
            'sqlite:////a b/50%"x',
        ],
    )
    lines = unit.splitlines()
    assert "Type=simple" in lines and "Restart=always" in lines and "After=network-online.target" in lines
    assert "EnvironmentFile=/var/lib/infinivirt/monitor.env" in lines
    assert 'ExecStart="/opt/iv/bin/python" "/usr/local/libexec/m" "--db-url" "sqlite:////a b/50%%\\"x"' in lines
    assert "WantedBy=multi-user.target" in lines


def test_secret_key_and_store(scratch):
    import base64
    import sqlite3

    from ansible_collections.infinivirt.core.plugins.module_utils.store.migrations import LATEST

    key_file = os.path.join(scratch, "lib", "secret.key")
    db = os.path.join(scratch, "lib", "infinivirt.db")
    variables = role_vars(scratch, role_tasks=["python.yml", "state.yml"])

    rc, changed, _facts, out = run_role(scratch, variables, check=True)
    assert rc == 0 and changed > 0, out[-6000:]
    assert not os.path.exists(os.path.join(scratch, "lib"))

    rc, _changed, facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    assert facts["python"] == os.path.join(sys.prefix, "bin", "python")
    for sub in ("lib", "run", "images", "lib/nvram"):
        assert oct(os.stat(os.path.join(scratch, sub)).st_mode & 0o777) == "0o700", sub
    made = read(key_file)
    assert len(base64.b64decode(made)) == 32 and oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == LATEST
    rc, changed, _facts, out = run_role(scratch, variables)
    assert (rc, changed) == (0, 0), out[-6000:]
    assert read(key_file) == made, "an existing key was replaced"

    # A key handed in (from a vault) replaces it, and never shows in the output.
    vault_key = base64.b64encode(b"k" * 32).decode()
    rc, changed, _facts, out = run_role(scratch, dict(variables, infinivirt_host_secret_key=vault_key))
    assert rc == 0 and changed == 1, out[-6000:]
    assert read(key_file) == vault_key + "\n" and vault_key not in out


CRASH_VM_PLAY = """
- name: A VM on the host's own paths, no shared option in the task
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The VM
      infinivirt.core.infinivirt_vm:
        name: hostcfg
        state: running
        accel: tcg
        memory_mb: 64
        vcpus: 1
        on_crash: restart
        graphics: {type: vnc, password: "pw4cfg"}
        disks: [{path: "{{ disk }}"}]
      register: vm
    - name: Report it
      ansible.builtin.copy:
        content: "{{ vm.vm | to_json }}"
        dest: "{{ report_file }}"
        mode: "0600"
"""


def test_the_monitor_and_the_modules_read_the_hosts_configuration(scratch):
    """Item 6 of issue 18: a host with its own storage root, key file and NVRAM directory.
    A task with no shared option finds the store through the role's host configuration, and
    the role's monitor restarts a crashed VM with a display password and a disk under that
    root (the key and the root come from the file too)."""
    from ansible_collections.infinivirt.core.plugins.module_utils.host.process import wait_until_gone
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

    variables = monitor_vars(
        scratch,
        infinivirt_host_storage_roots=[os.path.join(scratch, "pool")],
        infinivirt_host_secret_key_file=os.path.join(scratch, "keys", "display.key"),
        infinivirt_host_nvram_dir=os.path.join(scratch, "firmware-vars"),
        infinivirt_host_id="hv-cfg",
        role_tasks=["state.yml", "host_config.yml", "monitor.yml"],
    )
    rc, _changed, _facts, out = run_role(scratch, variables)
    assert rc == 0, out[-6000:]
    config = variables["infinivirt_host_config_file"]
    assert json.loads(read(config)) == {
        "db_url": variables["infinivirt_host_db_url"],
        "run_dir": os.path.join(scratch, "run"),
        "storage_roots": [os.path.join(scratch, "pool")],
        "secret_key_file": os.path.join(scratch, "keys", "display.key"),
        "nvram_dir": os.path.join(scratch, "firmware-vars"),
        "host_id": "hv-cfg",
    }
    disk = os.path.join(scratch, "pool", "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)

    playbook, report = os.path.join(scratch, "vm.yml"), os.path.join(scratch, "vm.json")
    write(playbook, CRASH_VM_PLAY)
    extra = {"disk": disk, "report_file": report, "ansible_python_interpreter": sys.executable}
    done = subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", json.dumps(extra), playbook],
        env=ansible_env(INFINIVIRT_HOST_CONFIG=config),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    vm = json.loads(read(report))
    assert vm["status"] == "running" and vm["graphics"]["password_set"] is True
    assert vm["qmp_socket"].startswith(os.path.join(scratch, "run") + "/")
    assert os.path.getsize(os.path.join(scratch, "keys", "display.key")) > 0

    service = VmService.open(variables["infinivirt_host_db_url"], os.path.join(scratch, "run"), hostname="hv-cfg")
    try:
        assert records.load(service.store, "hostcfg") is not None, "the task did not use the configured store"
        os.kill(vm["pid"], signal.SIGKILL)
        assert wait_until_gone(vm["pid"], vm["uuid"], 10)

        def kinds():
            return [e["kind"] for e in service.store.list_events(vm["uuid"])]

        assert wait_for(lambda: "restarted" in kinds(), 60), (kinds(), read(variables["infinivirt_host_monitor_log"]))
        again = vm_list(service, "hostcfg")[0]
        assert again["status"] == "running" and again["pid"] != vm["pid"]
    finally:
        for entry in vm_list(service):
            service.ensure({"name": entry["name"], "state": "absent", "force": True, "stop_timeout": 0}, False)
        service.close()
