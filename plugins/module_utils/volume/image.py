# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Volumes made from an image (a local file or a URL) or a template: the steps that
volume/origin.py plans, carried out.

Downloads land in the image cache (a directory inside the storage roots), named by their
SHA-256 digest, so a second volume from the same image downloads nothing. Every file an
image reads (its backing chain, a qcow2 data file, VMDK extents) must lie inside the storage
roots, else it is refused, naming the file. The new volume is written under a hidden
temporary name and appears under its own name only complete (a hard link, which never
replaces a file, then the temporary name goes)."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.download import download, sha256_of_fd
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import (
    ConfinedDir,
    ConfinedFile,
    open_confined,
    resolve_in_roots,
)
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import FdImage, QemuImg, QemuImgError
from ansible_collections.infinivirt.core.plugins.module_utils.volume.origin import (
    GROW,
    OVERLAY,
    VERIFY,
    Origin,
    Plan,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.plan import VolumeState

CACHE_DIR_NAME = ".infinivirt-images"  # the default image cache, in the first storage root
_MAX_CHAIN = 16  # backing files followed before an image is refused
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOCTTY


def cache_dir(value: Optional[str], roots: List[str]) -> str:
    """The image cache: ``image_cache_dir`` (inside the roots) or the default."""
    if value in (None, ""):
        return os.path.join(roots[0], CACHE_DIR_NAME)
    return resolve_in_roots(value, roots, "image_cache_dir")


def cache_name(sha256: str) -> str:
    return "sha256-%s" % sha256


def _regular(opened: ConfinedFile, option: str, shown: str) -> None:
    if not stat.S_ISREG(os.fstat(opened.fd).st_mode):
        raise SpecError(option, "%s is not a regular file" % shown)


class ImageMaker:
    """``lock(name)``: a context manager serializing downloads of one cache entry (the
    service's store lock); ``recorded_format(path)``: the format the store has for a volume."""

    def __init__(
        self,
        qemu_img: QemuImg,
        roots: List[str],
        cache: str,
        lock: Callable[[str], Any],
        recorded_format: Callable[[str], Optional[str]],
    ):
        self.qemu_img = qemu_img
        self.roots = roots
        self.cache = cache
        self.lock = lock
        self.recorded_format = recorded_format

    # -- the source, read ------------------------------------------------------------------
    def locate(self, origin: Origin) -> str:
        """The file the origin names: the real path of a template or a local source, the
        cache entry of a URL."""
        if origin.kind == "url":
            return os.path.join(self.cache, cache_name(origin.sha256 or ""))
        if origin.kind == "clone":
            return resolve_in_roots(origin.location, self.roots, "clone_from")
        return os.path.realpath(origin.location)

    @contextlib.contextmanager
    def _open(self, origin: Origin, location: str) -> Iterator[ConfinedFile]:
        try:
            with open_confined(location, _READ, field=origin.option) as opened:
                _regular(opened, origin.option, origin.shown)
                yield opened
        except (FileNotFoundError, NotADirectoryError):
            raise SpecError(origin.option, "%s does not exist" % origin.shown) from None

    def verify(self, origin: Origin, location: str) -> None:
        """Check a local source against ``checksum`` (check mode: a real run checks the very
        file it copies, in make)."""
        with self._open(origin, location) as src:
            _verify(origin, src)

    def inspect(self, origin: Origin, location: str) -> Optional[VolumeState]:
        """The image as qemu-img reads it, its whole chain checked; None for a URL not in the
        cache yet."""
        if origin.kind == "url" and not os.path.exists(location):
            return None
        with self._open(origin, location) as opened:
            return self._read_checked(origin, opened, location)

    def _read_checked(self, origin: Origin, opened: ConfinedFile, location: str) -> VolumeState:
        fmt = self.recorded_format(location) if origin.kind == "clone" else None
        try:
            info = self.qemu_img.info(FdImage(opened.fd, location), fmt=fmt)
        except QemuImgError as exc:
            raise SpecError(origin.option, "%s cannot be read as an image: %s" % (origin.shown, exc)) from None
        self._check_chain(origin, info, location)
        return VolumeState.from_info(info)

    def _check_chain(self, origin: Origin, info: Dict[str, Any], location: str) -> None:
        """Every file below the image (backing files, data files, extents) inside the roots."""
        for depth in range(_MAX_CHAIN + 1):
            for other in _files_read(info, location):
                self._inside(origin, other, location)
            backing = info.get("full-backing-filename") or info.get("backing-filename")
            if not backing:
                return
            if depth == _MAX_CHAIN:
                break
            real = self._inside(origin, backing, location)
            try:
                with open_confined(real, _READ, field=origin.option) as below:
                    info = self.qemu_img.info(FdImage(below.fd, real), fmt=info.get("backing-filename-format"))
            except (FileNotFoundError, NotADirectoryError):
                raise SpecError(
                    origin.option, "the backing file %s of %s does not exist" % (backing, origin.shown)
                ) from None
            except QemuImgError as exc:
                raise SpecError(origin.option, "the backing file %s cannot be read: %s" % (backing, exc)) from None
            location = real
        raise SpecError(origin.option, "%s has more than %d backing files" % (origin.shown, _MAX_CHAIN))

    def _inside(self, origin: Origin, name: str, reader: str) -> str:
        if not name.startswith("/"):  # json:{...}, nbd://..., a protocol instead of a file
            raise SpecError(
                origin.option, "%s reads %s, which is not a file path; it is refused" % (origin.shown, name)
            )
        try:
            return resolve_in_roots(name, self.roots, origin.option)
        except SpecError:
            raise SpecError(
                origin.option,
                "%s reads the file %s (through %s), which is outside the storage roots %s; an image "
                "whose backing files lie outside them is refused" % (origin.shown, name, reader, ", ".join(self.roots)),
            ) from None

    # -- making the volume -----------------------------------------------------------------
    def fetch(self, origin: Origin, location: str) -> bool:
        """Bring a URL's image into the cache; True if it was there already."""
        if os.path.exists(location):
            return True
        parent, name = os.path.split(location)
        with self.lock("@image-" + (origin.sha256 or "")[:32]), _cache_dir(parent) as cache:
            if os.path.exists(location):  # another task downloaded it meanwhile
                return True
            download(origin.location, origin.shown, cache, name, origin.sha256)
        return False

    def make(self, path: str, origin: Origin, location: str, plan: Plan, preallocation: Optional[str]) -> None:
        """Write the volume ``path`` (its row exists; the caller removes it if this fails)."""
        with self._open(origin, location) as src:
            if VERIFY in plan.steps:
                _verify(origin, src)
            state = self._read_checked(origin, src, location)
            with _new_file(path) as (directory, tmp):
                if OVERLAY in plan.steps:
                    self.qemu_img.create(
                        FdImage(tmp.fd, path), "qcow2", plan.size, backing=location, backing_fmt=plan.backing_format
                    )
                else:
                    self._copy(origin, src, location, state, tmp, plan, preallocation)
                os.fchmod(tmp.fd, 0o600)
                os.fsync(tmp.fd)
                try:
                    directory.link(tmp.name, os.path.basename(path))
                except FileExistsError:
                    raise StateError("a file %s appeared while the volume was made; it was left alone" % path) from None

    def _copy(
        self,
        origin: Origin,
        src: ConfinedFile,
        location: str,
        state: VolumeState,
        tmp: ConfinedFile,
        plan: Plan,
        preallocation: Optional[str],
    ) -> None:
        backing = _backing_pair(state)
        try:
            self.qemu_img.convert(
                FdImage(src.fd, location, backing=backing),
                state.driver,
                FdImage(tmp.fd, tmp.path),
                plan.format,
                preallocation=preallocation,
            )
        except QemuImgError as exc:
            if exc.in_use:
                raise StateError(
                    "%s: %s is in use by a running VM; stop it first, or make a linked clone of a "
                    "read-only template" % (origin.option, origin.shown)
                ) from None
            raise
        if GROW in plan.steps:
            self.qemu_img.resize(FdImage(tmp.fd, tmp.path), plan.format, plan.size)


def _verify(origin: Origin, src: ConfinedFile) -> None:
    digest = sha256_of_fd(src.fd)
    if digest == origin.sha256:
        return
    if origin.kind == "url":  # a cache entry changed since it was checked: useless now
        src.unlink()
        raise SpecError(
            "checksum",
            "the cached image of %s (%s) no longer has sha256:%s; it was removed, run the task "
            "again to download it" % (origin.shown, src.path, origin.sha256),
        )
    raise SpecError("checksum", "%s has sha256:%s, not the sha256:%s given" % (origin.shown, digest, origin.sha256))


def _backing_pair(state: VolumeState) -> Optional[Tuple[str, str]]:
    if not state.backing_file:
        return None
    return (os.path.realpath(state.backing_file), state.backing_format or "")


def _files_read(info: Dict[str, Any], location: str) -> List[str]:
    """Files an image reads besides itself and its backing file: a qcow2 external data file,
    VMDK extents."""
    data = (info.get("format-specific") or {}).get("data") or {}
    files = [data["data-file"]] if isinstance(data.get("data-file"), str) else []
    for extent in data.get("extents") or ():
        name = extent.get("filename") if isinstance(extent, dict) else None
        if isinstance(name, str) and name != location:
            files.append(name)
    return files


def _cache_dir(path: str) -> ConfinedDir:
    """The image cache, opened without following links; made (0700) when missing."""
    try:
        with ConfinedDir(os.path.dirname(path), "image_cache_dir") as above:
            above.mkdir(os.path.basename(path))
        return ConfinedDir(path, "image_cache_dir")
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError("image_cache_dir", "%s is not a directory, nor can it be made there" % path) from None


@contextlib.contextmanager
def _new_file(path: str) -> Iterator[Tuple[ConfinedDir, ConfinedFile]]:
    """A hidden file next to ``path`` (one name per volume: the volume's lock is held), which
    is gone again when the block ends; a leftover of a killed task is removed first."""
    directory, name = os.path.split(path)
    tmp_name = ".%s.infinivirt-make.tmp" % name
    try:
        parent = ConfinedDir(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError("path", "the directory %s does not exist" % directory) from None
    with parent:
        with contextlib.suppress(FileNotFoundError):
            parent.unlink(tmp_name)
        with parent.open_file(tmp_name, _CREATE, 0o600) as tmp:
            try:
                yield parent, tmp
                parent.fsync()
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
