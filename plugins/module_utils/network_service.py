# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_net does: a named network of this host, backed by a Linux bridge."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.net import (
    BridgeSpec,
    apply_bridge,
    changes,
    read_bridge,
    remove_bridge,
    validate_bridge,
    validate_ifname,
)
from ansible_collections.infinivirt.core.plugins.module_utils.validation import check_choice

MODES = ("bridge",)


class NetworkService:
    def __init__(self, store, hostname: str, netns: Optional[str] = None):
        self.store = store
        self.hostname = hostname
        self.netns = netns

    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        name = validate_ifname("name", params.get("name"))
        state = params.get("state") or "present"
        check_choice("state", state, ("present", "absent"))
        row = self.store.get_network(name)
        if row is not None and row["host"] != self.hostname:
            raise StateError("network %s belongs to host %s" % (name, row["host"]))
        if state == "absent":
            return self._absent(name, row, check_mode)
        mode = params.get("mode") or "bridge"
        check_choice("mode", mode, MODES)
        spec = validate_bridge(BridgeSpec(
            name=params.get("bridge") or name, mtu=params.get("mtu"), stp=bool(params.get("stp")),
            addresses=tuple(params.get("addresses") or ())))
        with self.store.vm_lock("@network-" + name, 60):
            current = read_bridge(spec.name, self.netns)
            todo = changes(spec, current)
            recorded = row is not None and row["spec"] == spec.to_dict()
            managed = row["managed"] if row is not None else current is None
            if not check_mode:
                if todo:
                    apply_bridge(spec, self.netns)
                if not recorded:
                    self.store.put_network(name, self.hostname, mode, spec.to_dict(), managed)
        before = _view(current, spec.name) if row is not None or current is not None else {"state": "absent"}
        after = dict(spec.to_dict(), state="present")
        return {"changed": bool(todo) or not recorded, "actions": todo,
                "network": dict(after, name=name, mode=mode, managed=managed),
                "diff": {"before": before, "after": after}}

    def _absent(self, name: str, row: Optional[Dict[str, Any]], check_mode: bool) -> Dict[str, Any]:
        if row is None:
            return {"changed": False, "actions": [], "network": {"name": name, "state": "absent"},
                    "diff": {"before": {"state": "absent"}, "after": {"state": "absent"}}}
        bridge = row["spec"]["bridge"]
        if not check_mode:
            if row["managed"]:  # a bridge Infinivirt did not create stays
                remove_bridge(bridge, self.netns)
            self.store.delete_network(name)
        return {"changed": True, "actions": ["remove"] if row["managed"] else ["forget"],
                "network": {"name": name, "state": "absent"},
                "diff": {"before": dict(row["spec"], state="present"), "after": {"state": "absent"}}}


def _view(state, bridge: str) -> Dict[str, Any]:
    if state is None:
        return {"state": "absent"}
    return {"bridge": bridge, "mtu": state.mtu, "stp": state.stp, "addresses": list(state.addresses),
            "state": "present"}
