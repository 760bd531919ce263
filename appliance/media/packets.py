"""The canonical media types every subsystem speaks: Packet, CodecConfig, Metadata.

Theory of operation
-------------------
One packet type crosses the whole appliance (DESIGN.md section 4). Ingress edges (RTMP, WHIP, capture)
translate their wire forms into it; egress edges (RTMP push, WebRTC, MoQ, the recorder) translate out of it.
So the type fixes the forms the edges agree on:

- Timestamps are integer milliseconds, RTMP's and FLV's unit. The 32-bit RTMP wrap is undone at the
  protocol edge, so here they are plain non-negative ints that can exceed 2**32.
- H.264 and HEVC payloads are length-prefixed ("AVCC"/"HVCC" form, ISO/IEC 14496-15) with 4-byte big-endian
  NAL unit lengths, the form FLV and MP4 carry. Edges that receive 1- or 2-byte lengths re-prefix them.
  Encoders hand out Annex-B; `avcc_from_annexb` converts that once at the capture edge.
- WebRTC and MoQ want Annex-B. `Packet.annexb()` converts once per packet and caches the result on the
  packet, so a hundred viewers cost one conversion, not a hundred.
- AAC payloads are raw access units; the AudioSpecificConfig travels as a `CodecConfig`. Codecs with no
  out-of-band configuration (MP3) still get a `CodecConfig` with empty `data`: the config is how a stream
  announces its codec, and the Bus delivers it before the first packet.

Nothing here imports trio or does I/O: the module is pure and safe to use from worker threads, except that
a packet's Annex-B cache is filled without a lock (two threads racing both convert; the result is equal).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "Codec",
    "CodecConfig",
    "Kind",
    "Metadata",
    "Packet",
    "annexb_from_avcc",
    "avcc_from_annexb",
    "avcc_with_4byte_lengths",
    "iter_avcc",
]

_START_CODE = b"\x00\x00\x00\x01"
_SHORT_START_CODE = b"\x00\x00\x01"


class Kind(enum.Enum):
    """What a packet or config carries."""

    VIDEO = "video"
    AUDIO = "audio"
    DATA = "data"


class Codec(enum.Enum):
    """The codecs the appliance moves without transcoding."""

    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"
    VP9 = "vp9"
    AAC = "aac"
    OPUS = "opus"
    MP3 = "mp3"
    # Timed FLV script data (onCuePoint, onTextData, captions) as AMF0 bytes. onMetaData is not a packet:
    # it travels as `Metadata`.
    AMF0 = "amf0"

    @property
    def kind(self) -> Kind:
        """The kind of media this codec encodes."""
        return _CODEC_KINDS[self]

    @property
    def nal_based(self) -> bool:
        """True for codecs whose payloads are length-prefixed NAL units (H.264, HEVC)."""
        return self in (Codec.H264, Codec.HEVC)


_CODEC_KINDS: dict[Codec, Kind] = {
    Codec.H264: Kind.VIDEO,
    Codec.HEVC: Kind.VIDEO,
    Codec.AV1: Kind.VIDEO,
    Codec.VP9: Kind.VIDEO,
    Codec.AAC: Kind.AUDIO,
    Codec.OPUS: Kind.AUDIO,
    Codec.MP3: Kind.AUDIO,
    Codec.AMF0: Kind.DATA,
}


def _check_kind(owner: str, kind: object, codec: object) -> None:
    if not isinstance(kind, Kind):
        raise TypeError(f"{owner}.kind={kind!r}: want a Kind")
    if not isinstance(codec, Codec):
        raise TypeError(f"{owner}.codec={codec!r}: want a Codec")
    if codec.kind is not kind:
        raise ValueError(f"{owner}.codec={codec.name} is {codec.kind.name}, not {kind.name}")


def _check_ms(owner: str, name: str, value: object) -> None:
    # bool is an int subclass; a flag passed as a timestamp is a bug, not 0 or 1 ms.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{owner}.{name}={value!r}: want int milliseconds")
    if value < 0:
        raise ValueError(f"{owner}.{name}={value}: must be >= 0 (unwrap RTMP timestamps at the edge)")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Packet:
    """One coded frame (video), access unit (audio) or timed data message.

    Attributes:
        kind: VIDEO, AUDIO or DATA; must match `codec.kind`.
        codec: The codec of `payload`.
        payload: H.264/HEVC: NAL units with 4-byte big-endian lengths; AAC: one raw access unit; other
            codecs: one frame as FLV carries it.
        pts_ms: Presentation time in ms, >= 0. It may be below `dts_ms`: FLV's composition offset is signed.
        dts_ms: Decode time in ms, >= 0.
        keyframe: For video, a random access point (IDR/IRAP). Audio and data packets decode on their own;
            the Bus treats every one of them as a sync point whatever this flag says.

    Raises:
        TypeError: A field has the wrong type (payload must be `bytes`, so a packet can be shared by all
            subscribers without copies and without anyone mutating it).
        ValueError: `codec` is not of `kind`, or a timestamp is negative.
    """

    kind: Kind
    codec: Codec
    payload: bytes
    pts_ms: int
    dts_ms: int
    keyframe: bool
    # Filled by annexb() on first use. Not part of equality or repr: it is derived from payload.
    _annexb: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_kind("Packet", self.kind, self.codec)
        if type(self.payload) is not bytes:
            raise TypeError(f"Packet.payload: want bytes, got {type(self.payload).__name__}")
        _check_ms("Packet", "pts_ms", self.pts_ms)
        _check_ms("Packet", "dts_ms", self.dts_ms)
        if not isinstance(self.keyframe, bool):
            raise TypeError(f"Packet.keyframe={self.keyframe!r}: want bool")

    def __repr__(self) -> str:
        # Payloads run to hundreds of kilobytes; a repr is for logs and test failures.
        return (
            f"Packet(kind={self.kind.name}, codec={self.codec.name}, pts_ms={self.pts_ms}, "
            f"dts_ms={self.dts_ms}, keyframe={self.keyframe}, payload=<{len(self.payload)} bytes>)"
        )

    def annexb(self) -> bytes:
        """Return the payload in Annex-B form (each NAL unit after a 00 00 00 01 start code).

        The conversion runs once; later calls return the same bytes object.

        Returns:
            The Annex-B byte stream; empty for an empty payload.

        Raises:
            ValueError: The codec is not NAL based, or the payload's length prefixes are malformed
                (truncated, zero, or running past the end). Nothing is cached then.
        """
        cached = self._annexb
        if cached is None:
            self._require_nal("annexb")
            cached = annexb_from_avcc(self.payload)
            # frozen=True forbids normal assignment; the cache is derived state, not a field change.
            object.__setattr__(self, "_annexb", cached)
        return cached

    def nal_units(self) -> Iterator[bytes]:
        """Iterate over the payload's NAL units, without their length prefixes.

        Returns:
            An iterator of NAL units (header byte(s) first).

        Raises:
            ValueError: The codec is not NAL based (at once), or a length prefix is malformed (when the
                iterator reaches it).
        """
        self._require_nal("nal_units")
        return iter_avcc(self.payload)

    def with_timestamps(self, *, pts_ms: int, dts_ms: int) -> Packet:
        """Return a copy of this packet at other timestamps, keeping the Annex-B cache.

        Args:
            pts_ms: The new presentation time.
            dts_ms: The new decode time.

        Returns:
            The retimed packet (the same object when nothing changes).

        Raises:
            TypeError, ValueError: As for the constructor.
        """
        if pts_ms == self.pts_ms and dts_ms == self.dts_ms:
            return self
        retimed = Packet(
            kind=self.kind,
            codec=self.codec,
            payload=self.payload,
            pts_ms=pts_ms,
            dts_ms=dts_ms,
            keyframe=self.keyframe,
        )
        object.__setattr__(retimed, "_annexb", self._annexb)
        return retimed

    def _require_nal(self, what: str) -> None:
        if not self.codec.nal_based:
            raise ValueError(f"Packet.{what}(): {self.codec.name} payloads are not NAL units")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CodecConfig:
    """A stream's out-of-band decoder configuration for one kind.

    Attributes:
        kind: VIDEO, AUDIO or DATA; must match `codec.kind`.
        codec: The codec the following packets of this kind use.
        data: The configuration record as FLV/MP4 carry it: AVCDecoderConfigurationRecord (ISO/IEC 14496-15
            5.3.3.1), HEVCDecoderConfigurationRecord (8.3.3.1), AV1CodecConfigurationRecord, AAC
            AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), OpusHead; empty for codecs without one (MP3).
        width, height, fps, profile, level, sample_rate, channels: Parsed facts, None until a parser (or the
            producer, which often knows them) fills them in.

    Raises:
        TypeError: `data` is not bytes, or kind/codec are not enums.
        ValueError: `codec` is not of `kind`, or a numeric fact is not positive.
    """

    kind: Kind
    codec: Codec
    data: bytes
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    profile: str | None = None
    level: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        _check_kind("CodecConfig", self.kind, self.codec)
        if type(self.data) is not bytes:
            raise TypeError(f"CodecConfig.data: want bytes, got {type(self.data).__name__}")
        for name in ("width", "height", "fps", "sample_rate", "channels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"CodecConfig.{name}={value!r}: want a positive number or None")

    def __repr__(self) -> str:
        facts = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("width", "height", "fps", "profile", "level", "sample_rate", "channels")
            if getattr(self, name) is not None
        )
        head = f"CodecConfig(kind={self.kind.name}, codec={self.codec.name}"
        return f"{head}, data=<{len(self.data)} bytes>{facts})"


class Metadata(Mapping[str, object]):
    """An immutable onMetaData mapping (string keys, AMF0-like values).

    Nested mappings become `Metadata` and lists become tuples, so a Metadata can be shared by every
    subscriber without anyone changing it under the others. Equality is mapping equality, so
    `Metadata({"width": 1280}) == {"width": 1280}`.

    Args:
        items: A mapping, or an iterable of (key, value) pairs.

    Raises:
        TypeError: A key is not a str.
    """

    __slots__ = ("_items",)

    _items: Mapping[str, object]

    def __init__(self, items: Mapping[str, object] | Iterable[tuple[str, object]] = (), /) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        frozen: dict[str, object] = {}
        for key, value in pairs:
            if not isinstance(key, str):
                raise TypeError(f"Metadata key {key!r}: want str")
            frozen[key] = _freeze(value)
        self._items = MappingProxyType(frozen)

    def __getitem__(self, key: str) -> object:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Metadata({dict(self._items)!r})"


def _freeze(value: object) -> object:
    if isinstance(value, Metadata):
        return value
    if isinstance(value, Mapping):
        return Metadata(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def iter_avcc(data: bytes, *, length_size: int = 4) -> Iterator[bytes]:
    """Iterate over the NAL units of a length-prefixed (AVCC/HVCC) buffer.

    Args:
        data: The buffer.
        length_size: Bytes per length prefix (lengthSizeMinusOne + 1 in the decoder configuration record):
            1, 2 or 4.

    Returns:
        An iterator of NAL units without prefixes.

    Raises:
        ValueError: On a bad `length_size`, or (when the iterator reaches it) a prefix that is truncated,
            zero, or longer than the bytes left.
    """
    if length_size not in (1, 2, 4):
        raise ValueError(f"length_size={length_size}: want 1, 2 or 4 (ISO/IEC 14496-15 5.3.3.1.2)")
    return (bytes(nal) for nal in _split_avcc(data, length_size))


def _split_avcc(data: bytes, length_size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    end = len(data)
    pos = 0
    while pos < end:
        if end - pos < length_size:
            raise ValueError(
                f"truncated NAL length at offset {pos}: {end - pos} bytes left, need {length_size}"
            )
        size = int.from_bytes(view[pos : pos + length_size], "big")
        if size == 0:
            # A NAL unit has at least its header byte; a zero length means the framing is off.
            raise ValueError(f"zero NAL length at offset {pos}")
        left = end - pos - length_size
        if size > left:
            raise ValueError(f"NAL length {size} at offset {pos} overruns the payload ({left} bytes left)")
        pos += length_size
        yield view[pos : pos + size]
        pos += size


def avcc_with_4byte_lengths(data: bytes, length_size: int) -> bytes:
    """Re-prefix a length-prefixed buffer with the 4-byte lengths `Packet` payloads use.

    Args:
        data: NAL units with `length_size`-byte big-endian lengths.
        length_size: 1, 2 or 4 (4: `data` is returned as is).

    Returns:
        The buffer with 4-byte lengths.

    Raises:
        ValueError: As for `iter_avcc`.
    """
    if length_size == 4:
        return data
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in _split_avcc(data, length_size))


def annexb_from_avcc(data: bytes, *, length_size: int = 4) -> bytes:
    """Convert a length-prefixed buffer to Annex-B with 4-byte start codes.

    Args:
        data: NAL units with big-endian length prefixes.
        length_size: Bytes per prefix: 1, 2 or 4.

    Returns:
        The Annex-B byte stream; empty for empty input.

    Raises:
        ValueError: As for `iter_avcc`; the whole buffer is checked before anything is returned.
    """
    if length_size not in (1, 2, 4):
        raise ValueError(f"length_size={length_size}: want 1, 2 or 4 (ISO/IEC 14496-15 5.3.3.1.2)")
    parts: list[bytes | memoryview] = []
    for nal in _split_avcc(data, length_size):
        parts.append(_START_CODE)
        parts.append(nal)
    return b"".join(parts)


def avcc_from_annexb(data: bytes) -> bytes:
    """Convert an Annex-B byte stream (3- or 4-byte start codes) to 4-byte length-prefixed NAL units.

    Zero bytes before the first start code and after each NAL unit are dropped: ITU-T H.264 7.4.2 (and
    H.265 7.4.2.4) guarantee a NAL unit never ends in 0x00, so trailing zeros belong to the byte stream
    (trailing_zero_8bits, or the leading zero of a 4-byte start code). Empty NAL units are skipped.

    Args:
        data: The Annex-B byte stream.

    Returns:
        The AVCC form; empty if `data` holds no NAL unit.

    Raises:
        ValueError: Non-zero bytes come before the first start code, or there is data but no start code.
    """
    first = data.find(_SHORT_START_CODE)
    if first < 0:
        if data.count(0) == len(data):
            return b""
        raise ValueError(f"no Annex-B start code in {len(data)} bytes")
    if data.count(0, 0, first) != first:
        raise ValueError(f"{first} bytes before the first Annex-B start code are not all zero")
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    start = first + len(_SHORT_START_CODE)
    while True:
        following = data.find(_SHORT_START_CODE, start)
        stop = len(data) if following < 0 else following
        while stop > start and data[stop - 1] == 0:
            stop -= 1
        if stop > start:
            parts.append((stop - start).to_bytes(4, "big"))
            parts.append(view[start:stop])
        if following < 0:
            return b"".join(parts)
        start = following + len(_SHORT_START_CODE)
