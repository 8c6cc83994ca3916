# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Module documentation checks that ansible-test sanity does not make (S3, M8, P4, P6)."""

from __future__ import annotations

import json

import pytest
import yaml

from .helpers import FQCN_PREFIX, REPO_ROOT, list_modules, run, tool

ACTION_GROUP = "infinivirt"
ACTION_GROUP_FQCN = FQCN_PREFIX + ACTION_GROUP

MODULES = list_modules()


@pytest.fixture(scope="module")
def module_docs(collection):
    """``ansible-doc --json`` of every module, in one call."""
    assert MODULES, "plugins/modules has no modules"
    result = run(
        [tool("ansible-doc"), "--json", "-t", "module"] + [FQCN_PREFIX + m for m in MODULES],
        cwd=collection.path,
        env=collection.env,
    )
    assert result.returncode == 0, "ansible-doc failed:\n" + result.describe()
    start = result.output.find("{")
    assert start >= 0, "ansible-doc printed no JSON:\n" + result.describe()
    return json.JSONDecoder().raw_decode(result.output[start:])[0]


def test_modules_exist():
    assert MODULES, "plugins/modules has no modules"


@pytest.mark.parametrize("module", MODULES)
def test_module_doc(module_docs, module):
    fqcn = FQCN_PREFIX + module
    assert fqcn in module_docs, "ansible-doc returned nothing for %s" % fqcn
    entry = module_docs[fqcn]
    doc = entry.get("doc") or {}
    assert doc.get("version_added"), "%s: DOCUMENTATION has no version_added" % fqcn
    assert entry.get("return"), "%s: RETURN is empty or missing" % fqcn
    assert (entry.get("examples") or "").strip(), "%s: EXAMPLES is empty or missing" % fqcn
    membership = ((doc.get("attributes") or {}).get("action_group") or {}).get("membership") or []
    assert ACTION_GROUP_FQCN in membership, (
        "%s does not document membership of action group %r: add "
        "infinivirt.core.attributes.actiongroup_infinivirt to extends_documentation_fragment" % (fqcn, ACTION_GROUP)
    )


def test_action_group_lists_every_module():
    runtime = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())
    group = set((runtime.get("action_groups") or {}).get(ACTION_GROUP) or [])
    assert group == set(MODULES), (
        "meta/runtime.yml action_groups.%s must list exactly the modules in plugins/modules; "
        "missing: %s, unknown: %s" % (ACTION_GROUP, sorted(set(MODULES) - group), sorted(group - set(MODULES)))
    )


def test_antsibull_docs_lint(collection):
    result = run(
        [tool("antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."],
        cwd=collection.path,
        env=collection.env,
    )
    assert result.returncode == 0, "antsibull-docs lint-collection-docs failed:\n" + result.describe()


def test_antsibull_changelog_lint(repo_root, collection):
    result = run([tool("antsibull-changelog"), "lint"], cwd=repo_root, env=collection.env)
    assert result.returncode == 0, "antsibull-changelog lint failed:\n" + result.describe()
    # lint prints problems but may exit 0 for some of them
    assert not result.output.strip(), "antsibull-changelog lint reported:\n" + result.describe()
