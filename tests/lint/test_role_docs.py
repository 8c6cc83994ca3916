# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role infinivirt.core.host documents every default, with the same value (R3)."""

from __future__ import annotations

import json

import yaml

from .helpers import run, tool


def test_every_default_is_documented_as_it_is(repo_root):
    role = repo_root / "roles" / "host"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options), "defaults/main.yml and meta/argument_specs.yml differ"
    for name, value in defaults.items():
        assert name.startswith("infinivirt_host_") and not name.startswith("infinivirt_host__")
        assert options[name].get("default") == value, "%s: default %r, documented %r" % (
            name,
            value,
            options[name].get("default"),
        )
        assert options[name].get("description"), name


def test_ansible_doc_renders_the_role(collection, repo_root):
    result = run(
        [tool("ansible-doc"), "-t", "role", "--json", "infinivirt.core.host"], cwd=repo_root, env=collection.env
    )
    assert result.returncode == 0, result.describe()
    doc = json.loads(result.output[result.output.index("{") :])["infinivirt.core.host"]
    assert "infinivirt_host_monitor_state" in doc["entry_points"]["main"]["options"]
