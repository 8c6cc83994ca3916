# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_disk's decision on an existing volume through a table, without qemu-img: rows of
(situation, desired) -> expected plan or refusal."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.volume.plan import (
    VolumeState,
    Wanted,
    plan_update,
)

PATH = "/srv/vols/a.qcow2"
G = 1 << 30


def state(fmt="qcow2", size=G, encrypted=False, backing=None, backing_format=None):
    driver = "luks" if encrypted and fmt == "raw" else fmt
    return VolumeState(fmt, driver, size, 4096, encrypted, backing, backing_format, {"format": driver})


def wanted(**kw):
    base = dict(
        format=None, size=None, backing_file=None, backing_format=None, preallocation=None,
        encrypt=None, convert=False, force=False,
    )  # fmt: skip
    base.update(kw)
    return Wanted(**base)


QCOW = state()
RAW = state("raw")
CLONE = state(backing="/srv/vols/base.qcow2", backing_format="qcow2")
LUKS = state("raw", encrypted=True)
VMDK = state("vmdk")

# (id, situation: (current, managed, same_backing, users), desired, expected (actions, format, size, backing, warnings))
ROWS = [
    ("no-op", (QCOW, True, False, ()), wanted(), ([], "qcow2", G, None, 0)),
    ("same size and format", (QCOW, True, False, ()), wanted(format="qcow2", size=G), ([], "qcow2", G, None, 0)),
    ("same backing file", (CLONE, True, True, ()), wanted(backing_file="/srv/vols/base.qcow2"),
     ([], "qcow2", G, "/srv/vols/base.qcow2", 0)),
    ("adopt", (QCOW, False, False, ()), wanted(), (["adopt"], "qcow2", G, None, 0)),
    ("grow", (QCOW, True, False, ()), wanted(size=2 * G), (["grow"], "qcow2", 2 * G, None, 0)),
    ("grow encrypted", (LUKS, True, False, ()), wanted(size=2 * G), (["grow"], "raw", 2 * G, None, 0)),
    ("shrink forced", (QCOW, True, False, ()), wanted(size=G // 2, force=True), (["shrink"], "qcow2", G // 2, None, 1)),
    ("convert", (QCOW, True, False, ()), wanted(format="raw", convert=True), (["convert"], "raw", G, None, 0)),
    ("convert a clone", (CLONE, True, False, ()), wanted(format="raw", convert=True), (["convert"], "raw", G, None, 1)),
    ("adopt, convert, grow", (VMDK, False, False, ()), wanted(format="qcow2", convert=True, size=2 * G),
     (["adopt", "convert", "grow"], "qcow2", 2 * G, None, 0)),
]  # fmt: skip

# (id, situation, desired, error type, field, words of the message)
REFUSALS = [
    ("unknown key", (LUKS, False, False, ()), wanted(), SpecError, "path", "did not create"),
    ("encrypt on", (QCOW, True, False, ()), wanted(encrypt=True), SpecError, "encrypt", "is not encrypted"),
    ("encrypt off", (LUKS, True, False, ()), wanted(encrypt=False), SpecError, "encrypt", "is encrypted"),
    ("new backing", (QCOW, True, False, ()), wanted(backing_file="/srv/vols/b"), SpecError, "backing_file",
     "has no backing file"),
    ("other backing", (CLONE, True, False, ()), wanted(backing_file="/srv/vols/b"), SpecError, "backing_file",
     "has backing file /srv/vols/base.qcow2"),
    ("backing format", (CLONE, True, True, ()), wanted(backing_file="/srv/vols/base.qcow2", backing_format="raw"),
     SpecError, "backing_format", "is qcow2"),
    ("foreign format", (VMDK, False, False, ()), wanted(), SpecError, "format", "is a vmdk image"),
    ("metadata on raw", (RAW, True, False, ()), wanted(preallocation="metadata", size=2 * G), SpecError,
     "preallocation", "needs format qcow2"),
    ("convert not asked", (QCOW, True, False, ()), wanted(format="raw"), SpecError, "format", "needs convert: true"),
    ("raw keeps backing", (CLONE, True, True, ()), wanted(format="raw", convert=True,
     backing_file="/srv/vols/base.qcow2"), SpecError, "backing_file", "a raw volume has no backing file"),
    ("convert in use", (QCOW, True, False, ("web", "db")), wanted(format="raw", convert=True), StateError, None,
     "VM web, db lists it"),
    ("shrink not forced", (QCOW, True, False, ()), wanted(size=G // 2), SpecError, "size", "set force: true"),
]  # fmt: skip


@pytest.mark.parametrize("situation, desired, expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_plan_update(situation, desired, expected):
    current, managed, same_backing, users = situation
    plan = plan_update(PATH, desired, current, managed, same_backing, users)
    actions, fmt, size, backing, warnings = expected
    assert (plan.actions, plan.format, plan.size, plan.backing_file) == (actions, fmt, size, backing)
    assert plan.encrypted == current.encrypted
    assert len(plan.warnings) == warnings


@pytest.mark.parametrize(
    "situation, desired, error, field, words", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_plan_update_refusals(situation, desired, error, field, words):
    current, managed, same_backing, users = situation
    with pytest.raises(error) as caught:
        plan_update(PATH, desired, current, managed, same_backing, users)
    assert words in str(caught.value)
    if field is not None:
        assert caught.value.field == field


def test_plan_update_leaves_its_inputs_alone():
    current = dataclasses.replace(CLONE)
    plan_update(PATH, wanted(format="raw", convert=True, size=2 * G), current, True, False)
    assert current == CLONE
