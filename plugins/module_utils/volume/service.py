# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What infinivirt_disk does: plan, then apply under a per-volume lock; check mode runs the same
plan. Paths are confined to the storage roots (``host.paths``), images are handled by
``qemu.img``, LUKS keys by ``volume.keys``.

A path is checked once (resolve_in_roots gives its real path) and then used only through
descriptors opened from "/" without following links (host.paths.open_confined): qemu-img gets
the descriptor (/proc/self/fd/N), files are created with O_EXCL, renamed and unlinked relative
to the directory's descriptor. A symlink swapped in after the check makes the operation fail;
it never makes root write outside the storage roots. Backing files are still opened by name
(by qemu-img and, at VM start, by QEMU) as their header records them."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import stat
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import (
    LockTimeout,
    SpecError,
    StateError,
)
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import (
    ConfinedFile,
    open_confined,
    resolve_in_roots,
    resolve_roots,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import (
    FdImage,
    QemuImg,
    QemuImgError,
    check_preallocation,
    qemu_driver,
)
from ansible_collections.infinivirt.core.plugins.module_utils.secrets.box import SecretBox
from ansible_collections.infinivirt.core.plugins.module_utils.store.base import secret_context
from ansible_collections.infinivirt.core.plugins.module_utils.store.volumes import VolumeRecord
from ansible_collections.infinivirt.core.plugins.module_utils.validation import PRESENT_ABSENT, check_choice
from ansible_collections.infinivirt.core.plugins.module_utils.volume.image import ImageMaker, cache_dir
from ansible_collections.infinivirt.core.plugins.module_utils.volume.keys import LUKS_KEY, new_luks_key, read_luks_key
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import Origin, origin_from_params, plan_make
from ansible_collections.infinivirt.core.plugins.module_utils.volume.plan import (
    Plan,
    VolumeState,
    Wanted,
    check_metadata,
    plan_update,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import parse_size


def public_info(value: Any) -> Any:
    """qemu-img info without anything secret: keys naming a secret and ``json:`` names (which
    carry secret ids) are dropped. qemu-img info never prints a passphrase; this is a guard."""
    if isinstance(value, dict):
        return {
            k: public_info(v)
            for k, v in value.items()
            if "secret" not in str(k).lower() and not (isinstance(v, str) and v.startswith("json:"))
        }
    if isinstance(value, list):
        return [public_info(v) for v in value]
    return value


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    if not a or not b:
        return False
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _lock_name(path: str) -> str:
    # Not a valid VM name (those start with a letter or digit), so it never meets a VM lock;
    # usable as a file name (SQLite lock files) whatever the path holds.
    return "@volume-" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# How an existing image is opened to be read or handed to qemu-img (which opens
# /proc/self/fd/N again with the access it needs): never blocks on a FIFO planted there.
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOCTTY


def _changed(path: str, what: str) -> StateError:
    return StateError("volume %s changed while in use: %s; nothing was done to the new file" % (path, what))


class DiskService:
    """What infinivirt_disk does, without Ansible.

    ``live_resize(path, new_size)`` grows a volume that a running VM on this host has
    attached (QMP ``block_resize``, so the guest sees the new size) and returns that VM's
    name, or returns None when no running VM here has it attached; the volume is then grown
    offline with qemu-img. It is called for growing only: shrinking and converting are
    offline operations, and qemu-img refuses them (image locking) while a VM has the
    volume open. Lock order: the volume's lock is taken before any VM lock.
    """

    def __init__(
        self,
        store: Any,
        secret_box: Callable[[], SecretBox],
        hostname: str,
        storage_roots: Sequence[str],
        live_resize: Optional[Callable[[str, int], Optional[str]]] = None,
        lock_timeout: float = 60.0,
        qemu_img: Optional[str] = None,
    ):
        self.store = store
        self.secret_box = secret_box
        self.hostname = hostname
        self.storage_roots = list(storage_roots) if storage_roots is not None else []
        self.live_resize = live_resize
        self.lock_timeout = lock_timeout
        self.qemu_img = QemuImg(qemu_img)

    # -- entry point ----------------------------------------------------------------------
    def ensure(self, params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
        """Returns dict(changed, volume, diff, warnings)."""
        state = params.get("state") or "present"
        check_choice("state", state, PRESENT_ABSENT)
        roots = resolve_roots(self.storage_roots)
        path = resolve_in_roots(params.get("path"), roots, "path")
        if state == "absent":
            with self._lock(path):
                return self._absent(path, check_mode)
        origin = origin_from_params(params)
        wanted = self._validate(params, roots)
        maker = ImageMaker(
            self.qemu_img,
            roots,
            cache_dir(params.get("image_cache_dir"), roots),
            lambda name: self._lock(name, "image"),
            self._recorded_driver,
        )
        with self._lock(path):
            return self._present(path, wanted, check_mode, Made(origin, maker))

    @contextlib.contextmanager
    def _lock(self, path: str, what: str = "volume") -> Iterator[None]:
        try:
            with self.store.vm_lock(_lock_name(path), self.lock_timeout):
                yield
        except LockTimeout as exc:
            raise LockTimeout("%s %s is busy: %s" % (what, path, exc)) from None

    def _recorded_driver(self, path: str) -> Optional[str]:
        row = self.store.get_volume(path)
        return qemu_driver(row.format, row.encrypted) if row is not None else None

    # -- validation -----------------------------------------------------------------------
    def _validate(self, params: Dict[str, Any], roots: List[str]) -> Wanted:
        fmt = params.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise SpecError("format", "must be one of %s, got %r" % (", ".join(FORMATS), fmt))
        backing_format = params.get("backing_format")
        if backing_format is not None and backing_format not in FORMATS:
            raise SpecError("backing_format", "must be one of %s, got %r" % (", ".join(FORMATS), backing_format))
        preallocation = check_preallocation(params.get("preallocation"))
        size = params.get("size")
        size = parse_size(size, "size") if size not in (None, "") else None
        backing = params.get("backing_file")
        if backing not in (None, ""):
            backing = resolve_in_roots(backing, roots, "backing_file")
            if not os.path.exists(backing):
                raise SpecError("backing_file", "%s does not exist" % params.get("backing_file"))
            if not os.path.isfile(backing):
                raise SpecError("backing_file", "%s is not a regular file" % params.get("backing_file"))
        else:
            backing = None
            if backing_format is not None:
                raise SpecError("backing_format", "needs backing_file")
        flags = {}
        for name in ("encrypt", "convert", "force"):
            value = params.get(name)
            if value is not None and not isinstance(value, bool):
                raise SpecError(name, "must be true or false, got %r" % (value,))
            flags[name] = value
        return Wanted(
            format=fmt,
            size=size,
            backing_file=backing,
            backing_format=backing_format,
            preallocation=preallocation,
            encrypt=flags["encrypt"],
            convert=bool(flags["convert"]),
            force=bool(flags["force"]),
        )

    # -- reading the host -----------------------------------------------------------------
    def _inspect(self, path: str, row: Optional[VolumeRecord]) -> Optional[VolumeState]:
        """The image at ``path`` (None if there is no file), read with ``-U`` so an image a
        running VM holds can be read. A managed volume is read in its recorded format, an
        unmanaged file's format is probed."""
        driver = qemu_driver(row.format, row.encrypted) if row else None
        try:
            with open_confined(path, _READ) as vol:
                st = os.fstat(vol.fd)
                if not stat.S_ISREG(st.st_mode):
                    raise SpecError("path", "%s exists and is not a regular file" % path)
                if row is not None and st.st_size == 0 and vol.is_entry():
                    # A create cut off before qemu-img wrote a byte (the file is made first,
                    # O_EXCL): nothing to keep, so it is made again.
                    vol.unlink()
                    return None
                info = self.qemu_img.info(FdImage(vol.fd, path), fmt=driver)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SpecError("path", "%s cannot be read: %s" % (path, exc.strerror or exc)) from None
        state = VolumeState.from_info(info)
        if row is not None and state.encrypted != row.encrypted:
            recorded = "encrypted" if row.encrypted else "not encrypted"
            found = "encrypted" if state.encrypted else "not encrypted"
            raise StateError(
                "volume %s is recorded as %s but the file is %s; it was replaced outside "
                "Infinivirt" % (path, recorded, found)
            )
        return state

    def _vms_using(self, path: str) -> List[str]:
        """Names of the VMs (of any host) whose definition lists the volume."""
        names = []
        for vm in self.store.list_vms():
            for disk in vm.spec.get("disks") or ():  # a store row (store/vms.py): plain values
                if _same_file(disk.get("path"), path):
                    names.append(vm.name)
                    break
        return names

    def _clones_of(self, path: str) -> List[str]:
        """Managed volumes on this host that use ``path`` as their backing file."""
        clones = []
        for vol in self.store.list_volumes(self.hostname):
            if vol.path == path or vol.format != "qcow2":
                continue
            try:
                with open_confined(vol.path, _READ) as clone:
                    if not stat.S_ISREG(os.fstat(clone.fd).st_mode):
                        continue
                    info = self.qemu_img.info(FdImage(clone.fd, vol.path), fmt=qemu_driver(vol.format, vol.encrypted))
            except (OSError, SpecError, QemuImgError):
                continue
            if _same_file(info.get("full-backing-filename") or info.get("backing-filename"), path):
                clones.append(vol.path)
        return clones

    def _luks_key(self, path: str) -> str:
        key = read_luks_key(self.store, self.secret_box, path)
        if key is None:
            raise StateError("volume %s is recorded as encrypted but its LUKS key is missing from the database" % path)
        return key

    # -- present --------------------------------------------------------------------------
    def _present(self, path: str, wanted: Wanted, check_mode: bool, made: "Made") -> Dict[str, Any]:
        row = self.store.get_volume(path)
        current = self._inspect(path, row)
        if current is None and made.origin is not None:
            plan = self._plan_origin(path, wanted, made, check_mode)
        elif current is None:
            plan = self._plan_create(path, wanted, row)
        else:
            plan = self._plan_update(path, wanted, row, current)
        if row is not None and row.host != self.hostname and plan.actions:
            raise StateError(
                "volume %s is recorded for host %s; change it from that host (or remove "
                "it there first)" % (path, row.host)
            )
        before = _view(path, current, row is not None)
        attached_to = None
        if not check_mode and plan.actions:
            attached_to = self._apply(path, wanted, row, current, plan, made)
        if check_mode or not plan.actions:
            after = self._predicted_view(path, current, plan)
            volume = self._result(path, current, plan, attached_to, predicted=bool(plan.actions))
        else:
            current = self._inspect(path, self.store.get_volume(path))
            after = _view(path, current, True)
            volume = self._result(path, current, plan, attached_to, predicted=False)
        volume.update(made.result(plan))
        return {
            "changed": bool(plan.actions),
            "volume": volume,
            "diff": {"before": before, "after": after},
            "warnings": plan.warnings,
        }

    def _plan_create(self, path: str, wanted: Wanted, row: Optional[VolumeRecord]) -> Plan:
        plan = Plan(actions=["create"])
        plan.format = wanted.format or (row.format if row else "qcow2")
        plan.encrypted = wanted.encrypt if wanted.encrypt is not None else bool(row and row.encrypted)
        if not os.path.isdir(os.path.dirname(path)):
            raise SpecError("path", "the directory %s does not exist" % os.path.dirname(path))
        backing_size = None
        if wanted.backing_file is not None:
            if plan.format != "qcow2":
                raise SpecError("backing_file", "needs format qcow2 (a raw volume has no backing file)")
            if plan.encrypted:
                raise SpecError(
                    "encrypt", "cannot be combined with backing_file: the data of the base image would stay unencrypted"
                )
            if wanted.preallocation not in (None, "off"):
                raise SpecError(
                    "preallocation",
                    "must be off (or unset) with backing_file: qemu-img cannot preallocate a linked clone",
                )
            if _same_file(wanted.backing_file, path):
                raise SpecError("backing_file", "must be another file than path")
            base = self._backing_state(wanted.backing_file, wanted.backing_format)
            plan.backing_file = wanted.backing_file
            plan.backing_format = wanted.backing_format or base.driver
            backing_size = base.virtual_size
        check_metadata(wanted.preallocation, plan.format, plan.encrypted)
        plan.size = wanted.size if wanted.size is not None else backing_size
        if plan.size is None:
            raise SpecError("size", "is required to create %s (or give backing_file, whose size is used)" % path)
        return plan

    def _plan_origin(self, path: str, wanted: Wanted, made: "Made", check_mode: bool) -> Plan:
        """A volume made from an image or template (volume/origin.py decides, volume/image.py
        does). Outside check mode a URL is fetched into the cache first, so the plan knows the
        image; check mode downloads nothing."""
        if not os.path.isdir(os.path.dirname(path)):
            raise SpecError("path", "the directory %s does not exist" % os.path.dirname(path))
        origin, maker = made.origin, made.maker
        made.location = maker.locate(origin)
        if origin.kind == "url":
            made.cached = os.path.exists(made.location) if check_mode else maker.fetch(origin, made.location)
        image = maker.inspect(origin, made.location)
        if check_mode and origin.kind == "file" and origin.sha256:
            maker.verify(origin, made.location)
        writers = self._writers_of(made.location) if origin.kind == "clone" else ()
        if origin.kind == "clone":
            made.origin = origin = dataclasses.replace(origin, location=made.location)
        return plan_make(path, origin, wanted.format, wanted.size, wanted.preallocation, image, writers)

    def _writers_of(self, path: str) -> List[str]:
        """VMs (of any host) whose definition lists ``path`` as a disk they may write to."""
        names = []
        for vm in self.store.list_vms():
            for disk in vm.spec.get("disks") or ():
                writable = not disk.get("readonly") and disk.get("media", "disk") != "cdrom"
                if writable and _same_file(disk.get("path"), path):
                    names.append(vm.name)
                    break
        return names

    def _backing_state(self, backing: str, backing_format: Optional[str]) -> VolumeState:
        row = self.store.get_volume(backing)
        fmt = backing_format
        if fmt is None and row is not None:
            fmt = qemu_driver(row.format, row.encrypted)
        try:
            with open_confined(backing, _READ, field="backing_file") as base_file:
                if not stat.S_ISREG(os.fstat(base_file.fd).st_mode):
                    raise SpecError("backing_file", "%s is not a regular file" % backing)
                base = VolumeState.from_info(self.qemu_img.info(FdImage(base_file.fd, backing), fmt=fmt))
        except OSError as exc:
            raise SpecError("backing_file", "%s cannot be read: %s" % (backing, exc.strerror or exc)) from None
        except QemuImgError as exc:
            raise SpecError("backing_file", "%s cannot be read as an image: %s" % (backing, exc)) from None
        if base.encrypted:
            raise SpecError(
                "backing_file", "%s is encrypted; linked clones of encrypted volumes are not supported" % backing
            )
        if base.driver not in FORMATS:
            raise SpecError(
                "backing_file",
                "%s is a %s image; set backing_format (qcow2 or raw) or convert it first" % (backing, base.driver),
            )
        return base

    def _plan_update(self, path: str, wanted: Wanted, row: Optional[VolumeRecord], current: VolumeState) -> Plan:
        converting = wanted.format not in (None, current.format)
        return plan_update(
            path,
            wanted,
            current,
            managed=row is not None,
            same_backing=_same_file(current.backing_file, wanted.backing_file),
            users=self._vms_using(path) if converting else (),
        )

    # -- applying -------------------------------------------------------------------------
    def _apply(
        self,
        path: str,
        wanted: Wanted,
        row: Optional[VolumeRecord],
        current: Optional[VolumeState],
        plan: Plan,
        made: "Made",
    ) -> Optional[str]:
        """Carry out the plan; returns the VM that took a live resize, if any."""
        if "create" in plan.actions and plan.steps:
            self._make(path, wanted, plan, made)
            return None
        if "create" in plan.actions:
            self._create(path, wanted, plan)
            return None
        record = row or VolumeRecord(
            path=path, host=self.hostname, format=current.format if current else plan.format, encrypted=plan.encrypted
        )
        key = self._luks_key(path) if plan.encrypted else None
        if "convert" in plan.actions:
            self._convert(path, current, plan.format, key, wanted.preallocation)
            record.format = plan.format
        if "adopt" in plan.actions:  # after a convert, so the row names a format we manage
            self.store.put_volume(record)
        attached_to = None
        if "grow" in plan.actions:
            if self.live_resize is not None:
                attached_to = self.live_resize(path, plan.size)
            if attached_to is None:
                self._resize(path, plan.format, plan.size, preallocation=wanted.preallocation, luks_key=key)
        elif "shrink" in plan.actions:
            self._resize(path, plan.format, plan.size, shrink=True, luks_key=key)
        if "adopt" not in plan.actions:
            self.store.update_volume(record)
        return attached_to

    def _resize(self, path: str, fmt: str, size: int, **kwargs: Any) -> None:
        with self._open_existing(path) as vol:
            self.qemu_img.resize(FdImage(vol.fd, path), fmt, size, **kwargs)

    @contextlib.contextmanager
    def _open_existing(self, path: str) -> Iterator[Any]:
        """The volume ``_inspect`` found, opened again without following links."""
        try:
            with open_confined(path, _READ) as vol:
                if not stat.S_ISREG(os.fstat(vol.fd).st_mode):
                    raise _changed(path, "it is no longer a regular file")
                yield vol
        except (FileNotFoundError, NotADirectoryError):
            raise _changed(path, "it is gone") from None

    def _create(self, path: str, wanted: Wanted, plan: Plan) -> None:
        """The row (with the sealed key) is written before the file exists, and removed again
        if qemu-img fails, so a key is never lost and a failed create leaves nothing. The file
        is created with O_EXCL in the directory reached without links; qemu-img writes the
        image into that file (/proc/self/fd/N), never into whatever the name points at."""
        key = token = None
        if plan.encrypted:
            key = new_luks_key()
            token = self.secret_box().encrypt(key, secret_context(path, LUKS_KEY))
        self.store.put_volume(
            VolumeRecord(path=path, host=self.hostname, format=plan.format, encrypted=plan.encrypted), token
        )
        try:
            with contextlib.ExitStack() as stack:
                try:
                    vol = stack.enter_context(open_confined(path, _CREATE, 0o600))
                except FileExistsError:
                    raise _changed(path, "a file of that name appeared before it could be created") from None
                except (FileNotFoundError, NotADirectoryError):
                    raise SpecError("path", "the directory %s does not exist" % os.path.dirname(path)) from None
                try:
                    self.qemu_img.create(
                        FdImage(vol.fd, path),
                        plan.format,
                        wanted.size,
                        # The header stores the backing file by name: the real path checked
                        # against the roots (a backing chain is opened by name later).
                        backing=plan.backing_file,
                        backing_fmt=plan.backing_format,
                        preallocation=wanted.preallocation,
                        luks_key=key,
                    )
                    os.fchmod(vol.fd, 0o600)
                    vol.dir.fsync()
                except BaseException:
                    with contextlib.suppress(OSError):
                        vol.unlink()  # only if the name is still the file created here
                    raise
        except BaseException:
            self.store.delete_volume(path)
            raise

    def _make(self, path: str, wanted: Wanted, plan: Plan, made: "Made") -> None:
        """A volume from an image or template: the row first (as in _create), removed again if
        making the file fails; the file appears under its name only complete."""
        self.store.put_volume(VolumeRecord(path=path, host=self.hostname, format=plan.format, encrypted=False))
        try:
            made.maker.make(path, made.origin, made.location, plan, wanted.preallocation)
        except BaseException:
            self.store.delete_volume(path)
            raise

    def _convert(
        self, path: str, current: VolumeState, target: str, key: Optional[str], preallocation: Optional[str]
    ) -> None:
        """Convert into a hidden file next to the volume, then rename it over the volume.
        qemu-img takes the image lock on the source, so an image in use is refused."""
        # One name per volume (the volume's lock is held): a convert cut off half-way leaves
        # it behind, and the next one removes it first.
        tmp_name = ".%s.infinivirt-convert.tmp" % os.path.basename(path)
        with self._open_existing(path) as vol:
            with contextlib.suppress(FileNotFoundError):
                vol.dir.unlink(tmp_name)  # a leftover of a convert that was killed
            with vol.dir.open_file(tmp_name, _CREATE, 0o600) as tmp:
                self._convert_into(path, vol, tmp, current, target, key, preallocation)

    def _convert_into(
        self,
        path: str,
        vol: ConfinedFile,
        tmp: ConfinedFile,
        current: VolumeState,
        target: str,
        key: Optional[str],
        preallocation: Optional[str],
    ) -> None:
        """qemu-img writes the converted image into ``tmp``, which then replaces ``vol``."""
        try:
            backing = (current.backing_file, current.backing_format) if current.backing_file else None
            self.qemu_img.convert(
                FdImage(vol.fd, path, backing=backing),
                current.driver,
                FdImage(tmp.fd, tmp.path),
                target,
                luks_key=key,
                preallocation=preallocation,
            )
            st = os.fstat(vol.fd)
            os.fchmod(tmp.fd, stat.S_IMODE(st.st_mode))
            with contextlib.suppress(OSError):
                os.fchown(tmp.fd, st.st_uid, st.st_gid)
            if not vol.is_entry():
                raise _changed(path, "the file was replaced during the conversion")
            vol.dir.rename(tmp.name, vol.name)
            vol.dir.fsync()
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()  # still there only if the rename did not happen

    # -- absent ---------------------------------------------------------------------------
    def _absent(self, path: str, check_mode: bool) -> Dict[str, Any]:
        row = self.store.get_volume(path)
        try:
            current = self._inspect(path, row)
            before = _view(path, current, row is not None)
        except (QemuImgError, StateError) as exc:  # a damaged or replaced image can still go
            current = VolumeState.from_info({"format": "raw", "filename": path})
            before = {"path": path, "state": "present", "managed": row is not None, "error": str(exc)}
        after = {"path": path, "state": "absent"}
        volume = {"path": path, "state": "absent"}
        if current is None and row is None:
            return {"changed": False, "volume": volume, "diff": {"before": before, "after": after}, "warnings": []}
        if row is not None and row.host != self.hostname:
            raise StateError("volume %s is recorded for host %s; remove it from that host" % (path, row.host))
        users = self._vms_using(path)
        if users:
            raise StateError(
                "volume %s cannot be removed: VM %s lists it among its disks; remove it from the "
                "VM first" % (path, ", ".join(users))
            )
        clones = self._clones_of(path)
        if clones:
            raise StateError("volume %s cannot be removed: it is the backing file of %s" % (path, ", ".join(clones)))
        if current is not None:
            with self._open_existing(path) as vol:
                try:  # without -U: fails if another process (a VM) has the image open for writing
                    self.qemu_img.info(FdImage(vol.fd, path), fmt=current.driver, force_share=False)
                except QemuImgError as exc:
                    if exc.in_use:
                        raise StateError(
                            "volume %s cannot be removed: it is in use by another process (a running VM?)" % path
                        ) from None
                if not check_mode:
                    if not vol.unlink():  # the name is unlinked only while it is still this file
                        raise _changed(path, "the file was replaced before it could be removed")
                    vol.dir.fsync()
        if not check_mode:
            if row is not None:
                self.store.delete_volume(path)
        return {"changed": True, "volume": volume, "diff": {"before": before, "after": after}, "warnings": []}

    # -- results --------------------------------------------------------------------------
    def _predicted_view(self, path: str, current: Optional[VolumeState], plan: Plan) -> Dict[str, Any]:
        if not plan.actions:
            return _view(path, current, True)
        return {
            "path": path,
            "state": "present",
            "format": plan.format,
            "size": plan.size,
            "encrypted": plan.encrypted,
            "backing_file": plan.backing_file,
            "backing_format": plan.backing_format,
            "managed": True,
        }

    def _result(
        self, path: str, current: Optional[VolumeState], plan: Plan, attached_to: Optional[str], predicted: bool
    ) -> Dict[str, Any]:
        """The ``volume`` return value. When ``predicted`` (check mode with changes), the
        fields the plan sets are predicted; actual_size and info describe the file as it is
        now (None and {} for a volume not created yet)."""
        info = public_info(current.info) if current is not None else {}
        result = {
            "path": path,
            "state": "present",
            "attached_to": attached_to,
            "used_by": self._vms_using(path),
            "host": self.hostname,
            "actual_size": current.actual_size if current is not None else None,
            "info": info,
        }
        if predicted or current is None:
            result.update(
                format=plan.format,
                virtual_size=plan.size,
                encrypted=plan.encrypted,
                backing_file=plan.backing_file,
                backing_format=plan.backing_format,
            )
        else:
            result.update(
                format=current.format,
                virtual_size=current.virtual_size,
                encrypted=current.encrypted,
                backing_file=current.backing_file,
                backing_format=current.backing_format,
            )
        return result


@dataclasses.dataclass
class Made:
    """What a task knows of the image or template it makes a volume from."""

    origin: Optional[Origin]
    maker: ImageMaker
    location: Optional[str] = None  # the file read: a cache entry, a local file, a template
    cached: Optional[bool] = None  # a URL's image: found in the cache (True) or downloaded

    def result(self, plan: Plan) -> Dict[str, Any]:
        """``source`` and ``cached`` of the result: set when this task makes (or, in check
        mode, would make) the volume from an image or template."""
        making = self.origin is not None and bool(plan.steps)
        return {
            "source": self.origin.shown if making else None,
            "cached": self.cached if making else None,
        }


def _view(path: str, state: Optional[VolumeState], managed: bool) -> Dict[str, Any]:
    """What the diff shows of a volume."""
    if state is None:
        return {"path": path, "state": "absent"}
    return {
        "path": path,
        "state": "present",
        "format": state.format,
        "size": state.virtual_size,
        "encrypted": state.encrypted,
        "backing_file": state.backing_file,
        "backing_format": state.backing_format,
        "managed": managed,
    }
