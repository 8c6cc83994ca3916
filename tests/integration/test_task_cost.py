# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What one task costs (issue 11): the libraries its module process loads, the QMP
connections it opens and the QEMU probes it runs, on real QEMU processes.

The imports are read from the real module run: Ansible runs the task (AnsiballZ, local
connection) with an interpreter that writes the names in ``sys.modules`` when it exits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from collection_path import collections_root
from helpers import vm_list, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.qemu import probe as probe_mod
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu]

MU = "ansible_collections.infinivirt.core.plugins.module_utils."
# Loaded only by a task that uses them: NICs and networks, a PostgreSQL URL, a secret.
HEAVY = ("pyroute2", "psycopg2", "cryptography")
QMP_LIBS = ("qemu.qmp", "asyncio")
# The start code, hot-plug, snapshots, the firewall and the host's network: none in a no-op.
NOT_IN_A_NOOP = (
    "vm.engine.launch",
    "vm.engine.hotplug",
    "vm.snapshots",
    "firewall.service",
    "host.net",
    "vm.model.argv",
    "qemu.img",
)

# Runs the AnsiballZ file it is given in this process, as python would, and writes
# sys.modules at exit (after the module's exit_json).
DUMPER = """\
import atexit
import runpy
import sys

OUT = sys.argv[1]


def dump():
    with open(OUT, "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)) + "\\n")


atexit.register(dump)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_task(tmp_path, module, args, **environ):
    """Run one task of ``module`` through Ansible on localhost; (result, loaded module names)."""
    out = tmp_path / ("%s-%d.modules" % (module, len(list(tmp_path.glob("*.modules")))))
    dumper = tmp_path / "dump_modules.py"
    dumper.write_text(DUMPER)
    interpreter = tmp_path / ("python-%s" % out.stem)
    interpreter.write_text('#!/bin/sh\nexec %s %s %s "$@"\n' % (sys.executable, dumper, out))
    interpreter.chmod(0o755)
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_PIPELINING="False",  # the interpreter gets the AnsiballZ file as its argument
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",  # "localhost | SUCCESS => {...}"
        **environ,
    )
    done = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible"),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-m",
            "infinivirt.core." + module,
            "-a",
            json.dumps(args),
            "-e",
            "ansible_python_interpreter=%s" % interpreter,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads(done.stdout.split("=>", 1)[1])
    return result, set(out.read_text().split())


def loaded(names, package):
    return sorted(n for n in names if n == package or n.startswith(package + "."))


def test_a_task_loads_only_what_it_uses(bridge_ns, service, workdir, tmp_path):
    common = {"db_url": "sqlite:///%s/state.db" % workdir, "run_dir": os.path.join(workdir, "run")}
    vm = dict(accel="tcg", memory_mb=64)
    service.ensure(dict(vm, name="cold", state="stopped"), False)
    service.ensure(dict(vm, name="warm", state="running"), False)
    service.ensure(dict(vm, name="wired", state="stopped", netns=bridge_ns, nics=[{"bridge": "vmbr0"}]), False)

    # A stopped VM: no NIC library, no database driver, no crypto, and no QMP either.
    result, names = run_task(tmp_path, "infinivirt_vm", dict(common, name="cold", state="stopped"))
    assert not result["changed"] and result["vm"]["status"] == "stopped"
    for lib in HEAVY + QMP_LIBS:
        assert loaded(names, lib) == [], lib
    for engine in NOT_IN_A_NOOP:
        assert MU + engine not in names, engine

    # A running VM that runs as recorded: its pidfile, /proc and event log say so, and no
    # QMP library is loaded (issue 20). Paused, it is asked over QMP.
    result, names = run_task(tmp_path, "infinivirt_vm", dict(common, name="warm", state="running"))
    assert not result["changed"] and result["vm"]["status"] == "running"
    for lib in HEAVY + QMP_LIBS:
        assert loaded(names, lib) == [], lib
    for engine in NOT_IN_A_NOOP:
        assert MU + engine not in names, engine
    service.ensure(dict(vm, name="warm", state="paused"), False)
    result, names = run_task(tmp_path, "infinivirt_vm", dict(common, name="warm", state="paused"))
    assert not result["changed"] and result["vm"]["status"] == "paused"
    for lib in HEAVY:
        assert loaded(names, lib) == [], lib
    assert "qemu.qmp" in names and "asyncio" in names

    # The listing reads rows and asks QEMU; it does not load the VM engine.
    result, names = run_task(tmp_path, "infinivirt_vm_info", common)
    assert sorted(v["name"] for v in result["vms"]) == ["cold", "warm", "wired"]
    for lib in HEAVY:
        assert loaded(names, lib) == [], lib
    for engine in (
        "vm.service",
        "vm.model.plan",
        "vm.engine.hotplug",
        "vm.engine.preflight",
        "firewall.service",
        "host.tap",
    ):
        assert MU + engine not in names, engine

    # A VM with a NIC is started: its TAP is made through pyroute2, which is then loaded.
    result, names = run_task(tmp_path, "infinivirt_vm", dict(common, name="wired", state="running"))
    assert result["changed"] and result["vm"]["status"] == "running"
    assert "pyroute2" in names and MU + "host.tap" in names
    service.ensure({"name": "wired", "state": "absent", "force": True, "stop_timeout": 0}, False)


def test_a_second_task_runs_the_code_the_first_compiled(service, workdir, tmp_path):
    """AnsiballZ imports from a zip, where Python keeps no bytecode: the first task compiles
    the library into the cache (module_utils/bytecode_cache.py), the next runs that code.
    Its files are not written again (same inode), and hold this interpreter's magic."""
    service.ensure(dict(name="cached", accel="tcg", memory_mb=64, state="stopped"), False)
    cache = tmp_path / "bytecode"
    args = {"db_url": "sqlite:///%s/state.db" % workdir, "run_dir": os.path.join(workdir, "run"), "name": "cached"}
    result, names = run_task(tmp_path, "infinivirt_vm", args, INFINIVIRT_BYTECODE_CACHE=str(cache))
    assert not result["changed"] and MU + "bytecode_cache" in names
    first = {entry.name: entry.stat().st_ino for entry in cache.iterdir()}
    service_entry = [name for name in first if name.startswith(MU + "vm.service.")]
    assert len(service_entry) == 1 and len(first) >= 30
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    result = run_task(tmp_path, "infinivirt_vm", args, INFINIVIRT_BYTECODE_CACHE=str(cache))[0]
    assert not result["changed"]
    assert {entry.name: entry.stat().st_ino for entry in cache.iterdir()} == first
    with open(cache / service_entry[0], "rb") as fh:
        assert fh.read(4) == importlib.util.MAGIC_NUMBER


