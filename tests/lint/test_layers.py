# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The layering rules of issue 9, checked on the source by an AST walk (nothing is imported).

Every Import/ImportFrom anywhere in a file counts, also one inside a function: AnsiballZ's
dependency finder (ansible.executor.module_common.ModuleDepFinder) ships those too.

Each rule is a function ``(plugins_dir) -> [violation, ...]`` so the self-tests at the end can
plant a violation in a copy of plugins/ and prove the rule notices it.
"""

from __future__ import annotations

import ast
import functools
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PREFIX = "ansible_collections.infinivirt.core."
MU_PREFIX = PREFIX + "plugins.module_utils"

# Pure models: no host access, nothing impure from host/, qemu/ or store/; within module_utils
# they import only one another. Every file in vm/model/ is one (test_vm_model_is_pure).
PURE_MODELS = (
    "vm/model/spec.py",
    "vm/model/presets.py",
    "vm/model/disks.py",
    "vm/model/nics.py",
    "vm/model/usb.py",
    "vm/model/hostdevs.py",
    "vm/model/tuning.py",  # memory and CPU tuning: validation and QEMU JSON (vm/engine/tune.py applies it)
    "vm/model/record.py",
    "vm/model/plan.py",
    "vm/model/states.py",
    "vm/model/options.py",  # infinivirt_vm's argument_spec, shared with infinivirt_vms
    "vm/model/argv.py",  # the argv builder: a pure function of spec and launch context
    "vm/model/vocabulary.py",  # the result vocabulary: option names, the VM entry, the diff
    "vm/model/cloud_init.py",  # the cloud_init option to NoCloud seed files (host/iso.py writes them)
    "vm/model/clones.py",  # disks made from a template on first create: which, and their origin kept
    "vm/model/unattend.py",  # the unattend option to the answer file ISO's files (host/iso.py writes them)
    "vm/model/sealed_files.py",  # the keyed digest a spec keeps of sealed files (cloud_init, unattend)
    "vm/model/readiness.py",  # wait_for/wait_timeout and the console tail (vm/readiness.py waits)
    "vm/model/metadata.py",  # tags and labels: validation and the info filter
    "vm/model/backup.py",  # backup options, the manifest, kind, retention, restore chain
    "vm/model/machine.py",  # the versioned machine type: recorded at the first start, asked for after
    "vm/model/migration.py",  # a live migration: options, QMP settings, the handover states and who moves them
    "vm/model/storage_copy.py",  # storage copied during a migration: each disk's fate, QMP arguments, the answer
    "vm/model/devices.py",  # TPM, RNG, watchdog, SMBIOS, vsock: normal form, checks, argv (issue 25 A)
    "vm/model/display.py",  # SPICE's option string, video_model/graphics.tls/usb_tablet checks, the tablet
    "vm/model/shares.py",  # shared_dirs: validation, vhost-user-fs devices, virtiofsd's argv
    "volume/size.py",
    "volume/plan.py",  # infinivirt_disk's decision on an existing volume
    "volume/origin.py",  # infinivirt_disk's decision on a volume made from an image or template
    "firewall/rules.py",
    "validation.py",
    "errors.py",
    "network/nat_settings.py",
    "network/spec.py",
    "network/plan.py",  # infinivirt_net's planner: (row, host now, desired) -> steps
    "qemu/formats.py",  # qemu-img's formats, offered as choices by the volume and VM models
    "firewall/ports.py",  # what the firewall is told of a VM (the VM side builds it)
)
HOST_STDLIB = ("os", "os.path", "subprocess", "socket", "sqlite3", "time", "shutil", "ctypes", "fcntl", "signal")
IMPURE_PACKAGES = ("host", "qemu", "store")

# Known exceptions, each (pure model, module_utils file it imports). Remove an entry once fixed.
KNOWN_IMPURE = set()  # (model, module_utils file) pairs allowed for now; none left

# Files a module that does not run VMs must not ship.
VM_ENGINE = ("vm/service.py", "vm/engine/engine.py", "qemu/qmp.py", "vm/model/argv.py")
NO_VM_ENGINE = ("infinivirt_net", "infinivirt_firewall", "infinivirt_secret_key")

# The VM's service files (what modules run). The engine (vm/engine/) is below them all.
VM_SERVICES = ("vm/service.py", "vm/batch.py", "vm/info.py", "vm/snapshots.py", "vm/passthrough.py")
# Files that act on VMs through the engine (vm/engine/engine.py), never through VmService.
ENGINE_USERS = ("vm/passthrough.py", "vm/snapshots.py", "vm/info.py", "vm/power.py")


# -- the import graph ----------------------------------------------------------------------


class Imp:
    """One import statement's target as written: ``module`` (dotted, absolute) and, for
    ``from module import name``, ``name``."""

    def __init__(self, module: str, name: Optional[str], line: int):
        self.module, self.name, self.line = module, name, line

    def __str__(self) -> str:
        if self.name is None:
            return "import %s (line %d)" % (self.module, self.line)
        return "from %s import %s (line %d)" % (self.module, self.name, self.line)


def mu_rel(path: Path, plugins: Path) -> str:
    return path.relative_to(plugins / "module_utils").as_posix()


def dotted_of(path: Path, plugins: Path) -> str:
    rel = path.relative_to(plugins.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return PREFIX + ".".join(parts)


def imports_of(path: Path, plugins: Path) -> List[Imp]:
    """Every import in the file, wherever it is (module level, function, try, if)."""
    text = path.read_text()
    return _imports_of(str(path), str(plugins), text)


@functools.lru_cache(maxsize=None)
def _imports_of(path_str: str, plugins_str: str, text: str) -> List[Imp]:
    path, plugins = Path(path_str), Path(plugins_str)
    tree = ast.parse(text, filename=path_str)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Imp(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = dotted_of(path, plugins).split(".")
                if path.name != "__init__.py":
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found += [Imp(module, alias.name, node.lineno) for alias in node.names]
    return found


def file_of(dotted: str, plugins: Path) -> Optional[Path]:
    """The file a dotted collection name stands for, or None."""
    if not dotted.startswith(PREFIX):
        return None
    base = plugins.parent.joinpath(*dotted[len(PREFIX) :].split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def targets(imp: Imp, plugins: Path) -> Tuple[List[Path], bool]:
    """The module_utils files one import pulls in (with the package __init__.py files on the
    way, as AnsiballZ ships them) and whether it resolves at all. Imports outside
    ansible_collections.infinivirt.core resolve trivially (nothing to ship)."""
    if not imp.module.startswith(PREFIX):
        return [], True
    found = None
    if imp.name is not None:
        found = file_of("%s.%s" % (imp.module, imp.name), plugins)  # from pkg import module
    if found is None:
        found = file_of(imp.module, plugins)
    if found is None:
        return [], False
    files = [found]
    mu = plugins / "module_utils"
    if mu in found.parents:
        parent = found.parent
        while parent == mu or mu in parent.parents:
            init = parent / "__init__.py"
            if init.is_file():
                files.append(init)
            parent = parent.parent
    return files, True


def mu_imports(path: Path, plugins: Path, with_inits: bool = True) -> Iterator[Tuple[Imp, str]]:
    """(import, module_utils file relative to module_utils/) for each file an import ships;
    without ``with_inits`` only the file the import names, not the packages around it."""
    for imp in imports_of(path, plugins):
        files = targets(imp, plugins)[0]
        for target in files if with_inits else files[:1]:
            if plugins / "module_utils" in target.parents:
                yield imp, mu_rel(target, plugins)


def closure(module: Path, plugins: Path) -> Set[str]:
    """The module_utils files (relative to module_utils/) a module's payload holds."""
    seen: Set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for _imp, rel in mu_imports(current, plugins):
            if rel not in seen:
                seen.add(rel)
                todo.append(plugins / "module_utils" / rel)
    return seen


