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

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType, TracebackType

from appliance.media.bus_events import (
    BusBusyError,
    BusError,
    BusEvent,
    BusSnapshot,
    ConfigChanged,
    DepartedStats,
    MetadataChanged,
    PacketReceived,
    PacketsDropped,
    ProducerClosedError,
    ProducerEvictedError,
    ProducerJoined,
    ProducerLeft,
    SubscriberCutOffError,
    SubscriberStats,
    TimestampError,
    subscriber_group,
    validate_bus_name,
)
from appliance.media.packets import CodecConfig, Kind, Metadata, Packet
from appliance.media.subscription import Subscription

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
    "DepartedStats",
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
    "subscriber_group",
    "validate_bus_name",
]

AUDIO_GOP_MS = 1_000
GOP_MAX_PACKETS = 4_096
GOP_MAX_BYTES = 16 * 1024 * 1024
MAX_BACKSTEP_MS = 500
REBASE_GAP_MS = 100
MIN_QUEUE = 8


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
        self._video_in = 0
        self._discarded = 0
        self._clamped = 0
        self._listeners: list[Callable[[], None]] = []
        # Counters of subscribers that left, per subscriber_group(): [subscribers, delivered, bytes, dropped,
        # cut off]. Groups are few (protocols), so this stays small however many players come and go.
        self._departed: dict[str, list[int]] = {}

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

    def keyframe(self) -> tuple[CodecConfig, Packet] | None:
        """The newest video keyframe in the GOP cache and the video config it decodes with.

        Returns:
            (config, keyframe), or None while there is none: no producer, no video, no keyframe since the
            producer joined, or a GOP too long for the cache. The same packet object is returned until the
            next keyframe, so callers may cache work per keyframe by identity.
        """
        first = self._gop[0] if self._gop else None
        if first is None or not isinstance(first, PacketReceived):
            return None
        packet = first.packet
        config = self._gop_base.get(Kind.VIDEO)
        if packet.kind is not Kind.VIDEO or not packet.keyframe or config is None:
            return None
        return config, packet

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
        self._notify()
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

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (synchronously, on the producer's side) after events reach the subscribers.

        For consumers that serve many subscriptions from one task (the RTMP fan-out): one wake-up per
        packet for all of them instead of one per subscription. The callback must not raise or block.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling `callback`; a callback not added is ignored."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

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
            video_packets_in=self._video_in,
            departed=tuple(
                DepartedStats(
                    group=group, subscribers=n, delivered=d, bytes_delivered=b, dropped=x, cut_off=c
                )
                for group, (n, d, b, x, c) in sorted(self._departed.items())
            ),
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
        self._notify()
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
        if sub in self._subs:
            del self._subs[sub]
            stats = sub.stats()
            totals = self._departed.setdefault(subscriber_group(stats.name), [0, 0, 0, 0, 0])
            totals[0] += 1
            totals[1] += stats.delivered
            totals[2] += stats.bytes_delivered
            totals[3] += stats.dropped
            totals[4] += int(stats.cut_off)
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
        self._notify()

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
        self._notify()

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
        self._notify()

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
        if kind is Kind.VIDEO:
            self._video_in += 1
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
        self._notify()

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
