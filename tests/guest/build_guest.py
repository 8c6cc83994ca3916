# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build (or reuse) the tiny Linux test guest booted by the integration tests.

The guest is a Debian ``linux-image-cloud-amd64`` kernel plus an initramfs made of
``busybox-static``, a handful of kernel modules and ``init.sh`` as ``/init``.
It boots with ``-kernel/-initrd/-append``, reports what it sees on the serial
console and powers off on the ACPI power button (see ``README.md``).

Library use::

    from build_guest import build_guest
    image = build_guest()            # GuestImage(kernel, initrd, kernel_version, kernel_cmdline)

Command line::

    python tests/guest/build_guest.py [--cache-dir DIR] [--refresh] [--verbose]

prints one JSON object on stdout; progress goes to stderr.

Only the standard library is used (Python 3.9+), plus ``apt-get``/``apt-cache``,
``dpkg-deb`` and ``dpkg-query`` on the host for fetching Debian packages.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import fcntl
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = [
    "DEFAULT_CACHE_DIR",
    "CACHE_DIR_ENV",
    "KERNEL_CMDLINE",
    "GuestBuildError",
    "GuestImage",
    "build_guest",
    "default_cache_dir",
    "main",
]

LOG = logging.getLogger("infinivirt.test_guest")

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"

CACHE_DIR_ENV = "INFINIVIRT_GUEST_CACHE"
DEFAULT_CACHE_DIR = Path("/var/cache/infinivirt-test-guest")

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"

# The recommended -append line.  "quiet" keeps the (slow, emulated) serial console
# free of boot chatter; lpj= skips a delay-loop calibration that misbehaves under
# TCG; cryptomgr.notests skips the crypto self-tests (~0.4 s under TCG);
# memhp_default_state=online onlines hot-plugged DIMMs without a udev.
KERNEL_CMDLINE = "console=ttyS0 panic=-1 lpj=10000000 quiet cryptomgr.notests memhp_default_state=online"

# Modules /init loads (in this order, with `modprobe -a`), plus their dependencies.
MODULES: Tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "scsi_mod",
    "virtio_scsi",
    "sd_mod",
    "virtio_net",
    "virtio_balloon",
    "virtio_console",
    "virtio_rng",
    "virtiofs",  # shared_dirs (and fuse, its dependency)
    "button",
    "evdev",
)
MODULE_OPTIONS: Dict[str, str] = {"scsi_mod": "scan=sync"}

# Kernel options hot-plug depends on.  If one is "=m" its module is added to the
# initramfs and loaded; "=y" needs nothing; unset is reported as a warning.
HOTPLUG_CONFIG: Dict[str, str] = {
    "CONFIG_HOTPLUG_PCI_PCIE": "pciehp",
    "CONFIG_HOTPLUG_PCI_ACPI": "acpiphp",
    "CONFIG_ACPI_HOTPLUG_CPU": "",
    "CONFIG_MEMORY_HOTPLUG": "",
}

# Everything in the archive gets this mtime (and owner 0:0), so that the same
# inputs give a byte-identical initramfs.
FIXED_MTIME = 0

# Bump to invalidate every cached build when the layout changes in a way the
# hashed inputs would not show.
LAYOUT_VERSION = "1"

# Cached builds kept (the newest ones); older builds and .debs only they used go.
KEEP_BUILDS = 3


class GuestBuildError(RuntimeError):
    """The test guest could not be built."""


class _Terminated(BaseException):
    """Raised by the CLI's SIGTERM handler (BaseException: not caught on the way)."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """A built test guest: pass to QEMU as -kernel/-initrd/-append."""

    kernel: Path
    initrd: Path
    kernel_version: str
    kernel_cmdline: str

    def as_dict(self) -> Dict[str, str]:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "kernel_version": self.kernel_version,
            "kernel_cmdline": self.kernel_cmdline,
        }


# --------------------------------------------------------------------------- helpers


def default_cache_dir() -> Path:
    """$INFINIVIRT_GUEST_CACHE, else /var/cache/infinivirt-test-guest."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else DEFAULT_CACHE_DIR


