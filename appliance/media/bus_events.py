"""The Bus's vocabulary: the events a subscriber receives, the errors, stats and snapshots, name checks.

Pure data: no trio, no I/O. `appliance.bus` re-exports every public name here; its module docstring is the
theory of operation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.media.packets import Codec, CodecConfig, Metadata, Packet

__all__ = [
    "BusBusyError",
    "BusError",
    "BusEvent",
    "BusSnapshot",
    "ConfigChanged",
    "DepartedStats",
    "MetadataChanged",
    "PacketReceived",
    "PacketsDropped",
    "ProducerClosedError",
    "ProducerEvictedError",
    "ProducerJoined",
    "ProducerLeft",
    "SubscriberCutOffError",
    "SubscriberStats",
    "TimestampError",
    "subscriber_group",
    "validate_bus_name",
]

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_NAME = 255


class BusError(Exception):
    """Base of the Bus's errors."""


class BusBusyError(BusError):
    """`publish(replace=False)` found a live producer."""


class ProducerClosedError(BusError):
    """A producer was used after `close()`."""


class ProducerEvictedError(ProducerClosedError):
    """A producer was used after a newer one replaced it (or its Bus was closed)."""


class TimestampError(BusError, ValueError):
    """A packet's dts stepped back by more than `MAX_BACKSTEP_MS`; the packet was refused."""


class SubscriberCutOffError(BusError):
    """A subscriber fell too far behind and was detached.

    Attributes:
        lag_ms: Its lag when it was cut off.
    """

    def __init__(self, message: str, *, lag_ms: int) -> None:
        super().__init__(message)
        self.lag_ms = lag_ms


def validate_bus_name(name: str) -> str:
    """Check a stream name is `app/key`: two non-empty segments of [A-Za-z0-9._-], neither all dots.

    Dot-only segments are refused because names become paths (the recorder's directories).

    Args:
        name: The candidate name.

    Returns:
        `name` unchanged.

    Raises:
        ValueError: The name is malformed; the message names it.
    """
    parts = name.split("/")
    if (
        len(name) > _MAX_NAME
        or len(parts) != 2
        or not all(_SEGMENT.fullmatch(part) and part.strip(".") for part in parts)
    ):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ValueError(f"bus name {shown!r}: want app/key, segments of [A-Za-z0-9._-] not all dots")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class BusEvent:
    """Base of the events a subscriber receives."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerJoined(BusEvent):
    """A producer claimed the Bus; media restarts at a sync point after this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerLeft(BusEvent):
    """The producer closed (`evicted=False`) or was replaced or shut down (`evicted=True`)."""

    evicted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigChanged(BusEvent):
    """The codec config for `config.kind`; it applies to every later packet of that kind."""

    config: CodecConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class MetadataChanged(BusEvent):
    """New stream metadata (onMetaData)."""

    metadata: Metadata


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketReceived(BusEvent):
    """A media packet, with timestamps on the Bus's timeline."""

    packet: Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketsDropped(BusEvent):
    """`count` packets were discarded for this subscriber; the next packet is a sync point."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"PacketsDropped.count={self.count}: must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberStats:
    """A subscriber's counters at one moment.

    Attributes:
        name: The name given to `subscribe()`, for logs and the status page.
        delivered: Packets handed to the consumer by `receive()`.
        bytes_delivered: Their payload bytes.
        dropped: Packets discarded by drop-to-keyframe.
        lag_ms: Newest dts on the Bus minus the oldest undelivered (or lost) packet's dts.
        queued: Events waiting in the queue.
        max_queue: The queue's bound.
        max_lag_ms: The lag at which it is cut off.
        dropping: True while it waits for a sync point after a drop.
        cut_off: True once it has been cut off.
    """

    name: str
    delivered: int
    bytes_delivered: int
    dropped: int
    lag_ms: int
    queued: int
    max_queue: int
    max_lag_ms: int
    dropping: bool
    cut_off: bool


def subscriber_group(name: str) -> str:
    """The group a subscriber's counters are kept under once it leaves: its name up to the first ``:``.

    ``"rtmp:10.0.0.5:51234#7"`` -> ``"rtmp"``, ``"rtmp-push:youtube"`` -> ``"rtmp-push"``, ``"record"`` ->
    ``"record"``; an unnamed subscriber -> ``"internal"``. Per-player names would make /metrics grow without
    bound; per-protocol totals do not.
    """
    group = name.split(":", 1)[0]
    return group or "internal"


@dataclass(frozen=True, slots=True, kw_only=True)
class DepartedStats:
    """Totals of the subscribers of one group (`subscriber_group`) that have left a Bus.

    Added to the live subscribers' counters they make per-Bus totals that never go down when a player
    leaves (Prometheus counters must not).

    Attributes:
        group: The subscribers' group, e.g. ``"rtmp"``.
        subscribers: How many left.
        delivered, bytes_delivered, dropped: Their counters when they left.
        cut_off: How many of them were cut off (too far behind) rather than closed.
    """

    group: str
    subscribers: int
    delivered: int
    bytes_delivered: int
    dropped: int
    cut_off: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BusSnapshot:
    """A Bus's state at one moment, for the web API and metrics.

    Attributes:
        name: The stream name.
        live: Whether a producer is attached.
        codecs: The codecs of the current configs, video first.
        producers: How many producers have joined over the Bus's life.
        packets_in, bytes_in, keyframes: Packets (and payload bytes, video keyframes) producers sent.
        video_packets_in: Of those packets, the video ones (frames).
        packets_discarded: Video packets refused before a producer's first keyframe.
        timestamps_clamped: Packets whose dts was clamped so time would not go backwards.
        gop_packets: Packets in the GOP cache.
        last_dts_ms: The newest dts on the Bus's timeline, None before the first packet.
        subscribers: Each subscriber's stats.
        departed: Totals of the subscribers that left, per group, sorted by group.
    """

    name: str
    live: bool
    codecs: tuple[Codec, ...]
    producers: int
    packets_in: int
    bytes_in: int
    keyframes: int
    packets_discarded: int
    timestamps_clamped: int
    gop_packets: int
    last_dts_ms: int | None
    subscribers: tuple[SubscriberStats, ...]
    video_packets_in: int = 0
    departed: tuple[DepartedStats, ...] = ()
