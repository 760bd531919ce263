"""Where V4L2 nodes are and which device is behind each, from sysfs, so a camera is found again after it
comes back under another number (re-plug, reboot, a second camera enumerating first).

Pure given ``root``: tests point it at a fixture tree (tests/fixtures/sysfs). Layout, as on a Pi 4:
``sys/class/video4linux/video0 -> ../../devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/
0000:01:00.0/usb1/1-1/1-1.2/1-1.2:1.0/video4linux/video0``; ``video0/device`` links to the USB interface.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeviceIdentity", "device_identity", "find_device", "list_video_paths"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIdentity:
    """What survives a re-plug: USB ids, serial ("" when the device has none) and the port as V4L2 spells
    it in ``bus_info`` (``usb-0000:01:00.0-1.2``; ``platform:fe801000.csi`` for SoC devices)."""

    vendor_id: str
    product_id: str
    serial: str
    bus_info: str

    def matches(self, other: DeviceIdentity) -> bool:
        if (self.vendor_id, self.product_id) != (other.vendor_id, other.product_id):
            return False
        if self.serial:
            return self.serial == other.serial
        return self.bus_info == other.bus_info  # two serial-less twins are told apart by their port only


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def list_video_paths(root: Path = Path("/")) -> list[str]:
    """``/dev/videoN`` for every node in ``root/sys/class/video4linux``, in numeric order."""
    try:
        names = [p.name for p in (root / "sys/class/video4linux").iterdir()]
    except OSError:
        return []
    numbered = sorted((int(m.group(1)), n) for n in names if (m := re.fullmatch(r"video(\d+)", n)))
    return [f"/dev/{n}" for _, n in numbered]


def device_identity(path: str, root: Path = Path("/")) -> DeviceIdentity | None:
    """The identity of the device behind ``path``, from sysfs; None if sysfs has no such node.

    The node's parent device is the USB interface (``1-1.2:1.0``): ``videoN/device`` links to it and the
    node itself sits in its ``video4linux/`` directory (fixture trees have no ``device`` links, whose
    cycles would send pytest's collection round in circles). The interface's parent (``1-1.2``) has
    idVendor, idProduct and, if the device has one, serial. The controller named in bus_info is the
    parent of the root hub (``usb1``), as the kernel's usb_make_path() builds it.
    """
    try:
        node = (root / "sys/class/video4linux" / Path(path).name).resolve(strict=True)
        link = node / "device"
        device = link.resolve(strict=True) if link.is_symlink() else node.parent.parent
    except OSError:
        return None
    usb = next((d for d in (device, *list(device.parents)[:3]) if (d / "idVendor").is_file()), None)
    if usb is None:
        return DeviceIdentity(vendor_id="", product_id="", serial="", bus_info=f"platform:{device.name}")
    devpath = _read(usb / "devpath") or usb.name.partition("-")[2]
    hub = next((d for d in usb.parents if re.fullmatch(r"usb\d+", d.name)), None)
    controller = hub.parent.name if hub is not None else ""
    return DeviceIdentity(
        vendor_id=_read(usb / "idVendor"),
        product_id=_read(usb / "idProduct"),
        serial=_read(usb / "serial"),
        bus_info=f"usb-{controller}-{devpath}",
    )


def _first_node_of_device(path: str, root: Path) -> bool:
    # A device numbers its nodes from 0 (sysfs "index"); uvcvideo's metadata node is index 1.
    return _read(root / "sys/class/video4linux" / Path(path).name / "index") in ("", "0")


def find_device(
    identity: DeviceIdentity,
    root: Path = Path("/"),
    prefer_path: str | None = None,
    *,
    accept: Callable[[str], bool] | None = None,
) -> str | None:
    """Where the device of ``identity`` is now: ``prefer_path`` if it still matches, else the first matching
    node in numeric order. ``accept`` filters candidates (the driver passes a capture check); by default
    only a device's first node (sysfs index 0) is taken, which is the video node for UVC cameras."""

    check = accept or (lambda p: _first_node_of_device(p, root))

    def ok(path: str) -> bool:
        found = device_identity(path, root)
        return found is not None and identity.matches(found) and check(path)

    if prefer_path is not None and ok(prefer_path):
        return prefer_path
    return next((p for p in list_video_paths(root) if p != prefer_path and ok(p)), None)
