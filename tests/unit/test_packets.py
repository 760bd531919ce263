"""The canonical media types: validation, AVCC <-> Annex-B, the Annex-B cache, Metadata."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.packets import (
    Codec,
    CodecConfig,
    Kind,
    Metadata,
    Packet,
    annexb_from_avcc,
    avcc_from_annexb,
    avcc_with_4byte_lengths,
    iter_avcc,
)
from tests.fuzz import examples

SPS = bytes.fromhex("6742c01e95a0")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("6588840021")


def avcc(*nals: bytes, length_size: int = 4) -> bytes:
    return b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in nals)


def video(payload: bytes, *, codec: Codec = Codec.H264, keyframe: bool = True) -> Packet:
    return Packet(kind=Kind.VIDEO, codec=codec, payload=payload, pts_ms=40, dts_ms=0, keyframe=keyframe)


def test_codec_kinds() -> None:
    assert {c for c in Codec if c.kind is Kind.VIDEO} == {Codec.H264, Codec.HEVC, Codec.AV1, Codec.VP9}
    assert {c for c in Codec if c.kind is Kind.AUDIO} == {Codec.AAC, Codec.OPUS, Codec.MP3}
    assert Codec.AMF0.kind is Kind.DATA
    assert [c for c in Codec if c.nal_based] == [Codec.H264, Codec.HEVC]


def test_packet_accepts_pts_before_dts() -> None:
    # FLV's CompositionTime is signed: pts < dts is legal.
    packet = Packet(kind=Kind.VIDEO, codec=Codec.H264, payload=b"", pts_ms=0, dts_ms=40, keyframe=False)
    assert (packet.pts_ms, packet.dts_ms) == (0, 40)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"codec": Codec.AAC}, ValueError, "AAC is AUDIO, not VIDEO"),
        ({"kind": "video"}, TypeError, "want a Kind"),
        ({"codec": "h264"}, TypeError, "want a Codec"),
        ({"payload": bytearray(b"x")}, TypeError, "want bytes, got bytearray"),
        ({"dts_ms": -1}, ValueError, "dts_ms=-1"),
        ({"pts_ms": -5}, ValueError, "pts_ms=-5"),
        ({"pts_ms": True}, TypeError, "want int milliseconds"),
        ({"dts_ms": 1.5}, TypeError, "want int milliseconds"),
        ({"keyframe": 1}, TypeError, "want bool"),
    ],
)
def test_packet_validation(changes: dict[str, object], error: type[Exception], match: str) -> None:
    fields: dict[str, object] = {
        "kind": Kind.VIDEO,
        "codec": Codec.H264,
        "payload": b"",
        "pts_ms": 0,
        "dts_ms": 0,
        "keyframe": True,
    }
    with pytest.raises(error, match=match):
        Packet(**(fields | changes))  # type: ignore[arg-type]


def test_packet_is_frozen_and_repr_hides_payload() -> None:
    packet = video(avcc(IDR) * 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.dts_ms = 5  # type: ignore[misc]
    assert repr(packet) == (
        "Packet(kind=VIDEO, codec=H264, pts_ms=40, dts_ms=0, keyframe=True, payload=<9000 bytes>)"
    )


def test_annexb_converts_and_caches() -> None:
    packet = video(avcc(SPS, PPS, IDR))
    first = packet.annexb()
    assert first == b"\0\0\0\1" + SPS + b"\0\0\0\1" + PPS + b"\0\0\0\1" + IDR
    assert packet.annexb() is first
    # The cache is not part of equality or hashing: a converted packet equals a fresh one.
    assert packet == video(avcc(SPS, PPS, IDR))
    assert hash(packet) == hash(video(avcc(SPS, PPS, IDR)))


def test_annexb_of_empty_payload_is_empty() -> None:
    assert video(b"").annexb() == b""
    assert list(video(b"").nal_units()) == []


def test_hevc_converts_too() -> None:
    vps = bytes.fromhex("40010c01ffff")
    packet = video(avcc(vps, IDR), codec=Codec.HEVC)
    assert packet.annexb() == b"\0\0\0\1" + vps + b"\0\0\0\1" + IDR
    assert list(packet.nal_units()) == [vps, IDR]


def test_nal_units_yields_each_unit() -> None:
    assert list(video(avcc(SPS, PPS, IDR)).nal_units()) == [SPS, PPS, IDR]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\0\0\0", "truncated NAL length at offset 0: 3 bytes left, need 4"),
        (avcc(IDR) + b"\0\0", "truncated NAL length at offset 9: 2 bytes left, need 4"),
        (b"\0\0\0\0" + IDR, "zero NAL length at offset 0"),
        (b"\0\0\0\x09" + IDR, r"NAL length 9 at offset 0 overruns the payload \(5 bytes left\)"),
        (avcc(SPS) + b"\xff\xff\xff\xff", "NAL length 4294967295 at offset 10 overruns"),
    ],
)
def test_malformed_lengths_are_rejected(payload: bytes, match: str) -> None:
    packet = video(payload)
    with pytest.raises(ValueError, match=match):
        packet.annexb()
    # A failed conversion caches nothing: it fails again, the same way.
    with pytest.raises(ValueError, match=match):
        packet.annexb()
    with pytest.raises(ValueError, match=match):
        list(packet.nal_units())


def test_annexb_refuses_codecs_without_nal_units() -> None:
    packet = Packet(kind=Kind.AUDIO, codec=Codec.AAC, payload=b"\x21", pts_ms=0, dts_ms=0, keyframe=True)
    with pytest.raises(ValueError, match="AAC payloads are not NAL units"):
        packet.annexb()
    with pytest.raises(ValueError, match="AAC payloads are not NAL units"):
        packet.nal_units()


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_other_length_sizes(length_size: int) -> None:
    data = avcc(SPS, IDR, length_size=length_size)
    assert list(iter_avcc(data, length_size=length_size)) == [SPS, IDR]
    assert annexb_from_avcc(data, length_size=length_size) == b"\0\0\0\1" + SPS + b"\0\0\0\1" + IDR


def test_bad_length_size() -> None:
    with pytest.raises(ValueError, match="length_size=3"):
        annexb_from_avcc(b"", length_size=3)
    with pytest.raises(ValueError, match="length_size=0"):
        iter_avcc(b"", length_size=0)


def test_with_timestamps_keeps_the_cache() -> None:
    packet = video(avcc(IDR))
    converted = packet.annexb()
    moved = packet.with_timestamps(pts_ms=1040, dts_ms=1000)
    assert (moved.pts_ms, moved.dts_ms, moved.payload, moved.keyframe) == (1040, 1000, packet.payload, True)
    assert moved.annexb() is converted
    assert packet.with_timestamps(pts_ms=40, dts_ms=0) is packet
    with pytest.raises(ValueError, match="dts_ms=-1"):
        packet.with_timestamps(pts_ms=0, dts_ms=-1)


def test_avcc_from_annexb_mixed_start_codes() -> None:
    stream = b"\0\0\0\1" + SPS + b"\0\0\1" + PPS + b"\0\0\0\1" + IDR
    assert avcc_from_annexb(stream) == avcc(SPS, PPS, IDR)


def test_avcc_from_annexb_strips_zeros_and_skips_empty_units() -> None:
    # leading_zero_8bits, an empty unit between two start codes, trailing_zero_8bits (H.264 B.1).
    stream = b"\0\0\0\0\0\1" + SPS + b"\0\0\1\0\0\1" + IDR + b"\0\0\0"
    assert avcc_from_annexb(stream) == avcc(SPS, IDR)


@pytest.mark.parametrize("data", [b"", b"\0", b"\0\0\0\0"])
def test_avcc_from_annexb_without_units_is_empty(data: bytes) -> None:
    assert avcc_from_annexb(data) == b""


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (SPS, "no Annex-B start code in 6 bytes"),
        (b"\x09\0\0\1" + IDR, "1 bytes before the first Annex-B start code are not all zero"),
    ],
)
def test_avcc_from_annexb_rejects_garbage(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        avcc_from_annexb(data)


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes as an encoder does (H.264 7.4.1), making a valid NAL payload."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


# A NAL unit: a header byte (forbidden_zero_bit clear, non-zero type), an escaped body, and a last byte
# that is not zero (the RBSP stop bit), as H.264 7.4.2 requires.
nal_units = st.builds(
    lambda header, body: bytes([header]) + _escape(body) + b"\x80",
    st.integers(1, 0x7F),
    st.binary(max_size=64),
)


@settings(max_examples=examples(200), deadline=None)
@given(nals=st.lists(nal_units, max_size=8), short=st.lists(st.booleans(), min_size=8, max_size=8))
def test_round_trip_avcc_annexb(nals: list[bytes], short: list[bool]) -> None:
    data = avcc(*nals)
    assert list(iter_avcc(data)) == nals
    assert avcc_from_annexb(annexb_from_avcc(data)) == data
    # Encoders mix 3- and 4-byte start codes; the result is the same.
    mixed = b"".join((b"\0\0\1" if s else b"\0\0\0\1") + nal for s, nal in zip(short, nals, strict=False))
    assert avcc_from_annexb(mixed) == data


@settings(max_examples=examples(300), deadline=None)
@given(data=st.one_of(st.binary(max_size=48), st.lists(nal_units, max_size=4).map(lambda n: avcc(*n))))
def test_any_bytes_convert_or_raise_value_error(data: bytes) -> None:
    try:
        annexb = annexb_from_avcc(data)
    except ValueError:
        pass
    else:
        # 4-byte lengths become 4-byte start codes: same size, same units.
        assert len(annexb) == len(data)
        assert annexb.count(b"\0\0\0\1") >= len(list(iter_avcc(data)))
    try:
        back = avcc_from_annexb(data)
    except ValueError:
        pass
    else:
        # Whatever came in, what comes out is well-framed AVCC with no empty units.
        assert all(list(iter_avcc(back)))


def test_codec_config_validation_and_repr() -> None:
    config = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b"\x01", width=1280, height=720, fps=29.97)
    assert repr(config) == (
        "CodecConfig(kind=VIDEO, codec=H264, data=<1 bytes>, width=1280, height=720, fps=29.97)"
    )
    assert CodecConfig(kind=Kind.AUDIO, codec=Codec.MP3, data=b"").sample_rate is None
    with pytest.raises(ValueError, match="OPUS is AUDIO, not VIDEO"):
        CodecConfig(kind=Kind.VIDEO, codec=Codec.OPUS, data=b"")
    with pytest.raises(TypeError, match="want bytes"):
        CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=memoryview(b"\x12\x10"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width=0"):
        CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b"", width=0)
    with pytest.raises(ValueError, match="channels=True"):
        CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=b"", channels=True)


def test_metadata_is_deeply_immutable() -> None:
    source: dict[str, object] = {
        "width": 1280,
        "encoder": "x",
        "tracks": [{"id": 1}],
        "blob": bytearray(b"a"),
    }
    meta = Metadata(source)
    source["width"] = 640
    assert meta == {"width": 1280, "encoder": "x", "tracks": ({"id": 1},), "blob": b"a"}
    tracks = meta["tracks"]
    assert isinstance(tracks, tuple)
    assert isinstance(tracks[0], Metadata)
    with pytest.raises(TypeError):
        meta["width"] = 1  # type: ignore[index]
    assert Metadata([("a", 1)]) == Metadata({"a": 1})
    assert Metadata(meta) == meta
    assert repr(Metadata({"a": 1})) == "Metadata({'a': 1})"
    assert len(meta) == 4
    assert list(meta) == ["width", "encoder", "tracks", "blob"]


def test_metadata_keys_must_be_strings() -> None:
    with pytest.raises(TypeError, match="Metadata key 1: want str"):
        Metadata({1: "x"})  # type: ignore[arg-type]


def test_avcc_with_4byte_lengths_reprefixes_short_lengths() -> None:
    two = b"\x00\x02\x65\x88" + b"\x00\x01\x41"
    assert avcc_with_4byte_lengths(two, 2) == b"\x00\x00\x00\x02\x65\x88\x00\x00\x00\x01\x41"
    four = b"\x00\x00\x00\x01\x41"
    assert avcc_with_4byte_lengths(four, 4) is four
    with pytest.raises(ValueError, match="overruns"):
        avcc_with_4byte_lengths(b"\x00\x09\x65", 2)
