# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's metadata (issue 22): ``tags`` and ``labels``, what inventories group VMs by.

Tags and label keys become Ansible group names (the inventory plugin), so they keep to
letters, digits, '.', '_' and '-'. Neither reaches QEMU or the host: changing them is never
a restart. Pure.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import CONTROL_RE

TAGS_MAX = 64
LABELS_MAX = 64
LABEL_VALUE_MAX = 256
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_KEY_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"


def validate_tags(tags: Sequence[Any]) -> Tuple[str, ...]:
    """The tags in the order given; an error names ``tags[N]``."""
    if len(tags) > TAGS_MAX:
        raise SpecError("tags", "at most %d tags, got %d" % (TAGS_MAX, len(tags)))
    seen = set()
    for index, tag in enumerate(tags):
        field = "tags[%d]" % index
        if not isinstance(tag, str) or not _KEY_RE.fullmatch(tag):
            raise SpecError(field, "%r must be %s" % (tag, _KEY_RULE))
        if tag in seen:
            raise SpecError(field, "%r is given twice" % tag)
        seen.add(tag)
    return tuple(tags)


def validate_labels(labels: Mapping[Any, Any]) -> Dict[str, str]:
    """The labels; an error names ``labels.KEY``."""
    if not isinstance(labels, Mapping):
        raise SpecError("labels", "must be a dict of strings to strings")
    if len(labels) > LABELS_MAX:
        raise SpecError("labels", "at most %d labels, got %d" % (LABELS_MAX, len(labels)))
    for key, value in labels.items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise SpecError("labels.%s" % key, "the key must be %s" % _KEY_RULE)
        field = "labels.%s" % key
        if not isinstance(value, str):
            raise SpecError(field, "the value must be a string, got %r (quote it)" % (value,))
        if len(value) > LABEL_VALUE_MAX:
            raise SpecError(field, "the value must be at most %d characters" % LABEL_VALUE_MAX)
        if CONTROL_RE.search(value):
            raise SpecError(field, "the value must not contain control characters")
    return dict(labels)


def matches(
    tags: Sequence[str],
    labels: Mapping[str, str],
    want_tags: Sequence[str] = (),
    want_labels: Optional[Mapping[str, str]] = None,
) -> bool:
    """Whether a VM with ``tags`` and ``labels`` has every wanted tag and label."""
    if any(tag not in tags for tag in want_tags):
        return False
    return all(labels.get(key) == value for key, value in (want_labels or {}).items())
