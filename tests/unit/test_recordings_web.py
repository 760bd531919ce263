"""Recordings over HTTP: ids and path traversal, durations (onMetaData or the last tag), the listing, the
FLV -> fragmented MP4 remux (read back with PyAV), and the endpoints on real hypercorn."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
import trio

from appliance.bus import BusRegistry
from appliance.config import Address, Config
from appliance.media.flv_file import TAG_SCRIPT, TAG_VIDEO, flv_header, segment_metadata_body, tag
from appliance.media.recording_files import Recording
from appliance.media.remux import RemuxError, flv_duration_s, last_tag_timestamp_ms, probe_flv, remux_to_fmp4
from appliance.supervisor import Supervisor, SupervisorSnapshot
from appliance.web import RouteRegistry, create_app, serve_web
from appliance.web import recordings as recordings_web
from appliance.web.recordings import (
    BadRecordingNameError,
    DurationCache,
    list_recordings,
    register_recordings,
    resolve_recording,
)
from tests.harness import raw_request

NAME = "20260101-120000-000001.flv"


def write_flv(path: Path, seconds: float = 2.0, *, width: int = 160, height: int = 120) -> Path:
    """A real recording: H.264 (15 fps, a keyframe a second) and AAC, muxed to FLV by PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as out:
        video = out.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = 15
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        frames = int(seconds * 15)
        for i in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 8) % 256]) * plane.buffer_size)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = 1024
        for i in range(int(seconds * 44100 / samples)):
            sound = av.AudioFrame(format="fltp", layout="mono", samples=samples)
            sound.sample_rate = 44100
            sound.planes[0].update(bytes(samples * 4))
            sound.pts = i * samples
            sound.time_base = Fraction(1, 44100)
            out.mux(audio.encode(sound))
        out.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flv(tmp_path_factory.mktemp("flv") / "rec.flv")


