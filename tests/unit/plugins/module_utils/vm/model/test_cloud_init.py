# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The NoCloud seed: the cloud_init option to the seed's files, and the errors of bad input."""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.cloud_init import seed_files

UUID = "6f1c2a3e-0000-4000-8000-000000000001"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@example"
KEY2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 other"


def config_of(data: bytes):
    text = data.decode()
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


# option -> (meta-data, user-data config or text, other files)
CASES = [
    ({}, {"instance-id": UUID}, {}, {}),
    (
        {"hostname": "web01", "ssh_authorized_keys": [KEY]},
        {"instance-id": UUID, "local-hostname": "web01"},
        {"ssh_authorized_keys": [KEY]},
        {},
    ),
    (
        {"meta_data": {"instance-id": "iid-7", "local-hostname": "db.example.org"}, "user_data": {"runcmd": ["true"]}},
        {"instance-id": "iid-7", "local-hostname": "db.example.org"},
        {"runcmd": ["true"]},
        {},
    ),
    (
        {
            "user_data": "#cloud-config\npackages: [nginx]\n",
            "users": ["default", {"name": "ops", "sudo": "ALL=(ALL) ALL"}],
        },
        {"instance-id": UUID},
        {"packages": ["nginx"], "users": ["default", {"name": "ops", "sudo": "ALL=(ALL) ALL"}]},
        {},
    ),
    (  # the short form adds to the keys user_data names, once each
        {"user_data": {"ssh_authorized_keys": [KEY2]}, "ssh_authorized_keys": [KEY2, KEY]},
        {"instance-id": UUID},
        {"ssh_authorized_keys": [KEY2, KEY]},
        {},
    ),
    (
        {
            "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
            "vendor_data": {"ntp": {"enabled": True}},
        },
        {"instance-id": UUID},
        {},
        {
            "network-config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
            "vendor-data": {"ntp": {"enabled": True}},
        },
    ),
]


@pytest.mark.parametrize("option,meta,user,others", CASES)
def test_the_option_becomes_the_seed_files(option, meta, user, others):
    files = seed_files(option, UUID)
    assert sorted(files) == sorted(["meta-data", "user-data"] + list(others))
    assert yaml.safe_load(files["meta-data"]) == meta
    assert config_of(files["user-data"]) == (user or None)
    for name, want in others.items():
        got = files[name].decode()
        assert yaml.safe_load(got) == want
        assert got.startswith("#cloud-config\n") == (name == "vendor-data")


def test_a_script_user_data_is_passed_as_is():
    script = "#!/bin/sh\necho hi > /dev/ttyS0\n"
    assert seed_files({"user_data": script, "hostname": "h1"}, UUID)["user-data"] == script.encode()


def test_a_cloud_config_string_without_short_forms_keeps_its_text_and_comments():
    text = "#cloud-config\n# why: the web tier\nhostname: w1\n"
    assert seed_files({"user_data": text}, UUID)["user-data"] == text.encode()


def test_the_same_option_gives_the_same_bytes_whatever_the_key_order():
    one = seed_files({"user_data": {"a": 1, "b": {"y": 2, "x": 3}}, "hostname": "h"}, UUID)
    two = seed_files({"hostname": "h", "user_data": {"b": {"x": 3, "y": 2}, "a": 1}}, UUID)
    assert one == two


def test_a_long_key_stays_on_one_line():
    key = "ssh-rsa " + "A" * 700 + " long"
    assert ("- " + key + "\n").encode() in seed_files({"ssh_authorized_keys": [key]}, UUID)["user-data"]


ERRORS = [
    ("not a dict", "cloud_init", "must be a dict"),
    ({"userdata": {}}, "cloud_init.userdata", "is not an option of cloud_init"),
    ({"user_data": "#cloud-config\nusers: [a\n"}, "cloud_init.user_data", "is not valid YAML"),
    ({"user_data": "#cloud-config\n- a\n- b\n"}, "cloud_init.user_data", "must be a YAML mapping"),
    ({"user_data": "hostname: x\n"}, "cloud_init.user_data", "must start with #cloud-config"),
    ({"user_data": 5}, "cloud_init.user_data", "must be a dict"),
    ({"vendor_data": "#cloud-config\n: : :\n  - x"}, "cloud_init.vendor_data", "is not valid YAML"),
    ({"user_data": {"when": object()}}, "cloud_init.user_data", "cannot be written as YAML"),
    ({"meta_data": "instance-id: x"}, "cloud_init.meta_data", "must be a dict"),
    ({"meta_data": {"instance-id": ""}}, "cloud_init.meta_data.instance-id", "non-empty string"),
    ({"meta_data": {"local-hostname": "bad_name"}}, "cloud_init.meta_data.local-hostname", "host name"),
    ({"hostname": "-web"}, "cloud_init.hostname", "host name"),
    ({"hostname": "a" * 64}, "cloud_init.hostname", "host name"),
    ({"hostname": "a", "meta_data": {"local-hostname": "b"}}, "cloud_init.hostname", "contradicts"),
    ({"network_config": {"version": 1, "config": []}}, "cloud_init.network_config.version", "must be 2"),
    ({"network_config": "version: 2"}, "cloud_init.network_config", "must be a dict"),
    ({"ssh_authorized_keys": ["AAAA me"]}, "cloud_init.ssh_authorized_keys[0]", "OpenSSH public key"),
    ({"ssh_authorized_keys": [KEY, KEY + "\n" + KEY]}, "cloud_init.ssh_authorized_keys[1]", "one OpenSSH"),
    ({"ssh_authorized_keys": {"k": KEY}}, "cloud_init.ssh_authorized_keys", "must be a list"),
    ({"users": "ops"}, "cloud_init.users", "must be a list"),
    ({"users": [{"sudo": "ALL"}]}, "cloud_init.users[0]", "a dict with a name"),
    ({"users": ["default"], "user_data": {"users": []}}, "cloud_init.users", "contradicts"),
    ({"users": ["default"], "user_data": "#!/bin/sh\ntrue\n"}, "cloud_init.users", "cannot be merged"),
]


@pytest.mark.parametrize("option,field,reason", ERRORS)
def test_bad_input_names_the_field(option, field, reason):
    with pytest.raises(SpecError) as exc:
        seed_files(option, UUID)
    assert exc.value.field == field
    assert reason in exc.value.reason


def test_a_yaml_error_says_where_but_never_quotes_the_text():
    with pytest.raises(SpecError) as exc:
        seed_files({"user_data": "#cloud-config\nchpasswd: {list: [root:S3cret-pw\n"}, UUID)
    assert "line 3" in str(exc.value) or "line 2" in str(exc.value)
    assert "S3cret" not in str(exc.value)
