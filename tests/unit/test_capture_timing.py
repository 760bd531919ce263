"""Pure capture helpers: device timelines, the keyframe rate limit, Annex-B access units -> Bus packets."""

from __future__ import annotations

import pytest

from appliance.media.capture.annexb import AnnexBTranslator
from appliance.media.capture.timing import DeviceTimeline, KeyframeGate
from appliance.media.packets import Codec, Kind

# A real 320x240 constrained-baseline SPS/PPS pair written by libx264 (PyAV wheel), level 1.3.
SPS = bytes.fromhex("6742c00dda0507e840000003004000000f23c50aa8")
PPS = bytes.fromhex("68ce0fc8")
IDR = bytes.fromhex("65888400ffff")
NON_IDR = bytes.fromhex("419a0102")
AUD = bytes.fromhex("09f0")


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def test_timeline_follows_device_spacing_from_the_first_anchor() -> None:
    tl = DeviceTimeline()
    # Device stamps 33.3 ms apart; the thread saw them with jitter. Device spacing wins.
    assert tl.map(1000.0, now_ms=5_000.0) == 5000
    assert tl.map(1000.0333, now_ms=5_050.0) == 5033
    assert tl.map(1000.0667, now_ms=5_070.0) == 5067


def test_timeline_reanchors_when_the_device_clock_jumps() -> None:
    tl = DeviceTimeline(max_drift_ms=500)
    tl.map(10.0, now_ms=100.0)
    # The device restarted its clock: its stamp says 10 s earlier than it is.
    assert tl.map(0.5, now_ms=140.0) == 140
    assert tl.reanchors == 1
    assert tl.map(0.533, now_ms=175.0) == 173


def test_timeline_never_goes_back_and_steps_at_least_min_step() -> None:
    tl = DeviceTimeline(min_step_ms=1)
    assert tl.map(None, now_ms=100.2) == 100
    assert tl.map(None, now_ms=100.4) == 101  # same ms: pushed one on
    assert tl.map(None, now_ms=99.0) == 102  # the clock can't go back, but a caller's rounding can
    audio = DeviceTimeline(min_step_ms=0)
    assert audio.map(None, now_ms=5.0) == 5
    assert audio.map(None, now_ms=5.0) == 5


def test_keyframe_gate_rate_limits_requests() -> None:
    gate = KeyframeGate(min_interval_s=1.0)
    assert not gate.should_force(0.0)
    gate.request()
    assert gate.should_force(0.0)
    gate.keyframe_made(0.0)
    for _ in range(50):  # a PLI storm from fifty viewers
        gate.request()
    assert not gate.should_force(0.5)
    assert gate.pending
    assert gate.should_force(1.0)
    assert (gate.requests, gate.forced) == (51, 2)


def test_keyframe_gate_natural_keyframe_serves_pending_requests() -> None:
    gate = KeyframeGate(min_interval_s=1.0)
    gate.request()
    gate.keyframe_made(3.0)  # the GOP's own keyframe came first
    assert not gate.pending
    assert not gate.should_force(10.0)
    with pytest.raises(ValueError, match="min_interval_s"):
        KeyframeGate(-1)


def test_annexb_translator_moves_parameter_sets_out_of_band() -> None:
    tr = AnnexBTranslator(fps=30.0)
    # Nothing comes out before parameter sets: a decoder could not use it.
    early = tr.translate(annexb(NON_IDR), pts_ms=0)
    assert early.config is None and early.packet is None
    first = tr.translate(annexb(AUD, SPS, PPS, IDR), pts_ms=40)
    assert first.config is not None and first.packet is not None
    assert first.config.codec is Codec.H264 and first.config.kind is Kind.VIDEO
    assert (first.config.width, first.config.height) == (320, 240)
    assert first.config.fps == 30.0
    assert first.packet.keyframe
    assert list(first.packet.nal_units()) == [IDR]  # AUD, SPS and PPS gone
    assert (first.packet.pts_ms, first.packet.dts_ms) == (40, 40)
    # The same parameter sets again (every IDR of a UVC camera): no new config.
    again = tr.translate(annexb(SPS, PPS, IDR), pts_ms=80)
    assert again.config is None and again.packet is not None and again.packet.keyframe
    delta = tr.translate(annexb(NON_IDR), pts_ms=113, dts_ms=100)
    assert delta.packet is not None and not delta.packet.keyframe
    assert (delta.packet.pts_ms, delta.packet.dts_ms) == (113, 100)


def test_annexb_translator_announces_changed_parameter_sets() -> None:
    tr = AnnexBTranslator()
    tr.translate(annexb(SPS, PPS, IDR), pts_ms=0)
    other_pps = bytes.fromhex("68ce3c80")  # another PPS id
    changed = tr.translate(annexb(other_pps, IDR), pts_ms=33)
    assert changed.config is not None
    assert other_pps in changed.config.data


def test_annexb_translator_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        AnnexBTranslator().translate(b"\x07not annex b", pts_ms=0)
