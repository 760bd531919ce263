"""V4L2 cameras: what a node offers, whether the appliance can use it, and which mode to ask it for.

Everything here is pure: parsers for ``v4l2-ctl`` output (fixtures, saved ``appliance probe`` dumps), node
classification and mode negotiation. Reading a real ``/dev/videoN`` takes ioctls: that half lives in
:mod:`appliance.hw.v4l2_ioctl` and :func:`query_node` forwards to it. Discovery and re-plug identity from
sysfs live in :mod:`appliance.hw.v4l2_sysfs` and are re-exported here.

Sources: capability bits and fourccs from linux/videodev2.h; the text layout from v4l-utils' v4l2-ctl
(``print_video_formats_ext``: the newer ``[0]: 'YUYV' (YUYV 4:2:2)`` lines and the older
``Index/Type/Pixel Format/Name`` blocks).

Negotiation, in short (details at :func:`negotiate`): each usable format proposes one mode (its exact size,
else the smallest covering size, else its largest; then its highest rate not above the wish, else its
lowest). A mode is *adequate* if it covers the wished size and reaches 95% of the wished rate. The best
adequacy tier wins, then preference: H.264 (passed through), MJPEG, then raw YUYV, NV12, YU12, UYVY. So a
C920 asked for 1080p30 takes MJPG (30 fps) over YUYV (5 fps at 1080p), and H264 over both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.hw.v4l2_sysfs import DeviceIdentity, device_identity, find_device, list_video_paths

# fmt: off
__all__ = [
    "CAP_IO_MC", "CAP_META_CAPTURE", "CAP_VIDEO_CAPTURE", "CAP_VIDEO_CAPTURE_MPLANE", "CAP_VIDEO_M2M",
    "CAP_VIDEO_M2M_MPLANE", "FFMPEG_INPUT_FORMATS", "Choice", "DeviceIdentity", "DeviceInfo", "FrameSize",
    "NegotiationError", "PixelFormat", "Skipped", "Survey", "V4l2Error", "VideoNode", "Wish",
    "device_identity", "find_device", "is_bayer", "list_video_paths", "negotiate", "node_from_v4l2_ctl",
    "parse_device_info", "parse_list_formats_ext", "pick_auto", "query_node", "representative_rates",
    "representative_sizes", "survey", "unusable_reason",
]
# fmt: on

# linux/videodev2.h, "Values for 'capabilities' field".
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_VIDEO_M2M_MPLANE = 0x00004000
CAP_VIDEO_M2M = 0x00008000
CAP_META_CAPTURE = 0x00800000
CAP_IO_MC = 0x20000000  # formats depend on media-controller set-up of the pipeline
CAP_DEVICE_CAPS = 0x80000000

# What FFmpeg's v4l2 demuxer calls each fourcc we take (``-input_format``), in order of preference.
FFMPEG_INPUT_FORMATS = {
    "H264": "h264",
    "MJPG": "mjpeg",
    "JPEG": "mjpeg",
    "YUYV": "yuyv422",
    "NV12": "nv12",
    "YU12": "yuv420p",
    "UYVY": "uyvy422",
}
_PREFERENCE = tuple(FFMPEG_INPUT_FORMATS)
_RAW = frozenset({"YUYV", "NV12", "YU12", "UYVY"})

# Raw Bayer fourccs (videodev2.h V4L2_PIX_FMT_S*8/10/12/14/16 and their MIPI-packed forms).
# fmt: off
_BAYER = frozenset({
    "BA81", "GBRG", "GRBG", "RGGB", "BG10", "GB10", "BA10", "RG10", "pBAA", "pGAA", "pgAA", "pRAA", "BG12",
    "GB12", "BA12", "RG12", "pBCC", "pGCC", "pgCC", "pRCC", "BG14", "GB14", "GR14", "RG14", "pBEE", "pGEE",
    "pgEE", "pREE", "BYR2", "GB16", "GR16", "RG16", "bBA8", "bGA8", "bgA8", "bRA8", "BD10",
})
# fmt: on
# Drivers whose nodes are pieces of an SoC's codec or ISP, not cameras, whatever their caps say (the
# bcm2835-isp output nodes, for one, advertise VIDEO_CAPTURE and offer YUYV).
_PROCESSING_DRIVERS = {
    "bcm2835-codec": "Raspberry Pi hardware codec",
    "bcm2835-isp": "Raspberry Pi ISP",
    "rpivid": "Raspberry Pi HEVC decoder",
    "rpi-hevc-dec": "Raspberry Pi 5 HEVC decoder",
    "pispbe": "Raspberry Pi 5 ISP back end",
}
# CSI-2 receivers: with I/O MC they list every format they could store, whatever the sensor sends.
_CSI_RECEIVERS = frozenset({"unicam", "rp1-cfe"})
_ARGUS_DRIVERS = frozenset({"tegra-video", "tegra-camrtc-ca"})

_RATE_OK = 0.95  # 29.97 fps serves a 30 fps wish
_MAX_DIM = 1 << 16
_STANDARD_SIZES = (
    (320, 240), (640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960), (1920, 1080), (2560, 1440),
    (3840, 2160),
)  # fmt: skip
_STANDARD_RATES = (120.0, 60.0, 50.0, 30.0, 25.0, 24.0, 20.0, 15.0, 10.0, 5.0)


class V4l2Error(Exception):
    """A V4L2 node could not be read; ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class NegotiationError(ValueError):
    """No format of a node can serve the wish."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameSize:
    """One frame size and its discrete frame rates, highest first (empty: the driver gave none)."""

    width: int
    height: int
    fps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not (0 < self.width <= _MAX_DIM and 0 < self.height <= _MAX_DIM):
            raise ValueError(f"frame size {self.width}x{self.height}: want 1..{_MAX_DIM}")
        if any(f <= 0 for f in self.fps) or list(self.fps) != sorted(self.fps, reverse=True):
            raise ValueError(f"fps {self.fps!r}: want positive rates, highest first")


@dataclass(frozen=True, slots=True, kw_only=True)
class PixelFormat:
    """One pixel format and its sizes in the device's order. Stepwise/continuous ranges are stored as
    :func:`representative_sizes` and :func:`representative_rates`."""

    fourcc: str
    description: str = ""
    compressed: bool = False
    sizes: tuple[FrameSize, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoNode:
    path: str
    card: str
    driver: str
    bus_info: str
    device_caps: int
    formats: tuple[PixelFormat, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """The ``Driver Info`` block of ``v4l2-ctl --info``; ``device_caps`` falls back to ``capabilities``."""

    driver: str
    card: str
    bus_info: str
    capabilities: int
    device_caps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Wish:
    width: int
    height: int
    fps: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or not self.fps > 0:
            raise ValueError(f"wish {self.width}x{self.height}@{self.fps}: want positive size and rate")


@dataclass(frozen=True, slots=True, kw_only=True)
class Choice:
    fourcc: str
    width: int
    height: int
    fps: float
    passthrough: bool
    ffmpeg_input_format: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    path: str
    card: str
    driver: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Survey:
    """Nodes that can serve a wish (with the mode each would use) and the rest, with plain-words reasons."""

    usable: tuple[tuple[VideoNode, Choice], ...]
    skipped: tuple[Skipped, ...]


def is_bayer(fmt: PixelFormat) -> bool:
    return fmt.fourcc in _BAYER or "bayer" in fmt.description.lower()


def representative_sizes(
    min_w: int, min_h: int, max_w: int, max_h: int, step_w: int = 1, step_h: int = 1
) -> tuple[FrameSize, ...]:
    """Stand-ins for a stepwise/continuous size range: the common sizes (320x240 .. 3840x2160) that fall on
    the range's grid, then the maximum. Negotiation then works as for discrete sizes."""
    step_w, step_h = max(step_w, 1), max(step_h, 1)
    out = [
        FrameSize(width=w, height=h)
        for w, h in _STANDARD_SIZES
        if min_w <= w <= max_w
        and min_h <= h <= max_h
        and (w - min_w) % step_w == 0
        and (h - min_h) % step_h == 0
    ]
    if (max_w, max_h) not in {(s.width, s.height) for s in out}:
        out.append(FrameSize(width=max_w, height=max_h))
    return tuple(out)


