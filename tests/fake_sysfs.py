# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake sysfs/devfs tree per test (host/pci.py's root), and a fake kernel that acts on the
writes a real one acts on (bind, unbind, drivers_probe, sriov_numvfs) and on ``ip link set
PF vf N``. The machine has no IOMMU, GPU or SR-IOV card: only these are faked."""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.host.pci import SysfsError, SysfsRoot


class FakeTree:
    """Builds ``root``: sys/bus/pci/{devices,drivers,drivers_probe}, sys/kernel/iommu_groups,
    dev/vfio. ``iommu=False``: no groups, as with the IOMMU off."""

    def __init__(self, root: str, iommu: bool = True, vfio: bool = True):
        self.root = root
        self.iommu = iommu
        for sub in ("sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups", "dev/vfio"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        open(os.path.join(root, "sys/bus/pci/drivers_probe"), "w").close()
        if vfio:
            self.driver("vfio-pci")

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def driver(self, name: str) -> None:
        os.makedirs(self.p("sys/bus/pci/drivers", name), exist_ok=True)
        for attr in ("bind", "unbind"):
            open(self.p("sys/bus/pci/drivers", name, attr), "a").close()

    def device(
        self,
        address: str,
        vendor: str = "0x10de",
        device: str = "0x1b80",
        cls: str = "0x030000",
        group: Optional[str] = None,
        driver: Optional[str] = None,
        default_driver: Optional[str] = None,
        sriov_totalvfs: Optional[int] = None,
        netdev: Optional[str] = None,
    ) -> None:
        """A device; ``default_driver``: what its IDs bind it to on a probe (its driver when
        unset)."""
        base = self.p("sys/bus/pci/devices", address)
        os.makedirs(base)
        for name, value in (("vendor", vendor), ("device", device), ("class", cls), ("driver_override", "(null)")):
            with open(os.path.join(base, name), "w") as handle:
                handle.write(value + "\n")
        with open(os.path.join(base, ".default_driver"), "w") as handle:
            handle.write(default_driver or driver or "")
        if sriov_totalvfs is not None:
            for name, value in (("sriov_totalvfs", sriov_totalvfs), ("sriov_numvfs", 0)):
                with open(os.path.join(base, name), "w") as handle:
                    handle.write("%d\n" % value)
        if netdev:
            os.makedirs(os.path.join(base, "net", netdev))
        if self.iommu and group is not None:
            gdir = self.p("sys/kernel/iommu_groups", group, "devices")
            os.makedirs(gdir, exist_ok=True)
            os.symlink("../../../../kernel/iommu_groups/%s" % group, os.path.join(base, "iommu_group"))
            os.symlink("../../../../bus/pci/devices/%s" % address, os.path.join(gdir, address))
            open(self.p("dev/vfio", group), "a").close()
        if driver is not None:
            self.link_driver(address, driver)

    def link_driver(self, address: str, driver: Optional[str]) -> None:
        link = self.p("sys/bus/pci/devices", address, "driver")
        if os.path.islink(link):
            os.unlink(link)
        if driver is not None:
            self.driver(driver)
            os.symlink("../../drivers/%s" % driver, link)


class FakeKernel(SysfsRoot):
    """SysfsRoot on a FakeTree, whose writes the fake kernel then acts on, as Linux would."""

    def __init__(self, tree: FakeTree):
        super().__init__(tree.root)
        self.tree = tree
        self.writes = []  # (path relative to root, value)
        self.vf_config: Dict[Tuple[str, int], Dict[str, object]] = {}
        self.refuse = set()  # relative paths whose writes fail (EBUSY)

    def write_attr(self, path: str, value: str) -> None:
        rel = os.path.relpath(path, self.root)
        if rel in self.refuse:
            raise SysfsError("the kernel refused %r written to %s: Device or resource busy" % (value, path))
        super().write_attr(path, value)
        self.writes.append((rel, value))
        parts = rel.split("/")
        if parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[-1] == "unbind":
            self.tree.link_driver(value, None)
        elif parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[-1] == "bind":
            self.tree.link_driver(value, parts[4])
        elif rel == "sys/bus/pci/drivers_probe":
            override = self._file(value, "driver_override")
            chosen = override if override not in ("", "(null)") else self._file(value, ".default_driver")
            if chosen and self.driver(value) is None:
                self.tree.link_driver(value, chosen)
        elif parts[-1] == "driver_override":
            with open(path, "w") as handle:
                handle.write(value.strip() or "(null)")
        elif parts[-1] == "sriov_numvfs":
            self._make_vfs(parts[-2], int(value))

    def _file(self, address: str, name: str) -> str:
        with open(os.path.join(self.device_dir(address), name)) as handle:
            return handle.read().strip()

    def _make_vfs(self, pf: str, count: int) -> None:
        """VF n of PF DDDD:BB:SS.F is DDDD:BB:(SS+0x10).n here, in a group of its own."""
        base = self.device_dir(pf)
        with open(os.path.join(base, "sriov_numvfs"), "w") as handle:
            handle.write("%d\n" % count)
        domain_bus, slot_fn = pf.rsplit(":", 1)
        slot = int(slot_fn.split(".")[0], 16) + 0x10
        for n in range(count):
            vf = "%s:%02x.%d" % (domain_bus, slot, n)
            if not self.exists(vf):
                self.tree.device(
                    vf, vendor="0x8086", device="0x154c", cls="0x020000", group="vf%d" % n, default_driver="iavf"
                )
                self.tree.link_driver(vf, "iavf")
                os.symlink("../%s" % pf, os.path.join(self.device_dir(vf), "physfn"))
                os.symlink("../%s" % vf, os.path.join(base, "virtfn%d" % n))

    def vf_settings(self, ifname: str, vf: int):
        return dict(self.vf_config.get((ifname, vf), {"mac": "00:00:00:00:00:00", "vlan": 0}))

    def set_vf(self, ifname: str, vf: int, mac, vlan) -> None:
        entry = self.vf_config.setdefault((ifname, vf), {"mac": "00:00:00:00:00:00", "vlan": 0})
        if mac is not None:
            entry["mac"] = mac
        if vlan is not None:
            entry["vlan"] = vlan


def gpu_host(root: str, audio_driver: str = "snd_hda_intel", gpu_driver: str = "nouveau", **tree_options) -> FakeTree:
    """A GPU (0000:01:00.0) and its HDMI audio (0000:01:00.1) in IOMMU group 1, bound to host
    drivers; an NVMe drive (0000:02:00.0, group 2) bound to vfio-pci; a bridge
    (0000:00:01.0) in group 1 too; an SR-IOV NIC PF (0000:03:00.0, group 3, eth-pf)."""
    tree = FakeTree(root, **tree_options)
    tree.device("0000:00:00.0", vendor="0x8086", device="0x1237", cls="0x060000", group="0")
    tree.device("0000:00:01.0", vendor="0x8086", device="0x1901", cls="0x060400", group="1", driver="pcieport")
    tree.device("0000:01:00.0", cls="0x030000", group="1", driver=gpu_driver)
    tree.device("0000:01:00.1", device="0x10f0", cls="0x040300", group="1", driver=audio_driver)
    tree.device(
        "0000:02:00.0",
        vendor="0x144d",
        device="0xa808",
        cls="0x010802",
        group="2",
        driver="vfio-pci",
        default_driver="nvme",
    )
    tree.device(
        "0000:03:00.0",
        vendor="0x8086",
        device="0x1572",
        cls="0x020000",
        group="3",
        driver="i40e",
        sriov_totalvfs=8,
        netdev="eth-pf",
    )
    return tree
