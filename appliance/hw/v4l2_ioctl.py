"""Reading a V4L2 node with ioctls: VIDIOC_QUERYCAP, then VIDIOC_ENUM_FMT over the capture queues, and
VIDIOC_ENUM_FRAMESIZES / VIDIOC_ENUM_FRAMEINTERVALS for every format.

Layouts and numbers are from include/uapi/linux/videodev2.h and the generic asm-generic/ioctl.h encoding
(x86_64 and arm64, the appliance's targets; alpha, mips, powerpc and sparc encode differently). Every field
of the four structs is a __u32 or a __u8 array, so there is no padding and native byte order is all:

    struct v4l2_capability   { __u8 driver[16], card[32], bus_info[32]; __u32 version, capabilities,
                               device_caps, reserved[3]; }                                     104 bytes
    struct v4l2_fmtdesc      { __u32 index, type, flags; __u8 description[32]; __u32 pixelformat,
                               mbus_code, reserved[3]; }                                        64 bytes
    struct v4l2_frmsizeenum  { __u32 index, pixel_format, type; union { discrete {width, height};
                               stepwise {min_width, max_width, step_width, min_height, max_height,
                               step_height} }; __u32 reserved[2]; }                            44 bytes
    struct v4l2_frmivalenum  { __u32 index, pixel_format, width, height, type; union { struct v4l2_fract
                               discrete; stepwise {min, max, step} }; __u32 reserved[2]; }      52 bytes

The enumeration itself (:func:`enumerate_node`) takes the ioctl as a function, so tests drive it with a
fake device; :func:`query_node` opens the real node and hands it ``fcntl.ioctl``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable
from typing import Any

from appliance.hw.v4l2 import (
    CAP_DEVICE_CAPS,
    CAP_VIDEO_CAPTURE,
    CAP_VIDEO_CAPTURE_MPLANE,
    CAP_VIDEO_M2M,
    CAP_VIDEO_M2M_MPLANE,
    FrameSize,
    PixelFormat,
    V4l2Error,
    VideoNode,
    representative_rates,
    representative_sizes,
)

__all__ = [
    "CAPABILITY",
    "FMTDESC",
    "FRMIVALENUM",
    "FRMSIZEENUM",
    "VIDIOC_ENUM_FMT",
    "VIDIOC_ENUM_FRAMEINTERVALS",
    "VIDIOC_ENUM_FRAMESIZES",
    "VIDIOC_QUERYCAP",
    "Ioctl",
    "enumerate_node",
    "ioc",
    "query_node",
]

# asm-generic/ioctl.h: nr in bits 0-7, type 8-15, size 16-29, direction 30-31.
_IOC_WRITE = 1
_IOC_READ = 2


def ioc(direction: int, kind: str, nr: int, size: int) -> int:
    """The _IOC() macro."""
    if not (0 <= nr < 1 << 8 and 0 <= size < 1 << 14 and 0 <= direction < 1 << 2):
        raise ValueError(f"ioc({direction}, {kind!r}, {nr}, {size}): field out of range")
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


CAPABILITY = struct.Struct("=16s32s32sIII12x")
FMTDESC = struct.Struct("=III32sII12x")
FRMSIZEENUM = struct.Struct("=III6I8x")
FRMIVALENUM = struct.Struct("=IIIII6I8x")

VIDIOC_QUERYCAP = ioc(_IOC_READ, "V", 0, CAPABILITY.size)  # _IOR('V', 0, struct v4l2_capability)
VIDIOC_ENUM_FMT = ioc(_IOC_READ | _IOC_WRITE, "V", 2, FMTDESC.size)  # _IOWR('V', 2, struct v4l2_fmtdesc)
VIDIOC_ENUM_FRAMESIZES = ioc(_IOC_READ | _IOC_WRITE, "V", 74, FRMSIZEENUM.size)
VIDIOC_ENUM_FRAMEINTERVALS = ioc(_IOC_READ | _IOC_WRITE, "V", 75, FRMIVALENUM.size)

# enum v4l2_buf_type; enum v4l2_frmsizetypes / v4l2_frmivaltypes; V4L2_FMT_FLAG_COMPRESSED.
_BUF_TYPE_VIDEO_CAPTURE = 1
_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
_DISCRETE, _CONTINUOUS, _STEPWISE = 1, 2, 3
_FMT_FLAG_COMPRESSED = 0x0001

# A driver that never says EINVAL would loop forever: no real node has this many entries.
_MAX_ENTRIES = 256

Ioctl = Callable[[int, bytearray], None]
"""``ioctl(request, buffer)``: fills ``buffer`` in place; raises OSError as fcntl.ioctl does."""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fourcc(value: int) -> str:
    text = value.to_bytes(4, "little").decode("latin-1").rstrip(" \0")
    return text + "-BE" if value & (1 << 31) else text  # v4l2_fourcc_be sets bit 31, as v4l2-ctl shows


def _enumerate(
    path: str, ioctl: Ioctl, request: int, layout: struct.Struct, head: tuple[int, ...]
) -> list[tuple[Any, ...]]:
    """Call an ENUM ioctl for index 0, 1, ... until EINVAL; the rest of the struct starts zeroed."""
    out: list[tuple[Any, ...]] = []
    for index in range(_MAX_ENTRIES):
        buf = bytearray(layout.size)
        struct.pack_into(f"={1 + len(head)}I", buf, 0, index, *head)
        try:
            ioctl(request, buf)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOTTY):  # end of list / ioctl not implemented
                return out
            raise V4l2Error(path, f"ioctl {request:#x} index {index}: {e.strerror or e}") from e
        out.append(layout.unpack(buf))
    return out


def _rates(path: str, ioctl: Ioctl, pixfmt: int, width: int, height: int) -> tuple[float, ...]:
    rates: set[float] = set()
    for entry in _enumerate(path, ioctl, VIDIOC_ENUM_FRAMEINTERVALS, FRMIVALENUM, (pixfmt, width, height)):
        kind, num, den, max_num, max_den = entry[4], *entry[5:9]
        if kind == _DISCRETE:
            if num and den:
                rates.add(round(den / num, 3))
        elif num and den and max_num and max_den:  # stepwise/continuous: min and max interval
            rates.update(representative_rates(max_den / max_num, den / num))
            break  # only index 0 is defined for a range
    return tuple(sorted(rates, reverse=True))


def _sizes(path: str, ioctl: Ioctl, pixfmt: int) -> tuple[FrameSize, ...]:
    sizes: dict[tuple[int, int], FrameSize] = {}
    for entry in _enumerate(path, ioctl, VIDIOC_ENUM_FRAMESIZES, FRMSIZEENUM, (pixfmt,)):
        kind, values = entry[2], entry[3:9]
        if kind == _DISCRETE:
            candidates: tuple[FrameSize, ...] = (FrameSize(width=values[0], height=values[1]),)
        else:
            min_w, max_w, step_w, min_h, max_h, step_h = values
            if not (0 < min_w <= max_w and 0 < min_h <= max_h):
                continue
            candidates = representative_sizes(min_w, min_h, max_w, max_h, step_w, step_h)
        for size in candidates:
            key = (size.width, size.height)
            if key not in sizes:
                fps = _rates(path, ioctl, pixfmt, *key)
                sizes[key] = FrameSize(width=size.width, height=size.height, fps=fps)
        if kind != _DISCRETE:
            break
    return tuple(sizes.values())


def enumerate_node(path: str, ioctl: Ioctl) -> VideoNode:
    """Query caps, then every capture format with its sizes and rates, through ``ioctl``.

    Ranges (stepwise/continuous sizes and intervals) become the representative values of
    :func:`appliance.hw.v4l2.representative_sizes` and :func:`~appliance.hw.v4l2.representative_rates`,
    so a node read here compares equal to the same node parsed from ``v4l2-ctl --list-formats-ext``.

    Raises:
        V4l2Error: QUERYCAP failed, or an enumeration failed with something other than EINVAL.
    """
    buf = bytearray(CAPABILITY.size)
    try:
        ioctl(VIDIOC_QUERYCAP, buf)
    except OSError as e:
        raise V4l2Error(path, f"VIDIOC_QUERYCAP: {e.strerror or e} (not a V4L2 device?)") from e
    driver, card, bus_info, _version, caps, device_caps = CAPABILITY.unpack(buf)
    if not caps & CAP_DEVICE_CAPS:
        device_caps = caps  # drivers before Linux 3.3 fill only the whole-device word
    buf_types = []
    if device_caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_M2M):
        buf_types.append(_BUF_TYPE_VIDEO_CAPTURE)
    if device_caps & (CAP_VIDEO_CAPTURE_MPLANE | CAP_VIDEO_M2M_MPLANE):
        buf_types.append(_BUF_TYPE_VIDEO_CAPTURE_MPLANE)
    formats: dict[str, PixelFormat] = {}
    for buf_type in buf_types:
        for entry in _enumerate(path, ioctl, VIDIOC_ENUM_FMT, FMTDESC, (buf_type,)):
            flags, description, pixfmt = entry[2], entry[3], entry[4]
            fourcc = _fourcc(pixfmt)
            if fourcc not in formats:
                formats[fourcc] = PixelFormat(
                    fourcc=fourcc,
                    description=_cstr(description),
                    compressed=bool(flags & _FMT_FLAG_COMPRESSED),
                    sizes=_sizes(path, ioctl, pixfmt),
                )
    return VideoNode(
        path=path,
        card=_cstr(card),
        driver=_cstr(driver),
        bus_info=_cstr(bus_info),
        device_caps=device_caps,
        formats=tuple(formats.values()),
    )


def query_node(path: str) -> VideoNode:
    """Open ``path`` (``/dev/videoN``) and read it with :func:`enumerate_node`. Blocking but quick: no
    streaming, only queries (a driver thread or ``trio.to_thread.run_sync`` should call it).

    Raises:
        V4l2Error: the node could not be opened or queried; ``path`` is in the message.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise V4l2Error(path, f"cannot open: {e.strerror or e}") from e

    def ioctl(request: int, buf: bytearray) -> None:
        fcntl.ioctl(fd, request, buf, True)

    try:
        return enumerate_node(path, ioctl)
    finally:
        os.close(fd)
