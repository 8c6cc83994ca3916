# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure parts of backups (vm/model/backup.py): option checks, the kind of the next
point and why an incremental falls back to full, chains and retention (never an
incremental without its full), the restore chain, point ids, the manifest, and the
parameters of a VM restored from a saved definition."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import backup as m
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.options import vm_argument_spec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import merge_params

DISKS = [{"disk_id": "d1", "format": "qcow2"}]


def point(pid, kind, disks=("d1",)):
    return {
        "id": pid,
        "kind": kind,
        "time": "t",
        "consistency": "crash",
        "disks": [{"disk_id": d, "size": 10} for d in disks],
    }


def manifest(*points, pending=None):
    return dict(m.new_manifest("vm1", "u"), points=list(points), pending=pending)


F1, I1, I2 = (
    point("20261206T000000Z-00", "full"),
    point("20261206T000100Z-00", "incremental"),
    point("20261206T000200Z-00", "incremental"),
)
F2, I3 = point("20261207T000000Z-00", "full"), point("20261207T000100Z-00", "incremental")


@pytest.mark.parametrize(
    "mode,man,disks,bitmaps,expected",
    [
        ("full", manifest(F1), DISKS, {"d1": None}, ("full", None)),
        ("auto", manifest(F1), DISKS, {"d1": None}, ("incremental", None)),
        ("incremental", manifest(F1), DISKS, {"d1": None}, ("incremental", None)),
        ("incremental", manifest(), DISKS, {"d1": None}, ("full", "there is no earlier backup point")),
        ("auto", manifest(), DISKS, {"d1": None}, ("full", None)),
        ("incremental", manifest(F1, pending="X"), DISKS, {"d1": None}, ("full", "backup point X did not finish")),
        (
            "incremental",
            manifest(F1),
            DISKS,
            {"d1": "missing"},
            ("full", "the dirty bitmap is not usable (d1: missing)"),
        ),
        (
            "incremental",
            manifest(F1),
            [{"disk_id": "d1", "format": "raw"}],
            {},
            ("full", "disks d1 are raw (dirty bitmaps need qcow2)"),
        ),
        (
            "incremental",
            manifest(F1),
            DISKS + [{"disk_id": "d2", "format": "qcow2"}],
            {},
            ("full", "the VM's disks changed since point 20261206T000000Z-00"),
        ),
    ],
)
def test_choose_kind(mode, man, disks, bitmaps, expected):
    assert m.choose_kind(mode, man, disks, bitmaps) == expected


def test_chains_retention_and_restore_chain():
    points = [F1, I1, I2, F2, I3]
    assert [[p["id"] for p in c] for c in m.chains(points)] == [[F1["id"], I1["id"], I2["id"]], [F2["id"], I3["id"]]]
    assert m.expired(points, None) == [] and m.expired(points, 2) == []
    assert m.expired(points, 1) == [F1, I1, I2], "a whole chain goes, never an incremental without its full"
    assert m.chain_to(points, I2) == [F1, I1, I2] and m.chain_to(points, F2) == [F2]
    assert m.dependents(points, I1) == [I1, I2] and m.dependents(points, F2) == [F2, I3]
    assert m.public_point(I3, points)["chain"] == [F2["id"], I3["id"]]
    assert m.backing_name(I1, "d1") == "../%s/d1.qcow2" % I1["id"] and m.backing_name(None, "d1") is None


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: m.check_mode_option("diff"), "mode"),
        (lambda: m.check_state("info"), "state"),
        (lambda: m.check_keep(0), "keep"),
        (lambda: m.check_keep(True), "keep"),
        (lambda: m.check_target("rel/dir"), "target"),
        (lambda: m.check_target("/a/../etc"), "target"),
        (lambda: m.check_target("/x", "restore_dir") and m.check_target(None, "restore_dir"), "restore_dir"),
        (lambda: m.check_point("nope", manifest(F1)), "point"),
        (lambda: m.check_point("20301206T000000Z-00", manifest(F1)), "point"),
        (lambda: m.check_point("latest", manifest()), "point"),
        (lambda: m.check_restore_as("a b"), "restore_as"),
        (lambda: m.parse_manifest("{", "/t/m.json"), "target"),
        (lambda: m.parse_manifest('{"version": 9, "points": []}', "/t/m.json"), "target"),
    ],
)
def test_bad_input_names_the_option(call, field):
    with pytest.raises(SpecError) as err:
        call()
    assert err.value.field == field


def test_point_ids_sort_in_order_also_within_a_second():
    first = m.point_id(1765060200.7, [])
    assert first == "20251206T223000Z-00"
    second = m.point_id(1765060200.9, [{"id": first}])
    assert second == "20251206T223000Z-01" and sorted([second, first]) == [first, second]
    assert m.check_point("latest", manifest(F1, I1)) is I1
    assert m.is_point_name(first) and m.is_point_name(first + ".part")
    assert not m.is_point_name("notes.txt") and not m.is_point_name("manifest.json")
    text = m.dump_manifest(manifest(F1))
    assert m.parse_manifest(text, "x") == manifest(F1)


def test_restore_params_make_a_valid_vm_on_the_restored_disks():
    cdrom = {"path": "/iso/x.iso", "media": "cdrom", "readonly": True}
    given = {"name": "web", "accel": "tcg", "memory_mb": 256, "console_socket": True, "nics": [{"bridge": "br0"}]}
    spec = merge_params(dict(given, disks=[{"path": "/old/a.qcow2", "serial": "S1"}, cdrom]), None).to_dict()
    params = m.restore_params(spec, "web2", {"/old/a.qcow2": "/new/web2-d1.qcow2"}, list(vm_argument_spec()))
    assert params["name"] == "web2" and params["state"] == "stopped"
    assert [d["path"] for d in params["disks"]] == ["/new/web2-d1.qcow2", "/iso/x.iso"]
    assert params["disks"][0]["serial"] == "S1" and params["memory_mb"] == 256 and params["console_socket"]
    assert "mac" not in params["nics"][0], "the original VM may still run with its MAC"
    rebuilt = merge_params(params, None)
    assert rebuilt.disks[0].path == "/new/web2-d1.qcow2" and rebuilt.nics[0].bridge == "br0"
