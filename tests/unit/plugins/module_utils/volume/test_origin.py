# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""infinivirt_disk's decision on a volume made from an image or template, through tables,
without qemu-img or a network: options -> Origin or refusal; (origin, image, desired) ->
steps and predicted volume, or refusal."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import (
    Origin,
    origin_from_params,
    parse_checksum,
    plan_make,
    shown_url,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.plan import VolumeState

SUM = "sha256:" + "ab" * 32
HEX = "ab" * 32
M = 1 << 20
PATH = "/srv/vols/new.qcow2"
TEMPLATE = "/srv/vols/base.qcow2"


def image(driver="qcow2", size=8 * M, encrypted=False, backing=None):
    fmt = "raw" if driver in ("raw", "luks") else driver
    return VolumeState(fmt, driver, size, 4096, encrypted, backing, None, {"format": driver})


ORIGINS = [
    # (options, expected Origin or (field, phrase))
    ({}, None),
    ({"size": "1G"}, None),
    ({"source": "https://h.example/i.qcow2", "checksum": SUM}, Origin("url", "https://h.example/i.qcow2", HEX)),
    (
        {"source": "http://h:8080/i.img", "checksum": SUM.upper().replace("SHA", "sha")},
        Origin("url", "http://h:8080/i.img", HEX),
    ),
    ({"source": "/tmp/i.vmdk"}, Origin("file", "/tmp/i.vmdk")),
    ({"source": "/tmp/i.vmdk", "checksum": SUM}, Origin("file", "/tmp/i.vmdk", HEX)),
    ({"clone_from": TEMPLATE}, Origin("clone", TEMPLATE, clone_mode="linked")),
    ({"clone_from": TEMPLATE, "clone_mode": "full"}, Origin("clone", TEMPLATE, clone_mode="full")),
    ({"source": "https://h/i.qcow2"}, ("checksum", "is required with a URL")),
    ({"source": "https://h/i", "checksum": "sha256:abc"}, ("checksum", "64 hexadecimal")),
    ({"source": "https://h/i", "checksum": "md5:" + "a" * 32}, ("checksum", "must be")),
    ({"source": "https://h/i", "checksum": 12}, ("checksum", "must be")),
    ({"source": "ftp://h/i", "checksum": SUM}, ("source", "only http:// and https://")),
    ({"source": "file:///etc/shadow", "checksum": SUM}, ("source", "only http:// and https://")),
    ({"source": "https://user:pw@h/i", "checksum": SUM}, ("source", "user name or password")),
    ({"source": "https://h:99999/i", "checksum": SUM}, ("source", "not a valid URL")),
    ({"source": "relative/i.qcow2"}, ("source", "absolute path")),
    ({"source": "/tmp/a\nb"}, ("source", "control characters")),
    ({"source": "/tmp/i", "clone_from": TEMPLATE}, ("clone_from", "cannot be combined with source")),
    ({"source": "/tmp/i", "backing_file": TEMPLATE}, ("backing_file", "cannot be combined with source")),
    ({"clone_from": TEMPLATE, "backing_file": TEMPLATE}, ("backing_file", "clone_from")),
    ({"source": "/tmp/i", "encrypt": True}, ("encrypt", "cannot be combined with source")),
    ({"clone_mode": "linked"}, ("clone_mode", "needs clone_from")),
    ({"clone_from": TEMPLATE, "clone_mode": "deep"}, ("clone_mode", "must be one of linked, full")),
    ({"checksum": SUM, "size": "1G"}, ("checksum", "needs source")),
]


@pytest.mark.parametrize("params,expected", ORIGINS)
def test_origin_from_params(params, expected):
    if isinstance(expected, tuple):
        with pytest.raises(SpecError) as caught:
            origin_from_params(params)
        assert caught.value.field == expected[0] and expected[1] in str(caught.value), str(caught.value)
    else:
        assert origin_from_params(params) == expected


def test_parse_checksum_and_shown_url():
    assert parse_checksum(None) is None and parse_checksum("") is None
    assert parse_checksum("sha256:" + "AB" * 32) == HEX
    assert shown_url("https://h.example:8443/a/i.qcow2?X-Amz-Signature=s3cr3t#f") == "https://h.example:8443/a/i.qcow2"
    assert shown_url("http://u:p@h/i") == "http://h/i"


