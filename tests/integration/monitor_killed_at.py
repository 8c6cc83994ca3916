# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The real host monitor, killed (SIGKILL, by itself) at one step of handling a VM whose
QEMU ended, as a host's OOM killer or an operator's kill -9 would:

    python monitor_killed_at.py STEP infinivirt-monitor-arguments...

STEP is one of STEPS; MonitorProcess(kill_at=STEP) runs it."""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collection_path import install_on_sys_path  # noqa: E402


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def main(step, argv):
    install_on_sys_path()
    from ansible_collections.infinivirt.core.plugins.module_utils.monitor import cli, service
    from ansible_collections.infinivirt.core.plugins.module_utils.vm import power
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.engine import Engine

    if step == "before_cleanup":  # QEMU ended; nothing cleaned up, decided or recorded
        Engine.clean_up_dead = die
    elif step == "before_restart":  # cleaned up and decided (row and event written), not restarted
        service.Monitor._restart = die
    elif step == "after_restart":  # the new QEMU runs and its row says so; nothing after that
        real = power.start_vm

        def start_then_die(*args, **kwargs):
            real(*args, **kwargs)
            die()

        power.start_vm = start_then_die
    else:
        sys.exit("unknown step %r" % step)
    return cli.main(argv)


STEPS = ("before_cleanup", "before_restart", "after_restart")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
