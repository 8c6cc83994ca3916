# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What this host's QEMU can do: binary, version, and whether KVM really works.

KVM counts as usable only when /dev/kvm is read/writable and a hardware KVM module
(kvm_intel or kvm_amd) is loaded: a software nested module such as kvm_pvm runs firmware
but crashes a Linux guest, so ``accel: auto`` falls back to TCG there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError

DEFAULT_BINARY = "qemu-system-x86_64"
HARDWARE_KVM_MODULES = ("kvm_intel", "kvm_amd")
_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)")


@dataclasses.dataclass(frozen=True)
class HostPaths:
    """Root paths the probe reads; tests point them at a fake tree."""

    dev: str = "/dev"
    sys: str = "/sys"
    proc: str = "/proc"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    binary: str
    version: Tuple[int, int, int]
    kvm_usable: bool
    kvm_reason: str  # why KVM is (not) usable, for warnings
    kvm_device_ok: bool
    nested: bool  # this host is itself a guest (cpuid hypervisor flag)
    # What -cpu help lists (empty: unknown, nothing is checked against it).
    cpu_models: FrozenSet[str] = frozenset()
    cpu_flags: FrozenSet[str] = frozenset()
    cache_key: str = ""  # the binary's path, size and mtime when version and CPUs were read


def find_binary(binary: Optional[str] = None) -> str:
    path = shutil.which(binary or DEFAULT_BINARY)
    if path is None:
        raise QemuError(
            "QEMU binary %r was not found; install qemu-system-x86 (Debian) or set "
            "qemu_binary to its path" % (binary or DEFAULT_BINARY)
        )
    return os.path.realpath(path)


def _run(binary: str, args: List[str]) -> str:
    try:
        return subprocess.run([binary] + args, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError("could not run %s %s: %s" % (binary, " ".join(args), exc)) from exc


def parse_cpu_help(text: str) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """CPU model names and CPUID flag names from ``qemu-system-x86_64 -cpu help``."""
    models, flags, in_flags = set(), set(), False
    for line in text.splitlines():
        if line.startswith("Recognized CPUID flags"):
            in_flags = True
        elif in_flags and line.startswith((" ", "\t")):
            flags.update(line.split())
        elif line.startswith("x86 "):
            models.add(line.split()[1])
        else:
            in_flags = False
    return frozenset(models), frozenset(flags)


def _read_binary_facts(binary: str, cache_file: Optional[str]) -> Dict[str, Any]:
    """Version and CPU catalogue of a QEMU binary, cached per binary (path, size, mtime)."""
    st = os.stat(binary)
    key = "%s:%d:%d" % (binary, st.st_size, int(st.st_mtime))
    if cache_file:
        try:
            with open(cache_file) as fh:
                cached = json.load(fh)
            if cached.get("key") == key and "cpu_models" in cached:
                return cached
        except (OSError, ValueError, KeyError, TypeError):
            pass
    out = _run(binary, ["--version"])
    match = _VERSION_RE.search(out)
    if not match:
        raise QemuError("%s --version printed no QEMU version: %r" % (binary, out[:200]))
    models, flags = parse_cpu_help(_run(binary, ["-cpu", "help"]))
    facts = {
        "key": key,
        "version": [int(match.group(1)), int(match.group(2)), int(match.group(3))],
        "cpu_models": sorted(models),
        "cpu_flags": sorted(flags),
    }
    if cache_file:
        _write_facts(facts, cache_file)
    return facts


def _write_facts(facts: Dict[str, Any], cache_file: str) -> None:
    tmp = "%s.%d.tmp" % (cache_file, os.getpid())
    try:
        with open(tmp, "w") as fh:
            json.dump(facts, fh)
        os.replace(tmp, cache_file)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a cache we cannot write is only slower; leave no temp file


def save_probe(caps: Capabilities, cache_file: str) -> None:
    """Cache what a probe without a cache file found (run_dir did not exist yet), so the
    next task does not run the binary again."""
    _write_facts(
        {
            "key": caps.cache_key,
            "version": list(caps.version),
            "cpu_models": sorted(caps.cpu_models),
            "cpu_flags": sorted(caps.cpu_flags),
        },
        cache_file,
    )


def _read_version(binary: str, cache_file: Optional[str]) -> Tuple[int, int, int]:
    return tuple(_read_binary_facts(binary, cache_file)["version"])  # type: ignore[return-value]


def kvm_state(paths: HostPaths) -> Tuple[bool, bool, str]:
    """Return (usable, device_ok, reason)."""
    dev = os.path.join(paths.dev, "kvm")
    if not os.path.exists(dev):
        return False, False, "%s does not exist" % dev
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, False, "%s is not read/writable by this user" % dev
    loaded = [m for m in HARDWARE_KVM_MODULES if os.path.isdir(os.path.join(paths.sys, "module", m))]
    if not loaded:
        return (
            False,
            True,
            (
                "neither kvm_intel nor kvm_amd is loaded (a software or nested KVM module cannot "
                "run Linux guests reliably)"
            ),
        )
    return True, True, "%s is loaded" % loaded[0]


def is_nested(paths: HostPaths) -> bool:
    try:
        with open(os.path.join(paths.proc, "cpuinfo")) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return " hypervisor" in line
    except OSError:
        pass
    return False


def probe(
    binary: Optional[str] = None, cache_file: Optional[str] = None, paths: HostPaths = HostPaths()
) -> Capabilities:
    path = find_binary(binary)
    usable, device_ok, reason = kvm_state(paths)
    facts = _read_binary_facts(path, cache_file)
    return Capabilities(
        binary=path,
        version=tuple(facts["version"]),
        kvm_usable=usable,
        kvm_reason=reason,
        kvm_device_ok=device_ok,
        nested=is_nested(paths),
        cpu_models=frozenset(facts["cpu_models"]),
        cpu_flags=frozenset(facts["cpu_flags"]),
        cache_key=facts["key"],
    )


def resolve_accel(requested: str, caps: Capabilities) -> Tuple[str, List[str]]:
    """Map the spec's accel (auto|kvm|tcg) to what QEMU gets, with warnings."""
    if requested == "tcg":
        return "tcg", []
    if requested == "kvm":
        if not caps.kvm_device_ok:
            raise SpecError("accel", "kvm was requested but %s" % caps.kvm_reason)
        return "kvm", []
    if caps.kvm_usable:
        return "kvm", []
    return "tcg", [
        "KVM is not usable on this host: %s. Running under TCG software "
        "emulation, which is much slower; set accel: kvm to force KVM." % caps.kvm_reason
    ]


def resolve_cpu(model: str, flags: Tuple[str, ...], accel: str, caps: Capabilities) -> Tuple[str, List[str]]:
    """Return the -cpu value. `host` does not exist under TCG, and on nested KVM hosts it
    aborts with "failed to set MSR 0x10a" unless arch-capabilities is masked."""
    warnings: List[str] = []
    if model == "auto":
        model = "host" if accel == "kvm" else "max"
    elif model == "host" and accel == "tcg":
        warnings.append("cpu_model host is not available under TCG; using max instead")
        model = "max"
    parts = [model]
    if model == "host" and caps.nested and "-arch-capabilities" not in flags and "+arch-capabilities" not in flags:
        parts.append("-arch-capabilities")
    parts.extend(flags)
    return ",".join(parts), warnings
