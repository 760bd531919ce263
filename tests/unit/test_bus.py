"""The Bus: registry, producer slot, priming, drop-to-keyframe, cut-off, rebasing, and a state machine."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import appliance.bus
from appliance.bus import (
    AUDIO_GOP_MS,
    MAX_BACKSTEP_MS,
    REBASE_GAP_MS,
    Bus,
    BusBusyError,
    BusError,
    BusEvent,
    BusRegistry,
    BusSnapshot,
    ConfigChanged,
    DepartedStats,
    MetadataChanged,
    PacketReceived,
    PacketsDropped,
    Producer,
    ProducerClosedError,
    ProducerEvictedError,
    ProducerJoined,
    ProducerLeft,
    SubscriberCutOffError,
    SubscriberStats,
    Subscription,
    TimestampError,
    subscriber_group,
)
from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet
from tests.fuzz import examples

V = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b"\x01\x42\xc0\x1e")
V2 = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b"\x01\x64\x00\x28")
HEVC = CodecConfig(kind=Kind.VIDEO, codec=Codec.HEVC, data=b"\x01\x01\x60")
A = CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=b"\x12\x10")


def vid(dts: int, *, key: bool = False, codec: Codec = Codec.H264, cts: int = 0) -> Packet:
    nal = b"\x65\x88" if key else b"\x41\x9a"
    payload = len(nal).to_bytes(4, "big") + nal
    return Packet(kind=Kind.VIDEO, codec=codec, payload=payload, pts_ms=dts + cts, dts_ms=dts, keyframe=key)


def aud(dts: int) -> Packet:
    return Packet(
        kind=Kind.AUDIO, codec=Codec.AAC, payload=b"\x21\x10", pts_ms=dts, dts_ms=dts, keyframe=True
    )


def got(packet: Packet) -> PacketReceived:
    return PacketReceived(packet=packet)


def drain(sub: Subscription) -> list[BusEvent]:
    events: list[BusEvent] = []
    while True:
        try:
            events.append(sub.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events


def media(events: list[BusEvent]) -> list[Packet]:
    return [event.packet for event in events if isinstance(event, PacketReceived)]


def started(bus: Bus, *configs: CodecConfig) -> Producer:
    producer = bus.publish()
    for config in configs:
        producer.send_config(config)
    return producer


# Registry


@pytest.mark.parametrize(
    "name",
    ["", "live", "live/", "/cam", "live/cam/x", "live/c am", "live/ca$m", "live/..", "./cam", "li\u00e9/cam"],
)
def test_registry_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"bus name {name!r}: want app/key")):
        BusRegistry().get_or_create(name)


def test_registry_truncates_long_bad_names() -> None:
    with pytest.raises(ValueError, match=r"'xxxx+\.\.\.': want app/key"):
        BusRegistry().get_or_create("x" * 300)


def test_registry_get_names_iter() -> None:
    registry = BusRegistry()
    cam = registry.get_or_create("live/cam")
    other = registry.get_or_create("app.v1/key_2-x")
    assert registry.get_or_create("live/cam") is cam
    assert registry.get("live/cam") is cam
    assert registry.get("live/none") is None
    assert registry.get("not a name") is None
    assert registry.names() == ["app.v1/key_2-x", "live/cam"]
    assert list(registry) == [other, cam]
    assert len(registry) == 2
    assert "live/cam" in registry
    assert [snap.name for snap in registry.snapshot()] == ["app.v1/key_2-x", "live/cam"]


def test_registry_drops_idle_buses_and_recreates_them_fresh() -> None:
    registry = BusRegistry()
    producer = registry.publish("live/cam")
    producer.send_config(V)
    sub = registry.subscribe("live/cam", label="player")
    bus = registry.get("live/cam")
    assert bus is not None
    producer.close()
    assert "live/cam" in registry  # a subscriber still waits on it
    sub.close()
    assert "live/cam" not in registry
    fresh = registry.get_or_create("live/cam")
    assert fresh is not bus
    assert dict(fresh.configs) == {}

    # A producer alone keeps the Bus too.
    with registry.publish("live/x"):
        assert registry.names() == ["live/cam", "live/x"]
    assert registry.names() == ["live/cam"]


def test_dropped_bus_comes_back_if_its_name_is_free() -> None:
    registry = BusRegistry()
    bus = registry.get_or_create("live/cam")
    bus.subscribe().close()
    assert "live/cam" not in registry
    with bus.publish():
        assert registry.get("live/cam") is bus


def test_dropped_bus_refuses_use_once_its_name_is_taken() -> None:
    registry = BusRegistry()
    old = registry.get_or_create("live/cam")
    old.subscribe().close()
    registry.get_or_create("live/cam")
    with pytest.raises(BusError, match="was dropped and created anew"):
        old.publish()
    with pytest.raises(BusError, match="was dropped and created anew"):
        old.subscribe()


def test_subscribe_validates_limits() -> None:
    bus = Bus("live/cam")
    with pytest.raises(ValueError, match="max_queue=7: must be >= 8"):
        bus.subscribe(max_queue=7)
    with pytest.raises(ValueError, match="max_lag_ms=0: must be > 0"):
        bus.subscribe(max_lag_ms=0)


# Priming and waiting


def test_late_joiner_gets_metadata_configs_then_gop_from_the_keyframe() -> None:
    bus = Bus("live/cam")
    producer = started(bus)
    producer.send_metadata({"width": 1280, "height": 720})
    producer.send_config(V)
    producer.send_config(A)
    k0, a0, v1, k2, a1, v3 = vid(0, key=True), aud(10), vid(33), vid(66, key=True), aud(70), vid(100)
    for packet in (k0, a0, v1, k2, a1, v3):
        producer.send_packet(packet)
    assert bus.gop == (k2, a1, v3)

    sub = bus.subscribe(name="late")
    assert drain(sub) == [
        ProducerJoined(),
        MetadataChanged(metadata=Metadata({"width": 1280, "height": 720})),
        ConfigChanged(config=V),
        ConfigChanged(config=A),
        got(k2),
        got(a1),
        got(v3),
    ]
    assert sub.stats().delivered == 3


def test_gop_includes_a_mid_gop_config_change() -> None:
    bus = Bus("live/cam")
    producer = started(bus, V)
    k0, v1, v2 = vid(0, key=True), vid(33), vid(66)
    producer.send_packet(k0)
    producer.send_packet(v1)
    producer.send_config(V2)
    producer.send_packet(v2)
    assert drain(bus.subscribe()) == [
        ProducerJoined(),
        ConfigChanged(config=V),
        got(k0),
        got(v1),
        ConfigChanged(config=V2),
        got(v2),
    ]


def test_config_change_reaches_subscribers_before_the_next_packet() -> None:
    bus = Bus("live/cam")
    producer = started(bus, V)
    sub = bus.subscribe()
    producer.send_packet(vid(0, key=True))
    drain(sub)
    producer.send_config(V2)
    producer.send_packet(vid(33))
    assert drain(sub) == [ConfigChanged(config=V2), got(vid(33))]


def test_codec_change_waits_for_the_new_codec_keyframe() -> None:
    bus = Bus("live/cam")
    producer = started(bus, V)
    sub = bus.subscribe()
    producer.send_packet(vid(0, key=True))
    producer.send_config(HEVC)
    producer.send_packet(vid(33, codec=Codec.HEVC))
    producer.send_packet(vid(66, key=True, codec=Codec.HEVC))
    assert drain(sub)[-3:] == [
        got(vid(0, key=True)),
        ConfigChanged(config=HEVC),
        got(vid(66, key=True, codec=Codec.HEVC)),
    ]
    assert bus.snapshot().packets_discarded == 1


def test_av_stream_starts_at_the_video_keyframe() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    producer = started(bus, V, A)
    for packet in (aud(0), vid(5), aud(23), vid(40, key=True), aud(46)):
        producer.send_packet(packet)
    assert drain(sub) == [
        ProducerJoined(),
        ConfigChanged(config=V),
        ConfigChanged(config=A),
        got(vid(40, key=True)),
        got(aud(46)),
    ]
    snap = bus.snapshot()
    assert (snap.packets_in, snap.packets_discarded, snap.keyframes) == (5, 1, 1)


def test_audio_only_stream_caches_about_a_second() -> None:
    bus = Bus("live/radio")
    producer = started(bus, A)
    for dts in range(0, 3000, 23):
        producer.send_packet(aud(dts))
    newest = 2990
    gop = bus.gop
    assert gop[-1].dts_ms == newest
    assert newest - gop[0].dts_ms <= AUDIO_GOP_MS
    assert newest - gop[0].dts_ms > AUDIO_GOP_MS - 23
    events = drain(bus.subscribe())
    assert events[:2] == [ProducerJoined(), ConfigChanged(config=A)]
    assert media(events) == list(gop)


def test_video_arriving_later_restarts_the_cache_at_its_keyframe() -> None:
    bus = Bus("live/cam")
    producer = started(bus, A)
    sub = bus.subscribe()
    producer.send_packet(aud(0))
    producer.send_config(V)
    assert not bus.gop
    producer.send_packet(aud(23))
    producer.send_packet(vid(30, key=True))
    producer.send_packet(aud(46))
    assert bus.gop == (vid(30, key=True), aud(46))
    assert media(drain(sub)) == [aud(0), aud(23), vid(30, key=True), aud(46)]


def test_gop_is_skipped_when_it_would_not_fit_the_queue() -> None:
    bus = Bus("live/cam")
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    for i in range(1, 10):
        producer.send_packet(vid(i * 33))
    sub = bus.subscribe(max_queue=16)
    assert drain(sub) == [ProducerJoined(), ConfigChanged(config=V)]
    producer.send_packet(vid(330))
    producer.send_packet(vid(363, key=True))
    assert drain(sub) == [got(vid(363, key=True))]


def test_gop_is_skipped_when_it_spans_more_than_half_the_lag_budget() -> None:
    bus = Bus("live/cam")
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    producer.send_packet(vid(600))
    assert media(drain(bus.subscribe(max_lag_ms=1200))) == [vid(0, key=True), vid(600)]
    assert media(drain(bus.subscribe(max_lag_ms=1199))) == []


def test_a_gop_past_the_cache_bound_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(appliance.bus, "GOP_MAX_PACKETS", 4)
    bus = Bus("live/cam")
    producer = started(bus, V)
    for i in range(5):
        producer.send_packet(vid(i * 33, key=i == 0))
    assert not bus.gop
    producer.send_packet(vid(200, key=True))
    assert bus.gop == (vid(200, key=True),)


async def test_subscriber_before_publisher_waits_then_receives() -> None:
    registry = BusRegistry()
    received: list[BusEvent] = []

    async def read(sub: Subscription) -> None:
        async for event in sub:
            received.append(event)

    async with trio.open_nursery() as nursery:
        sub = registry.subscribe("live/cam")
        nursery.start_soon(read, sub)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        producer = registry.publish("live/cam")
        producer.send_metadata({"title": "cam"})
        producer.send_config(V)
        producer.send_packet(vid(0, key=True))
        await trio.testing.wait_all_tasks_blocked()
        assert received == [
            ProducerJoined(),
            MetadataChanged(metadata=Metadata({"title": "cam"})),
            ConfigChanged(config=V),
            got(vid(0, key=True)),
        ]
        sub.close()  # ends the async for
    assert "live/cam" in registry  # the producer is still there
    producer.close()
    assert "live/cam" not in registry


async def test_receive_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    sub = Bus("live/cam").subscribe()
    start = trio.current_time()
    with trio.move_on_after(5) as scope:
        await sub.receive()
    assert scope.cancelled_caught
    assert trio.current_time() - start == 5


async def test_receive_checkpoints_even_when_an_event_is_ready() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    bus.publish()
    with trio.CancelScope() as scope:
        scope.cancel()
        await sub.receive()
    assert scope.cancelled_caught
    assert await sub.receive() == ProducerJoined()


# The producer slot


def test_replace_evicts_the_old_producer() -> None:
    registry = BusRegistry()
    old = registry.publish("live/cam")
    old.send_config(V)
    old.send_packet(vid(0, key=True))
    sub = registry.subscribe("live/cam")
    drain(sub)
    new = registry.publish("live/cam")
    assert old.evicted
    assert not old.live
    with pytest.raises(ProducerEvictedError, match="'live/cam': this producer was evicted"):
        old.send_packet(vid(33))
    with pytest.raises(ProducerEvictedError):
        old.send_config(V)
    with pytest.raises(ProducerEvictedError):
        old.send_metadata({})
    old.close()  # the driver's cleanup: a no-op, no second ProducerLeft
    new.send_config(V2)
    new.send_packet(vid(0, key=True))
    events = drain(sub)
    assert events[:3] == [ProducerLeft(evicted=True), ProducerJoined(), ConfigChanged(config=V2)]
    assert media(events) == [vid(REBASE_GAP_MS, key=True)]
    assert new.bus is registry.get("live/cam")
    assert bus_snapshot(registry).producers == 2


def bus_snapshot(registry: BusRegistry) -> BusSnapshot:
    [snap] = registry.snapshot()
    return snap


def test_replace_false_refuses_a_live_bus() -> None:
    bus = Bus("live/cam")
    first = bus.publish()
    with pytest.raises(BusBusyError, match="'live/cam' already has a producer"):
        bus.publish(replace=False)
    assert first.live
    first.close()
    bus.publish(replace=False).close()


def test_producer_leaving_keeps_subscribers_and_the_last_config() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    with started(bus, V, A) as producer:
        producer.send_metadata({"w": 1})
        producer.send_packet(vid(0, key=True))
    assert not bus.live
    assert drain(sub)[-1] == ProducerLeft(evicted=False)
    assert dict(bus.configs) == {Kind.VIDEO: V, Kind.AUDIO: A}
    assert bus.metadata == Metadata({"w": 1})
    assert not bus.gop
    with pytest.raises(ProducerClosedError, match="this producer is closed"):
        producer.send_packet(vid(33))
    # A subscriber that joins between producers gets what is left, and waits.
    assert drain(bus.subscribe()) == [
        MetadataChanged(metadata=Metadata({"w": 1})),
        ConfigChanged(config=V),
        ConfigChanged(config=A),
    ]
    # The next producer's first config always goes out, even an identical one.
    second = started(bus, V)
    second.send_packet(vid(0, key=True))
    assert drain(sub) == [ProducerJoined(), ConfigChanged(config=V), got(vid(REBASE_GAP_MS, key=True))]
    # It sent no audio config and no metadata: the old ones no longer describe the stream.
    assert dict(bus.configs) == {Kind.VIDEO: V}
    assert bus.metadata is None


def test_repeated_configs_and_metadata_are_sent_once() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    producer = started(bus, V, V)
    producer.send_metadata({"a": 1})
    producer.send_metadata(Metadata({"a": 1}))
    assert drain(sub) == [
        ProducerJoined(),
        ConfigChanged(config=V),
        MetadataChanged(metadata=Metadata({"a": 1})),
    ]


def test_packets_need_a_config_of_their_codec() -> None:
    bus = Bus("live/cam")
    producer = bus.publish()
    with pytest.raises(ValueError, match="H264 packet but no config for VIDEO; send_config"):
        producer.send_packet(vid(0, key=True))
    producer.send_config(HEVC)
    with pytest.raises(ValueError, match="H264 packet but a HEVC config for VIDEO"):
        producer.send_packet(vid(0, key=True))
    # Timed data needs no config (and, in a stream without video, is a sync point like audio).
    cue = Packet(kind=Kind.DATA, codec=Codec.AMF0, payload=b"\x02", pts_ms=0, dts_ms=0, keyframe=False)
    captions = Bus("live/captions")
    sub = captions.subscribe()
    captions.publish().send_packet(cue)
    assert drain(sub) == [ProducerJoined(), got(cue)]


def test_bus_close_ends_everything() -> None:
    registry = BusRegistry()
    bus = registry.get_or_create("live/cam")
    sub = bus.subscribe()
    producer = started(bus, V)
    bus.close()
    bus.close()
    assert bus.closed
    assert producer.evicted
    assert "live/cam" not in registry
    assert drain(sub) == [ProducerJoined(), ConfigChanged(config=V), ProducerLeft(evicted=True)]
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()
    with pytest.raises(BusError, match="is closed"):
        bus.subscribe()
    sub.close()


async def test_closing_wakes_a_blocked_receiver() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    ended = trio.Event()

    async def read() -> None:
        with pytest.raises(trio.EndOfChannel):
            await sub.receive()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        with sub:
            pass
    assert ended.is_set()
    assert bus.subscriber_count == 0


# Timestamps


def test_a_new_producer_is_rebased_after_the_last_dts() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    with started(bus, V, A) as first:
        for packet in (vid(5000, key=True), aud(5010), vid(5033)):
            first.send_packet(packet)
    second = started(bus, V, A)
    for packet in (vid(0, key=True, cts=40), aud(0), vid(33, cts=-10)):
        second.send_packet(packet)
    base = 5033 + REBASE_GAP_MS
    assert media(drain(sub))[3:] == [vid(base, key=True, cts=40), aud(base), vid(base + 33, cts=-10)]


def test_rebase_clamps_a_kind_that_starts_earlier() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    with started(bus, V, A) as first:
        first.send_packet(vid(1000, key=True))
        first.send_packet(aud(1000))
    second = started(bus, V, A)
    second.send_packet(aud(500))  # fixes the offset: 500 -> 1100 (and is skipped: no keyframe yet)
    second.send_packet(vid(300, key=True))  # 900 would go back: clamped to video's last 1000
    second.send_packet(vid(633))
    second.send_packet(aud(533))
    assert media(drain(sub))[2:] == [vid(1000, key=True), vid(1233), aud(1133)]
    assert bus.snapshot().timestamps_clamped == 1


def test_small_steps_back_are_clamped_and_big_ones_refused() -> None:
    bus = Bus("live/cam")
    sub = bus.subscribe()
    producer = started(bus, V)
    producer.send_packet(vid(1000, key=True, cts=80))
    producer.send_packet(vid(1033))
    producer.send_packet(vid(1033 - MAX_BACKSTEP_MS, cts=20))
    with pytest.raises(TimestampError, match=r"VIDEO dts 532 is 501 ms before an earlier one \(> 500 ms\)"):
        producer.send_packet(vid(1033 - MAX_BACKSTEP_MS - 1))
    producer.send_packet(vid(1066))
    assert media(drain(sub)) == [vid(1000, key=True, cts=80), vid(1033), vid(1033, cts=20), vid(1066)]
    assert bus.snapshot().timestamps_clamped == 1
    assert bus.packets_in == 4


# Slow subscribers


def test_overflow_drops_to_the_next_keyframe() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=16, name="slow")
    producer = started(bus, V, A)
    producer.send_packet(vid(0, key=True))
    for i in range(1, 30):
        producer.send_packet(vid(i * 33))
        producer.send_packet(aud(i * 33 + 1))
        assert slow.stats().queued <= 16
    assert slow.stats().dropping
    producer.send_config(V2)  # a control event is never dropped
    producer.send_packet(vid(990, key=True))
    producer.send_packet(aud(991))
    events = drain(slow)
    assert events == [
        ProducerJoined(),
        ConfigChanged(config=V),
        ConfigChanged(config=A),
        ConfigChanged(config=V2),
        PacketsDropped(count=59),
        got(vid(990, key=True)),
        got(aud(991)),
    ]
    stats = slow.stats()
    assert (stats.dropped, stats.delivered, stats.dropping, stats.lag_ms) == (59, 2, False, 0)


def test_overflow_on_a_keyframe_resumes_at_once() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=8)
    producer = started(bus, V)
    for i in range(6):
        producer.send_packet(vid(i * 33, key=i == 0))
    producer.send_packet(vid(200, key=True))
    assert drain(slow) == [
        ProducerJoined(),
        ConfigChanged(config=V),
        PacketsDropped(count=6),
        got(vid(200, key=True)),
    ]


def test_superseded_configs_are_coalesced_when_room_is_needed() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=8)
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    for i in range(5):
        producer.send_config(V if i % 2 else V2)  # fills the queue
    producer.send_packet(vid(30, key=True))  # finds it full: kf0 goes, only the newest config stays
    assert drain(slow) == [
        ProducerJoined(),
        ConfigChanged(config=V2),
        PacketsDropped(count=1),
        got(vid(30, key=True)),
    ]


def test_a_queue_full_of_control_events_is_cut_off() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=8)
    for _ in range(5):  # ProducerJoined, then ProducerLeft + ProducerJoined each: 9 events
        bus.publish()
    with pytest.raises(SubscriberCutOffError, match="queue full of 8 control events"):
        slow.receive_nowait()


def test_lagging_subscriber_is_cut_off() -> None:
    bus = Bus("live/cam")
    lagging = bus.subscribe(max_lag_ms=1000, name="viewer-1")
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    for i in range(1, 31):
        producer.send_packet(vid(i * 33))
    assert lagging.stats().lag_ms == 990
    producer.send_packet(vid(31 * 33))
    assert bus.subscriber_count == 0
    stats = lagging.stats()
    assert (stats.cut_off, stats.lag_ms, stats.queued) == (True, 1023, 0)
    with pytest.raises(
        SubscriberCutOffError, match="'viewer-1' on bus 'live/cam' cut off: lag 1023 ms"
    ) as info:
        lagging.receive_nowait()
    assert info.value.lag_ms == 1023
    with pytest.raises(SubscriberCutOffError):  # it stays cut off
        lagging.receive_nowait()
    lagging.close()
    producer.send_packet(vid(32 * 33))  # the producer never notices


def test_a_subscriber_that_keeps_dropping_is_cut_off() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=8, max_lag_ms=500)
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    for i in range(1, 16):
        producer.send_packet(vid(i * 33))
    assert slow.stats().dropping
    assert slow.stats().lag_ms == 495
    producer.send_packet(vid(16 * 33))
    with pytest.raises(SubscriberCutOffError, match="lag 528 ms > max_lag_ms 500"):
        slow.receive_nowait()


def test_other_subscribers_are_unaffected_by_a_slow_one() -> None:
    bus = Bus("live/cam")
    slow = bus.subscribe(max_queue=8, max_lag_ms=300, name="slow")
    fast = bus.subscribe(max_queue=8, name="fast")
    producer = started(bus, V, A)
    sent: list[Packet] = []
    seen: list[BusEvent] = []
    for i in range(40):
        packet = vid(i * 33, key=i % 10 == 0) if i % 2 else aud(i * 33)
        if i == 0:
            packet = vid(0, key=True)
        producer.send_packet(packet)
        sent.append(packet)
        seen.extend(drain(fast))
    assert media(seen) == sent
    assert fast.stats().dropped == 0
    with pytest.raises(SubscriberCutOffError):
        slow.receive_nowait()
    assert [s.name for s in bus.snapshot().subscribers] == ["fast"]


def test_subscribers_share_each_event() -> None:
    bus = Bus("live/cam")
    one, two = bus.subscribe(), bus.subscribe()
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    assert drain(one)[-1] is drain(two)[-1]


def test_snapshot_and_stats() -> None:
    registry = BusRegistry()
    sub = registry.subscribe("live/cam", max_queue=64, max_lag_ms=5000, label="rec")
    producer = registry.publish("live/cam")
    producer.send_config(V)
    producer.send_config(A)
    producer.send_packet(vid(0, key=True))
    producer.send_packet(aud(10))
    producer.send_packet(vid(33))
    sub.receive_nowait()  # ProducerJoined
    sub.receive_nowait()  # ConfigChanged
    sub.receive_nowait()  # ConfigChanged
    sub.receive_nowait()  # the keyframe
    assert registry.snapshot() == [
        BusSnapshot(
            name="live/cam",
            live=True,
            codecs=(Codec.H264, Codec.AAC),
            producers=1,
            packets_in=3,
            bytes_in=14,
            keyframes=1,
            packets_discarded=0,
            timestamps_clamped=0,
            gop_packets=3,
            last_dts_ms=33,
            video_packets_in=2,
            subscribers=(
                SubscriberStats(
                    name="rec",
                    delivered=1,
                    bytes_delivered=6,
                    dropped=0,
                    lag_ms=23,
                    queued=2,
                    max_queue=64,
                    max_lag_ms=5000,
                    dropping=False,
                    cut_off=False,
                ),
            ),
        )
    ]
    bus = registry.get("live/cam")
    assert bus is not None
    assert (bus.packets_in, bus.bytes_in, bus.keyframes, bus.subscriber_count) == (3, 14, 1, 1)
    assert repr(bus) == "<Bus 'live/cam' live=True subscribers=1>"
    assert sub.name == "rec"
    assert sub.bus is bus


def test_departed_subscribers_keep_counting_per_group() -> None:
    # /metrics exposes per-Bus totals as counters: a player leaving must not make them go down.
    bus = Bus("live/cam")
    keep = bus.subscribe(name="rtmp:10.0.0.1:5000#1")
    leave = bus.subscribe(name="rtmp:10.0.0.2:5000#2")
    slow = bus.subscribe(name="rtmp-push:yt", max_queue=8, max_lag_ms=100)
    anonymous = bus.subscribe()
    producer = started(bus, V)
    producer.send_packet(vid(0, key=True))
    producer.send_packet(vid(33))
    drain(keep)
    drain(leave)
    leave.close()
    leave.close()  # idempotent: counted once
    producer.send_packet(vid(500))  # slow is 500 ms behind: cut off
    with pytest.raises(SubscriberCutOffError):
        slow.receive_nowait()
    anonymous.close()
    snap = bus.snapshot()
    assert [s.name for s in snap.subscribers] == ["rtmp:10.0.0.1:5000#1"]
    assert snap.departed == (
        DepartedStats(group="internal", subscribers=1, delivered=0, bytes_delivered=0, dropped=0, cut_off=0),
        DepartedStats(group="rtmp", subscribers=1, delivered=2, bytes_delivered=12, dropped=0, cut_off=0),
        DepartedStats(group="rtmp-push", subscribers=1, delivered=0, bytes_delivered=0, dropped=0, cut_off=1),
    )
    assert snap.video_packets_in == 3


def test_subscriber_group() -> None:
    assert subscriber_group("rtmp:[::1]:5000#3") == "rtmp"
    assert subscriber_group("record") == "record"
    assert subscriber_group("") == "internal"
    assert subscriber_group(":x") == "internal"


def test_keyframe_is_the_newest_cached_one_with_its_config() -> None:
    bus = Bus("live/cam")
    assert bus.keyframe() is None
    producer = started(bus, A)
    producer.send_packet(aud(0))
    assert bus.keyframe() is None  # audio only: the cache holds audio, no keyframe
    producer.send_config(V)
    producer.send_packet(vid(10, key=True))
    producer.send_packet(vid(43))
    first = bus.keyframe()
    assert first is not None and first[0] == V and first[1].dts_ms == 10
    assert bus.keyframe() == first and bus.keyframe()[1] is first[1]  # type: ignore[index]
    producer.send_config(V2)  # mid-GOP: the cached keyframe still decodes with V
    assert bus.keyframe() == first
    producer.send_packet(vid(76, key=True))
    second = bus.keyframe()
    assert second is not None and second[0] == V2 and second[1].dts_ms == 76
    producer.close()
    assert bus.keyframe() is None


# Any interleaving


class Reader:
    """Checks one subscriber's event stream as it is read."""

    def __init__(self, sub: Subscription, max_queue: int) -> None:
        self.sub = sub
        self.max_queue = max_queue
        self.configs: dict[Kind, CodecConfig] = {}
        self.last_dts: dict[Kind, int] = {}
        self.need_keyframe = True
        self.done = False
        self.ended = False

    def read(self, count: int) -> None:
        for _ in range(count):
            try:
                event = self.sub.receive_nowait()
            except trio.WouldBlock:
                return
            except SubscriberCutOffError:
                self.done = True
                return
            except trio.EndOfChannel:
                assert self.ended, "EndOfChannel without close"
                self.done = True
                return
            self.check(event)

    def check(self, event: BusEvent) -> None:
        if isinstance(event, ConfigChanged):
            old = self.configs.get(event.config.kind)
            if event.config.kind is Kind.VIDEO and old is not None and old.codec is not event.config.codec:
                self.need_keyframe = True
            self.configs[event.config.kind] = event.config
        elif isinstance(event, ProducerJoined | PacketsDropped):
            self.need_keyframe = True
        elif isinstance(event, PacketReceived):
            packet = event.packet
            if packet.kind is not Kind.DATA:
                assert self.configs[packet.kind].codec is packet.codec, "a packet before its config"
            assert packet.dts_ms >= self.last_dts.get(packet.kind, 0), "time went backwards"
            self.last_dts[packet.kind] = packet.dts_ms
            if packet.kind is Kind.VIDEO:
                assert packet.keyframe or not self.need_keyframe, "video restarted off a keyframe"
                self.need_keyframe = False


