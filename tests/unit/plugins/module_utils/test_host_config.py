# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host configuration file: precedence, bad files, unknown keys (issue 18 item 6)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils import host_config
from ansible_collections.infinivirt.core.plugins.module_utils.host_config import HostConfigError, resolve
from ansible_collections.infinivirt.core.plugins.module_utils.monitor import cli

FILE = {
    "db_url": "sqlite:////srv/iv/state.db",
    "run_dir": "/srv/iv/run",
    "storage_roots": ["/srv/iv/images", "/srv/iv/more"],
    "secret_key_file": "/srv/iv/key",
    "nvram_dir": "/srv/iv/nvram",
    "host_id": "hv-7",
}


def write(tmp_path, data) -> str:
    path = str(tmp_path / "host.json")
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_set_option_beats_the_file_which_beats_the_default(tmp_path):
    path = write(tmp_path, {k: v for k, v in FILE.items() if k != "nvram_dir"})
    given = dict.fromkeys(host_config.DEFAULTS)
    given["run_dir"] = "/task/run"
    values = resolve(given, path)
    assert values["run_dir"] == "/task/run"  # the task's
    assert values["storage_roots"] == FILE["storage_roots"]  # the file's
    assert values["db_url"] == FILE["db_url"] and values["secret_key_file"] == "/srv/iv/key"
    assert values["host_id"] == "hv-7"
    assert values["nvram_dir"] == host_config.DEFAULT_NVRAM_DIR  # the built-in one


def test_a_missing_file_gives_the_built_in_defaults(tmp_path):
    values = resolve({}, str(tmp_path / "absent.json"))
    assert values == host_config.DEFAULTS
    assert values["storage_roots"] is not host_config.DEFAULTS["storage_roots"]  # a copy


@pytest.mark.parametrize(
    "data, wanted",
    [
        ({"db_url": "x", "storage_root": ["/a"]}, "key 'storage_root' is not known"),
        ({"storage_roots": "/a"}, "key 'storage_roots' must be a non-empty list"),
        ({"storage_roots": ["images"]}, "key 'storage_roots' must list absolute paths"),
        ({"nvram_dir": "nvram"}, "key 'nvram_dir' must be an absolute path"),
        ({"db_url": 5}, "key 'db_url' must be a non-empty string"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
    ],
)
def test_a_bad_file_is_an_error_naming_file_and_key(tmp_path, data, wanted):
    path = write(tmp_path, data)
    with pytest.raises(HostConfigError) as err:
        resolve({}, path)
    assert wanted in str(err.value) and path in str(err.value)


def test_an_unreadable_file_is_an_error(tmp_path):
    path = str(tmp_path / "dir.json")
    os.mkdir(path)  # open() fails with EISDIR, also for root
    with pytest.raises(HostConfigError, match="cannot be read"):
        resolve({}, path)


def test_the_monitor_reads_the_file_and_its_flags_override(tmp_path, monkeypatch):
    for var in ("INFINIVIRT_DB_URL", "INFINIVIRT_RUN_DIR", "INFINIVIRT_HOST_CONFIG", "INFINIVIRT_HOST_ID"):
        monkeypatch.delenv(var, raising=False)
    path = write(tmp_path, FILE)
    args = cli.parse(["--config", path, "--nvram-dir", "/flag/nvram"])
    assert args.storage_roots == FILE["storage_roots"] and args.secret_key_file == "/srv/iv/key"
    assert args.db_url == FILE["db_url"] and args.run_dir == "/srv/iv/run" and args.host_id == "hv-7"
    assert args.nvram_dir == "/flag/nvram"
    monkeypatch.setenv("INFINIVIRT_HOST_CONFIG", path)
    monkeypatch.setenv("INFINIVIRT_RUN_DIR", "/env/run")
    args = cli.parse([])
    assert args.run_dir == "/env/run" and args.db_url == FILE["db_url"] and args.host_id == "hv-7"
    monkeypatch.setenv("INFINIVIRT_HOST_ID", "hv-env")  # the modules' variable names the host here too
    assert cli.parse([]).host_id == "hv-env" and cli.parse(["--host-id", "hv-flag"]).host_id == "hv-flag"


def test_the_monitor_refuses_a_bad_file(tmp_path, capsys):
    path = write(tmp_path, {"nvram": "/x"})
    with pytest.raises(SystemExit) as exited:
        cli.parse(["--config", path])
    assert exited.value.code == 2
    assert "host configuration %s: key 'nvram' is not known" % path in capsys.readouterr().err
