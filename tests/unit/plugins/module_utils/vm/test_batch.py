# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_vms before any VM is touched: defaults merged into entries, each entry checked by
Ansible's validator on infinivirt_vm's own spec, names checked up front, ``parallel``."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.ansible_binding import validate_options
from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.batch import (
    Entry,
    check_exclusive,
    check_parallel,
    merge_defaults,
    prepare,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec

# Imports Ansible (validate_options): tests/integration/test_cores.py runs it under every core.
pytestmark = pytest.mark.ansible_core

SPEC = vm_argument_spec()


def check(entry, path):
    return validate_options(SPEC, entry, path)


def test_entry_wins_dicts_merge_lists_replace_null_is_unset():
    defaults = {
        "memory_mb": 64,
        "graphics": {"type": "vnc", "listen": "127.0.0.1"},
        "disks": [{"path": "/a"}, {"path": "/b"}],
        "vcpus": 2,
    }
    entry = {"name": "x", "memory_mb": 128, "graphics": {"password": "pw", "listen": "::1"}, "disks": [], "vcpus": None}
    assert merge_defaults(defaults, entry) == {
        "name": "x",
        "memory_mb": 128,
        "graphics": {"type": "vnc", "listen": "::1", "password": "pw"},
        "disks": [],
        "vcpus": 2,
    }
    assert defaults["graphics"] == {"type": "vnc", "listen": "127.0.0.1"}  # not modified


def test_entries_are_checked_like_infinivirt_vm():
    prepared = prepare(
        [
            {"name": "a", "memory_mb": "256", "disks": [{"path": "/i/a.qcow2", "bus": "scsi"}]},
            {"name": "b", "vcpus": "many"},
            {"name": "c", "disks": [{"path": "/i/c"}, {"path": "/i/d", "format": "vmdk"}]},
            {"name": "d", "nics": [{"bridge": "br0", "model": "ne2k"}], "colour": "red"},
            {"name": "e", "graphics": {"type": "rdp"}},
            {"name": "f", "disks": [{"format": "raw"}]},
        ],
        {"state": "running"},
        check,
    )
    assert prepared.problems == []
    a, b, c, d, e, f = prepared.entries
    assert a.error is None
    assert a.params["memory_mb"] == 256 and a.params["state"] == "running" and a.params["stop_timeout"] == 60.0
    assert a.params["disks"][0]["bus"] == "scsi" and a.params["disks"][0]["format"] is None
    assert a.params["graphics"] is None and a.params["force"] is False
    # ansible-core 2.15 to 2.17 write the type as "<class 'str'>", later ones as "str".
    assert b.error.startswith("vms[1]: argument 'vcpus' is of type ") and "to int" in b.error
    assert c.error == "vms[2].disks[1]: value of format must be one of: qcow2, raw, got: vmdk"
    assert d.error.startswith("vms[3]: unsupported parameters: colour.")
    assert "vms[3].nics[0]: value of model must be one of: virtio-net-pci, e1000, e1000e, rtl8139, got: ne2k" in d.error
    assert e.error == "vms[4].graphics: value of type must be one of: none, vnc, spice, got: rdp"
    assert f.error == "vms[5].disks[0]: missing required arguments: path"
    assert [x.where for x in prepared.entries] == ["vms[%d]" % i for i in range(6)]


def test_display_passwords_are_hidden_from_entries_and_defaults():
    prepared = prepare(
        [{"name": "a", "graphics": {"password": "entry-pw"}}, {"name": "b"}],
        {"graphics": {"type": "vnc", "password": "default-pw"}},
        check,
    )
    assert prepared.secrets == {"entry-pw", "default-pw"}


@pytest.mark.parametrize(
    "vms, defaults, problem",
    [
        ([{"name": "a"}, {"name": "b"}, {"name": "a"}], {}, "vms[2].name: a is also the name of vms[0]"),
        ([{"name": "a"}, {"memory_mb": 64}], {}, "vms[1].name: is required and must be a non-empty string"),
        ([{"name": "bad name"}], {}, "vms[0].name: 'bad name' may only contain"),
        ([{"name": "a"}], {"name": "x"}, "defaults.name: each entry of vms names its VM"),
        ([{"name": "a"}], {"memory_mb": "lots"}, "defaults: argument 'memory_mb' is of type "),
        ([{"name": "a"}], {"state": "gone"}, "defaults: value of state must be one of"),
    ],
)
def test_names_and_defaults_stop_the_task(vms, defaults, problem):
    prepared = prepare(vms, defaults, check)
    assert len(prepared.problems) == 1 and prepared.problems[0].startswith(problem), prepared.problems


def test_stop_params_for_unlisted_vms_come_from_defaults():
    assert prepare([], {}, check).stop_params == {"stop_timeout": 60.0, "force": False, "shutdown_mode": "acpi"}
    assert prepare([], {"force": "yes", "stop_timeout": 3, "shutdown_mode": "agent"}, check).stop_params == {
        "stop_timeout": 3.0,
        "force": True,
        "shutdown_mode": "agent",
    }


@pytest.mark.parametrize("bad", [0, -1, True, "2"])
def test_parallel_must_be_positive(bad):
    with pytest.raises(SpecError) as err:
        check_parallel(bad)
    assert err.value.field == "parallel"


def test_parallel_defaults_to_the_cpu_count():
    import os

    assert check_parallel(None) == (os.cpu_count() or 1)
    assert check_parallel(1) == 1


@pytest.mark.parametrize("state, verb", [("absent", "remove"), ("stopped", "stop")])
def test_exclusive_with_no_entry_is_refused_unless_allowed(state, verb):
    """vms: "{{ undefined | default([]) }}" with exclusive must not wipe the host (issue 18)."""
    with pytest.raises(SpecError) as err:
        check_exclusive([], state, False, "hv-a")
    assert err.value.field == "vms"
    assert "would %s every VM of host hv-a" % verb in err.value.reason
    assert "allow_empty: true" in err.value.reason and "nothing was done" in err.value.reason
    check_exclusive([], state, True, "hv-a")  # said explicitly
    check_exclusive([Entry("vms[0]", "keep", {"name": "keep"})], state, False, "hv-a")  # VMs listed


def test_an_empty_list_without_exclusive_is_fine():
    check_exclusive([], None, False, "hv-a")
