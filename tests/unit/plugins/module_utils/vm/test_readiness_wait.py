# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One look of vm/readiness.py's Waiter on real files: a serial log written in pieces (and
replaced), a lease file before and after a start, and the VM entry a wait fills in. (The
waits against real guests: tests/integration/test_wait_for.py and test_cloud_guest.py.)"""

from __future__ import annotations

import types

from ansible_collections.infinivirt.core.plugins.module_utils.vm.guest import DISABLED
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.nics import NicSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.readiness import WaitSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.readiness import (
    LEASES,
    LeaseSource,
    Waiter,
    lease_baseline,
)

MAC = "52:54:00:ab:00:01"


def _rec(tmp_path, **spec):
    spec = VmSpec(name="w", **spec)
    rec = VmRecord(uuid="u-1", name="w", host="h", status="running", spec=spec, running_spec=spec)
    rec.serial_log_path = str(tmp_path / "u-1.serial.log")
    return rec


def _host(tmp_path):
    """What a look reads of the engine: the run directory and the host's name."""
    return types.SimpleNamespace(run_dir=str(tmp_path), host_id="h")


def test_a_serial_line_written_in_pieces(tmp_path):
    rec = _rec(tmp_path)
    log = tmp_path / "u-1.serial.log"
    waiter = Waiter(rec, WaitSpec("serial", 10, r"^web01 login:"), started=True)
    host = _host(tmp_path)
    assert not waiter.poll(host, 0)  # no log yet
    log.write_bytes(b"")
    assert not waiter.poll(host, 0)  # an empty log matches nothing
    log.write_bytes(b"booting\n\x1b[1mweb0")
    assert not waiter.poll(host, 0)
    with open(log, "ab") as fh:
        fh.write(b"1\x1b[0m login: ")  # a prompt: no newline, escapes in the middle
    assert waiter.poll(host, 0)


def test_a_replaced_log_is_read_from_its_start(tmp_path):
    rec = _rec(tmp_path)
    log = tmp_path / "u-1.serial.log"
    log.write_bytes(b"x" * 100 + b"\nold boot\n")
    waiter = Waiter(rec, WaitSpec("serial", 10, "READY"), started=False)
    assert not waiter.poll(_host(tmp_path), 0)
    log.write_bytes(b"READY\n")  # shorter than what was read: a new log
    assert waiter.poll(_host(tmp_path), 0)


def test_only_a_lease_granted_after_the_start_counts(tmp_path):
    leases = tmp_path / "net-n.dnsmasq.leases"
    leases.write_text("1700000000 %s 10.79.0.60 old *\n" % MAC)
    sources = [LeaseSource(MAC, "n", str(leases))]
    baseline = lease_baseline(sources)
    assert baseline == {MAC: "1700000000"}
    rec = _rec(tmp_path, nics=[NicSpec(network="n", mac=MAC)])
    waiter = Waiter(rec, WaitSpec("ip", 10), sources, baseline, started=True)
    host = _host(tmp_path)
    assert not waiter.poll(host, 0)  # the old boot's lease, and no agent to ask
    leases.write_text("1700003600 %s 10.79.0.61 web01 *\n" % MAC)
    assert waiter.poll(host, 0)
    assert (waiter.address, waiter.source) == ("10.79.0.61", LEASES)
    vm = {}
    waiter.fill(host, vm)
    assert vm["ready"] == {"wait_for": "ip", "address": "10.79.0.61", "address_source": "leases", "seconds": 0.0}
    # no agent: guest.ips holds the leased address
    assert vm["guest"]["agent"] == DISABLED and vm["guest"]["ips"] == ["10.79.0.61"]
