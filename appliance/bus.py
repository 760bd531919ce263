"""Media fan-out: one Bus per stream name, one producer, many subscribers.

Theory of operation
-------------------
A `BusRegistry` maps stream names (`app/key`, e.g. `live/cam`) to `Bus`es. It lives for the whole process,
outside the supervision tree, so a producer that restarts (a camera, an RTMP publisher that reconnects)
finds its subscribers still attached: they see `ProducerLeft` and `ProducerJoined`, never a disconnection.

Everything runs on the trio thread. The producer side is synchronous and never waits: `send_packet` costs
O(subscribers) and a slow subscriber can only hurt itself. Subscribers await `receive()`.

Events. Each subscriber reads one ordered stream of frozen events: `ProducerJoined`, `ProducerLeft`,
`MetadataChanged`, `ConfigChanged`, `PacketReceived` and `PacketsDropped`. Packets are wrapped in
`PacketReceived` (one instance per packet, shared by all subscribers) so that consumers can `match` on a
single event type. A config is always delivered before the first packet that needs it, because a producer
must send a config for a kind before packets of that kind (DATA excepted), and configs are never dropped.

Sync points. A subscriber's media starts, and restarts after a producer change or a drop, at a sync point:
a video keyframe when the producer has announced video (sent a video config), otherwise any packet (an
audio-only stream has no keyframes worth waiting for). Until then its packets are skipped. Independently,
its first video packet is always a keyframe.

GOP cache. The Bus keeps the events since the last video keyframe (audio, data and mid-GOP config changes
included) and the configs in force at that keyframe. A late subscriber is primed with `ProducerJoined` (if
a producer is live), the metadata, those configs, then the cached GOP, so its first packet is a keyframe.
Without video, the cache holds the last `AUDIO_GOP_MS` of packets. The cache is bounded
(`GOP_MAX_PACKETS`, `GOP_MAX_BYTES`): a longer GOP is forgotten and late subscribers wait for the next
keyframe. It is not used for a subscriber whose queue it would fill past half, or whose lag it would push
past half of `max_lag_ms`: that subscriber would only drop it again.

Drop policy. Each subscriber has a queue of at most `max_queue` events. When an event finds it full, the
Bus removes every queued packet, keeps the control events (coalescing superseded configs and metadata), and
the subscriber enters "dropping": packets are discarded until the next sync point, which is delivered
after a `PacketsDropped(count)`. A subscriber whose queue still cannot take events is cut off.

Cut-off. A subscriber's lag is the newest dts on the Bus minus the dts of its oldest undelivered packet
(while dropping: of the oldest packet it lost). When the lag passes `max_lag_ms` the subscriber is
detached and its `receive()` raises `SubscriberCutOffError`.

Timestamps. Each subscriber sees per-kind dts that never decrease. Within one producer a dts that steps
back by at most `MAX_BACKSTEP_MS` (encoder jitter) is clamped to the previous one, pts moving with it; a
bigger step back raises `TimestampError` and the packet is refused, since clamping a timeline reset would
freeze the clock for as long as the reset. Across producers timestamps may restart from 0: the first packet
of a new producer sets a per-bus offset so it lands `REBASE_GAP_MS` after the newest dts delivered so far,
and every later packet of that producer moves by the same offset. Gaps while no producer is live are
therefore not represented; live players would otherwise stall on a jump. The first producer keeps its own
timeline (offset 0).

Lifetime. A Bus with neither producer nor subscribers is dropped from its registry (random stream keys do
not leak memory); a Bus created again under that name starts fresh. `publish()` and `subscribe()` on a
dropped Bus put it back if the name is free. The last configs and metadata outlive a producer, for
subscribers that join before the next one; they are forgotten at the next producer's first packet unless
it sent its own.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType

import trio

from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet

__all__ = [
    "AUDIO_GOP_MS",
    "GOP_MAX_BYTES",
    "GOP_MAX_PACKETS",
    "MAX_BACKSTEP_MS",
    "MIN_QUEUE",
    "REBASE_GAP_MS",
    "Bus",
    "BusBusyError",
    "BusError",
    "BusEvent",
    "BusRegistry",
    "BusSnapshot",
    "ConfigChanged",
    "MetadataChanged",
    "PacketReceived",
    "PacketsDropped",
    "Producer",
    "ProducerClosedError",
    "ProducerEvictedError",
    "ProducerJoined",
    "ProducerLeft",
    "SubscriberCutOffError",
    "SubscriberStats",
    "Subscription",
    "TimestampError",
    "validate_bus_name",
]

AUDIO_GOP_MS = 1_000
GOP_MAX_PACKETS = 4_096
GOP_MAX_BYTES = 16 * 1024 * 1024
MAX_BACKSTEP_MS = 500
REBASE_GAP_MS = 100
MIN_QUEUE = 8
# A drop must leave room for PacketsDropped and the keyframe that ends it.
_RESUME_ROOM = 2

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


@dataclass(frozen=True, slots=True, kw_only=True)
class BusSnapshot:
    """A Bus's state at one moment, for the web API and metrics.

    Attributes:
        name: The stream name.
        live: Whether a producer is attached.
        codecs: The codecs of the current configs, video first.
        producers: How many producers have joined over the Bus's life.
        packets_in, bytes_in, keyframes: Packets (and payload bytes, video keyframes) producers sent.
        packets_discarded: Video packets refused before a producer's first keyframe.
        timestamps_clamped: Packets whose dts was clamped so time would not go backwards.
        gop_packets: Packets in the GOP cache.
        last_dts_ms: The newest dts on the Bus's timeline, None before the first packet.
        subscribers: Each subscriber's stats.
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


