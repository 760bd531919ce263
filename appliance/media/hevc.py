"""HEVC decoder configuration records and sequence parameter sets: the facts a stream announces.

Theory of operation
-------------------
An HEVC stream in FLV (enhanced RTMP) or MP4 announces itself with an HEVCDecoderConfigurationRecord
(ISO/IEC 14496-15 8.3.3.1, "hvcC"): the general profile, tier and level, and arrays of VPS, SPS, PPS
and SEI NAL units. The SPS (ITU-T H.265 7.3.2.2.1) holds the coded size, conformance window, chroma
format and bit depth early on; the frame rate sits in its VUI (Annex E), behind the short- and long-term
reference picture sets, so reaching it means parsing all of those.

As for H.264 (see `appliance.media.h264`), parsing is strict up to the facts the SPS must have (size,
chroma, bit depth, reordering) and best-effort beyond: anything odd after them leaves `fps` None rather
than raising. `codec_config_from_hevc` never raises for a well-formed record.

The module is pure: no I/O, no trio.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from appliance.media._vui import read_vui_head
from appliance.media.bitreader import BitReader, CodecParseError, unescape_rbsp
from appliance.media.packets import Codec, CodecConfig, Kind

__all__ = [
    "NAL_PPS",
    "NAL_SPS",
    "NAL_VPS",
    "CodecParseError",
    "HevcConfig",
    "HevcNalArray",
    "HevcSps",
    "codec_config_from_hevc",
    "hevc_level_name",
    "hevc_profile_name",
    "parse_hevc_config",
    "parse_hevc_sps",
]

NAL_VPS = 32
NAL_SPS = 33
NAL_PPS = 34

_HVCC_HEADER_SIZE = 23
# H.265 7.4.3.2.1 and 7.4.8 bounds; loops over larger counts only happen on corrupt data.
_MAX_ST_REF_PIC_SETS = 64
_MAX_DELTA_POCS = 16
_MAX_LT_REF_PICS = 32

_PROFILE_NAMES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "RExt",
    5: "High Throughput",
    6: "Multiview Main",
    7: "Scalable Main",
    8: "3D Main",
    9: "Screen Extended",
    10: "Scalable RExt",
    11: "High Throughput Screen Extended",
}

# The format range extensions profiles of H.265 Table A.2, named from their constraint flags.
_REXT_NAMES = frozenset(
    {
        "Monochrome",
        "Monochrome 10",
        "Monochrome 12",
        "Monochrome 16",
        "Main 12",
        "Main 4:2:2 10",
        "Main 4:2:2 12",
        "Main 4:4:4",
        "Main 4:4:4 10",
        "Main 4:4:4 12",
        "Main Intra",
        "Main 10 Intra",
        "Main 12 Intra",
        "Main 4:2:2 10 Intra",
        "Main 4:2:2 12 Intra",
        "Main 4:4:4 Intra",
        "Main 4:4:4 10 Intra",
        "Main 4:4:4 12 Intra",
        "Main 4:4:4 16 Intra",
        "Main 4:4:4 Still Picture",
        "Main 4:4:4 16 Still Picture",
    }
)

# (SubWidthC, SubHeightC) by ChromaArrayType (H.265 Table 6-1).
_CHROMA_SUBSAMPLING = {1: (2, 2), 2: (2, 1), 3: (1, 1)}


@dataclass(frozen=True, slots=True, kw_only=True)
class HevcNalArray:
    """One array of an HEVCDecoderConfigurationRecord: NAL units of one type.

    Attributes:
        nal_type: NAL_unit_type (32 VPS, 33 SPS, 34 PPS, 39/40 SEI).
        complete: array_completeness: all units of this type are here, none in the samples.
        nalus: The NAL units, headers included.
    """

    nal_type: int
    complete: bool
    nalus: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HevcConfig:
    """An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1).

    Attributes:
        version: configurationVersion (1).
        profile_space, tier_flag, profile_idc: general_profile_space, general_tier_flag,
            general_profile_idc.
        compat_flags: general_profile_compatibility_flags (32 bits, flag 0 the most significant).
        constraint_flags: general_constraint_indicator_flags (48 bits).
        level_idc: general_level_idc (30 times the level number).
        min_spatial_segmentation_idc, parallelism_type: As the record says.
        chroma_format_idc: 0 to 3.
        bit_depth_luma, bit_depth_chroma: Bits per sample.
        avg_frame_rate: avgFrameRate in frames per 256 seconds; 0 means unspecified.
        constant_frame_rate, num_temporal_layers, temporal_id_nested: As the record says.
        length_size: Bytes per NAL unit length prefix in the samples: 1, 2 or 4.
        arrays: The NAL unit arrays in record order.
    """

    version: int
    profile_space: int
    tier_flag: bool
    profile_idc: int
    compat_flags: int
    constraint_flags: int
    level_idc: int
    min_spatial_segmentation_idc: int
    parallelism_type: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    constant_frame_rate: int
    num_temporal_layers: int
    temporal_id_nested: bool
    length_size: int
    arrays: tuple[HevcNalArray, ...]

    def nalus(self, nal_type: int) -> tuple[bytes, ...]:
        """Return all NAL units of one type, across arrays, in record order."""
        return tuple(nal for array in self.arrays if array.nal_type == nal_type for nal in array.nalus)

    @property
    def vps(self) -> tuple[bytes, ...]:
        """The video parameter sets."""
        return self.nalus(NAL_VPS)

    @property
    def sps(self) -> tuple[bytes, ...]:
        """The sequence parameter sets."""
        return self.nalus(NAL_SPS)

    @property
    def pps(self) -> tuple[bytes, ...]:
        """The picture parameter sets."""
        return self.nalus(NAL_PPS)

    @property
    def profile_name(self) -> str:
        """The general profile's name (see `hevc_profile_name`)."""
        return hevc_profile_name(self.profile_idc, self.compat_flags, self.constraint_flags)

    @property
    def level_name(self) -> str:
        """The general level's name, e.g. "4.1"."""
        return hevc_level_name(self.level_idc)


