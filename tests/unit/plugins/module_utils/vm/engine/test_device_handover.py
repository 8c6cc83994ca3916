# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The device decisions of a live migration without QEMU: shared_dirs refused naming it, a
target whose nvram_dir already has the VM's TPM state or NVRAM refuses naming the path, the
running spec corrected to the tablet the QEMU has, and each side's host claims released
without the other side's."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import StateError
from ansible_collections.infinivirt.core.plugins.module_utils.store.factory import open_store
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import device_handover, records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import HostResources
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec

SHARE = {"source": "/srv/share", "tag": "share", "readonly": False}


def running(name="mover", **spec):
    spec = VmSpec(name=name, **spec)
    return VmRecord(uuid="uuid-" + name, name=name, host="hv-a", status="running", spec=spec, running_spec=spec)


class Sessions:
    def __init__(self, peripherals):
        self.peripherals = peripherals
        self.calls = []

    def qmp(self, rec, command, args=None):
        self.calls.append((command, args))
        return [{"name": name, "type": "child<x>"} for name in self.peripherals]


@dataclasses.dataclass
class Engine:
    store: object = None
    resources: object = None
    sessions: object = None
    host_id: str = "hv-b"


@pytest.fixture
def store(tmp_path):
    s = open_store("sqlite:///%s/state.db" % tmp_path)
    yield s
    s.close()


def test_shared_dirs_cannot_move_live_and_nothing_is_asked():
    rec = running(shared_dirs=(SHARE,), memory_shared=True)
    sessions = Sessions([])
    with pytest.raises(StateError) as caught:
        device_handover.check_source(Engine(sessions=sessions), rec, check_mode=False)
    assert "cannot move live: shared_dirs:" in str(caught.value) and "vhost-user-fs" in str(caught.value)
    assert sessions.calls == [], "refused before QEMU is asked anything"
    reason = device_handover.target_refusal(Engine(resources=HostResources(None, "/nonexistent")), rec)
    assert reason.startswith("shared_dirs:"), "an older source's request is refused by the target too"


def test_a_target_nvram_dir_holding_the_vms_files_refuses(tmp_path):
    engine = Engine(resources=HostResources(None, str(tmp_path)))
    tpm, uefi = running(tpm={"version": "2.0"}), running(firmware="uefi")
    assert device_handover.target_refusal(engine, tpm) is None
    assert device_handover.target_refusal(engine, uefi) is None
    os.mkdir(os.path.join(str(tmp_path), "uuid-mover.tpm"))
    reason = device_handover.target_refusal(engine, tpm)
    assert reason.startswith("nvram_dir:") and "uuid-mover.tpm" in reason and "hv-b" in reason, reason
    open(os.path.join(str(tmp_path), "uuid-mover.fd"), "w").close()
    assert "UEFI variables" in device_handover.target_refusal(engine, uefi)
    assert device_handover.target_refusal(engine, running()) is None, "a VM without either: nothing to collide"


def test_the_running_spec_says_whether_the_qemu_has_a_tablet(store):
    old = running(graphics_type="vnc")  # usb_tablet unset: a tablet now; a QEMU of older code has none
    records.insert(store, old)
    assert device_handover.align_tablet(Engine(store=store, sessions=Sessions(["video0"])), old)
    saved = records.load(store, "mover")
    assert saved.running_spec.usb_tablet is False and saved.spec.usb_tablet is None, "only the running spec changes"
    same = running(name="same", graphics_type="vnc")
    records.insert(store, same)
    assert not device_handover.align_tablet(Engine(store=store, sessions=Sessions(["tablet0"])), same)
    assert records.load(store, "same").running_spec.usb_tablet is None
    check = running(name="check", graphics_type="vnc")
    sessions = Sessions([])
    device_handover.check_source(Engine(store=store, sessions=sessions), check, check_mode=True)
    assert sessions.calls == [], "check mode changes nothing"


def test_each_side_releases_only_its_own_claims(store):
    for host in ("hv-a", "hv-b"):
        for kind, value in (("display port", "5900"), ("vsock CID", "3")):
            store.claim_host(host, kind, "uuid-mover", "mover", {value: True}, other_hosts_kept=True)
    store.claim_host("hv-a", "host CPU", "uuid-mover", "mover", {"1": False})
    device_handover.release_claims_here(store, "uuid-mover", "hv-a")
    left = {(c["host"], c["kind"]) for c in store.list_host_claims()}
    assert left == {("hv-b", "display port"), ("hv-b", "vsock CID"), ("hv-a", "host CPU")}, left
    store.claim_host("hv-b", "display port", "uuid-mover", "mover", {"5901": True})  # a plain claim: one host
    assert {(c["host"], c["value"]) for c in store.list_host_claims(kind="display port")} == {("hv-b", "5901")}
