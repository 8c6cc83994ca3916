# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""VM tags and labels (vm/model/metadata.py): what is refused and where it is named, how they
merge with a stored VM, and that a change is never a restart."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.metadata import (
    LABEL_VALUE_MAX,
    TAGS_MAX,
    matches,
    validate_labels,
    validate_tags,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import (
    VmSpec,
    changed_fields,
    merge_params,
    pending_restart,
    validate,
)


@pytest.mark.parametrize(
    "tags, field, phrase",
    [
        (["web", "bad tag"], "tags[1]", "1 to 63 letters"),
        (["-web"], "tags[0]", "starting with a letter"),
        (["a" * 64], "tags[0]", "1 to 63"),
        ([""], "tags[0]", "1 to 63"),
        (["web", "db", "web"], "tags[2]", "given twice"),
        ([7], "tags[0]", "1 to 63"),
        (["t%d" % n for n in range(TAGS_MAX + 1)], "tags", "at most 64 tags"),
    ],
)
def test_bad_tags_name_the_item(tags, field, phrase):
    with pytest.raises(SpecError) as err:
        validate_tags(tags)
    assert err.value.field == field and phrase in str(err.value)


@pytest.mark.parametrize(
    "labels, field, phrase",
    [
        ({"team": "a", "bad key": "x"}, "labels.bad key", "the key must be"),
        ({"tier": 1}, "labels.tier", "must be a string"),
        ({"note": "x" * (LABEL_VALUE_MAX + 1)}, "labels.note", "at most 256"),
        ({"note": "two\nlines"}, "labels.note", "control characters"),
        ({"k%d" % n: "v" for n in range(65)}, "labels", "at most 64 labels"),
    ],
)
def test_bad_labels_name_the_key(labels, field, phrase):
    with pytest.raises(SpecError) as err:
        validate_labels(labels)
    assert err.value.field == field and phrase in str(err.value)


def test_good_metadata_passes_validation_of_the_whole_spec():
    spec = validate(VmSpec(name="a", tags=("web", "prod.eu_1"), labels={"department": "sales", "note": "any text: ok"}))
    assert spec.to_dict()["tags"] == ["web", "prod.eu_1"] and spec.labels["note"] == "any text: ok"
    with pytest.raises(SpecError) as err:
        validate(VmSpec(name="a", tags=("ok", "no way")))
    assert err.value.field == "tags[1]"


def test_unset_keeps_stored_metadata_and_empty_clears_it():
    stored = VmSpec(name="a", tags=("web",), labels={"department": "sales"})
    kept = merge_params({"name": "a"}, stored)
    assert kept.tags == ("web",) and kept.labels == {"department": "sales"}
    cleared = merge_params({"name": "a", "tags": [], "labels": {}}, stored)
    assert cleared.tags == () and cleared.labels == {}
    changed = merge_params({"name": "a", "tags": ["web", "db"], "labels": {"department": "ops"}}, stored)
    assert changed_fields(stored, changed) == ["tags", "labels"]


def test_a_metadata_change_is_never_a_pending_restart():
    running = VmSpec(name="a", tags=("web",))
    changed = VmSpec(name="a", tags=("db",), labels={"x": "y"})
    assert changed_fields(running, changed) == ["tags", "labels"]
    assert pending_restart(running, changed) == []


def test_matches_wants_every_tag_and_label():
    tags, labels = ("web", "prod"), {"department": "sales", "tier": "1"}
    assert matches(tags, labels)
    assert matches(tags, labels, ["web", "prod"], {"tier": "1"})
    assert not matches(tags, labels, ["web", "db"])
    assert not matches(tags, labels, (), {"department": "ops"})
    assert not matches(tags, labels, (), {"missing": ""})
