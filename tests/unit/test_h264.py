"""H.264 and the bit reader: avcC records and SPSes from a real encoder, and hand-made edge cases."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.bitreader import (
    BitReader,
    BitstreamError,
    BitWriter,
    CodecParseError,
    escape_rbsp,
    unescape_rbsp,
)
from appliance.media.h264 import (
    build_avc_config,
    codec_config_from_avc,
    h264_level_name,
    h264_profile_name,
    parse_avc_config,
    parse_h264_sps,
)
from appliance.media.packets import Codec, Kind
from tests.fuzz import examples

# Real avcC records: the extradata (avcC box payload) of MP4 files written by ffmpeg 5.1.9 with libx264 164
# (Debian 12), read with PyAV as `av.open(path).streams[0].codec_context.extradata.hex()`. Each file came
# from `ffmpeg -f lavfi -i testsrc=size=WxH:rate=R -frames:v 3 -pix_fmt PIX -c:v libx264 ARGS out.mp4`
# with the size, rate, pixel format and arguments in the comment above it.

# 320x240, rate 25, yuv420p, -profile:v baseline -level 3.0
BASELINE_320X240_25 = bytes.fromhex(
    "0142c01effe100186742c01ed90141fb011000000300100000030320f162e48001000568cb83cb20"
)
# 1280x720, rate 30, yuv420p, -profile:v main -level 3.1
MAIN_1280X720_30 = bytes.fromhex(
    "014d401fffe10019674d401feca02802dd8088000003000800000301e078c18cb001000568ebe3cb20"
)
# 854x480, rate 24, yuv420p, -profile:v main -level 3.0 (coded 864x480, cropped on the right)
MAIN_854X480_24 = bytes.fromhex(
    "014d401effe10018674d401eeca06c1ef37808800000030080000018078b16cb01000568ebe3cb20"
)
# 1920x1080, rate 30000/1001, yuv420p, -profile:v high -level 4.0 (coded 1920x1088, cropped at the bottom)
HIGH_1920X1080_2997 = bytes.fromhex(
    "01640028ffe1001967640028acd940780227e5c04400000fa40003a9803c60c65801000668ebe3cb22c0fdf8f800"
)
# 1920x1080, rate 25, yuv420p, -profile:v high -level 4.0 -flags +ildct+ilme -x264-params interlaced=1
# (field coding: the crop unit is 4 lines)
HIGH_1080I_25 = bytes.fromhex(
    "01640028ffe1001a67640028acd94078044fde0220000003002000000643e2c5b2c001000668fba3cb22c0fdf8f800"
)
# 640x360, rate 50, yuv420p10le, -profile:v high10
HIGH10_640X360_50 = bytes.fromhex(
    "016e001fffe1001a676e001fa6cd940a02ff970110000003001000000640f183196001000668ebe3cb22c0fdfafa00"
)
# 640x360, rate 30, yuv422p, -profile:v high422 (4:2:2: the vertical crop unit is 1 line)
HIGH422_640X360_30 = bytes.fromhex(
    "017a001effe1001a677a001ebcd940a02ff89c0440000003004000000f03c58b658001000668ebe3cb22c0fef8f800"
)
# 642x362, rate 60, yuv444p, -profile:v high444 (4:4:4: crop units of 1 sample)
HIGH444_642X362_60 = bytes.fromhex(
    "01f4001fffe1001a67f4001f919b281485fc7cf80880000003008000003c078c18cb01000668ebe3c44844fff8f800"
)
# 1280x720, rate 25, yuv420p, -profile:v high -level 3.1 -b:v 1M -maxrate 1M -bufsize 2M
# -color_primaries bt709 -color_trc bt709 -colorspace bt709
# -x264-params cqm=jvt:nal-hrd=cbr:sar=64/45:chromaloc=1:overscan=show
# (scaling matrices, Extended_SAR, overscan, colour description, chroma location, NAL HRD, then the
# bitstream restriction)
HIGH_CQM_HRD_1280X720_25 = bytes.fromhex(
    "0164001fffe1002d6764001facd9405005bbff0040002db5010101a500000300010000030032606000f424001e84e6c30078c1"
    "8cb001000668ebecb3002cfdf8f800"
)


@dataclass(frozen=True)
class Expected:
    width: int
    height: int
    fps: float
    profile: str
    level: str
    chroma_format_idc: int = 1
    bit_depth: int = 8
    frame_mbs_only: bool = True


REAL = {
    "baseline": (BASELINE_320X240_25, Expected(320, 240, 25.0, "Constrained Baseline", "3")),
    "main720": (MAIN_1280X720_30, Expected(1280, 720, 30.0, "Main", "3.1")),
    "main480": (MAIN_854X480_24, Expected(854, 480, 24.0, "Main", "3")),
    "high1080": (HIGH_1920X1080_2997, Expected(1920, 1080, 30000 / 1001, "High", "4")),
    "high1080i": (HIGH_1080I_25, Expected(1920, 1080, 25.0, "High", "4", frame_mbs_only=False)),
    "high10": (HIGH10_640X360_50, Expected(640, 360, 50.0, "High 10", "3.1", bit_depth=10)),
    "high422": (HIGH422_640X360_30, Expected(640, 360, 30.0, "High 4:2:2", "3", chroma_format_idc=2)),
    "high444": (HIGH444_642X362_60, Expected(642, 362, 60.0, "High 4:4:4 Predictive", "3.1", 3)),
    "cqm_hrd": (HIGH_CQM_HRD_1280X720_25, Expected(1280, 720, 25.0, "High", "3.1")),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_records(name: str) -> None:
    record, want = REAL[name]
    avc = parse_avc_config(record)
    assert avc.version == 1 and avc.length_size == 4
    assert len(avc.sps) == 1 and len(avc.pps) == 1
    assert avc.sps[0][0] == 0x67 and avc.pps[0][0] == 0x68
    sps = parse_h264_sps(avc.sps[0])
    assert (sps.width, sps.height) == (want.width, want.height)
    assert sps.fps == pytest.approx(want.fps)
    assert (sps.profile_name, sps.level_name) == (want.profile, want.level)
    assert (sps.profile_idc, sps.level_idc) == (avc.profile_idc, avc.level_idc)
    assert sps.constraint_flags == avc.compat
    assert sps.chroma_format_idc == want.chroma_format_idc
    assert sps.bit_depth_luma == sps.bit_depth_chroma == want.bit_depth
    assert sps.frame_mbs_only is want.frame_mbs_only
    config = codec_config_from_avc(record)
    assert (config.kind, config.codec, config.data) == (Kind.VIDEO, Codec.H264, record)
    assert (config.width, config.height, config.profile, config.level) == (
        want.width,
        want.height,
        want.profile,
        want.level,
    )
    assert config.fps == pytest.approx(want.fps)


@pytest.mark.parametrize("name", sorted(REAL))
def test_build_reproduces_ffmpeg_records(name: str) -> None:
    record, _ = REAL[name]
    avc = parse_avc_config(record)
    assert build_avc_config(list(avc.sps), list(avc.pps)) == record


def test_real_reordering_facts() -> None:
    baseline = parse_h264_sps(parse_avc_config(BASELINE_320X240_25).sps[0])
    assert baseline.max_num_reorder_frames == 0 and baseline.has_b_frames is False
    for record in (MAIN_1280X720_30, HIGH_1920X1080_2997, HIGH_CQM_HRD_1280X720_25):
        sps = parse_h264_sps(parse_avc_config(record).sps[0])
        assert sps.max_num_reorder_frames == 2 and sps.has_b_frames is True


def test_real_vui_details() -> None:
    sps = parse_h264_sps(parse_avc_config(HIGH_CQM_HRD_1280X720_25).sps[0])
    assert sps.sar == (64, 45)
    assert parse_h264_sps(parse_avc_config(MAIN_1280X720_30).sps[0]).sar == (1, 1)


def test_high_profile_trailer() -> None:
    avc = parse_avc_config(HIGH422_640X360_30)
    assert (avc.chroma_format_idc, avc.bit_depth_luma, avc.bit_depth_chroma, avc.sps_ext) == (2, 8, 8, ())
    assert parse_avc_config(HIGH10_640X360_50).bit_depth_luma == 10
    # Without the trailer (older muxers) the record still parses.
    bare = parse_avc_config(HIGH_1920X1080_2997[:-4])
    assert bare.chroma_format_idc is None and bare.sps == parse_avc_config(HIGH_1920X1080_2997).sps
    # A malformed trailer (an SPS extension overrunning the record) is ignored.
    broken = parse_avc_config(HIGH_1920X1080_2997[:-1] + b"\x01\x00\x09")
    assert broken.chroma_format_idc is None
    # Main profile records carry no trailer; bytes after the PPS are ignored.
    assert parse_avc_config(MAIN_1280X720_30 + b"\xfd\xf8\xf8\x00").chroma_format_idc is None


# -- record edge cases ----------------------------------------------------------------------------------


def record(*, sps: list[bytes], pps: list[bytes], length_byte: int = 0xFF, version: int = 1) -> bytes:
    head = bytes([version, 0x64, 0x00, 0x1F, length_byte, 0xE0 | len(sps)])
    body = b"".join(len(n).to_bytes(2, "big") + n for n in sps) + bytes([len(pps)])
    return head + body + b"".join(len(n).to_bytes(2, "big") + n for n in pps)


SPS_720 = parse_avc_config(HIGH_CQM_HRD_1280X720_25).sps[0]
PPS_720 = parse_avc_config(HIGH_CQM_HRD_1280X720_25).pps[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes"),
        (b"\x01\x64\x00\x1f\xff\xe1", "6 bytes"),
        (record(sps=[SPS_720], pps=[PPS_720], version=0), "configurationVersion=0"),
        (record(sps=[SPS_720], pps=[PPS_720], length_byte=0xFE), "lengthSizeMinusOne=2"),
        (record(sps=[b""], pps=[PPS_720]), "SPS 0 at offset 6 is empty"),
        (record(sps=[SPS_720], pps=[b""]), "PPS 0"),
        (record(sps=[SPS_720], pps=[PPS_720])[:-1], "overruns"),
        (record(sps=[SPS_720], pps=[PPS_720, PPS_720])[: -len(PPS_720) - 1], "truncated length of PPS 1"),
        (record(sps=[SPS_720], pps=[])[:-1], "truncated before numOfPictureParameterSets"),
    ],
)
def test_malformed_records(data: bytes, message: str) -> None:
    with pytest.raises(CodecParseError, match=message):
        parse_avc_config(data)
    with pytest.raises(CodecParseError):
        codec_config_from_avc(data)


@pytest.mark.parametrize(("length_byte", "size"), [(0xFC, 1), (0xFD, 2), (0xFF, 4)])
def test_length_sizes(length_byte: int, size: int) -> None:
    assert parse_avc_config(record(sps=[SPS_720], pps=[PPS_720], length_byte=length_byte)).length_size == size


def test_several_parameter_sets_and_none() -> None:
    avc = parse_avc_config(record(sps=[SPS_720, SPS_720], pps=[PPS_720, PPS_720, PPS_720]))
    assert (len(avc.sps), len(avc.pps)) == (2, 3)
    empty = parse_avc_config(record(sps=[], pps=[]))
    assert empty.sps == () and empty.pps == ()
    config = codec_config_from_avc(record(sps=[], pps=[]))
    assert config.width is None and config.profile == "High" and config.level == "3.1"


def test_unparsable_sps_still_gives_a_config() -> None:
    for bad in (b"\x67\x64", b"\x68\x00\x00\x00", b"\x67" + b"\x00" * 8):
        config = codec_config_from_avc(record(sps=[bad], pps=[PPS_720]))
        assert (config.codec, config.width, config.height, config.fps) == (Codec.H264, None, None, None)
        # Profile and level still come from the record header.
        assert (config.profile, config.level) == ("High", "3.1")


def test_build_avc_config() -> None:
    built = build_avc_config([SPS_720], [PPS_720])
    avc = parse_avc_config(built)
    assert (avc.sps, avc.pps, avc.length_size) == ((SPS_720,), (PPS_720,), 4)
    assert (avc.profile_idc, avc.compat, avc.level_idc) == (100, 0, 31)
    assert (avc.chroma_format_idc, avc.bit_depth_luma) == (1, 8)
    baseline = parse_avc_config(BASELINE_320X240_25)
    assert build_avc_config(list(baseline.sps), []) == BASELINE_320X240_25[:-8] + b"\x00"
    with pytest.raises(ValueError, match="at least one SPS"):
        build_avc_config([], [PPS_720])
    with pytest.raises(ValueError, match="type 7"):
        build_avc_config([PPS_720], [PPS_720])
    with pytest.raises(ValueError, match="type 8"):
        build_avc_config([SPS_720], [SPS_720])
    with pytest.raises(ValueError, match="at least 4"):
        build_avc_config([b"\x67\x42"], [])
    with pytest.raises(ValueError, match="at most 31"):
        build_avc_config([SPS_720] * 32, [])
    with pytest.raises(ValueError, match="65535"):
        build_avc_config([SPS_720], [b"\x68" * 65536])
    # A high profile SPS that does not parse: the record goes without the optional trailer.
    unreadable = parse_avc_config(build_avc_config([b"\x67\x64\x00\x1f"], [PPS_720]))
    assert unreadable.sps == (b"\x67\x64\x00\x1f",) and unreadable.chroma_format_idc is None


# -- hand-made SPS ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Vui:
    aspect_ratio_idc: int | None = None
    sar: tuple[int, int] = (0, 0)
    overscan: bool = False
    colour: bool = False
    chroma_loc: bool = False
    timing: tuple[int, int] | None = None
    hrd_cpb_count: int = 0
    reorder: int | None = None
    truncate_after_timing: bool = False


def h264_sps(
    *,
    profile_idc: int = 100,
    constraint_flags: int = 0,
    level_idc: int = 31,
    chroma_format_idc: int = 1,
    separate_colour_plane: bool = False,
    bit_depth: int = 8,
    scaling_deltas: dict[int, list[int]] | None = None,
    poc_type: int = 0,
    poc_cycle: tuple[int, ...] = (),
    width_mbs: int = 80,
    height_map_units: int = 45,
    frame_mbs_only: bool = True,
    crop: tuple[int, int, int, int] | None = None,
    vui: Vui | None = None,
) -> bytes:
    """Write an SPS field by field (H.264 7.3.2.1.1); scaling lists are given as their raw deltas.

    The SPSes the tests below build were checked once against FFmpeg's own parser: written after a start
    code to x.264, `ffmpeg -f h264 -i x.264 -c copy -bsf:v trace_headers -f null -` reads the same
    fields up to rbsp_stop_one_bit.
    """
    w = BitWriter()
    w.write_bits(profile_idc, 8)
    w.write_bits(constraint_flags, 8)
    w.write_bits(level_idc, 8)
    w.write_ue(0)  # seq_parameter_set_id
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        w.write_ue(chroma_format_idc)
        if chroma_format_idc == 3:
            w.write_bit(separate_colour_plane)
        w.write_ue(bit_depth - 8)
        w.write_ue(bit_depth - 8)
        w.write_bit(0)  # qpprime_y_zero_transform_bypass_flag
        w.write_bit(scaling_deltas is not None)
        if scaling_deltas is not None:
            for i in range(8 if chroma_format_idc != 3 else 12):
                w.write_bit(i in scaling_deltas)
                for delta in scaling_deltas.get(i, []):
                    w.write_se(delta)
    w.write_ue(0)  # log2_max_frame_num_minus4
    w.write_ue(poc_type)
    if poc_type == 0:
        w.write_ue(2)
    elif poc_type == 1:
        w.write_bit(0)
        w.write_se(-2)
        w.write_se(1)
        w.write_ue(len(poc_cycle))
        for offset in poc_cycle:
            w.write_se(offset)
    w.write_ue(4)  # max_num_ref_frames
    w.write_bit(0)
    w.write_ue(width_mbs - 1)
    w.write_ue(height_map_units - 1)
    w.write_bit(frame_mbs_only)
    if not frame_mbs_only:
        w.write_bit(1)  # mb_adaptive_frame_field_flag
    w.write_bit(1)  # direct_8x8_inference_flag
    w.write_bit(crop is not None)
    for offset in crop or ():
        w.write_ue(offset)
    w.write_bit(vui is not None)
    if vui is not None:
        _write_vui(w, vui)
    w.write_bit(1)  # rbsp_stop_one_bit
    return b"\x67" + escape_rbsp(w.to_bytes())


def _write_vui(w: BitWriter, vui: Vui) -> None:
    w.write_bit(vui.aspect_ratio_idc is not None)
    if vui.aspect_ratio_idc is not None:
        w.write_bits(vui.aspect_ratio_idc, 8)
        if vui.aspect_ratio_idc == 255:
            w.write_bits(vui.sar[0], 16)
            w.write_bits(vui.sar[1], 16)
    w.write_bit(vui.overscan)
    if vui.overscan:
        w.write_bit(1)
    w.write_bit(vui.colour)
    if vui.colour:
        w.write_bits(5, 3)
        w.write_bit(0)
        w.write_bit(1)
        w.write_bits(0x010101, 24)
    w.write_bit(vui.chroma_loc)
    if vui.chroma_loc:
        w.write_ue(1)
        w.write_ue(1)
    w.write_bit(vui.timing is not None)
    if vui.timing is not None:
        w.write_bits(vui.timing[0], 32)
        w.write_bits(vui.timing[1], 32)
        w.write_bit(1)
    if vui.truncate_after_timing:
        return
    for _ in range(2):  # NAL and VCL HRD
        w.write_bit(vui.hrd_cpb_count > 0)
        if vui.hrd_cpb_count:
            w.write_ue(vui.hrd_cpb_count - 1)
            w.write_bits(0x44, 8)
            for _ in range(vui.hrd_cpb_count):
                w.write_ue(1000)
                w.write_ue(2000)
                w.write_bit(1)
            w.write_bits(0b10111_10111_10111_11000, 20)
    if vui.hrd_cpb_count:
        w.write_bit(0)  # low_delay_hrd_flag
    w.write_bit(0)  # pic_struct_present_flag
    w.write_bit(vui.reorder is not None)
    if vui.reorder is not None:
        w.write_bit(1)
        for value in (2, 1, 16, 16):
            w.write_ue(value)
        w.write_ue(vui.reorder)
        w.write_ue(4)


def test_hand_made_defaults() -> None:
    sps = parse_h264_sps(h264_sps())
    assert (sps.width, sps.height, sps.fps, sps.sar, sps.max_num_reorder_frames) == (
        1280,
        720,
        None,
        None,
        None,
    )
    assert sps.has_b_frames is None


def test_poc_type_1_and_2() -> None:
    vui = Vui(timing=(1, 50))
    assert parse_h264_sps(h264_sps(poc_type=1, poc_cycle=(-3, 2, 7), vui=vui)).fps == 25.0
    assert parse_h264_sps(h264_sps(poc_type=1, poc_cycle=(), vui=vui)).fps == 25.0
    assert parse_h264_sps(h264_sps(poc_type=2, vui=vui)).fps == 25.0
    with pytest.raises(CodecParseError, match="pic_order_cnt_type=3"):
        parse_h264_sps(h264_sps(poc_type=3))


def test_scaling_lists() -> None:
    vui = Vui(timing=(1001, 48000))
    # List 0: 16 explicit deltas; list 1: a delta making nextScale 0 (use the default matrix), which ends it
    # after one value; list 6 (8x8): three deltas then one reaching 0 = repeat the last scale.
    deltas = {0: [1] * 16, 1: [-8], 6: [5, -3, 2, -12], 7: [0] * 64}
    sps = parse_h264_sps(h264_sps(scaling_deltas=deltas, vui=vui))
    assert sps.fps == pytest.approx(24000 / 1001) and sps.width == 1280
    # 4:4:4 has twelve lists.
    deltas444 = {9: [-8], 11: [0] * 64}
    sps444 = parse_h264_sps(h264_sps(profile_idc=244, chroma_format_idc=3, scaling_deltas=deltas444, vui=vui))
    assert sps444.fps == pytest.approx(24000 / 1001) and sps444.chroma_format_idc == 3
    with pytest.raises(CodecParseError, match="delta_scale=200"):
        parse_h264_sps(h264_sps(scaling_deltas={0: [200]}))


@pytest.mark.parametrize(
    ("kwargs", "size"),
    [
        # 4:2:0 progressive: crop units of 2x2.
        ({"crop": (1, 2, 3, 4)}, (1280 - 6, 720 - 14)),
        # 4:2:0 interlaced: map units are macroblock pairs, vertical crop unit 4.
        ({"frame_mbs_only": False, "height_map_units": 34, "crop": (0, 0, 0, 2)}, (1280, 1088 - 8)),
        # 4:2:2: 2x1.
        ({"chroma_format_idc": 2, "crop": (1, 1, 1, 1)}, (1280 - 4, 720 - 2)),
        # 4:2:2 interlaced: 2x2.
        ({"chroma_format_idc": 2, "frame_mbs_only": False, "crop": (0, 0, 1, 1)}, (1280, 1440 - 4)),
        # 4:4:4: 1x1.
        ({"profile_idc": 244, "chroma_format_idc": 3, "crop": (1, 2, 3, 4)}, (1280 - 3, 720 - 7)),
        # 4:4:4 with separate colour planes is ChromaArrayType 0: 1x1.
        (
            {"profile_idc": 244, "chroma_format_idc": 3, "separate_colour_plane": True, "crop": (3, 0, 0, 1)},
            (1277, 719),
        ),
        # Monochrome: 1x1, and 1x2 interlaced.
        ({"chroma_format_idc": 0, "crop": (1, 0, 0, 1)}, (1279, 719)),
        ({"chroma_format_idc": 0, "frame_mbs_only": False, "crop": (0, 0, 0, 1)}, (1280, 1438)),
    ],
)
def test_cropping(kwargs: dict[str, object], size: tuple[int, int]) -> None:
    sps = parse_h264_sps(h264_sps(**kwargs))  # type: ignore[arg-type]
    assert (sps.width, sps.height) == size


def test_cropping_everything_away() -> None:
    with pytest.raises(CodecParseError, match="frame cropping"):
        parse_h264_sps(h264_sps(width_mbs=1, crop=(4, 4, 0, 0)))


def test_vui_fields() -> None:
    full = Vui(
        aspect_ratio_idc=255,
        sar=(4, 3),
        overscan=True,
        colour=True,
        chroma_loc=True,
        timing=(1, 120),
        hrd_cpb_count=3,
        reorder=0,
    )
    sps = parse_h264_sps(h264_sps(vui=full))
    assert (sps.sar, sps.fps, sps.max_num_reorder_frames, sps.has_b_frames) == ((4, 3), 60.0, 0, False)
    assert parse_h264_sps(h264_sps(vui=Vui(aspect_ratio_idc=2))).sar == (12, 11)
    assert parse_h264_sps(h264_sps(vui=Vui(aspect_ratio_idc=200))).sar is None  # reserved
    assert parse_h264_sps(h264_sps(vui=Vui(aspect_ratio_idc=255, sar=(0, 1)))).sar is None
    assert parse_h264_sps(h264_sps(vui=Vui(timing=(0, 50)))).fps is None
    assert parse_h264_sps(h264_sps(vui=Vui(reorder=3))).has_b_frames is True


def test_reordering_facts() -> None:
    # Baseline has no B slices even without a bitstream restriction; other profiles are then unknown.
    baseline = parse_h264_sps(h264_sps(profile_idc=66))
    assert (baseline.max_num_reorder_frames, baseline.has_b_frames) == (None, False)
    assert parse_h264_sps(h264_sps(profile_idc=77)).has_b_frames is None
    # max_num_reorder_frames above max_dec_frame_buffering (4 here) is inconsistent: ignored.
    assert parse_h264_sps(h264_sps(vui=Vui(reorder=5))).max_num_reorder_frames is None


def test_truncated_vui_keeps_what_it_had() -> None:
    sps = parse_h264_sps(h264_sps(vui=Vui(aspect_ratio_idc=1, timing=(1, 60), truncate_after_timing=True)))
    assert (sps.width, sps.sar, sps.fps, sps.max_num_reorder_frames) == (1280, (1, 1), 30.0, None)
    # Cut inside the timing info: no rate, but the SPS still parses.
    cut = h264_sps(vui=Vui(timing=(1, 60), truncate_after_timing=True))[:-5]
    assert parse_h264_sps(cut).fps is None


def test_intra_profiles_never_reorder() -> None:
    sps = parse_h264_sps(h264_sps(profile_idc=110, constraint_flags=0x10))
    assert sps.profile_name == "High 10 Intra"
    assert (sps.max_num_reorder_frames, sps.has_b_frames) == (0, False)


def test_truncated_and_invalid_sps() -> None:
    good = h264_sps(crop=(0, 0, 0, 4))
    for cut in range(len(good) - 1):
        with pytest.raises(CodecParseError):
            parse_h264_sps(good[:cut])
    with pytest.raises(CodecParseError, match="empty"):
        parse_h264_sps(b"")
    with pytest.raises(CodecParseError, match="nal_unit_type=8"):
        parse_h264_sps(PPS_720)
    with pytest.raises(CodecParseError, match="chroma_format_idc=4"):
        parse_h264_sps(h264_sps(chroma_format_idc=4))
    with pytest.raises(CodecParseError, match="bit_depth_luma_minus8=7"):
        parse_h264_sps(h264_sps(bit_depth=15))
    with pytest.raises(CodecParseError, match="over 32 leading zeros"):
        parse_h264_sps(b"\x67\x64\x00\x1f" + b"\x00\x00\x03" * 3 + b"\x00\x01")


def test_emulation_prevention_in_sps() -> None:
    # Timing info of 1/50 has 31 zero bits in a row: the writer must escape, the parser unescape.
    nal = h264_sps(vui=Vui(timing=(1, 50)))
    assert b"\x00\x00\x03" in nal
    assert parse_h264_sps(nal).fps == 25.0


@pytest.mark.parametrize(
    ("profile_idc", "flags", "name"),
    [
        (66, 0x00, "Baseline"),
        (66, 0x40, "Constrained Baseline"),
        (77, 0x00, "Main"),
        (88, 0x00, "Extended"),
        (100, 0x00, "High"),
        (100, 0x08, "Progressive High"),
        (100, 0x0C, "Constrained High"),
        (110, 0x00, "High 10"),
        (110, 0x08, "Progressive High 10"),
        (110, 0x10, "High 10 Intra"),
        (122, 0x10, "High 4:2:2 Intra"),
        (244, 0x00, "High 4:4:4 Predictive"),
        (244, 0x10, "High 4:4:4 Intra"),
        (44, 0x00, "CAVLC 4:4:4 Intra"),
        (118, 0x00, "Multiview High"),
        (128, 0x00, "Stereo High"),
        (7, 0x00, "profile 7"),
    ],
)
def test_profile_names(profile_idc: int, flags: int, name: str) -> None:
    assert h264_profile_name(profile_idc, flags) == name


@pytest.mark.parametrize(
    ("profile_idc", "flags", "level_idc", "name"),
    [
        (66, 0x10, 11, "1b"),
        (77, 0x10, 11, "1b"),
        (66, 0x00, 11, "1.1"),
        (100, 0x10, 11, "1.1"),
        (100, 0x00, 9, "1b"),
        (100, 0x00, 10, "1"),
        (100, 0x00, 31, "3.1"),
        (100, 0x00, 40, "4"),
        (100, 0x00, 62, "6.2"),
    ],
)
def test_level_names(profile_idc: int, flags: int, level_idc: int, name: str) -> None:
    assert h264_level_name(profile_idc, flags, level_idc) == name


# -- bit reader ------------------------------------------------------------------------------------------


def test_bit_reader() -> None:
    r = BitReader(bytes([0b1010_0110, 0b0011_1000, 0xFF]))
    assert r.bits_left == 24
    assert r.read_bit() == 1
    assert r.read_flag() is False
    assert r.read_bits(2) == 0b10
    assert r.read_ue() == 2  # 011
    assert r.read_ue() == 13  # 0001110
    assert (r.position, r.bits_left) == (14, 10)
    assert r.read_bits(10) == 0x0FF
    assert r.bits_left == 0


def test_exp_golomb_values() -> None:
    # ue: 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3; se: 1 -> 0, 010 -> 1, 011 -> -1, 00100 -> 2, 00101 -> -2.
    r = BitReader(bytes([0b1010_0110, 0b0100_0000]))
    assert [r.read_ue() for _ in range(4)] == [0, 1, 2, 3]
    r = BitReader(bytes([0b1010_0110, 0b0100_0010, 0b1000_0000]))
    assert [r.read_se() for _ in range(5)] == [0, 1, -1, 2, -2]


def test_bit_reader_errors() -> None:
    r = BitReader(b"\xff")
    with pytest.raises(BitstreamError, match="need 9 bits at bit offset 0, 8 left"):
        r.read_bits(9)
    r.skip_bits(8)
    assert r.bits_left == 0 and r.read_bits(0) == 0
    with pytest.raises(BitstreamError):
        r.read_bit()
    with pytest.raises(BitstreamError):
        r.skip_bits(1)
    with pytest.raises(ValueError, match="n >= 0"):
        r.read_bits(-1)
    with pytest.raises(ValueError, match="n >= 0"):
        r.skip_bits(-1)
    with pytest.raises(BitstreamError, match="over 32 leading zeros"):
        BitReader(bytes(5) + b"\xff").read_ue()
    # 32 zeros is still a code: 2**32 - 1 + the 32 bits after the marker.
    assert BitReader(bytes(4) + b"\x80" + bytes(4)).read_ue() == 2**32 - 1
    with pytest.raises(BitstreamError):
        BitReader(b"\x00\x01").read_ue()  # the suffix is missing
    assert issubclass(BitstreamError, CodecParseError) and issubclass(CodecParseError, ValueError)


def test_bit_writer() -> None:
    w = BitWriter()
    w.write_bit(1)
    w.write_bits(2, 3)
    w.write_ue(2)
    w.write_se(-3)
    assert w.bit_length == 12
    assert w.to_bytes() == bytes([0b1010_0110, 0b0111_0000])
    with pytest.raises(ValueError):
        w.write_bits(4, 2)
    with pytest.raises(ValueError):
        w.write_ue(-1)
    assert BitWriter().to_bytes() == b""


@given(st.lists(st.tuples(st.sampled_from(["bits", "ue", "se"]), st.integers(0, 2**32 - 2))))
@settings(max_examples=examples(300))
def test_bit_writer_round_trip(fields: list[tuple[str, int]]) -> None:
    w = BitWriter()
    for kind, value in fields:
        if kind == "bits":
            w.write_bits(value, 32)
        elif kind == "ue":
            w.write_ue(value)
        else:
            w.write_se(value - 2**31)
    r = BitReader(w.to_bytes())
    for kind, value in fields:
        if kind == "bits":
            assert r.read_bits(32) == value
        elif kind == "ue":
            assert r.read_ue() == value
        else:
            assert r.read_se() == value - 2**31
    assert r.bits_left < 8


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        (b"", b""),
        (b"\x67\x42", b"\x67\x42"),
        (b"\x00\x00\x03\x01", b"\x00\x00\x01"),
        (b"\x00\x00\x03\x00\x00\x03", b"\x00\x00\x00\x00"),
        (b"\x11\x00\x00\x03\x03\x00\x00\x03", b"\x11\x00\x00\x03\x00\x00"),
        (b"\x00\x03\x00\x00\x03\x02", b"\x00\x03\x00\x00\x02"),
        (b"\x00\x00\x04", b"\x00\x00\x04"),
    ],
)
def test_emulation_prevention(escaped: bytes, raw: bytes) -> None:
    assert unescape_rbsp(escaped) == raw
    assert escape_rbsp(raw) == escaped


@given(st.binary(max_size=64).map(lambda b: bytes(x if x > 3 else 0 for x in b) + b"\x80"))
@settings(max_examples=examples(300))
def test_escape_round_trip(raw: bytes) -> None:
    escaped = escape_rbsp(raw)
    assert (
        b"\x00\x00\x00" not in escaped and b"\x00\x00\x01" not in escaped and b"\x00\x00\x02" not in escaped
    )
    assert unescape_rbsp(escaped) == raw


# -- fuzz ------------------------------------------------------------------------------------------------


@given(st.binary(max_size=80))
@settings(max_examples=examples(300))
def test_fuzz_record(data: bytes) -> None:
    with contextlib.suppress(CodecParseError):
        codec_config_from_avc(data)


@given(st.binary(max_size=64))
@settings(max_examples=examples(300))
def test_fuzz_sps(data: bytes) -> None:
    for nal in (data, b"\x67" + data, b"\x67\x64\x00\x1f" + data):
        try:
            sps = parse_h264_sps(nal)
        except CodecParseError:
            continue
        assert sps.width > 0 and sps.height > 0
        assert sps.fps is None or sps.fps > 0


@given(st.sampled_from(sorted(REAL)), st.data())
@settings(max_examples=examples(300))
def test_fuzz_mutated_real_records(name: str, data: st.DataObject) -> None:
    record_bytes = bytearray(REAL[name][0])
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(record_bytes) - 1))
        record_bytes[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(record_bytes)))
    try:
        config = codec_config_from_avc(bytes(record_bytes[:cut]))
    except CodecParseError:
        return
    assert config.codec is Codec.H264
