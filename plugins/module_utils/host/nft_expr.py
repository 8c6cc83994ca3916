# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""nftables JSON expressions shared by the NAT tables (host/nat.py) and the firewall
(firewall/nftables.py); host/programs.run_nft runs what they build."""

from __future__ import annotations

from typing import Any, Dict

Expr = Dict[str, Any]


def match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}
