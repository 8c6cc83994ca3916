# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Values with a trailing newline are refused (issue 18 item 12): ``re.match`` with ``$``
also matches before a final newline, so "1d6b\\n" passed as a USB id, escaped the duplicate
check and plugged one device twice. Each field is tried through the call its module makes
(``VmService.ensure``, ``SnapshotService.ensure``, ``PciService.ensure``, ...), on a real
store; nothing boots, nothing may be stored."""

from __future__ import annotations

import os

import pytest
from fake_sysfs import FakeKernel, gpu_host
from helpers import vm_list

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.network.service import NetworkService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService
from ansible_collections.infinivirt.core.plugins.module_utils.vm.snapshots import SnapshotService

pytestmark = []  # needs neither QEMU nor PostgreSQL: part of scripts/test.sh --quick

BASE = {"name": "nl", "state": "present", "accel": "tcg", "memory_mb": 64}
USB = {"vendor_id": "1d6b", "product_id": "0002"}

# option values -> the field the error must name
VM_CASES = [
    ({"usb": [dict(USB, vendor_id="1d6b\n")]}, "usb[0].vendor_id"),
    ({"usb": [dict(USB, product_id="0002\n")]}, "usb[0].product_id"),
    ({"usb": [{"bus": 1, "port": "1.2\n"}]}, "usb[0].port"),
    ({"nics": [{"bridge": "br0", "mac": "52:54:00:12:34:56\n"}]}, "nics[0].mac"),
    ({"nics": [{"bridge": "br0\n"}]}, "nics[0].bridge"),
    ({"nics": [{"network": "lan\n"}]}, "nics[0].network"),
    ({"nics": [{"bridge": "br0", "tap": "tap0\n"}]}, "nics[0].tap"),
    ({"cpu_model": "max\n"}, "cpu_model"),
    ({"cpu_flags": ["+x2apic\n"]}, "cpu_flags"),
    ({"netns": "ns1\n"}, "netns"),
    ({"department": "web\n"}, "department"),
    ({"disks": [{"path": "/nonexistent/a.qcow2", "serial": "abc\n"}]}, "disks[0].serial"),
    ({"iothreads": ["io1\n"]}, "iothreads"),
    ({"vcpus": 1, "cpu_pinning": {0: "0\n"}}, "cpu_pinning[0]"),
    ({"emulator_cpus": "0\n"}, "emulator_cpus"),
]


@pytest.fixture
def svc(workdir):
    service = VmService.open("sqlite:///%s/state.db" % workdir, os.path.join(workdir, "run"), lock_timeout=30)
    yield service
    for vm in vm_list(service):
        service.ensure({"name": vm["name"], "state": "absent", "force": True, "stop_timeout": 1}, False)
    service.close()


@pytest.mark.parametrize("extra, field", VM_CASES, ids=[c[1] for c in VM_CASES])
def test_infinivirt_vm_refuses_a_trailing_newline(svc, extra, field):
    with pytest.raises(SpecError) as err:
        svc.ensure(dict(BASE, **extra), check_mode=False)
    assert err.value.field.startswith(field), err.value
    assert records.load_all(svc.store) == []


def test_a_usb_device_named_twice_with_a_newline_is_refused(svc):
    """The reported case: the second entry was another device to the duplicate check."""
    with pytest.raises(SpecError) as err:
        svc.ensure(dict(BASE, usb=[USB, dict(USB, vendor_id="1d6b\n")]), check_mode=False)
    assert err.value.field == "usb[1].vendor_id"
    assert records.load_all(svc.store) == []


def test_infinivirt_snapshot_refuses_a_trailing_newline(svc):
    svc.ensure(BASE, check_mode=False)
    with pytest.raises(SpecError) as err:
        SnapshotService(svc.engine).ensure({"vm": "nl", "name": "before\n", "state": "present"}, False)
    assert err.value.field == "name"


def test_infinivirt_firewall_and_net_refuse_a_trailing_newline(svc):
    with pytest.raises(SpecError) as err:
        svc.firewall.ensure({"scope": "department", "name": "web\n"}, False)
    assert err.value.field == "name"
    with pytest.raises(SpecError) as err:
        NetworkService(svc.store, svc.hostname).ensure({"name": "lan\n", "bridge": "br-lan"}, True)
    assert err.value.field == "name"
    assert svc.store.get_network("lan\n", svc.hostname) is None


@pytest.mark.parametrize("field", ["address", "sriov.mac"])
def test_infinivirt_gpu_refuses_a_trailing_newline(svc, workdir, field):
    """On a fake sysfs tree (no IOMMU or SR-IOV card here)."""
    svc.ensure(BASE, check_mode=False)
    svc.pci.sysfs = FakeKernel(gpu_host(os.path.join(workdir, "root")))
    params = {"vm": "nl", "rom_dir": "/nonexistent-roms", "state": "present"}
    if field == "address":
        params["address"] = "0000:01:00.0\n"
    else:
        params["sriov"] = {"pf": "0000:03:00.0", "vf": 0, "num_vfs": 1, "mac": "52:54:00:12:34:56\n", "vlan": None}
    with pytest.raises(SpecError) as err:
        svc.pci.ensure(params, False)
    assert err.value.field == field
    assert svc.store.list_pci() == []