class Producer:
    """The single writer of a Bus; get one from `Bus.publish()`.

    Every method is synchronous and returns at once: a slow subscriber never stalls the producer. Use it as
    a context manager (`with bus.publish() as producer:`) or call `close()`.
    """

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._closed = False
        self._evicted = False
        self._configs: dict[Kind, CodecConfig] = {}
        self._metadata: Metadata | None = None
        self._started = False  # has sent a packet: the timeline offset is fixed then
        self._video_started = False  # has sent a video keyframe since its (last) video codec
        self._high_dts: dict[Kind, int] = {}  # highest dts received per kind, on its own timeline

    @property
    def bus(self) -> Bus:
        """The Bus this producer writes to."""
        return self._bus

    @property
    def live(self) -> bool:
        """False once closed or evicted."""
        return not self._closed

    @property
    def evicted(self) -> bool:
        """True if a newer producer replaced this one, or its Bus was closed."""
        return self._evicted

    def send_config(self, config: CodecConfig) -> None:
        """Announce the codec config for `config.kind`; it applies to the following packets of that kind.

        A config equal to this producer's current one for the kind is ignored (encoders repeat them); a
        producer's first config of a kind always reaches subscribers.

        Args:
            config: The new config.

        Raises:
            ProducerEvictedError: A newer producer replaced this one.
            ProducerClosedError: This producer was closed.
        """
        self._check_open()
        if self._configs.get(config.kind) != config:
            self._bus._on_config(self, config)

    def send_metadata(self, metadata: Mapping[str, object]) -> None:
        """Replace the stream metadata (onMetaData). An unchanged value is ignored.

        Args:
            metadata: The new metadata; plain mappings are frozen into `Metadata`.

        Raises:
            ProducerEvictedError: A newer producer replaced this one.
            ProducerClosedError: This producer was closed.
            TypeError: A key is not a str.
        """
        self._check_open()
        frozen = metadata if isinstance(metadata, Metadata) else Metadata(metadata)
        if self._metadata != frozen:
            self._bus._on_metadata(self, frozen)

    def send_packet(self, packet: Packet) -> None:
        """Fan a packet out to every subscriber, and keep it in the GOP cache.

        Timestamps are rebased onto the Bus's timeline and clamped so they never go backwards (see the
        module docstring). Video packets before this producer's first keyframe are discarded.

        Args:
            packet: The packet. Audio and video packets need a config of the same codec sent first.

        Raises:
            ProducerEvictedError: A newer producer replaced this one.
            ProducerClosedError: This producer was closed.
            TimestampError: Its dts is more than `MAX_BACKSTEP_MS` before an earlier one of its kind.
            ValueError: No config of its codec was sent for its kind.
        """
        self._check_open()
        if packet.kind is not Kind.DATA:
            config = self._configs.get(packet.kind)
            if config is None or config.codec is not packet.codec:
                have = "no config" if config is None else f"a {config.codec.name} config"
                raise ValueError(
                    f"bus {self._bus.name!r}: {packet.codec.name} packet but {have} for "
                    f"{packet.kind.name}; send_config() first"
                )
        self._bus._on_packet(self, packet)

    def close(self) -> None:
        """Leave the Bus: subscribers see `ProducerLeft` and stay attached. Idempotent; a no-op if evicted."""
        if not self._closed:
            self._closed = True
            self._bus._on_producer_closed(self)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _evict(self) -> None:
        self._closed = True
        self._evicted = True

    def _check_open(self) -> None:
        if self._evicted:
            raise ProducerEvictedError(
                f"bus {self._bus.name!r}: this producer was evicted (replaced, or the bus closed)"
            )
        if self._closed:
            raise ProducerClosedError(f"bus {self._bus.name!r}: this producer is closed")


