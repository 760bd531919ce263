"""The WebRTC package's pure parts: Annex-B conversion (once per packet), profile-level-id and the
profiles the answer offers, B-frame detection, trickle ICE fragments, who may watch, the AAC -> Opus
transcoder, and the [webrtc] config keys."""

from __future__ import annotations

import dataclasses
import itertools
import re
from fractions import Fraction

import av
import pytest

from appliance.config import ConfigError, load_file
from appliance.media.h264 import H264Sps
from appliance.media.packets import Codec, Kind, Packet
from appliance.media.webrtc.negotiation import (
    SdpFragmentError,
    candidate_address,
    etag,
    has_b_frames,
    parse_sdpfrag,
    profile_level_id,
    sdp_profile,
)
from appliance.media.webrtc.opus import OPUS_RATE, OpusTranscoder
from appliance.web.auth import Principal, viewer_decision


def packet(payload: bytes, *, pts: int = 0, dts: int = 0, key: bool = False) -> Packet:
    return Packet(kind=Kind.VIDEO, codec=Codec.H264, payload=payload, pts_ms=pts, dts_ms=dts, keyframe=key)


def nal(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def test_profile_level_id_and_the_profile_it_negotiates_as() -> None:
    assert profile_level_id(bytes([0x67, 0x42, 0xC0, 0x1E, 0x95])) == "42c01e"
    with pytest.raises(ValueError):
        profile_level_id(b"\x67\x42")
    assert sdp_profile("42e01f") == sdp_profile("42c01e") == "Constrained Baseline"
    assert sdp_profile("42001f") == "Baseline"
    assert sdp_profile("640c1f") == "Constrained High" and sdp_profile("64001f") == "High"
    with pytest.raises(ValueError):
        sdp_profile("42e0")


def test_b_frames_from_the_sps_when_it_says_else_from_the_packets() -> None:
    base = H264Sps(
        profile_idc=100, constraint_flags=0, level_idc=31, sps_id=0, chroma_format_idc=1,
        bit_depth_luma=8, bit_depth_chroma=8, width=320, height=240, frame_mbs_only=True,
    )  # fmt: skip
    in_order = [packet(b"", pts=t, dts=t) for t in (0, 66, 133)]
    reordered = [*in_order, packet(b"", pts=200, dts=166)]
    assert has_b_frames(dataclasses.replace(base, max_num_reorder_frames=0), reordered) is False
    assert has_b_frames(dataclasses.replace(base, max_num_reorder_frames=2), in_order) is True
    assert has_b_frames(dataclasses.replace(base, profile_idc=66), reordered) is False
    assert has_b_frames(base, in_order) is False and has_b_frames(base, reordered) is True
    assert has_b_frames(None, reordered) is True


def test_trickle_fragments_parse_and_junk_is_refused() -> None:
    fragment = parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=mid:0\r\na=candidate:1 1 UDP 2130706431 127.0.0.1 50000 typ host\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
        "a=candidate:2 1 UDP 2130706431 192.0.2.7 50001 typ host\r\na=end-of-candidates\r\n"
    )
    assert fragment.ufrag == "EsAw" and fragment.pwd == "P2uYro0UCOQ4zxjKXaWCBui1"
    assert fragment.end_of_candidates
    assert [(c.mid, c.mline_index) for c in fragment.candidates] == [("0", 0), ("1", 1)]
    assert [candidate_address(c.candidate) for c in fragment.candidates] == ["127.0.0.1", "192.0.2.7"]
    assert candidate_address("1 1 UDP 1 abc.local 5 typ host") == "abc.local"
    assert candidate_address("short") is None
    with pytest.raises(SdpFragmentError, match="not an SDP line"):
        parse_sdpfrag("hello")
    with pytest.raises(SdpFragmentError, match="before any m= line"):
        parse_sdpfrag("a=candidate:1 1 UDP 1 127.0.0.1 5 typ host")
    with pytest.raises(SdpFragmentError, match="at most"):
        parse_sdpfrag("a=x\n" * 1000)
    assert etag("s", "u1") != etag("s", "u2") and etag("s", "u1").startswith('"')


def test_viewer_decision_is_like_an_rtmp_play() -> None:
    session = Principal(kind="token")
    assert viewer_decision(public=True, principal=None, play_secrets=(), presented=None).allowed
    assert not viewer_decision(public=False, principal=None, play_secrets=(), presented="x").allowed
    assert viewer_decision(public=False, principal=session, play_secrets=("s",), presented=None).allowed
    refused = viewer_decision(public=True, principal=None, play_secrets=("s",), presented=None)
    assert refused.status == 401 and "no play secret" in refused.detail
    wrong = viewer_decision(public=True, principal=None, play_secrets=("s",), presented="t")
    assert wrong.status == 401 and "wrong play secret" in wrong.detail
    assert viewer_decision(public=False, principal=None, play_secrets=("s",), presented="s").allowed


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
    cfg = load_file(
        None,
        [
            'webrtc.ice_addresses=["127.0.0.1"]',
            "webrtc.max_viewers=3",
            'webrtc.udp_ports="50000-50009"',
            "webrtc.transcode=false",
            'webrtc.ice_servers=[{urls="stun:stun.example.com:3478"},'
            '{urls=["turn:t.example.com:3478"],username="u",credential="pw"}]',
        ],
    )
    assert cfg.webrtc.ice_addresses == ("127.0.0.1",) and cfg.webrtc.max_viewers == 3
    assert cfg.webrtc.udp_ports == range(50000, 50010) and cfg.webrtc.transcode is False
    assert [s.urls for s in cfg.webrtc.ice_servers] == [
        ("stun:stun.example.com:3478",),
        ("turn:t.example.com:3478",),
    ]
    shown = cfg.to_dict()["webrtc"]
    assert shown["udp_ports"] == "50000-50009" and "pw" not in repr(shown)
    assert load_file(None, []).webrtc.udp_ports is None
    for override, key in [
        ('webrtc.ice_addresses=["eth0"]', "webrtc.ice_addresses"),
        ("webrtc.max_viewers=0", "webrtc.max_viewers"),
        ('webrtc.udp_ports="50100-50000"', "webrtc.udp_ports"),
        ('webrtc.udp_ports="fifty"', "webrtc.udp_ports"),
        ("webrtc.transcode=3", "webrtc.transcode"),
        ('webrtc.ice_servers=[{urls="http://x"}]', "webrtc.ice_servers"),
        ('webrtc.ice_servers=[{urls="turn:x:1"}]', "webrtc.ice_servers"),
        ('webrtc.ice_servers=[{url="stun:x:1"}]', "webrtc.ice_servers"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(key)) as failed:
            load_file(None, [override])
        assert "credential" not in str(failed.value) or "<secret>" in str(failed.value)
