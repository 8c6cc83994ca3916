# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""run_dir and database files other users could change are refused or tightened, and a
db_url in a missing directory is an error, before anything is made."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.service import VmService

pytestmark = [pytest.mark.playbook]

NOBODY = 65534


def opened(db_url, run_dir):
    service = VmService.open(db_url, run_dir)
    service.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def refused(db_url, run_dir, field, phrase):
    with pytest.raises(SpecError) as err:
        opened(db_url, run_dir)
    assert err.value.field == field and phrase in str(err.value), str(err.value)


def test_a_run_dir_that_is_a_file_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.write_text("not a directory")
    refused("sqlite:///%s/s.db" % tmp_path, str(run_dir), "run_dir", "is not a directory")
    assert not (tmp_path / "s.db").exists(), "nothing is made"


@pytest.mark.parametrize("loose", [0o777, 0o770, 0o702])
def test_a_run_dir_others_may_write_is_refused(tmp_path, loose):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(loose)
    refused("sqlite:///%s/s.db" % tmp_path, str(run_dir), "run_dir", "writable by other users")


def test_a_run_dir_of_another_user_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(str(run_dir), NOBODY, NOBODY)
    refused("sqlite:///%s/s.db" % tmp_path, str(run_dir), "run_dir", "belongs to uid %d" % NOBODY)


def test_a_run_dir_under_a_directory_others_may_change_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone may rename our run_dir and put a link there
    refused("sqlite:///%s/s.db" % tmp_path, str(shared / "run"), "run_dir", "which another user may change")
    shared.chmod(0o1777)  # a root-owned sticky directory like /tmp keeps our entries ours
    opened("sqlite:///%s/s.db" % tmp_path, str(shared / "run"))


def test_an_existing_run_dir_and_database_are_tightened(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o755)
    db = tmp_path / "s.db"
    opened("sqlite:///%s" % db, str(run_dir))
    db.chmod(0o644)
    opened("sqlite:///%s" % db, str(run_dir))
    assert mode(run_dir) == 0o700 and mode(db) == 0o600


def test_a_database_in_a_missing_directory_is_an_error(tmp_path):
    missing = tmp_path / "typo" / "state.db"
    refused("sqlite:///%s" % missing, str(tmp_path / "run"), "db_url", "does not exist")
    assert not missing.parent.exists(), "an empty inventory was not made"


def test_the_module_reports_a_bad_run_dir_without_a_traceback(tmp_path):
    """The same check through ansible-playbook: a clear message naming run_dir."""
    from helpers import run_playbook

    (tmp_path / "run").write_text("a file")
    done = run_playbook("host_safety.yml", {"db_url": "sqlite:///%s/s.db" % tmp_path, "run_dir": str(tmp_path / "run")})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "failed=0" in done.stdout
