"""JPEG snapshots of a stream: its newest keyframe, decoded with PyAV and encoded as JPEG.

Theory of operation
-------------------
The status page shows each stream as a picture refreshed every few seconds. The picture is the newest
video keyframe in the stream's GOP cache (`Bus.keyframe`), decoded on its own (a keyframe needs nothing
else but the stream's codec config: the SPS/PPS in the AVC/HEVC configuration record) and encoded with
FFmpeg's MJPEG encoder. No frame after the keyframe is decoded, so a snapshot lags the live picture by up
to a GOP (2 s by default): the price of costing one decode per keyframe instead of a decoder per stream.

Cost. Decoding and encoding run in a worker thread (`trio.to_thread`, one at a time for the process), so
the trio loop never stalls. The result is cached per keyframe (by the packet's identity: the Bus hands out
the same object until the next keyframe) and width, and concurrent requests for the same picture wait for
the one decode in progress: a hundred viewers cost one decode per keyframe. The cache holds one keyframe
per stream and a few widths of it; streams that left the registry are forgotten.

`render_jpeg` and `scaled_size` are pure (no trio) and unit-tested on their own.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass, field
from functools import partial

import av
import trio

from appliance.bus import BusRegistry
from appliance.media.packets import Codec, CodecConfig, Packet

__all__ = [
    "DECODERS",
    "MAX_WIDTH",
    "MIN_WIDTH",
    "Jpeg",
    "NoKeyframeError",
    "SnapshotError",
    "Snapshots",
    "UnknownStreamError",
    "UnsupportedCodecError",
    "parse_width",
    "render_jpeg",
    "scaled_size",
]

# FFmpeg decoders by codec. H.264 and HEVC keyframes decode from the configuration record alone.
DECODERS = {Codec.H264: "h264", Codec.HEVC: "hevc"}
MIN_WIDTH = 16
MAX_WIDTH = 4096
# MJPEG quantiser (2 best .. 31 worst); 4 looks like the source at a fraction of a keyframe's decode cost.
_QUALITY = 4
_WIDTHS_PER_STREAM = 4  # renditions (?width=) cached per keyframe
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG: full-range YUV, what JPEG means, without the deprecated yuvj formats


class SnapshotError(Exception):
    """Base of the reasons there is no snapshot."""


class UnknownStreamError(SnapshotError):
    """No stream of that name."""


class NoKeyframeError(SnapshotError):
    """The stream has no keyframe in its cache yet (no producer, no video, or not since it joined)."""


class UnsupportedCodecError(SnapshotError):
    """The stream's video codec is not one snapshots decode."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Jpeg:
    """One encoded picture.

    Attributes:
        data: The JPEG file.
        width, height: Its size in pixels.
        dts_ms: The keyframe's decode time on the stream's timeline.
    """

    data: bytes
    width: int
    height: int
    dts_ms: int


def parse_width(value: str | None) -> int | None:
    """The ``?width=`` query value: None when absent, else an int in [MIN_WIDTH, MAX_WIDTH].

    Raises:
        ValueError: Not a whole number in range; the message names the parameter and the range.
    """
    if value is None or value == "":
        return None
    if not value.isdigit() or not MIN_WIDTH <= int(value) <= MAX_WIDTH:
        raise ValueError(f"width={value!r}: want a whole number of pixels from {MIN_WIDTH} to {MAX_WIDTH}")
    return int(value)


def scaled_size(width: int, height: int, want: int | None) -> tuple[int, int]:
    """The snapshot size for a ``width x height`` picture asked to be ``want`` wide.

    Only ever scales down, keeps the aspect ratio, and rounds to even sizes (4:2:0 chroma needs them).

    Args:
        width, height: The decoded picture, positive.
        want: The wished width, or None for the picture's own size.

    Returns:
        (width, height), each at least 2.
    """
    if want is None or want >= width:
        return width, height
    w = max(2, want - want % 2)
    h = max(2, round(height * w / width / 2) * 2)
    return w, h


