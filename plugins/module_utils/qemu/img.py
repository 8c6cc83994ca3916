# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``qemu-img`` run with argv lists, never a shell.

User paths are always whole argv elements or JSON strings (``json:{...}`` file names,
``--object {...}``), so a comma, quote or ``=`` in a path never reaches QemuOpts parsing. The
LUKS passphrase is handed over as ``--object secret,file=/proc/self/fd/N``, a memory-only
descriptor qemu-img inherits (host.secret_fd): it is never in argv (``/proc/PID/cmdline`` is
world-readable), in a file, or in any message.

Volumes are handed over the same way (FdImage): the caller opens the file without following a
link (host.paths.open_confined) and qemu-img opens ``/proc/self/fd/N``, which is that very
file whatever happens to its name meanwhile. Messages and ``info`` name the volume's path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ansible_collections.infinivirt.core.plugins.module_utils.errors import QemuError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.formats import FORMATS, PREALLOCATIONS

# PBKDF2 time for a LUKS key slot. The passphrase is 32 random bytes (256 bits), which no
# amount of stretching makes harder to guess, so QEMU's 2 s default would only slow down
# every create and every VM start; QEMU still enforces its minimum iteration count.
LUKS_ITER_TIME_MS = 100
# QEMU 7.2 measures PBKDF2 speed with a millisecond CPU clock and fails now and then with
# this message on fast hosts (nothing is created); a new attempt succeeds.
_PBKDF_FLAKE = "Unable to get accurate CPU usage"
_PBKDF_ATTEMPTS = 30  # a loaded host trips it more often; a short pause between tries helps
_SECRET_ID = "infinivirt-sec0"
# qemu format names we may pass on to qemu-img as an argv element (detected formats).
_DRIVER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_LOCK_FAILURE_RE = re.compile(r"Failed to get (?:shared )?\"[a-z ]+\" lock")


@dataclasses.dataclass(frozen=True)
class FdImage:
    """An image qemu-img reaches through the open descriptor ``fd`` (inherited, same number)
    instead of by name; ``name`` is what messages and ``info`` show (the volume's path)."""

    fd: int
    name: str
    # Its backing image (absolute path, format), opened explicitly: a relative backing name
    # in the header would be looked up next to /proc/self/fd/N. None: as the header says.
    backing: Optional[Tuple[str, str]] = None

    @property
    def path(self) -> str:
        return "/proc/self/fd/%d" % self.fd


Image = Union[str, FdImage]


def _image(image: Image, fds: List[int], names: Dict[str, str]) -> Tuple[str, str]:
    """(what qemu-img is given, what messages show); an FdImage's descriptor joins ``fds``."""
    if isinstance(image, FdImage):
        fds.append(image.fd)
        names[image.path] = image.name
        return image.path, image.name
    return image, image


def _fd_path_re(names: Dict[str, str]) -> "re.Pattern[str]":
    return re.compile("|".join(re.escape(p) + r"(?![0-9])" for p in sorted(names, key=len, reverse=True)))


def _shown(text: str, names: Dict[str, str]) -> str:
    """``text`` with each /proc/self/fd/N replaced by the name of the image it is."""
    if not names or not isinstance(text, str):
        return text
    return _fd_path_re(names).sub(lambda m: names[m.group(0)], text)


