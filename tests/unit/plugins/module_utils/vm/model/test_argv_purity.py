# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""build_argv is pure: with every file, process and socket entry point rigged to raise, it
still builds each golden case's command line, the same list twice, and leaves its inputs alone."""

from __future__ import annotations

import builtins
import copy
import os
import os.path
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import LaunchContext, build_argv
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.hostdevs import PciPassthrough
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, merge_params, validate

# The golden cases of test_argv.py (loaded the same way, before the host is rigged).
GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yml"))


def load_case(case):
    data = yaml.safe_load((GOLDEN / ("%s.yml" % case)).read_text())
    spec = VmSpec.from_dict(data["spec"]) if "spec" in data else validate(merge_params(data["params"], None))
    context = dict(data["context"])
    context["host_devices"] = tuple(
        PciPassthrough(**dict(d, functions=tuple(d["functions"]))) for d in context.get("host_devices", ())
    )
    return spec, LaunchContext(**context)


# (object, attribute) pairs that touch the host or are not deterministic.
HOST_ENTRY_POINTS = [
    (builtins, "open"),
    (os, "open"),
    (os, "stat"),
    (os, "lstat"),
    (os, "access"),
    (os, "listdir"),
    (os, "scandir"),
    (os, "cpu_count"),
    (os, "getpid"),
    (os, "urandom"),
    (os.path, "exists"),
    (os.path, "isfile"),
    (os.path, "isdir"),
    (os.path, "realpath"),
    (shutil, "which"),
    (subprocess, "Popen"),
    (subprocess, "run"),
    (subprocess, "check_output"),
    (socket, "socket"),
    (time, "time"),
    (time, "monotonic"),
    (uuid, "uuid4"),
]


class HostAccess(AssertionError):
    pass


def _forbid(name):
    def refuse(*args, **kwargs):
        raise HostAccess("build_argv called %s%r" % (name, args))

    return refuse


def guarded(monkeypatch, func, *args):
    """func(*args) with HOST_ENTRY_POINTS raising HostAccess; restored before returning."""
    with monkeypatch.context() as patch:
        for obj, attr in HOST_ENTRY_POINTS:
            patch.setattr(obj, attr, _forbid("%s.%s" % (getattr(obj, "__name__", obj), attr)))
        return func(*args)


def test_there_are_cases():
    assert len(CASES) >= 6


@pytest.mark.parametrize("case", CASES)
def test_build_argv_touches_no_host(monkeypatch, case):
    spec, ctx = load_case(case)
    before = (copy.deepcopy(spec), copy.deepcopy(ctx))
    first = guarded(monkeypatch, build_argv, spec, ctx)
    second = guarded(monkeypatch, build_argv, spec, ctx)
    assert isinstance(first, list) and first and all(isinstance(arg, str) for arg in first)
    assert first == second
    assert (spec, ctx) == before  # the inputs are not changed


@pytest.mark.parametrize(
    "probe",
    [
        lambda: os.path.exists("/dev/vhost-net"),
        lambda: open("/proc/cpuinfo").close(),
        lambda: os.cpu_count(),  # pylint: disable=unnecessary-lambda  # looked up when called (patched)
        lambda: subprocess.run(["true"], check=False),
        lambda: socket.socket(),  # pylint: disable=unnecessary-lambda
        lambda: os.stat("/"),
    ],
)
def test_the_guard_catches_host_access(monkeypatch, probe):
    """The guard is not a no-op: a builder that looked at the host would fail above."""
    with pytest.raises(HostAccess):
        guarded(monkeypatch, probe)
    probe()  # restored afterwards