@pytest.fixture
def qemu_probes(monkeypatch):
    """Each run of the QEMU binary to probe it (version, CPU list)."""
    runs = []
    real = probe_mod._run

    def counted(binary, args):
        runs.append(args)
        return real(binary, args)

    monkeypatch.setattr(probe_mod, "_run", counted)
    return runs


def test_one_qmp_connection_per_task(service, guest_params, qmp_connections):
    def task(**params):
        del qmp_connections[:]
        out = service.ensure(dict(params, name="cheap"), False)
        return out.actions, len(qmp_connections)

    assert task(state="running", **guest_params) == (["create", "start"], 1)  # query-status, cont
    assert task(state="running") == ([], 0)  # the row, the pidfile, /proc and the event log agree
    assert task(state="paused") == (["pause"], 1)
    assert task(state="running") == (["resume"], 1)
    del qmp_connections[:]
    vm = vm_list(service, "cheap")[0]
    assert vm["qemu_status"] == "running" and len(qmp_connections) == 0
    wait_ready(vm["serial_log"])  # the guest now answers the power button
    assert task(state="stopped", stop_timeout=120) == (["stop"], 1)  # query-status, system_powerdown
    assert task(state="stopped") == ([], 0)
    assert task(state="running") == (["start"], 1)
    # One connection per QEMU process: the old one's (query-status, quit), the new one's.
    assert task(state="restarted", stop_timeout=0, force=True) == (["stop", "start"], 2)
    assert task(state="stopped", stop_timeout=0, force=True) == (["stop"], 1)  # query-status, quit


def test_a_task_with_a_probe_cache_runs_no_probe(workdir, qemu_probes):
    def task(**params):
        svc = VmService.open("sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"))  # a task of its own
        try:
            return svc.ensure(dict(params, name="probed", accel="tcg", memory_mb=64), False).actions
        finally:
            svc.close()

    try:
        assert task(state="running") == ["create", "start"]  # probed before run_dir existed
        assert [args[0] for args in qemu_probes] == ["--version", "-cpu"]
        assert task(state="stopped", force=True, stop_timeout=0) == ["stop"]
        assert os.path.exists(os.path.join(workdir, "run", "probe-cache.json"))
        del qemu_probes[:]
        assert task(state="running") == ["start"]
        assert qemu_probes == [], "the cached version and CPU list answer it"
    finally:
        task(state="absent", force=True, stop_timeout=0)


def test_a_start_and_a_stop_commit_few_store_transactions(service, monkeypatch):
    """Each commit is a disk sync: a start journals all its files in one (issue 20), a stop
    drops them in one."""
    opened = []
    real = service.store.transaction
    monkeypatch.setattr(service.store, "transaction", lambda doing="a write": opened.append(doing) or real(doing))
    vm = {"name": "txn", "accel": "tcg", "memory_mb": 64}
    assert service.ensure(dict(vm, state="stopped"), False).actions == ["create"]
    del opened[:]
    assert service.ensure(dict(vm, state="running"), False).actions == ["start"]
    # the journal, then the row: starting; PID and display port; running
    assert opened == ["journaling resources"] + ["updating VM txn"] * 3
    del opened[:]
    assert service.ensure(dict(vm, state="stopped", force=True, stop_timeout=0), False).actions == ["stop"]
    assert opened == ["dropping resources from the journal", "updating VM txn"]
