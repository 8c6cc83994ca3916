# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The platform devices on the host side, without QEMU: the host checks (this machine has no
/dev/vhost-vsock, so a VM with vsock cannot start here: the check must say so before anything
is made) and the vsock CID allocation through the store's host claims, also under
concurrent starts (separate processes, each with its own store connection)."""

from __future__ import annotations

import dataclasses
import multiprocessing

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import platform, records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

pytestmark = pytest.mark.both_backends


def vm(name, vsock=None, tpm=None):
    spec = VmSpec(name=name, vsock=vsock, tpm=tpm)
    return VmRecord(uuid="uuid-" + name, name=name, host="h1", status="stopped", spec=spec)


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def test_host_checks_name_the_option(tmp_path):
    with pytest.raises(SpecError) as caught:
        platform.check_host(vm("a", vsock={"cid": None}).spec, vsock_device=str(tmp_path / "vhost-vsock"))
    assert caught.value.field == "vsock" and "vhost_vsock" in str(caught.value)
    (tmp_path / "vhost-vsock").write_text("")
    platform.check_host(vm("a", vsock={"cid": None}).spec, vsock_device=str(tmp_path / "vhost-vsock"))
    with pytest.raises(SpecError) as caught:
        platform.check_host(vm("b", tpm={"version": "2.0"}).spec, swtpm_binary=lambda: None)
    assert caught.value.field == "tpm" and "swtpm" in str(caught.value)
    platform.check_host(vm("c").spec)  # no device asked for: nothing to check


def test_cids_are_unique_kept_and_freed_with_the_vm(store):
    a, b, pinned = vm("a", {"cid": None}), vm("b", {"cid": None}), vm("p", {"cid": 4})
    for rec in (a, b, pinned):
        records.insert(store, rec)
    assert platform.claim_vsock(store, "h1", a) == 3
    assert platform.claim_vsock(store, "h1", pinned) == 4
    assert platform.claim_vsock(store, "h1", b) == 5  # 4 is pinned by p
    assert platform.claim_vsock(store, "h1", a) == 3  # a restart keeps the guest's address
    assert platform.claim_vsock(store, "h2", b) == 3  # unique per host only
    other = vm("q", {"cid": 3})
    records.insert(store, other)
    with pytest.raises(SpecError) as caught:
        platform.claim_vsock(store, "h1", other)
    assert caught.value.field == "vsock.cid" and "held by VM a" in str(caught.value)
    assert platform.claim_vsock(store, "h1", vm("none")) is None
    store.delete_vm(a.uuid)  # absent frees it
    assert platform.claim_vsock(store, "h1", other) == 3


def _claim(db_url, name, go, results):
    store = open_store(db_url)
    try:
        go.wait(30)
        results.put((name, platform.claim_vsock(store, "h1", vm(name, {"cid": None}))))
    finally:
        store.close()


def test_concurrent_starts_get_different_cids(db_url, store):
    names = ["c%d" % n for n in range(6)]
    for name in names:
        records.insert(store, vm(name, {"cid": None}))
    go, results = multiprocessing.Event(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_claim, args=(db_url, name, go, results)) for name in names]
    for proc in procs:
        proc.start()
    go.set()  # all claim at once
    got = dict(results.get(timeout=60) for _name in names)
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0] * len(names)
    assert sorted(got.values()) == list(range(3, 3 + len(names))), got
    claims = store.list_host_claims("h1", platform.CLAIM_VSOCK)
    assert {c["owner_name"]: int(c["value"]) for c in claims} == got and all(c["exclusive"] for c in claims)


def test_devices_round_trip_through_the_store(store):
    rec = vm("rt", vsock={"cid": 12}, tpm={"version": "2.0"})
    rec.spec = dataclasses.replace(
        rec.spec,
        rng={"max_bytes": 1024, "period_ms": 1000},
        watchdog={"model": "i6300esb", "action": "pause"},
        smbios={"type1": {"serial": "S,1"}, "type3": {"asset": "A"}},
    )
    records.insert(store, rec)
    assert records.load(store, "rt").spec == rec.spec


def test_a_migration_target_takes_the_source_cid_or_refuses_naming_it(store):
    """The guest's CID cannot change while it runs: the target claims the source's CID (the
    source keeps its own claim until it lets the VM go) or refuses naming it."""
    mover, other = vm("m", {"cid": None}), vm("o", {"cid": None})
    for rec in (mover, other):
        records.insert(store, rec)
    assert platform.claim_vsock(store, "h1", other) == 3  # h1 has 3 taken: the mover gets 4 there
    assert platform.claim_vsock(store, "h1", mover) == 4
    assert platform.claim_vsock(store, "h2", mover, incoming=True) == 4, "the source's CID, not h2's lowest free"
    claims = store.list_host_claims(kind=platform.CLAIM_VSOCK)
    held = {(c["host"], c["value"]) for c in claims if c["owner"] == "uuid-m"}
    assert held == {("h1", "4"), ("h2", "4")}, "the source's claim is kept during the handover"

    store.release_host_claims("uuid-m", platform.CLAIM_VSOCK, host="h2")
    squatter = vm("s", {"cid": 4})
    records.insert(store, squatter)
    assert platform.claim_vsock(store, "h2", squatter) == 4
    with pytest.raises(SpecError) as caught:
        platform.claim_vsock(store, "h2", mover, incoming=True)
    assert caught.value.field == "vsock" and "CID 4" in str(caught.value) and "held by VM s" in str(caught.value)
    assert [c["host"] for c in store.list_host_claims(kind=platform.CLAIM_VSOCK) if c["owner"] == "uuid-m"] == ["h1"]

    lost = vm("l", {"cid": None})
    records.insert(store, lost)
    with pytest.raises(SpecError) as caught:
        platform.claim_vsock(store, "h2", lost, incoming=True)  # no CID recorded on its source
    assert caught.value.field == "vsock" and "restart it there" in str(caught.value)