def representative_rates(min_fps: float, max_fps: float) -> tuple[float, ...]:
    """Stand-ins for a stepwise/continuous interval range: its maximum rate and the common rates
    (120 .. 5 fps) inside it, highest first. The step is ignored: real drivers use fine steps."""
    rates = {round(max_fps, 3)} | {r for r in _STANDARD_RATES if min_fps - 1e-3 <= r <= max_fps + 1e-3}
    return tuple(sorted(rates, reverse=True))


# --- v4l2-ctl text -------------------------------------------------------------------------------------

_RE_NEW_FMT = re.compile(r"\[\d+\]:\s*'([^']{1,7})'\s*\((.*)\)")
_RE_OLD_FMT = re.compile(r"Pixel Format\s*:\s*'([^']{1,7})'\s*(?:\((.*)\))?")
_RE_OLD_NAME = re.compile(r"Name\s*:\s*(.*)")
_RE_TYPE = re.compile(r"Type\s*:\s*(.*)")
_RE_SIZE = re.compile(r"Size\s*:\s*(Discrete|Stepwise|Continuous)\b\s*(.*)")
_RE_DISCRETE_SIZE = re.compile(r"(\d+)x(\d+)")
_RE_RANGE_SIZE = re.compile(r"(\d+)x(\d+)\s*-\s*(\d+)x(\d+)(?:\s+with step (\d+)/(\d+))?")
_RE_IVAL = re.compile(r"Interval\s*:\s*(Discrete|Stepwise|Continuous)\b\s*(.*)")
_RE_DISCRETE_IVAL = re.compile(r"(\d+(?:\.\d+)?)\s*s\s*(?:\(\s*(\d+(?:\.\d+)?|inf|nan)\s*fps\s*\))?")
_RE_RANGE_IVAL = re.compile(
    r"(\d+(?:\.\d+)?)\s*s\s*-\s*(\d+(?:\.\d+)?)\s*s(?:\s+with step \d+(?:\.\d+)?\s*s)?"
    r"(?:\s*\(\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*fps\s*\))?"
)
# Flags v4l2-ctl appends to a description ("H.264, compressed"), from its fmtdesc_def table.
# fmt: off
_FMT_FLAGS = frozenset({
    "compressed", "emulated", "continuous-bytestream", "dyn-resolution", "enc-cap-frame-interval",
    "csc-colorspace", "csc-ycbcr-enc", "csc-hsv-enc", "csc-quantization", "csc-xfer-func",
    "meta-line-based",
})
# fmt: on
_CAPTURE_TYPES = frozenset({"video capture", "video capture multiplanar"})
_DEVICE_KEYS = {"driver name", "card type", "bus info", "capabilities", "device caps"}


