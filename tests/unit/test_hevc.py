"""HEVC: hvcC records and SPSes from a real encoder, and hand-made SPSes reaching every branch to the VUI."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.bitreader import BitWriter, CodecParseError, escape_rbsp
from appliance.media.hevc import (
    NAL_PPS,
    NAL_SPS,
    NAL_VPS,
    codec_config_from_hevc,
    hevc_level_name,
    hevc_profile_name,
    parse_hevc_config,
    parse_hevc_sps,
)
from appliance.media.packets import Codec, Kind
from tests.fuzz import examples

# Real hvcC records: the extradata (hvcC box payload) of MP4 files written by ffmpeg 5.1.9 with libx265 3.5
# (Debian 12), read with PyAV as `av.open(path).streams[0].codec_context.extradata.hex()`. Each file came
# from `ffmpeg -f lavfi -i testsrc=size=WxH:rate=R -frames:v N -pix_fmt PIX -c:v libx265
# -x265-params log-level=error:info=0 ARGS out.mp4` with the values in the comment above it (info=0 drops
# x265's 2 kB version SEI).

# 1280x720, rate 30, 3 frames, yuv420p
MAIN_1280X720_30 = bytes.fromhex(
    "0101600000009000000000005df000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003005d9598"
    "09210001002b42010101600000030090000003000003005da00280802d165959a4932bc05a020000030002000003003c102200"
    "0100074401c172b46240"
)
# 854x480, rate 25, 3 frames, yuv420p10le (coded 856 wide: a conformance window of 1 chroma sample)
MAIN10_854X480_25 = bytes.fromhex(
    "0102200000009000000000005af000fcfdfafa00000f03200001001840010c01ffff02200000030090000003000003005a9598"
    "09210001002c42010102200000030090000003000003005aa006b201e1d6d96566924caf016808000003000800000300c84022"
    "000100074401c172b46240"
)
# 1920x1080, rate 60000/1001, 3 frames, yuv422p10le (format range extensions: Main 4:2:2 10)
MAIN422_10_1920X1080_5994 = bytes.fromhex(
    "0104080000009d08000000007bf000fcfefafa00000f03200001001740010c01ffff0408000003009d0800000300007b959809"
    "21000100294201010408000003009d0800000300007bb003c08010e4d96566924caf01680800001f48000753004022000100"
    "074401c172b46240"
)
# 640x360, rate 30, 1 frame, yuv420p, -profile:v mainstillpicture (x265 signals it as RExt Main Intra)
MAIN_INTRA_640X360_30 = bytes.fromhex(
    "0104080000009fa8000000003ff000fcfdf8f800000f03200001001740010c01ffff0408000003009fa800000300003fba0240"
    "21000100294201010408000003009fa800000300003fa00502016965ba924caf016808000003000800000300f04022000100"
    "074401c172b06240"
)
# 1280x720, rate 25, 3 frames, yuv420p, -vf setsar=64/45 -color_primaries bt709 -color_trc bt709
# -colorspace bt709, and in -x265-params also
# chromaloc=1:overscan=show:temporal-layers=1:hrd=1:vbv-maxrate=1000:vbv-bufsize=2000:display-window=0,0,0,8
# (two sub-layers, Extended_SAR, overscan, colour, chroma location, default display window; a prefix SEI
# array)
MAIN_VUI_1280X720_25 = bytes.fromhex(
    "0101600000009000000000005df002fffdf8f800001304200001001c40010c02ffff01600000030090000003000003005d0000"
    "9598acc048210001004942010201600000030090000003000003005d0000a00280802d1659598acd24995ffe0080005b6a0202"
    "03487898000003000800000300cb00e6b2f0007a12000f425c001e848003d09122000100074401c172b4624027000100064e01"
    "81010f80"
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
    reorder: int = 2
    sub_layers: int = 1


REAL = {
    "main": (MAIN_1280X720_30, Expected(1280, 720, 30.0, "Main", "3.1")),
    "main10": (MAIN10_854X480_25, Expected(854, 480, 25.0, "Main 10", "3", bit_depth=10)),
    "main422_10": (
        MAIN422_10_1920X1080_5994,
        Expected(1920, 1080, 60000 / 1001, "Main 4:2:2 10", "4.1", chroma_format_idc=2, bit_depth=10),
    ),
    "main_intra": (MAIN_INTRA_640X360_30, Expected(640, 360, 30.0, "Main Intra", "2.1", reorder=0)),
    "vui": (MAIN_VUI_1280X720_25, Expected(1280, 720, 25.0, "Main", "3.1", sub_layers=2)),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_records(name: str) -> None:
    record, want = REAL[name]
    hvcc = parse_hevc_config(record)
    assert (hvcc.version, hvcc.length_size) == (1, 4)
    assert [len(hvcc.vps), len(hvcc.sps), len(hvcc.pps)] == [1, 1, 1]
    assert [a.nal_type for a in hvcc.arrays][:3] == [NAL_VPS, NAL_SPS, NAL_PPS]
    assert (hvcc.profile_name, hvcc.level_name) == (want.profile, want.level)
    assert (hvcc.chroma_format_idc, hvcc.bit_depth_luma, hvcc.bit_depth_chroma) == (
        want.chroma_format_idc,
        want.bit_depth,
        want.bit_depth,
    )
    assert hvcc.num_temporal_layers == want.sub_layers
    sps = parse_hevc_sps(hvcc.sps[0])
    assert (sps.width, sps.height) == (want.width, want.height)
    assert sps.fps == pytest.approx(want.fps)
    assert (sps.profile_name, sps.level_name, sps.tier_name) == (want.profile, want.level, "Main")
    assert (sps.chroma_format_idc, sps.bit_depth_luma) == (want.chroma_format_idc, want.bit_depth)
    assert (sps.max_num_reorder_pics, sps.has_b_frames) == (want.reorder, want.reorder > 0)
    assert sps.max_sub_layers == want.sub_layers
    # The record's general fields copy the SPS's profile_tier_level.
    assert (sps.profile_idc, sps.compat_flags, sps.constraint_flags, sps.level_idc) == (
        hvcc.profile_idc,
        hvcc.compat_flags,
        hvcc.constraint_flags,
        hvcc.level_idc,
    )
    config = codec_config_from_hevc(record)
    assert (config.kind, config.codec, config.data) == (Kind.VIDEO, Codec.HEVC, record)
    assert (config.width, config.height, config.profile, config.level) == (
        want.width,
        want.height,
        want.profile,
        want.level,
    )
    assert config.fps == pytest.approx(want.fps)


def test_real_vui_details() -> None:
    hvcc = parse_hevc_config(MAIN_VUI_1280X720_25)
    assert parse_hevc_sps(hvcc.sps[0]).sar == (64, 45)
    assert [(a.nal_type, a.complete, len(a.nalus)) for a in hvcc.arrays] == [
        (32, False, 1),
        (33, False, 1),
        (34, False, 1),
        (39, False, 1),
    ]
    assert hvcc.nalus(39)[0][0] >> 1 == 39


# -- record edge cases ----------------------------------------------------------------------------------


def hvcc_record(arrays: list[tuple[int, list[bytes]]], *, length_bits: int = 3, version: int = 1) -> bytes:
    head = bytearray(MAIN_1280X720_30[:23])
    head[0] = version
    head[21] = (head[21] & 0xFC) | length_bits
    head[22] = len(arrays)
    body = b""
    for nal_type, nalus in arrays:
        body += bytes([0x80 | nal_type]) + len(nalus).to_bytes(2, "big")
        body += b"".join(len(n).to_bytes(2, "big") + n for n in nalus)
    return bytes(head) + body


REAL_SPS = parse_hevc_config(MAIN_1280X720_30).sps[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes"),
        (MAIN_1280X720_30[:22], "22 bytes"),
        (hvcc_record([], version=0), "configurationVersion=0"),
        (hvcc_record([], length_bits=2), "lengthSizeMinusOne=2"),
        (hvcc_record([(33, [REAL_SPS])])[:-1], "overruns"),
        (hvcc_record([(33, [b""])]), "NAL 0 in array 0 at offset 26 is empty"),
        (
            hvcc_record([(33, [REAL_SPS, REAL_SPS])])[: 26 + 2 + len(REAL_SPS) + 1],
            "truncated length of NAL 1",
        ),
        (hvcc_record([(33, [REAL_SPS]), (34, [])])[:-1], "truncated header of array 1"),
    ],
)
def test_malformed_records(data: bytes, message: str) -> None:
    with pytest.raises(CodecParseError, match=message):
        parse_hevc_config(data)
    with pytest.raises(CodecParseError):
        codec_config_from_hevc(data)


def test_record_variants() -> None:
    for bits, size in ((0, 1), (1, 2), (3, 4)):
        assert parse_hevc_config(hvcc_record([], length_bits=bits)).length_size == size
    both = parse_hevc_config(hvcc_record([(33, [REAL_SPS]), (33, [REAL_SPS, REAL_SPS])]))
    assert len(both.sps) == 3 and both.arrays[0].complete
    config = codec_config_from_hevc(hvcc_record([]))
    assert (config.width, config.fps, config.profile, config.level) == (None, None, "Main", "3.1")


def test_unparsable_sps_still_gives_a_config() -> None:
    for bad in (b"\x42", b"\x44\x01\xc1", b"\x42\x01" + bytes(20)):
        config = codec_config_from_hevc(hvcc_record([(33, [bad])]))
        assert (config.codec, config.width, config.height, config.fps) == (Codec.HEVC, None, None, None)
        assert (config.profile, config.level) == ("Main", "3.1")


# -- hand-made SPS ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Rps:
    """An st_ref_pic_set: explicit (delta_poc_minus1, used) lists, or predicted from the previous set."""

    negative: tuple[tuple[int, bool], ...] = ()
    positive: tuple[tuple[int, bool], ...] = ()
    inter: tuple[int, tuple[tuple[bool, bool], ...]] | None = None  # delta_rps, (used, use_delta) pairs


@dataclass(frozen=True, kw_only=True)
class Vui:
    aspect_ratio_idc: int | None = None
    sar: tuple[int, int] = (0, 0)
    overscan: bool = False
    colour: bool = False
    chroma_loc: bool = False
    field_seq: bool = False
    display_window: tuple[int, int, int, int] | None = None
    timing: tuple[int, int] | None = None
    poc_proportional: bool = False


@dataclass(frozen=True, kw_only=True)
class Sps:
    profile_idc: int = 1
    tier: bool = False
    constraint_flags: int = 0x900000000000  # progressive, frame only
    level_idc: int = 93
    sub_layers: tuple[tuple[bool, bool], ...] = ()  # (profile_present, level_present) per sub-layer
    ordering_for_all: bool = True
    chroma_format_idc: int = 1
    separate_colour_plane: bool = False
    width: int = 1280
    height: int = 720
    conformance: tuple[int, int, int, int] | None = None
    bit_depth: int = 8
    scaling_list_data: bool = False
    pcm: bool = False
    rps: tuple[Rps, ...] = ()
    long_term: tuple[tuple[int, bool], ...] | None = None
    vui: Vui | None = field(default_factory=lambda: Vui(timing=(1, 30)))


def hevc_sps(s: Sps) -> bytes:
    """Write an SPS field by field (H.265 7.3.2.2.1).

    The SPSes the tests below build (reference picture sets included) were checked once against FFmpeg's
    own parser: written after a start code and a VPS to x.265, `ffmpeg -f hevc -i x.265 -c copy -bsf:v
    trace_headers -f null -` reads the same fields, vui_time_scale and all, up to rbsp_stop_one_bit.
    """
    w = BitWriter()
    w.write_bits(0, 4)  # sps_video_parameter_set_id
    w.write_bits(len(s.sub_layers), 3)
    w.write_bit(1)  # sps_temporal_id_nesting_flag
    w.write_bits(0, 2)
    w.write_bit(s.tier)
    w.write_bits(s.profile_idc, 5)
    w.write_bits(1 << (31 - s.profile_idc), 32)
    w.write_bits(s.constraint_flags, 48)
    w.write_bits(s.level_idc, 8)
    for profile_present, level_present in s.sub_layers:
        w.write_bit(profile_present)
        w.write_bit(level_present)
    if s.sub_layers:
        w.write_bits(0, 2 * (8 - len(s.sub_layers)))
    for profile_present, level_present in s.sub_layers:
        if profile_present:
            w.write_bits(0x0160000000900000, 64)
            w.write_bits(0, 24)
        if level_present:
            w.write_bits(90, 8)
    w.write_ue(0)  # sps_seq_parameter_set_id
    w.write_ue(s.chroma_format_idc)
    if s.chroma_format_idc == 3:
        w.write_bit(s.separate_colour_plane)
    w.write_ue(s.width)
    w.write_ue(s.height)
    w.write_bit(s.conformance is not None)
    for offset in s.conformance or ():
        w.write_ue(offset)
    w.write_ue(s.bit_depth - 8)
    w.write_ue(s.bit_depth - 8)
    w.write_ue(4)  # log2_max_pic_order_cnt_lsb_minus4: 8-bit POC LSBs
    w.write_bit(s.ordering_for_all)
    for i in range(len(s.sub_layers) + 1 if s.ordering_for_all else 1):
        w.write_ue(4)
        w.write_ue(i + 1)  # sps_max_num_reorder_pics
        w.write_ue(0)
    for value in (0, 3, 0, 3, 1, 1):  # block sizes and transform hierarchy depths
        w.write_ue(value)
    w.write_bit(s.scaling_list_data)
    if s.scaling_list_data:
        w.write_bit(1)  # sps_scaling_list_data_present_flag
        for size_id in range(4):
            for matrix_id in range(0, 6, 3 if size_id == 3 else 1):
                explicit = (size_id + matrix_id) % 2 == 0
                w.write_bit(explicit)
                if not explicit:
                    w.write_ue(0)
                    continue
                if size_id > 1:
                    w.write_se(8)
                for i in range(min(64, 1 << (4 + (size_id << 1)))):
                    w.write_se(1 if i % 2 else -1)
    w.write_bit(1)  # amp_enabled_flag
    w.write_bit(1)  # sample_adaptive_offset_enabled_flag
    w.write_bit(s.pcm)
    if s.pcm:
        w.write_bits(0x77, 8)
        w.write_ue(0)
        w.write_ue(1)
        w.write_bit(1)
    w.write_ue(len(s.rps))
    for idx, rps in enumerate(s.rps):
        if idx > 0:
            w.write_bit(rps.inter is not None)
        if rps.inter is not None:
            delta_rps, flags = rps.inter
            w.write_bit(delta_rps < 0)
            w.write_ue(abs(delta_rps) - 1)
            for used, use_delta in flags:
                w.write_bit(used)
                if not used:
                    w.write_bit(use_delta)
            continue
        w.write_ue(len(rps.negative))
        w.write_ue(len(rps.positive))
        for delta_minus1, used in rps.negative + rps.positive:
            w.write_ue(delta_minus1)
            w.write_bit(used)
    w.write_bit(s.long_term is not None)
    if s.long_term is not None:
        w.write_ue(len(s.long_term))
        for lsb, used in s.long_term:
            w.write_bits(lsb, 8)
            w.write_bit(used)
    w.write_bit(1)  # sps_temporal_mvp_enabled_flag
    w.write_bit(1)  # strong_intra_smoothing_enabled_flag
    w.write_bit(s.vui is not None)
    if s.vui is not None:
        _write_vui(w, s.vui)
    w.write_bit(0)  # sps_extension_present_flag
    w.write_bit(1)  # rbsp_stop_one_bit
    return b"\x42\x01" + escape_rbsp(w.to_bytes())


def _write_vui(w: BitWriter, vui: Vui) -> None:
    w.write_bit(vui.aspect_ratio_idc is not None)
    if vui.aspect_ratio_idc is not None:
        w.write_bits(vui.aspect_ratio_idc, 8)
        if vui.aspect_ratio_idc == 255:
            w.write_bits(vui.sar[0], 16)
            w.write_bits(vui.sar[1], 16)
    w.write_bit(vui.overscan)
    if vui.overscan:
        w.write_bit(0)
    w.write_bit(vui.colour)
    if vui.colour:
        w.write_bits(0b1010, 4)
        w.write_bit(1)
        w.write_bits(0x090909, 24)
    w.write_bit(vui.chroma_loc)
    if vui.chroma_loc:
        w.write_ue(2)
        w.write_ue(2)
    w.write_bit(0)  # neutral_chroma_indication_flag
    w.write_bit(vui.field_seq)
    w.write_bit(vui.field_seq)  # frame_field_info_present_flag
    w.write_bit(vui.display_window is not None)
    for offset in vui.display_window or ():
        w.write_ue(offset)
    w.write_bit(vui.timing is not None)
    if vui.timing is not None:
        w.write_bits(vui.timing[0], 32)
        w.write_bits(vui.timing[1], 32)
        w.write_bit(vui.poc_proportional)
        if vui.poc_proportional:
            w.write_ue(0)
        w.write_bit(0)  # vui_hrd_parameters_present_flag
    w.write_bit(0)  # bitstream_restriction_flag


# Reference picture sets exercising inter prediction (H.265 7.4.8). Set 0 is {-1, -3 | +2}. Set 1 predicts
# from it with delta_rps -1: candidates -2, -4, +1 and -1 (the reference picture); +1 is dropped, so it is
# {-1, -2, -4 |}. Set 2 predicts from set 1 with +2: candidates +1, 0, -2 and +2; 0 never counts, so it is
# {-2 | +1, +2}, three pictures, and set 3 must read 3 + 1 flag pairs. Set 4 is empty.
RPS = (
    Rps(negative=((0, True), (1, True)), positive=((1, True),)),
    Rps(inter=(-1, ((True, False), (False, True), (False, False), (True, True)))),
    Rps(inter=(2, ((True, True), (True, True), (True, True), (True, True)))),
    Rps(inter=(-3, ((False, True), (True, True), (False, False), (False, True)))),
    Rps(),
)


def test_hand_made_default() -> None:
    sps = parse_hevc_sps(hevc_sps(Sps()))
    assert (sps.width, sps.height, sps.fps, sps.sar, sps.max_num_reorder_pics) == (1280, 720, 30.0, None, 1)


def test_reference_picture_sets_and_long_term_refs() -> None:
    sps = parse_hevc_sps(
        hevc_sps(Sps(rps=RPS, long_term=((5, True), (200, False)), vui=Vui(timing=(1001, 24000))))
    )
    assert sps.fps == pytest.approx(24000 / 1001)


def test_a_miscounted_reference_picture_set_loses_the_rate_only() -> None:
    # Set 1 predicts from a 3-picture set, so it has 4 flag pairs; writing 3 shifts every later field.
    short = Rps(inter=(-1, ((True, False), (True, False), (True, False))))
    sps = parse_hevc_sps(hevc_sps(Sps(rps=(RPS[0], short), vui=Vui(timing=(1, 30)))))
    assert sps.fps != 30.0
    assert (sps.width, sps.height) == (1280, 720)


@pytest.mark.parametrize(
    "s",
    [
        Sps(rps=(Rps(),) * 65),  # num_short_term_ref_pic_sets at most 64
        Sps(long_term=((0, True),) * 33),  # num_long_term_ref_pics_sps at most 32
        Sps(rps=(Rps(negative=((0, True),) * 9, positive=((0, True),) * 8),)),  # at most 16 pictures
        # Predicting from a 16-picture set: 16 shifted deltas and the reference picture make 17.
        Sps(rps=(Rps(negative=((0, True),) * 16), Rps(inter=(-1, ((True, True),) * 17)))),
        Sps(rps=(Rps(), Rps(inter=(-(1 << 15) - 1, ((True, True),))))),  # abs_delta_rps_minus1 < 2**15
    ],
)
def test_out_of_range_reference_picture_sets_lose_the_rate_only(s: Sps) -> None:
    sps = parse_hevc_sps(hevc_sps(s))
    assert (sps.width, sps.height, sps.fps) == (1280, 720, None)


def test_scaling_lists_pcm_and_sub_layers() -> None:
    s = Sps(
        sub_layers=((True, True), (False, True), (True, False)),
        scaling_list_data=True,
        pcm=True,
        rps=RPS[:2],
        vui=Vui(timing=(1, 50)),
    )
    sps = parse_hevc_sps(hevc_sps(s))
    assert (sps.fps, sps.max_sub_layers, sps.max_num_reorder_pics) == (50.0, 4, 4)
    only_highest = parse_hevc_sps(hevc_sps(Sps(sub_layers=((False, False),), ordering_for_all=False)))
    assert (only_highest.max_num_reorder_pics, only_highest.fps) == (1, 30.0)


def test_vui_fields() -> None:
    vui = Vui(
        aspect_ratio_idc=255,
        sar=(10, 11),
        overscan=True,
        colour=True,
        chroma_loc=True,
        display_window=(0, 0, 0, 8),
        timing=(1, 25),
        poc_proportional=True,
    )
    sps = parse_hevc_sps(hevc_sps(Sps(vui=vui)))
    assert (sps.sar, sps.fps) == ((10, 11), 25.0)
    assert parse_hevc_sps(hevc_sps(Sps(vui=Vui(aspect_ratio_idc=14)))).sar == (4, 3)
    assert parse_hevc_sps(hevc_sps(Sps(vui=Vui(timing=(0, 25))))).fps is None
    assert parse_hevc_sps(hevc_sps(Sps(vui=None))).fps is None
    # Field sequences: each picture is a field, two per frame.
    assert parse_hevc_sps(hevc_sps(Sps(vui=Vui(field_seq=True, timing=(1, 50))))).fps == 25.0


@pytest.mark.parametrize(
    ("s", "size"),
    [
        (Sps(conformance=(1, 2, 3, 4)), (1280 - 6, 720 - 14)),
        (Sps(chroma_format_idc=2, conformance=(1, 2, 3, 4)), (1280 - 6, 720 - 7)),
        (Sps(chroma_format_idc=3, conformance=(1, 2, 3, 4)), (1280 - 3, 720 - 7)),
        (Sps(chroma_format_idc=3, separate_colour_plane=True, conformance=(1, 0, 0, 1)), (1279, 719)),
        (Sps(chroma_format_idc=0, conformance=(1, 0, 0, 1)), (1279, 719)),
    ],
)
def test_conformance_window(s: Sps, size: tuple[int, int]) -> None:
    sps = parse_hevc_sps(hevc_sps(s))
    assert (sps.width, sps.height, sps.fps) == (*size, 30.0)


def test_invalid_sps() -> None:
    good = hevc_sps(Sps(vui=None))
    # Truncated anywhere up to the sub-layer ordering info raises; after it only the rate is lost.
    with pytest.raises(CodecParseError, match="2-byte NAL header"):
        parse_hevc_sps(good[:1])
    for cut in range(2, 24):
        with pytest.raises(CodecParseError):
            parse_hevc_sps(good[:cut])
    assert parse_hevc_sps(hevc_sps(Sps())[:-4]).fps is None
    with pytest.raises(CodecParseError, match="nal_unit_type=34"):
        parse_hevc_sps(parse_hevc_config(MAIN_1280X720_30).pps[0])
    with pytest.raises(CodecParseError, match="chroma_format_idc=4"):
        parse_hevc_sps(hevc_sps(Sps(chroma_format_idc=4)))
    with pytest.raises(CodecParseError, match="0x720"):
        parse_hevc_sps(hevc_sps(Sps(width=0)))
    with pytest.raises(CodecParseError, match="conformance window"):
        parse_hevc_sps(hevc_sps(Sps(conformance=(320, 320, 0, 0))))
    with pytest.raises(CodecParseError, match="sps_max_sub_layers_minus1=7"):
        parse_hevc_sps(b"\x42\x01\x0f" + good[3:])
    with pytest.raises(CodecParseError, match="bit_depth_luma_minus8=9"):
        parse_hevc_sps(hevc_sps(Sps(bit_depth=17)))


def rext(flags: str) -> int:
    """The 48 constraint bits: progressive and frame-only, then the nine RExt flags given as 0/1."""
    return (0b1001 << 44) | (int(flags, 2) << 35)


@pytest.mark.parametrize(
    ("profile_idc", "compat", "constraint", "name"),
    [
        (1, 0, 0, "Main"),
        (2, 0, 0, "Main 10"),
        (3, 0, 0, "Main Still Picture"),
        (0, 1 << (31 - 2), 0, "Main 10"),  # profile 0: the compatibility flags tell
        (0, 0, 0, "profile 0"),
        (5, 0, 0, "High Throughput"),
        (9, 0, 0, "Screen Extended"),
        (17, 0, 0, "profile 17"),
        # RExt, from the flags max_12bit, max_10bit, max_8bit, max_422chroma, max_420chroma,
        # max_monochrome, intra, one_picture_only, lower_bit_rate (H.265 Table A.2).
        (4, 0, rext("110100001"), "Main 4:2:2 10"),
        (4, 0, rext("100100001"), "Main 4:2:2 12"),
        (4, 0, rext("110000001"), "Main 4:4:4 10"),
        (4, 0, rext("111000001"), "Main 4:4:4"),
        (4, 0, rext("100110001"), "Main 12"),
        (4, 0, rext("111111001"), "Monochrome"),
        (4, 0, rext("100111001"), "Monochrome 12"),
        (4, 0, rext("111110101"), "Main Intra"),
        (4, 0, rext("110100100"), "Main 4:2:2 10 Intra"),
        (4, 0, rext("111000111"), "Main 4:4:4 Still Picture"),
        (4, 0, rext("000000110"), "Main 4:4:4 16 Still Picture"),
        (4, 0, rext("000000001"), "RExt"),  # 16-bit 4:4:4 inter is no profile
        (4, 0, 0, "RExt"),
    ],
)
def test_profile_names(profile_idc: int, compat: int, constraint: int, name: str) -> None:
    assert hevc_profile_name(profile_idc, compat, constraint) == name


@pytest.mark.parametrize(
    ("level_idc", "name"),
    [
        (30, "1"),
        (60, "2"),
        (63, "2.1"),
        (93, "3.1"),
        (120, "4"),
        (123, "4.1"),
        (186, "6.2"),
        (31, "level_idc 31"),
    ],
)
def test_level_names(level_idc: int, name: str) -> None:
    assert hevc_level_name(level_idc) == name


def test_tier() -> None:
    assert parse_hevc_sps(hevc_sps(Sps(tier=True, level_idc=150))).tier_name == "High"


# -- fuzz ------------------------------------------------------------------------------------------------


@given(st.binary(max_size=120))
@settings(max_examples=examples(300))
def test_fuzz_record(data: bytes) -> None:
    with contextlib.suppress(CodecParseError):
        codec_config_from_hevc(data)
    with contextlib.suppress(CodecParseError):
        codec_config_from_hevc(MAIN_1280X720_30[:22] + data)


@given(st.binary(max_size=96))
@settings(max_examples=examples(300))
def test_fuzz_sps(data: bytes) -> None:
    for nal in (data, b"\x42\x01" + data, REAL_SPS[:20] + data):
        try:
            sps = parse_hevc_sps(nal)
        except CodecParseError:
            continue
        assert sps.width > 0 and sps.height > 0
        assert sps.fps is None or sps.fps > 0


@given(st.sampled_from(sorted(REAL)), st.data())
@settings(max_examples=examples(300))
def test_fuzz_mutated_real_records(name: str, data: st.DataObject) -> None:
    record = bytearray(REAL[name][0])
    for _ in range(data.draw(st.integers(1, 4))):
        record[data.draw(st.integers(0, len(record) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(record)))
    try:
        config = codec_config_from_hevc(bytes(record[:cut]))
    except CodecParseError:
        return
    assert config.codec is Codec.HEVC
