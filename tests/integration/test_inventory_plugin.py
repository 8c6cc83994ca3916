# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The inventory plugin infinivirt.core.infinivirt as users run it: ansible-inventory --list and
--graph in a subprocess, against SQLite and PostgreSQL, with VMs of two hosts made by the VM
service (one running, firmware only), tagged and labelled; its cache; bad input. Also the
metadata itself: a change of tags on a running VM is live, and infinivirt_vm_info's filters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from collection_path import collections_root
from helpers import vm_list, wait_for
from qemu_procs import qemu_processes

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.info import VmInfo
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.qemu, pytest.mark.playbook, pytest.mark.both_backends, pytest.mark.netns]

BASE = {"accel": "tcg", "memory_mb": 32, "stop_timeout": 0.5, "force": True}
# name -> (host, state, options)
VMS = {
    "web1": ("hv-a", "running", {"tags": ["web", "prod"], "labels": {"team": "blue"}, "department": "sales"}),
    "db1": ("hv-a", "stopped", {"tags": ["db"], "labels": {"team": "blue", "ip": "192.0.2.10"}}),
    "web2": ("hv-b", "stopped", {"tags": ["web"], "labels": {"team": "red.ops"}, "department": "sales"}),
}
WEB1_NIC_MAC = "52:54:00:aa:00:01"


def _without_password(url):
    """A PostgreSQL URL without its password (which goes in the environment), and the password."""
    if not url.startswith("postgresql://"):
        return url, None
    parts = urlsplit(url)
    netloc = "%s@%s:%s" % (parts.username, parts.hostname, parts.port)
    return urlunsplit(parts._replace(netloc=netloc)), parts.password


@pytest.fixture
def fleet(db_url):
    """Three VMs on hosts hv-a and hv-b sharing db_url; web1 runs (firmware only, no guest)."""
    dirs = {host: tempfile.mkdtemp(prefix="iv-inv-%s-" % host) for host in ("hv-a", "hv-b")}
    services = {host: VmService.open(db_url, dirs[host], hostname=host) for host in dirs}
    made = {}
    try:
        for name, (host, state, options) in VMS.items():
            made[name] = services[host].ensure(dict(BASE, name=name, state=state, **options), False).vm
        yield {"url": db_url, "vms": made, "services": services}
    finally:
        for name, (host, _state, _options) in VMS.items():
            services[host].ensure(dict(BASE, name=name, state="absent"), False)
        for service in services.values():
            service.close()
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)