class _FormatBuilder:
    def __init__(self, fourcc: str, description: str, compressed: bool) -> None:
        self.fourcc, self.description, self.compressed = fourcc, description, compressed
        self.sizes: dict[tuple[int, int], set[float]] = {}  # insertion order = device order
        self.current: list[tuple[int, int]] = []

    def add_sizes(self, sizes: Iterable[tuple[int, int]]) -> None:
        self.current = list(sizes)
        for key in self.current:
            self.sizes.setdefault(key, set())

    def add_rates(self, rates: Iterable[float]) -> None:
        for key in self.current:
            self.sizes[key].update(rates)

    def merge(self, other: _FormatBuilder) -> None:
        for key, rates in other.sizes.items():
            self.sizes.setdefault(key, set()).update(rates)
        self.compressed |= other.compressed

    def build(self) -> PixelFormat:
        sizes = tuple(
            FrameSize(width=w, height=h, fps=tuple(sorted(r, reverse=True)))
            for (w, h), r in self.sizes.items()
        )
        return PixelFormat(
            fourcc=self.fourcc, description=self.description, compressed=self.compressed, sizes=sizes
        )


def _split_flags(text: str) -> tuple[str, set[str]]:
    parts = [p.strip() for p in text.split(",")]
    flags: set[str] = set()
    while len(parts) > 1 and parts[-1] in _FMT_FLAGS:
        flags.add(parts.pop())
    if len(parts) == 1 and parts[0] in _FMT_FLAGS:  # old style: "Pixel Format: 'MJPG' (compressed)"
        return "", {parts[0]}
    return ", ".join(parts), flags