@dataclass(frozen=True, slots=True, kw_only=True)
class HevcSps:
    """The facts of an HEVC sequence parameter set (ITU-T H.265 7.3.2.2.1 and Annex E).

    Attributes:
        profile_space, tier_flag, profile_idc, compat_flags, constraint_flags, level_idc: The general
            profile_tier_level (H.265 7.3.3); `constraint_flags` are the 48 bits from
            general_progressive_source_flag on, as the hvcC carries them.
        max_sub_layers: sps_max_sub_layers_minus1 + 1.
        sps_id: sps_seq_parameter_set_id.
        chroma_format_idc: 0 (monochrome), 1 (4:2:0), 2 (4:2:2) or 3 (4:4:4).
        bit_depth_luma, bit_depth_chroma: Bits per sample.
        width, height: The displayed size in luma samples, after the conformance window.
        max_num_reorder_pics: sps_max_num_reorder_pics of the highest sub-layer.
        sar: The sample aspect ratio (width, height) from the VUI, or None.
        fps: Frames per second, vui_time_scale / vui_num_units_in_tick (halved for field sequences), or
            None without VUI timing or when the SPS could not be followed that far.
    """

    profile_space: int
    tier_flag: bool
    profile_idc: int
    compat_flags: int
    constraint_flags: int
    level_idc: int
    max_sub_layers: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    max_num_reorder_pics: int
    sar: tuple[int, int] | None = None
    fps: float | None = None

    @property
    def profile_name(self) -> str:
        """The general profile's name (see `hevc_profile_name`)."""
        return hevc_profile_name(self.profile_idc, self.compat_flags, self.constraint_flags)

    @property
    def level_name(self) -> str:
        """The general level's name, e.g. "4.1"."""
        return hevc_level_name(self.level_idc)

    @property
    def tier_name(self) -> str:
        """ "Main" or "High"."""
        return "High" if self.tier_flag else "Main"

    @property
    def has_b_frames(self) -> bool:
        """Whether output order can differ from decoding order."""
        return self.max_num_reorder_pics > 0


