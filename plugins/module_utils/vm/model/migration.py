# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A live migration as a pure model (issue 23; docs/architecture.md "Migration"): the
request checked (errors name the option), the QMP capabilities and parameters it asks of
the source QEMU, the handover's states and which side may move them, and the result read
from ``query-migrate``.

The two hosts meet in the store (store/handovers.py): the source task writes a request,
the target host's monitor answers it. Every state change is a compare-and-set on the
request row, so a side that died or timed out cannot undo the other's step."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import (
    CONTROL_RE,
    check_choice,
    check_int,
    validate_name,
)

STORAGE_MODES = ("shared", "copy", "auto")
MAX_DOWNTIME_MS = (1, 3_600_000)
BANDWIDTH_MBIT = (1, 1_000_000)
TIMEOUT_S = (1, 86_400)
# QEMU's own max-bandwidth (128 MiB/s): parameters stick to a QEMU, so a migration without
# bandwidth_mbit sets it back after one that had it
QEMU_MAX_BANDWIDTH = 128 * 1024 * 1024
HOST_MAX = 255

# The handover's states. REQUESTED (source) -> LISTENING (target: QEMU waits on ``uri``)
# -> SENT (source: the stream completed, the source guest is paused) -> TAKING (target: its
# QEMU read the whole stream; from now on only the target decides) -> DONE (target: the guest
# runs there, and the row names it in the same transaction). TAKING may also follow LISTENING
# directly: a target whose QEMU has the whole stream knows the source completed, and need not
# wait for SENT (the guest is paused on both sides meanwhile: that wait is downtime).
# ABORTED (source, before TAKING: the target cleans up, the source resumes) and REFUSED
# (target: it could not take the VM, or could not run it; ``error`` says why; the source
# resumes) end a failed one. Once TAKING, the source never resumes on its own: the guest may
# already run on the target, and two running copies would corrupt its disks.
REQUESTED, LISTENING, SENT, TAKING = "requested", "listening", "sent", "taking"
DONE, ABORTED, REFUSED = "done", "aborted", "refused"
SOURCE, TARGET = "source", "target"
_MOVES = {
    (REQUESTED, LISTENING): TARGET,
    (REQUESTED, REFUSED): TARGET,
    (LISTENING, SENT): SOURCE,
    (LISTENING, REFUSED): TARGET,  # its QEMU died while listening
    (LISTENING, TAKING): TARGET,
    (SENT, TAKING): TARGET,
    (TAKING, DONE): TARGET,
    (TAKING, REFUSED): TARGET,  # the guest did not run there: its QEMU is ended first
    (REQUESTED, ABORTED): SOURCE,
    (LISTENING, ABORTED): SOURCE,
    (SENT, ABORTED): SOURCE,  # the target did not take it in time: the source takes the guest back
}
FINAL = (DONE, ABORTED, REFUSED)


def may_move(state: str, new: str, side: str) -> bool:
    """Whether ``side`` may move a handover from ``state`` to ``new``."""
    return _MOVES.get((state, new)) == side


@dataclasses.dataclass(frozen=True)
class MigrationRequest:
    name: str
    to: str  # the target's host id (its inventory hostname)
    max_downtime_ms: int = 300
    bandwidth_mbit: Optional[int] = None  # None: QEMU's own limit
    auto_converge: bool = False
    postcopy: bool = False
    storage: str = "auto"
    timeout: int = 600  # seconds for the whole migration, the target's answer included
    # Filled in by the source for the target (vm/model/storage_copy.py): the token of the
    # markers it wrote beside the disks, and each disk's facts (DiskFacts as dicts).
    marker: Optional[str] = None
    disks: Tuple[Dict[str, Any], ...] = ()
    offline: bool = False  # a stopped VM: the target checks and serves its disks, runs no QEMU

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def validate_request(params: Mapping[str, Any], source_host: str) -> MigrationRequest:
    """The module's options checked, or a SpecError naming the option."""
    to = params.get("to")
    if not isinstance(to, str) or not to or len(to) > HOST_MAX or CONTROL_RE.search(to):
        raise SpecError("to", "must be the target host's inventory hostname (1 to %d characters)" % HOST_MAX)
    if to == source_host:
        raise SpecError("to", "names this host (%s): a VM migrates to another host" % source_host)
    req = MigrationRequest(
        name=validate_name(params.get("name")),
        to=to,
        max_downtime_ms=check_int("max_downtime_ms", _given(params, "max_downtime_ms", 300), *MAX_DOWNTIME_MS),
        bandwidth_mbit=(
            None
            if params.get("bandwidth_mbit") is None
            else check_int("bandwidth_mbit", params["bandwidth_mbit"], *BANDWIDTH_MBIT)
        ),
        auto_converge=bool(params.get("auto_converge")),
        postcopy=bool(params.get("postcopy")),
        storage=check_choice("storage", _given(params, "storage", "auto"), STORAGE_MODES),
        timeout=check_int("timeout", _given(params, "timeout", 600), *TIMEOUT_S),
    )
    return req


def _given(params: Mapping[str, Any], key: str, default: Any) -> Any:
    value = params.get(key)
    return default if value is None else value


def capabilities(req: MigrationRequest) -> List[Dict[str, Any]]:
    """``migrate-set-capabilities`` of the source (post-copy must be on at both ends)."""
    return [
        {"capability": "auto-converge", "state": req.auto_converge},
        {"capability": "postcopy-ram", "state": req.postcopy},
        {"capability": "events", "state": True},
    ]


def parameters(req: MigrationRequest) -> Dict[str, Any]:
    """``migrate-set-parameters`` of the source: downtime in ms, bandwidth in bytes/s (each
    set every time: an earlier migration's values stay in the QEMU)."""
    bandwidth = QEMU_MAX_BANDWIDTH if req.bandwidth_mbit is None else req.bandwidth_mbit * 1_000_000 // 8
    return {"downtime-limit": req.max_downtime_ms, "max-bandwidth": bandwidth}


def outcome(reply: Mapping[str, Any]) -> Dict[str, Any]:
    """The result's numbers from the source's last ``query-migrate``: bytes sent, the guest's
    downtime and QEMU's own duration (ms)."""
    ram = reply.get("ram") or {}
    return {
        "transferred_bytes": int(ram.get("transferred", 0)),
        "downtime_ms": reply.get("downtime"),
        "total_time_ms": reply.get("total-time"),
    }


POSTCOPY_AFTER_SYNCS = 2


def postcopy_due(reply: Mapping[str, Any]) -> bool:
    """Whether ``send`` switches to post-copy now: the stream is active and QEMU has synced
    the dirty bitmap twice, i.e. the first full pass over the RAM is done (sync 1 is the
    start). Earlier would fault in every page over the network; later wastes passes that
    do not converge. A guest that converges at its second sync completes before this is
    seen: that is fine, pre-copy was enough."""
    ram = reply.get("ram") or {}
    return reply.get("status") == "active" and int(ram.get("dirty-sync-count") or 0) >= POSTCOPY_AFTER_SYNCS
