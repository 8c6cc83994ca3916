# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No function in module_utils is over 60 lines (DESIGN.md; issue 20): a long function is
usually deciding and doing at once, and a pure plan plus its application reads better."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

MODULE_UTILS = Path(__file__).resolve().parents[2] / "plugins" / "module_utils"
MAX_LINES = 60


def long_functions(root: Path = MODULE_UTILS, limit: int = MAX_LINES) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # def line to last line, decorators aside
                if length > limit:
                    found.append("%s:%d %s (%d lines)" % (path.relative_to(root), node.lineno, node.name, length))
    return found


def test_no_function_is_over_60_lines():
    assert long_functions() == []


def test_a_long_function_is_found(tmp_path):
    body = "\n".join("    x%d = %d" % (i, i) for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text("def planted():\n%s\n\n\ndef short():\n    return 1\n" % body)
    assert long_functions(tmp_path) == ["long.py:1 planted (%d lines)" % (MAX_LINES + 1)]
