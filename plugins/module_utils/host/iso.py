# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small ISO 9660 volumes of a few files (cloud-init's NoCloud seed, labelled CIDATA), with
pycdlib.

Names: ISO 9660 interchange level 3, plus Joliet and Rock Ridge names, which carry the
real name (``user-data``: cloud-init and Windows read those). The same files and label
give the same bytes: every date pycdlib stamps is ``FIXED_TIME`` in UTC, so a rerun can
compare digests instead of rewriting. The file is written under a temporary name in the
same directory, mode 0600 (a seed may hold passwords), then renamed into place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import os
import re
import tempfile
import time
import types
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Mapping, Set

HAS_PYCDLIB = importlib.util.find_spec("pycdlib") is not None
PYCDLIB_IMPORT_ERROR = None if HAS_PYCDLIB else "ModuleNotFoundError: No module named 'pycdlib'"

CIDATA = "CIDATA"
FIXED_TIME = 0.0  # 1970-01-01; volume dates of 0 read as "not specified"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL_RE = re.compile(r"[A-Z0-9_]{1,32}")  # ISO 9660 d-characters
_ISO_NAME_MAX = 30  # name + '.' + extension at interchange level 3


def iso_bytes(files: Mapping[str, bytes], label: str = CIDATA) -> bytes:
    """The ISO image of ``files`` ({flat file name: content}) labelled ``label``."""

    def add(iso) -> None:
        names = {}
        for name in sorted(files):
            iso_name = _iso9660_name(name)
            if iso_name in names:
                raise ValueError("ISO file names %r and %r are the same in ISO 9660" % (names[iso_name], name))
            names[iso_name] = name
            data = bytes(files[name])
            iso.add_fp(io.BytesIO(data), len(data), "/%s;1" % iso_name, rr_name=name, joliet_path="/" + name)

    return _image(label, add)


def _image(label: str, add: Callable[[Any], None]) -> bytes:
    """A new ISO labelled ``label`` (ISO 9660 level 3, Joliet, Rock Ridge, fixed dates),
    filled by ``add(iso)``, as bytes."""
    import pycdlib  # imported where needed: modules that make no ISO run without it

    if not _LABEL_RE.fullmatch(label):
        raise ValueError("ISO volume label %r: 1 to 32 of A-Z, 0-9, _" % (label,))
    with _fixed_clock(pycdlib):
        iso = pycdlib.PyCdlib()
        iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
        try:
            add(iso)
            out = io.BytesIO()
            iso.write_fp(out)
        finally:
            iso.close()
    return out.getvalue()


def write_iso(path: str, files: Mapping[str, bytes], label: str = CIDATA, tree: bool = False) -> str:
    """Write the ISO of ``files`` to ``path`` (temp name + rename, mode 0600); its sha256.
    ``tree``: names are relative paths (``tree_iso_bytes``)."""
    data = tree_iso_bytes(files, label) if tree else iso_bytes(files, label)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return hashlib.sha256(data).hexdigest()


def tree_iso_bytes(files: Mapping[str, bytes], label: str) -> bytes:
    """The ISO image of ``files`` ({relative path with '/': content}) labelled ``label``.

    Joliet and Rock Ridge carry the real names (the caller checks them: Joliet allows 64
    characters per name). The ISO 9660 names are only a fallback no reader here uses, so
    they are made up: d-characters, shortened and numbered (``_1``) where two would meet,
    in sorted order, so the same files give the same bytes."""

    def add(iso) -> None:
        dirs: Dict[str, str] = {"": ""}  # real directory path -> ISO 9660 path
        taken: Dict[str, Set[str]] = {}  # ISO 9660 directory -> names used in it
        for path in sorted(files):
            parts = path.split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise ValueError("ISO path %r: empty, '.' or '..' component" % (path,))
            for depth in range(1, len(parts)):
                real = "/".join(parts[:depth])
                if real not in dirs:
                    parent = dirs["/".join(parts[: depth - 1])]
                    dirs[real] = parent + "/" + _unique(taken.setdefault(parent, set()), parts[depth - 1], True)
                    iso.add_directory(dirs[real], rr_name=parts[depth - 1], joliet_path="/" + real)
            parent = dirs["/".join(parts[:-1])]
            iso_name = _unique(taken.setdefault(parent, set()), parts[-1], False)
            data = bytes(files[path])
            iso.add_fp(
                io.BytesIO(data), len(data), "%s/%s;1" % (parent, iso_name), rr_name=parts[-1], joliet_path="/" + path
            )

    return _image(label, add)


def _unique(taken: Set[str], name: str, directory: bool) -> str:
    """A free ISO 9660 name for ``name`` in a directory whose names are ``taken``."""
    if directory:
        stem, ext, room = _d_chars(name), None, _ISO_NAME_MAX + 1
    else:
        stem, dot, ext = name.rpartition(".")
        stem, ext = (_d_chars(stem), _d_chars(ext)[:8]) if dot and stem else (_d_chars(name), "")
        room = _ISO_NAME_MAX - 1 - len(ext)
    for n in itertools.count():
        suffix = "_%d" % n if n else ""
        candidate = stem[: room - len(suffix)] + suffix
        full = candidate if ext is None else "%s.%s" % (candidate, ext)
        if full not in taken:
            taken.add(full)
            return full
    raise AssertionError("unreachable: itertools.count() does not end")


def _d_chars(text: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def _iso9660_name(name: str) -> str:
    """``user-data`` -> ``USER_DATA.``: d-characters, one dot (ISO 9660 wants it)."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError("ISO file name %r: 1 to 64 of letters, digits, '.', '_', '-'" % (name,))
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    iso = "%s.%s" % (re.sub(r"[^A-Z0-9_]", "_", stem.upper()), re.sub(r"[^A-Z0-9_]", "_", ext.upper()))
    if len(iso) > _ISO_NAME_MAX:
        raise ValueError("ISO file name %r is longer than %d characters" % (name, _ISO_NAME_MAX))
    return iso


@contextmanager
def _fixed_clock(pycdlib: types.ModuleType) -> Iterator[None]:
    """pycdlib stamps ``time.time()`` in local time into every record and offers no
    parameter for it: give its modules a clock that reads FIXED_TIME in UTC meanwhile."""
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.time = lambda: FIXED_TIME
    clock.localtime = lambda secs=None: time.gmtime(FIXED_TIME if secs is None else secs)
    patched = []
    for sub in ("pycdlib", "headervd", "dates"):
        module = getattr(pycdlib, sub, None)
        if module is not None and getattr(module, "time", None) is time:
            patched.append(module)
            module.time = clock
    try:
        yield
    finally:
        for module in patched:
            module.time = time