URL = Origin("url", "https://h/i.qcow2?token=t", HEX)
FILE = Origin("file", "/tmp/i.img")
FILE_SUM = Origin("file", "/tmp/i.img", HEX)
LINKED = Origin("clone", TEMPLATE, clone_mode="linked")
FULL = Origin("clone", TEMPLATE, clone_mode="full")

PLANS = [
    # (origin, format, size, preallocation, image, writers) -> (steps, format, size, backing)
    ((URL, None, None, None, None, ()), (["download", "check_chain", "convert"], "qcow2", None, None)),
    ((URL, "raw", 16 * M, None, None, ()), (["download", "check_chain", "convert", "grow"], "raw", 16 * M, None)),
    ((URL, "raw", None, None, image(), ()), (["verify", "check_chain", "convert"], "raw", 8 * M, None)),
    ((URL, None, 8 * M, None, image(), ()), (["verify", "check_chain", "convert"], "qcow2", 8 * M, None)),
    (
        (URL, None, 9 * M, "metadata", image("vmdk"), ()),
        (["verify", "check_chain", "convert", "grow"], "qcow2", 9 * M, None),
    ),
    ((FILE, None, None, None, image("raw"), ()), (["check_chain", "convert"], "qcow2", 8 * M, None)),
    ((FILE_SUM, "raw", None, "falloc", image(), ()), (["verify", "check_chain", "convert"], "raw", 8 * M, None)),
    ((LINKED, None, None, None, image(), ()), (["check_chain", "overlay"], "qcow2", 8 * M, TEMPLATE)),
    ((LINKED, "qcow2", 32 * M, None, image("raw"), ()), (["check_chain", "overlay"], "qcow2", 32 * M, TEMPLATE)),
    ((FULL, "raw", None, None, image(), ("vm1",)), (["check_chain", "convert"], "raw", 8 * M, None)),
]


@pytest.mark.parametrize("args,expected", PLANS)
def test_plan_make(args, expected):
    origin, fmt, size, preallocation, img, writers = args
    plan = plan_make(PATH, origin, fmt, size, preallocation, img, writers)
    assert plan.actions == ["create"] and not plan.encrypted
    assert (plan.steps, plan.format, plan.size, plan.backing_file) == expected
    if origin.clone_mode == "linked":
        assert plan.backing_format == img.driver
    # Only a plan that cannot see the image (a download in check mode) says so.
    assert bool(plan.warnings) == (img is None)
    if img is None:
        assert "https://h/i.qcow2 is not in the image cache" in plan.warnings[0] and "token" not in plan.warnings[0]


REFUSED = [
    ((URL, None, 4 * M, None, image(), ()), ("size", "never made smaller")),
    ((FILE, None, None, None, image(encrypted=True), ()), ("source", "is encrypted")),
    ((LINKED, None, None, None, image("luks", encrypted=True), ()), ("clone_from", "is encrypted")),
    ((LINKED, "raw", None, None, image(), ()), ("clone_mode", "linked needs format qcow2")),
    ((LINKED, None, None, None, image(), ("web1", "web2")), ("clone_from", "writable disk of VM web1, web2")),
    ((LINKED, None, None, None, image("vmdk"), ()), ("clone_from", "a template must be qcow2 or raw")),
    ((LINKED, None, None, "full", image(), ()), ("preallocation", "linked clone")),
    ((Origin("clone", PATH, clone_mode="linked"), None, None, None, image(), ()), ("clone_from", "another file")),
    ((FILE, "raw", None, "metadata", image(), ()), ("preallocation", "metadata needs format qcow2")),
]


@pytest.mark.parametrize("args,expected", REFUSED)
def test_plan_make_refuses(args, expected):
    origin, fmt, size, preallocation, img, writers = args
    with pytest.raises(SpecError) as caught:
        plan_make(PATH, origin, fmt, size, preallocation, img, writers)
    assert caught.value.field == expected[0] and expected[1] in str(caught.value), str(caught.value)