def boxes(data: bytes) -> Iterator[str]:
    """Top-level ISO BMFF box types, in order."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        yield kind.decode()
        pos += size if size else len(data)


# -- ids ----------------------------------------------------------------------------------------------


def test_resolve_recording(tmp_path: Path) -> None:
    assert resolve_recording(tmp_path, f"live/cam/{NAME}") == tmp_path / "live" / "cam" / NAME
    for bad in (
        f"../cam/{NAME}",
        f"live/../{NAME}",
        f"live/cam/../{NAME}",
        f"/live/cam/{NAME}",
        f"live/cam/x/{NAME}",
        f"cam/{NAME}",
        NAME,
        "live/cam/passwd",
        f"live/cam/{NAME}.part",
        f"live/cam/{NAME}/",
        f"../../{NAME}",
        f"live/cam/..{NAME}",
        f"live/.../{NAME}",
        "",
    ):
        with pytest.raises(BadRecordingNameError):
            resolve_recording(tmp_path, bad)


# -- durations ----------------------------------------------------------------------------------------


def test_duration_from_metadata(flv: Path) -> None:
    duration = flv_duration_s(flv)
    assert duration is not None and duration == pytest.approx(2.0, abs=0.15)


def test_duration_from_the_last_tag_without_metadata(tmp_path: Path) -> None:
    body = b"\x17\x01\x00\x00\x00" + b"\x00" * 20  # bodies are not parsed for this
    data = (
        flv_header()
        + tag(TAG_SCRIPT, 0, segment_metadata_body({}))  # duration 0.0: a segment a crash left
        + tag(TAG_VIDEO, 40, body)
        + tag(TAG_VIDEO, 80, body)
        + tag(TAG_VIDEO, 0x1234567, body)  # past 24 bits: the extended byte counts
    )
    path = tmp_path / "x.flv"
    path.write_bytes(data)
    assert last_tag_timestamp_ms(path) == 0x1234567
    assert flv_duration_s(path) == (0x1234567 - 40) / 1000
    path.write_bytes(data[:-3])  # a cut tail: no trailing PreviousTagSize to trust
    assert last_tag_timestamp_ms(path) is None and flv_duration_s(path) is None
    path.write_bytes(flv_header())
    assert last_tag_timestamp_ms(path) is None
    assert last_tag_timestamp_ms(tmp_path / "missing.flv") is None


def test_duration_cache_reads_each_file_version_once(tmp_path: Path) -> None:
    reads: list[Path] = []

    def read(path: Path) -> float:
        reads.append(path)
        return 1.5

    cache = DurationCache(read, size=2)

    def rec(name: str, mtime: float, size: int = 10) -> Recording:
        return Recording(
            path=tmp_path / name, stream="live/cam", seq=1, started_utc="", size_bytes=size, mtime=mtime
        )

    assert cache.duration_s(rec("a", 1.0)) == 1.5
    assert cache.duration_s(rec("a", 1.0)) == 1.5
    assert cache.reads == 1
    cache.duration_s(rec("a", 2.0))  # rewritten: read again
    cache.duration_s(rec("a", 2.0, size=11))
    assert cache.reads == 3
    cache.duration_s(rec("b", 1.0))
    cache.duration_s(rec("a", 1.0))  # evicted by the bound of 2
    assert cache.reads == 5


# -- listing ------------------------------------------------------------------------------------------


def test_listing_newest_first_with_urls_and_disk(tmp_path: Path, flv: Path) -> None:
    root = tmp_path / "recordings"
    for stream, name in (
        ("live/cam", "20260101-120000-000001.flv"),
        ("live/cam", "20260101-120002-000003.flv"),
        ("live/s3cret", "20260101-120001-000002.flv"),
        ("other/x y", "20260101-120001-000004.flv"),  # not a stream name: not a recording
    ):
        (root / stream).mkdir(parents=True, exist_ok=True)
        (root / stream / name).write_bytes(flv.read_bytes())
    (root / "live/cam/20260101-120004-000005.flv.part").write_bytes(b"open")
    items, disk = list_recordings(root, DurationCache(), secrets={"live": ("s3cret",)})
    assert [i["file"] for i in items] == [
        "live/cam/20260101-120002-000003.flv",
        "live/cam/20260101-120000-000001.flv",
    ]
    first = items[0]
    assert first["stream"] == "live/cam" and first["size_bytes"] == flv.stat().st_size
    assert first["started"] == "2026-01-01T12:00:02Z"
    assert first["duration_s"] == pytest.approx(2.0, abs=0.15)
    assert first["download_url"] == "/api/recordings/live/cam/20260101-120002-000003.flv"
    assert first["mp4_url"] == first["download_url"] + "/mp4"
    assert disk["recordings_bytes"] == 2 * flv.stat().st_size
    assert disk["total_bytes"] >= disk["used_bytes"] > 0 and disk["free_bytes"] > 0
    assert list_recordings(tmp_path / "nothing-yet", DurationCache())[0] == []


# -- remux --------------------------------------------------------------------------------------------


def test_remux_to_fragmented_mp4(flv: Path) -> None:
    assert probe_flv(flv) == {"video": "h264", "audio": "aac"}
    chunks: list[bytes] = []
    total = remux_to_fmp4(flv, chunks.append, chunk_bytes=512)
    data = b"".join(chunks)
    # Handed on as it is made (the header, then each keyframe's fragment), not all at the end.
    assert total == len(data) and len(chunks) >= 3
    assert all(len(c) >= 512 for c in chunks[:-1])
    order = list(boxes(data))
    # Fragmented, front to back: an empty moov first, then moof/mdat pairs (a player starts at once).
    assert order[:2] == ["ftyp", "moov"] and order.count("moof") >= 2 and "mdat" in order
    with av.open(io.BytesIO(data), "r") as mp4:
        assert sorted(s.codec_context.name for s in mp4.streams) == ["aac", "h264"]
        video = mp4.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (160, 120)
        frames = sum(1 for _ in mp4.decode(video=0))
    assert frames == 30  # every frame, none re-encoded away


def test_remux_stops_when_the_consumer_does(flv: Path) -> None:
    class Gone(Exception):
        pass

    calls = 0

    def write(chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        raise Gone

    with pytest.raises(Gone):
        remux_to_fmp4(flv, write, chunk_bytes=1024)
    assert calls == 1


def test_remux_refuses_what_is_not_flv(tmp_path: Path) -> None:
    bad = tmp_path / NAME
    bad.write_bytes(b"not an flv at all" * 100)
    with pytest.raises(RemuxError, match="not a readable FLV"):
        probe_flv(bad)
    with pytest.raises(RemuxError):
        remux_to_fmp4(bad, lambda chunk: None)


# -- the endpoints ------------------------------------------------------------------------------------


@dataclass
class Source:
    state_dir: Path
    version: str = "9.9.9"
    device_name: str = "unit"
    cfg: Config = field(default_factory=Config)
    routes: RouteRegistry = field(default_factory=RouteRegistry)
    buses: BusRegistry = field(default_factory=BusRegistry)

    def uptime_s(self) -> float:
        return 1.0

    def snapshot(self) -> SupervisorSnapshot:
        return Supervisor("root", []).snapshot()

    def status_extra(self) -> dict[str, Any]:
        return {}


async def test_endpoints(tmp_path: Path, flv: Path) -> None:
    source = Source(state_dir=tmp_path)
    root = tmp_path / "recordings"
    (root / "live/cam").mkdir(parents=True)
    (root / "live/cam" / NAME).write_bytes(await trio.Path(flv).read_bytes())
    outside = tmp_path / "secret.flv"
    outside.write_bytes(b"FLV not yours")
    os.symlink(outside, root / "live/cam/20260101-120009-000009.flv")
    (root / "live/cam/20260101-120010-000010.flv").write_bytes(b"garbage" * 50)
    register_recordings(source.routes, source)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve_web, create_app(source), Address("127.0.0.1", 0))  # type: ignore[arg-type]

        async def get(path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
            return await trio.to_thread.run_sync(raw_request, urls[0], path, method)

        status, _, body = await get("/api/recordings")
        assert status == 200 and b'"recordings"' in body and NAME.encode() in body

        status, headers, body = await get(f"/api/recordings/live/cam/{NAME}")
        assert status == 200 and body == await trio.Path(flv).read_bytes()
        assert headers["content-type"] == "video/x-flv"
        assert headers["content-disposition"] == f'attachment; filename="live-cam-{NAME}"'

        status, headers, body = await get(f"/api/recordings/live/cam/{NAME}/mp4")
        assert status == 200 and headers["content-type"] == "video/mp4"
        assert headers["content-disposition"].startswith("inline;")
        assert list(boxes(body))[:2] == ["ftyp", "moov"]
        with av.open(io.BytesIO(body), "r") as mp4:
            assert sorted(s.codec_context.name for s in mp4.streams) == ["aac", "h264"]

        status, headers, body = await get(f"/api/recordings/live/cam/{NAME}/mp4", "HEAD")
        assert status == 200 and body == b"" and headers["content-type"] == "video/mp4"

        for path in (
            "/api/recordings/../../etc/passwd",
            "/api/recordings/live/cam/..%2F..%2F..%2Fsecret.flv",
            "/api/recordings/%2e%2e/%2e%2e/secret.flv",
            "/api/recordings/live/cam/passwd/mp4",
        ):
            status, headers, body = await get(path)
            assert status == 400, path
            assert headers["content-type"] == "application/problem+json" and b"want app/key" in body
        for path in (
            "/api/recordings/live/cam/20260101-120009-000009.flv",  # a symlink out of the directory
            "/api/recordings/live/cam/20260101-120009-000009.flv/mp4",
            "/api/recordings/live/cam/20990101-000000-000001.flv",
        ):
            status, headers, body = await get(path)
            assert status == 404, path
            assert b"not yours" not in body
        status, headers, body = await get("/api/recordings/live/cam/20260101-120010-000010.flv/mp4")
        assert status == 422 and b"not a readable FLV" in body
        nursery.cancel_scope.cancel()


async def test_an_abandoned_mp4_download_stops_the_remux_thread(
    tmp_path: Path, flv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[BaseException | None] = []
    writes: list[int] = []

    def remux(path: Path, write: Any, **kw: Any) -> int:
        def counted(chunk: bytes) -> None:
            writes.append(len(chunk))
            write(chunk)

        try:
            n = remux_to_fmp4(path, counted, chunk_bytes=1024)
        except BaseException as e:
            ended.append(e)
            raise
        ended.append(None)
        return n

    monkeypatch.setattr(recordings_web, "remux_to_fmp4", remux)
    response = recordings_web._Fmp4Response(flv, trio.CapacityLimiter(1), {})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(response._remux)
        first = await response.body_iterator.__anext__()  # type: ignore[attr-defined]
        assert list(boxes(first))[:1] == ["ftyp"]
        nursery.cancel_scope.cancel()  # what __call__ does when the client goes away
    assert len(ended) == 1 and isinstance(ended[0], trio.Cancelled)
    assert len(writes) <= 2  # the one handed over, at most one more waiting in the hand-off