def modules(plugins: Path) -> List[Path]:
    return sorted(p for p in (plugins / "modules").glob("*.py") if p.name != "__init__.py")


def payloads(plugins: Path) -> Dict[str, Set[str]]:
    return {p.stem: closure(p, plugins) for p in modules(plugins)}


def is_under(rel: str, packages) -> bool:
    return any(rel.startswith(pkg + "/") for pkg in packages)


# -- the rules -------------------------------------------------------------------------------


def pure_model_violations(plugins: Path) -> List[str]:
    bad = []
    for model in PURE_MODELS:
        path = plugins / "module_utils" / model
        if not path.is_file():
            bad.append("%s: the pure model file does not exist (update PURE_MODELS)" % model)
            continue
        for imp in imports_of(path, plugins):
            for mod in HOST_STDLIB:
                if imp.module == mod or (imp.name and "%s.%s" % (imp.module, imp.name) == mod):
                    bad.append("%s: %s: a pure model imports %s" % (model, imp, mod))
        for imp, rel in mu_imports(path, plugins, with_inits=False):
            if (model, rel) in KNOWN_IMPURE:
                continue
            if rel in PURE_MODELS:
                continue
            if is_under(rel, IMPURE_PACKAGES):
                bad.append("%s: %s: a pure model imports %s" % (model, imp, rel))
            else:
                bad.append("%s: %s: a pure model imports %s, which is not a pure model" % (model, imp, rel))
    return bad


