# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Plain helpers shared by the integration tests (no fixtures: those stay in conftest):
waiting for the guest and asking it things over its ttyS1 channel, scratch images, polling,
running a playbook, looking at links, nftables rulesets, key material, QEMU's block graph
and whether the store agrees with the processes. Test files import them from here, never
from conftest or from one another."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import time

from collection_path import collections_root
from qemu_procs import qemu_processes

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(TESTS, "guest") not in sys.path:  # conftest put it there already, normally
    sys.path.insert(0, os.path.join(TESTS, "guest"))

import serial_report  # noqa: E402

from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records  # noqa: E402
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths  # noqa: E402

GUEST_TIMEOUT = float(os.environ.get("INFINIVIRT_GUEST_TIMEOUT", "120"))


# -- the guest ------------------------------------------------------------------------------


def wait_ready(serial_log: str):
    return serial_report.wait_for_ready(serial_log, timeout=GUEST_TIMEOUT)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def dd_seconds(sock, dd):
    """Seconds the guest takes to run the ``dd`` arguments ``dd`` (by its own clock)."""
    rc, out = serial_report.channel_command(
        sock, "cat /proc/uptime; dd %s 2>/dev/null; cat /proc/uptime" % dd, timeout=120
    )
    assert rc == 0, out
    start, end = (float(line.split()[0]) for line in out.strip().splitlines()[-2:])
    return end - start


# -- disks ----------------------------------------------------------------------------------


def make_image(path, fmt, size_mb):
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, "%dM" % size_mb], check=True)
    return path


def guest_disks(sock):
    """Ask the guest, over its ttyS1 channel, which disks it sees now."""
    rc, out = serial_report.channel_command(sock, "report disks")
    assert rc == 0, out
    return {d["serial"]: d for d in serial_report.parse_report(out).disks}


def block_graph(vms, name):
    """parent node -> {child role: child node}, and each device's root, from QEMU itself."""
    graph = vms.engine.sessions.qmp(records.load(vms.store, name), "x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    edges = {}
    for edge in graph["edges"]:
        edges.setdefault(names[edge["parent"]], {})[edge["name"]] = names[edge["child"]]
    return edges


# -- networks, firewall, the display --------------------------------------------------------


def links(netns=None):
    argv = ["ip", "-j", "-d"] + (["-n", netns] if netns else []) + ["link", "show"]
    return {
        link["ifname"]: link
        for link in json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    }


def guest_nics(sock):
    rc, out = serial_report.channel_command(sock, "report nics pcinics")
    assert rc == 0, out
    report = serial_report.parse_report(out)
    return report.nics, report.pcinics


def nft_ruleset(netns):
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True
    ).stdout
    return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]


def nft_mentions(netns, text):
    """Whether anything in the namespace's ruleset names ``text`` (a VM's UUID or TAP)."""
    return text.replace("-", "") in json.dumps(nft_ruleset(netns)).replace("-", "")


def vnc_auth_in(netns, port, password):
    """vnc_auth from inside the VM's namespace, where its display listens on 127.0.0.1."""
    return display_client_in(netns, "vnc_client", "vnc_auth", port, password)


