# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether a VM's QEMU runs as its row recorded it, from files alone: no QMP (issue 20).

A recorded run is (PID, start time): the start time is field 22 of /proc/PID/stat, in clock
ticks since boot, so a PID the kernel gave to another process later does not match even
if that process, too, were a QEMU of the same VM. The UUID on the command line and the
qemu-system executable are checked as host/process.py always did. Whether the guest runs
or is paused comes from QEMU's own event log (the ``pipe`` chardev monitor, vm/engine/launch.py):
QEMU writes STOP before it reports a pause over QMP, so a log whose last run-state event
is RESUME belongs to a running guest. Anything else (no log, no event yet, a log cut
short) is not an answer: the caller asks QEMU over QMP.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.host.process import (
    DEAD_STATES,
    process_runs_vm,
    read_pidfile,
)

# Events after which QEMU's run state is other than it was. RESUME is the only one that
# leaves it running; WAKEUP (from S3) does too, but is rare enough to leave to QMP.
RUN_STATE_EVENTS = (
    b"RESUME",
    b"STOP",
    b"SUSPEND",
    b"SUSPEND_DISK",
    b"WAKEUP",
    b"GUEST_PANICKED",
    b"GUEST_CRASHLOADED",
    b"SHUTDOWN",
)
EVENT_LOG_TAIL = 64 * 1024  # run-state events are rare; the newest is near the end
STOPPED_STATES = ("T", "t")  # stopped by a signal or traced: cannot answer QMP


def process_stat(pid: int, proc_root: str = "/proc") -> Optional[Tuple[str, int]]:
    """(state letter, start time in clock ticks since boot) of a process, or None when
    there is no such process."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat")) as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and ')': the fields after it start past the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])  # field 3 (state) and field 22 (starttime)
    except (IndexError, ValueError):
        return None


def start_ticks(pid: Optional[int], proc_root: str = "/proc") -> Optional[int]:
    """The start time of process ``pid`` (what a row records next to the PID), or None."""
    stat = process_stat(pid, proc_root) if pid else None
    return stat[1] if stat else None


def runs_as_recorded(
    pidfile: str, pid: Optional[int], started: Optional[int], uuid: str, proc_root: str = "/proc"
) -> bool:
    """Whether the QEMU the row recorded (``pid`` started at ``started`` ticks) is alive,
    still named by the VM's pidfile, is this VM's QEMU (``-uuid``) and can answer (not
    stopped by a signal). False is not "dead": it means the row and the host disagree or
    cannot be compared, and QEMU must be asked."""
    if not pid or started is None or read_pidfile(pidfile) != pid:
        return False
    stat = process_stat(pid, proc_root)
    if stat is None or stat[1] != started or stat[0] in DEAD_STATES + STOPPED_STATES:
        return False
    return process_runs_vm(pid, uuid, proc_root)


def last_run_event(event_log: str) -> Optional[str]:
    """The newest run-state event (RUN_STATE_EVENTS) in QEMU's event log file ``event_log``
    (its ``.out``), or None when there is none in its last EVENT_LOG_TAIL bytes or no file."""
    try:
        with open(event_log, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - EVENT_LOG_TAIL))
            data = handle.read()
    except OSError:
        return None
    for line in reversed(data.split(b"\n")):
        if b'"event"' not in line or not any(name in line for name in RUN_STATE_EVENTS):
            continue
        try:
            event = json.loads(line).get("event")
        except (ValueError, AttributeError):
            continue  # a line QEMU is still writing, or one cut by the tail
        if isinstance(event, str) and event.encode() in RUN_STATE_EVENTS:
            return event
    return None


def settled_running(
    pidfile: str, pid: Optional[int], started: Optional[int], uuid: str, proc_root: str = "/proc"
) -> bool:
    """Whether a VM whose row says it runs as (``pid``, ``started``) runs so now, guest not
    paused, as far as files tell: the QEMU of runs_as_recorded, and RESUME the last
    run-state event of its event log (``<base>.evlog.out`` beside ``<base>.pid``)."""
    if not pidfile.endswith(".pid") or not runs_as_recorded(pidfile, pid, started, uuid, proc_root):
        return False
    return last_run_event(pidfile[: -len(".pid")] + ".evlog.out") == "RESUME"
