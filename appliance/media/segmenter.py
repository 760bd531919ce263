"""The recorder's core: Bus events in, FLV segment events out. Pure: no trio, no I/O, no clock.

Theory of operation
-------------------
A `Segmenter` reads one Bus subscription's events (see `appliance.bus`) and says what the files should
hold, as three events the driver (`appliance.media.recorder`) turns into file operations:

- `SegmentStarted`: open a new file and write `head` (FLV header, onMetaData with "duration" and "filesize"
  placeholders, then the sequence headers in force, so every segment decodes on its own);
- `TagsReady`: append these tags;
- `SegmentEnded`: patch onMetaData with `duration_s` and the file size, and close.

Segments start at a sync point: a video keyframe when the stream has video (a video config is in force),
else any audio packet. Each segment's tag timestamps start at 0 (the segment's first dts is subtracted;
packets a few ms before it, audio interleaved around a keyframe, are clamped to 0), so players show
0..duration. Composition offsets are kept: `flv.video_body` writes pts - dts.

Cuts. With video, a segment ends at the first keyframe whose dts is `segment_ms` or more after the
segment's first dts, and the next one starts at that keyframe; without video, at the first audio packet
past `segment_ms`. A segment also ends when the producer leaves or joins (the next one starts at the new
producer's first sync point) and when a config changes (a new sequence header, or video appearing in an
audio-only stream): a segment holds one set of sequence headers, the ones in its head.

Duration. A segment lasts from its first dts to the end of its last frame: for each media kind, the last
timestamp plus the interval between its last two packets (a frame's duration is not in FLV). `Span`
computes it, for the writer and for the recovery of a file cut short alike.

`pause()` (the driver could not write) forgets the open segment without an end; `resume()` starts again at
the next sync point.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.media import flv
from appliance.media.bus_events import (
    BusEvent,
    ConfigChanged,
    MetadataChanged,
    PacketReceived,
    PacketsDropped,
    ProducerJoined,
    ProducerLeft,
)
from appliance.media.flv_file import (
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    flv_header,
    segment_metadata_body,
    tag,
)
from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet

__all__ = [
    "METADATA_AT",
    "SegmentEnded",
    "SegmentEvent",
    "SegmentStarted",
    "Segmenter",
    "Span",
    "TagsReady",
]

# The onMetaData body starts after the 13-byte file header (+ PreviousTagSize0) and its 11-byte tag header.
METADATA_AT = 13 + 11


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentEvent:
    """Base of the Segmenter's events."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SegmentStarted(SegmentEvent):
    """A segment starts: write `head` to a new file.

    Attributes:
        head: FLV header, onMetaData tag, sequence header tags.
        metadata_body: The onMetaData body, at file offset `METADATA_AT`, for `flv_file.patch_metadata`.
        first_dts_ms: The Bus dts the segment's timestamps count from.
    """

    head: bytes
    metadata_body: bytes
    first_dts_ms: int

    def __repr__(self) -> str:
        return f"SegmentStarted(first_dts_ms={self.first_dts_ms}, head=<{len(self.head)} bytes>)"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class TagsReady(SegmentEvent):
    """Append `data` (whole tags) to the open segment, which then lasts `end_ms`."""

    data: bytes
    end_ms: int

    def __repr__(self) -> str:
        return f"TagsReady(end_ms={self.end_ms}, data=<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentEnded(SegmentEvent):
    """Close the open segment: it lasts `duration_s`. `reason`: duration, producer, config, stopped."""

    duration_s: float
    reason: str


class Span:
    """A segment's length from its tag timestamps: last timestamp plus last frame interval, per kind."""

    def __init__(self) -> None:
        self._last: dict[Kind, int] = {}
        self._step: dict[Kind, int] = {}
        self.end_ms = 0
        self.media_tags = 0

    def add(self, kind: Kind, ts_ms: int) -> None:
        """Count a tag of `kind` at segment-relative `ts_ms`."""
        if kind is not Kind.DATA:
            self.media_tags += 1
            last = self._last.get(kind)
            if last is not None and ts_ms > last:
                self._step[kind] = ts_ms - last
            self._last[kind] = ts_ms if last is None else max(last, ts_ms)
            ts_ms += self._step.get(kind, 0)
        self.end_ms = max(self.end_ms, ts_ms)

    @property
    def duration_s(self) -> float:
        return self.end_ms / 1000


