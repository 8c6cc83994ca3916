# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build (or reuse) the cloud test guest: a small Debian bookworm system with systemd,
cloud-init, OpenSSH and qemu-guest-agent, as a qcow2 image plus its kernel and initrd.

Made from Debian packages only (no image download is possible here): ``mmdebstrap``
writes a root file system, ``mkfs.ext4 -d`` puts it into an ext4 image without
partitions, ``qemu-img convert`` makes that qcow2. The guest boots by direct kernel
boot (``-kernel/-initrd/-append``, ``root=/dev/vda``); see ``README.md``.

Library use::

    from build_cloud_guest import build_cloud_guest
    image = build_cloud_guest()    # CloudGuestImage(disk, kernel, initrd, kernel_cmdline, ...)

Command line::

    python tests/guest/build_cloud_guest.py [--cache-dir DIR] [-v]

prints one JSON object on stdout; progress goes to stderr.

Only the standard library (Python 3.9+), plus mmdebstrap, mkfs.ext4 and qemu-img.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

LOG = logging.getLogger("infinivirt.cloud_guest")

CACHE_DIR_ENV = "INFINIVIRT_GUEST_CACHE"  # shared with build_guest.py
DEFAULT_CACHE_DIR = Path("/var/cache/infinivirt-test-guest")
SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")

PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "cloud-init",
    "openssh-server",
    "qemu-guest-agent",
    # systemd-logind needs D-Bus (a Recommends, which minbase leaves out): without it the
    # ACPI power button does nothing and qemu-ga's guest-shutdown (shutdown +0) fails.
    "dbus",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
)

# Bump when the build changes in a way the package list does not show (hooks, layout,
# image size). Edits to comments do not rebuild a 100-second image.
SCRIPT_VERSION = "1"

DISK_SIZE = "2G"  # virtual size of the ext4 file system (sparse; the qcow2 holds only data)

# lpj= skips a delay-loop calibration that misbehaves under TCG.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 lpj=10000000"

# Run inside the new root (mmdebstrap --customize-hook, "$1" is the root directory).
# - fstab for the whole-disk root; no host hostname/resolv.conf leaks into the image;
# - cloud-init looks for NoCloud only (skips probing clouds that cannot answer here);
# - ifupdown reads the interfaces.d file cloud-init writes.
CUSTOMIZE_HOOKS = (
    'echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"',
    'echo debian > "$1/etc/hostname"',
    'rm -f "$1/etc/resolv.conf"',
    'printf "datasource_list: [ NoCloud, None ]\\n" > "$1/etc/cloud/cloud.cfg.d/90-infinivirt.cfg"',
    'printf "auto lo\\niface lo inet loopback\\nsource /etc/network/interfaces.d/*\\n" > "$1/etc/network/interfaces"',
    'cp -L "$1"/boot/vmlinuz-* "$1/../vmlinuz" && cp -L "$1"/boot/initrd.img-* "$1/../initrd.img"',
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*',
)


class CloudGuestBuildError(RuntimeError):
    """The cloud test guest could not be built."""


class _Terminated(BaseException):
    """Raised by the CLI's SIGTERM handler (BaseException: not caught on the way)."""


@dataclasses.dataclass(frozen=True)
class CloudGuestImage:
    """A built cloud guest: boot an overlay of `disk` with -kernel/-initrd/-append."""

    disk: Path
    kernel: Path
    initrd: Path
    kernel_cmdline: str
    key: str

    def as_dict(self) -> Dict[str, str]:
        return {
            "disk": str(self.disk),
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "kernel_cmdline": self.kernel_cmdline,
            "key": self.key,
        }


def default_cache_dir() -> Path:
    """$INFINIVIRT_GUEST_CACHE/cloud, else /var/cache/infinivirt-test-guest/cloud."""
    env = os.environ.get(CACHE_DIR_ENV)
    return (Path(env) if env else DEFAULT_CACHE_DIR) / "cloud"


