"""The FLV file layer: header, tags, FlvReader, onMetaData patching, and files FFmpeg writes and reads."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.flv import (
    FlvError,
    MediaConfig,
    MediaPacket,
    audio_body,
    audio_config_body,
    metadata_body,
    parse_audio,
    parse_script,
    parse_video,
    video_body,
    video_config_body,
)
from appliance.media.flv_file import (
    FILE_HEADER,
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvReader,
    FlvTag,
    flv_header,
    metadata_offsets,
    patch_metadata,
    segment_metadata_body,
    tag,
)
from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.media.rtmp import amf0
from tests.fuzz import examples

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


def flv_file(*tags: tuple[int, int, bytes], header: bytes = FILE_HEADER) -> bytes:
    return header + b"".join(tag(t, ts, body) for t, ts, body in tags)


def read_all(data: bytes, *, chunk: int | None = None, reader: FlvReader | None = None) -> list[FlvTag]:
    reader = reader if reader is not None else FlvReader()
    step = chunk or max(len(data), 1)
    tags: list[FlvTag] = []
    for i in range(0, len(data), step):
        tags += reader.feed(data[i : i + step])
    return tags + reader.feed(b"")


SAMPLE = (
    (TAG_SCRIPT, 0, metadata_body({"width": 640.0})),
    (TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00\x01\x42"),
    (TAG_AUDIO, 23, b"\xaf\x01\x21"),
    (TAG_VIDEO, 0x01020304, b"\x27\x01\x00\x00\x00"),
)


# --- writing -------------------------------------------------------------------------------------------


def test_header_bytes() -> None:
    assert FILE_HEADER == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv_header(True, False) == b"FLV\x01\x04\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv_header(False, True) == b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00"


def test_tag_bytes() -> None:
    assert tag(TAG_AUDIO, 0x123456, b"ab") == bytes.fromhex("08 000002 123456 00 000000 6162 0000000d")


def test_tag_timestamp_uses_the_extended_byte_and_wraps() -> None:
    # Timestamp holds bits 0-23, TimestampExtended bits 24-31 (FLV spec E.4.1).
    assert tag(TAG_VIDEO, 0x01020304, b"")[:11] == bytes.fromhex("09 000000 020304 01 000000")
    assert tag(TAG_VIDEO, 2**32 + 5, b"")[:11] == tag(TAG_VIDEO, 5, b"")[:11]


def test_tag_errors() -> None:
    with pytest.raises(ValueError, match="tag_type=7"):
        tag(7, 0, b"")
    with pytest.raises(ValueError, match="ts_ms=-1"):
        tag(TAG_VIDEO, -1, b"")
    with pytest.raises(FlvError, match="24-bit DataSize"):
        tag(TAG_VIDEO, 0, bytes(0x1000000))


# --- reading -------------------------------------------------------------------------------------------


def test_reader_reads_what_tag_writes() -> None:
    reader = FlvReader()
    tags = read_all(flv_file(*SAMPLE), reader=reader)
    assert [(t.tag_type, t.ts_ms, t.body) for t in tags] == list(SAMPLE)
    assert (reader.has_audio, reader.has_video, reader.bad_previous_sizes) == (True, True, 0)
    assert repr(tags[1]) == "FlvTag(tag_type=9, ts_ms=0, body=<7 bytes>)"


def test_reader_byte_at_a_time_equals_whole() -> None:
    data = flv_file(*SAMPLE)
    assert read_all(data, chunk=1) == read_all(data)


def test_reader_header_flags_and_data_offset() -> None:
    # A DataOffset past 9 (FLV spec E.2) leaves bytes to skip before PreviousTagSize0.
    header = b"FLV\x01\x04\x00\x00\x00\x0c" + b"xyz" + bytes(4)
    reader = FlvReader()
    assert read_all(flv_file(SAMPLE[2], header=header), reader=reader)[0].body == SAMPLE[2][2]
    assert (reader.has_audio, reader.has_video) == (True, False)


def test_reader_tolerates_and_counts_bad_previous_sizes() -> None:
    data = bytearray(flv_file(*SAMPLE))
    data[12] = 1  # PreviousTagSize0
    data[-1] ^= 0xFF  # the last PreviousTagSize
    reader = FlvReader()
    assert len(read_all(bytes(data), reader=reader)) == len(SAMPLE)
    assert reader.bad_previous_sizes == 2


def test_reader_returns_a_last_tag_whose_previous_size_was_cut_off() -> None:
    reader = FlvReader()
    tags = read_all(flv_file(*SAMPLE)[:-3], chunk=5, reader=reader)
    assert len(tags) == len(SAMPLE) and reader.bad_previous_sizes == 1


def test_reader_caps_tag_size() -> None:
    data = flv_file((TAG_VIDEO, 0, bytes(101)))
    assert len(read_all(data, reader=FlvReader(max_tag_size=101))) == 1
    reader = FlvReader(max_tag_size=100)
    # The cap applies as soon as the tag header is in, before the body is buffered.
    with pytest.raises(FlvError, match="FLV tag of 101 bytes at byte 13 exceeds the 100-byte cap"):
        reader.feed(data[:24])
    with pytest.raises(FlvError, match="failed earlier"):
        reader.feed(b"")
    with pytest.raises(ValueError, match="max_tag_size=0"):
        FlvReader(max_tag_size=0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"FLX", "not an FLV stream"),
        (b"<ht", "not an FLV stream"),
        (b"FLV\x02\x05\x00\x00\x00\x09", "FLV version 2"),
        (b"FLV\x01\x05\x00\x00\x00\x08", "DataOffset 8"),
        (b"FLV\x01\x05\x00\x01\x00\x00", "DataOffset 65536"),
        (FILE_HEADER + b"\x07" + bytes(10), "unknown FLV tag type 7 at byte 13"),
        (FILE_HEADER + b"\x29" + bytes(10), "encrypted FLV tag"),
        (b"FL", "stream ended inside the FLV header"),
        (FILE_HEADER[:-1], "stream ended inside the FLV header"),
        (b"", "stream ended inside the FLV header"),
        (FILE_HEADER + b"\x09\x00", "stream ended inside a tag: 2 bytes at byte 13"),
        (FILE_HEADER + tag(TAG_VIDEO, 0, b"abc")[:-6], "stream ended inside a tag"),
    ],
)
def test_reader_errors(data: bytes, match: str) -> None:
    reader = FlvReader()
    with pytest.raises(FlvError, match=match):
        reader.feed(data)
        reader.feed(b"")
    with pytest.raises(FlvError, match="failed earlier"):
        reader.feed(b"")


def test_reader_rejects_data_after_the_end() -> None:
    reader = FlvReader()
    assert reader.feed(FILE_HEADER) == []
    assert reader.feed(b"") == []
    assert reader.feed(b"") == []
    with pytest.raises(FlvError, match="after the end"):
        reader.feed(b"\x09")


tag_strategy = st.tuples(
    st.sampled_from([TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT]), st.integers(0, 2**32 - 1), st.binary(max_size=40)
)


@given(tags=st.lists(tag_strategy, max_size=6), cuts=st.lists(st.integers(0, 400), max_size=8))
@settings(max_examples=examples(500))
def test_reader_any_split_equals_whole(tags: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    data = flv_file(*tags)
    reader = FlvReader()
    got: list[FlvTag] = []
    last = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        got += reader.feed(data[last:cut]) if cut > last else []
        last = cut
    got += reader.feed(data[last:]) + reader.feed(b"")
    assert [(t.tag_type, t.ts_ms, t.body) for t in got] == tags


@given(prefix=st.sampled_from([b"", FILE_HEADER, FILE_HEADER + b"\x09\x00\x00\x05"]), tail=st.binary())
@settings(max_examples=examples(500))
def test_fuzz_reader(prefix: bytes, tail: bytes) -> None:
    reader = FlvReader(max_tag_size=64)
    try:
        whole = read_all(prefix + tail, reader=reader)
    except FlvError:
        return
    assert all(t.tag_type in (8, 9, 18) and len(t.body) <= 64 for t in whole)
    assert read_all(prefix + tail, chunk=1) == whole


# --- onMetaData patching -------------------------------------------------------------------------------


def test_segment_metadata_body_has_placeholders_first() -> None:
    body = segment_metadata_body({"width": 1280, "duration": 99.0, "encoder": "x"})
    name, args = parse_script(body)
    assert name == "onMetaData"
    assert list(args[0].items()) == [  # type: ignore[attr-defined]
        ("duration", 0.0),
        ("filesize", 0.0),
        ("width", 1280.0),
        ("encoder", "x"),
    ]


def test_patch_metadata_keeps_length_and_sets_values() -> None:
    body = segment_metadata_body({"width": 1280.0, "framerate": 30.0})
    patched = patch_metadata(body, duration_s=12.5, filesize=123456)
    assert len(patched) == len(body)
    _, args = parse_script(patched)
    assert args[0] == {"duration": 12.5, "filesize": 123456.0, "width": 1280.0, "framerate": 30.0}
    # The offsets are what a recorder pwrite()s at (tag offset + 11 + offset).
    offsets = metadata_offsets(body)
    for key, value in (("duration", 12.5), ("filesize", 123456.0)):
        assert struct.unpack_from(">d", patched, offsets[key])[0] == value


def test_metadata_offsets_ignore_decoys() -> None:
    # The property bytes of "duration" also appear inside a string and as a nested object's key.
    decoy = "\x00\x08duration\x00" + "\x11" * 8
    metadata = {
        "title": decoy,
        "nested": {"duration": 7.0, "filesize": 8.0},
        "filesize": 3.0,
        "duration": 1.0,
    }
    body = amf0.encode("onMetaData", amf0.ECMAArray(metadata))
    patched = patch_metadata(body, duration_s=2.0, filesize=4)
    assert parse_script(patched)[1][0] == metadata | {"duration": 2.0, "filesize": 4.0}


def test_metadata_offsets_skip_a_decoy_whose_patching_breaks_decoding() -> None:
    # Patching after the decoy overwrites the real key's length: that decode fails, so it is not the value.
    body = metadata_body({"t": "\x00\x08duration\x00", "duration": 1.0, "filesize": 2.0})
    offsets = metadata_offsets(body)
    assert body[offsets["duration"] - 11 : offsets["duration"]] == b"\x00\x08duration\x00"
    assert offsets["duration"] > body.index(b"\x00\x08duration\x00") + 11


def test_metadata_offsets_accepts_set_data_frame() -> None:
    body = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray({"duration": 0.0, "filesize": 0.0}))
    # "@setDataFrame" (16 bytes) "onMetaData" (13) ECMA header (5) "duration" (10) marker: the value at 45.
    assert metadata_offsets(body) == {"duration": 45, "filesize": 64}


AMF3_METADATA = (
    b"\x02\x00\x0aonMetaData\x11\x0a\x0b\x01"  # "onMetaData", avmplus, dynamic anonymous object
    + b"\x11duration\x05"
    + bytes(8)
    + b"\x11filesize\x05"
    + bytes(8)
    + b"\x01"
)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (amf0.encode("onCuePoint", {"duration": 0.0}), "not onMetaData"),
        (amf0.encode("onMetaData"), "not onMetaData"),
        (amf0.encode("onMetaData", 1.0), "not onMetaData"),
        (metadata_body({"filesize": 0.0}), "no numeric 'duration'"),
        (metadata_body({"duration": "0", "filesize": 0.0}), "no numeric 'duration'"),
        (metadata_body({"duration": 0.0}), "no numeric 'filesize'"),
        # AMF3 (avmplus marker 0x11) properties have another encoding: nothing to patch in place.
        (AMF3_METADATA, "'duration' is not a top-level property"),
    ],
)
def test_metadata_offsets_errors(body: bytes, match: str) -> None:
    with pytest.raises(FlvError, match=match):
        metadata_offsets(body)


def test_patch_metadata_rejects_bad_values() -> None:
    body = segment_metadata_body({})
    for duration in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="duration_s="):
            patch_metadata(body, duration_s=duration, filesize=0)
    with pytest.raises(ValueError, match="filesize=-1"):
        patch_metadata(body, duration_s=0.0, filesize=-1)


# --- against FFmpeg ------------------------------------------------------------------------------------


def ffmpeg_flv(path: Path, *args: str) -> bytes:
    assert FFMPEG is not None
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, "-f", "flv", str(path)]
    subprocess.run(command, check=True, timeout=120)
    return path.read_bytes()


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
def test_reads_what_ffmpeg_writes_and_ffmpeg_reads_what_we_write(tmp_path: Path) -> None:
    sources = "-f lavfi -i testsrc=size=160x120:rate=25 -f lavfi -i sine=sample_rate=44100 -t 4"
    x264 = "-c:v libx264 -pix_fmt yuv420p -g 25 -sc_threshold 0 -bf 2 -c:a aac"
    data = ffmpeg_flv(tmp_path / "in.flv", *sources.split(), *x264.split())
    reader = FlvReader()
    tags = read_all(data, chunk=4096, reader=reader)
    assert (reader.has_audio, reader.has_video, reader.bad_previous_sizes) == (True, True, 0)
    assert parse_script(tags[0].body)[0] == "onMetaData"
    configs: dict[Kind, CodecConfig] = {}
    packets: list[Packet] = []
    for t in tags[1:]:
        result = (parse_video if t.tag_type == TAG_VIDEO else parse_audio)(t.body, t.ts_ms)
        if isinstance(result, MediaConfig):
            configs[result.config.kind] = result.config
        elif isinstance(result, MediaPacket):
            packets.append(result.packet)
    video_config = configs[Kind.VIDEO]
    assert video_config.codec is Codec.H264 and video_config.data[0] == 1  # AVC configurationVersion
    assert configs[Kind.AUDIO].codec is Codec.AAC and len(configs[Kind.AUDIO].data) >= 2
    frames = [p for p in packets if p.kind is Kind.VIDEO]
    assert len(frames) == 100
    assert [i for i, p in enumerate(frames) if p.keyframe] == [0, 25, 50, 75]  # one per 25-frame GOP
    assert any(p.pts_ms > p.dts_ms for p in frames)  # B-frames: composition offsets survived
    assert all(len(p.payload) > 4 for p in frames) and all(p.annexb() for p in frames)

    # Write it back with our bodies and tags; FFmpeg must decode it without complaint.
    out = [FILE_HEADER, tag(TAG_SCRIPT, 0, segment_metadata_body({"width": 160.0, "height": 120.0}))]
    out.append(tag(TAG_VIDEO, 0, video_config_body(configs[Kind.VIDEO])))
    out.append(tag(TAG_AUDIO, 0, audio_config_body(configs[Kind.AUDIO])))
    for p in packets:
        body = video_body(p) if p.kind is Kind.VIDEO else audio_body(p, configs[Kind.AUDIO])
        out.append(tag(TAG_VIDEO if p.kind is Kind.VIDEO else TAG_AUDIO, p.dts_ms, body))
    written = b"".join(out)
    script_tag = out[1]
    patched = patch_metadata(script_tag[11:-4], duration_s=4.0, filesize=len(written))
    written = written.replace(script_tag, script_tag[:11] + patched + script_tag[-4:], 1)
    out_path = tmp_path / "out.flv"
    out_path.write_bytes(written)
    assert read_all(written)[0] == FlvTag(TAG_SCRIPT, 0, patched)
    assert [t.body for t in read_all(written)[3:]] == [t.body for t in tags if t.body[1:2] == b"\x01"]
    assert FFMPEG is not None
    decoded = subprocess.run(
        [FFMPEG, "-hide_banner", "-v", "error", "-nostdin", "-i", str(out_path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert decoded.returncode == 0 and decoded.stderr == ""
    if FFPROBE is not None:
        probe = subprocess.run(
            [FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(out_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert abs(float(probe.stdout) - 4.0) < 0.2