class _SubState(enum.Enum):
    OPEN = 1
    ENDED = 2  # the Bus closed: drain the queue, then EndOfChannel
    CLOSED = 3  # the subscriber closed: EndOfChannel at once
    CUT_OFF = 4


class Subscription:
    """One reader of a Bus, with its own bounded queue; get one from `Bus.subscribe()`.

    Read with `await receive()` or `async for event in subscription`. Use it as a context manager or call
    `close()`; closing ends the iteration (and wakes a task blocked in `receive()`).
    """

    def __init__(self, bus: Bus, *, max_queue: int, max_lag_ms: int, name: str) -> None:
        self._bus = bus
        self._name = name
        self._max_queue = max_queue
        self._max_lag_ms = max_lag_ms
        self._queue: deque[BusEvent] = deque()
        self._pending_dts: deque[int] = deque()  # dts of each queued packet, in queue order
        self._lot = trio.lowlevel.ParkingLot()
        self._state = _SubState.OPEN
        self._cut_message = ""
        self._cut_lag_ms = 0
        self._waiting = True  # media (re)starts at the next sync point
        self._video_started = False
        self._dropping = False
        self._drop_count = 0  # packets lost since the last PacketsDropped was queued
        self._drop_from_dts = 0  # dts of the oldest packet lost in the current drop
        self._delivered = 0
        self._bytes_delivered = 0
        self._dropped = 0

    @property
    def name(self) -> str:
        """The name given to `subscribe()`."""
        return self._name

    @property
    def bus(self) -> Bus:
        """The Bus this subscription reads."""
        return self._bus

    def stats(self) -> SubscriberStats:
        """Return a snapshot of this subscriber's counters.

        Returns:
            Its stats now.
        """
        return SubscriberStats(
            name=self._name,
            delivered=self._delivered,
            bytes_delivered=self._bytes_delivered,
            dropped=self._dropped,
            lag_ms=self._lag_ms(),
            queued=len(self._queue),
            max_queue=self._max_queue,
            max_lag_ms=self._max_lag_ms,
            dropping=self._dropping,
            cut_off=self._state is _SubState.CUT_OFF,
        )

    def receive_nowait(self) -> BusEvent:
        """Return the next event if one is queued.

        Returns:
            The event.

        Raises:
            trio.WouldBlock: Nothing is queued yet.
            trio.EndOfChannel: The subscription was closed, or the Bus closed and the queue is drained.
            SubscriberCutOffError: It fell more than `max_lag_ms` behind and was detached.
        """
        if self._queue:
            event = self._queue.popleft()
            if isinstance(event, PacketReceived):
                self._pending_dts.popleft()
                self._delivered += 1
                self._bytes_delivered += len(event.packet.payload)
            return event
        if self._state is _SubState.CUT_OFF:
            raise SubscriberCutOffError(self._cut_message, lag_ms=self._cut_lag_ms)
        if self._state is not _SubState.OPEN:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> BusEvent:
        """Wait for the next event.

        Returns:
            The event.

        Raises:
            trio.EndOfChannel: The subscription was closed, or the Bus closed and the queue is drained.
            SubscriberCutOffError: It fell more than `max_lag_ms` behind and was detached.
        """
        # The checkpoint discipline of trio's own channels: a cancel point first, a schedule point always.
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
                parked = True
                continue
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def close(self) -> None:
        """Detach from the Bus and drop queued events. Idempotent."""
        if self._state is _SubState.OPEN:
            self._bus._detach(self)
        if self._state is not _SubState.CUT_OFF:
            self._state = _SubState.CLOSED
            self._queue.clear()
            self._pending_dts.clear()
        self._lot.unpark_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # The Bus's side. Every method below runs inside a producer call and must not block.

    def _push(self, event: BusEvent) -> None:
        if self._state is not _SubState.OPEN:
            return
        if len(self._queue) >= self._max_queue and not self._make_room():
            return
        self._queue.append(event)
        self._lot.unpark_all()

    def _on_producer_joined(self) -> None:
        self._push(ProducerJoined())
        self._waiting = True
        self._video_started = False

    def _offer(self, event: PacketReceived, video_mode: bool) -> None:
        if self._state is not _SubState.OPEN:
            return
        self._accept(event, video_mode)
        # Checked on every packet, whatever became of it: each one moves the Bus's newest dts.
        lag = self._lag_ms()
        if self._state is _SubState.OPEN and lag > self._max_lag_ms:
            self._cut_off(f"lag {lag} ms > max_lag_ms {self._max_lag_ms}", lag)

    def _accept(self, event: PacketReceived, video_mode: bool) -> None:
        packet = event.packet
        sync = (packet.kind is Kind.VIDEO and packet.keyframe) if video_mode else True
        if not self._dropping and len(self._queue) >= self._max_queue and not self._make_room():
            return
        if self._dropping:
            if not sync:
                self._dropped += 1
                self._drop_count += 1
                return
            if len(self._queue) > self._max_queue - _RESUME_ROOM and not self._make_room():
                return
            self._dropping = False
            self._queue.append(PacketsDropped(count=self._drop_count))
            self._drop_count = 0
            self._waiting = False
            self._video_started = packet.kind is Kind.VIDEO
        elif self._waiting:
            if not sync:
                return
            self._waiting = False
            self._video_started = packet.kind is Kind.VIDEO
        elif packet.kind is Kind.VIDEO and not self._video_started:
            # Video that appears after the subscriber synced on audio must still start at a keyframe.
            if not packet.keyframe:
                return
            self._video_started = True
        self._queue.append(event)
        self._pending_dts.append(packet.dts_ms)
        self._lot.unpark_all()

    def _make_room(self) -> bool:
        # Drop every queued packet (media restarts at the next sync point) but keep the control events a
        # consumer needs to decode what follows; of those, only the newest config per kind and the newest
        # metadata still matter once no packet sits between them.
        if self._pending_dts:
            if not self._dropping:
                self._dropping = True
                self._drop_from_dts = self._pending_dts[0]
            self._dropped += len(self._pending_dts)
            self._drop_count += len(self._pending_dts)
            self._pending_dts.clear()
        kept: list[BusEvent] = []
        config_kinds: set[Kind] = set()
        have_metadata = False
        for event in reversed(self._queue):
            if isinstance(event, PacketReceived):
                continue
            if isinstance(event, ConfigChanged):
                if event.config.kind in config_kinds:
                    continue
                config_kinds.add(event.config.kind)
            elif isinstance(event, MetadataChanged):
                if have_metadata:
                    continue
                have_metadata = True
            elif isinstance(event, PacketsDropped) and self._dropping:
                self._drop_count += event.count  # one PacketsDropped will report both drops
                continue
            kept.append(event)
        kept.reverse()
        self._queue = deque(kept)
        if len(self._queue) > self._max_queue - _RESUME_ROOM:
            self._cut_off(f"queue full of {len(self._queue)} control events", self._lag_ms())
            return False
        return True

    def _lag_ms(self) -> int:
        newest = self._bus._newest_dts
        if self._state is _SubState.CUT_OFF:
            return self._cut_lag_ms
        if newest is None:
            return 0
        if self._dropping:
            return max(0, newest - self._drop_from_dts)
        if self._pending_dts:
            return max(0, newest - self._pending_dts[0])
        return 0

    def _cut_off(self, reason: str, lag_ms: int) -> None:
        self._cut_message = f"subscriber {self._name!r} on bus {self._bus.name!r} cut off: {reason}"
        self._cut_lag_ms = lag_ms
        self._state = _SubState.CUT_OFF
        self._queue.clear()
        self._pending_dts.clear()
        self._bus._detach(self)
        self._lot.unpark_all()

    def _end(self) -> None:
        if self._state is _SubState.OPEN:
            self._state = _SubState.ENDED
            self._lot.unpark_all()


