"""JPEG snapshots: sizes and widths (pure), real H.264 and HEVC keyframes decoded and re-encoded with PyAV,
the JPEG decoded back, and the per-keyframe cache under concurrent requests."""

from __future__ import annotations

import io

import av
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.bus import BusRegistry
from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.media.snapshot import (
    MAX_WIDTH,
    MIN_WIDTH,
    NoKeyframeError,
    Snapshots,
    UnknownStreamError,
    UnsupportedCodecError,
    parse_width,
    render_jpeg,
    scaled_size,
)
from tests.fuzz import examples

DARK, BRIGHT = 40, 200  # video (limited) range luma of the test picture


def full_range(y: int) -> float:
    """JPEG is full range: 16..235 becomes 0..255. A snapshot that skipped this would look washed out."""
    return (y - 16) * 255 / 219


def picture(width: int, height: int) -> av.VideoFrame:
    """Left half dark, right half bright: a decode that went wrong (or a mirrored one) shows."""
    frame = av.VideoFrame(width, height, "yuv420p")
    luma = frame.planes[0]
    row = bytes([DARK]) * (width // 2) + bytes([BRIGHT]) * (width - width // 2)
    luma.update((row + bytes(luma.line_size - width)) * height)
    for chroma in frame.planes[1:]:
        chroma.update(bytes([128]) * chroma.buffer_size)
    return frame


def encoded(
    encoder: str, codec: Codec, width: int = 320, height: int = 240
) -> tuple[CodecConfig, list[Packet]]:
    """Three frames encoded and muxed to MP4 in memory, demuxed back: the configuration record (avcC/hvcC)
    and length-prefixed packets, the forms the Bus carries."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(encoder, rate=15)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if encoder == "libx265":
            stream.codec_context.options = {"x265-params": "log-level=none"}
        for i in range(3):
            frame = picture(width, height)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf, "r") as src:
        record = bytes(src.streams.video[0].codec_context.extradata or b"")
        packets = [
            Packet(
                kind=Kind.VIDEO,
                codec=codec,
                payload=bytes(p),
                pts_ms=int(p.pts or 0),
                dts_ms=max(0, int(p.dts or 0)),
                keyframe=p.is_keyframe,
            )
            for p in src.demux(video=0)
            if p.size
        ]
    return CodecConfig(kind=Kind.VIDEO, codec=codec, data=record, width=width, height=height), packets


@pytest.fixture(scope="module")
def h264() -> tuple[CodecConfig, list[Packet]]:
    return encoded("libx264", Codec.H264)


def decode_jpeg(data: bytes) -> av.VideoFrame:
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # SOI ... EOI
    with av.open(io.BytesIO(data), "r", format="image2pipe") as src:
        assert src.streams.video[0].codec_context.name == "mjpeg"
        return next(src.decode(video=0))


def halves(frame: av.VideoFrame) -> tuple[float, float]:
    """Mean luma of the left and right quarter-width bands."""
    plane = frame.planes[0]
    data, stride, w = bytes(plane), plane.line_size, frame.width
    left = [data[y * stride + x] for y in range(frame.height) for x in range(w // 8, w // 4)]
    right = [data[y * stride + x] for y in range(frame.height) for x in range(3 * w // 4, 7 * w // 8)]
    return sum(left) / len(left), sum(right) / len(right)


def test_parse_width() -> None:
    assert parse_width(None) is None and parse_width("") is None
    assert parse_width("640") == 640
    assert parse_width(str(MIN_WIDTH)) == MIN_WIDTH and parse_width(str(MAX_WIDTH)) == MAX_WIDTH
    for bad in ("0", "15", "-3", "abc", "1e3", "12.5", str(MAX_WIDTH + 1), " 64"):
        with pytest.raises(ValueError, match="width="):
            parse_width(bad)


@settings(max_examples=examples(200))
@given(
    width=st.integers(2, 8000).map(lambda w: w - w % 2),
    height=st.integers(2, 8000).map(lambda h: h - h % 2),
    want=st.none() | st.integers(MIN_WIDTH, MAX_WIDTH),
)
def test_scaled_size_only_shrinks_keeps_aspect_and_stays_even(
    width: int, height: int, want: int | None
) -> None:
    w, h = scaled_size(width, height, want)
    if want is None or want >= width:
        assert (w, h) == (width, height)
        return
    assert w % 2 == 0 and h % 2 == 0 and 2 <= w <= want and w <= width and 2 <= h <= height
    assert abs(h - height * w / width) <= 2  # rounding to even


def test_scaled_size_examples() -> None:
    assert scaled_size(1280, 720, 640) == (640, 360)
    assert scaled_size(320, 240, 100) == (100, 76)
    assert scaled_size(320, 240, 101) == (100, 76)
    assert scaled_size(320, 240, 4000) == (320, 240)


def test_h264_keyframe_to_jpeg_of_the_same_picture(h264: tuple[CodecConfig, list[Packet]]) -> None:
    config, packets = h264
    key = packets[0]
    assert key.keyframe
    jpeg = render_jpeg(config, key)
    assert (jpeg.width, jpeg.height, jpeg.dts_ms) == (320, 240, key.dts_ms)
    frame = decode_jpeg(jpeg.data)
    assert (frame.width, frame.height) == (320, 240)
    left, right = halves(frame)
    assert abs(left - full_range(DARK)) < 6 and abs(right - full_range(BRIGHT)) < 6, (left, right)


def test_scaled_down_jpeg(h264: tuple[CodecConfig, list[Packet]]) -> None:
    config, packets = h264
    jpeg = render_jpeg(config, packets[0], width=160)
    frame = decode_jpeg(jpeg.data)
    assert (frame.width, frame.height) == (jpeg.width, jpeg.height) == (160, 120)
    left, right = halves(frame)
    assert abs(left - full_range(DARK)) < 6 and abs(right - full_range(BRIGHT)) < 6


def test_hevc_keyframe_to_jpeg() -> None:
    config, packets = encoded("libx265", Codec.HEVC, 256, 144)
    jpeg = render_jpeg(config, packets[0])
    frame = decode_jpeg(jpeg.data)
    assert (frame.width, frame.height) == (256, 144)
    left, right = halves(frame)
    assert abs(left - full_range(DARK)) < 6 and abs(right - full_range(BRIGHT)) < 6


def test_refusals(h264: tuple[CodecConfig, list[Packet]]) -> None:
    config, packets = h264
    with pytest.raises(NoKeyframeError, match="not a keyframe"):
        render_jpeg(config, next(p for p in packets if not p.keyframe))
    av1 = CodecConfig(kind=Kind.VIDEO, codec=Codec.AV1, data=b"\x81")
    av1_key = Packet(kind=Kind.VIDEO, codec=Codec.AV1, payload=b"\x12\x00", pts_ms=0, dts_ms=0, keyframe=True)
    with pytest.raises(UnsupportedCodecError, match="this stream is AV1"):
        render_jpeg(av1, av1_key)
    garbage = Packet(
        kind=Kind.VIDEO,
        codec=Codec.H264,
        payload=b"\x00\x00\x00\x03\x65\xff\xff",
        pts_ms=0,
        dts_ms=0,
        keyframe=True,
    )
    with pytest.raises(NoKeyframeError):
        render_jpeg(config, garbage)


async def test_one_decode_per_keyframe_and_width_however_many_ask(
    h264: tuple[CodecConfig, list[Packet]],
) -> None:
    config, packets = h264
    buses = BusRegistry()
    snapshots = Snapshots(buses)
    with pytest.raises(UnknownStreamError):
        await snapshots.jpeg("live/cam")
    producer = buses.publish("live/cam")
    with pytest.raises(NoKeyframeError):
        await snapshots.jpeg("live/cam")  # a producer, no keyframe yet
    producer.send_config(config)
    for p in packets:
        producer.send_packet(p)

    results = []

    async def ask(width: int | None) -> None:
        results.append(await snapshots.jpeg("live/cam", width))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask, None)
            nursery.start_soon(ask, 160)
    assert snapshots.decodes == 2
    assert len({id(r) for r in results}) == 2  # everyone got one of the two pictures
    assert sorted({(r.width, r.height) for r in results}) == [(160, 120), (320, 240)]

    # A new keyframe: a new picture, decoded once.
    producer.send_packet(packets[0].with_timestamps(pts_ms=1000, dts_ms=1000))
    newer = await snapshots.jpeg("live/cam")
    assert newer.dts_ms == 1000 and snapshots.decodes == 3
    assert await snapshots.jpeg("live/cam") is newer and snapshots.decodes == 3

    # The producer leaves: no keyframe, then the stream is gone and forgotten.
    producer.close()
    with pytest.raises(UnknownStreamError):
        await snapshots.jpeg("live/cam")
