"""FLV tag bodies: legacy and Enhanced RTMP video/audio, script data, round trips and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media import flv
from appliance.media.flv import (
    EndOfSequence,
    FlvError,
    MediaConfig,
    MediaPacket,
    Skipped,
    audio_body,
    audio_config_body,
    fourcc,
    metadata_body,
    needs_enhanced,
    parse_audio,
    parse_script,
    parse_video,
    video_body,
    video_config_body,
)
from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet
from appliance.media.rtmp import amf0
from tests.fuzz import examples

SPS = bytes.fromhex("6742c01e95a0")
PPS = bytes.fromhex("68ce3c80")
AVC_RECORD = bytes.fromhex("0142c01effe10006") + SPS + bytes.fromhex("010004") + PPS
RECORDS = {
    Codec.H264: AVC_RECORD,
    Codec.HEVC: bytes.fromhex("01016000000090000000000078f000fcfdf8f800000f03"),
    Codec.AV1: bytes.fromhex("81000c000a0b0000002ccfbf"),
    Codec.VP9: bytes.fromhex("01000000000a0a0100000000"),
}
ASC = bytes.fromhex("1210")  # AAC-LC, 44.1 kHz, stereo
OPUS_HEAD = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
VIDEO_CODECS = (Codec.H264, Codec.HEVC, Codec.AV1, Codec.VP9)


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)


def video(codec: Codec, payload: bytes, *, dts: int = 1000, cto: int = 0, keyframe: bool = True) -> Packet:
    return Packet(
        kind=Kind.VIDEO, codec=codec, payload=payload, pts_ms=dts + cto, dts_ms=dts, keyframe=keyframe
    )


def audio(codec: Codec, payload: bytes, ts: int = 500) -> Packet:
    return Packet(kind=Kind.AUDIO, codec=codec, payload=payload, pts_ms=ts, dts_ms=ts, keyframe=True)


def parsed_packet(result: object) -> Packet:
    assert isinstance(result, MediaPacket), result
    return result.packet


# --- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", VIDEO_CODECS)
def test_video_config_round_trip(codec: Codec) -> None:
    config = CodecConfig(kind=Kind.VIDEO, codec=codec, data=RECORDS[codec])
    assert parse_video(video_config_body(config), 0) == MediaConfig(config)


@pytest.mark.parametrize(
    ("codec", "cto"),
    # AV1 and VP9 carry no composition offset; pts = dts + cto >= 0 (dts is 1000).
    [(c, cto) for c in (Codec.H264, Codec.HEVC) for cto in (0, 40, -20, -1000, 0x7FFFFF)]
    + [(Codec.AV1, 0), (Codec.VP9, 0)],
)
@pytest.mark.parametrize("keyframe", [True, False])
def test_video_packet_round_trip(codec: Codec, keyframe: bool, cto: int) -> None:
    payload = avcc(b"\x65\x88\x84") if codec.nal_based else b"\x12\x00\x0a\x0b"
    packet = video(codec, payload, cto=cto, keyframe=keyframe)
    assert parsed_packet(parse_video(video_body(packet), packet.dts_ms)) == packet


def test_aac_round_trip() -> None:
    config = CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=ASC)
    assert parse_audio(audio_config_body(config), 0) == MediaConfig(config)
    for frame in (b"\x21\x10\x05", b""):
        packet = audio(Codec.AAC, frame)
        assert parsed_packet(parse_audio(audio_body(packet, config), 500)) == packet
        assert parsed_packet(parse_audio(audio_body(packet, None), 500)) == packet


def test_opus_round_trip() -> None:
    config = CodecConfig(kind=Kind.AUDIO, codec=Codec.OPUS, data=OPUS_HEAD)
    assert parse_audio(audio_config_body(config), 0) == MediaConfig(config)
    packet = audio(Codec.OPUS, b"\xfc\xff\xfe")
    assert parsed_packet(parse_audio(audio_body(packet, config), 500)) == packet


@pytest.mark.parametrize(
    ("sample_rate", "channels", "first"),
    [
        (None, None, 0x2F),
        (44100, 2, 0x2F),
        (48000, 2, 0x2F),
        (22050, 1, 0x2A),
        (11025, 2, 0x27),
        (8000, 1, 0xE2),
    ],
)
def test_mp3_round_trip(sample_rate: int | None, channels: int | None, first: int) -> None:
    config = CodecConfig(
        kind=Kind.AUDIO, codec=Codec.MP3, data=b"", sample_rate=sample_rate, channels=channels
    )
    packet = audio(Codec.MP3, b"\xff\xfb\x90\x64")
    body = audio_body(packet, config)
    assert body == bytes((first,)) + packet.payload
    assert parsed_packet(parse_audio(body, 500)) == packet


@given(
    codec=st.sampled_from(VIDEO_CODECS),
    payload=st.binary(max_size=64),
    dts=st.integers(0, 2**40),
    cto=st.integers(-0x800000, 0x7FFFFF),
    keyframe=st.booleans(),
)
@settings(max_examples=examples(500))
def test_video_round_trip_property(codec: Codec, payload: bytes, dts: int, cto: int, keyframe: bool) -> None:
    cto = max(cto, -dts) if codec.nal_based else 0
    packet = video(codec, payload, dts=dts, cto=cto, keyframe=keyframe)
    assert parsed_packet(parse_video(video_body(packet), dts)) == packet


# --- byte vectors --------------------------------------------------------------------------------------


def test_h264_bodies_match_the_flv_spec() -> None:
    config = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=AVC_RECORD)
    assert video_config_body(config).startswith(bytes.fromhex("170000000001"))
    frame = avcc(b"\x65\x88")
    assert video_body(video(Codec.H264, frame, cto=40)) == bytes.fromhex("1701000028") + frame
    assert (
        video_body(video(Codec.H264, frame, cto=-20, keyframe=False)) == bytes.fromhex("2701ffffec") + frame
    )
    assert video_body(video(Codec.H264, frame)) == bytes.fromhex("1701000000") + frame


def test_enhanced_video_bodies_match_e_rtmp() -> None:
    frame = avcc(b"\x26\x01")
    assert video_body(video(Codec.HEVC, frame)) == b"\x93hvc1" + frame  # CodedFramesX, keyframe
    assert video_body(video(Codec.HEVC, frame, keyframe=False)) == b"\xa3hvc1" + frame
    assert video_body(video(Codec.HEVC, frame, cto=40)) == b"\x91hvc1\x00\x00\x28" + frame
    assert video_body(video(Codec.HEVC, frame, cto=-2, keyframe=False)) == b"\xa1hvc1\xff\xff\xfe" + frame
    assert video_body(video(Codec.AV1, b"\x12\x00")) == b"\x91av01\x12\x00"
    assert video_body(video(Codec.VP9, b"\x82", keyframe=False)) == b"\xa1vp09\x82"
    for codec in (Codec.HEVC, Codec.AV1, Codec.VP9):
        config = CodecConfig(kind=Kind.VIDEO, codec=codec, data=RECORDS[codec])
        assert video_config_body(config) == b"\x90" + fourcc(codec) + RECORDS[codec]


def test_audio_bodies_match_the_specs() -> None:
    aac = CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=ASC)
    assert audio_config_body(aac) == b"\xaf\x00" + ASC
    assert audio_body(audio(Codec.AAC, b"\x21"), aac) == b"\xaf\x01\x21"
    opus = CodecConfig(kind=Kind.AUDIO, codec=Codec.OPUS, data=OPUS_HEAD)
    assert audio_config_body(opus) == b"\x90Opus" + OPUS_HEAD  # SoundFormat 9 (ExHeader), SequenceStart
    assert audio_body(audio(Codec.OPUS, b"\xfc"), opus) == b"\x91Opus\xfc"


def test_fourcc_and_needs_enhanced() -> None:
    assert [fourcc(c) for c in VIDEO_CODECS] == [b"avc1", b"hvc1", b"av01", b"vp09"]
    assert [fourcc(c) for c in (Codec.AAC, Codec.OPUS, Codec.MP3)] == [b"mp4a", b"Opus", b".mp3"]
    with pytest.raises(ValueError, match="AMF0 has no E-RTMP FourCC"):
        fourcc(Codec.AMF0)
    assert {c for c in Codec if needs_enhanced(c)} == {Codec.HEVC, Codec.AV1, Codec.VP9, Codec.OPUS}


# --- parsing details -----------------------------------------------------------------------------------


def test_legacy_hevc_codec_id_12() -> None:
    frame = avcc(b"\x26\x01")
    packet = parsed_packet(parse_video(b"\x1c\x01\x00\x00\x28" + frame, 80))
    assert (packet.codec, packet.pts_ms, packet.dts_ms, packet.keyframe) == (Codec.HEVC, 120, 80, True)
    record = RECORDS[Codec.HEVC]
    assert parse_video(b"\x1c\x00\x00\x00\x00" + record, 0) == MediaConfig(
        CodecConfig(kind=Kind.VIDEO, codec=Codec.HEVC, data=record)
    )


def test_enhanced_avc1_and_mp3() -> None:
    packet = parsed_packet(parse_video(b"\xa1avc1\x00\x00\x10" + avcc(b"\x41"), 100))
    assert (packet.codec, packet.pts_ms, packet.keyframe) == (Codec.H264, 116, False)
    packet = parsed_packet(parse_video(b"\x93avc1" + avcc(b"\x65"), 100))
    assert (packet.codec, packet.pts_ms, packet.keyframe) == (Codec.H264, 100, True)
    assert parsed_packet(parse_audio(b"\x91.mp3\xff\xfb", 7)) == audio(Codec.MP3, b"\xff\xfb", 7)
    assert parse_audio(b"\x90.mp3", 7) == Skipped("E-RTMP defines no MP3 sequence header")


@pytest.mark.parametrize(("first", "keyframe"), [(0x17, True), (0x27, False), (0x37, False), (0x47, True)])
def test_frame_types(first: int, keyframe: bool) -> None:
    assert parsed_packet(parse_video(bytes((first,)) + b"\x01\x00\x00\x00", 0)).keyframe is keyframe


def test_negative_pts_is_clamped_to_zero() -> None:
    packet = parsed_packet(parse_video(bytes.fromhex("2701ffffec") + avcc(b"\x41"), 10))
    assert (packet.pts_ms, packet.dts_ms) == (0, 10)
    packet = parsed_packet(parse_video(b"\xa1hvc1\xff\xff\x00" + avcc(b"\x02"), 0))
    assert (packet.pts_ms, packet.dts_ms) == (0, 0)


@pytest.mark.parametrize(
    ("body", "kind", "codec"),
    [
        (b"\x17\x02\x00\x00\x00", Kind.VIDEO, Codec.H264),
        (b"\x92hvc1", Kind.VIDEO, Codec.HEVC),
        (b"\x92vp09", Kind.VIDEO, Codec.VP9),
    ],
)
def test_video_end_of_sequence(body: bytes, kind: Kind, codec: Codec) -> None:
    assert parse_video(body, 0) == EndOfSequence(kind, codec)


def test_audio_end_of_sequence() -> None:
    assert parse_audio(b"\x92Opus", 0) == EndOfSequence(Kind.AUDIO, Codec.OPUS)
    assert parse_audio(b"\x92mp4a", 0) == EndOfSequence(Kind.AUDIO, Codec.AAC)


def test_enhanced_aac_config_and_frames() -> None:
    assert parse_audio(b"\x90mp4a" + ASC, 0) == MediaConfig(
        CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=ASC)
    )
    assert parsed_packet(parse_audio(b"\x91mp4a\x21", 3)) == audio(Codec.AAC, b"\x21", 3)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x57\x00", "video info/command frame"),
        (b"\xd1\x01", "video command frame"),  # E-RTMP: frame type 5, no FourCC follows
        (b"\x94hvc1\x02\x00\x09colorInfo\x03\x00\x00\x09", "colorInfo"),
        (b"\x84hvc1", "colorInfo"),  # frame type 0 is fine: Metadata ignores it
        (b"\x95av01\x00", "MPEG2TSSequenceStart"),
        (b"\x12\x00", "legacy video codec id 2"),
        (b"\x14\x00\x00", "legacy video codec id 4"),
        (b"\x91vp08\x00", "VP8"),
        (b"\x90vvc1\x01", "VVC"),
    ],
)
def test_video_skipped(body: bytes, reason: str) -> None:
    result = parse_video(body, 0)
    assert isinstance(result, Skipped) and reason in result.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "silence"),
        (b"\xb6\x00", "sound format 11"),
        (b"\x3f\x00\x00", "sound format 3"),
        (b"\x91ac-3\x00", "AC-3"),
        (b"\x90fLaC", "FLAC"),
        (b"\x94Opus\x01\x02\x00\x00\x00\x03", "MultichannelConfig"),
    ],
)
def test_audio_skipped(body: bytes, reason: str) -> None:
    result = parse_audio(body, 0)
    assert isinstance(result, Skipped) and reason in result.reason


# --- E-RTMP v2 ModEx and multitrack --------------------------------------------------------------------


def test_mod_ex_timestamp_offset_nano_is_ignored() -> None:
    frame = avcc(b"\x26\x01")
    # ModEx (7) with 3 bytes of TimestampOffsetNano, then modExType 0 | CodedFramesX.
    body = b"\x97\x02\x00\x01\x00\x03hvc1" + frame
    assert parsed_packet(parse_video(body, 40)) == video(Codec.HEVC, frame, dts=40)
    # Two ModEx blocks, the second with a 16-bit size (0xFF then UI16 256 = 257 bytes).
    body = b"\x97\x02\x00\x01\x00\x07\xff\x01\x00" + bytes(257) + b"\x01hvc1\x00\x00\x05" + frame
    assert parsed_packet(parse_video(body, 40)) == video(Codec.HEVC, frame, dts=40, cto=5)
    assert parsed_packet(parse_audio(b"\x97\x02\x00\x00\x10\x01Opus\xfc", 9)) == audio(Codec.OPUS, b"\xfc", 9)


def test_unknown_mod_ex_type_is_skipped() -> None:
    assert parse_video(b"\x97\x00\x05\x13hvc1", 0) == Skipped("unknown video ModEx type 1")
    assert parse_audio(b"\x97\x00\x05\x21Opus", 0) == Skipped("unknown audio ModEx type 2")


def track(track_id: int, data: bytes, tag: bytes = b"") -> bytes:
    return tag + bytes((track_id,)) + len(data).to_bytes(3, "big") + data


def test_multitrack_single_default_track_parses() -> None:
    frame = avcc(b"\x26\x01")
    # Multitrack (6), OneTrack (0) | CodedFramesX (3), FourCC, trackId 0, then the track's data to the end.
    assert parsed_packet(parse_video(b"\x96\x03hvc1\x00" + frame, 5)) == video(Codec.HEVC, frame, dts=5)
    # ManyTracks (1) holding just track 0.
    assert parsed_packet(parse_video(b"\x96\x13hvc1" + track(0, frame), 5)) == video(Codec.HEVC, frame, dts=5)
    # ManyTracksManyCodecs (2) | SequenceStart (0): FourCC per track.
    record = RECORDS[Codec.AV1]
    assert parse_video(b"\x96\x20" + track(0, record, b"av01"), 0) == MediaConfig(
        CodecConfig(kind=Kind.VIDEO, codec=Codec.AV1, data=record)
    )
    # Audio: ExHeader (9) | Multitrack (5), OneTrack | CodedFrames, "Opus", trackId 0.
    assert parsed_packet(parse_audio(b"\x95\x01Opus\x00\xfc", 2)) == audio(Codec.OPUS, b"\xfc", 2)


def test_multitrack_metadata_is_skipped() -> None:
    result = parse_video(b"\x96\x04hvc1\x00\x02\x00\x09colorInfo\x05", 0)
    assert result == Skipped("video metadata (colorInfo) is not relayed")


def test_multitrack_other_tracks_are_skipped() -> None:
    frame = avcc(b"\x26\x01")
    result = parse_video(b"\x96\x13hvc1" + track(0, frame) + track(1, frame), 0)
    assert result == Skipped("video multitrack message with 2 tracks; only single-track 0 is relayed")
    assert parse_video(b"\x96\x03hvc1\x01" + frame, 0) == Skipped("video track 1 is not the default track 0")
    result = parse_audio(b"\x95\x21" + track(0, b"\x01", b"Opus") + track(1, b"\x02", b"mp4a"), 0)
    assert isinstance(result, Skipped) and "2 tracks" in result.reason


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x96", "before its AvMultitrackType"),
        (b"\x96\x33hvc1\x00", "reserved AvMultitrackType 3"),
        (b"\x96\x06hvc1\x00", "not allowed inside a multitrack"),
        (b"\x96\x03hvc1", "holds no track"),
        (b"\x96\x13hvc1\x00\x00\x00\x09\x01", "overruns the body"),
        (b"\x96\x13hvc1\x00\x00", "inside a track size"),
        (b"\x96\x23av0", "inside its FourCC"),
        (b"\x96\x23av01", "before a track id"),
    ],
)
def test_multitrack_errors(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_video(body, 0)


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty video body"),
        (b"\x17", "shorter than its 5-byte header"),
        (b"\x17\x01\x00\x00", "shorter than its 5-byte header"),
        (b"\x17\x03\x00\x00\x00", "reserved AVCPacketType 3"),
        (b"\x18\x01\x00\x00\x00", "reserved video codec id 8"),
        (b"\x07\x01\x00\x00\x00", "reserved video frame type 0"),
        (b"\x67\x01\x00\x00\x00", "reserved video frame type 6"),
        (b"\xe1hvc1", "reserved video frame type 6"),
        (b"\x80hvc1", "reserved video frame type 0"),
        (b"\x90hvc", "ends inside its FourCC"),
        (b"\x91xyz1\x00\x00\x00", "unknown video FourCC b'xyz1'"),
        (b"\x91hvc1\x00\x00", "missing its 3-byte composition offset"),
        (b"\x98hvc1", "reserved VideoPacketType 8"),
        (b"\x97", "inside a ModEx size"),
        (b"\x97\xff\x00", "inside a 16-bit ModEx size"),
        (b"\x97\x02\x00\x00\x00", "inside a 3-byte ModEx block"),
    ],
)
def test_malformed_video(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_video(body, 0)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xaf", "missing its AACPacketType"),
        (b"\xaf\x02", "reserved AACPacketType 2"),
        (b"\xc0", "reserved sound format 12"),
        (b"\xd0", "reserved sound format 13"),
        (b"\x91mp4", "ends inside its FourCC"),
        (b"\x91abcd", "unknown audio FourCC"),
        (b"\x93Opus", "reserved AudioPacketType 3"),
        (b"\x97\x00", "inside a 1-byte ModEx block"),
    ],
)
def test_malformed_audio(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_audio(body, 0)


def test_write_errors() -> None:
    with pytest.raises(FlvError, match="AAC is not an FLV video codec"):
        video_body(audio(Codec.AAC, b""))
    with pytest.raises(FlvError, match="AV1 carries no composition offset"):
        video_body(video(Codec.AV1, b"", cto=40))
    with pytest.raises(FlvError, match="does not fit FLV's signed 24 bits"):
        video_body(video(Codec.H264, b"", cto=0x800000))
    with pytest.raises(FlvError, match="does not fit FLV's signed 24 bits"):
        video_body(video(Codec.HEVC, b"", dts=0x900000, cto=-0x800001))
    with pytest.raises(FlvError, match="OPUS is not an FLV video codec"):
        video_config_body(CodecConfig(kind=Kind.AUDIO, codec=Codec.OPUS, data=b""))
    with pytest.raises(FlvError, match="MP3 has no FLV sequence header"):
        audio_config_body(CodecConfig(kind=Kind.AUDIO, codec=Codec.MP3, data=b""))
    with pytest.raises(FlvError, match="H264 is not an FLV audio codec"):
        audio_config_body(CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b""))
    with pytest.raises(FlvError, match="H264 is not an FLV audio codec"):
        audio_body(video(Codec.H264, b""), None)
    with pytest.raises(FlvError, match="packet is AAC but its config is OPUS"):
        audio_body(audio(Codec.AAC, b""), CodecConfig(kind=Kind.AUDIO, codec=Codec.OPUS, data=b""))


# --- script data ---------------------------------------------------------------------------------------


def test_metadata_body_round_trip() -> None:
    metadata = Metadata({"width": 1280.0, "encoder": "obs", "stereo": True, "tracks": ({"id": 0.0}, "x")})
    body = metadata_body(metadata)
    name, args = parse_script(body)
    assert name == "onMetaData"
    assert len(args) == 1 and isinstance(args[0], amf0.ECMAArray)
    assert Metadata(args[0]) == metadata
    assert amf0.decode_all(body)[0] == "onMetaData"  # no @setDataFrame


def test_parse_script_strips_set_data_frame() -> None:
    body = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"fps": 30.0}))
    assert parse_script(body) == ("onMetaData", [{"fps": 30.0}])
    assert parse_script(amf0.encode("onCuePoint", {"name": "a"}, 1.0)) == ("onCuePoint", [{"name": "a"}, 1.0])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "holds no name"),
        (amf0.encode("@setDataFrame"), "holds no name"),
        (amf0.encode(1.0, "x"), "starts with float"),
        (b"\x02\x00\x09onMeta", "script data: "),
    ],
)
def test_parse_script_errors(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        parse_script(body)


def test_metadata_body_wraps_amf_errors() -> None:
    with pytest.raises(FlvError, match="onMetaData: "):
        metadata_body({"bad": object()})


# --- fuzzing -------------------------------------------------------------------------------------------

# Headers that reach the deeper branches, so random tails exercise more than the first byte's checks.
VIDEO_PREFIXES = [b"", b"\x17\x01", b"\x1c\x00", b"\x91hvc1", b"\x97", b"\x96", b"\x96\x13hvc1", b"\x96\x20"]
AUDIO_PREFIXES = [b"", b"\xaf", b"\x2f", b"\x90Opus", b"\x97", b"\x95", b"\x95\x21", b"\x91mp4a"]


def expect_result_or_flv_error(parse: object, body: bytes) -> None:
    assert callable(parse)
    try:
        result = parse(body, 0)
    except FlvError:
        return
    assert isinstance(result, MediaConfig | MediaPacket | EndOfSequence | Skipped)


@given(prefix=st.sampled_from(VIDEO_PREFIXES), tail=st.binary(max_size=48))
@settings(max_examples=examples(500))
def test_fuzz_parse_video(prefix: bytes, tail: bytes) -> None:
    expect_result_or_flv_error(parse_video, prefix + tail)


@given(prefix=st.sampled_from(AUDIO_PREFIXES), tail=st.binary(max_size=48))
@settings(max_examples=examples(500))
def test_fuzz_parse_audio(prefix: bytes, tail: bytes) -> None:
    expect_result_or_flv_error(parse_audio, prefix + tail)


@given(
    prefix=st.sampled_from([b"", b"\x02\x00\x0aonMetaData", b"\x02\x00\x0d@setDataFrame"]), tail=st.binary()
)
@settings(max_examples=examples(500))
def test_fuzz_parse_script(prefix: bytes, tail: bytes) -> None:
    try:
        name, args = parse_script(prefix + tail)
    except FlvError:
        return
    assert isinstance(name, str) and isinstance(args, list)


def test_module_exports() -> None:
    assert set(flv.__all__) <= set(dir(flv))
