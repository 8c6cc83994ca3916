# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure parts of disks cloned from a template (vm/model/clones.py): the options checked
through the VM's own validation, the origin kept for disks the VM has, which disks a task
makes, and infinivirt_disk's errors renamed to the VM's options."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.clones import (
    disk_field,
    disk_params,
    new_clones,
    settle_origins,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    VmSpec,
    changed_fields,
    merge_params,
    validate,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import CLONE_MODES

T = "/srv/vm/templates/debian.qcow2"


def spec_of(*disks):
    return validate(merge_params({"name": "c1", "memory_mb": 64, "disks": list(disks)}, None))


@pytest.mark.parametrize(
    "disk, field, phrase",
    [
        ({"path": "/v/a.qcow2", "clone_mode": "full"}, "disks[0].clone_mode", "needs clone_from"),
        ({"path": "/v/a.qcow2", "size": "20G"}, "disks[0].size", "needs clone_from"),
        ({"path": "/v/a.qcow2", "clone_from": "templates/t.qcow2"}, "disks[0].clone_from", "absolute path"),
        ({"path": "/v/a.qcow2", "clone_from": T, "clone_mode": "deep"}, "disks[0].clone_mode", "linked, full"),
        ({"path": "/v/a.qcow2", "clone_from": T, "size": "20X"}, "disks[0].size", ""),
        ({"path": "/v/a.qcow2", "clone_from": T, "size": "1000"}, "disks[0].size", "multiple of 512"),
        ({"path": "/v/a.qcow2", "clone_from": "/v/a.qcow2"}, "disks[0].clone_from", "another file than path"),
        (
            {"path": "/v/a.iso", "clone_from": T, "media": "cdrom", "bus": "sata", "clone_mode": "full"},
            "disks[0].clone_from",
            "hard disks",
        ),
        ({"path": "/v/a.img", "format": "raw", "clone_from": T}, "disks[0].clone_mode", "linked needs format qcow2"),
    ],
)
def test_bad_clone_options_name_the_disk_option(disk, field, phrase):
    with pytest.raises(SpecError) as caught:
        spec_of(disk)
    assert caught.value.field == field, caught.value
    assert phrase in caught.value.reason


def test_a_linked_clone_of_a_writable_disk_of_the_same_vm_is_refused():
    with pytest.raises(SpecError) as caught:
        spec_of({"path": T}, {"path": "/v/b.qcow2", "clone_from": T})
    assert caught.value.field == "disks[1].clone_from" and "writable disk of this VM" in caught.value.reason
    # read-only there, or a full copy: accepted
    spec_of({"path": T, "readonly": True}, {"path": "/v/b.qcow2", "clone_from": T})
    spec_of({"path": T}, {"path": "/v/b.qcow2", "clone_from": T, "clone_mode": "full"})


def test_good_clone_options_are_kept_in_the_disk():
    spec = spec_of(
        {"path": "/v/root.qcow2", "clone_from": T, "size": "20G"},
        {"path": "/v/data.img", "format": "raw", "clone_from": T, "clone_mode": "full"},
        {"path": "/v/plain.qcow2"},
    )
    root, data, plain = spec.disks
    assert (root.clone_from, root.clone_mode, root.size) == (T, None, "20G")  # the mode is filled by the service
    assert data.clone_mode == "full"
    stored = spec.to_dict()["disks"]
    assert stored[0]["clone_from"] == T and stored[0]["size"] == "20G"
    assert "clone_from" not in stored[2] and "size" not in stored[2]  # a plain disk stores what it did
    assert VmSpec.from_dict(spec.to_dict()) == spec


def test_a_disk_stored_before_the_clone_options_is_no_change():
    """A disk row written before these options existed reads back equal (no update, no restart)."""
    old = {"path": "/v/a.qcow2", "format": "qcow2", "bus": "virtio", "cache": "writeback", "aio": "threads"}
    before = VmSpec.from_dict({"name": "c1", "disks": [old]})
    after = merge_params({"name": "c1", "disks": [{"path": "/v/a.qcow2"}]}, before)
    assert "disks" not in changed_fields(before, after)


def disk(path, **origin):
    return DiskSpec(path=path, **origin)


def test_new_disks_get_the_default_mode_and_known_disks_keep_their_origin():
    stored = (disk("/v/a.qcow2", clone_from=T, clone_mode="linked", size="20G"), disk("/v/b.qcow2"))
    asked = (
        disk("/v/a.qcow2"),  # clone options left out: the recorded ones stay
        disk("/v/b.qcow2"),
        disk("/v/c.qcow2", clone_from=T),
    )
    disks, warnings = settle_origins(stored, asked, "c1")
    assert disks[0] == stored[0] and disks[1] == stored[1]
    assert disks[2].clone_mode == "linked" and disks[2].clone_from == T
    assert warnings == []
    assert settle_origins(None, (disk("/v/c.qcow2", clone_from=T, clone_mode="full"),), "c1")[0][0].clone_mode == "full"


@pytest.mark.parametrize(
    "asked, warned",
    [
        (dict(clone_from=T, clone_mode="linked", size="20G"), False),
        (dict(clone_from=T, size="20480M"), False),  # the same size, the default mode
        (dict(clone_from=T), False),  # no size asked: nothing to compare
        (dict(clone_from="/srv/vm/templates/debian-13.qcow2"), True),
        (dict(clone_from=T, clone_mode="full"), True),
        (dict(clone_from=T, size="40G"), True),
    ],
)
def test_another_origin_for_an_existing_disk_is_ignored_with_a_warning(asked, warned):
    stored = (disk("/v/a.qcow2", clone_from=T, clone_mode="linked", size="20G"),)
    disks, warnings = settle_origins(stored, (disk("/v/a.qcow2", **asked),), "c1")
    assert disks == stored  # never a change of the VM, so never a restart
    assert bool(warnings) == warned
    if warned:
        assert "disks[0] (/v/a.qcow2) exists" in warnings[0] and "added with clone_from %s" % T in warnings[0]


def test_clone_from_added_to_a_disk_the_vm_has_warns():
    disks, warnings = settle_origins((disk("/v/a.qcow2"),), (disk("/v/a.qcow2", clone_from=T),), "c1")
    assert disks[0].clone_from is None and len(warnings) == 1


def test_which_disks_a_task_makes():
    desired = (disk("/v/a.qcow2", clone_from=T), disk("/v/b.qcow2"), disk("/v/c.qcow2", clone_from=T))
    assert [i for i, _d in new_clones(None, desired)] == [0, 2]
    assert [i for i, _d in new_clones((disk("/v/a.qcow2"),), desired)] == [2]  # a disk the VM has is never made
    assert new_clones(desired, desired) == []


def test_infinivirt_disk_params_and_errors():
    d = disk("/v/a.img", format="raw", clone_from=T, clone_mode="full", size="20G")
    assert disk_params(d) == {
        "path": "/v/a.img",
        "state": "present",
        "format": "raw",
        "clone_from": T,
        "clone_mode": "full",
        "size": "20G",
    }
    assert disk_params(disk("/v/a.qcow2", clone_from=T))["clone_mode"] == "linked"
    for field, named in [
        ("clone_from", "clone_from"),
        ("size", "size"),
        ("path", "path"),
        ("backing_file", "clone_from"),
    ]:
        renamed = disk_field(3, SpecError(field, "why"))
        assert renamed.field == "disks[3].%s" % named and renamed.reason == "why"


def test_the_option_choices_are_infinivirt_disks():
    assert vm_argument_spec()["disks"]["options"]["clone_mode"]["choices"] == list(CLONE_MODES)
