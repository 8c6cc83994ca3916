# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Golden tests for the argv builder: tests/.../golden/<case>.yml -> <case>.argv.

Regenerate after an intended change with INFINIVIRT_REGOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv, opt_value
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import PciPassthrough
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, merge_params, validate

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yml"))


def load_case(case):
    data = yaml.safe_load((GOLDEN / ("%s.yml" % case)).read_text())
    # A case gives a spec as stored, or a task's params (presets are resolved by merge_params).
    spec = VmSpec.from_dict(data["spec"]) if "spec" in data else validate(merge_params(data["params"], None))
    context = dict(data["context"])
    context["host_devices"] = tuple(
        PciPassthrough(**dict(d, functions=tuple(d["functions"]))) for d in context.get("host_devices", ())
    )
    ctx = LaunchContext(**context)
    return spec, ctx


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    spec, ctx = load_case(case)
    got = "\n".join(build_argv(spec, ctx)) + "\n"
    expected_file = GOLDEN / ("%s.argv" % case)
    if os.environ.get("INFINIVIRT_REGOLDEN"):
        expected_file.write_text(got)
    assert got == expected_file.read_text()


def test_there_are_golden_cases():
    assert len(CASES) >= 3


def test_builder_is_pure():
    spec, ctx = load_case(CASES[0])
    assert build_argv(spec, ctx) == build_argv(spec, ctx)


def test_commas_are_doubled():
    assert opt_value("run_dir", "/a,b/c") == "/a,,b/c"
    assert opt_value("run_dir", "/a,,b") == "/a,,,,b"


def test_control_characters_are_refused():
    with pytest.raises(SpecError) as err:
        opt_value("run_dir", "/a\nb")
    assert err.value.field == "run_dir"


def test_a_comma_in_run_dir_cannot_add_an_option():
    ctx = LaunchContext(
        binary="qemu",
        uuid="u",
        accel="tcg",
        cpu="max",
        pidfile="/r,x/u.pid",
        qmp_socket="/r,server=off,x/u.qmp",
        serial_log="/r,x/u.log",
    )
    argv = build_argv(VmSpec(name="vm"), ctx)
    chardev = argv[argv.index("-chardev") + 1]
    assert chardev == "socket,id=qmp,path=/r,,server=off,,x/u.qmp,server=on,wait=off"


def test_user_strings_stay_single_arguments(tmp_path):
    spec = VmSpec(name="vm", kernel="/k,x=y", kernel_cmdline="a -device b")
    argv = build_argv(spec, LaunchContext("qemu", "u", "tcg", "max", "/p", "/q", "/s"))
    assert argv[argv.index("-kernel") + 1] == "/k,x=y"
    assert argv[argv.index("-append") + 1] == "a -device b"
    plain = build_argv(VmSpec(name="vm", kernel="/k"), LaunchContext("qemu", "u", "tcg", "max", "/p", "/q", "/s"))
    assert argv.count("-device") == plain.count("-device")