def _dims(*values: str, lineno: int) -> list[int]:
    out = [int(v) for v in values]
    if any(not 0 < v <= _MAX_DIM for v in out):
        raise ValueError(f"line {lineno}: frame size {values!r} out of range")
    return out


def _fps(seconds: str, fps: str | None) -> float | None:
    """A frame rate from v4l2-ctl's "0.033s (30.000 fps)": the printed rate if any (the seconds are rounded
    to ms), else 1/seconds. None for a zero interval, which some drivers report."""
    if fps is not None:
        value = float(fps)
        return round(value, 3) if 0 < value < 1e6 else None
    secs = float(seconds)
    return round(1 / secs, 3) if secs > 0 else None


def parse_list_formats_ext(text: str) -> tuple[PixelFormat, ...]:
    """The capture formats in the output of ``v4l2-ctl --list-formats-ext`` (old or new layout).

    Output-side sections (``--list-formats-out``, an M2M node's OUTPUT queue) and unrelated lines (driver
    info, controls, ``--all`` sections) are skipped; a format listed twice has its sizes merged, as are
    repeated sizes (some UVC firmware repeats whole blocks).

    Raises:
        ValueError: a Size or Interval line out of place or unreadable.
    """
    formats: dict[str, _FormatBuilder] = {}
    current: _FormatBuilder | None = None
    capture = True  # lists pasted without their "Type:" line are capture lists

    def close() -> None:
        nonlocal current
        if current is not None:
            if current.fourcc in formats:
                formats[current.fourcc].merge(current)
            else:
                formats[current.fourcc] = current
        current = None

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _RE_TYPE.fullmatch(line):
            close()
            capture = m.group(1).strip().lower() in _CAPTURE_TYPES
        elif line.startswith("Index") and re.fullmatch(r"Index\s*:\s*\d+", line):
            close()
        elif (m := _RE_NEW_FMT.fullmatch(line)) or (m := _RE_OLD_FMT.fullmatch(line)):
            close()
            if capture:
                description, flags = _split_flags(m.group(2) or "")
                current = _FormatBuilder(m.group(1).rstrip(), description, "compressed" in flags)
        elif (m := _RE_OLD_NAME.fullmatch(line)) and current is not None and not current.description:
            current.description = m.group(1).strip()
        elif m := _RE_SIZE.fullmatch(line):
            if not capture:
                continue
            if current is None:
                raise ValueError(f"line {lineno}: frame size before any pixel format: {line!r}")
            kind, body = m.groups()
            if kind == "Discrete" and (d := _RE_DISCRETE_SIZE.fullmatch(body)):
                w, h = _dims(*d.groups(), lineno=lineno)
                current.add_sizes([(w, h)])
            elif kind != "Discrete" and (r := _RE_RANGE_SIZE.fullmatch(body)):
                min_w, min_h, max_w, max_h = _dims(*r.groups()[:4], lineno=lineno)
                step_w, step_h = (int(r.group(5)), int(r.group(6))) if r.group(5) else (1, 1)
                if min_w > max_w or min_h > max_h:
                    raise ValueError(f"line {lineno}: empty size range: {line!r}")
                reps = representative_sizes(min_w, min_h, max_w, max_h, step_w, step_h)
                current.add_sizes((s.width, s.height) for s in reps)
            elif kind == "Continuous" and not body:
                current.add_sizes([])  # some v4l2-ctl versions print no bounds for a continuous range
            else:
                raise ValueError(f"line {lineno}: unreadable frame size: {line!r}")
        elif m := _RE_IVAL.fullmatch(line):
            if not capture:
                continue
            if current is None or not current.current:
                raise ValueError(f"line {lineno}: frame interval before any frame size: {line!r}")
            kind, body = m.groups()
            if kind == "Discrete" and (d := _RE_DISCRETE_IVAL.fullmatch(body)):
                fps = _fps(d.group(1), d.group(2))
                current.add_rates([fps] if fps else [])
            elif kind != "Discrete" and (r := _RE_RANGE_IVAL.fullmatch(body)):
                hi = _fps(r.group(1), r.group(4))  # shortest interval = highest rate
                lo = _fps(r.group(2), r.group(3))
                if hi and lo:
                    current.add_rates(representative_rates(min(lo, hi), max(lo, hi)))
            else:
                raise ValueError(f"line {lineno}: unreadable frame interval: {line!r}")
    close()
    return tuple(b.build() for b in formats.values())