class Segmenter:
    """Turns a Bus subscription's events into segment events; see the module docstring.

    Args:
        segment_ms: A segment is cut at the first sync point this long after its start; positive.

    Attributes:
        configs: The configs in force, by kind.
        metadata: The stream's metadata, or None.
        skipped: Packets not recorded: waiting for a sync point, paused, or not expressible in FLV.
        dropped: Packets the Bus dropped for this subscriber.
    """

    def __init__(self, *, segment_ms: int) -> None:
        if segment_ms <= 0:
            raise ValueError(f"segment_ms={segment_ms}: must be > 0")
        self.segment_ms = segment_ms
        self.configs: dict[Kind, CodecConfig] = {}
        self.metadata: Metadata | None = None
        self.skipped = 0
        self.dropped = 0
        self._paused = False
        self._open = False
        self._segment_configs: dict[Kind, CodecConfig] = {}
        self._first_dts = 0
        self._span = Span()

    @property
    def open(self) -> bool:
        """Whether a segment is open."""
        return self._open

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def duration_s(self) -> float:
        """The open segment's length so far (0 when none is open)."""
        return self._span.duration_s if self._open else 0.0

    def receive(self, event: BusEvent) -> list[SegmentEvent]:
        """Take the next Bus event.

        Args:
            event: The event, as the subscription delivered it.

        Returns:
            What to do with the files, in order.
        """
        if isinstance(event, PacketReceived):
            return self._packet(event.packet)
        if isinstance(event, ConfigChanged):
            config = event.config
            self.configs[config.kind] = config
            if self._open and self._segment_configs.get(config.kind) != config:
                return self.end("config")
            return []
        if isinstance(event, MetadataChanged):
            self.metadata = event.metadata  # takes effect at the next segment: onMetaData is in the head
            return []
        if isinstance(event, ProducerJoined | ProducerLeft):
            # A new producer announces its own configs (the Bus delivers them after ProducerJoined); the old
            # ones must not make an audio-only successor wait for a video keyframe.
            out = self.end("producer")
            self.configs.clear()
            self.metadata = None
            return out
        if isinstance(event, PacketsDropped):
            # The next packet is a sync point: the segment goes on, with a gap.
            self.dropped += event.count
        return []

    def end(self, reason: str) -> list[SegmentEvent]:
        """End the open segment now (nothing if none is open).

        Args:
            reason: For the log: duration, producer, config, stopped.

        Returns:
            `[SegmentEnded]`, or `[]`.
        """
        if not self._open:
            return []
        self._open = False
        return [SegmentEnded(duration_s=self._span.duration_s, reason=reason)]

    def pause(self) -> None:
        """Forget the open segment (the driver closed or lost its file); record nothing until `resume()`."""
        self._open = False
        self._paused = True

    def resume(self) -> None:
        """Record again from the next sync point."""
        self._paused = False

    def _packet(self, packet: Packet) -> list[SegmentEvent]:
        if self._paused:
            self.skipped += 1
            return []
        if Kind.VIDEO in self.configs:
            sync = packet.kind is Kind.VIDEO and packet.keyframe
        else:
            sync = packet.kind is Kind.AUDIO  # an audio-only stream: every audio packet decodes on its own
        out: list[SegmentEvent] = []
        if self._open and sync and packet.dts_ms - self._first_dts >= self.segment_ms:
            out += self.end("duration")
        if not self._open:
            if not sync:
                self.skipped += 1
                return out
            out.append(self._start(packet.dts_ms))
        ts = max(0, packet.dts_ms - self._first_dts)
        try:
            data = self._tag(packet, ts)
        except flv.FlvError:
            self.skipped += 1
            return out
        self._span.add(packet.kind, ts)
        out.append(TagsReady(data=data, end_ms=self._span.end_ms))
        return out

    def _start(self, dts_ms: int) -> SegmentStarted:
        self._open = True
        self._first_dts = dts_ms
        self._segment_configs = dict(self.configs)
        self._span = Span()
        try:
            body = segment_metadata_body(self.metadata or {})
        except flv.FlvError:
            body = segment_metadata_body({})  # a value AMF0 cannot hold: keep the placeholders at least
        parts = [
            flv_header(has_audio=Kind.AUDIO in self.configs, has_video=Kind.VIDEO in self.configs),
            tag(TAG_SCRIPT, 0, body),
        ]
        video = self.configs.get(Kind.VIDEO)
        if video is not None:
            parts.append(tag(TAG_VIDEO, 0, flv.video_config_body(video)))
        audio = self.configs.get(Kind.AUDIO)
        if audio is not None and audio.codec is not Codec.MP3:  # MP3 has no sequence header
            parts.append(tag(TAG_AUDIO, 0, flv.audio_config_body(audio)))
        return SegmentStarted(head=b"".join(parts), metadata_body=body, first_dts_ms=dts_ms)

    def _tag(self, packet: Packet, ts: int) -> bytes:
        if packet.kind is Kind.VIDEO:
            return tag(TAG_VIDEO, ts, flv.video_body(packet))
        if packet.kind is Kind.AUDIO:
            return tag(TAG_AUDIO, ts, flv.audio_body(packet, self.configs.get(Kind.AUDIO)))
        return tag(TAG_SCRIPT, ts, packet.payload)
