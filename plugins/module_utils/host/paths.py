# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Paths users give for images: they must stay inside the storage roots, through symlinks
and '..' alike (a string prefix test is not enough)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any, Iterator, List, Sequence

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import CONTROL_RE


def resolve_roots(roots: Any, option: str = "storage_roots") -> List[str]:
    """The roots, each resolved through symlinks; errors name ``option`` (the one that
    gave the roots: storage_roots, or rom_dir for a ROM file)."""
    if isinstance(roots, str) or not isinstance(roots, (list, tuple)) or not roots:
        raise SpecError(option, "must be a non-empty list of absolute directory paths, got %r" % (roots,))
    resolved = []
    for root in roots:
        if not isinstance(root, str) or not root:
            raise SpecError(option, "every entry must be a non-empty path, got %r" % (root,))
        if CONTROL_RE.search(root):
            raise SpecError(option, "%r contains control characters" % root)
        if not os.path.isabs(root):
            raise SpecError(option, "%r is not an absolute path" % root)
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise SpecError(option, "%s does not exist or is not a directory (create it first)" % root)
        resolved.append(real)
    return resolved


def _inside(candidate: str, root: str) -> bool:
    return candidate != root and os.path.commonpath([root, candidate]) == root


def resolve_in_roots(path: Any, roots: Sequence[str], field: str = "path", roots_option: str = "storage_roots") -> str:
    """The real path of ``path``, which must name a file inside one of ``roots`` (given by
    the option ``roots_option``, which errors name).

    The file itself may not exist yet: its parent directory is resolved and the name joined
    to it; if the name exists (a file, or a symlink even dangling) it is resolved too, so a
    symlink pointing outside the roots is refused like a ``..`` that climbs out of them.
    """
    real_roots = resolve_roots(roots, roots_option)
    if not isinstance(path, str) or not path:
        raise SpecError(field, "must be a non-empty absolute path")
    if CONTROL_RE.search(path):
        raise SpecError(field, "must not contain control characters, got %r" % path)
    if not os.path.isabs(path):
        raise SpecError(field, "must be an absolute path, got %r" % path)
    parent, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise SpecError(field, "must name a file, not a directory, got %r" % path)
    try:  # realpath raises when a link on the way is swapped while it reads it
        candidate = os.path.join(os.path.realpath(parent), name)
        if os.path.lexists(candidate):
            candidate = os.path.realpath(candidate)
    except OSError as exc:
        raise SpecError(
            field, "%s changed while in use, it cannot be resolved: %s" % (path, exc.strerror or exc)
        ) from None
    if not any(_inside(candidate, root) for root in real_roots):
        shown = path if candidate == path else "%s (which resolves to %s)" % (path, candidate)
        if roots_option == "storage_roots":
            reason = "%s is outside the storage roots %s; use a path inside them or add its directory to storage_roots"
        else:
            reason = "%s is outside {0} %s; use a file inside it or set {0} to its directory".format(roots_option)
        raise SpecError(field, reason % (shown, ", ".join(real_roots)))
    return candidate


# -- using a confined path -------------------------------------------------------------------
#
# resolve_in_roots checks a path; by the time the file is used, anyone who can write in a
# storage root may have swapped a directory on the way (or the file) for a symlink, and root
# would then write wherever that points. So the file is used through descriptors reached from
# "/" one component at a time, none following a link: the path given is the real path
# computed when it was checked, so any link met now is a swap, and it is refused.

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _swapped(field: str, path: str, where: str) -> SpecError:
    return SpecError(
        field,
        "%s changed while in use: %s is now a symbolic link (a storage root is writable by someone "
        "else?); nothing was done to it" % (path, where),
    )


def _split_real(path: str, field: str) -> List[str]:
    if not isinstance(path, str) or not os.path.isabs(path) or os.path.normpath(path) != path or path.startswith("//"):
        raise SpecError(field, "must be a resolved absolute path, got %r" % (path,))
    return [part for part in path.split("/") if part]


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class ConfinedDir:
    """A directory opened from "/" without following a link; a context manager that closes
    it. Names given to its methods are single components, opened with ``O_NOFOLLOW``."""

    def __init__(self, path: str, field: str = "path"):
        self.path = path
        self.field = field
        self.fd = self._walk(_split_real(path, field))

    def _walk(self, parts: Sequence[str]) -> int:
        fd = os.open("/", _DIR_FLAGS)
        try:
            for i, part in enumerate(parts):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                        raise _swapped(self.field, self.path, "/" + "/".join(parts[: i + 1])) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _name(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise SpecError(self.field, "%r is not a file name" % (name,))
        return name

    def open_file(self, name: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> "ConfinedFile":
        """``name`` in this directory, never through a link (``O_CREAT | O_EXCL`` to create it;
        an existing name then raises FileExistsError, a symlink included)."""
        try:
            fd = os.open(self._name(name), flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(name, self.fd)):
                raise _swapped(self.field, os.path.join(self.path, name), os.path.join(self.path, name)) from None
            raise
        return ConfinedFile(self, name, fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(self._name(src), self._name(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(self._name(name), dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """A second name ``dst`` for ``src``; unlike a rename it never replaces an existing
        ``dst`` (FileExistsError), so a finished file appears under its name only if free."""
        os.link(self._name(src), self._name(dst), src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def mkdir(self, name: str, mode: int = 0o700) -> None:
        """Make the directory ``name`` here unless it exists."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self._name(name), mode, dir_fd=self.fd)

    def fsync(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ConfinedDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ConfinedFile:
    """A file opened in a ConfinedDir: ``fd`` is the file, ``dir`` its directory (for renames
    and unlinks by ``dir.fd``), ``name`` its name there. Closing it closes only ``fd``."""

    def __init__(self, directory: ConfinedDir, name: str, fd: int):
        self.dir = directory
        self.name = name
        self.fd = fd

    @property
    def path(self) -> str:
        return os.path.join(self.dir.path, self.name)

    def is_entry(self) -> bool:
        """Whether ``name`` in ``dir`` still names this very file (not a replacement)."""
        try:
            here = os.stat(self.name, dir_fd=self.dir.fd, follow_symlinks=False)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def unlink(self) -> bool:
        """Remove ``name`` if it still names this file; False if it is gone or replaced."""
        if not self.is_entry():
            return False
        self.dir.unlink(self.name)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ConfinedFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def open_confined(
    path: str, flags: int = os.O_RDONLY, mode: int = 0o600, field: str = "path"
) -> Iterator[ConfinedFile]:
    """``path`` (a real path from resolve_in_roots) opened without following any link; its
    directory stays open as ``.dir``. Both are closed on exit. A symlink on the way raises
    SpecError(field); a missing file or directory raises FileNotFoundError."""
    directory, name = os.path.split(path)
    with ConfinedDir(directory, field) as parent:
        if not name:
            raise SpecError(field, "must name a file, got %r" % (path,))
        with parent.open_file(name, flags, mode) as opened:
            yield opened