CODECS = {Kind.VIDEO: (Codec.H264, Codec.HEVC), Kind.AUDIO: (Codec.AAC, Codec.OPUS)}


class BusMachine(RuleBasedStateMachine):
    """Random publish / config / packets / subscribe / read / leave sequences on one registry name."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = BusRegistry()
        self.name = "live/prop"
        self.producer: Producer | None = None
        self.configs: dict[Kind, CodecConfig] = {}
        self.high: dict[Kind, int] = {}
        self.gone: list[tuple[Producer, bool]] = []
        self.readers: list[Reader] = []

    @rule(
        replace=st.booleans(),
        kinds=st.sampled_from(
            [(), (Kind.VIDEO,), (Kind.AUDIO,), (Kind.VIDEO, Kind.AUDIO), (Kind.AUDIO, Kind.VIDEO)]
        ),
    )
    def publish(self, replace: bool, kinds: tuple[Kind, ...]) -> None:
        bus = self.registry.get_or_create(self.name)
        if self.producer is not None and not replace:
            with pytest.raises(BusBusyError):
                bus.publish(replace=False)
            return
        producer = bus.publish(replace=replace)
        if self.producer is not None:
            self.gone.append((self.producer, True))
        self.producer, self.configs, self.high = producer, {}, {}
        for kind in kinds:  # most producers announce their codecs at once
            self.send_config(kind, 0, 0)

    @precondition(lambda self: self.producer is not None)
    @rule()
    def leave(self) -> None:
        assert self.producer is not None
        self.producer.close()
        self.gone.append((self.producer, False))
        self.producer = None

    @rule(chance=st.integers(0, 4))
    def close_bus(self, chance: int) -> None:
        bus = self.registry.get(self.name)
        if bus is None or chance:  # rarely: it ends everything
            return
        bus.close()
        if self.producer is not None:
            self.gone.append((self.producer, True))
            self.producer = None
        for reader in self.readers:
            reader.ended = True  # it drains what was queued, then gets EndOfChannel
        assert self.name not in self.registry

    @precondition(lambda self: self.producer is not None)
    @rule(version=st.integers(0, 2))
    def send_metadata(self, version: int) -> None:
        assert self.producer is not None
        self.producer.send_metadata({"version": version, "tracks": [{"id": version}]})

    @precondition(lambda self: self.gone)
    @rule(pick=st.integers(0, 100))
    def send_after_leaving(self, pick: int) -> None:
        producer, evicted = self.gone[pick % len(self.gone)]
        with pytest.raises(ProducerEvictedError if evicted else ProducerClosedError):
            producer.send_packet(aud(0))

    @precondition(lambda self: self.producer is not None)
    @rule(kind=st.sampled_from([Kind.VIDEO, Kind.AUDIO]), which=st.integers(0, 1), version=st.integers(0, 1))
    def send_config(self, kind: Kind, which: int, version: int) -> None:
        assert self.producer is not None
        config = CodecConfig(kind=kind, codec=CODECS[kind][which], data=bytes([version]))
        self.producer.send_config(config)
        self.configs[kind] = config

    @precondition(lambda self: self.producer is not None)
    @rule(
        kind=st.sampled_from([Kind.VIDEO, Kind.VIDEO, Kind.AUDIO, Kind.DATA]),
        keyframe=st.booleans(),
        step=st.integers(0, 400),
        gap=st.sampled_from([1, 33, 120]),
        repeat=st.integers(1, 40),
    )
    def send_packets(self, kind: Kind, keyframe: bool, step: int, gap: int, repeat: int) -> None:
        assert self.producer is not None
        config = self.configs.get(kind)
        default = Codec.AMF0 if kind is Kind.DATA else CODECS[kind][0]
        codec = config.codec if config is not None else default
        for i in range(repeat):
            high = self.high.get(kind)
            dts = max(0, (high or 0) + (step if i == 0 else gap))
            packet = Packet(
                kind=kind, codec=codec, payload=b"\x00", pts_ms=dts, dts_ms=dts, keyframe=keyframe and i == 0
            )
            if config is None and kind is not Kind.DATA:
                with pytest.raises(ValueError, match="send_config"):
                    self.producer.send_packet(packet)
                return
            if high is not None and dts < high - MAX_BACKSTEP_MS:
                with pytest.raises(TimestampError):
                    self.producer.send_packet(packet)
                return
            self.producer.send_packet(packet)  # returns at once: nothing here can wait
            self.high[kind] = dts if high is None else max(high, dts)

    @precondition(lambda self: self.producer is not None and self.high)
    @rule(pick=st.integers(0, 100), back=st.integers(1, 2 * MAX_BACKSTEP_MS))
    def send_late_packet(self, pick: int, back: int) -> None:
        assert self.producer is not None
        kind = sorted(self.high, key=lambda k: k.value)[pick % len(self.high)]
        dts = max(0, self.high[kind] - back)
        codec = Codec.AMF0 if kind is Kind.DATA else self.configs[kind].codec
        packet = Packet(kind=kind, codec=codec, payload=b"\x00", pts_ms=dts, dts_ms=dts, keyframe=False)
        if dts < self.high[kind] - MAX_BACKSTEP_MS:
            with pytest.raises(TimestampError):
                self.producer.send_packet(packet)
        else:
            self.producer.send_packet(packet)  # clamped: readers check time never goes back

    @rule(max_queue=st.sampled_from([8, 16, 64]), max_lag_ms=st.sampled_from([200, 1000, 60_000]))
    def subscribe(self, max_queue: int, max_lag_ms: int) -> None:
        sub = self.registry.subscribe(self.name, max_queue=max_queue, max_lag_ms=max_lag_ms)
        self.readers.append(Reader(sub, max_queue))

    @precondition(lambda self: self.readers)
    @rule(pick=st.integers(0, 100), count=st.integers(0, 40))
    def read(self, pick: int, count: int) -> None:
        self.readers[pick % len(self.readers)].read(count)

    @rule()
    def read_everyone(self) -> None:
        for reader in self.readers:
            reader.read(10_000)

    @precondition(lambda self: self.readers)
    @rule(pick=st.integers(0, 100))
    def unsubscribe(self, pick: int) -> None:
        reader = self.readers.pop(pick % len(self.readers))
        reader.sub.close()
        if not reader.sub.stats().cut_off:
            with pytest.raises(trio.EndOfChannel):  # closing drops what was queued
                reader.sub.receive_nowait()

    @invariant()
    def queues_are_bounded_and_lag_is_enforced(self) -> None:
        for reader in self.readers:
            stats = reader.sub.stats()
            assert stats.queued <= reader.max_queue
            assert stats.cut_off or stats.lag_ms <= stats.max_lag_ms

    @invariant()
    def idle_buses_are_collected(self) -> None:
        attached = [r for r in self.readers if not r.sub.stats().cut_off and not r.ended]
        bus = self.registry.get(self.name)
        assert (bus is not None) == (self.producer is not None or bool(attached))
        if bus is not None:
            assert bus.live == (self.producer is not None)
            assert bus.subscriber_count == len(attached)

    def teardown(self) -> None:
        for reader in self.readers:
            reader.read(10_000)


BusMachine.TestCase.settings = settings(max_examples=examples(150), stateful_step_count=40, deadline=None)
TestBusMachine = BusMachine.TestCase


def test_listeners_are_called_after_every_delivery_and_can_be_removed() -> None:
    from appliance.bus import Bus
    from appliance.media.packets import Codec, CodecConfig, Kind, Packet

    bus = Bus("live/listen")
    calls: list[int] = []

    def listener() -> None:
        calls.append(len(calls))

    bus.add_listener(listener)
    sub = bus.subscribe()
    producer = bus.publish()  # ProducerJoined
    producer.send_config(CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=b"\x12\x10"))
    producer.send_metadata({"a": 1})
    producer.send_packet(
        Packet(kind=Kind.AUDIO, codec=Codec.AAC, payload=b"x", pts_ms=0, dts_ms=0, keyframe=True)
    )
    assert len(calls) == 4
    assert sub.stats().queued == 4  # ...and the events were there when the listener ran
    bus.remove_listener(listener)
    bus.remove_listener(listener)  # absent: ignored
    producer.close()
    assert len(calls) == 4
