"""The WebRTC package's pure parts: Annex-B conversion, profile-level-id, the AAC -> Opus transcoder, and
the [webrtc] config keys."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import pytest

from appliance.config import ConfigError, load_file
from appliance.media.webrtc.annexb import START, avcc_to_annexb, profile_level_id
from appliance.media.webrtc.opus import OPUS_RATE, OpusTranscoder


def test_avcc_becomes_annexb_with_parameter_sets_in_front() -> None:
    payload = (3).to_bytes(4, "big") + b"\x65ab" + (2).to_bytes(4, "big") + b"\x06x"
    assert avcc_to_annexb(payload) == START + b"\x65ab" + START + b"\x06x"
    assert avcc_to_annexb(payload, [b"\x67sps", b"\x68pps"]) == (
        START + b"\x67sps" + START + b"\x68pps" + START + b"\x65ab" + START + b"\x06x"
    )
    with pytest.raises(ValueError, match="runs past"):
        avcc_to_annexb((9).to_bytes(4, "big") + b"\x65")
    with pytest.raises(ValueError, match="truncated"):
        avcc_to_annexb(b"\x00\x00")


def test_profile_level_id_is_the_sps_bytes_after_the_header() -> None:
    assert profile_level_id(bytes([0x67, 0x42, 0xC0, 0x1E, 0x95])) == "42c01e"
    with pytest.raises(ValueError):
        profile_level_id(b"\x67\x42")


def test_aac_is_transcoded_to_20ms_opus_packets_on_a_48k_clock() -> None:
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 44100, "mono", "fltp", 64000
    enc.time_base = Fraction(1, 44100)
    enc.open()
    transcoder = OpusTranscoder(bytes(enc.extradata or b""))
    out: list[tuple[bytes, int]] = []
    for i in range(50):  # about 1.16 s of silence
        frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
        frame.sample_rate, frame.pts = 44100, i * 1024
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for packet in enc.encode(frame):
            assert packet.pts is not None
            out += transcoder.feed(bytes(packet), packet.pts * 1000 // 44100)
    assert len(out) >= 50 and all(data for data, _ in out)
    steps = {b[1] - a[1] for a, b in itertools.pairwise(out)}
    assert steps == {OPUS_RATE // 50}  # 960 samples a packet, no gaps


def test_webrtc_config_names_the_bad_key() -> None:
    cfg = load_file(None, ['webrtc.ice_addresses=["127.0.0.1"]', "webrtc.max_viewers=3"])
    assert cfg.webrtc.ice_addresses == ("127.0.0.1",) and cfg.webrtc.max_viewers == 3
    with pytest.raises(ConfigError, match=r"webrtc\.ice_addresses"):
        load_file(None, ['webrtc.ice_addresses=["eth0"]'])
    with pytest.raises(ConfigError, match=r"webrtc\.max_viewers"):
        load_file(None, ["webrtc.max_viewers=0"])