def store_violations(plugins: Path) -> List[str]:
    bad = []
    for path in sorted((plugins / "module_utils" / "store").rglob("*.py")):
        for imp, rel in mu_imports(path, plugins, with_inits=False):
            if is_under(rel, ("host", "qemu")):
                bad.append("%s: %s: store/ imports %s" % (mu_rel(path, plugins), imp, rel))
    return bad


def engine_violations(plugins: Path) -> List[str]:
    """vm/engine/ imports no VM service file; monitor/ and ENGINE_USERS do not import
    vm/service.py (they use the engine)."""
    bad = []
    for path in sorted((plugins / "module_utils").rglob("*.py")):
        rel = mu_rel(path, plugins)
        if is_under(rel, ("vm/engine",)):
            forbidden, who = VM_SERVICES, "the VM engine"
        elif is_under(rel, ("monitor",)) or rel in ENGINE_USERS:
            forbidden, who = ("vm/service.py",), "a user of the VM engine"
        else:
            continue
        for imp, target in mu_imports(path, plugins, with_inits=False):
            if target in forbidden:
                bad.append("%s: %s: %s imports %s" % (rel, imp, who, target))
    return bad


def ansible_import_violations(plugins: Path) -> List[str]:
    bad = []
    for path in sorted((plugins / "module_utils").rglob("*.py")):
        rel = mu_rel(path, plugins)
        if rel == "ansible_binding.py":
            continue
        for imp in imports_of(path, plugins):
            full = imp.module if imp.name is None else "%s.%s" % (imp.module, imp.name)
            if imp.module == "ansible" or imp.module.startswith("ansible.") or full.startswith("ansible."):
                bad.append("%s: %s: only ansible_binding.py imports ansible" % (rel, imp))
    return bad


def unresolved_imports(plugins: Path) -> List[str]:
    bad = []
    files = modules(plugins) + sorted((plugins / "module_utils").rglob("*.py"))
    for path in files:
        for imp in imports_of(path, plugins):
            if not targets(imp, plugins)[1]:
                bad.append("%s: %s: no such collection file" % (path.relative_to(plugins).as_posix(), imp))
    return bad


def import_chain(module: Path, wanted: str, plugins: Path) -> str:
    """How a module reaches a module_utils file, shortest first:
    'infinivirt_x.py:12 -> a/b.py:30 -> wanted' (file:line of each import)."""
    prev: Dict[str, Optional[Tuple[str, int]]] = {module.name: None}
    todo = [(module, module.name)]
    while todo:
        path, key = todo.pop(0)
        for imp, rel in mu_imports(path, plugins):
            if rel in prev:
                continue
            prev[rel] = (key, imp.line)
            if rel == wanted:
                chain = [rel]
                step = prev[rel]
                while step is not None:
                    chain.append("%s:%d" % step)
                    step = prev[step[0]]
                return " -> ".join(reversed(chain))
            todo.append((plugins / "module_utils" / rel, rel))
    return "?"


def payload_violations(plugins: Path) -> List[str]:
    bad = []
    for name, files in sorted(payloads(plugins).items()):
        forbidden = []
        if name in NO_VM_ENGINE:
            forbidden += [f for f in files if f in VM_ENGINE]
        if name == "infinivirt_secret_key":
            forbidden += [f for f in files if is_under(f, ("network", "firewall"))]
        for rel in sorted(forbidden):
            chain = import_chain(plugins / "modules" / ("%s.py" % name), rel, plugins)
            bad.append("%s ships %s: %s" % (name, rel, chain))
    return bad


def print_payload_sizes(plugins: Path = PLUGINS) -> Dict[str, int]:
    sizes = {name: len(files) for name, files in payloads(plugins).items()}
    for name, count in sorted(sizes.items()):
        print("payload %-24s %2d module_utils files" % (name, count))
    return sizes


# -- the package graph (issue 20) ----------------------------------------------------------------