def cache_key() -> str:
    """Hash of the inputs: suite, package list, hooks, size and SCRIPT_VERSION."""
    text = json.dumps([SCRIPT_VERSION, SUITE, sorted(PACKAGES), CUSTOMIZE_HOOKS, DISK_SIZE, KERNEL_CMDLINE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(cmd: List[str], **kwargs) -> None:
    LOG.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **kwargs)
    if proc.returncode != 0:
        tail = proc.stdout.decode(errors="replace").strip().splitlines()[-5:]
        raise CloudGuestBuildError("%s failed (exit %d): %s" % (cmd[0], proc.returncode, " | ".join(tail)))


def _image_from(build_dir: Path) -> Optional[CloudGuestImage]:
    """The build in build_dir, or None if it is not complete (meta.json marks complete)."""
    try:
        info = json.loads((build_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    files = [build_dir / n for n in ("disk.qcow2", "vmlinuz", "initrd.img")]
    if not all(f.is_file() for f in files):
        return None
    return CloudGuestImage(files[0], files[1], files[2], info["kernel_cmdline"], info["key"])


def _build(cache: Path, key: str) -> Path:
    """Build into cache/<key> through a temp dir renamed into place; return cache/<key>."""
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img"):
        if shutil.which(tool) is None:
            raise CloudGuestBuildError("%s is not installed (scripts/install.sh installs it)" % tool)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=str(cache)))
    try:
        out, root = work / "out", work / "out" / "root"
        out.mkdir()
        t0 = time.monotonic()
        cmd = ["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(PACKAGES)]
        cmd += ["--customize-hook=" + hook for hook in CUSTOMIZE_HOOKS]
        with open(SOURCES, "rb") as sources:  # the host's mirror list, deb822, on stdin
            _run(cmd + [SUITE, str(root), "-"], stdin=sources)
        t1 = time.monotonic()
        raw = work / "root.ext4"
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw), DISK_SIZE])
        shutil.rmtree(str(root))
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "disk.qcow2")])
        raw.unlink()
        info = {
            "key": key,
            "suite": SUITE,
            "packages": list(PACKAGES),
            "kernel_cmdline": KERNEL_CMDLINE,
            "mmdebstrap_s": round(t1 - t0, 1),
            "image_s": round(time.monotonic() - t1, 1),
            "disk_bytes": (out / "disk.qcow2").stat().st_size,
        }
        (out / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        for f in out.iterdir():
            os.chmod(str(f), 0o644)  # read-only use: tests boot overlays, never the base
        os.chmod(str(out), 0o755)
        final = cache / key
        if final.exists():  # an incomplete leftover (complete ones are returned earlier)
            shutil.rmtree(str(final))
        os.rename(str(out), str(final))
        return final
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


def build_cloud_guest(cache_dir: Optional[Path] = None) -> CloudGuestImage:
    """Return the cached cloud guest for the current inputs, building it if needed.

    A concurrent second caller waits on the cache's lock and then reuses the result.
    """
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser().resolve()
    key = cache_key()
    image = _image_from(cache / key)
    if image:
        return image
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock_fh = open(cache / ".lock", "a+")
    except OSError as exc:
        raise CloudGuestBuildError(
            "cache directory %s is not writable (%s); set %s" % (cache, exc, CACHE_DIR_ENV)
        ) from exc
    with lock_fh:
        fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX)
        image = _image_from(cache / key)  # built by someone else meanwhile
        if image:
            return image
        for leftover in cache.glob(".work-*"):  # of killed builds (we hold the lock)
            shutil.rmtree(str(leftover), ignore_errors=True)
        t0 = time.monotonic()
        LOG.info("building cloud guest %s (mmdebstrap, about 2 minutes)", key)
        image = _image_from(_build(cache, key))
        if image is None:
            raise CloudGuestBuildError("build %s is incomplete" % (cache / key))
        LOG.info("cloud guest built in %.0f s: %s", time.monotonic() - t0, image.disk)
        return image


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or reuse) the infinivirt cloud test guest; print JSON.")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $%s/cloud or %s/cloud" % (CACHE_DIR_ENV, DEFAULT_CACHE_DIR),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="build_cloud_guest: %(message)s",
    )

    def _terminate(signum: int, _frame: object) -> None:
        raise _Terminated("killed by signal %d" % signum)  # so the temp dir is removed

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    try:
        image = build_cloud_guest(args.cache_dir)
    except (CloudGuestBuildError, OSError, _Terminated) as exc:
        print("build_cloud_guest: error: %s" % " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build_cloud_guest: error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(image.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
