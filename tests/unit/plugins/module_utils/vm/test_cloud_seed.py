# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cloud_init option through infinivirt_vm's service, on a real SQLite store and real
files (no QEMU: the VMs stay stopped; tests/integration/test_cloud_guest.py boots one): the
spec keeps a digest, the store the sealed option, a start's seed ISO is written once per
content, and a change is a pending restart."""

from __future__ import annotations

import dataclasses
import glob
import os
import stat
import subprocess

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import MissingLibrary, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host import iso
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.vm import cloud_seed
from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.plan import Desired, Live, plan_summary, plan_vm
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.record import VmRecord
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.sealed_files import is_digest
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.vocabulary import option_names

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7sEcReTkEyOfTheTestUser0000000000000000000 tester@example"
PASSWORD = "Sw0rdf1sh-never-in-a-row"
OPTION = {
    "hostname": "web01",
    "ssh_authorized_keys": [KEY],
    "users": [{"name": "ops", "plain_text_passwd": PASSWORD, "lock_passwd": False}],
    "user_data": {"runcmd": [["echo", "hello"]]},
}
SECRETS = (KEY.split()[1], PASSWORD)


def ensure(svc, check_mode=False, **params):
    return svc.ensure(dict({"name": "web01", "state": "present", "memory_mb": 128}, **params), check_mode)


def db_bytes(db_url):
    """The whole database: the SQLite files, or a pg_dump."""
    if db_url.startswith("sqlite"):
        path = db_url[len("sqlite:///") :]
        return b"".join(open(p, "rb").read() for p in glob.glob(path + "*") if os.path.isfile(p))
    pg_dump = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))[-1]
    return subprocess.run([pg_dump, db_url], capture_output=True, check=True).stdout


@pytest.mark.both_backends  # what the database holds is the subject
def test_the_spec_keeps_a_digest_and_the_store_the_sealed_option(svc, db_url):
    predicted = ensure(svc, check_mode=True, cloud_init=OPTION)
    assert predicted.changed and is_digest(predicted.vm["cloud_init_digest"])
    assert records.load(svc.store, "web01") is None  # check mode wrote nothing
    made = ensure(svc, cloud_init=OPTION)
    digest = made.vm["cloud_init_digest"]
    assert made.changed and is_digest(digest)  # keyed: a guess cannot be tested against it
    rec = records.load(svc.store, "web01")
    assert rec.spec.cloud_init_digest == digest
    token = svc.store.get_secret(rec.uuid, cloud_seed.CLOUD_INIT)
    assert token and PASSWORD not in token
    # Neither the database nor the result holds the key or the password.
    dump = db_bytes(db_url)
    assert token.encode() in dump  # the dump is the database: the sealed option is in it
    for secret in SECRETS:
        assert secret.encode() not in dump
        assert secret not in repr(made.result())
    assert "web01" in repr(made.diff["after"])  # the diff still shows the VM


def test_the_same_option_is_no_change_and_a_new_one_is(svc):
    first = ensure(svc, cloud_init=OPTION)
    again = ensure(svc, cloud_init=dict(reversed(list(OPTION.items()))))  # key order does not matter
    assert not again.changed and again.plan["actions"] == []
    unset = ensure(svc)  # left unset: the stored seed stays
    assert not unset.changed and unset.vm["cloud_init_digest"] == first.vm["cloud_init_digest"]
    check = ensure(svc, check_mode=True, cloud_init=dict(OPTION, hostname="web02"))
    assert check.changed and check.plan["changes"] == {"cloud_init": "next_start"}
    assert records.load(svc.store, "web01").spec.cloud_init_digest == first.vm["cloud_init_digest"]  # check mode
    changed = ensure(svc, cloud_init=dict(OPTION, hostname="web02"))
    assert changed.changed and changed.vm["cloud_init_digest"] not in (None, first.vm["cloud_init_digest"])
    assert changed.vm["cloud_init_digest"] == check.vm["cloud_init_digest"]  # check mode predicted it
    removed = ensure(svc, cloud_init={})
    assert removed.changed and removed.vm["cloud_init_digest"] is None
    rec = records.load(svc.store, "web01")
    assert svc.store.get_secret(rec.uuid, cloud_seed.CLOUD_INIT) is None


def test_two_vms_with_one_option_have_their_own_instance_id(svc):
    one = ensure(svc, cloud_init={"hostname": "same"})
    two = ensure(svc, name="web02", cloud_init={"hostname": "same"})
    assert one.vm["cloud_init_digest"] != two.vm["cloud_init_digest"]


@pytest.mark.parametrize(
    "option, field",
    [
        ({"user_data": "#cloud-config\nruncmd: [unclosed\n"}, "cloud_init.user_data"),
        ({"network_config": {"version": 1, "config": []}}, "cloud_init.network_config.version"),
        ({"hostname": "bad_host!"}, "cloud_init.hostname"),
        ({"ssh_authorized_keys": ["not a key"]}, "cloud_init.ssh_authorized_keys[0]"),
        ({"color": "blue"}, "cloud_init.color"),
    ],
)
def test_bad_input_names_the_field_and_leaves_nothing(svc, tmp_path, option, field):
    with pytest.raises(SpecError) as err:
        ensure(svc, cloud_init=option)
    assert err.value.field == field
    assert records.load(svc.store, "web01") is None
    assert not (tmp_path / "nvram").exists()


def test_a_start_writes_the_seed_iso_once_per_content_and_removal_deletes_it(svc, tmp_path):
    made = ensure(svc, cloud_init=OPTION)
    rec = records.load(svc.store, "web01")
    path = cloud_seed.seed_iso(svc.engine, rec)
    assert path == str(tmp_path / "nvram" / (made.vm["uuid"] + ".cidata.iso"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ("cloud_init", path) in svc.store.journal_list(rec.uuid)
    data = open(path, "rb").read()
    assert b"CIDATA" in data and b"local-hostname: web01" in data and made.vm["uuid"].encode() in data
    inode = os.stat(path).st_ino
    assert cloud_seed.seed_iso(svc.engine, rec) == path and os.stat(path).st_ino == inode  # same content: kept
    ensure(svc, cloud_init=dict(OPTION, hostname="web02"))
    cloud_seed.seed_iso(svc.engine, records.load(svc.store, "web01"))
    assert b"local-hostname: web02" in open(path, "rb").read() and os.stat(path).st_ino != inode
    # A stop keeps it (like the NVRAM); removing the VM removes it.
    svc.engine.resources.release_files(rec, keep_serial_log=False)
    assert os.path.exists(path)
    ensure(svc, state="absent")
    assert not os.path.exists(path) and os.listdir(tmp_path / "nvram") == []


def test_a_vm_without_cloud_init_gets_no_seed(svc, tmp_path):
    ensure(svc)
    assert cloud_seed.seed_iso(svc.engine, records.load(svc.store, "web01")) is None
    assert not (tmp_path / "nvram").exists()


def test_without_pycdlib_a_start_with_cloud_init_fails_naming_it(svc, tmp_path, monkeypatch):
    ensure(svc, cloud_init=OPTION)  # defining the VM needs no pycdlib
    monkeypatch.setattr(iso, "HAS_PYCDLIB", False)
    with pytest.raises(MissingLibrary) as err:
        cloud_seed.seed_iso(svc.engine, records.load(svc.store, "web01"))
    assert err.value.library == "pycdlib" and "pycdlib" in str(err.value) and "cloud_init" in str(err.value)
    assert not (tmp_path / "nvram").exists()


SPEC = VmSpec(name="vm", memory_mb=256, cloud_init_digest="sha256:" + "a" * 64)


def running(spec=SPEC):
    return VmRecord(uuid="u-1", name="vm", host="hv", status="running", spec=spec, running_spec=spec, qemu_pid=42)


def test_a_changed_seed_is_a_pending_restart_of_a_running_vm():
    other = dataclasses.replace(SPEC, cloud_init_digest="sha256:" + "b" * 64)
    plan = plan_vm(running(), Live("running"), Desired("running", other), "hv")
    assert plan.actions == ["update"] and option_names(plan.pending) == ["cloud_init"]
    assert plan_summary(plan) == {"actions": ["update"], "changes": {"cloud_init": "restart"}, "restart_needed": True}
    restarted = plan_vm(running(), Live("running"), Desired("running", other, restart_on_change=True), "hv")
    assert restarted.actions == ["update", "stop", "start"]
    same = plan_vm(running(), Live("running"), Desired("running", SPEC), "hv")
    assert same.actions == [] and not same.changed


def no_salt():
    return None  # nothing sealed yet


def test_plan_seed():
    digest, payload = cloud_seed.plan_seed(dict(OPTION, vendor_data=None), "u-1", None, no_salt)
    assert payload["option"] == OPTION  # unset suboptions (Ansible passes None) are not kept
    salt = bytes.fromhex(payload["salt"])
    assert len(salt) == 32 and is_digest(digest)
    assert cloud_seed.plan_seed(OPTION, "u-1", digest, lambda: salt) == (digest, None)
    assert cloud_seed.plan_seed(OPTION, "u-1", digest, no_salt)[0] != digest  # a new salt, a new digest
    assert cloud_seed.plan_seed(OPTION, "u-2", digest, lambda: salt)[0] != digest  # the UUID is the instance-id
    assert cloud_seed.plan_seed({}, "u-1", digest, no_salt) == (None, {})
    assert cloud_seed.plan_seed({"hostname": None}, "u-1", None, no_salt) == (None, None)


def test_a_seed_sealed_before_digests_were_keyed_is_kept_until_it_changes(svc):
    """A row from before: its spec holds the unkeyed sha256, its token the option alone."""
    ensure(svc, cloud_init=OPTION)
    rec = records.load(svc.store, "web01")
    legacy = cloud_seed.cloud_init.legacy_digest(cloud_seed.cloud_init.seed_files(OPTION, rec.uuid))
    rec.spec = dataclasses.replace(rec.spec, cloud_init_digest=legacy)
    rec.running_spec = None
    records.save(svc.store, rec)
    old_token = svc.engine.ctx.secret_box().encrypt(
        cloud_seed.cloud_init.canonical(OPTION), secret_context(rec.uuid, cloud_seed.CLOUD_INIT)
    )
    svc.store.set_secret(rec.uuid, cloud_seed.CLOUD_INIT, old_token)
    again = ensure(svc, cloud_init=OPTION)
    assert not again.changed and again.vm["cloud_init_digest"] == legacy, "an upgrade alone is no change"
    assert (
        b"local-hostname: web01" in open(cloud_seed.seed_iso(svc.engine, records.load(svc.store, "web01")), "rb").read()
    )
    changed = ensure(svc, cloud_init=dict(OPTION, hostname="web02"))
    assert changed.changed and is_digest(changed.vm["cloud_init_digest"])
    assert cloud_seed.stored_salt(svc.engine, rec.uuid) is not None, "sealed anew with its salt"


def test_the_biggest_cloud_init_that_seals_opens_and_a_bigger_one_is_refused(svc, tmp_path):
    # The option is sealed whole, and SecretBox opens no token over 1 MiB of text: an option
    # stored bigger could never start its VM. At the bound it seals, and the seed ISO is made.
    head = "#!/bin/sh\n"
    sealed_head = cloud_seed._sealed_text({"salt": "00" * 32, "option": {"user_data": head}})
    script = head + "x" * (cloud_seed.MAX_PLAINTEXT_BYTES - len(sealed_head))
    made = ensure(svc, cloud_init={"user_data": script})
    rec = records.load(svc.store, "web01")
    with open(cloud_seed.seed_iso(svc.engine, rec), "rb") as fh:
        assert script.encode() in fh.read()
    with pytest.raises(SpecError) as err:
        ensure(svc, name="web02", cloud_init={"user_data": script + "x"})
    assert err.value.field == "cloud_init" and "sealed value" in str(err.value)
    assert records.load(svc.store, "web02") is None
    assert made.vm["cloud_init_digest"]