# Layers, lowest first: a package imports packages of its own layer or below, never above.
# Adapters talk to the host, QEMU and the database and know no domain; domain packages use
# adapters; vm/ builds on volume/, network/ and firewall/ (never the reverse); the monitor on vm/.
LAYERS = (
    ("base", ("errors", "clock", "validation", "bytecode_cache")),
    ("adapter", ("store", "host", "qemu", "secrets")),
    ("composition", ("context", "host_config", "ansible_binding")),
    ("domain", ("network", "volume", "firewall")),
    ("vm", ("vm",)),
    ("application", ("monitor",)),
)
VM_SERVICES = ("vm/service.py", "vm/batch.py", "vm/info.py", "vm/snapshots.py", "vm/passthrough.py")


def package_of(rel: str) -> str:
    """The top-level package of a module_utils file ('vm/engine/x.py' -> 'vm'; 'errors.py' -> 'errors')."""
    return rel.split("/")[0][: -len(".py")] if "/" not in rel else rel.split("/")[0]


def layer_of(package: str) -> Optional[int]:
    return next((rank for rank, (_name, members) in enumerate(LAYERS) if package in members), None)


def package_graph(plugins: Path) -> Dict[str, Dict[str, List[str]]]:
    """package -> imported package -> ['file: import', ...] (the imports that make the edge)."""
    graph: Dict[str, Dict[str, List[str]]] = {}
    for path in sorted((plugins / "module_utils").rglob("*.py")):
        rel = mu_rel(path, plugins)
        if rel == "__init__.py":
            continue
        src = package_of(rel)
        graph.setdefault(src, {})
        for imp, target in mu_imports(path, plugins, with_inits=False):
            dst = package_of(target)
            if dst != src and target != "__init__.py":
                graph[src].setdefault(dst, []).append("%s: %s" % (rel, imp))
    return graph


def layer_violations(plugins: Path) -> List[str]:
    bad = []
    for src, edges in sorted(package_graph(plugins).items()):
        if layer_of(src) is None:
            bad.append("%s: a package in no layer (add it to LAYERS)" % src)
            continue
        for dst, why in sorted(edges.items()):
            if layer_of(dst) is not None and layer_of(dst) > layer_of(src):
                bad.append(
                    "%s (%s) imports %s (%s): %s"
                    % (src, LAYERS[layer_of(src)][0], dst, LAYERS[layer_of(dst)][0], why[0])
                )
    return bad


