"""The recorder: segmenting, files, `.part` recovery, retention under a wrong clock, disk full, on demand.

The Recorder does its file I/O in worker threads, which trio's autojump clock does not wait for (virtual
time would race ahead while a thread writes). So these tests run on the real clock with the recorder's
periods shortened (`fast`), and wait for conditions rather than for time. The cuts themselves depend on
dts only, so seconds of media are pushed at once.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from appliance.bus import Bus, BusRegistry, PacketReceived, Producer
from appliance.config import RecordConfig
from appliance.media import flv, recorder
from appliance.media.aac import build_audio_specific_config, codec_config_from_asc
from appliance.media.bus_events import ConfigChanged, MetadataChanged, ProducerJoined, ProducerLeft
from appliance.media.flv_file import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvReader, FlvTag
from appliance.media.h264 import build_avc_config, codec_config_from_avc
from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet
from appliance.media.recorder import Recorder
from appliance.media.recording_files import (
    PLAUSIBLE_EPOCH,
    Closed,
    Opened,
    OpenSegment,
    Recording,
    SegmentWriter,
    WriteTags,
    max_seq,
    plan_retention,
    scan_recordings,
)
from appliance.media.segmenter import SegmentEnded, Segmenter, SegmentStarted, TagsReady

SPS = bytes.fromhex("6742c00dda0507ec0440000003004000000c83c50aa8")
PPS = bytes.fromhex("68ce0fc8")
VIDEO = codec_config_from_avc(build_avc_config([SPS], [PPS]))
AUDIO = codec_config_from_asc(build_audio_specific_config(2, 44100, 2))
META = {"width": 320.0, "height": 240.0, "encoder": "test", "duration": 0.0}
NOW = 1_760_000_000.0  # 2025-10-09, a plausible wall clock
DAY = 86_400.0
YEAR = 365 * DAY
FRAME_MS = 40
AUDIO_MS = 20
CTS_MS = 80  # every video frame shown 80 ms after it is decoded, as with B-frames


def avcc(nal: bytes) -> bytes:
    return len(nal).to_bytes(4, "big") + nal


def video(dts: int, key: bool) -> Packet:
    nal = (b"\x65\x88\x84" if key else b"\x41\x9a\x02") + bytes(range(1, 200))
    return Packet(
        kind=Kind.VIDEO, codec=Codec.H264, payload=avcc(nal), pts_ms=dts + CTS_MS, dts_ms=dts, keyframe=key
    )


def audio(dts: int) -> Packet:
    return Packet(
        kind=Kind.AUDIO,
        codec=Codec.AAC,
        payload=b"\x21\x10" + bytes(60),
        pts_ms=dts,
        dts_ms=dts,
        keyframe=True,
    )


def media(start_ms: int, end_ms: int, *, gop_ms: int = 400, with_audio: bool = True) -> list[Packet]:
    """Video every 40 ms (a keyframe every `gop_ms`) and audio every 20 ms, in dts order, video first."""
    packets = []
    for t in range(start_ms, end_ms, AUDIO_MS):
        if t % FRAME_MS == 0:
            packets.append(video(t, t % gop_ms == 0))
        if with_audio:
            packets.append(audio(t))
    return packets


def announce(producer: Producer, *, with_audio: bool = True) -> None:
    producer.send_metadata(META)
    producer.send_config(VIDEO)
    if with_audio:
        producer.send_config(AUDIO)


def send(producer: Producer, packets: list[Packet]) -> None:
    for packet in packets:
        producer.send_packet(packet)


def read_tags(path: Path) -> list[FlvTag]:
    reader = FlvReader()
    tags = reader.feed(path.read_bytes()) + reader.feed(b"")
    assert reader.bad_previous_sizes == 0, path
    return tags


def metadata_of(tags: list[FlvTag]) -> dict[str, object]:
    assert tags[0].tag_type == TAG_SCRIPT
    name, args = flv.parse_script(tags[0].body)
    assert name == "onMetaData"
    assert isinstance(args[0], dict | Metadata)
    return dict(args[0].items())


def flv_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.flv"))


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def config(tmp_path: Path, **kw: object) -> RecordConfig:
    kw.setdefault("dir", tmp_path / "rec")
    return RecordConfig(**kw)  # type: ignore[arg-type]


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder, "POLL_S", 0.01)
    monkeypatch.setattr(recorder, "FLUSH_S", 0.01)
    monkeypatch.setattr(recorder, "SYNC_S", 0.02)
    monkeypatch.setattr(recorder, "RETRY_S", 0.2)
    monkeypatch.setattr(recorder, "RETENTION_S", 0.05)
    monkeypatch.setattr(recorder, "CLOSE_TIMEOUT_S", 0.5)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[str], list[str]]]:
    caplog.set_level(logging.DEBUG, logger="appliance.record")

    def lines(event: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(event + " ")]

    yield lines


async def wait_until(cond: Callable[[], object], what: str) -> None:
    with trio.fail_after(10):
        while True:
            if cond():
                return
            await trio.sleep(0.005)


@asynccontextmanager
async def running(rec: Recorder) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        yield
        nursery.cancel_scope.cancel()


async def publish(buses: BusRegistry, name: str = "live/cam") -> tuple[Bus, Producer]:
    producer = buses.publish(name)
    await wait_until(lambda: producer.bus.subscriber_count >= 1, "the recorder subscribes")
    return producer.bus, producer


def drained(bus: Bus) -> bool:
    return all(s.queued == 0 for s in bus.snapshot().subscribers if s.name == "record")


def stream_status(rec: Recorder, name: str = "live/cam") -> recorder.StreamStatus:
    return next(s for s in rec.status().streams if s.stream == name)


# -- the core ----------------------------------------------------------------------------------


def feed(seg: Segmenter, events: list[object]) -> list[object]:
    out: list[object] = []
    for event in events:
        out += seg.receive(event)  # type: ignore[arg-type]
    return out


def test_segmenter_cuts_at_the_first_keyframe_after_segment_ms() -> None:
    seg = Segmenter(segment_ms=1000)
    events = [ProducerJoined(), ConfigChanged(config=VIDEO), ConfigChanged(config=AUDIO)]
    out = feed(seg, [*events, *(PacketReceived(packet=p) for p in media(200, 3000))])
    starts = [e for e in out if isinstance(e, SegmentStarted)]
    ends = [e for e in out if isinstance(e, SegmentEnded)]
    # Keyframes every 400 ms from 0: the first one kept is at 400 (200 is audio and a P-frame: skipped).
    assert [s.first_dts_ms for s in starts] == [400, 1600, 2800]
    assert [e.duration_s for e in ends] == [1.2, 1.2]
    assert seg.skipped == 15  # 200..399: 5 P-frames and 10 audio packets before the first keyframe
    assert feed(seg, [ProducerLeft()]) == [SegmentEnded(duration_s=0.2, reason="producer")]
    assert not seg.open and seg.configs == {}


def test_segmenter_audio_only_config_change_pause() -> None:
    seg = Segmenter(segment_ms=500)
    out = feed(
        seg, [ConfigChanged(config=AUDIO), *(PacketReceived(packet=audio(t)) for t in range(0, 1200, 20))]
    )
    assert [e.first_dts_ms for e in out if isinstance(e, SegmentStarted)] == [0, 500, 1000]
    # Video appearing ends the audio-only segment; the next starts at a keyframe.
    assert feed(seg, [ConfigChanged(config=VIDEO)]) == [SegmentEnded(duration_s=0.2, reason="config")]
    assert feed(seg, [PacketReceived(packet=audio(1200))]) == []
    assert isinstance(feed(seg, [PacketReceived(packet=video(1240, True))])[0], SegmentStarted)
    seg.pause()
    assert feed(seg, [PacketReceived(packet=video(1640, True))]) == [] and not seg.open
    seg.resume()
    started = feed(seg, [PacketReceived(packet=video(2040, True))])
    assert isinstance(started[0], SegmentStarted) and isinstance(started[1], TagsReady)


def test_segmenter_head_and_zero_based_timestamps() -> None:
    seg = Segmenter(segment_ms=60_000)
    out = feed(
        seg,
        [
            MetadataChanged(metadata=Metadata(META)),
            ConfigChanged(config=VIDEO),
            ConfigChanged(config=AUDIO),
            PacketReceived(packet=video(5000, True)),
            PacketReceived(packet=audio(4990)),  # interleaved just before the keyframe: clamped to 0
            PacketReceived(packet=video(5040, False)),
        ],
    )
    started = out[0]
    assert isinstance(started, SegmentStarted)
    data = started.head + b"".join(e.data for e in out if isinstance(e, TagsReady))
    reader = FlvReader()
    tags = reader.feed(data)
    assert metadata_of(tags) | {"duration": 0.0} == {**META, "filesize": 0.0}
    assert [t.tag_type for t in tags] == [TAG_SCRIPT, TAG_VIDEO, TAG_AUDIO, TAG_VIDEO, TAG_AUDIO, TAG_VIDEO]
    assert flv.parse_video(tags[1].body, 0) == flv.MediaConfig(
        CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=VIDEO.data)
    )
    assert [t.ts_ms for t in tags[3:]] == [0, 0, 40]
    first = flv.parse_video(tags[3].body, tags[3].ts_ms)
    assert isinstance(first, flv.MediaPacket) and first.packet.keyframe
    assert first.packet.pts_ms - first.packet.dts_ms == CTS_MS


# -- recording through a real Bus --------------------------------------------------------------


async def test_segments_are_cut_at_keyframes_and_finished(fast: None, tmp_path: Path) -> None:
    buses = BusRegistry()
    rec = Recorder(config(tmp_path, streams=("live/*",), segment_s=1.0), tmp_path, buses)
    async with running(rec):
        _, producer = await publish(buses)
        announce(producer)
        send(producer, media(0, 5000))
        await wait_until(lambda: stream_status(rec).segments_written == 4, "four segments close")
        assert stream_status(rec).recording
        producer.close()  # the publisher leaves: the open segment is closed
        await wait_until(lambda: stream_status(rec).segments_written == 5, "all closed")
        status = stream_status(rec)
        assert not status.recording and status.error is None and not part_files(rec.root)
    files = flv_files(rec.root)
    assert all(f.parent == rec.root / "live" / "cam" for f in files)
    assert [r.seq for r in scan_recordings(rec.root)] == [1, 2, 3, 4, 5]
    durations = []
    for path in files:
        tags = read_tags(path)
        meta = metadata_of(tags)
        assert meta["filesize"] == path.stat().st_size
        assert meta["encoder"] == "test" and meta["width"] == 320.0
        assert [t.tag_type for t in tags[1:3]] == [TAG_VIDEO, TAG_AUDIO]  # sequence headers in every segment
        media_tags = [t for t in tags[3:] if t.tag_type in (TAG_VIDEO, TAG_AUDIO)]
        assert media_tags[0].tag_type == TAG_VIDEO and media_tags[0].ts_ms == 0
        first = flv.parse_video(media_tags[0].body, 0)
        assert isinstance(first, flv.MediaPacket) and first.packet.keyframe
        last_video = max(t.ts_ms for t in media_tags if t.tag_type == TAG_VIDEO)
        assert meta["duration"] == pytest.approx((last_video + FRAME_MS) / 1000)
        durations.append(meta["duration"])
    # Keyframes every 400 ms, segments of 1 s: cut at 1200, 2400, 3600, 4800; the last ends with the stream.
    assert durations == [1.2, 1.2, 1.2, 1.2, 0.2]


async def test_a_new_publisher_starts_a_new_segment(fast: None, tmp_path: Path) -> None:
    buses = BusRegistry()
    rec = Recorder(config(tmp_path, streams=("*",), segment_s=60.0), tmp_path, buses)
    async with running(rec):
        for run in range(2):
            _, producer = await publish(buses)
            announce(producer)
            send(producer, media(0, 1000))
            producer.close()
            await wait_until(lambda n=run: stream_status(rec).segments_written == n + 1, "closed")
    assert [metadata_of(read_tags(p))["duration"] for p in flv_files(rec.root)] == [1.0, 1.0]


async def test_start_and_stop_on_demand(fast: None, tmp_path: Path, logs: Callable[[str], list[str]]) -> None:
    buses = BusRegistry()
    rec = Recorder(config(tmp_path, segment_s=60.0), tmp_path, buses)
    async with running(rec):
        producer = buses.publish("live/cam")
        announce(producer)
        send(producer, media(0, 1000))
        assert rec.status().streams == ()  # not in record.streams
        rec.start("live/cam")
        await wait_until(lambda: producer.bus.subscriber_count == 1, "start() subscribes")
        send(producer, media(1000, 2000))
        await wait_until(lambda: drained(producer.bus), "the recorder has taken every event")
        rec.stop("live/cam")
        await wait_until(lambda: stream_status(rec).segments_written == 1, "stop() closes the segment")
        assert producer.bus.subscriber_count == 0
        status = stream_status(rec)
        assert not status.wanted and not status.recording and status.segments_written == 1
        assert "reason=stopped" in logs("record.segment_closed")[0]
        # The GOP cache primed the recorder: its segment starts at the keyframe at 800 ms, not at 1000.
        assert metadata_of(read_tags(flv_files(rec.root)[0]))["duration"] == 1.2
        with pytest.raises(ValueError, match="app/key"):
            rec.start("nokey")


# -- .part recovery ----------------------------------------------------------------------------


def segment_parts(packets: list[Packet]) -> tuple[bytes, bytes]:
    """The head and the tags a segment of `packets` holds."""
    seg = Segmenter(segment_ms=600_000)
    events = [
        MetadataChanged(metadata=Metadata(META)),
        ConfigChanged(config=VIDEO),
        ConfigChanged(config=AUDIO),
        *(PacketReceived(packet=p) for p in packets),
    ]
    out = feed(seg, events)
    assert isinstance(out[0], SegmentStarted)
    return out[0].head, b"".join(e.data for e in out if isinstance(e, TagsReady))


def segment_bytes(packets: list[Packet]) -> bytes:
    return b"".join(segment_parts(packets))


@pytest.mark.parametrize("tail", ["half a tag", "zeros", "nothing"])
async def test_a_crash_leftover_part_is_finished(
    fast: None, tmp_path: Path, tail: str, logs: Callable[[str], list[str]]
) -> None:
    rec = Recorder(config(tmp_path), tmp_path, BusRegistry())
    directory = rec.root / "live" / "cam"
    directory.mkdir(parents=True)
    head, tags = segment_parts(media(0, 2000))
    good = head + tags
    extra = {"half a tag": segment_bytes(media(0, 2100))[len(good) : len(good) + 30], "zeros": bytes(4096)}
    part = directory / "20250101-000000-000007.flv.part"
    part.write_bytes(good + extra.get(tail, b""))
    empty = directory / "20250101-000100-000008.flv.part"
    empty.write_bytes(segment_parts(media(0, 20))[0])  # header, onMetaData and configs: no media
    async with running(rec):
        await wait_until(lambda: not part_files(rec.root), "leftovers handled")
    final = directory / "20250101-000000-000007.flv"
    assert flv_files(rec.root) == [final]
    assert final.read_bytes()[len(head) :] == tags  # every whole tag kept, the rest cut
    assert final.stat().st_size == len(good)
    meta = metadata_of(read_tags(final))
    assert meta["duration"] == 2.0 and meta["filesize"] == len(good)
    assert logs("record.recovered")[0].startswith(f"record.recovered path={final} duration_s=2.000")
    assert len(logs("record.discarded")) == 1
    assert max_seq(rec.root) == 7


# -- retention ---------------------------------------------------------------------------------


def fake_recording(root: Path, stream: str, seq: int, *, size: int = 100, mtime: float = NOW) -> Path:
    path = root / stream / f"20250101-000000-{seq:06d}.flv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(size))
    os.utime(path, (mtime, mtime))
    return path


def survivors(root: Path) -> list[int]:
    return [r.seq for r in scan_recordings(root)]


async def test_max_bytes_deletes_the_oldest_by_sequence(
    fast: None, tmp_path: Path, logs: Callable[[str], list[str]]
) -> None:
    rec = Recorder(config(tmp_path, max_bytes=250), tmp_path, BusRegistry(), wall_clock=lambda: NOW)
    for seq in range(1, 6):
        # The oldest files carry the newest mtimes (a clock that was ahead): order is by sequence only.
        fake_recording(rec.root, "live/a" if seq % 2 else "live/b", seq, mtime=NOW - seq * 60)
    async with running(rec):
        await wait_until(lambda: rec.status().retention_passes >= 1, "a retention pass")
    assert survivors(rec.root) == [4, 5]
    assert [line.split()[2] for line in logs("record.deleted")] == ["reason=max_bytes"] * 3


async def test_max_age_with_a_sane_clock_keeps_the_newest_per_stream(fast: None, tmp_path: Path) -> None:
    rec = Recorder(config(tmp_path, max_age_s=7 * DAY), tmp_path, BusRegistry(), wall_clock=lambda: NOW)
    fake_recording(rec.root, "live/a", 1, mtime=NOW - 30 * DAY)
    fake_recording(rec.root, "live/b", 2, mtime=NOW - 20 * DAY)
    fake_recording(rec.root, "live/a", 3, mtime=NOW - 10 * DAY)
    fake_recording(rec.root, "live/a", 4, mtime=NOW - 9 * DAY)
    fake_recording(rec.root, "live/a", 5, mtime=NOW - DAY)
    async with running(rec):
        await wait_until(lambda: rec.status().retention_passes >= 1, "a retention pass")
    assert survivors(rec.root) == [2, 5]  # 2 is old but the newest of live/b
    assert rec.status().clock_suspect is None


@pytest.mark.parametrize("clock", [1_000.0, NOW - 2 * YEAR], ids=["1970", "behind the files"])
async def test_a_clock_behind_the_recordings_deletes_nothing_by_age(
    fast: None, tmp_path: Path, clock: float, logs: Callable[[str], list[str]]
) -> None:
    rec = Recorder(config(tmp_path, max_age_s=DAY), tmp_path, BusRegistry(), wall_clock=lambda: clock)
    for seq in range(1, 5):
        fake_recording(rec.root, "live/a", seq, mtime=NOW - (5 - seq) * 3 * DAY)
    async with running(rec):
        await wait_until(lambda: rec.status().retention_passes >= 2, "two retention passes")
    assert survivors(rec.root) == [1, 2, 3, 4]
    assert rec.status().clock_suspect is not None
    assert len(logs("record.clock_suspect")) == 1  # once per change, not every pass


async def test_a_clock_step_at_ntp_sync_does_not_age_recordings(
    fast: None, tmp_path: Path, logs: Callable[[str], list[str]]
) -> None:
    """Boot with a stale clock, record, then NTP steps the clock years ahead: nothing must look years old."""
    step = {"s": 0.0}
    base = time.time() - trio.current_time()

    def wall() -> float:
        return base + trio.current_time() + step["s"]

    buses = BusRegistry()
    rec = Recorder(
        config(tmp_path, streams=("live/*",), segment_s=1.0, max_age_s=7 * DAY),
        tmp_path,
        buses,
        wall_clock=wall,
    )
    async with running(rec):
        _, producer = await publish(buses)
        announce(producer)
        send(producer, media(0, 4000))
        producer.close()
        await wait_until(lambda: stream_status(rec).segments_written == 4, "four segments")
        mtimes = [p.stat().st_mtime for p in flv_files(rec.root)]
        step["s"] = 3 * YEAR
        passes = rec.status().retention_passes
        await wait_until(lambda: rec.status().retention_passes >= passes + 2, "passes after the step")
    assert len(flv_files(rec.root)) == 4
    moved = [p.stat().st_mtime - m for p, m in zip(flv_files(rec.root), mtimes, strict=True)]
    assert all(abs(d - 3 * YEAR) < 60 for d in moved), moved
    assert logs("record.clock_step") and logs("record.redated")[0] == "record.redated files=4"
    assert rec.status().clock_suspect is None


def rec_(seq: int, mtime: float, stream: str = "live/a") -> Recording:
    return Recording(
        path=Path(f"/r/{stream}/{seq}.flv"),
        stream=stream,
        seq=seq,
        started_utc="",
        size_bytes=10,
        mtime=mtime,
    )


def test_plan_retention_effective_mtimes() -> None:
    recs = [
        rec_(1, NOW - 30 * DAY),
        rec_(2, 1_000.0),  # written before NTP on a 1970 clock, after a file of 30 days ago
        rec_(3, 2_000.0, "live/b"),  # 1970 too, but nothing older vouches for it: age unknown, kept
        rec_(4, NOW),
    ]
    plan = plan_retention(
        recs[2:3] + recs[:2] + recs[3:], open_bytes=0, max_bytes=10**9, max_age_s=7 * DAY, now=NOW
    )
    assert [(r.seq, why) for r, why in plan.deletions] == [(1, "max_age"), (2, "max_age")]
    assert plan.clock_suspect is None
    # Open segments count against max_bytes; the 1970 file goes by size since size ignores the clock.
    plan = plan_retention(recs, open_bytes=25, max_bytes=50, max_age_s=YEAR, now=PLAUSIBLE_EPOCH - 1)
    assert [(r.seq, why) for r, why in plan.deletions] == [(1, "max_bytes"), (2, "max_bytes")]
    assert plan.clock_suspect is not None and "not set yet" in plan.clock_suspect


# -- disk full and a stuck disk never stall the relay ------------------------------------------


async def test_disk_full_stops_recording_with_a_clear_status_and_resumes(
    fast: None, tmp_path: Path, logs: Callable[[str], list[str]]
) -> None:
    free = {"bytes": 10**12}
    buses = BusRegistry()
    rec = Recorder(
        config(tmp_path, streams=("live/*",), segment_s=60.0, min_free_bytes=200 * 10**6),
        tmp_path,
        buses,
        free_bytes=lambda _: free["bytes"],
    )
    clock = {"ms": 0}

    def more(ms: int = 200) -> None:
        send(producer, media(clock["ms"], clock["ms"] + ms))
        clock["ms"] += ms

    async with running(rec):
        bus, producer = await publish(buses)
        player = bus.subscribe(max_queue=100_000, max_lag_ms=10**9, name="player")
        announce(producer)
        more()
        await wait_until(lambda: stream_status(rec).recording, "recording")
        free["bytes"] = 120 * 10**6
        with trio.fail_after(10):
            while stream_status(rec).error is None:
                more()
                await trio.sleep(0.01)
        status = stream_status(rec)
        assert status.error == "disk full: 120 MB free, need 200 MB (record.min_free)"
        assert not status.recording and status.wanted
        assert "reason=disk_full" in logs("record.segment_closed")[0]
        assert logs("record.stopped")[0].startswith(
            'record.stopped stream=live/cam reason="disk full: 120 MB'
        )
        await wait_until(lambda: not part_files(rec.root), "the segment was closed properly")
        assert len(flv_files(rec.root)) == 1 and read_tags(flv_files(rec.root)[0])
        free["bytes"] = 10**12
        with trio.fail_after(10):
            while not stream_status(rec).recording:
                more()
                await trio.sleep(0.01)
        assert stream_status(rec).error is None
        # The relay's side never noticed: a player got every packet.
        received = 0
        while True:
            try:
                event = player.receive_nowait()
            except trio.WouldBlock:
                break
            received += isinstance(event, PacketReceived)
        assert received == bus.packets_in


async def test_a_stuck_disk_never_blocks_the_relay(
    fast: None, tmp_path: Path, logs: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "MAX_LAG_MS", 2_000)
    stuck = threading.Event()
    entered = threading.Event()

    def free_bytes(_: Path) -> int:
        entered.set()
        stuck.wait(30)  # a disk that stopped answering
        return 10**12

    buses = BusRegistry()
    rec = Recorder(config(tmp_path, streams=("live/*",)), tmp_path, buses, free_bytes=free_bytes)
    try:
        async with running(rec):
            bus, producer = await publish(buses)
            bus.subscribe(max_queue=100_000, max_lag_ms=10**9, name="player")
            announce(producer)
            send(producer, media(0, 200))
            await wait_until(entered.is_set, "the writer thread is stuck")
            t0 = time.monotonic()
            send(producer, media(200, 10_000))  # 10 s of media while the recorder is stuck
            assert time.monotonic() - t0 < 2.0
            stats = {s.name: s for s in bus.snapshot().subscribers}
            assert stats["player"].dropped == 0
            assert "record" not in stats  # lagged 2 s behind: the Bus cut the recorder off, the relay went on
    finally:
        stuck.set()
    assert logs("record.close_timeout")  # shutdown did not wait for the stuck thread


def test_max_seq_counts_parts(tmp_path: Path) -> None:
    fake_recording(tmp_path, "live/a", 3)
    (tmp_path / "live" / "b").mkdir(parents=True)
    (tmp_path / "live" / "b" / "20250101-000000-000009.flv.part").write_bytes(b"")
    (tmp_path / "live" / "b" / "notes.txt").write_bytes(b"")
    assert max_seq(tmp_path) == 9
    assert max_seq(tmp_path / "missing") == 0


def test_enospc_mid_write_closes_a_valid_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tags = segment_parts(media(0, 2000))[1]
    first = len(segment_parts(media(0, 1000))[1])  # a tag boundary
    seg = Segmenter(segment_ms=600_000)
    started = feed(seg, [ConfigChanged(config=VIDEO), PacketReceived(packet=video(0, True))])[0]
    assert isinstance(started, SegmentStarted)
    writer = SegmentWriter(tmp_path, 10, lambda _: 10**9)
    path = tmp_path / "live" / "cam" / "20250101-000000-000001.flv"
    out = writer.apply([OpenSegment(path, started), WriteTags(tags[:first], 1000)], periodic=False)
    assert out.error is None and out.steps == [Opened(path)]
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        if fd > 2 and len(data) > 100:
            real_write(fd, bytes(data[:100]))  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    out = writer.apply([WriteTags(tags[first:], 2000)], periodic=False)
    monkeypatch.undo()
    assert out.error == "disk full: No space left on device (1000 MB free)"
    size = len(started.head) + first
    assert out.steps == [Closed(path, size, 1.0, "error")]
    assert path.stat().st_size == size and not path.with_name(path.name + ".part").exists()
    meta = metadata_of(read_tags(path))
    assert meta["duration"] == 1.0 and meta["filesize"] == size