def display_client_in(netns, module, function, port, password):
    """``module.function('127.0.0.1', port, password)`` of a display client here (vnc_client,
    spice_client), run inside ``netns``, the password on stdin; what it printed."""
    code = "import sys; sys.path.insert(0, %r); from %s import %s; print(%s('127.0.0.1', %d, sys.stdin.read()))" % (
        os.path.dirname(os.path.abspath(__file__)),
        module,
        function,
        function,
        port,
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- what a run leaves behind ---------------------------------------------------------------


def run_dir_files(workdir: str):
    run = os.path.join(workdir, "run")
    if not os.path.isdir(run):
        return []
    return sorted(f for f in os.listdir(run) if f != "probe-cache.json")


def key_material(run_dir):
    return glob.glob(os.path.join(run_dir, "*.key")) + glob.glob("/dev/shm/infinivirt-key-*")


def assert_db_agrees(service, name):
    """The row and the processes tell the same story; returns the state."""
    rec = records.load(service.store, name)
    everything = qemu_processes(service.engine.run_dir)
    if rec is None:
        assert everything == [], "a QEMU runs for a VM that has no row"
        return "absent"
    pids = qemu_processes(rec.uuid)
    assert everything == pids, "a QEMU of this test runs outside the VM's row"
    assert len(pids) <= 1, "more than one QEMU for one VM: %s" % pids
    if pids:
        assert rec.status in ("running", "paused") and rec.qemu_pid == pids[0]
        return "running"
    assert rec.status == "stopped" and rec.qemu_pid is None
    return "stopped"


# -- playbooks ------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))


def python_without(root, left_out):
    """A venv in ``root`` on the test venv's base interpreter that sees every package of the
    test venv but the site-packages entries ``left_out(name)`` picks; its python's path."""
    root = str(root)
    venv = os.path.join(root, "venv")
    exe = getattr(sys, "_base_executable", None)
    if not exe or os.path.realpath(exe) == os.path.realpath(sys.executable):
        exe = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    subprocess.run([exe, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    links = os.path.join(root, "packages")
    os.mkdir(links)
    source = _site_packages(sys.prefix)
    for entry in sorted(os.listdir(source)):
        if not left_out(entry):
            os.symlink(os.path.join(source, entry), os.path.join(links, entry))
    # addsitedir, not a bare path line: the linked packages' own .pth files are honoured too.
    with open(os.path.join(_site_packages(venv), "infinivirt-test.pth"), "w") as fh:
        fh.write("import site; site.addsitedir(%r)\n" % links)
    return os.path.join(venv, "bin", "python")


def _site_packages(prefix):
    return os.path.join(prefix, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")


def run_playbook(playbook, extra_vars, timeout=900, inventory="localhost,", forks=5, verbosity=0):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    args = [
        os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
        "-i",
        inventory,
        "-c",
        "local",
        "-f",
        str(forks),
        "-e",
        "ansible_python_interpreter=%s" % sys.executable,
    ]
    args += ["-e", json.dumps(extra_vars)] + (["-" + "v" * verbosity] if verbosity else [])
    args.append(os.path.join(HERE, "playbooks", playbook))
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def vm_list(service, name=None):
    """What infinivirt_vm_info lists (vm/info.py), through ``service``'s VM engine."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import VmInfo

    return VmInfo(service.engine).list(name)


def wait_serial(path, pattern, deadline):
    """The first match of ``pattern`` in the serial log, or None at ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
            found = re.search(pattern, fh.read().decode(errors="replace"))
            if found:
                return found
        time.sleep(1)
    return None


def overlay_of(base, path):
    """A throwaway qcow2 overlay at ``path`` of the image ``base`` (the cached cloud guest)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, path], check=True)
    return path


# -- secrets ------------------------------------------------------------------------------


def cmdlines_containing(text):
    hits = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as fh:
                if text.encode() in fh.read():
                    hits.append(path)
        except OSError:
            pass
    return hits


def database_bytes(db_url, work):
    """The whole database as bytes: the SQLite files, or a pg_dump."""
    if db_url.startswith("sqlite"):
        path = db_url[len("sqlite:///") :]
        return b"".join(open(p, "rb").read() for p in glob.glob(path + "*") if os.path.isfile(p))
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    return subprocess.run([pg_dump, db_url], capture_output=True, check=True).stdout


def qemu_event_log(service, vm):
    """QEMU's own event log of a running VM (<uuid>.evlog.out), opened now so that it can be
    read after the stop removes the file."""
    return open(VmPaths.for_vm(service.ctx.run_dir, vm["uuid"]).event_log + ".out", "rb")


def qemu_events(handle):
    """The events (dicts) in a QEMU event log opened with ``qemu_event_log``."""
    events = []
    for line in handle.read().decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and "event" in message:
            events.append(message)
    return events