def package_cycles(plugins: Path) -> List[List[str]]:
    """The strongly connected groups of two or more packages (Tarjan), each sorted."""
    graph = {src: set(edges) for src, edges in package_graph(plugins).items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    groups: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def vm_layer_violations(plugins: Path) -> List[str]:
    """vm/model/ holds pure files only; vm/engine/ imports no VM service (vm/*.py)."""
    bad = []
    model = sorted(mu_rel(p, plugins) for p in (plugins / "module_utils/vm/model").glob("*.py"))
    for rel in model:
        if rel != "vm/model/__init__.py" and rel not in PURE_MODELS:
            bad.append("%s: a file in vm/model/ that is not a pure model (add it to PURE_MODELS)" % rel)
    for path in sorted((plugins / "module_utils/vm/engine").glob("*.py")):
        for imp, target in mu_imports(path, plugins, with_inits=False):
            if target in VM_SERVICES:
                bad.append("%s: %s: the engine imports the service %s" % (mu_rel(path, plugins), imp, target))
    return bad


# -- the tests on the work tree --------------------------------------------------------------


def test_pure_models_touch_no_host():
    assert pure_model_violations(PLUGINS) == []


def test_known_exceptions_still_needed():
    """An exception that no longer applies must go, so the rule gets its teeth back."""
    used = {
        (model, rel)
        for model in PURE_MODELS
        if (PLUGINS / "module_utils" / model).is_file()
        for _imp, rel in mu_imports(PLUGINS / "module_utils" / model, PLUGINS, with_inits=False)
    }
    assert sorted(KNOWN_IMPURE - used) == []


def test_store_imports_no_host_or_qemu():
    assert store_violations(PLUGINS) == []


def test_the_engine_is_below_the_vm_services():
    assert engine_violations(PLUGINS) == []


def test_only_the_binding_imports_ansible():
    assert ansible_import_violations(PLUGINS) == []
    binding = imports_of(PLUGINS / "module_utils" / "ansible_binding.py", PLUGINS)
    assert any(imp.module.startswith("ansible.module_utils") for imp in binding)


def test_every_collection_import_resolves():
    assert unresolved_imports(PLUGINS) == []


def test_payloads_hold_only_their_service():
    assert payload_violations(PLUGINS) == []


def test_payload_sizes():
    sizes = print_payload_sizes()
    assert set(sizes) >= {
        "infinivirt_vm",
        "infinivirt_net",
        "infinivirt_disk",
        "infinivirt_secret_key",
        "infinivirt_firewall",
        "infinivirt_snapshot",
        "infinivirt_vm_info",
    }
    # The key rotation module ships the least.
    assert sizes["infinivirt_secret_key"] == min(sizes.values())


def test_infinivirt_disk_ships_no_vm_engine():
    """Growing an attached volume needs QMP only (vm/engine/live_resize.py), not the VM engine."""
    disk = payloads(PLUGINS)["infinivirt_disk"]
    assert "vm/engine/live_resize.py" in disk and "qemu/qmp.py" in disk
    assert not {"vm/service.py", "vm/engine/engine.py", "vm/model/argv.py", "firewall/service.py"} & set(disk)
    assert "vm/__init__.py" in disk and "__init__.py" in disk


def test_packages_follow_the_layers():
    assert layer_violations(PLUGINS) == []


def test_the_package_graph_has_no_cycle():
    assert package_cycles(PLUGINS) == []


def test_vm_model_and_engine_layers():
    assert vm_layer_violations(PLUGINS) == []


def test_store_records_need_no_vm_model():
    """A module that reads no VM ships no VM model: the store keeps plain rows."""
    for path in sorted((PLUGINS / "module_utils/store").glob("*.py")):
        assert [t for _i, t in mu_imports(path, PLUGINS) if t.startswith("vm/")] == [], path.name
    assert not {f for f in payloads(PLUGINS)["infinivirt_net"] if f.startswith("vm/")}


# -- the rules catch what they should (planted in a copy of plugins/) --------------------------


@pytest.fixture
def plugins_copy(tmp_path):
    dest = tmp_path / "plugins"
    shutil.copytree(PLUGINS, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def plant(plugins: Path, rel: str, code: str, in_function: bool = True) -> None:
    """Append an import to a file, inside a function by default (the rules must see those)."""
    path = plugins / rel
    body = "\n\ndef _planted():\n    %s\n" % code if in_function else "\n%s\n" % code
    path.write_text(path.read_text() + body)


def lines(plugins: Path, rel: str) -> int:
    return len((plugins / rel).read_text().splitlines())


def first_line(plugins: Path, rel: str, text: str) -> int:
    return next(n for n, line in enumerate((plugins / rel).read_text().splitlines(), 1) if text in line)


def test_plant_os_in_a_pure_model(plugins_copy):
    plant(plugins_copy, "module_utils/vm/model/spec.py", "import os.path")
    assert pure_model_violations(plugins_copy) == [
        "vm/model/spec.py: import os.path (line %d): a pure model imports os.path"
        % lines(plugins_copy, "module_utils/vm/model/spec.py")
    ]


def test_plant_from_import_in_a_pure_model(plugins_copy):
    plant(plugins_copy, "module_utils/volume/size.py", "from subprocess import run", in_function=False)
    bad = pure_model_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("volume/size.py: from subprocess import run")


def test_plant_host_in_a_pure_model(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/firewall/rules.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store",
    )
    bad = pure_model_violations(plugins_copy)
    assert "firewall/rules.py" in bad[0] and "store/factory.py" in bad[0]
    assert "from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store" in bad[0]


def test_plant_service_in_a_pure_model(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/vm/model/plan.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import engine",
    )
    bad = pure_model_violations(plugins_copy)
    assert len(bad) == 1 and "vm/model/plan.py" in bad[0] and "vm/engine/engine.py, which is not a pure model" in bad[0]


def test_plant_a_vm_service_in_the_engine(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/vm/engine/tune.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm import info",
    )
    plant(
        plugins_copy,
        "module_utils/vm/engine/process.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough import PciService",
        in_function=False,
    )
    assert engine_violations(plugins_copy) == [
        "vm/engine/process.py: from ansible_collections.infinivirt.core.plugins.module_utils.vm.passthrough "
        "import PciService (line %d): the VM engine imports vm/passthrough.py"
        % lines(plugins_copy, "module_utils/vm/engine/process.py"),
        "vm/engine/tune.py: from ansible_collections.infinivirt.core.plugins.module_utils.vm import info "
        "(line %d): the VM engine imports vm/info.py" % lines(plugins_copy, "module_utils/vm/engine/tune.py"),
    ]


def test_plant_vm_service_in_an_engine_user(plugins_copy):
    service = "from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService"
    plant(plugins_copy, "module_utils/monitor/policy.py", service)
    plant(plugins_copy, "module_utils/vm/snapshots.py", service)
    plant(plugins_copy, "module_utils/vm/batch.py", service)  # infinivirt_vms runs infinivirt_vm: allowed
    bad = engine_violations(plugins_copy)
    assert [b.split(":")[0] for b in bad] == ["monitor/policy.py", "vm/snapshots.py"], bad
    assert all(b.endswith("a user of the VM engine imports vm/service.py") for b in bad), bad


def test_plant_host_in_store(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/store/sqlite.py",
        "import ansible_collections.infinivirt.core.plugins.module_utils.qemu.probe",
    )
    bad = store_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("store/sqlite.py: import ")
    assert bad[0].endswith("store/ imports qemu/probe.py")


def test_plant_ansible_outside_the_binding(plugins_copy):
    plant(plugins_copy, "module_utils/context.py", "from ansible.module_utils.common.text.converters import to_text")
    plant(plugins_copy, "module_utils/host/net.py", "from ansible import constants")
    bad = ansible_import_violations(plugins_copy)
    assert [b.split(":")[0] for b in bad] == ["context.py", "host/net.py"]
    assert "from ansible.module_utils.common.text.converters import to_text" in bad[0]
    # ansible_collections is not ansible
    plugins_ok = plugins_copy
    (plugins_ok / "module_utils/context.py").write_text((PLUGINS / "module_utils/context.py").read_text())
    (plugins_ok / "module_utils/host/net.py").write_text((PLUGINS / "module_utils/host/net.py").read_text())
    assert ansible_import_violations(plugins_ok) == []


def test_plant_a_missing_file(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/network/service.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.host.bridge import make",
    )
    bad = unresolved_imports(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("module_utils/network/service.py: from ")
    assert "host.bridge import make" in bad[0]


def test_plant_the_vm_engine_in_net(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/host/dnsmasq.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.qemu.qmp import QmpSession",
    )
    bad = payload_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("infinivirt_net ships qemu/qmp.py: infinivirt_net.py:"), bad
    assert bad[0].endswith(
        " -> network/service.py:%d -> host/dnsmasq.py:%d -> qemu/qmp.py"
        % (
            first_line(plugins_copy, "module_utils/network/service.py", "module_utils.host import dnsmasq"),
            lines(plugins_copy, "module_utils/host/dnsmasq.py"),
        )
    ), bad


def test_plant_network_in_secret_key(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/secrets/rotation.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.firewall import rules",
    )
    bad = payload_violations(plugins_copy)
    assert [b.split(":")[0] for b in bad] == [
        "infinivirt_secret_key ships firewall/__init__.py",
        "infinivirt_secret_key ships firewall/rules.py",
    ], bad
    assert all(
        " -> secrets/rotation.py:%d -> firewall/" % lines(plugins_copy, "module_utils/secrets/rotation.py") in b
        for b in bad
    ), bad


def test_plant_a_domain_import_in_an_adapter(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/store/events.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import spec",
    )
    bad = layer_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("store (adapter) imports vm (vm): store/events.py: from "), bad


def test_plant_a_reverse_domain_import(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/volume/plan.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import DiskSpec",
    )
    bad = layer_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("volume (domain) imports vm (vm): volume/plan.py"), bad
    assert package_cycles(plugins_copy) == [["vm", "volume"]]


def test_plant_a_cycle_between_adapters(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/host/tap.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.qemu import img",
    )
    assert layer_violations(plugins_copy) == []  # the same layer: only the cycle rule sees it
    assert package_cycles(plugins_copy) == [["host", "qemu"]]


def test_plant_the_service_in_the_engine(plugins_copy):
    plant(
        plugins_copy,
        "module_utils/vm/engine/hotplug.py",
        "from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService",
    )
    bad = vm_layer_violations(plugins_copy)
    assert len(bad) == 1 and bad[0].startswith("vm/engine/hotplug.py: from "), bad
    assert bad[0].endswith("the engine imports the service vm/service.py"), bad
    (plugins_copy / "module_utils/vm/model/extra.py").write_text("X = 1\n")
    assert "vm/model/extra.py: a file in vm/model/ that is not a pure model" in vm_layer_violations(plugins_copy)[0]