def parse_device_info(text: str) -> DeviceInfo:
    """The ``Driver Info`` block of ``v4l2-ctl --info`` (also found atop ``--all`` and ``-D`` output).

    Raises:
        ValueError: no driver name or capabilities in the text, or a capability word that is not hex.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Media Driver Info"):
            break  # its "Driver name" is the media device's (tegra-camrtc-ca, not tegra-video)
        key, sep, value = stripped.partition(":")
        key = key.strip().lower()
        if sep and key in _DEVICE_KEYS and key not in fields:
            fields[key] = value.strip()
    if "driver name" not in fields or "capabilities" not in fields:
        raise ValueError("no 'Driver name' and 'Capabilities' lines: not v4l2-ctl --info output")
    try:
        caps = int(fields["capabilities"], 16)
        device_caps = int(fields["device caps"], 16) if "device caps" in fields else caps
    except ValueError:
        raise ValueError(f"capabilities {fields['capabilities']!r}: want hex") from None
    return DeviceInfo(
        driver=fields["driver name"],
        card=fields.get("card type", ""),
        bus_info=fields.get("bus info", ""),
        capabilities=caps,
        device_caps=device_caps,
    )


def node_from_v4l2_ctl(path: str, text: str) -> VideoNode:
    """A node from one device's ``v4l2-ctl -d PATH --info --list-formats-ext`` output."""
    info = parse_device_info(text)
    return VideoNode(
        path=path,
        card=info.card,
        driver=info.driver,
        bus_info=info.bus_info,
        device_caps=info.device_caps,
        formats=parse_list_formats_ext(text),
    )


def query_node(path: str) -> VideoNode:
    """Read ``path`` (``/dev/videoN``) with ioctls; see :func:`appliance.hw.v4l2_ioctl.query_node`.

    Raises:
        V4l2Error: the node could not be opened or queried.
    """
    from appliance.hw import v4l2_ioctl  # the ioctl half is a module of its own (size, and no fcntl here)

    return v4l2_ioctl.query_node(path)


# --- classification ------------------------------------------------------------------------------------


