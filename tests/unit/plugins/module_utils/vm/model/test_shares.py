# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""shared_dirs (pure): the stored form, every refusal by its option name, the QEMU devices and
virtiofsd's argv for both daemons."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.argv import opt_value
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.shares import (
    C_VIRTIOFSD,
    RUST_VIRTIOFSD,
    normalize_shares,
    share_devices,
    validate_shares,
    virtiofsd_argv,
)
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, merge_params


def test_the_stored_form_is_canonical():
    assert normalize_shares([{"source": "/srv/data/", "tag": "data", "readonly": None}]) == [
        {"source": "/srv/data", "tag": "data", "readonly": False}
    ]
    spec = merge_params({"name": "vm", "memory_shared": True, "shared_dirs": [{"source": "/srv/d", "tag": "d"}]}, None)
    assert spec.shared_dirs == ({"source": "/srv/d", "tag": "d", "readonly": False},)
    assert VmSpec.from_dict(spec.to_dict()) == spec
    assert merge_params({"name": "vm"}, spec).shared_dirs == spec.shared_dirs, "unset keeps them"
    assert merge_params({"name": "vm", "shared_dirs": []}, spec).shared_dirs == ()


def share(source="/srv/a", tag="a", readonly=False):
    return {"source": source, "tag": tag, "readonly": readonly}


@pytest.mark.parametrize(
    "shares,memory_shared,field,phrase",
    [
        ([share()], False, "shared_dirs", "needs memory_shared"),
        ([share(source="srv")], True, "shared_dirs[0].source", "absolute"),
        ([share(source="/")], True, "shared_dirs[0].source", "must not be /"),
        ([share(source="/sys/kernel")], True, "shared_dirs[0].source", "/sys"),
        ([share(source="/dev")], True, "shared_dirs[0].source", "/dev"),
        ([share(source="/srv/../etc")], True, "shared_dirs[0].source", "'..'"),
        ([share(), share(source="/srv/b", tag="a")], True, "shared_dirs[1].tag", "already the tag"),
        ([share(tag="")], True, "shared_dirs[0].tag", "1 to 36"),
        ([share(tag="a b")], True, "shared_dirs[0].tag", "letters"),
        ([share(tag="t" * 37)], True, "shared_dirs[0].tag", "1 to 36"),
        ([share(readonly="yes")], True, "shared_dirs[0].readonly", "true or false"),
        ([share(tag="t%d" % i) for i in range(9)], True, "shared_dirs", "at most 8"),
        (["/srv/a"], True, "shared_dirs[0]", "must be a dict"),
    ],
)
def test_bad_shares_name_the_entry(shares, memory_shared, field, phrase):
    with pytest.raises(SpecError) as err:
        validate_shares(shares, memory_shared)
    assert err.value.field == field and phrase in str(err.value), str(err.value)


def test_devices_and_daemons():
    shares = [share(tag="t" * 36), share(source="/srv/x,y", tag="ro", readonly=True)]
    validate_shares(shares, True)
    devices = share_devices(shares, ["/run/a,b.fs0.sock", "/run/b.fs1.sock"], opt_value)
    assert devices[0] == (
        "socket,id=fs0,path=/run/a,,b.fs0.sock",
        {"driver": "vhost-user-fs-pci", "id": "fs0", "chardev": "fs0", "tag": "t" * 36},
    )
    assert devices[1][1]["tag"] == "ro"
    with pytest.raises(ValueError):
        share_devices(shares, ["/run/only-one"], opt_value)
    # QEMU 7.2's daemon: no read-only mode (the caller binds the source read-only), commas escaped.
    argv, bind = virtiofsd_argv(C_VIRTIOFSD, "/run/s", shares[1])
    assert argv == [C_VIRTIOFSD, "--socket-path=/run/s", "-o", "source=/srv/x\\,y", "-o", "cache=auto"] and bind
    # The Rust daemon reads the directory as one argument and has --readonly.
    argv, bind = virtiofsd_argv(RUST_VIRTIOFSD, "/run/s", shares[1])
    assert argv == [RUST_VIRTIOFSD, "--socket-path=/run/s", "--shared-dir=/srv/x,y", "--cache=auto", "--readonly"]
    assert not bind
