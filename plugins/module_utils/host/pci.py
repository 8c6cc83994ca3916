# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host's PCI devices, through sysfs and devfs: the only code that reads or writes them.

Every path is taken under ``root`` ("/" on a host), so tests and the host role's tests point
it at a fake tree: ``sys/bus/pci/devices/<address>`` (``vendor``, ``device``, ``class``, the
``driver`` and ``iommu_group`` links, ``driver_override``, ``sriov_totalvfs``,
``sriov_numvfs``, ``virtfn<N>`` links, ``net/<ifname>``), ``sys/bus/pci/drivers/<name>``
(``bind``, ``unbind``), ``sys/bus/pci/drivers_probe``, ``sys/kernel/iommu_groups/<n>/devices``
and ``dev/vfio``. A write is one ``write_attr`` call, as the kernel takes it.

A VF's MAC and VLAN are set on its PF's network interface (``ip link set PF vf N``), the one
thing here that is not a file.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from typing import Any, Dict, List, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError, StateError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import open_confined, resolve_in_roots

VFIO_DRIVER = "vfio-pci"
ROLE_HINT = "the infinivirt.core host role sets this up (IOMMU kernel arguments, vfio modules)"


class SysfsError(InfinivirtError):
    """A sysfs write the kernel refused."""


class SysfsRoot:
    """sysfs and devfs under ``root``."""

    def __init__(self, root: str = "/"):
        self.root = root

    # -- paths ----------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def device_dir(self, address: str) -> str:
        return self.path("sys/bus/pci/devices", address)

    def driver_dir(self, driver: str) -> str:
        return self.path("sys/bus/pci/drivers", driver)

    # -- reading --------------------------------------------------------------------------
    def _read(self, path: str) -> Optional[str]:
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _link_name(self, path: str) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(path))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None

    def devices(self) -> List[str]:
        try:
            return sorted(os.listdir(self.path("sys/bus/pci/devices")))
        except FileNotFoundError:
            return []

    def exists(self, address: str) -> bool:
        return os.path.isdir(self.device_dir(address))

    def attr(self, address: str, name: str) -> Optional[str]:
        return self._read(os.path.join(self.device_dir(address), name))

    def driver(self, address: str) -> Optional[str]:
        """The driver bound to the device, or None."""
        return self._link_name(os.path.join(self.device_dir(address), "driver"))

    def iommu_group(self, address: str) -> Optional[str]:
        return self._link_name(os.path.join(self.device_dir(address), "iommu_group"))

    def iommu_groups(self) -> List[str]:
        try:
            return os.listdir(self.path("sys/kernel/iommu_groups"))
        except FileNotFoundError:
            return []

    def iommu_enabled(self) -> bool:
        """The kernel made IOMMU groups: an IOMMU is on (intel_iommu=on / amd_iommu=on)."""
        return bool(self.iommu_groups())

    def group_devices(self, group: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path("sys/kernel/iommu_groups", group, "devices")))
        except FileNotFoundError:
            return []

    def driver_loaded(self, driver: str) -> bool:
        return os.path.isdir(self.driver_dir(driver))

    def vfio_group_node(self, group: str) -> str:
        return self.path("dev/vfio", group)

    def sriov_totalvfs(self, address: str) -> Optional[int]:
        value = self.attr(address, "sriov_totalvfs")
        return int(value) if value is not None else None

    def sriov_numvfs(self, address: str) -> int:
        return int(self.attr(address, "sriov_numvfs") or 0)

    def virtfn(self, pf: str, vf: int) -> Optional[str]:
        return self._link_name(os.path.join(self.device_dir(pf), "virtfn%d" % vf))

    def physfn(self, address: str) -> Optional[str]:
        return self._link_name(os.path.join(self.device_dir(address), "physfn"))

    def netdevs(self, address: str) -> List[str]:
        try:
            return sorted(os.listdir(os.path.join(self.device_dir(address), "net")))
        except FileNotFoundError:
            return []

    def describe(self, address: str) -> Dict[str, Any]:
        """What infinivirt_vm_info lists of one device."""
        return {
            "address": address,
            "vendor_id": self.attr(address, "vendor"),
            "device_id": self.attr(address, "device"),
            "class": self.attr(address, "class"),
            "driver": self.driver(address),
            "iommu_group": self.iommu_group(address),
        }

    # -- writing --------------------------------------------------------------------------
    def write_attr(self, path: str, value: str) -> None:
        """One write of ``value`` to a sysfs attribute (the kernel acts on it at once)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SysfsError("cannot open %s for writing: %s" % (path, exc.strerror)) from None
        try:
            os.write(fd, value.encode("ascii"))
        except OSError as exc:
            raise SysfsError("the kernel refused %r written to %s: %s" % (value, path, exc.strerror)) from None
        finally:
            os.close(fd)

    def set_driver_override(self, address: str, driver: Optional[str]) -> None:
        """Which driver may take the device next (None: any, as its IDs say)."""
        self.write_attr(os.path.join(self.device_dir(address), "driver_override"), driver or "\n")

    def unbind(self, address: str) -> None:
        driver = self.driver(address)
        if driver is not None:
            self.write_attr(os.path.join(self.driver_dir(driver), "unbind"), address)

    def probe(self, address: str) -> None:
        """Let the kernel bind the device to its driver (driver_override first)."""
        self.write_attr(self.path("sys/bus/pci/drivers_probe"), address)

    def bind_to(self, address: str, driver: Optional[str]) -> None:
        """Move the device to ``driver`` (None: unbound, or back to the driver its IDs pick
        with ``drivers_probe``): driver_override, unbind, probe."""
        if self.driver(address) == driver:
            return
        self.set_driver_override(address, driver)
        self.unbind(address)
        if driver is not None:
            self.probe(address)
            if self.driver(address) != driver:
                raise SysfsError(
                    "%s did not bind to %s (it has %s)" % (address, driver, self.driver(address) or "no driver")
                )

    def restore_driver(self, address: str, driver: Optional[str]) -> None:
        """Give the device back to ``driver`` (None: leave it unbound), clearing the
        override a managed bind set."""
        self.set_driver_override(address, None)
        if self.driver(address) == driver:
            return
        self.unbind(address)
        if driver is not None:
            self.write_attr(os.path.join(self.driver_dir(driver), "bind"), address)

    def set_numvfs(self, pf: str, count: int) -> None:
        """Make ``count`` VFs (the kernel wants 0 first when some exist)."""
        path = os.path.join(self.device_dir(pf), "sriov_numvfs")
        if self.sriov_numvfs(pf):
            self.write_attr(path, "0")
        self.write_attr(path, str(count))

    # -- a VF's MAC and VLAN, on its PF's interface -------------------------------------
    def vf_settings(self, ifname: str, vf: int) -> Dict[str, Any]:
        """{"mac": ..., "vlan": ...} of VF ``vf`` as ``ip -j link show`` reports it."""
        done = subprocess.run(
            ["ip", "-j", "link", "show", "dev", ifname], capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode != 0:
            raise SysfsError("cannot read the VFs of %s: %s" % (ifname, done.stderr.strip()))
        for info in (json.loads(done.stdout or "[]") or [{}])[0].get("vfinfo_list", []):
            if info.get("vf") == vf:
                vlans = info.get("vlan_list") or [{}]
                return {"mac": info.get("address"), "vlan": vlans[0].get("vlan", info.get("vlan", 0))}
        return {"mac": None, "vlan": None}

    def set_vf(self, ifname: str, vf: int, mac: Optional[str], vlan: Optional[int]) -> None:
        argv = ["ip", "link", "set", "dev", ifname, "vf", str(vf)]
        if mac is not None:
            argv += ["mac", mac]
        if vlan is not None:
            argv += ["vlan", str(vlan)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise SysfsError("cannot set VF %d of %s: %s" % (vf, ifname, done.stderr.strip()))


def check_rom_file(path: Optional[str], rom_dir: str) -> Optional[str]:
    """The real path of ``rom_file``, which must resolve (after symlinks and ``..``) inside
    ``rom_dir`` and be a readable regular file. Nothing is read but its metadata; a FIFO is
    never opened (that would block)."""
    if path is None:
        return None
    if not isinstance(rom_dir, str) or not os.path.isabs(rom_dir) or not os.path.isdir(rom_dir):
        raise SpecError("rom_dir", "%r is not an existing directory" % (rom_dir,))
    real = resolve_in_roots(path, [rom_dir], "rom_file", roots_option="rom_dir")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise SpecError("rom_file", "%s does not exist" % path) from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError("rom_file", "%s is not a regular file" % path)
    try:
        with open_confined(real, os.O_RDONLY | os.O_NONBLOCK, field="rom_file") as opened:
            if not stat.S_ISREG(os.fstat(opened.fd).st_mode):  # swapped since the stat
                raise SpecError("rom_file", "%s is not a regular file" % path)
    except PermissionError:
        raise SpecError("rom_file", "%s is not readable" % path) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            raise SpecError("rom_file", "%s changed while it was checked" % path) from None
        raise
    return real


def check_vfio_ready(sysfs: SysfsRoot, address: str, field: str = "address") -> str:
    """The device exists, an IOMMU is on and vfio-pci is loaded; returns its IOMMU group."""
    if not sysfs.exists(address):
        raise SpecError(field, "no PCI device %s on this host (%s is missing)" % (address, sysfs.device_dir(address)))
    if not sysfs.iommu_enabled():
        raise StateError(
            "the IOMMU is off on this host (%s is empty): boot with intel_iommu=on or amd_iommu=on "
            "(and iommu=pt); %s" % (sysfs.path("sys/kernel/iommu_groups"), ROLE_HINT)
        )
    group = sysfs.iommu_group(address)
    if group is None:
        raise StateError("PCI device %s has no IOMMU group, so VFIO cannot take it" % address)
    if not sysfs.driver_loaded(VFIO_DRIVER):
        raise StateError(
            "the vfio-pci driver is not loaded (%s is missing): modprobe vfio-pci; %s"
            % (sysfs.driver_dir(VFIO_DRIVER), ROLE_HINT)
        )
    return group
