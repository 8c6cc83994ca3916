# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""wait_for/wait_timeout validation, the console tail (bounded, cleaned, masked), the
secrets of a cloud_init option and the agent's address of a NIC."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.readiness import (
    DEFAULT_WAIT_TIMEOUT,
    MASK,
    TAIL_BYTES,
    TAIL_LINES,
    WaitSpec,
    agent_address,
    clean_text,
    cloud_init_secrets,
    console_tail,
    parse_wait,
)


# -- the options ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["agent", "ip", "ssh"])
def test_the_string_forms(kind):
    assert parse_wait({"wait_for": kind}) == WaitSpec(kind, DEFAULT_WAIT_TIMEOUT)


def test_serial_and_the_timeout_edges():
    assert parse_wait({"wait_for": {"serial": "login:"}, "wait_timeout": 0}) == WaitSpec("serial", 0.0, "login:")
    assert parse_wait({"wait_for": "ssh", "wait_timeout": 10**12}).timeout == 1e12
    assert parse_wait({"wait_for": "ssh", "wait_timeout": 2.5}).timeout == 2.5
    assert parse_wait({}) is None
    assert parse_wait({"wait_timeout": 5}) is None  # checked, but nothing to wait for


@pytest.mark.parametrize(
    "params, field, words",
    [
        (
            {"wait_for": "ping"},
            "wait_for",
            "must be one of agent, ip, ssh, or a dictionary {serial: REGEX}, got 'ping'",
        ),
        ({"wait_for": "SSH"}, "wait_for", "got 'SSH'"),
        ({"wait_for": 3}, "wait_for", "got 'int'"),
        ({"wait_for": ["ssh"]}, "wait_for", "got 'list'"),
        ({"wait_for": {"serial": "x", "ssh": 1}}, "wait_for", "must be one of"),
        ({"wait_for": {}}, "wait_for", "must be one of"),
        ({"wait_for": {"serial": "a(b"}}, "wait_for.serial", "not a valid regular expression: missing ), unterminated"),
        ({"wait_for": {"serial": ""}}, "wait_for.serial", "non-empty string"),
        ({"wait_for": {"serial": 5}}, "wait_for.serial", "non-empty string"),
        ({"wait_for": "ssh", "wait_timeout": -1}, "wait_timeout", "0 or more"),
        ({"wait_for": "ssh", "wait_timeout": -0.5}, "wait_timeout", "0 or more"),
        ({"wait_timeout": "10"}, "wait_timeout", "must be a number of seconds"),
        ({"wait_timeout": True}, "wait_timeout", "must be a number of seconds"),
        ({"wait_timeout": float("inf")}, "wait_timeout", "finite"),
        ({"wait_timeout": float("nan")}, "wait_timeout", "finite"),
    ],
)
def test_bad_values_name_the_option(params, field, words):
    with pytest.raises(SpecError) as failed:
        parse_wait(params)
    assert failed.value.field == field and words in failed.value.reason, str(failed.value)


# -- the console tail -----------------------------------------------------------------------
def test_escapes_controls_and_bad_bytes_are_cleaned():
    raw = b"\x1b[1;32mOK\x1b[0m done\r\n\x1b]0;title\x07boot\x00\x07 \xff\xfe end\rnext\x1b(B"
    assert clean_text(raw) == "OK done\nboot \ufffd\ufffd end\nnext"


def test_the_tail_is_bounded_in_lines_and_bytes():
    data = b"".join(b"line %d\n" % i for i in range(1000))
    tail = console_tail(data, [], whole=True)
    assert len(tail) == TAIL_LINES and tail[-1] == "line 999" and tail[0] == "line 960"
    wide = b"".join(b"%s%d\n" % (b"x" * 300, i) for i in range(100))
    tail = console_tail(wide, [], whole=True)
    assert len("\n".join(tail).encode()) <= TAIL_BYTES and tail[-1].endswith("x99")
    huge = "é".encode() * 10000  # one line, longer than the bound: its end, whole characters
    (only,) = console_tail(huge, [], whole=True)
    assert 0 < len(only.encode()) < TAIL_BYTES and set(only) == {"é"}


def test_a_partial_first_line_is_dropped_unless_the_log_starts_there():
    assert console_tail(b"ret\nwhole line\n", [], whole=False) == ["whole line"]
    assert console_tail(b"first\nsecond\n\n\n", [], whole=True) == ["first", "second"]
    assert console_tail(b"", [], whole=True) == []


def test_secrets_are_masked_even_inside_escapes_and_longest_first():
    data = b"Command line: ivpw=s3cr\x1b[0met ivci=s3cret-longer\nkey: LUKSkey1\n"
    tail = console_tail(data, ["s3cret", "s3cret-longer", "LUKSkey1", ""], whole=True)
    assert tail == ["Command line: ivpw=%s ivci=%s" % (MASK, MASK), "key: %s" % MASK]
    assert not any("s3cret" in line or "longer" in line for line in tail)


def test_a_multi_line_secret_is_masked_line_by_line():
    key = "-----BEGIN KEY-----\nAAAAsecretbody\n-----END KEY-----"
    tail = console_tail(b"cat: AAAAsecretbody\n", [key], whole=True)
    assert tail == ["cat: %s" % MASK]


def test_cloud_init_secrets():
    option = {
        "hostname": "web01",
        "meta_data": {"local-hostname": "web01"},
        "user_data": {
            "chpasswd": {"users": [{"name": "root", "password": "pw1"}]},  # short, under a secret key
            "runcmd": [["echo", "token-abc123"]],
            "ok": True,
        },
        "users": [{"name": "ops", "passwd": "$6$hash"}],
        "ssh_authorized_keys": ["ssh-ed25519 AAAAC3 k@h"],
    }
    found = cloud_init_secrets(option)
    assert {"pw1", "token-abc123", "$6$hash", "ssh-ed25519 AAAAC3 k@h"} <= set(found)
    assert "ops" not in found  # short, and not under a key that names a secret
    assert "root" in found  # short, but under chpasswd: everything there is
    assert "web01" not in found  # hostname and meta_data are not secret
    text = cloud_init_secrets({"user_data": "#cloud-config\npassword: hunter22\nchpasswd: {expire: false}\n"})
    assert "hunter22" in text
    script = cloud_init_secrets({"user_data": "#!/bin/sh\necho s3cretScript > /root/x\n"})
    assert "echo s3cretScript > /root/x" in script
    assert cloud_init_secrets(None) == [] and cloud_init_secrets("x") == []


def test_the_agent_address_of_a_nic():
    entry = {
        "ips": ["10.0.0.5", "fd00::5", "192.168.9.9"],
        "interfaces": [
            {"name": "lo", "mac": "00:00:00:00:00:00", "ips": ["127.0.0.1"]},
            {"name": "eth0", "mac": "52:54:00:aa:00:01", "ips": ["fe80::1%eth0", "fd00::5", "10.0.0.5"]},
            {"name": "docker0", "mac": "02:42:00:00:00:01", "ips": ["192.168.9.9"]},
        ],
    }
    assert agent_address(entry, ["52:54:00:AA:00:01"]) == "10.0.0.5"  # IPv4 first, the VM's NIC only
    assert agent_address(entry, ["52:54:00:aa:00:02"]) is None
    assert agent_address({"ips": [], "interfaces": []}, ["52:54:00:aa:00:01"]) is None
