"""Recordings for browsers: FLV segments remuxed to fragmented MP4 with PyAV, and their durations.

Browsers do not play FLV. The recorder's segments carry H.264 (or HEVC) and AAC that MP4 holds as they
are, so `remux_to_fmp4` only rewraps the packets (no decode, no encode: a 2-core board remuxes far faster
than real time). The MP4 is fragmented (``frag_keyframe+empty_moov+default_base_moof``): an empty ``moov``
first, then one ``moof``/``mdat`` per GOP, so it is written front to back without seeking and a ``<video>``
element plays it while it downloads. Memory stays bounded by one fragment (one GOP) plus ``chunk_bytes``.

Everything here blocks (file I/O, FFmpeg): the web handlers run it in worker threads.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import av

from appliance.media.flv import FlvError
from appliance.media.flv_file import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvReader
from appliance.media.recording_files import read_duration

__all__ = [
    "FMP4_MOVFLAGS",
    "RemuxError",
    "flv_duration_s",
    "last_tag_timestamp_ms",
    "probe_flv",
    "remux_to_fmp4",
]

FMP4_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
_CHUNK_BYTES = 256 * 1024
_HEAD_BYTES = 64 * 1024
_TAG_HEADER = 11


class RemuxError(Exception):
    """The file is not an FLV with audio or video PyAV can read."""


def last_tag_timestamp_ms(path: Path) -> int | None:
    """The timestamp of the file's last FLV tag, read through the trailing PreviousTagSize.

    Returns:
        Milliseconds, or None if the file does not end in a whole, consistent tag.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 13 + _TAG_HEADER + 4:
                return None
            f.seek(size - 4)
            previous = int.from_bytes(f.read(4), "big")
            start = size - 4 - previous
            if previous < _TAG_HEADER or start < 13:
                return None
            f.seek(start)
            header = f.read(_TAG_HEADER)
    except OSError:
        return None
    data_size = int.from_bytes(header[1:4], "big")
    if header[0] & 0x1F not in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT) or data_size + _TAG_HEADER != previous:
        return None
    return int.from_bytes(header[4:7], "big") | header[7] << 24


def _first_media_timestamp_ms(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return None
    try:
        tags = FlvReader().feed(head)
    except FlvError:
        return None
    return next((t.ts_ms for t in tags if t.tag_type in (TAG_AUDIO, TAG_VIDEO)), None)


def flv_duration_s(path: Path) -> float | None:
    """A recording's duration: its onMetaData ``duration``, else its last tag's time minus its first.

    Returns:
        Seconds, or None if neither can be read.
    """
    duration = read_duration(path)
    if duration is not None and duration > 0:
        return duration
    last = last_tag_timestamp_ms(path)
    first = _first_media_timestamp_ms(path)
    if last is None or first is None or last < first:
        return None
    return (last - first) / 1000.0


def probe_flv(path: Path) -> dict[str, str]:
    """Open ``path`` as FLV and name its codecs, before any byte of a response is sent.

    Returns:
        ``{"video": "h264", "audio": "aac"}`` (the kinds present).

    Raises:
        RemuxError: Not readable as FLV, or no audio nor video.
    """
    try:
        with av.open(str(path), format="flv") as container:
            codecs: dict[str, str] = {
                s.type: s.codec_context.name for s in container.streams if s.type in ("video", "audio")
            }
    except (av.error.FFmpegError, OSError) as e:
        raise RemuxError(f"{path.name}: not a readable FLV: {e}") from None
    if not codecs:
        raise RemuxError(f"{path.name}: no audio or video")
    return codecs


class _Buffer(io.RawIOBase):
    """The muxer's output: collected here and handed on between packets, never from inside FFmpeg."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.data += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


def remux_to_fmp4(
    path: Path,
    write: Callable[[bytes], None],
    *,
    chunk_bytes: int = _CHUNK_BYTES,
    options: Mapping[str, str] | None = None,
) -> int:
    """Rewrap the FLV at ``path`` as fragmented MP4, handing the output to ``write`` as it is made.

    Args:
        path: The FLV file.
        write: Called with each chunk, in order (at least ``chunk_bytes`` each except the last, at most
            about one fragment more). It may raise to stop the remux (a client that went away); that
            exception propagates.
        chunk_bytes: How much output to gather before calling ``write``.
        options: Extra MP4 muxer options.

    Returns:
        Bytes written.

    Raises:
        RemuxError: The FLV cannot be read or holds no audio or video.
    """
    sink = _Buffer()
    written = 0
    try:
        source = av.open(str(path), format="flv")
    except (av.error.FFmpegError, OSError) as e:
        raise RemuxError(f"{path.name}: not a readable FLV: {e}") from None
    with source:
        muxer_options = {"movflags": FMP4_MOVFLAGS, **(options or {})}
        with av.open(sink, "w", format="mp4", options=muxer_options) as out:
            streams = {}
            for s in source.streams:
                if s.type in ("video", "audio"):
                    streams[s.index] = out.add_stream_from_template(s)
            if not streams:
                raise RemuxError(f"{path.name}: no audio or video")
            try:
                for packet in source.demux([source.streams[i] for i in streams]):
                    if packet.dts is None or packet.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
                    if len(sink.data) >= chunk_bytes:
                        chunk = sink.take()
                        write(chunk)
                        written += len(chunk)
            except av.error.FFmpegError as e:
                # A truncated or damaged tail (a segment a power cut cut short): keep what remuxed.
                if not written and not sink.data:
                    raise RemuxError(f"{path.name}: {e}") from None
        # Closing the muxer wrote the last fragment.
        chunk = sink.take()
        if chunk:
            write(chunk)
            written += len(chunk)
    return written
