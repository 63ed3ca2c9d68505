"""Device identity from sysfs through pyudev: PCI vendor/device/subsystem ids of a netdev's parent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyudev


@dataclass
class PciIds:
    slot: str
    vendor: str
    device: str
    subsystem_vendor: str | None
    subsystem_device: str | None


def _attr(dev: pyudev.Device, name: str) -> str | None:
    try:
        v = dev.attributes.asstring(name)
    except KeyError:
        return None
    return v.strip() or None


def pci_ids(ifname: str, context: pyudev.Context | None = None) -> PciIds | None:
    """PCI ids of the device behind `ifname` (walking up parents: virtio and SR-IOV sit below PCI)."""
    import pyudev  # here: only PCI-backed devices need it

    ctx = context or pyudev.Context()
    try:
        dev = pyudev.Devices.from_name(ctx, "net", ifname)
    except pyudev.DeviceNotFoundError:
        return None
    pci = dev.find_parent("pci")
    if pci is None:
        return None
    vendor, device = _attr(pci, "vendor"), _attr(pci, "device")
    if not vendor or not device:
        return None
    return PciIds(pci.sys_name, vendor, device, _attr(pci, "subsystem_vendor"), _attr(pci, "subsystem_device"))


def link_speed_mbps(ifname: str, context: pyudev.Context | None = None) -> int | None:
    """The link's negotiated speed (sysfs `speed`, Mb/s), None when unknown or the link is down
    (the kernel reads -1 then, or refuses the read)."""
    import pyudev

    ctx = context or pyudev.Context()
    try:
        dev = pyudev.Devices.from_name(ctx, "net", ifname)
        raw = _attr(dev, "speed")
    except (pyudev.DeviceNotFoundError, OSError):
        return None
    try:
        speed = int(raw) if raw else None
    except ValueError:
        return None
    return speed if speed and speed > 0 else None
