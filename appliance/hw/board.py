"""What board we run on, read from the device tree (ARM boards) or DMI (PCs).

Every function takes a ``root`` so tests can point it at a fixture tree captured from a real board.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["board_family", "probe_board", "probe_video_nodes"]


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().rstrip(b"\0\n").replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return None


def board_family(model: str) -> str:
    """A coarse family name the encoder probe and the image build key on."""
    low = model.lower()
    if "raspberry pi 5" in low:
        return "rpi5"
    if "raspberry pi" in low:
        return "rpi"
    if "jetson" in low:
        return "jetson"
    return "generic"


def probe_board(root: Path = Path("/")) -> dict[str, str]:
    """Model, family, architecture and kernel of this machine."""
    model = _read(root / "proc/device-tree/model") or _read(root / "sys/firmware/devicetree/base/model")
    source = "device-tree"
    if not model:
        vendor = _read(root / "sys/class/dmi/id/sys_vendor") or ""
        product = _read(root / "sys/class/dmi/id/product_name") or ""
        model = " ".join(x for x in (vendor, product) if x) or "unknown"
        source = "dmi" if model != "unknown" else "none"
    return {
        "model": model,
        "family": board_family(model),
        "model_source": source,
        "arch": platform.machine(),
        "kernel": platform.release(),
    }


def probe_video_nodes(root: Path = Path("/")) -> list[dict[str, str]]:
    """V4L2 device nodes with the driver's name for each (capabilities come with the capture issue)."""
    base = root / "sys/class/video4linux"
    try:
        names = sorted(os.listdir(base), key=lambda n: (len(n), n))
    except OSError:
        return []
    return [
        {"device": f"/dev/{n}", "name": _read(base / n / "name") or "unknown"}
        for n in names
        if n.startswith("video")
    ]