def unusable_reason(node: VideoNode) -> str | None:
    """None if the appliance can capture from ``node`` directly; otherwise why not, in plain words."""
    caps, driver = node.device_caps, node.driver
    name = f"{driver} ({node.card})" if node.card and node.card != driver else driver
    if caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE):
        return f"memory-to-memory device {name}: a hardware codec or converter, not a camera"
    if driver in _PROCESSING_DRIVERS:
        return f"{_PROCESSING_DRIVERS[driver]} node ({driver}): fed by libcamera, not a camera"
    if not caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE):
        if caps & CAP_META_CAPTURE:
            return f"metadata-only node of {name}: the camera's video is on a sibling node"
        return f"no video capture capability on {name}"
    if driver in _CSI_RECEIVERS and caps & CAP_IO_MC:
        # unicam/rp1-cfe in media-controller mode list every format they can store (YUYV included) even
        # when the sensor sends raw Bayer; the pipeline has to be set up, and the ISP run, by libcamera.
        return (
            f"CSI-2 receiver ({driver}) in media-controller mode: the sensor needs libcamera and the ISP; "
            "use capture.source=rpicam"
        )
    usable = [f for f in node.formats if f.fourcc in FFMPEG_INPUT_FORMATS]
    if usable:
        return None
    if node.formats and all(is_bayer(f) for f in node.formats):
        fourccs = ", ".join(f.fourcc for f in node.formats[:4])
        if driver in _ARGUS_DRIVERS:
            return f"raw Bayer sensor ({fourccs}): needs an ISP; use Argus (nvarguscamerasrc)"
        if driver in _CSI_RECEIVERS:
            return f"raw Bayer sensor ({fourccs}): needs an ISP; use capture.source=rpicam"
        return f"raw Bayer sensor ({fourccs}): needs an ISP; use libcamera/Argus"
    if not node.formats:
        return f"{name} offers no capture formats"
    fourccs = ", ".join(f.fourcc for f in node.formats)
    return f"no format the appliance can use ({fourccs}); it takes {', '.join(_PREFERENCE)}"


# --- negotiation ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Proposal:
    fmt: PixelFormat
    size: FrameSize
    fps: float
    size_ok: bool
    rate_ok: bool

    @property
    def rank(self) -> tuple[int, int]:
        # Tiers: 0 adequate; 1 full rate, smaller size; 2 full size, lower rate; 3 neither. Rate before size:
        # a 720p30 stream beats a 1080p5 one.
        tier = (0 if self.size_ok else 1) if self.rate_ok else (2 if self.size_ok else 3)
        return tier, _PREFERENCE.index(self.fmt.fourcc)

    def shortfall(self) -> str:
        if not self.size_ok:
            return f"{self.fmt.fourcc} offers at most {self.size.width}x{self.size.height}"
        return f"{self.fmt.fourcc} offers {self.size.width}x{self.size.height} only at {self.fps:g} fps"


def _propose(fmt: PixelFormat, wish: Wish) -> _Proposal | None:
    sizes = fmt.sizes
    if not sizes:
        return None
    exact = [s for s in sizes if (s.width, s.height) == (wish.width, wish.height)]
    covering = [s for s in sizes if s.width >= wish.width and s.height >= wish.height]
    if exact:
        size = exact[0]
    elif covering:
        size = min(covering, key=lambda s: (s.width * s.height, s.width))
    else:
        size = max(sizes, key=lambda s: (s.width * s.height, s.width))
    # A size with no rates (stepwise ISP/CSI ranges often report none) is taken to run at the wished rate.
    below = [f for f in size.fps if f <= wish.fps + 1e-6]
    fps = (max(below) if below else min(size.fps)) if size.fps else float(wish.fps)
    size_ok = size.width >= wish.width and size.height >= wish.height
    return _Proposal(fmt, size, fps, size_ok, fps >= wish.fps * _RATE_OK)