def hevc_profile_name(profile_idc: int, compat_flags: int = 0, constraint_flags: int = 0) -> str:
    """Name an HEVC profile (ITU-T H.265 A.3).

    When general_profile_idc is 0 the lowest set compatibility flag stands in for it (A.3: a decoder
    conforming to profile j may decode streams with flag j set). Format range extensions (4) are named
    from their constraint flags (Table A.2), e.g. "Main 4:2:2 10", falling back to "RExt".

    Args:
        profile_idc: general_profile_idc.
        compat_flags: general_profile_compatibility_flags, flag 0 the most significant of 32 bits.
        constraint_flags: The 48 constraint indicator bits.

    Returns:
        The name; "profile N" for unknown values.
    """
    if profile_idc == 0:
        profile_idc = next((j for j in range(1, 32) if compat_flags & (1 << (31 - j))), 0)
    if profile_idc == 4:
        return _rext_name(constraint_flags)
    return _PROFILE_NAMES.get(profile_idc, f"profile {profile_idc}")


def _rext_name(constraint_flags: int) -> str:
    # general_max_12bit_constraint_flag is bit 4 of the 48 (after progressive, interlaced, non-packed and
    # frame-only); the eight RExt flags follow it (H.265 7.3.3).
    def flag(n: int) -> bool:
        return bool(constraint_flags & (1 << (47 - n)))

    bits = 8 if flag(6) else 10 if flag(5) else 12 if flag(4) else 16
    if flag(9):
        name = "Monochrome" if bits == 8 else f"Monochrome {bits}"
    elif flag(8):
        name = "Main" if bits == 8 else f"Main {bits}"
    elif flag(7):
        name = f"Main 4:2:2 {bits}"
    else:
        name = "Main 4:4:4" if bits == 8 else f"Main 4:4:4 {bits}"
    if flag(10):
        name += " Still Picture" if flag(11) else " Intra"
    return name if name in _REXT_NAMES else "RExt"


def hevc_level_name(level_idc: int) -> str:
    """Name an HEVC level: general_level_idc is 30 times the level (H.265 A.4.1), so 123 is "4.1".

    Returns:
        E.g. "3.1", "4"; "level_idc N" for values that are no level.
    """
    major, rest = divmod(level_idc, 30)
    minor, odd = divmod(rest, 3)
    if odd:
        return f"level_idc {level_idc}"
    return f"{major}.{minor}" if minor else str(major)


