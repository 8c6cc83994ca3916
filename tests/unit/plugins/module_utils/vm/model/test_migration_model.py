# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The migration model (vm/model/migration.py): options, QMP settings, the handover's moves."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import migration as m


def test_defaults_and_qmp_settings():
    req = m.validate_request({"name": "web", "to": "hv-b"}, "hv-a")
    assert (req.max_downtime_ms, req.bandwidth_mbit, req.storage, req.timeout) == (300, None, "auto", 600)
    assert m.parameters(req) == {"downtime-limit": 300, "max-bandwidth": 128 * 1024 * 1024}, "QEMU's own, set back"
    fast = m.validate_request({"name": "web", "to": "hv-b", "bandwidth_mbit": 80, "auto_converge": True}, "hv-a")
    assert m.parameters(fast) == {"downtime-limit": 300, "max-bandwidth": 10_000_000}, "80 Mbit/s in bytes/s"
    caps = {c["capability"]: c["state"] for c in m.capabilities(fast)}
    assert caps == {"auto-converge": True, "postcopy-ram": False, "events": True}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"to": "hv-a"}, "to"),  # this host
        ({"to": ""}, "to"),
        ({"to": "hv\nb"}, "to"),
        ({"to": "hv-b", "max_downtime_ms": 0}, "max_downtime_ms"),
        ({"to": "hv-b", "bandwidth_mbit": "fast"}, "bandwidth_mbit"),
        ({"to": "hv-b", "storage": "nfs"}, "storage"),
        ({"to": "hv-b", "timeout": 0}, "timeout"),
    ],
)
def test_bad_options_name_the_option(params, field):
    with pytest.raises(SpecError) as err:
        m.validate_request(dict(params, name="web"), "hv-a")
    assert err.value.field == field


def test_only_the_right_side_moves_each_step():
    assert m.may_move(m.REQUESTED, m.LISTENING, m.TARGET) and not m.may_move(m.REQUESTED, m.LISTENING, m.SOURCE)
    assert m.may_move(m.LISTENING, m.SENT, m.SOURCE) and m.may_move(m.SENT, m.TAKING, m.TARGET)
    assert m.may_move(m.LISTENING, m.TAKING, m.TARGET), "its QEMU has the stream: no wait for sent"
    assert m.may_move(m.TAKING, m.DONE, m.TARGET) and not m.may_move(m.SENT, m.DONE, m.TARGET)
    assert m.may_move(m.SENT, m.ABORTED, m.SOURCE), "not taken in time: the source takes the guest back"
    assert not m.may_move(m.TAKING, m.ABORTED, m.SOURCE), "the guest may run on the target: never both"
    assert not m.may_move(m.DONE, m.ABORTED, m.SOURCE), "a finished handover is never undone"
    assert not m.may_move(m.SENT, m.REFUSED, m.TARGET), "past sent: the target takes it or the source aborts"


def test_the_outcome_reads_query_migrate():
    reply = {"status": "completed", "downtime": 42, "total-time": 1500, "ram": {"transferred": 123456}}
    assert m.outcome(reply) == {"transferred_bytes": 123456, "downtime_ms": 42, "total_time_ms": 1500}


def test_storage_copy_is_an_option_and_the_source_fills_in_the_disks():
    req = m.validate_request({"name": "web", "to": "hv-b", "storage": "copy", "postcopy": True}, "hv-a")
    assert (req.storage, req.postcopy, req.marker, req.disks) == ("copy", True, None, ()), "both at once"
    assert m.MigrationRequest(**req.to_dict()) == req, "the target rebuilds it from the stored options"


def test_postcopy_switches_after_the_first_pass():
    assert not m.postcopy_due({"status": "active", "ram": {"dirty-sync-count": 1}}), "still the first pass"
    assert m.postcopy_due({"status": "active", "ram": {"dirty-sync-count": 2}}), "the first pass is done"
    assert not m.postcopy_due({"status": "setup"}) and not m.postcopy_due({"status": "completed"})
    assert not m.postcopy_due({"status": "postcopy-active", "ram": {"dirty-sync-count": 5}}), "once"
