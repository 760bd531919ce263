"""The FLV file layer: header, tags, an incremental reader, and in-place onMetaData patching.

Theory of operation
-------------------
An FLV file (Adobe FLV spec v10.1 Annex E.2-E.3) is a 9-byte header, then PreviousTagSize0 (always 0), then
tags, each followed by a UI32 PreviousTagSize that repeats its length (11 + body size). A tag header is
TagType (8 audio, 9 video, 18 script data), a UI24 body size, a UI24 timestamp with a UI8 extension holding
bits 24-31, and a UI24 stream id that is always 0. The bodies are the ones `appliance.media.flv` maps.

Reading. `FlvReader.feed` takes bytes as they come and returns the tags completed so far; feeding one byte
at a time returns the same tags as feeding the whole file. Tag bodies are capped (`max_tag_size`). Wrong
PreviousTagSize values are counted in `bad_previous_sizes` rather than rejected: some muxers write them
wrong, and the tag sizes in the headers are what framing relies on.

Patching. The recorder writes onMetaData first, before it knows the segment's duration and size. It writes
`segment_metadata_body` (which holds "duration" and "filesize" as AMF0 numbers, 8 fixed bytes each), and
on close overwrites just those values in place: `metadata_offsets` gives their offsets within the body
(add the tag's file offset + 11), and `patch_metadata` returns the patched body, the same length.

Nothing here does I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.media.flv import FlvError, metadata_body, parse_script

__all__ = [
    "FILE_HEADER",
    "MAX_TAG_SIZE",
    "TAG_AUDIO",
    "TAG_SCRIPT",
    "TAG_VIDEO",
    "FlvReader",
    "FlvTag",
    "flv_header",
    "metadata_offsets",
    "patch_metadata",
    "segment_metadata_body",
    "tag",
]

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
MAX_TAG_SIZE = 16 * 1024 * 1024  # the default cap: the most UI24 DataSize allows, plus one
_TAG_TYPES = frozenset({TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT})
_MAX_BODY = 0xFFFFFF  # DataSize is UI24
_MAX_DATA_OFFSET = 4096  # version 1 headers are 9 bytes; anything this large is not an FLV file
_HEADER_SIZE = 9
_TAG_HEADER_SIZE = 11
# TagType+DataSize as one UI32, Timestamp (low 24 bits) + TimestampExtended as one UI32, StreamID (UI24 0).
_TAG_HEADER = struct.Struct(">IIHB")
_UI32 = struct.Struct(">I")
_NUMBER = struct.Struct(">d")


def flv_header(has_audio: bool = True, has_video: bool = True) -> bytes:
    """Build the FLV file header (FLV spec E.2) followed by PreviousTagSize0.

    Args:
        has_audio: Set TypeFlagsAudio.
        has_video: Set TypeFlagsVideo.

    Returns:
        13 bytes: "FLV", version 1, the flags, DataOffset 9, and four zero bytes.
    """
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


FILE_HEADER = flv_header(has_audio=True, has_video=True)


def tag(tag_type: int, ts_ms: int, body: bytes) -> bytes:
    """Build one FLV tag: its 11-byte header, the body, and the PreviousTagSize after it.

    Args:
        tag_type: 8 (audio), 9 (video) or 18 (script data).
        ts_ms: The timestamp (the decode time for media). FLV holds 32 bits: larger values wrap, as RTMP's do.
        body: The tag body.

    Returns:
        The tag bytes.

    Raises:
        ValueError: `tag_type` is not 8, 9 or 18, or `ts_ms` is negative.
        FlvError: The body is longer than FLV's 24-bit DataSize allows.
    """
    if tag_type not in _TAG_TYPES:
        raise ValueError(f"tag_type={tag_type}: want 8 (audio), 9 (video) or 18 (script data)")
    if ts_ms < 0:
        raise ValueError(f"ts_ms={ts_ms}: must be >= 0")
    size = len(body)
    if size > _MAX_BODY:
        raise FlvError(f"tag body of {size} bytes exceeds FLV's 24-bit DataSize")
    ts = ts_ms & 0xFFFFFFFF
    header = _TAG_HEADER.pack(tag_type << 24 | size, (ts & 0xFFFFFF) << 8 | ts >> 24, 0, 0)
    return b"".join((header, body, _UI32.pack(_TAG_HEADER_SIZE + size)))


@dataclass(frozen=True, slots=True, repr=False)
class FlvTag:
    """One tag read from an FLV stream.

    Attributes:
        tag_type: 8 (audio), 9 (video) or 18 (script data).
        ts_ms: The 32-bit timestamp (TimestampExtended << 24 | Timestamp); unwrapping is the caller's job.
        body: The tag body, for `parse_audio`, `parse_video` or `parse_script`.
    """

    tag_type: int
    ts_ms: int
    body: bytes

    def __repr__(self) -> str:
        return f"FlvTag(tag_type={self.tag_type}, ts_ms={self.ts_ms}, body=<{len(self.body)} bytes>)"


class FlvReader:
    """Incremental sans-IO FLV reader.

    Args:
        max_tag_size: The largest tag body accepted, in bytes.

    Attributes:
        has_audio, has_video: The header's type flags; None until the header has been read.
        bad_previous_sizes: How many PreviousTagSize fields (PreviousTagSize0 included) did not match.
    """

    def __init__(self, *, max_tag_size: int = MAX_TAG_SIZE) -> None:
        if max_tag_size < 1:
            raise ValueError(f"max_tag_size={max_tag_size}: want at least 1 byte")
        self.max_tag_size = max_tag_size
        self.has_audio: bool | None = None
        self.has_video: bool | None = None
        self.bad_previous_sizes = 0
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of _buffer[0], for error messages
        self._header_read = False
        self._eof = False
        self._error: FlvError | None = None

    def feed(self, data: bytes) -> list[FlvTag]:
        """Take the next bytes of the stream; b"" means end of stream.

        Args:
            data: The next bytes, or b"" at the end.

        Returns:
            The tags completed by `data`, in order. At the end, a last tag whose PreviousTagSize was cut off
            is returned too (and counted in `bad_previous_sizes`).

        Raises:
            FlvError: A bad header, an unknown or encrypted tag, a tag over `max_tag_size`, the stream
                ending inside the header or a tag, or data after the end. Tags completed earlier in the
                same call are lost with it; once raised, every later call raises again.
        """
        if self._error is not None:
            raise FlvError(f"FlvReader failed earlier: {self._error}")
        if self._eof:
            if data:
                raise FlvError("data fed after the end of the stream")
            return []
        try:
            if not data:
                self._eof = True
                return self._finish()
            self._buffer += data
            return self._parse()
        except FlvError as exc:
            self._error = exc
            raise

    def _parse(self) -> list[FlvTag]:
        buf = self._buffer
        pos = 0
        if not self._header_read:
            pos = self._parse_header()
            if not pos:
                return []
        tags: list[FlvTag] = []
        end = len(buf)
        while end - pos >= _TAG_HEADER_SIZE:
            size = self._check_tag_header(pos)
            total = _TAG_HEADER_SIZE + size + 4
            if end - pos < total:
                break
            tags.append(self._tag_at(pos, size))
            if _UI32.unpack_from(buf, pos + total - 4)[0] != _TAG_HEADER_SIZE + size:
                self.bad_previous_sizes += 1
            pos += total
        del buf[:pos]
        self._consumed += pos
        return tags

    def _parse_header(self) -> int:
        """Check the file header once enough bytes are in; return the offset of the first tag, or 0."""
        buf = self._buffer
        # Check the signature as early as its bytes arrive, so a wrong stream fails fast.
        if not b"FLV".startswith(bytes(buf[:3])):
            raise FlvError(f"not an FLV stream: starts with {bytes(buf[:3])!r}, not b'FLV'")
        if len(buf) < _HEADER_SIZE:
            return 0
        if buf[3] != 1:
            raise FlvError(f"FLV version {buf[3]}: only version 1 exists")
        data_offset: int = _UI32.unpack_from(buf, 5)[0]
        if not _HEADER_SIZE <= data_offset <= _MAX_DATA_OFFSET:
            raise FlvError(f"FLV DataOffset {data_offset}: want {_HEADER_SIZE} to {_MAX_DATA_OFFSET}")
        if len(buf) < data_offset + 4:
            return 0
        self.has_audio = bool(buf[4] & 0x04)
        self.has_video = bool(buf[4] & 0x01)
        if _UI32.unpack_from(buf, data_offset)[0] != 0:
            self.bad_previous_sizes += 1
        self._header_read = True
        return data_offset + 4

    def _check_tag_header(self, pos: int) -> int:
        """Validate the tag header at `pos`; return its body size."""
        word: int = _UI32.unpack_from(self._buffer, pos)[0]
        first = word >> 24
        size = word & 0xFFFFFF
        where = self._consumed + pos
        if first & 0x20:
            raise FlvError(f"encrypted FLV tag (Filter bit set) at byte {where} is not supported")
        tag_type = first & 0x1F
        if tag_type not in _TAG_TYPES:
            raise FlvError(f"unknown FLV tag type {tag_type} at byte {where}")
        if size > self.max_tag_size:
            raise FlvError(
                f"FLV tag of {size} bytes at byte {where} exceeds the {self.max_tag_size}-byte cap"
            )
        return size

    def _tag_at(self, pos: int, size: int) -> FlvTag:
        buf = self._buffer
        ts = buf[pos + 7] << 24 | buf[pos + 4] << 16 | buf[pos + 5] << 8 | buf[pos + 6]
        start = pos + _TAG_HEADER_SIZE
        return FlvTag(buf[pos] & 0x1F, ts, bytes(buf[start : start + size]))

    def _finish(self) -> list[FlvTag]:
        buf = self._buffer
        if not self._header_read:
            raise FlvError(f"stream ended inside the FLV header ({len(buf)} bytes)")
        if not buf:
            return []
        if len(buf) >= _TAG_HEADER_SIZE:
            size = self._check_tag_header(0)
            if len(buf) >= _TAG_HEADER_SIZE + size:
                # Only (part of) the last PreviousTagSize is missing: a recorder stopped mid-write.
                self.bad_previous_sizes += 1
                last = self._tag_at(0, size)
                del buf[:]
                return [last]
        raise FlvError(f"stream ended inside a tag: {len(buf)} bytes at byte {self._consumed} left over")


def segment_metadata_body(metadata: Mapping[str, object]) -> bytes:
    """Build an onMetaData body for the start of a recorded segment, ready for `patch_metadata`.

    "duration" and "filesize" come first, as the AMF0 number 0.0 (placeholders, whatever `metadata` says);
    the other properties follow unchanged.

    Args:
        metadata: The stream's metadata.

    Returns:
        The body.

    Raises:
        FlvError: A value has no AMF0 encoding.
    """
    items: dict[str, object] = {"duration": 0.0, "filesize": 0.0}
    items.update((k, v) for k, v in metadata.items() if k not in items)
    return metadata_body(items)


def metadata_offsets(body: bytes) -> dict[str, int]:
    """Find the 8-byte AMF0 number values of "duration" and "filesize" in an onMetaData body.

    Args:
        body: An onMetaData script body (as `segment_metadata_body` builds, or as read from a file).

    Returns:
        {"duration": offset, "filesize": offset}: byte offsets of the big-endian doubles within `body`.

    Raises:
        FlvError: `body` is not onMetaData with a mapping, or one of the two is missing or not a number.
    """
    name, args = parse_script(body)
    if name != "onMetaData" or not args or not isinstance(args[0], Mapping):
        raise FlvError(f"script body is {name!r}, not onMetaData with a properties mapping")
    offsets: dict[str, int] = {}
    for key in ("duration", "filesize"):
        if not isinstance(args[0].get(key), float):
            raise FlvError(f"onMetaData has no numeric {key!r}")
        # An AMF0 property is a UI16-length UTF-8 name, then the value; a number is marker 0x00 + 8 bytes.
        marker = len(key).to_bytes(2, "big") + key.encode() + b"\x00"
        start = body.find(marker)
        while start >= 0 and not _is_value_at(body, start + len(marker), key):
            start = body.find(marker, start + 1)
        if start < 0:
            raise FlvError(f"onMetaData {key!r} is not a top-level property")
        offsets[key] = start + len(marker)
    return offsets


def _is_value_at(body: bytes, offset: int, key: str) -> bool:
    # The marker bytes could also occur inside a string or a nested object. Writing two sentinels whose bytes
    # differ at every position and decoding again proves that these 8 bytes, and only they, are the value.
    # (The original decoded, so a number found at `offset` after patching has its 8 bytes in the body.)
    for sentinel in (b"\x11" * 8, b"\x22" * 8):
        try:
            _, args = parse_script(body[:offset] + sentinel + body[offset + 8 :])
        except FlvError:
            return False
        value = args[0].get(key) if args and isinstance(args[0], Mapping) else None
        if value != _NUMBER.unpack(sentinel)[0]:
            return False
    return True


def patch_metadata(body: bytes, *, duration_s: float, filesize: int) -> bytes:
    """Return `body` with its "duration" and "filesize" numbers set; the length does not change.

    Args:
        body: An onMetaData body holding both as numbers (see `segment_metadata_body`).
        duration_s: The segment's duration in seconds, >= 0.
        filesize: The file's size in bytes, >= 0.

    Returns:
        The patched body.

    Raises:
        ValueError: A value is negative or not finite.
        FlvError: As for `metadata_offsets`.
    """
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s={duration_s!r}: want a finite number >= 0")
    if filesize < 0:
        raise ValueError(f"filesize={filesize}: must be >= 0")
    offsets = metadata_offsets(body)
    patched = bytearray(body)
    _NUMBER.pack_into(patched, offsets["duration"], float(duration_s))
    _NUMBER.pack_into(patched, offsets["filesize"], float(filesize))
    return bytes(patched)
