# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure parts of a start: the files a QEMU gets (process.VmPaths), the systemd scope wrapper
(launch.py) and how QEMU's run states fold into the user's (vm/model/states.py)."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.launch import systemd_scope_prefix
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.process import VmPaths
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.states import fold_status

UUID = "0b7c1f0e-3c1d-4a53-9a7e-6b0f8d1f2a11"


def test_files_are_named_after_the_uuid():
    paths = VmPaths.for_vm("/run/infinivirt", UUID)
    assert paths.pidfile == "/run/infinivirt/%s.pid" % UUID
    assert paths.qmp_socket == "/run/infinivirt/%s.qmp" % UUID
    assert paths.serial_log == "/run/infinivirt/%s.serial.log" % UUID
    assert paths.events_socket == "/run/infinivirt/%s.evt" % UUID
    kinds = [kind for kind, _path in paths.journal()]
    assert kinds == ["pidfile", "qmp_socket", "events_socket", "serial_log", "event_log", "event_log"]


def test_a_run_dir_too_long_for_a_unix_socket_is_refused():
    with pytest.raises(SpecError) as err:
        VmPaths.for_vm("/" + "d" * 70, UUID)
    assert err.value.field == "run_dir" and "107-byte" in str(err.value)


def test_systemd_scope_only_where_systemd_runs(tmp_path):
    assert systemd_scope_prefix(UUID, "web01", str(tmp_path / "absent"), "/bin/systemd-run") == []
    prefix = systemd_scope_prefix(UUID, "web01", str(tmp_path), "/bin/systemd-run")
    assert prefix[:2] == ["/bin/systemd-run", "--scope"]
    assert "--unit=infinivirt-%s" % UUID in prefix and "--slice=infinivirt.slice" in prefix


@pytest.mark.parametrize(
    "qemu,state",
    [
        (None, "stopped"),
        ("running", "running"),
        ("paused", "paused"),
        ("prelaunch", "paused"),
        ("suspended", "paused"),
    ],
)
def test_qemu_states_fold_into_user_states(qemu, state):
    assert fold_status(qemu) == state
