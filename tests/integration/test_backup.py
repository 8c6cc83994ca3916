# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Backups on one boot of the test guest with a qcow2 data disk: random data written by
the guest, a full point, more data, an incremental point as small as the change, a backup
process SIGKILLed half-way (earlier points still restore, the next one falls back to full),
retention by chains, an offline incremental point of the stopped VM through
qemu-storage-daemon, each point restored and compared by SHA-256 with what the guest read,
and one point restored as a new VM that boots and reads the same data."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import serial_report
from helpers import guest_disks, make_image, wait_for, wait_ready

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.backup import BackupService, list_points

pytestmark = [pytest.mark.qemu, pytest.mark.guest]

MB = 1024 * 1024
DISK_MB = 32


def guest_write(sock, dev, seek_mb, count_mb):
    rc, out = serial_report.channel_command(
        sock, "dd if=/dev/urandom of=/dev/%s bs=1M seek=%d count=%d conv=fsync 2>&1 && sync" % (dev, seek_mb, count_mb)
    )
    assert rc == 0, out


def guest_sha(sock, dev):
    rc, out = serial_report.channel_command(
        sock, "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/%s bs=1M 2>/dev/null | sha256sum" % dev, timeout=120
    )
    assert rc == 0, out
    return out.split()[0]


def image_sha(path):
    """SHA-256 of an image's guest-visible bytes (qemu-img convert to raw, on the host)."""
    raw = path + ".raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", path, raw], check=True)
    try:
        with open(raw, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    finally:
        os.unlink(raw)


def restore(backups, params, point, out_dir, **extra):
    result = backups.ensure(dict(params, state="restored", point=point, restore_dir=out_dir, **extra), False)
    assert result["changed"] and len(result["restored"]) == 1, result
    return result["restored"][0]["path"]


def test_backup_points_restore_and_survive_a_kill(disk_service, guest_params, images, workdir):
    vms, backups = disk_service, BackupService(disk_service.engine)
    data = make_image(os.path.join(images, "data.qcow2"), "qcow2", DISK_MB)
    target = os.path.join(workdir, "backups")
    vm = vms.ensure(
        dict(guest_params, name="bk", memory_mb=256, console_socket=True, state="running",
             disks=[{"path": data, "serial": "BK01"}]),
        False,
    ).vm  # fmt: skip
    wait_ready(vm["serial_log"])
    sock = vm["console_socket_path"]
    dev = guest_disks(sock)["BK01"]["name"]
    params = {"vm": "bk", "target": target}

    # 1. Full point of the running VM: no agent, so crash-consistent.
    guest_write(sock, dev, 0, 4)
    sha_full = guest_sha(sock, dev)
    assert backups.ensure(dict(params, mode="incremental"), True)["kind"] == "full", "check mode predicts a full point"
    assert not os.path.exists(target), "check mode wrote nothing"
    full = backups.ensure(dict(params, mode="incremental"), False)
    assert full["kind"] == "full" and full["fallback_reason"] == "there is no earlier backup point", full
    assert full["consistency"] == "crash", full
    assert oct(os.stat(target).st_mode & 0o777) == "0o700", "the target is made private"
    assert full["point"]["size"] >= 4 * MB, "a full point holds the 4 MiB written"

    # 2. Incremental point: only the 1 MiB changed since.
    guest_write(sock, dev, 20, 1)
    sha_incr = guest_sha(sock, dev)
    incr = backups.ensure(dict(params, mode="incremental"), False)
    assert incr["kind"] == "incremental" and incr["fallback_reason"] is None, incr
    assert MB <= incr["point"]["size"] < 2 * MB, "the incremental point is about the 1 MiB changed: %r" % incr["point"]
    assert incr["point"]["chain"] == [full["point"]["id"], incr["point"]["id"]]
    top = os.path.join(target, "bk", incr["point"]["disks"][0]["file"])
    header = json.loads(
        subprocess.run(["qemu-img", "info", "-U", "--output=json", top], capture_output=True, check=True).stdout
    )
    assert header["backing-filename"] == "../%s/%s" % (full["point"]["id"], os.path.basename(top)), header

    # 3. A backup process SIGKILLed half-way: the earlier points stay, the next falls back to full.
    guest_write(sock, dev, 8, 8)
    killed = _kill_during_backup(vms, workdir, images, target, params)
    assert killed, "the backup was not cut off while its .part directory existed"
    listed = [p["id"] for p in list_points(target, "bk")]
    assert listed == [full["point"]["id"], incr["point"]["id"]], "the killed point is listed: %r" % listed
    again = backups.ensure(dict(params, mode="incremental"), False)
    assert again["kind"] == "full" and "did not finish" in again["fallback_reason"], again
    assert any(name.endswith(".part") for name in again["cleaned"]), again["cleaned"]
    sha_after_kill = guest_sha(sock, dev)

    # 4. Restores: the full point and the incremental one, byte for byte; never over a file.
    out = os.path.join(images, "restored")
    assert image_sha(restore(backups, params, full["point"]["id"], out)) == sha_full, "full point restores"
    incr_file = restore(backups, params, incr["point"]["id"], out, restore_as="bk-incr")
    assert image_sha(incr_file) == sha_incr, "incremental point (full + incremental) restores"
    with pytest.raises(SpecError) as err:
        restore(backups, params, incr["point"]["id"], out, restore_as="bk")
    assert err.value.field == "restore_as" and "exists already" in str(err.value)
    with pytest.raises(SpecError) as err:
        backups.ensure(dict(params, state="restored", point=full["point"]["id"], restore_dir=out), False)
    assert err.value.field == "restore_dir" and "exists" in str(err.value)
    assert image_sha(restore(backups, params, again["point"]["id"], os.path.join(out, "k"))) == sha_after_kill

    # 5. Retention keeps whole chains: keep=1 drops the first chain (full + incremental).
    guest_write(sock, dev, 30, 1)
    kept = backups.ensure(dict(params, keep=1), False)
    assert kept["kind"] == "incremental" and kept["removed"] == [full["point"]["id"], incr["point"]["id"]], kept
    assert [p["id"] for p in kept["points"]] == [again["point"]["id"], kept["point"]["id"]]
    assert not os.path.exists(os.path.join(target, "bk", full["point"]["id"]))

    # 6. Stopped: an incremental point through qemu-storage-daemon (the bitmap was stored at stop).
    guest_write(sock, dev, 2, 1)
    sha_offline = guest_sha(sock, dev)
    vms.ensure({"name": "bk", "state": "stopped", "stop_timeout": 30}, False)
    offline = backups.ensure(dict(params, mode="incremental"), False)
    assert offline["kind"] == "incremental" and offline["consistency"] == "offline", offline
    assert offline["point"]["size"] < 2 * MB, offline["point"]
    assert image_sha(restore(backups, params, "latest", os.path.join(out, "o"))) == sha_offline

    # 7. The VM restored from the incremental point boots and reads that point's data.
    restored_vm = vms.ensure({"name": "bk-incr", "state": "running"}, False).vm
    wait_ready(restored_vm["serial_log"])
    rsock = restored_vm["console_socket_path"]
    assert guest_sha(rsock, guest_disks(rsock)["BK01"]["name"]) == sha_incr, "the restored VM sees the point's data"

    # 8. Delete a point: it and the incremental ones after it go.
    gone = backups.ensure(dict(params, state="absent", point=kept["point"]["id"]), False)
    assert gone["removed"] == [kept["point"]["id"], offline["point"]["id"]], gone


def _kill_during_backup(vms, workdir, images, target, params, started=None):
    """Run the infinivirt_backup module (a full point) as a process of its own, as Ansible
    runs it, and SIGKILL it once ``started()`` (default: its point is being written);
    returns whether it was cut off (not finished before the kill)."""
    args = os.path.join(workdir, "module-args.json")
    module_args = dict(
        params,
        mode="full",
        db_url="sqlite:///%s/disks.db" % workdir,
        run_dir=os.path.join(workdir, "run"),
        storage_roots=[images],
        host_id=vms.hostname,
    )
    with open(args, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": module_args}, handle)
    module = "ansible_collections.infinivirt.core.plugins.modules.infinivirt_backup"
    env = dict(os.environ, PYTHONPATH=":".join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    vm_dir = os.path.join(target, params["vm"])

    def writing() -> bool:
        return os.path.isdir(vm_dir) and any(n.endswith(".part") for n in os.listdir(vm_dir))

    started = started or writing
    # A tight poll: an unloaded machine writes a point in a few tenths of a second.
    deadline = time.monotonic() + 60
    while proc.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.002)
    cut = proc.poll() is None
    if cut:
        os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    assert cut or proc.returncode == 0, (out + err).decode()
    return cut


def storage_daemons(run_dir):
    """PIDs of qemu-storage-daemon processes serving a socket in ``run_dir``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        wanted = (run_dir.encode(), run_dir.replace(",", ",,").encode())  # as in --chardev's path=
        if argv[0].endswith(b"qemu-storage-daemon") and any(w in a for a in argv for w in wanted):
            found.append(int(pid))
    return found


def test_killed_offline_backup_leaves_no_daemon(disk_service, images, workdir):
    """No guest: the module SIGKILLed while its qemu-storage-daemon copies a stopped VM's
    disk takes the daemon with it (no lock left on the image), and the next backup works."""
    vms, backups = disk_service, BackupService(disk_service.engine)
    disk = make_image(os.path.join(images, "off.qcow2"), "qcow2", 256)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 192M", disk], check=True, capture_output=True)
    vms.ensure({"name": "offk", "state": "stopped", "accel": "tcg", "disks": [{"path": disk}]}, False)
    target, run_dir = os.path.join(workdir, "backups"), os.path.join(workdir, "run")
    params = {"vm": "offk", "target": target}
    cut = _kill_during_backup(vms, workdir, images, target, params, started=lambda: storage_daemons(run_dir))
    assert cut, "the module was killed while its storage daemon ran"
    try:
        assert wait_for(lambda: not storage_daemons(run_dir), timeout=10), "the daemon ended with the module"
    finally:
        for pid in storage_daemons(run_dir):  # only if the code is wrong: never leave one behind
            os.kill(pid, signal.SIGKILL)
    again = backups.ensure(params, False)  # would fail on the image's lock if the daemon lived on
    assert again["kind"] == "full" and any(name.endswith(".part") for name in again["cleaned"]), again
    assert [p["id"] for p in list_points(target, "offk")] == [again["point"]["id"]]


def _luks_raw_sha(path, key, workdir):
    """SHA-256 of an encrypted qcow2 image's guest-visible bytes, opened with ``key``."""
    key_file, raw = os.path.join(workdir, "k"), path + ".raw"
    with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(key)
    node = {"driver": "qcow2", "encrypt": {"key-secret": "k0"}, "file": {"driver": "file", "filename": path}}
    subprocess.run(
        ["qemu-img", "convert", "--object", json.dumps({"qom-type": "secret", "id": "k0", "file": key_file}),
         "-O", "raw", "json:" + json.dumps(node), raw],
        check=True,
    )  # fmt: skip
    try:
        with open(raw, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    finally:
        os.unlink(raw)
        os.unlink(key_file)


def test_encrypted_disk_stays_encrypted(cloud_service, images, workdir):
    """No guest: a firmware-only VM. An encrypted volume's points (offline full through
    qemu-storage-daemon, live incremental through QEMU) are encrypted with its key, and
    restore to the same bytes, encrypted."""
    from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import read_luks_key
    from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import DiskService

    svc = cloud_service
    path = os.path.join(images, "enc.qcow2")
    DiskService(svc.store, svc.secret_box, svc.hostname, [images], lock_timeout=30).ensure(
        {"path": path, "format": "qcow2", "size": "16M", "encrypt": True}, False
    )
    key = read_luks_key(svc.store, svc.secret_box, path)
    svc.ensure({"name": "enc", "state": "stopped", "accel": "tcg", "disks": [{"path": path}]}, False)
    backups, target = BackupService(svc.engine), os.path.join(workdir, "backups")
    params = {"vm": "enc", "target": target}
    full = backups.ensure(params, False)
    assert full["kind"] == "full" and full["consistency"] == "offline", full
    point_file = os.path.join(target, "enc", full["point"]["disks"][0]["file"])
    info = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", point_file], capture_output=True, check=True).stdout
    )
    assert info["encrypted"] is True, "the point is encrypted"
    assert full["point"]["disks"][0]["encrypted"] is True

    pid = svc.ensure({"name": "enc", "state": "running"}, False).vm["pid"]
    live = backups.ensure(dict(params, mode="incremental"), False)
    assert live["kind"] == "incremental" and live["consistency"] == "crash", live

    # QEMU killed: the bitmap was never stored (in-use), so the next point is full, and says why.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z")
    after_kill = backups.ensure(dict(params, mode="incremental"), False)
    assert after_kill["kind"] == "full" and "inconsistent" in after_kill["fallback_reason"], after_kill
    again = backups.ensure(dict(params, mode="incremental"), False)
    assert again["kind"] == "incremental", "the bitmap made anew by the full point counts again: %r" % again

    want = _luks_raw_sha(path, key, workdir)
    for pid in (live["point"]["id"], after_kill["point"]["id"]):
        out = restore(backups, params, pid, os.path.join(images, "r-" + pid))
        assert json.loads(
            subprocess.run(["qemu-img", "info", "--output=json", out], capture_output=True, check=True).stdout
        )["encrypted"]
        assert _luks_raw_sha(out, key, workdir) == want, "point %s restores the same bytes" % pid


def test_bad_backup_input_names_the_option_and_writes_nothing(disk_service, images, workdir):
    vms, backups = disk_service, BackupService(disk_service.engine)
    target = os.path.join(workdir, "backups")
    vms.ensure({"name": "nodisk", "state": "stopped", "accel": "tcg"}, False)
    cases = [
        ({"vm": "ghost", "target": target}, "vm", "does not exist"),
        ({"vm": "nodisk", "target": target}, "vm", "no writable disk"),
        ({"vm": "nodisk", "target": "backups"}, "target", "absolute"),
        ({"vm": "nodisk", "target": target, "mode": "differential"}, "mode", "must be one of"),
        ({"vm": "nodisk", "target": target, "keep": 0}, "keep", "1 or more"),
        ({"vm": "nodisk", "target": target, "state": "restored", "restore_dir": images}, "target", "holds no backup"),
    ]
    for params, field, phrase in cases:
        with pytest.raises(SpecError) as err:
            backups.ensure(params, False)
        assert err.value.field == field and phrase in str(err.value), (params, str(err.value))
    assert not os.path.exists(target), "a refused task made no backup directory"
    os.makedirs(os.path.join(target, "nodisk"))
    with open(os.path.join(target, "nodisk", "manifest.json"), "w") as handle:
        handle.write('{"version": 1, "vm": "nodisk", "uuid": "", "points": [], "pending": null}')
    with pytest.raises(SpecError) as err:
        backups.ensure({"vm": "nodisk", "target": target, "state": "restored", "restore_dir": images}, False)
    assert err.value.field == "point" and "points: none" in str(err.value)


@pytest.fixture
def small_target(workdir):
    """A 12 MiB tmpfs of the test's own as the backup target: a disk that fills up."""
    mount = os.path.join(workdir, "small")
    os.makedirs(mount, mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", mount], check=True)
    yield mount
    subprocess.run(["umount", mount], check=False)


def test_a_full_disk_leaves_earlier_points_whole(disk_service, images, small_target):
    """No guest (a stopped VM, qemu-storage-daemon): the backup that runs out of space fails
    clearly, lists nothing, leaves no half point, and the earlier point still restores."""
    from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError

    vms, backups = disk_service, BackupService(disk_service.engine)
    disk = make_image(os.path.join(images, "full.qcow2"), "qcow2", 32)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", disk], check=True, capture_output=True)
    vms.ensure({"name": "fills", "state": "stopped", "accel": "tcg", "disks": [{"path": disk}]}, False)
    params = {"vm": "fills", "target": small_target}
    first = backups.ensure(params, False)
    sha_first = image_sha(disk)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 8M 16M", disk], check=True, capture_output=True)
    with pytest.raises(QemuError) as err:
        backups.ensure(dict(params, mode="incremental"), False)
    assert "No space left" in str(err.value), str(err.value)
    vm_dir = os.path.join(small_target, "fills")
    assert sorted(os.listdir(vm_dir)) == [first["point"]["id"], "manifest.json"], "no half point is left"
    assert [p["id"] for p in list_points(small_target, "fills")] == [first["point"]["id"]]
    predicted = backups.ensure(dict(params, mode="incremental"), True)
    assert predicted["kind"] == "full" and "did not finish" in predicted["fallback_reason"], predicted
    assert image_sha(restore(backups, params, first["point"]["id"], os.path.join(images, "r"))) == sha_first


def test_firmware_state_travels_with_a_point(cloud_service, images, workdir):
    """No guest: a firmware-only UEFI VM with a TPM. Its NVRAM and its TPM's state are saved
    with the point; the VM restore_as makes starts with the same bytes of both, journaled,
    and removing it removes them."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine import records
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.engine.resources import tpm_state_dir

    svc = cloud_service
    disk = make_image(os.path.join(images, "fw.qcow2"), "qcow2", 8)
    params = {"name": "fw", "accel": "tcg", "memory_mb": 64, "firmware": "uefi", "tpm": {"version": "2.0"}}
    svc.ensure(dict(params, state="running", disks=[{"path": disk}]), False)
    rec = records.load(svc.store, "fw")
    nvram, tpm = svc.engine.resources.nvram_path(rec), tpm_state_dir(svc.engine.resources.nvram_dir, rec.uuid)
    assert wait_for(lambda: os.path.isdir(tpm) and os.listdir(tpm), timeout=30), "swtpm wrote no state"
    svc.ensure(dict(params, state="stopped", force=True, stop_timeout=0), False)
    saved = {"nvram": open(nvram, "rb").read()}
    # swtpm's .lock is its running instance's, not state
    saved.update({n: open(os.path.join(tpm, n), "rb").read() for n in os.listdir(tpm) if not n.endswith(".lock")})

    backups, target = BackupService(svc.engine), os.path.join(workdir, "backups")
    point = backups.ensure({"vm": "fw", "target": target}, False)["point"]
    assert point["firmware"] == ["nvram", "tpm"], point
    restore(backups, {"vm": "fw", "target": target}, point["id"], os.path.join(images, "back"), restore_as="fw2")
    copy = records.load(svc.store, "fw2")
    nvram2, tpm2 = svc.engine.resources.nvram_path(copy), tpm_state_dir(svc.engine.resources.nvram_dir, copy.uuid)
    got = {"nvram": open(nvram2, "rb").read()}
    got.update({n: open(os.path.join(tpm2, n), "rb").read() for n in os.listdir(tpm2)})
    assert got == saved, "the restored VM's NVRAM or TPM state differs from the original's"
    assert {("nvram", nvram2), ("tpm_state", tpm2)} <= set(svc.store.journal_list(copy.uuid))
    assert svc.ensure({"name": "fw2", "state": "running"}, False).vm["status"] == "running"
    svc.ensure({"name": "fw2", "state": "absent", "force": True, "stop_timeout": 0}, False)
    assert not os.path.exists(nvram2) and not os.path.exists(tpm2)
