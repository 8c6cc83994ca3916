# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The layout of tests/ itself (issue 19), checked on the source text (nothing is imported).

- Shared test helpers live in helper modules (tests/integration/helpers.py, faults.py, ...):
  no file under tests/ imports from a conftest or from a test_* module, at top level or
  inside a function.
- Unit tests of module_utils are laid out like plugins/module_utils: a test file directly in
  tests/unit/plugins/module_utils is named after a top-level module_utils file
  (test_X.py needs plugins/module_utils/X.py); one in a sub-folder needs that package
  (tests/unit/plugins/module_utils/<pkg>/ needs plugins/module_utils/<pkg>/).

Each rule is a function of the directories it reads, so the self-tests at the end can plant a
violation in a scratch tree and prove the rule notices it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
SKIP_DIRS = {"output", "__pycache__", ".pytest_cache"}  # tests/output: ansible-test's scratch

FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+([\w.]+)[ \t]+import\b", re.M)
_AS = r"[\w.]+(?:[ \t]+as[ \t]+\w+)?"  # a module, maybe renamed
PLAIN_IMPORT = re.compile(r"^[ \t]*import[ \t]+(%s(?:[ \t]*,[ \t]*%s)*)" % (_AS, _AS), re.M)
FORBIDDEN_PART = re.compile(r"^(conftest|test_\w*)$")


def python_files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts))


def imported_modules(text: str) -> List[tuple]:
    """(line number, dotted module) for every import statement in ``text``, indented ones too."""
    found = []
    for match in FROM_IMPORT.finditer(text):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    for match in PLAIN_IMPORT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        for item in match.group(1).split(","):
            found.append((line, item.split()[0]))
    return sorted(found)


def imports_of_tests_or_conftest(tests: Path) -> List[str]:
    """Imports under ``tests`` whose module (or a part of its dotted name) is a conftest or
    a test_* module."""
    bad = []
    for path in python_files(tests):
        for line, module in imported_modules(path.read_text(encoding="utf-8")):
            if any(FORBIDDEN_PART.match(part) for part in module.split(".")):
                bad.append("%s:%d imports %s" % (path.relative_to(tests).as_posix(), line, module))
    return bad


def unit_tests_off_the_module_utils_layout(unit_mu: Path, module_utils: Path) -> List[str]:
    """test_*.py files under ``unit_mu`` that do not sit where plugins/module_utils has them."""
    bad = []
    for path in sorted(unit_mu.rglob("test_*.py")):
        rel = path.relative_to(unit_mu)
        if len(rel.parts) == 1:
            target = module_utils / (path.stem[len("test_") :] + ".py")
            if not target.is_file():
                bad.append("%s: no plugins/module_utils/%s" % (rel.as_posix(), target.name))
        elif not (module_utils / rel.parent).is_dir():
            bad.append("%s: no plugins/module_utils/%s/" % (rel.as_posix(), rel.parent.as_posix()))
    return bad


def test_no_test_file_or_conftest_is_imported():
    bad = imports_of_tests_or_conftest(TESTS)
    assert bad == [], "import shared helpers from a helper module (tests/integration/helpers.py):\n" + "\n".join(bad)


def test_unit_tests_follow_the_module_utils_layout():
    bad = unit_tests_off_the_module_utils_layout(
        TESTS / "unit" / "plugins" / "module_utils", REPO / "plugins" / "module_utils"
    )
    assert bad == [], "\n".join(bad)


# -- the rules notice a planted violation ---------------------------------------------------


def test_plant_imports_of_conftest_and_test_modules(tmp_path):
    (tmp_path / "integration").mkdir()
    (tmp_path / "integration" / "helpers.py").write_text("import os\nfrom qemu_procs import kill_leftovers\n")
    (tmp_path / "integration" / "test_ok.py").write_text("from helpers import wait_for\nfrom .helpers import x\n")
    assert imports_of_tests_or_conftest(tmp_path) == []
    # Spelled with %s, so that a grep for such imports does not find this file.
    (tmp_path / "integration" / "test_a.py").write_text(
        "import os, conftest\n"
        "from %s import wait_for\n"
        "def test_x():\n"
        "    from %s import run_playbook\n"
        "    import test_races as races\n" % ("conftest", "test_playbook")
    )
    (tmp_path / "test_b.py").write_text("from tests.integration.test_vm_nics import links\n")
    assert imports_of_tests_or_conftest(tmp_path) == [
        "integration/test_a.py:1 imports conftest",
        "integration/test_a.py:2 imports conftest",
        "integration/test_a.py:4 imports test_playbook",
        "integration/test_a.py:5 imports test_races",
        "test_b.py:1 imports tests.integration.test_vm_nics",
    ]


def test_plant_unit_tests_off_the_layout(tmp_path):
    mu, unit = tmp_path / "module_utils", tmp_path / "unit"
    (mu / "vm").mkdir(parents=True)
    (mu / "errors.py").write_text("")
    (unit / "vm").mkdir(parents=True)
    (unit / "test_errors.py").write_text("")
    (unit / "vm" / "test_anything.py").write_text("")
    assert unit_tests_off_the_module_utils_layout(unit, mu) == []
    (unit / "test_storage.py").write_text("")
    (unit / "nowhere").mkdir()
    (unit / "nowhere" / "test_x.py").write_text("")
    assert unit_tests_off_the_module_utils_layout(unit, mu) == [
        "nowhere/test_x.py: no plugins/module_utils/nowhere/",
        "test_storage.py: no plugins/module_utils/storage.py",
    ]