def _run(cmd: List[str], cwd: Optional[Path] = None) -> str:
    """Run a command, return its stdout; raise GuestBuildError with its stderr."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    LOG.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
        )
    except OSError as exc:
        raise GuestBuildError("cannot run %s: %s" % (cmd[0], exc)) from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("W:")]
        detail = lines[-1].strip() if lines else "exit status %d" % proc.returncode
        shown = " ".join(cmd)
        if len(shown) > 160:
            shown = shown[:157] + "..."
        raise GuestBuildError("%s failed: %s" % (shown, detail))
    return proc.stdout


def _atomic_write(path: Path, data: bytes) -> None:
    """Write data to path through a temporary file + rename."""
    fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, str(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_key(script: bytes, init: bytes, kernel_pkg: str, kernel_ver: str, busybox_ver: str) -> str:
    h = hashlib.sha256()
    for part in (LAYOUT_VERSION.encode(), script, init, kernel_pkg.encode(), kernel_ver.encode(), busybox_ver.encode()):
        h.update(struct.pack(">Q", len(part)))
        h.update(part)
    return h.hexdigest()[:24]


def _is_static_elf(path: Path) -> bool:
    """True for an x86-64 ELF executable without a PT_INTERP (dynamic loader)."""
    try:
        with open(path, "rb") as fh:
            hdr = fh.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return False
            (phoff,) = struct.unpack_from("<Q", hdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


# --------------------------------------------------------------------------- apt


class _Apt:
    """apt-cache/apt-get download with one `apt-get update` retry per build."""

    def __init__(self, debs_dir: Path) -> None:
        self.debs_dir = debs_dir
        self.updated = False

    def update_once(self) -> bool:
        if self.updated:
            return False
        self.updated = True
        LOG.info("running apt-get update (package lists missing or stale)")
        try:
            _run(["apt-get", "update", "-qq"])
        except GuestBuildError as exc:
            LOG.warning("%s", exc)
        return True

    def _show_candidate(self, package: str) -> Dict[str, str]:
        out = _run(["apt-cache", "show", "--no-all-versions", package])
        fields: Dict[str, str] = {}
        key = None
        for line in out.splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()
                continue
            key, _sep, value = line.partition(":")
            fields[key] = value.strip()
        if "Version" not in fields:
            raise GuestBuildError("apt-cache knows no candidate for %s" % package)
        return fields

    def show_candidate(self, package: str) -> Dict[str, str]:
        try:
            return self._show_candidate(package)
        except GuestBuildError:
            if not self.update_once():
                raise
            return self._show_candidate(package)

    def resolve_kernel(self) -> Tuple[str, str]:
        """The concrete linux-image-6.1.0-NN-cloud-amd64 package (name, version)."""
        meta = self.show_candidate(KERNEL_METAPACKAGE)
        for dep in meta.get("Depends", "").split(","):
            first = dep.split("|")[0].strip()
            m = re.match(r"^(linux-image-[0-9][^\s(]*)\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", first)
            if m:
                name, version = m.group(1), m.group(2)
                if not version:
                    version = self.show_candidate(name)["Version"]
                return name, version
        raise GuestBuildError(
            "%s %s has no linux-image-* dependency (Depends: %s)"
            % (KERNEL_METAPACKAGE, meta.get("Version"), meta.get("Depends"))
        )

    def cached_deb(self, name: str, version: str) -> Optional[Path]:
        quoted = version.replace(":", "%3a")
        hits = sorted(self.debs_dir.glob("%s_%s_*.deb" % (name, quoted)))
        return hits[0] if hits else None

    def download(self, name: str, version: str) -> Path:
        """The .deb of name=version, from the cache or downloaded into it."""
        hit = self.cached_deb(name, version)
        if hit:
            LOG.info("using cached %s", hit.name)
            return hit
        try:
            return self._download(name, version)
        except GuestBuildError:
            if not self.update_once():
                raise
            return self._download(name, version)

    def _download(self, name: str, version: str) -> Path:
        self.debs_dir.mkdir(parents=True, exist_ok=True)
        LOG.info("downloading %s=%s", name, version)
        with tempfile.TemporaryDirectory(prefix=".dl-", dir=str(self.debs_dir)) as tmp:
            _run(
                ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", "%s=%s" % (name, version)], cwd=Path(tmp)
            )
            debs = sorted(Path(tmp).glob("*.deb"))
            if len(debs) != 1:
                raise GuestBuildError("apt-get download %s gave %d files" % (name, len(debs)))
            target = self.debs_dir / debs[0].name
            os.replace(str(debs[0]), str(target))
        return target


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field]).strip()


def _installed_busybox() -> Optional[Tuple[Path, str]]:
    """(/bin/busybox, version) when busybox-static is installed on the host."""
    try:
        out = _run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", BUSYBOX_PACKAGE])
    except GuestBuildError:
        return None
    status, _sep, version = out.partition("\t")
    binary = Path("/bin/busybox")
    if status.split()[-1:] == ["installed"] and version and _is_static_elf(binary):
        return binary, version
    return None


# --------------------------------------------------------------------------- cpio


class _Cpio:
    """A reproducible newc archive: sorted names, 0:0, fixed mtime, own inode numbers."""

    def __init__(self) -> None:
        self.entries: Dict[str, Tuple[int, bytes, int, int]] = {}

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self.entries:
                self.entries[sub] = (stat.S_IFDIR | (mode if i == len(parts) else 0o755), b"", 0, 0)

    def _parent(self, name: str) -> str:
        name = name.strip("/")
        if "/" in name:
            self.add_dir(name.rsplit("/", 1)[0])
        return name

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.entries[self._parent(name)] = (stat.S_IFREG | mode, data, 0, 0)

    def add_symlink(self, name: str, target: str) -> None:
        self.entries[self._parent(name)] = (stat.S_IFLNK | 0o777, target.encode(), 0, 0)

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.entries[self._parent(name)] = (stat.S_IFCHR | mode, b"", major, minor)

    def pack(self) -> bytes:
        out = io.BytesIO()

        def record(ino: int, name: str, mode: int, data: bytes, rmaj: int, rmin: int) -> None:
            bname = name.encode() + b"\0"
            nlink = 2 if stat.S_ISDIR(mode) else 1
            fields = (ino, mode, 0, 0, nlink, FIXED_MTIME, len(data), 0, 0, rmaj, rmin, len(bname), 0)
            out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
            out.write(bname)
            out.write(b"\0" * (-(110 + len(bname)) % 4))
            out.write(data)
            out.write(b"\0" * (-len(data) % 4))

        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rmaj, rmin = self.entries[name]
            record(ino, name, mode, data, rmaj, rmin)
        record(0, "TRAILER!!!", 0, b"", 0, 0)
        return out.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


# --------------------------------------------------------------------------- modules


def _modname(relpath: str) -> str:
    base = relpath.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.xz|\.gz|\.zst)?$", "", base)
    return base.replace("-", "_")


def _read_module_payload(path: Path) -> bytes:
    name = path.name
    raw = path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise GuestBuildError("%s is zstd-compressed and no zstd binary is installed" % name)
        return subprocess.run([zstd, "-dc", str(path)], check=True, stdout=subprocess.PIPE).stdout
    return raw


def _kernel_config(tree: Path, kver: str) -> Dict[str, str]:
    cfg: Dict[str, str] = {}
    path = tree / "boot" / ("config-" + kver)
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
            if m:
                cfg[m.group(1)] = m.group(2)
    return cfg


def _select_modules(moddir: Path, wanted: Iterable[str]) -> Tuple[List[str], Dict[str, List[str]]]:
    """Return (modules to load, {relpath: [dep relpaths]}) for wanted + dependencies."""
    deps: Dict[str, List[str]] = {}
    byname: Dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, _sep, rest = line.partition(":")
        mod = mod.strip()
        deps[mod] = rest.split()
        byname[_modname(mod)] = mod
    builtin = set()
    if (moddir / "modules.builtin").exists():
        builtin = {_modname(ln.strip()) for ln in (moddir / "modules.builtin").read_text().splitlines() if ln.strip()}

    load: List[str] = []
    selected: Dict[str, List[str]] = {}
    for want in wanted:
        name = want.replace("-", "_")
        if name in byname:
            rel = byname[name]
            load.append(name)
            for m in [rel] + deps[rel]:
                if m not in deps:
                    raise GuestBuildError("modules.dep names %s but has no entry for it" % m)
                selected[m] = deps[m]
        elif name in builtin:
            LOG.info("module %s is built into the kernel", name)
        else:
            LOG.warning("module %s not found in this kernel; /init will report it as failed", name)
            load.append(name)
    return load, selected


# --------------------------------------------------------------------------- build


def _extract_kernel(deb: Path, tree: Path) -> Tuple[Path, str, Path]:
    _run(["dpkg-deb", "-x", str(deb), str(tree)])
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise GuestBuildError("%s has %d boot/vmlinuz-* files" % (deb.name, len(kernels)))
    kver = kernels[0].name[len("vmlinuz-") :]
    for base in (tree, tree / "usr"):
        if (base / "lib" / "modules" / kver).is_dir():
            return kernels[0], kver, base
    raise GuestBuildError("%s has no lib/modules/%s" % (deb.name, kver))


def _build_initramfs(busybox: Path, init: bytes, modbase: Path, kver: str, cfg: Dict[str, str]) -> bytes:
    moddir = modbase / "lib" / "modules" / kver
    # Debian's package ships no modules.dep (its postinst makes one).
    _run([str(busybox), "depmod", "-b", str(modbase), kver])

    wanted = list(MODULES)
    for option, module in HOTPLUG_CONFIG.items():
        value = cfg.get(option)
        if value == "m" and module:
            wanted.append(module)
        elif value not in ("y", "m") and cfg:
            LOG.warning("%s is not set in this kernel: that kind of hot-plug will not work", option)
    load, selected = _select_modules(moddir, wanted)

    arc = _Cpio()
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/modprobe.d",
        "etc/infinivirt",
        "proc",
        "sys",
        "dev",
        "root",
        "run",
    ):
        arc.add_dir(d)
    arc.add_dir("tmp", 0o1777)
    arc.add_chardev("dev/console", 5, 1, 0o600)
    arc.add_chardev("dev/null", 1, 3, 0o666)
    arc.add_file("init", init, 0o755)

    arc.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = _run([str(busybox), "--list-full"]).split()
    for applet in sorted(set(applets)):
        applet = applet.strip("/")
        if applet and applet != "bin/busybox":
            arc.add_symlink(applet, "/bin/busybox")

    # Modules: decompressed to plain .ko, with a modules.dep covering only them.
    # Dependencies on a modules.dep line are listed so that loading them in
    # reverse order works (kmod/busybox convention); the order is derived from
    # the dependency closures, not from depmod's traversal order.
    order = sorted(selected, key=lambda m: (len(selected[m]), m))
    rank = {m: i for i, m in enumerate(order)}

    def plain(rel: str) -> str:
        return re.sub(r"\.ko(\.xz|\.gz|\.zst)$", ".ko", rel)

    target = "lib/modules/%s" % kver
    dep_lines = []
    for rel in sorted(selected):
        arc.add_file("%s/%s" % (target, plain(rel)), _read_module_payload(moddir / rel))
        dlist = sorted(selected[rel], key=lambda m: -rank[m])
        dep_lines.append("%s:%s\n" % (plain(rel), "".join(" " + plain(d) for d in dlist)))
    arc.add_file(target + "/modules.dep", "".join(dep_lines).encode())
    for extra in ("modules.builtin",):
        if (moddir / extra).exists():
            arc.add_file("%s/%s" % (target, extra), (moddir / extra).read_bytes())

    arc.add_file("etc/infinivirt/modules", (" ".join(load) + "\n").encode())
    arc.add_file(
        "etc/modprobe.d/infinivirt.conf",
        "".join("options %s %s\n" % (m, o) for m, o in sorted(MODULE_OPTIONS.items())).encode(),
    )
    arc.add_file(
        "etc/fstab",
        ("proc /proc proc defaults 0 0\nsysfs /sys sysfs defaults 0 0\ndevtmpfs /dev devtmpfs defaults 0 0\n").encode(),
    )
    arc.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    arc.add_file("etc/group", b"root:x:0:\n")
    LOG.info("initramfs: %d modules (%s)", len(selected), " ".join(sorted(_modname(m) for m in selected)))
    return _gzip(arc.pack())


def _build(cache: Path, key: str, kernel_deb: Path, busybox: Path, init: bytes, meta: Dict[str, str]) -> Path:
    """Build into cache/builds/<key> (atomically: temp dir + rename); return it."""
    builds = cache / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    final = builds / key
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=str(cache)))
    try:
        tree = work / "tree"
        out = work / "out"
        out.mkdir()
        vmlinuz, kver, modbase = _extract_kernel(kernel_deb, tree)
        cfg = _kernel_config(tree, kver)
        initrd = _build_initramfs(busybox, init, modbase, kver, cfg)
        shutil.copyfile(str(vmlinuz), str(out / "vmlinuz"))
        (out / "initrd.img").write_bytes(initrd)
        info = dict(meta)
        info.update(
            {
                "key": key,
                "kernel_version": kver,
                "kernel_cmdline": KERNEL_CMDLINE,
                "kernel_sha256": _sha256_file(out / "vmlinuz"),
                "initrd_sha256": hashlib.sha256(initrd).hexdigest(),
            }
        )
        # meta.json is what marks a build complete.
        (out / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for f in out.iterdir():
            os.chmod(str(f), 0o644)
        os.chmod(str(out), 0o755)
        try:
            os.rename(str(out), str(final))
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if not (final / "meta.json").exists():
                # A leftover without meta.json: replace it.
                stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=str(cache)))
                os.rename(str(final), str(stale / key))
                shutil.rmtree(str(stale), ignore_errors=True)
                os.rename(str(out), str(final))
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
    return final


def _prune(cache: Path, current_key: str, keep: int = KEEP_BUILDS) -> None:
    """Delete all but the newest `keep` builds, and kernel .debs none of them uses."""
    builds = cache / "builds"
    try:
        dirs = [d for d in builds.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return
    dirs.sort(key=lambda d: (d.name == current_key, d.stat().st_mtime), reverse=True)
    for old in dirs[keep:]:
        LOG.info("removing old build %s", old.name)
        shutil.rmtree(str(old), ignore_errors=True)
    used = set()
    for d in dirs[:keep]:
        try:
            info = json.loads((d / "meta.json").read_text())
            used.add("%s_%s_" % (info["kernel_package"], info["kernel_package_version"].replace(":", "%3a")))
        except (OSError, ValueError, KeyError):
            return  # unsure what is in use: keep every .deb
    for deb in (cache / "debs").glob("linux-image-*.deb"):
        if not any(deb.name.startswith(prefix) for prefix in used):
            LOG.info("removing unused %s", deb.name)
            try:
                deb.unlink()
            except OSError:
                pass


def _image_from(build_dir: Path) -> Optional[GuestImage]:
    try:
        info = json.loads((build_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = build_dir / "vmlinuz", build_dir / "initrd.img"
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return GuestImage(
        kernel=kernel,
        initrd=initrd,
        kernel_version=info["kernel_version"],
        kernel_cmdline=info.get("kernel_cmdline", KERNEL_CMDLINE),
    )


def _inputs() -> Tuple[bytes, bytes]:
    try:
        return Path(__file__).resolve().read_bytes(), INIT_SCRIPT.read_bytes()
    except OSError as exc:
        raise GuestBuildError("cannot read the guest sources: %s" % exc) from exc


def _fast_path(cache: Path, script: bytes, init: bytes) -> Optional[GuestImage]:
    """Reuse the build recorded in current.json if the sources are unchanged (no apt)."""
    try:
        cur = json.loads((cache / "current.json").read_text())
        key = _cache_key(script, init, cur["kernel_package"], cur["kernel_package_version"], cur["busybox_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if key != cur.get("key"):
        return None
    return _image_from(cache / "builds" / key)


def build_guest(cache_dir: Optional[Path] = None, *, refresh: bool = False) -> GuestImage:
    """Build the test guest, or return the cached build.

    cache_dir defaults to $INFINIVIRT_GUEST_CACHE, else /var/cache/infinivirt-test-guest.
    The build is keyed by a hash of this file, init.sh, the concrete kernel package
    (name + version) and the busybox version.  Once built, later calls reuse the
    recorded build without asking apt as long as this file and init.sh are unchanged;
    refresh=True re-resolves the packages (and picks up a new kernel ABI package).
    """
    t0 = time.monotonic()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache = cache.expanduser().resolve()
    script, init = _inputs()

    if not refresh:
        image = _fast_path(cache, script, init)
        if image:
            LOG.debug("cache hit in %.3f s", time.monotonic() - t0)
            return image

    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock_fh = open(cache / ".lock", "a+")
    except OSError as exc:
        raise GuestBuildError(
            "cache directory %s is not writable (%s); set %s" % (cache, exc.strerror or exc, CACHE_DIR_ENV)
        ) from exc
    with lock_fh:
        fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX)
        if not refresh:
            image = _fast_path(cache, script, init)  # built by someone else meanwhile
            if image:
                return image
        image = _build_locked(cache, script, init)
    LOG.info("guest ready in %.1f s: %s", time.monotonic() - t0, image.initrd.parent)
    return image


def _remove_leftovers(cache: Path) -> None:
    """Remove temp files/dirs of interrupted builds (call with the lock held)."""
    for pattern in (".work-*", ".bb-*", ".stale-*", ".current.json.*.tmp", "debs/.dl-*", "builds/.*"):
        for path in cache.glob(pattern):
            LOG.debug("removing leftover %s", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(str(path), ignore_errors=True)
            else:
                try:
                    path.unlink()
                except OSError:
                    pass


def _build_locked(cache: Path, script: bytes, init: bytes) -> GuestImage:
    _remove_leftovers(cache)
    apt = _Apt(cache / "debs")
    try:
        previous = json.loads((cache / "current.json").read_text())
    except (OSError, ValueError):
        previous = {}

    # Kernel: metapackage -> concrete ABI package -> .deb (cached).
    try:
        kpkg, kpkg_ver = apt.resolve_kernel()
        kernel_deb = apt.download(kpkg, kpkg_ver)
    except GuestBuildError as exc:
        kpkg, kpkg_ver = previous.get("kernel_package", ""), previous.get("kernel_package_version", "")
        kernel_deb = apt.cached_deb(kpkg, kpkg_ver) if kpkg else None
        if not kernel_deb:
            raise
        LOG.warning("%s; falling back to the cached %s", exc, kernel_deb.name)
    LOG.info("kernel package %s %s", kpkg, kpkg_ver)

    # busybox: the host's busybox-static if installed, else its .deb.
    work = None
    host_bb = _installed_busybox()
    if host_bb:
        busybox, bb_ver = host_bb
    else:
        bb_ver = apt.show_candidate(BUSYBOX_PACKAGE)["Version"]
        bb_deb = apt.download(BUSYBOX_PACKAGE, bb_ver)
        work = Path(tempfile.mkdtemp(prefix=".bb-", dir=str(cache)))
        _run(["dpkg-deb", "-x", str(bb_deb), str(work)])
        busybox = work / "bin" / "busybox"
        if not _is_static_elf(busybox):
            raise GuestBuildError("%s has no static bin/busybox" % bb_deb.name)
    LOG.info("busybox %s from %s", bb_ver, "the host" if host_bb else "its .deb")

    try:
        key = _cache_key(script, init, kpkg, kpkg_ver, bb_ver)
        build_dir = cache / "builds" / key
        image = _image_from(build_dir)
        if image is None:
            LOG.info("building guest %s", key)
            build_dir = _build(
                cache,
                key,
                kernel_deb,
                busybox,
                init,
                {
                    "kernel_package": kpkg,
                    "kernel_package_version": kpkg_ver,
                    "busybox_version": bb_ver,
                },
            )
            image = _image_from(build_dir)
            if image is None:
                raise GuestBuildError("build %s is incomplete" % build_dir)
        current = {
            "key": key,
            "kernel_package": kpkg,
            "kernel_package_version": kpkg_ver,
            "busybox_version": bb_ver,
        }
        _atomic_write(cache / "current.json", (json.dumps(current, indent=2, sort_keys=True) + "\n").encode())
        _prune(cache, key)
        return image
    finally:
        if work:
            shutil.rmtree(str(work), ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or reuse) the infinivirt test guest; print its paths as JSON.")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory (default: $%s or %s)" % (CACHE_DIR_ENV, DEFAULT_CACHE_DIR),
    )
    parser.add_argument(
        "--refresh", action="store_true", help="re-resolve the Debian packages even if a cached build exists"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO, format="build_guest: %(message)s"
    )

    def _terminate(signum: int, _frame: object) -> None:
        # Turn SIGTERM/SIGHUP into an exception so that subprocess.run kills its
        # child (dpkg-deb) and the temporary build directory is removed.
        raise _Terminated("killed by signal %d" % signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        image = build_guest(args.cache_dir, refresh=args.refresh)
    except (GuestBuildError, OSError, subprocess.SubprocessError, _Terminated) as exc:
        msg = " ".join(str(exc).split())
        print("build_guest: error: %s" % msg, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build_guest: error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(image.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