def _source(tmp_path, url, name="fleet.infinivirt.yml", **options):
    config = {"plugin": "infinivirt.core.infinivirt", "db_url": url}
    config.update(options)
    path = tmp_path / name
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def _inventory(source, *args, password=None):
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=collections_root(),
        ANSIBLE_INVENTORY_ENABLED="infinivirt.core.infinivirt",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    env.pop("INFINIVIRT_DB_PASSWORD", None)
    if password is not None:
        env["INFINIVIRT_DB_PASSWORD"] = password
    cli = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    return subprocess.run(
        [cli, "-i", source] + list(args), env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _plain(value):
    """ansible-core 2.19 marks strings from a plugin as {"__ansible_unsafe": ...} in --list."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _listing(source, password, *args):
    done = _inventory(source, "--list", *args, password=password)
    assert done.returncode == 0, done.stderr[-3000:]
    data = _plain(json.loads(done.stdout))
    groups = {name: set(body.get("hosts") or ()) for name, body in data.items() if name != "_meta"}
    return groups, data["_meta"]["hostvars"]


def test_list_and_graph_group_and_describe_every_host_s_vms(fleet, tmp_path):
    url, password = _without_password(fleet["url"])
    vms = fleet["vms"]
    # What the agent of web1 reported, as infinivirt_vm/_vm_info record it (vm/info.py): the
    # guest behind it is the SSH proof's; here the store holds the addresses.
    fleet["services"]["hv-a"].engine.store.record_guest_addresses(
        vms["web1"]["uuid"],
        "hv-a",
        [{"name": "eth0", "mac": WEB1_NIC_MAC, "ips": ["10.9.0.7", "fd00::7"]}],
        ["10.9.0.7", "fd00::7"],
    )
    source = _source(
        tmp_path,
        url,
        ansible_host_source=["agent", "label:ip"],
        keyed_groups=[{"key": "infinivirt_labels.team", "prefix": "team"}],
        groups={"small": "infinivirt_memory_mb < 64"},
        compose={"owner_host": "infinivirt_host_id"},
    )
    groups, hostvars = _listing(source, password)
    assert groups["infinivirt_host_hv_a"] == {"web1", "db1"} and groups["infinivirt_host_hv_b"] == {"web2"}
    assert groups["infinivirt_status_running"] == {"web1"}
    assert groups["infinivirt_status_stopped"] == {"db1", "web2"}
    assert groups["infinivirt_tag_web"] == {"web1", "web2"} and groups["infinivirt_tag_db"] == {"db1"}
    assert groups["infinivirt_department_sales"] == {"web1", "web2"}
    assert groups["team_blue"] == {"web1", "db1"} and groups["team_red_ops"] == {"web2"}  # keyed_groups
    assert groups["small"] == {"web1", "db1", "web2"}  # groups
    web1, db1, web2 = hostvars["web1"], hostvars["db1"], hostvars["web2"]
    assert web1["infinivirt_uuid"] == vms["web1"]["uuid"] and web1["infinivirt_host_id"] == "hv-a"
    assert (web1["infinivirt_status"], web1["infinivirt_vcpus"], web1["infinivirt_memory_mb"]) == ("running", 1, 32)
    assert web1["infinivirt_tags"] == ["web", "prod"] and web1["infinivirt_labels"] == {"team": "blue"}
    assert web1["infinivirt_ips"] == ["10.9.0.7", "fd00::7"] and web1["ansible_host"] == "10.9.0.7"
    assert web1["owner_host"] == "hv-a"  # compose
    assert db1["ansible_host"] == "192.0.2.10", "no agent address: the label is next"
    assert "ansible_host" not in web2 and web2["infinivirt_status"] == "stopped"
    assert "password" not in json.dumps(hostvars).lower()
    graph = _inventory(source, "--graph", password=password)
    assert graph.returncode == 0, graph.stderr[-3000:]
    assert "@infinivirt_host_hv_b:\n  |  |--web2" in graph.stdout
    assert "@team_blue:" in graph.stdout and "|--db1" in graph.stdout
    # host_ids and include_stopped narrow the list.
    only_b = _source(tmp_path, url, name="b.infinivirt.yml", host_ids=["hv-b"])
    assert set(_listing(only_b, password)[1]) == {"web2"}
    running = _source(tmp_path, url, name="run.infinivirt.yaml", include_stopped=False)
    assert set(_listing(running, password)[1]) == {"web1"}


def test_a_second_run_answers_from_the_cache_without_the_database(fleet, tmp_path):
    url, password = _without_password(fleet["url"])
    cache_dir = tmp_path / "cache"
    source = _source(
        tmp_path, url, cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(cache_dir)
    )
    first = _listing(source, password)
    assert set(first[1]) == {"web1", "db1", "web2"} and os.listdir(cache_dir)
    cached = json.dumps(json.loads((cache_dir / os.listdir(cache_dir)[0]).read_text()))
    if password:
        assert password not in cached, "the cache holds no password"
    # The database can no longer be read: the SQLite file is moved away, PostgreSQL refuses
    # the password. A query would fail (--flush-cache proves it); the cache still answers.
    if password is None:
        path = url[len("sqlite:///") :]
        os.rename(path, path + ".away")
    wrong = "wrong-%s" % password if password else None
    assert _listing(source, wrong) == first
    flushed = _inventory(source, "--list", "--flush-cache", password=wrong)
    assert flushed.returncode != 0 and "Traceback" not in flushed.stderr
    if password is None:
        os.rename(path + ".away", path)


def test_bad_input_is_a_clear_error_naming_the_option(fleet, tmp_path):
    url, password = _without_password(fleet["url"])
    cases = [
        (_source(tmp_path, url, name="typo.infinivirt.yml", host_id=["hv-a"]), password, "unknown option host_id"),
        (
            _source(tmp_path, url, name="src.infinivirt.yml", ansible_host_source=["dhcp"]),
            password,
            "ansible_host_source[0]",
        ),
        (_source(tmp_path, url, name="cidr.infinivirt.yml", preferred_cidr="10.0.0/33"), password, "preferred_cidr"),
        (_source(tmp_path, "/nowhere/state.db", name="miss.infinivirt.yml"), None, "db_url: no Infinivirt database"),
        (
            _source(tmp_path, str(tmp_path / "empty.db"), name="empty.infinivirt.yml"),
            None,
            "is not an Infinivirt database",
        ),
    ]
    (tmp_path / "empty.db").write_bytes(b"")
    if password:
        closed = url.replace(":%s/" % urlsplit(url).port, ":1/")
        cases.append(
            (_source(tmp_path, closed, name="down.infinivirt.yml"), password, "cannot connect to the PostgreSQL")
        )
        cases.append(
            (_source(tmp_path, url, name="pw.infinivirt.yml"), "Not-The-Pw-4711", "password authentication failed")
        )
    for source, secret, phrase in cases:
        done = _inventory(source, "--list", password=secret)
        out = done.stdout + done.stderr
        assert done.returncode != 0 and phrase in out, (phrase, out[-2000:])
        assert "Traceback" not in out
        if secret:
            assert secret not in out, "no password in any message"


def test_tags_change_live_and_info_filters_by_metadata(fleet):
    a = fleet["services"]["hv-a"]
    before = fleet["vms"]["web1"]
    changed = a.ensure(dict(BASE, name="web1", state="running", tags=["web"], labels={"team": "green"}), False)
    assert changed.changed and changed.vm["pid"] == before["pid"] and changed.vm["pending_restart"] == []
    assert qemu_processes(before["uuid"]) == [before["pid"]], "no restart"
    assert changed.vm["tags"] == ["web"] and changed.vm["labels"] == {"team": "green"}
    assert not a.ensure(dict(BASE, name="web1", state="running"), False).changed, "unset keeps them"
    info = VmInfo(a.engine)

    def names(**filters):
        return sorted(vm["name"] for vm in info.list(None, filters))

    assert names(tags=["web"]) == ["web1", "web2"]
    assert names(tags=["web", "prod"]) == []
    assert names(labels={"team": "blue"}) == ["db1"]
    assert names(hosts=["hv-b"]) == ["web2"]
    assert names(status=["running"]) == ["web1"]
    assert names(tags=["web"], status=["stopped"], hosts=["hv-b"]) == ["web2"]
    with pytest.raises(SpecError) as err:
        info.list(None, {"tags": ["ok", "not ok"]})
    assert err.value.field == "tags[1]"
    cleared = a.ensure(dict(BASE, name="web1", state="running", tags=[], labels={}), False).vm
    assert cleared["tags"] == [] and cleared["labels"] == {} and vm_list(a, "web1")[0]["pid"] == before["pid"]


def _leased(path, mac):
    """The address dnsmasq's lease file gives ``mac``, or None."""
    try:
        with open(path) as fh:
            found = [line.split()[2] for line in fh if line.split()[1:2] == [mac]]
    except FileNotFoundError:
        return None
    return found[0] if found else None


def test_a_nat_lease_of_the_vm_becomes_its_ansible_host(workdir, tmp_path):
    """The leases source, for real and without a guest: a firmware-only VM on an
    infinivirt_net NAT network PXE-boots (SeaBIOS, iPXE), so its NIC asks the network's dnsmasq
    for a lease. The plugin finds the lease file through the network's journal."""
    netns = "ivi-%s" % uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", netns], check=True)
    url = "sqlite:///%s/state.db" % workdir
    run_dir = os.path.join(workdir, "run")  # short: the QMP socket path must fit a UNIX socket
    svc = VmService.open(url, run_dir, hostname="hv-nat")
    nets = NetworkService(svc.ctx.store, "hv-nat", netns, run_dir=run_dir)
    mac = "52:54:00:aa:00:99"
    params = dict(BASE, name="pxe1", netns=netns, nics=[{"network": "invnat", "mac": mac}], tags=["pxe"])
    try:
        nets.ensure({"name": "invnat", "mode": "nat", "addresses": ["10.79.0.1/24"]}, False)
        svc.ensure(dict(params, state="running"), False)
        leases = os.path.join(run_dir, "net-invnat.dnsmasq.leases")
        assert wait_for(lambda: _leased(leases, mac), timeout=180), "iPXE never asked for a lease"
        address = _leased(leases, mac)
        assert address.startswith("10.79.0.")
        source = _source(tmp_path, url, ansible_host_source=["agent", "leases"], preferred_network="invnat")
        groups, hostvars = _listing(source, None)
        assert groups["infinivirt_tag_pxe"] == {"pxe1"}
        assert hostvars["pxe1"]["ansible_host"] == address, "no agent address: the lease is next"
        nic = hostvars["pxe1"]["infinivirt_nics"][0]
        assert (nic["mac"], nic["network"], nic["lease_ips"]) == (mac, "invnat", [address])
        assert hostvars["pxe1"]["infinivirt_ips"] == [address]
    finally:
        svc.ensure(dict(params, state="absent"), False)
        nets.ensure({"name": "invnat", "state": "absent"}, False)
        svc.close()
        subprocess.run(["ip", "netns", "del", netns], check=True)