def render_jpeg(config: CodecConfig, keyframe: Packet, width: int | None = None) -> Jpeg:
    """Decode ``keyframe`` with ``config`` and encode the picture as a JPEG (blocking; run it in a thread).

    Args:
        config: The stream's video config (its ``data`` is the AVC/HEVC configuration record).
        keyframe: A video keyframe of that codec.
        width: Scale down to this width (see `scaled_size`); None keeps the picture's size.

    Returns:
        The JPEG.

    Raises:
        UnsupportedCodecError: Not H.264 or HEVC.
        NoKeyframeError: The packet is not a keyframe, or it decoded to no picture (a broken stream).
    """
    decoder = DECODERS.get(config.codec)
    if decoder is None or keyframe.codec is not config.codec:
        raise UnsupportedCodecError(
            f"snapshots decode {' and '.join(c.name for c in DECODERS)}; this stream is {keyframe.codec.name}"
        )
    if not keyframe.keyframe:
        raise NoKeyframeError("not a keyframe")
    ctx = av.CodecContext.create(decoder, "r")
    assert isinstance(ctx, av.video.codeccontext.VideoCodecContext)
    if config.data:
        ctx.extradata = config.data
    try:
        # The packet, then a flush: decoders with reordering delay hold the picture until told to drain.
        frames = ctx.decode(av.Packet(keyframe.payload)) + ctx.decode(None)
    except av.error.FFmpegError as e:
        raise NoKeyframeError(f"the keyframe did not decode: {e}") from None
    if not frames:
        raise NoKeyframeError("the keyframe decoded to no picture")
    frame = frames[0]
    w, h = scaled_size(frame.width, frame.height, width)
    picture = frame.reformat(
        width=w, height=h, format="yuv420p", interpolation="AREA", dst_color_range=_JPEG_RANGE
    )
    enc = av.CodecContext.create("mjpeg", "w")
    assert isinstance(enc, av.video.codeccontext.VideoCodecContext)
    enc.width = w
    enc.height = h
    enc.pix_fmt = "yuv420p"
    enc.color_range = _JPEG_RANGE
    enc.time_base = fractions.Fraction(1, 1)
    enc.options = {"qmin": str(_QUALITY), "qmax": str(_QUALITY)}
    picture.pts = 0
    data = b"".join(bytes(p) for p in enc.encode(picture) + enc.encode(None))
    return Jpeg(data=data, width=w, height=h, dts_ms=keyframe.dts_ms)


@dataclass(slots=True)
class _Entry:
    keyframe: Packet
    renditions: dict[int | None, Jpeg] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)


class Snapshots:
    """The JPEG snapshots of a registry's streams, cached per keyframe.

    Args:
        buses: The process's Buses.
        limiter: Bounds concurrent decodes (default: one at a time).
    """

    def __init__(self, buses: BusRegistry, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self._buses = buses
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._entries: dict[str, _Entry] = {}
        self.decodes = 0  # keyframes decoded (for tests and /metrics: one per keyframe and width)

    async def jpeg(self, name: str, width: int | None = None) -> Jpeg:
        """The snapshot of stream ``name``, from cache or decoded now.

        Args:
            name: The stream, ``app/key``.
            width: Scale down to this width; None keeps the picture's size.

        Raises:
            UnknownStreamError: No such stream.
            NoKeyframeError: No keyframe yet, or it did not decode (try again at the next one).
            UnsupportedCodecError: A codec snapshots do not decode.
        """
        for gone in [n for n in self._entries if n not in self._buses]:
            del self._entries[gone]
        bus = self._buses.get(name)
        if bus is None:
            raise UnknownStreamError(f"no stream {name!r}")
        found = bus.keyframe()
        if found is None:
            raise NoKeyframeError(f"stream {name!r} has no keyframe yet")
        config, keyframe = found
        entry = self._entries.get(name)
        if entry is None or entry.keyframe is not keyframe:
            entry = self._entries[name] = _Entry(keyframe)
        async with entry.lock:  # the first request decodes; the others wait for its result
            cached = entry.renditions.get(width)
            if cached is not None:
                return cached
            jpeg = await trio.to_thread.run_sync(
                partial(render_jpeg, config, keyframe, width), limiter=self._limiter
            )
            self.decodes += 1
            if len(entry.renditions) >= _WIDTHS_PER_STREAM:
                del entry.renditions[next(iter(entry.renditions))]
            entry.renditions[width] = jpeg
            return jpeg
