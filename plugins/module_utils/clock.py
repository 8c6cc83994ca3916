# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The one clock of stored times: UTC, ISO 8601, to the second (events: to the microsecond,
so that they sort in the order they happened)."""

from __future__ import annotations

import datetime
from typing import Optional


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def event_time(seconds: Optional[float] = None) -> str:
    """Now, or a Unix time (QEMU stamps its events so), in the event log's format."""
    moment = (
        datetime.datetime.now(datetime.timezone.utc)
        if seconds is None
        else datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    )
    return moment.isoformat(timespec="microseconds")