def _shown_info(value: Any, names: Dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _shown_info(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown_info(v, names) for v in value]
    return _shown(value, names)


class QemuImgError(QemuError):
    """qemu-img failed. ``in_use`` tells a lock conflict (another process has the image open)."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr
        self.in_use = bool(_LOCK_FAILURE_RE.search(stderr))


def qemu_driver(fmt: str, encrypted: bool) -> str:
    """The qemu block driver of a volume: an encrypted raw volume is a LUKS file."""
    return "luks" if encrypted and fmt == "raw" else fmt


def _key_path(stack: contextlib.ExitStack, luks_key: str, fds: List[int]) -> str:
    """The key in a descriptor the qemu-img child inherits (closed when ``stack`` ends)."""
    key = stack.enter_context(secret_fd(luks_key))
    fds.append(key.fd)
    return key.path


def _secret_object(key_path: str) -> str:
    """``--object`` in JSON form (QEMU >= 6.0): the file name is a JSON string (the
    ``/proc/self/fd/N`` of a host.secret_fd descriptor)."""
    return json.dumps({"qom-type": "secret", "id": _SECRET_ID, "file": key_path, "format": "raw"})


_AS_IN_HEADER = object()


def _backing_node(path: str, fmt: Optional[str]) -> Dict[str, Any]:
    node: Dict[str, Any] = {"file": {"driver": "file", "filename": path}}
    if fmt:
        node["driver"] = fmt  # else QEMU probes it, as it would from the header
    return node


def _json_filename(driver: str, path: str, encrypted: bool = True, backing: Any = _AS_IN_HEADER) -> str:
    """An image (encrypted: opened with its key secret), the path as a JSON string. For a
    qcow2, ``backing`` None opens it without its backing chain (resize needs none), a
    (path, format) pair opens that chain explicitly."""
    node: Dict[str, Any] = {"driver": driver, "file": {"driver": "file", "filename": path}}
    if encrypted and driver == "luks":
        node["key-secret"] = _SECRET_ID
    elif encrypted:
        node["encrypt"] = {"key-secret": _SECRET_ID}
    if driver == "qcow2" and backing is not _AS_IN_HEADER:
        node["backing"] = None if backing is None else _backing_node(*backing)
    return "json:" + json.dumps(node)


def _new_image_options(driver: str, encrypted: bool, preallocation: Optional[str]) -> List[str]:
    """The -o options of an image qemu-img makes (create, convert)."""
    options = _encryption_options(driver) if encrypted else []
    if check_preallocation(preallocation):
        options.append("preallocation=%s" % preallocation)
    return options


def _encryption_options(driver: str) -> List[str]:
    if driver == "luks":
        return ["key-secret=%s" % _SECRET_ID, "iter-time=%d" % LUKS_ITER_TIME_MS]
    return ["encrypt.format=luks", "encrypt.key-secret=%s" % _SECRET_ID, "encrypt.iter-time=%d" % LUKS_ITER_TIME_MS]


def _check_driver(driver: str) -> str:
    if not isinstance(driver, str) or not _DRIVER_RE.fullmatch(driver):
        raise QemuError("not a qemu image format name: %r" % (driver,))
    return driver


def check_preallocation(preallocation: Optional[str]) -> Optional[str]:
    if preallocation is not None and preallocation not in PREALLOCATIONS:
        raise SpecError("preallocation", "must be one of %s, got %r" % (", ".join(PREALLOCATIONS), preallocation))
    return preallocation


class QemuImg:
    """``qemu-img`` with argv lists. Methods raise QemuImgError with qemu-img's stderr."""

    def __init__(self, binary: Optional[str] = None):
        self._binary = binary

    @property
    def binary(self) -> str:
        if self._binary is None:
            found = shutil.which("qemu-img")
            if found is None:
                raise QemuError(
                    "qemu-img is not installed on this host (Debian/Ubuntu package qemu-utils, RHEL package qemu-img)"
                )
            self._binary = found
        return self._binary

    def _run(
        self,
        args: List[str],
        doing: str,
        timeout: Optional[float] = None,
        pass_fds: Sequence[int] = (),
        names: Optional[Dict[str, str]] = None,
    ) -> str:
        argv = [self.binary] + args
        env = dict(os.environ, LC_ALL="C")
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                env=env,
                timeout=timeout,
                check=False,
                pass_fds=tuple(pass_fds),
            )
        except subprocess.TimeoutExpired:
            raise QemuImgError("qemu-img gave up %s after %g s" % (doing, timeout)) from None
        except OSError as exc:
            raise QemuImgError("cannot run %s: %s" % (self.binary, exc.strerror or exc)) from None
        if proc.returncode != 0:
            stderr = _shown(" ".join(proc.stderr.split()), names or {})
            error = QemuImgError(
                "qemu-img failed %s: %s" % (doing, stderr or "exit status %d" % proc.returncode), stderr
            )
            if error.in_use:
                error.args = (
                    "qemu-img failed %s: the image is in use by another process (a running VM?): %s" % (doing, stderr),
                )
            raise error
        return proc.stdout

    def run_args(self, args: List[str], doing: str, timeout: Optional[float] = None) -> str:
        """qemu-img with ``args`` as given (no descriptors); its stdout."""
        return self._run(args, doing, timeout)

    def _run_pbkdf(
        self,
        args: List[str],
        doing: str,
        output: Image,
        pass_fds: Sequence[int] = (),
        names: Optional[Dict[str, str]] = None,
    ) -> None:
        """Run a command that formats a LUKS header, again while QEMU trips over its clock."""
        for attempt in range(_PBKDF_ATTEMPTS):
            try:
                self._run(args, doing, pass_fds=pass_fds, names=names)
                return
            except QemuImgError as exc:
                if _PBKDF_FLAKE not in exc.stderr or attempt == _PBKDF_ATTEMPTS - 1:
                    raise
                if isinstance(output, FdImage):  # the caller's file: emptied, never unlinked by name
                    os.ftruncate(output.fd, 0)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(output)
                time.sleep(0.02 * (attempt + 1))

    def info(
        self, image: Image, fmt: Optional[str] = None, force_share: bool = True, timeout: float = 120.0
    ) -> Dict[str, Any]:
        """``qemu-img info --output=json``. ``force_share`` (``-U``) reads the header of an
        image a running QEMU holds locked; without it, a writer elsewhere makes it fail with
        ``in_use``. Without ``fmt`` the format is probed. Encrypted images need no key.

        For an FdImage, the file names in the answer are its ``name``, not /proc/self/fd/N; a
        relative backing file name is joined to the directory of ``name`` (qemu-img joins it to
        /proc/self/fd/, where it names nothing)."""
        args = ["info", "--output=json"]
        if force_share:
            args.append("-U")
        if fmt is not None:
            args += ["-f", _check_driver(fmt)]
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(image, fds, names)
        out = self._run(args + [target], "reading %s" % shown, timeout, pass_fds=fds, names=names)
        try:
            data = json.loads(out)
        except ValueError:
            raise QemuImgError("qemu-img info printed no JSON for %s" % shown) from None
        if not isinstance(data, dict):
            raise QemuImgError("qemu-img info printed unexpected JSON for %s" % shown)
        if isinstance(image, FdImage):
            backing = data.get("backing-filename")
            if isinstance(backing, str) and not backing.startswith(("/", "json:")) and ":" not in backing:
                data["full-backing-filename"] = os.path.join(os.path.dirname(image.name), backing)
            data = _shown_info(data, names)
        return data

    def snapshot(self, operation: str, name: str, image: Image, luks_key: Optional[str] = None) -> None:
        """Internal qcow2 snapshot: operation create, apply (revert) or delete. An encrypted
        qcow2 image is opened with its key (qemu-img refuses it otherwise). qemu-img opens no
        backing image for this."""
        flag = {"create": "-c", "apply": "-a", "delete": "-d"}[operation]
        args = ["snapshot", flag, name]
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(image, fds, names)
        with contextlib.ExitStack() as stack:
            if luks_key is not None:
                args += ["--object", _secret_object(_key_path(stack, luks_key, fds)), _json_filename("qcow2", target)]
            else:  # qemu-img snapshot has no -f: the driver is named in the JSON
                args.append(_json_filename("qcow2", target, encrypted=False))
            self._run(args, "to %s snapshot %s of %s" % (operation, name, shown), pass_fds=fds, names=names)

    def commit(self, overlay: Image, chain: Sequence[Tuple[Image, str]]) -> None:
        """Write an overlay's data into its backing image (the overlay stays as it was).
        ``chain``: the images below it, nearest first, with their formats; each is opened
        as given (a descriptor), never by the name in a header."""
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(overlay, fds, names)
        node: Dict[str, Any] = {"driver": "qcow2", "file": {"driver": "file", "filename": target}}
        parent = node
        for image, fmt in chain:
            below, _shown_below = _image(image, fds, names)
            parent["backing"] = {"driver": _check_driver(fmt), "file": {"driver": "file", "filename": below}}
            parent = parent["backing"]
        if parent.get("driver") == "qcow2" and parent is not node:
            parent["backing"] = None  # the base of our chain: no image below it
        self._run(["commit", "-q", "json:" + json.dumps(node)], "committing %s" % shown, pass_fds=fds, names=names)

    def rebase_unsafe(self, image: Image, backing: str, backing_fmt: str) -> None:
        """Point an overlay at another backing image with the same data (no copying; the
        backing image is not opened, only its name written)."""
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(image, fds, names)
        self._run(
            ["rebase", "-u", "-f", "qcow2", "-b", backing, "-F", _check_driver(backing_fmt), target],
            "rebasing %s" % shown,
            pass_fds=fds,
            names=names,
        )

    def create(
        self,
        image: Image,
        fmt: str,
        size: Optional[int],
        backing: Optional[str] = None,
        backing_fmt: Optional[str] = None,
        preallocation: Optional[str] = None,
        luks_key: Optional[str] = None,
    ) -> None:
        """Create ``image`` (qcow2 or raw; with ``luks_key``, qcow2 with LUKS encryption or a
        raw LUKS file). ``size`` may be None only with a backing file (its size is used). An
        FdImage is a file the caller created (``O_EXCL``); qemu-img writes the image into it.

        ``backing`` is stored in the new image's header as a string: pass the real path
        checked against the storage roots, never a /proc/self/fd name (which would mean
        nothing later). With ``size`` given too, qemu-img does not open the backing image;
        without it, it opens it by that name to read its size."""
        if fmt not in FORMATS:
            raise SpecError("format", "must be one of %s, got %r" % (", ".join(FORMATS), fmt))
        driver = qemu_driver(fmt, luks_key is not None)
        options = _new_image_options(driver, luks_key is not None, preallocation)
        args = ["create", "-q", "-f", driver]
        if backing is not None:
            args += ["-b", backing, "-F", _check_driver(backing_fmt or "")]
            if size is not None:
                args.append("-u")  # the size is known: the backing image is not opened by name
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(image, fds, names)
        with contextlib.ExitStack() as stack:
            if luks_key is not None:
                args += ["--object", _secret_object(_key_path(stack, luks_key, fds))]
            if options:
                args += ["-o", ",".join(options)]
            args.append(target)
            if size is not None:
                args.append(str(int(size)))
            if luks_key is not None:
                self._run_pbkdf(args, "creating %s" % shown, image, fds, names)
            else:
                self._run(args, "creating %s" % shown, pass_fds=fds, names=names)

    def resize(
        self,
        image: Image,
        fmt: str,
        size: int,
        shrink: bool = False,
        preallocation: Optional[str] = None,
        luks_key: Optional[str] = None,
    ) -> None:
        """Set the virtual size of ``image``; ``shrink`` allows making it smaller."""
        driver = qemu_driver(fmt, luks_key is not None)
        args = ["resize", "-q"]
        if check_preallocation(preallocation):
            args.append("--preallocation=%s" % preallocation)
        if shrink:
            args.append("--shrink")
        fds: List[int] = []
        names: Dict[str, str] = {}
        target, shown = _image(image, fds, names)
        with contextlib.ExitStack() as stack:
            if luks_key is not None:
                args += ["--object", _secret_object(_key_path(stack, luks_key, fds))]
            if luks_key is not None or isinstance(image, FdImage):
                # Growing needs no backing chain; by descriptor, a relative one could not be found.
                args.append(_json_filename(_check_driver(driver), target, luks_key is not None, backing=None))
            else:
                args += ["-f", _check_driver(driver), target]
            args.append(str(int(size)))
            self._run(args, "resizing %s" % shown, pass_fds=fds, names=names)

    def convert_chain(self, chain: Sequence[str], dst: Image, luks_key: Optional[str] = None) -> None:
        """Flatten a chain of qcow2 files (``chain``: top first, each backed by the next) into
        a new qcow2 ``dst``. Each layer is named here, not taken from a header, so every
        layer of an encrypted chain opens with the key (a header's backing cannot carry
        it); ``dst`` is then encrypted with the same key."""
        node: Optional[Dict[str, Any]] = None
        for path in reversed(chain):
            layer: Dict[str, Any] = {"driver": "qcow2", "file": {"driver": "file", "filename": path}, "backing": node}
            if luks_key is not None:
                layer["encrypt"] = {"key-secret": _SECRET_ID}
            node = layer
        fds: List[int] = []
        names: Dict[str, str] = {}
        dst_target, dst_shown = _image(dst, fds, names)
        options = _new_image_options("qcow2", luks_key is not None, None)
        args = ["convert", "-q"]
        with contextlib.ExitStack() as stack:
            if luks_key is not None:
                args += ["--object", _secret_object(_key_path(stack, luks_key, fds))]
            args += ["-O", "qcow2"] + (["-o", ",".join(options)] if options else [])
            args += ["json:" + json.dumps(node), dst_target]
            doing = "restoring %s into %s" % (chain[0], dst_shown)
            if luks_key is not None:
                self._run_pbkdf(args, doing, dst, fds, names)
            else:
                self._run(args, doing, pass_fds=fds, names=names)

    def convert(
        self,
        src: Image,
        src_driver: str,
        dst: Image,
        out_fmt: str,
        luks_key: Optional[str] = None,
        preallocation: Optional[str] = None,
    ) -> None:
        """Copy ``src`` (qemu format ``src_driver``; ``luks`` or an encrypted qcow2 when
        ``luks_key`` is given) into a new ``dst`` of ``out_fmt``, encrypted with the same key.
        A qcow2 source with a backing file is flattened (the backing chain is opened by name).
        An FdImage ``dst`` is a file the caller created (``O_EXCL``); qemu-img writes into it."""
        if out_fmt not in FORMATS:
            raise SpecError("format", "must be one of %s, got %r" % (", ".join(FORMATS), out_fmt))
        out_driver = qemu_driver(out_fmt, luks_key is not None)
        options = _new_image_options(out_driver, luks_key is not None, preallocation)
        args = ["convert", "-q"]
        fds: List[int] = []
        names: Dict[str, str] = {}
        src_target, src_shown = _image(src, fds, names)
        dst_target, _dst_shown = _image(dst, fds, names)
        doing = "converting %s to %s" % (src_shown, out_fmt)
        with contextlib.ExitStack() as stack:
            backing = src.backing if isinstance(src, FdImage) and src.backing else _AS_IN_HEADER
            if luks_key is not None:
                args += ["--object", _secret_object(_key_path(stack, luks_key, fds))]
                source = _json_filename(_check_driver(src_driver), src_target, backing=backing)
            elif backing is not _AS_IN_HEADER:
                source = _json_filename(_check_driver(src_driver), src_target, encrypted=False, backing=backing)
            else:
                args += ["-f", _check_driver(src_driver)]
                source = src_target
            args += ["-O", out_driver]
            if options:
                args += ["-o", ",".join(options)]
            args += [source, dst_target]
            if luks_key is not None:
                self._run_pbkdf(args, doing, dst, fds, names)
            else:
                self._run(args, doing, pass_fds=fds, names=names)
