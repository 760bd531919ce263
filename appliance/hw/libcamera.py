"""The camera list of ``rpicam-hello --list-cameras`` (``libcamera-hello`` before Raspberry Pi OS Bookworm).

Raspberry Pi CSI sensors send raw Bayer that only libcamera's pipeline (unicam or rp1-cfe, then the ISP)
turns into video, so these cameras are listed by rpicam-apps rather than found through V4L2 formats. The
layouts parsed, newest first (rpicam-apps ``--list-cameras``, see its options.cpp)::

    0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)
        Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
                                 2304x1296 [56.03 fps - (0, 0)/4608x2592 crop]

    0 : imx477 [4056x3040] (/base/soc/i2c0mux/i2c@1/imx477@1a)        (2022: rates in parentheses)
        Modes: 'SRGGB10_CSI2P' : 1332x990 (120.00 fps)

    0 : imx477 [4056x3040] (/base/soc/i2c0mux/i2c@1/imx477@1a)        (2021: sizes only, one line)
        Modes: 'SRGGB12_CSI2P' : 2028x1080 2028x1520 4056x3040

libcamera's log lines (``[0:00:56.03] [1584]  INFO ...``), ``--verbose`` control tables and the
"Available cameras" banner are skipped.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

__all__ = ["LibcameraCamera", "LibcameraMode", "parse_list_cameras"]

_MAX_DIM = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class LibcameraMode:
    """A sensor mode: its format (``SRGGB10_CSI2P``; ``MJPEG``/``YUYV`` for USB cameras libcamera lists),
    size, maximum rate (None in listings before rates were shown) and sensor crop (x, y, w, h) if shown."""

    format: str
    width: int
    height: int
    fps: float | None = None
    crop: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LibcameraCamera:
    """One camera: its index for ``--camera``, sensor (``imx708``, ``imx708_wide``), device-tree path, pixel
    array size and Bayer description (``10-bit RGGB``) when shown, and its modes in listing order."""

    index: int
    sensor: str
    path: str
    modes: tuple[LibcameraMode, ...]
    pixel_array: tuple[int, int] | None = None
    bayer: str = ""


_RE_CAMERA = re.compile(
    r"(\d+)\s*:\s*(?P<sensor>'[^']*'|[^\s\[(]+)\s*"
    r"(?:\[(?P<w>\d+)x(?P<h>\d+)\s*(?P<bayer>[^\]]*)\])?\s*\((?P<path>[^()]*)\)"
)
_RE_MODES = re.compile(r"Modes\s*:\s*(.*)")
_RE_FORMAT = re.compile(r"'([^']+)'\s*:\s*(.*)")
_RE_SIZE = re.compile(
    r"(\d+)x(\d+)\s*"
    r"(?:\[\s*(?P<fps>\d+(?:\.\d+)?)\s*fps"
    r"(?:\s*-\s*\((?P<cx>\d+),\s*(?P<cy>\d+)\)/(?P<cw>\d+)x(?P<ch>\d+)\s*crop)?\s*\]"
    r"|\(\s*(?P<fps2>\d+(?:\.\d+)?)\s*fps\s*\))?"
)


def _modes(text: str, fmt: str, lineno: int) -> tuple[str, list[LibcameraMode]] | None:
    """The modes on one ``Modes:`` line or continuation line, or None if it is not one."""
    if m := _RE_FORMAT.fullmatch(text):
        fmt, text = m.group(1), m.group(2)
    out: list[LibcameraMode] = []
    rest = text.strip()
    while rest:
        m = _RE_SIZE.match(rest)
        if m is None:
            return None
        w, h = int(m.group(1)), int(m.group(2))
        if not (0 < w <= _MAX_DIM and 0 < h <= _MAX_DIM):
            raise ValueError(f"line {lineno}: mode size {w}x{h} out of range")
        fps_text = m.group("fps") or m.group("fps2")
        crop = None
        if m.group("cx") is not None:
            crop = (int(m.group("cx")), int(m.group("cy")), int(m.group("cw")), int(m.group("ch")))
        out.append(
            LibcameraMode(format=fmt, width=w, height=h, fps=float(fps_text) if fps_text else None, crop=crop)
        )
        rest = rest[m.end() :].lstrip(" \t,")  # sizes are listed with spaces, or with ", " in 2022
    return fmt, out


def parse_list_cameras(text: str) -> list[LibcameraCamera]:
    """Cameras in ``rpicam-hello --list-cameras`` output; [] for "No cameras available!".

    Raises:
        ValueError: a ``Modes:`` line before any camera line, or a mode size out of range.
    """
    cameras: list[LibcameraCamera] = []
    current: LibcameraCamera | None = None  # without its modes, collected below
    modes: list[LibcameraMode] = []
    fmt = ""
    in_modes = False

    def close() -> None:
        if current is not None:
            cameras.append(dataclasses.replace(current, modes=tuple(modes)))

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _RE_CAMERA.fullmatch(line):
            close()
            sensor = m.group("sensor").strip("'")
            array = (int(m.group("w")), int(m.group("h"))) if m.group("w") else None
            current = LibcameraCamera(
                index=int(m.group(1)),
                sensor=sensor,
                path=m.group("path"),
                modes=(),
                pixel_array=array,
                bayer=(m.group("bayer") or "").strip(),
            )
            modes, fmt, in_modes = [], "", False
        elif m := _RE_MODES.fullmatch(line):
            if current is None:
                raise ValueError(f"line {lineno}: 'Modes:' before any camera line")
            parsed = _modes(m.group(1), "", lineno)
            in_modes = parsed is not None
            if parsed is not None:
                fmt = parsed[0]
                modes += parsed[1]
        elif in_modes and line:
            parsed = _modes(line, fmt, lineno)
            if parsed is None:
                in_modes = False  # e.g. "Available controls for ..." under --verbose
            else:
                fmt = parsed[0]
                modes += parsed[1]
        elif not line:
            in_modes = False
    close()
    return cameras