_KIND_ORDER = (Kind.VIDEO, Kind.AUDIO, Kind.DATA)


class Bus:
    """One named stream: a producer slot, subscribers, the last configs and metadata, the GOP cache.

    Usually obtained from `BusRegistry.get_or_create()`; a Bus made directly has no registry to leave.

    Args:
        name: The stream name, `app/key`.

    Raises:
        ValueError: The name is malformed.
    """

    def __init__(self, name: str, *, registry: BusRegistry | None = None) -> None:
        self._name = validate_bus_name(name)
        self._registry = registry
        self._closed = False
        self._producer: Producer | None = None
        self._producers = 0
        self._subs: dict[Subscription, None] = {}  # an insertion-ordered set
        self._configs: dict[Kind, CodecConfig] = {}
        self._metadata: Metadata | None = None
        # The GOP cache: events from a sync packet on (gop[0] is always a packet), and the configs in force
        # at that packet.
        self._gop: deque[PacketReceived | ConfigChanged] = deque()
        self._gop_base: dict[Kind, CodecConfig] = {}
        self._gop_packets = 0
        self._gop_bytes = 0
        # The timeline: producer dts + offset, never below the last dts of the kind.
        self._offset = 0
        self._last_dts: dict[Kind, int] = {}
        self._newest_dts: int | None = None
        self._packets_in = 0
        self._bytes_in = 0
        self._keyframes = 0
        self._discarded = 0
        self._clamped = 0

    def __repr__(self) -> str:
        return f"<Bus {self._name!r} live={self.live} subscribers={len(self._subs)}>"

    @property
    def name(self) -> str:
        """The stream name, `app/key`."""
        return self._name

    @property
    def live(self) -> bool:
        """Whether a producer is attached."""
        return self._producer is not None

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    @property
    def configs(self) -> Mapping[Kind, CodecConfig]:
        """The latest config per kind (kept after the producer leaves), as a read-only copy."""
        return MappingProxyType(dict(self._configs))

    @property
    def metadata(self) -> Metadata | None:
        """The latest metadata (kept after the producer leaves)."""
        return self._metadata

    @property
    def gop(self) -> tuple[Packet, ...]:
        """The packets in the GOP cache, from the last video keyframe (or the last second of audio)."""
        return tuple(event.packet for event in self._gop if isinstance(event, PacketReceived))

    @property
    def packets_in(self) -> int:
        """Packets producers sent, including discarded ones."""
        return self._packets_in

    @property
    def bytes_in(self) -> int:
        """Payload bytes producers sent."""
        return self._bytes_in

    @property
    def keyframes(self) -> int:
        """Video keyframes producers sent."""
        return self._keyframes

    @property
    def subscriber_count(self) -> int:
        """Attached subscribers."""
        return len(self._subs)

    def publish(self, *, replace: bool = True) -> Producer:
        """Claim the producer slot.

        Args:
            replace: If a producer is live, evict it (its sends then raise `ProducerEvictedError`; its
                driver should close its connection) and subscribers see `ProducerLeft(evicted=True)`, then
                `ProducerJoined`. If False, refuse instead.

        Returns:
            The new producer.

        Raises:
            BusBusyError: A producer is live and `replace` is False.
            BusError: The Bus is closed, or was dropped from its registry and the name reused.
        """
        self._check_usable()
        old = self._producer
        if old is not None:
            if not replace:
                raise BusBusyError(f"bus {self._name!r} already has a producer")
            old._evict()
            self._producer_gone(evicted=True)
        producer = Producer(self)
        self._producer = producer
        self._producers += 1
        for sub in tuple(self._subs):
            sub._on_producer_joined()
        return producer

    def subscribe(self, *, max_queue: int = 512, max_lag_ms: int = 10_000, name: str = "") -> Subscription:
        """Attach a subscriber. Allowed before any producer: players may connect first.

        Its queue is primed with `ProducerJoined` (if a producer is live), the metadata, the configs, and
        the GOP cache when it fits (see the module docstring), so its first packet is a sync point.

        Args:
            max_queue: Events its queue holds before it drops to the next keyframe; at least `MIN_QUEUE`.
            max_lag_ms: Lag at which it is cut off; positive.
            name: A label for stats and logs (never a secret).

        Returns:
            The subscription.

        Raises:
            ValueError: `max_queue` or `max_lag_ms` is out of range.
            BusError: The Bus is closed, or was dropped from its registry and the name reused.
        """
        if max_queue < MIN_QUEUE:
            raise ValueError(f"max_queue={max_queue}: must be >= {MIN_QUEUE}")
        if max_lag_ms <= 0:
            raise ValueError(f"max_lag_ms={max_lag_ms}: must be > 0")
        self._check_usable()
        sub = Subscription(self, max_queue=max_queue, max_lag_ms=max_lag_ms, name=name)
        self._subs[sub] = None
        producer = self._producer
        if producer is not None:
            sub._on_producer_joined()
        if self._metadata is not None:
            sub._push(MetadataChanged(metadata=self._metadata))
        use_gop = (
            producer is not None
            and bool(self._gop)
            and len(sub._queue) + len(self._gop_base) + len(self._gop) <= max_queue // 2
            and self._gop_span_ms() <= max_lag_ms // 2
        )
        for config in (self._gop_base if use_gop else self._configs).values():
            sub._push(ConfigChanged(config=config))
        if use_gop and producer is not None:
            video_mode = Kind.VIDEO in producer._configs
            for event in self._gop:
                if isinstance(event, PacketReceived):
                    sub._offer(event, video_mode)
                else:
                    sub._push(event)
        return sub

    def snapshot(self) -> BusSnapshot:
        """Return the Bus's state and every subscriber's stats.

        Returns:
            The snapshot.
        """
        return BusSnapshot(
            name=self._name,
            live=self.live,
            codecs=tuple(self._configs[k].codec for k in _KIND_ORDER if k in self._configs),
            producers=self._producers,
            packets_in=self._packets_in,
            bytes_in=self._bytes_in,
            keyframes=self._keyframes,
            packets_discarded=self._discarded,
            timestamps_clamped=self._clamped,
            gop_packets=self._gop_packets,
            last_dts_ms=self._newest_dts,
            subscribers=tuple(sub.stats() for sub in self._subs),
        )

    def close(self) -> None:
        """Shut the stream: evict the producer, end every subscription (after its queued events) and
        leave the registry. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            self._producer._evict()
            self._producer_gone(evicted=True)
        subs = tuple(self._subs)
        self._subs.clear()
        for sub in subs:
            sub._end()
        self._leave_registry()

    # The producer's and subscribers' side.

    def _check_usable(self) -> None:
        if self._closed:
            raise BusError(f"bus {self._name!r} is closed")
        registry = self._registry
        if registry is not None:
            current = registry._buses.setdefault(self._name, self)
            if current is not self:
                raise BusError(f"bus {self._name!r} was dropped and created anew; get it from the registry")

    def _detach(self, sub: Subscription) -> None:
        self._subs.pop(sub, None)
        self._collect()

    def _collect(self) -> None:
        if self._producer is None and not self._subs:
            self._leave_registry()

    def _leave_registry(self) -> None:
        if self._registry is not None and self._registry._buses.get(self._name) is self:
            del self._registry._buses[self._name]

    def _producer_gone(self, *, evicted: bool) -> None:
        self._gop_clear()
        event = ProducerLeft(evicted=evicted)
        # The slot is cleared only afterwards: a subscriber cut off here must not make the Bus look idle
        # and leave the registry in the middle of publish().
        for sub in tuple(self._subs):
            sub._push(event)
        self._producer = None

    def _on_producer_closed(self, producer: Producer) -> None:
        if self._producer is producer:
            self._producer_gone(evicted=False)
            self._collect()

    def _on_metadata(self, producer: Producer, metadata: Metadata) -> None:
        producer._metadata = metadata
        self._metadata = metadata
        event = MetadataChanged(metadata=metadata)
        for sub in tuple(self._subs):
            sub._push(event)

    def _on_config(self, producer: Producer, config: CodecConfig) -> None:
        previous = producer._configs.get(config.kind)
        producer._configs[config.kind] = config
        self._configs[config.kind] = config
        event = ConfigChanged(config=config)
        if config.kind is Kind.VIDEO and previous is None:
            # The stream gains video: an audio-only cache no longer starts at a sync point.
            self._gop_clear()
        elif self._gop:
            self._gop.append(event)
        if config.kind is Kind.VIDEO and previous is not None and previous.codec is not config.codec:
            producer._video_started = False  # a new codec cannot continue the old one's GOP
        for sub in tuple(self._subs):
            sub._push(event)

    def _on_packet(self, producer: Producer, packet: Packet) -> None:
        kind = packet.kind
        high = producer._high_dts.get(kind)
        if high is not None and packet.dts_ms < high - MAX_BACKSTEP_MS:
            raise TimestampError(
                f"bus {self._name!r}: {kind.name} dts {packet.dts_ms} is {high - packet.dts_ms} ms before "
                f"an earlier one (> {MAX_BACKSTEP_MS} ms); start a new producer for a new timeline"
            )
        if not producer._started:
            producer._started = True
            if self._newest_dts is not None:
                self._offset = self._newest_dts + REBASE_GAP_MS - packet.dts_ms
            # What the previous producer left behind no longer describes the stream.
            for stale in [k for k in self._configs if k not in producer._configs]:
                del self._configs[stale]
            self._metadata = producer._metadata
        producer._high_dts[kind] = packet.dts_ms if high is None else max(high, packet.dts_ms)
        self._packets_in += 1
        self._bytes_in += len(packet.payload)
        if kind is Kind.VIDEO and not packet.keyframe and not producer._video_started:
            # Undecodable for everyone: it refers to frames no one has. It does not move the timeline.
            self._discarded += 1
            return
        dts = packet.dts_ms + self._offset
        floor = self._last_dts.get(kind, 0)
        if dts < floor:
            dts = floor
            self._clamped += 1
        if dts != packet.dts_ms:
            packet = packet.with_timestamps(dts_ms=dts, pts_ms=max(0, packet.pts_ms + dts - packet.dts_ms))
        self._last_dts[kind] = dts
        if self._newest_dts is None or dts > self._newest_dts:
            self._newest_dts = dts
        if kind is Kind.VIDEO and packet.keyframe:
            self._keyframes += 1
            producer._video_started = True
        video_mode = Kind.VIDEO in producer._configs
        event = PacketReceived(packet=packet)
        self._gop_add(event, video_mode)
        for sub in tuple(self._subs):
            sub._offer(event, video_mode)

    def _gop_add(self, event: PacketReceived, video_mode: bool) -> None:
        packet = event.packet
        if video_mode:
            if packet.kind is Kind.VIDEO and packet.keyframe:
                self._gop_clear()
            elif not self._gop:
                return  # the cache was given up (too long) or the first keyframe has not come yet
        if not self._gop:
            self._gop_base = dict(self._configs)
        self._gop.append(event)
        self._gop_packets += 1
        self._gop_bytes += len(packet.payload)
        if video_mode:
            if self._gop_packets > GOP_MAX_PACKETS or self._gop_bytes > GOP_MAX_BYTES:
                self._gop_clear()
            return
        while len(self._gop) > 1 and (
            self._gop_span_ms() > AUDIO_GOP_MS
            or self._gop_packets > GOP_MAX_PACKETS
            or self._gop_bytes > GOP_MAX_BYTES
        ):
            self._gop_pop()

    def _gop_pop(self) -> None:
        first = self._gop.popleft()
        if isinstance(first, PacketReceived):
            self._gop_packets -= 1
            self._gop_bytes -= len(first.packet.payload)
        # Keep gop[0] a packet: configs in front of it become the base it is decoded with.
        while self._gop and isinstance(self._gop[0], ConfigChanged):
            config = self._gop.popleft()
            assert isinstance(config, ConfigChanged)
            self._gop_base[config.config.kind] = config.config

    def _gop_span_ms(self) -> int:
        if not self._gop or self._newest_dts is None:
            return 0
        first = self._gop[0]
        assert isinstance(first, PacketReceived)
        return self._newest_dts - first.packet.dts_ms

    def _gop_clear(self) -> None:
        self._gop.clear()
        self._gop_base = {}
        self._gop_packets = 0
        self._gop_bytes = 0


class BusRegistry:
    """The Buses of the process, by name. Buses with neither producer nor subscribers are dropped."""

    def __init__(self) -> None:
        self._buses: dict[str, Bus] = {}

    def get_or_create(self, name: str) -> Bus:
        """Return the Bus named `name`, creating it if needed.

        Args:
            name: `app/key`.

        Returns:
            The Bus.

        Raises:
            ValueError: The name is malformed.
        """
        bus = self._buses.get(name)
        if bus is None:
            bus = Bus(name, registry=self)
            self._buses[name] = bus
        return bus

    def get(self, name: str) -> Bus | None:
        """Return the Bus named `name`, or None.

        Args:
            name: Any string; malformed names simply have no Bus.

        Returns:
            The Bus or None.
        """
        return self._buses.get(name)

    def publish(self, name: str, *, replace: bool = True) -> Producer:
        """`get_or_create(name).publish(replace=replace)`; see `Bus.publish`."""
        return self.get_or_create(name).publish(replace=replace)

    def subscribe(
        self, name: str, *, max_queue: int = 512, max_lag_ms: int = 10_000, label: str = ""
    ) -> Subscription:
        """`get_or_create(name).subscribe(...)`; see `Bus.subscribe` (`label` is its `name`)."""
        return self.get_or_create(name).subscribe(max_queue=max_queue, max_lag_ms=max_lag_ms, name=label)

    def names(self) -> list[str]:
        """Return the names of the registered Buses, sorted."""
        return sorted(self._buses)

    def snapshot(self) -> list[BusSnapshot]:
        """Return every Bus's snapshot, sorted by name."""
        return [bus.snapshot() for bus in self]

    def __iter__(self) -> Iterator[Bus]:
        # A sorted copy: iterating must survive Buses being dropped or created meanwhile.
        return iter([self._buses[name] for name in sorted(self._buses)])

    def __len__(self) -> int:
        return len(self._buses)

    def __contains__(self, name: object) -> bool:
        return name in self._buses