def _negotiate(formats: Sequence[PixelFormat], wish: Wish) -> tuple[_Proposal, Choice]:
    usable = [f for f in formats if f.fourcc in FFMPEG_INPUT_FORMATS]
    if not usable:
        listed = ", ".join(f.fourcc for f in formats) or "nothing"
        takes = ", ".join(_PREFERENCE)
        raise NegotiationError(f"no usable pixel format (offered: {listed}); the appliance takes {takes}")
    proposals = [p for f in usable if (p := _propose(f, wish)) is not None]
    if not proposals:
        raise NegotiationError(f"{', '.join(f.fourcc for f in usable)} offered without any frame size")
    best = min(proposals, key=lambda p: p.rank)
    fourcc = best.fmt.fourcc
    offered = {f.fourcc for f in formats}
    why: list[str] = []
    if fourcc == "H264":
        why.append("camera encodes H.264 itself")
    else:
        if "H264" not in offered:
            why.append("no H.264 offered")
        if fourcc in _RAW and not offered & {"MJPG", "JPEG"}:
            why.append("no MJPEG offered")
        why += [p.shortfall() for p in proposals if p.rank[0] > best.rank[0]]
    if not best.size_ok:
        why.append(f"largest size offered (wished {wish.width}x{wish.height})")
    elif (best.size.width, best.size.height) != (wish.width, wish.height):
        why.append(f"smallest size covering the wished {wish.width}x{wish.height}")
    if not best.rate_ok:
        why.append(f"highest rate at that size (wished {wish.fps:g} fps)")
    elif best.fps > wish.fps * (2 - _RATE_OK):
        why.append(f"lowest rate at that size (wished {wish.fps:g} fps)")
    head = f"{fourcc} {best.size.width}x{best.size.height}@{best.fps:g}" + (
        " passthrough" if fourcc == "H264" else ""
    )
    choice = Choice(
        fourcc=fourcc,
        width=best.size.width,
        height=best.size.height,
        fps=best.fps,
        passthrough=fourcc == "H264",
        ffmpeg_input_format=FFMPEG_INPUT_FORMATS[fourcc],
        reason=f"{head}: {'; '.join(why)}" if why else head,
    )
    return best, choice


def negotiate(formats: Sequence[PixelFormat], wish: Wish) -> Choice:
    """The mode to ask a node for, with a sentence saying why.

    Scoring: every usable format proposes one mode (size: exact, else the smallest covering the wish in
    both dimensions, else the largest; rate: the highest not above the wish, else the lowest). Proposals are
    ranked by adequacy tier (0: covers the size and reaches 95% of the rate; 1: rate but not size; 2: size
    but not rate; 3: neither), then by preference H264 > MJPG > JPEG > YUYV > NV12 > YU12 > UYVY.

    Raises:
        NegotiationError: no usable format, or usable ones without frame sizes.
    """
    return _negotiate(formats, wish)[1]


def survey(nodes: Sequence[VideoNode], wish: Wish) -> Survey:
    """Split ``nodes`` into those that can serve ``wish`` (best first: adequacy tier, preference, then
    the given order) and the skipped ones with reasons, for logging and ``appliance probe``."""
    ranked: list[tuple[tuple[int, int, int], VideoNode, Choice]] = []
    skipped: list[Skipped] = []
    for order, node in enumerate(nodes):
        reason = unusable_reason(node)
        if reason is None:
            try:
                proposal, choice = _negotiate(node.formats, wish)
            except NegotiationError as e:
                reason = str(e)
            else:
                ranked.append(((*proposal.rank, order), node, choice))
                continue
        skipped.append(Skipped(path=node.path, card=node.card, driver=node.driver, reason=reason))
    ranked.sort(key=lambda r: r[0])
    return Survey(usable=tuple((n, c) for _, n, c in ranked), skipped=tuple(skipped))


def pick_auto(nodes: Sequence[VideoNode], wish: Wish) -> tuple[VideoNode, Choice] | None:
    """The best camera among ``nodes`` for ``wish`` (see :func:`survey`), or None."""
    usable = survey(nodes, wish).usable
    return usable[0] if usable else None