def parse_hevc_config(record: bytes) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1).

    Args:
        record: The record, as an enhanced-RTMP HEVC sequence header or an MP4 hvcC box carries it.

    Returns:
        The parsed record.

    Raises:
        CodecParseError: The record is truncated, has a version other than 1, a length size of 3, or an
            empty NAL unit.
    """
    if len(record) < _HVCC_HEADER_SIZE:
        raise CodecParseError(f"HEVC config: {len(record)} bytes, need at least {_HVCC_HEADER_SIZE}")
    if record[0] != 1:
        raise CodecParseError(f"HEVC config: configurationVersion={record[0]}, want 1")
    length_size = (record[21] & 0x03) + 1
    if length_size == 3:
        raise CodecParseError("HEVC config: lengthSizeMinusOne=2, want 0, 1 or 3")
    arrays: list[HevcNalArray] = []
    pos = _HVCC_HEADER_SIZE
    for i in range(record[22]):
        if len(record) - pos < 3:
            raise CodecParseError(f"HEVC config: truncated header of array {i} at offset {pos}")
        head, count = record[pos], int.from_bytes(record[pos + 1 : pos + 3], "big")
        pos += 3
        nalus: list[bytes] = []
        for j in range(count):
            if len(record) - pos < 2:
                raise CodecParseError(
                    f"HEVC config: truncated length of NAL {j} in array {i} at offset {pos}"
                )
            size = int.from_bytes(record[pos : pos + 2], "big")
            pos += 2
            if size == 0:
                raise CodecParseError(f"HEVC config: NAL {j} in array {i} at offset {pos - 2} is empty")
            if size > len(record) - pos:
                raise CodecParseError(
                    f"HEVC config: NAL {j} in array {i} of {size} bytes at offset {pos} overruns the record "
                    f"({len(record) - pos} bytes left)"
                )
            nalus.append(record[pos : pos + size])
            pos += size
        arrays.append(HevcNalArray(nal_type=head & 0x3F, complete=bool(head & 0x80), nalus=tuple(nalus)))
    return HevcConfig(
        version=record[0],
        profile_space=record[1] >> 6,
        tier_flag=bool(record[1] & 0x20),
        profile_idc=record[1] & 0x1F,
        compat_flags=int.from_bytes(record[2:6], "big"),
        constraint_flags=int.from_bytes(record[6:12], "big"),
        level_idc=record[12],
        min_spatial_segmentation_idc=int.from_bytes(record[13:15], "big") & 0x0FFF,
        parallelism_type=record[15] & 0x03,
        chroma_format_idc=record[16] & 0x03,
        bit_depth_luma=(record[17] & 0x07) + 8,
        bit_depth_chroma=(record[18] & 0x07) + 8,
        avg_frame_rate=int.from_bytes(record[19:21], "big"),
        constant_frame_rate=record[21] >> 6,
        num_temporal_layers=(record[21] >> 3) & 0x07,
        temporal_id_nested=bool(record[21] & 0x04),
        length_size=length_size,
        arrays=tuple(arrays),
    )


def parse_hevc_sps(nal: bytes) -> HevcSps:
    """Parse an HEVC sequence parameter set NAL unit (ITU-T H.265 7.3.2.2.1, E.2.1).

    Args:
        nal: The NAL unit, 2-byte header included, emulation prevention bytes still in place.

    Returns:
        The SPS's facts. Everything after the sub-layer ordering info (reference picture sets, VUI) is
        best-effort: if it cannot be followed, `fps` and `sar` are None rather than raising.

    Raises:
        CodecParseError: Not an SPS, truncated before the sub-layer ordering info, or holding values out
            of the ranges H.265 7.4.3.2.1 allows.
    """
    if len(nal) < 2:
        raise CodecParseError(f"HEVC SPS: {len(nal)} bytes, need a 2-byte NAL header")
    nal_type = (nal[0] >> 1) & 0x3F
    if nal_type != NAL_SPS:
        raise CodecParseError(f"HEVC SPS: nal_unit_type={nal_type}, want {NAL_SPS}")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip_bits(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.read_bits(3)
    if max_sub_layers_minus1 > 6:
        raise CodecParseError(f"HEVC SPS: sps_max_sub_layers_minus1={max_sub_layers_minus1}, at most 6")
    r.skip_bits(1)  # sps_temporal_id_nesting_flag
    profile_space = r.read_bits(2)
    tier_flag = r.read_flag()
    profile_idc = r.read_bits(5)
    compat_flags = r.read_bits(32)
    constraint_flags = r.read_bits(48)
    level_idc = r.read_bits(8)
    _skip_sub_layer_ptl(r, max_sub_layers_minus1)
    sps_id = _ue_at_most(r, 15, "sps_seq_parameter_set_id")
    chroma_format_idc = _ue_at_most(r, 3, "chroma_format_idc")
    separate_colour_plane = chroma_format_idc == 3 and r.read_flag()
    width = r.read_ue()
    height = r.read_ue()
    if r.read_flag():  # conformance_window_flag
        # Offsets count chroma samples (7-19, 7-20); luma for 4:4:4, monochrome and separate planes.
        unit_x, unit_y = _CHROMA_SUBSAMPLING.get(0 if separate_colour_plane else chroma_format_idc, (1, 1))
        left, right, top, bottom = (r.read_ue() for _ in range(4))
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise CodecParseError(f"HEVC SPS: picture size after the conformance window is {width}x{height}")
    bit_depth_luma = 8 + _ue_at_most(r, 8, "bit_depth_luma_minus8")
    bit_depth_chroma = 8 + _ue_at_most(r, 8, "bit_depth_chroma_minus8")
    log2_max_poc_lsb = 4 + _ue_at_most(r, 12, "log2_max_pic_order_cnt_lsb_minus4")
    ordering_info_present = r.read_flag()
    reorder = 0
    for _ in range(0 if ordering_info_present else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        r.read_ue()  # sps_max_dec_pic_buffering_minus1
        reorder = _ue_at_most(r, 15, "sps_max_num_reorder_pics")
        r.read_ue()  # sps_max_latency_increase_plus1
    tail = _Tail()
    with contextlib.suppress(CodecParseError):
        _parse_tail(r, log2_max_poc_lsb, tail)
    return HevcSps(
        profile_space=profile_space,
        tier_flag=tier_flag,
        profile_idc=profile_idc,
        compat_flags=compat_flags,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        max_sub_layers=max_sub_layers_minus1 + 1,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        max_num_reorder_pics=reorder,
        sar=tail.sar,
        fps=tail.fps,
    )


def _ue_at_most(r: BitReader, limit: int, name: str) -> int:
    value = r.read_ue()
    if value > limit:
        raise CodecParseError(f"HEVC SPS: {name}={value}, at most {limit} allowed")
    return value


def _skip_sub_layer_ptl(r: BitReader, max_sub_layers_minus1: int) -> None:
    # H.265 7.3.3, after general_level_idc.
    present = [(r.read_flag(), r.read_flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip_bits(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip_bits(88)  # sub_layer profile space .. sub_layer_inbld_flag
        if level_present:
            r.skip_bits(8)  # sub_layer_level_idc


@dataclass(slots=True)
class _Tail:
    sar: tuple[int, int] | None = None
    fps: float | None = None


def _parse_tail(r: BitReader, log2_max_poc_lsb: int, tail: _Tail) -> None:
    # H.265 7.3.2.2.1 from log2_min_luma_coding_block_size_minus3 to the VUI's timing info.
    for _ in range(6):
        # log2_min_luma_coding_block_size_minus3, log2_diff_max_min_luma_coding_block_size,
        # log2_min/diff luma transform block sizes, max_transform_hierarchy_depth_inter/intra
        r.read_ue()
    if r.read_flag() and r.read_flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        _skip_scaling_list_data(r)
    r.skip_bits(2)  # amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.read_flag():  # pcm_enabled_flag
        r.skip_bits(8)  # pcm_sample_bit_depth_luma/chroma_minus1
        r.read_ue()  # log2_min_pcm_luma_coding_block_size_minus3
        r.read_ue()  # log2_diff_max_min_pcm_luma_coding_block_size
        r.skip_bits(1)  # pcm_loop_filter_disabled_flag
    num_sets = r.read_ue()
    if num_sets > _MAX_ST_REF_PIC_SETS:
        raise CodecParseError(f"HEVC SPS: num_short_term_ref_pic_sets={num_sets}, at most 64")
    sets: list[tuple[list[int], list[int]]] = []
    for idx in range(num_sets):
        sets.append(_read_st_ref_pic_set(r, idx, sets))
    if r.read_flag():  # long_term_ref_pics_present_flag
        count = r.read_ue()
        if count > _MAX_LT_REF_PICS:
            raise CodecParseError(f"HEVC SPS: num_long_term_ref_pics_sps={count}, at most 32")
        r.skip_bits(count * (log2_max_poc_lsb + 1))  # lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt_sps_flag
    r.skip_bits(2)  # sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if r.read_flag():  # vui_parameters_present_flag
        _parse_vui(r, tail)


def _skip_scaling_list_data(r: BitReader) -> None:
    # H.265 7.3.4.
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.read_flag():  # scaling_list_pred_mode_flag
                r.read_ue()  # scaling_list_pred_matrix_id_delta
                continue
            if size_id > 1:
                r.read_se()  # scaling_list_dc_coef_minus8
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                r.read_se()  # scaling_list_delta_coef


def _read_st_ref_pic_set(
    r: BitReader, idx: int, sets: list[tuple[list[int], list[int]]]
) -> tuple[list[int], list[int]]:
    """Read st_ref_pic_set(idx) (H.265 7.3.7) and return its (negative, positive) delta POCs."""
    if idx > 0 and r.read_flag():  # inter_ref_pic_set_prediction_flag
        # In the SPS the reference set is always the previous one (delta_idx_minus1 is slice-only).
        ref_s0, ref_s1 = sets[idx - 1]
        sign = r.read_bit()
        abs_delta = r.read_ue() + 1
        if abs_delta > 1 << 15:
            raise CodecParseError(f"HEVC SPS: abs_delta_rps_minus1={abs_delta - 1}, at most 2**15 - 1")
        delta_rps = -abs_delta if sign else abs_delta
        # One (used_by_curr_pic_flag, use_delta_flag) pair per reference delta plus one for the
        # reference picture itself; use_delta_flag is 1 when absent.
        use = []
        for _ in range(len(ref_s0) + len(ref_s1) + 1):
            used_by_curr = r.read_flag()
            use.append(used_by_curr or r.read_flag())
        # (7-61) and (7-62): each reference entry's delta shifted by delta_rps, and delta_rps itself for
        # the reference picture, is kept if its use_delta_flag is set and it is not 0; negative ones go to
        # S0 nearest first, positive ones to S1. Sorting yields the spec's order, as the reference lists
        # are sorted. use[] is indexed S0 first, then S1, then the reference picture.
        candidates = [(d + delta_rps, use[i]) for i, d in enumerate(ref_s0)]
        candidates += [(d + delta_rps, use[len(ref_s0) + i]) for i, d in enumerate(ref_s1)]
        candidates.append((delta_rps, use[-1]))
        s0 = sorted((d for d, keep in candidates if keep and d < 0), reverse=True)
        s1 = sorted(d for d, keep in candidates if keep and d > 0)
    else:
        num_negative = r.read_ue()
        num_positive = r.read_ue()
        if num_negative + num_positive > _MAX_DELTA_POCS:
            raise CodecParseError(
                f"HEVC SPS: st_ref_pic_set {idx} has {num_negative}+{num_positive} pictures, at most 16"
            )
        s0, s1 = [], []
        poc = 0
        for _ in range(num_negative):
            poc -= r.read_ue() + 1  # delta_poc_s0_minus1
            r.skip_bits(1)  # used_by_curr_pic_s0_flag
            s0.append(poc)
        poc = 0
        for _ in range(num_positive):
            poc += r.read_ue() + 1  # delta_poc_s1_minus1
            r.skip_bits(1)  # used_by_curr_pic_s1_flag
            s1.append(poc)
    if len(s0) + len(s1) > _MAX_DELTA_POCS:
        raise CodecParseError(f"HEVC SPS: st_ref_pic_set {idx} predicts {len(s0) + len(s1)} pictures")
    return s0, s1


def _parse_vui(r: BitReader, tail: _Tail) -> None:
    # H.265 E.2.1, up to the timing info.
    tail.sar = read_vui_head(r)
    r.skip_bits(1)  # neutral_chroma_indication_flag
    field_seq = r.read_flag()
    r.skip_bits(1)  # frame_field_info_present_flag
    if r.read_flag():  # default_display_window_flag
        for _ in range(4):
            r.read_ue()  # def_disp_win_left/right/top/bottom_offset
    if r.read_flag():  # vui_timing_info_present_flag
        num_units_in_tick = r.read_bits(32)
        time_scale = r.read_bits(32)
        # Unlike H.264, a tick is one picture (E.3.1); with field_seq_flag a picture is a field.
        if num_units_in_tick and time_scale:
            tail.fps = time_scale / num_units_in_tick / (2 if field_seq else 1)


def codec_config_from_hevc(record: bytes) -> CodecConfig:
    """Make the HEVC `CodecConfig` for an HEVCDecoderConfigurationRecord, with its facts filled in.

    Size, frame rate, profile and level come from the first SPS. If the record has no SPS or its SPS does
    not parse, the size and rate are None, and profile and level come from the record's general fields.

    Args:
        record: The record.

    Returns:
        A VIDEO/HEVC config whose `data` is `record`.

    Raises:
        CodecParseError: The record itself is malformed (see `parse_hevc_config`).
    """
    hvcc = parse_hevc_config(record)
    sps: HevcSps | None = None
    if hvcc.sps:
        try:
            sps = parse_hevc_sps(hvcc.sps[0])
        except CodecParseError:
            sps = None
    if sps is None:
        return CodecConfig(
            kind=Kind.VIDEO,
            codec=Codec.HEVC,
            data=bytes(record),
            profile=hvcc.profile_name,
            level=hvcc.level_name,
        )
    return CodecConfig(
        kind=Kind.VIDEO,
        codec=Codec.HEVC,
        data=bytes(record),
        width=sps.width,
        height=sps.height,
        fps=sps.fps,
        profile=sps.profile_name,
        level=sps.level_name,
    )
