# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A VM's virtiofsd daemons (``shared_dirs``): one per share, started by the start before
QEMU (QEMU connects to its socket), journaled (kind ``virtiofsd``, the socket) before each
exists, so a failed start, a stop or the host monitor's clean-up ends what is left
(HostResources.release_files). A daemon ends by itself when its QEMU goes."""

from __future__ import annotations

import os
from typing import Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, QemuError
from ansible_collections.infinivirt.core.plugins.module_utils.host import virtiofsd
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import systemd_scope_prefix
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.shares import virtiofsd_argv

JOURNAL_KIND = "virtiofsd"


def socket_path(run_dir: str, uuid: str, index: int) -> str:
    return os.path.join(run_dir, "%s.fs%d.sock" % (uuid, index))


def start_all(engine, rec: VmRecord) -> Tuple[str, ...]:
    """Each share's daemon, in order; their sockets (QEMU's chardevs). The sources are
    checked again here: a directory may have gone since the task's preflight."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.preflight import check_shares

    if not rec.spec.shared_dirs:
        return ()
    check_shares(rec.spec, engine.resources.storage_roots)
    program = virtiofsd.binary()
    sockets = []
    for index, share in enumerate(rec.spec.shared_dirs):
        path = socket_path(engine.run_dir, rec.uuid, index)
        engine.store.journal_add(engine.resources.key(rec), JOURNAL_KIND, path)
        argv, bind_readonly = virtiofsd_argv(program, path, share)
        # A scope of its own, as QEMU has: it outlives the task (or monitor) that started it.
        argv = systemd_scope_prefix("%s-fs%d" % (rec.uuid, index), rec.name) + argv
        try:
            virtiofsd.start(argv, path, share["source"] if bind_readonly else None)
        except InfinivirtError as exc:
            raise QemuError("VM %s: shared_dirs[%d] (%s): %s" % (rec.name, index, share["tag"], exc)) from None
        sockets.append(path)
    return tuple(sockets)
