"""WHIP ingest's media path without a peer: encoded frames as aiortc's receiver hands them over (Annex-B
access units on a 90 kHz clock, Opus packets on 48 kHz) become the Bus's configs and packets, and the tap
that stands in for the receiver's decoder queue."""

from __future__ import annotations

import fractions
import itertools
import math
import struct
import threading
import time

import av
import pytest

from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from tests.peers import peers_required

try:
    from appliance.media.webrtc.opus import OpusToAac
    from appliance.media.webrtc.whip import _Depacketized, _FrameTap
except ImportError:  # pragma: no cover - without the extra
    if peers_required():
        raise
    # Only when APPLIANCE_REQUIRE_PEERS is unset: checked just above.
    pytest.skip("aiortc (the webrtc extra) is not installed", allow_module_level=True)  # REQUIRE_PEERS


def h264_units(count: int) -> list[bytes]:
    """`count` Annex-B access units of a 64x48 libx264 stream, parameter sets in band (as browsers send)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 48, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 15)
    ctx.options = {
        "x264-params": "keyint=5:bframes=0:repeat-headers=1:log-level=error",
        "tune": "zerolatency",
    }
    units: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame(64, 48, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 16) % 256]) * plane.buffer_size)
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    return units[:count]


def opus_packets(count: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    enc.open()
    out: list[bytes] = []
    for i in range(count + 5):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        values = [int(8000 * math.sin(2 * math.pi * 440 * (960 * i + k) / 48000)) for k in range(960)]
        frame.planes[0].update(struct.pack("<1920h", *[v for v in values for _ in (0, 1)]))
        frame.sample_rate, frame.pts, frame.time_base = 48000, 960 * i, fractions.Fraction(1, 48000)
        out += [bytes(p) for p in enc.encode(frame)]
    return out[:count]


def test_annexb_frames_become_an_avc_config_and_length_prefixed_packets_on_the_rtp_clock() -> None:
    delivered: list[CodecConfig | Packet] = []
    media = _Depacketized(time.monotonic(), delivered.extend)
    media.on_video(b"\x00\x00\x00\x01\x41junk-before-any-sps", 0)  # nothing decodable yet: dropped
    assert delivered == []
    for i, unit in enumerate(h264_units(6)):
        media.on_video(unit, 6000 * i)  # 15 fps on the 90 kHz clock
    config = delivered[0]
    assert isinstance(config, CodecConfig) and config.codec is Codec.H264
    assert (config.width, config.height) == (64, 48)
    packets = [p for p in delivered if isinstance(p, Packet)]
    assert len(packets) == 6 and packets[0].keyframe and packets[5].keyframe  # keyint=5
    assert [p.pts_ms - packets[0].pts_ms for p in packets] == [0, 66, 133, 200, 266, 333]
    assert all(p.pts_ms == p.dts_ms for p in packets)
    # Out of band now: no SPS/PPS left in the payloads, which are 4-byte length-prefixed.
    for p in packets:
        size = int.from_bytes(p.payload[:4], "big")
        assert size <= len(p.payload) - 4 and p.payload[4] & 0x1F not in (7, 8)
    # Only one config although every keyframe repeated the parameter sets.
    assert sum(isinstance(x, CodecConfig) for x in delivered) == 1
    media.on_video(b"garbage", 99_000)  # not Annex-B: it loses only itself
    assert media.errors == 1


def test_opus_becomes_aac_once_with_its_config_first_and_gaps_reanchor_the_clock() -> None:
    delivered: list[CodecConfig | Packet] = []
    media = _Depacketized(time.monotonic(), delivered.extend)
    for i, payload in enumerate(opus_packets(50)):
        media.on_audio(payload, 960 * i + (48_000 if i >= 25 else 0))  # a 1 s gap (DTX) half way
    config = delivered[0]
    assert isinstance(config, CodecConfig) and config.codec is Codec.AAC
    assert (config.sample_rate, config.channels) == (48000, 2)
    packets = [p for p in delivered if isinstance(p, Packet)]
    assert all(p.kind is Kind.AUDIO and p.codec is Codec.AAC for p in packets)
    steps = [b.pts_ms - a.pts_ms for a, b in itertools.pairwise(packets)]
    assert max(steps) > 900  # the gap is kept, so audio stays on the video's timeline
    assert all(20 <= s <= 22 for s in steps if s < 900)  # 1024 samples at 48 kHz
    assert OpusToAac().feed(b"\xff\xff\xff", 0) == []  # junk decodes to nothing and raises nothing


def test_the_tap_takes_frames_and_lets_the_decoder_thread_end() -> None:
    frames: list[tuple[bytes, int]] = []
    tap = _FrameTap(lambda data, ts: frames.append((data, ts)))

    class Frame:
        data = b"\x00\x00\x00\x01\x65"
        timestamp = 3000

    tap.put(("codec", Frame()))
    assert frames == [(b"\x00\x00\x00\x01\x65", 3000)]
    ended = threading.Event()

    def decoder_thread() -> None:  # what aiortc's decoder_worker does with its input queue
        while tap.get() is not None:
            pass
        ended.set()

    thread = threading.Thread(target=decoder_thread)
    thread.start()
    tap.put(None)  # the receiver stopping
    thread.join(5)
    assert ended.is_set()
