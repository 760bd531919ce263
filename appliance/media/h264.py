"""H.264 decoder configuration records and sequence parameter sets: the facts a stream announces.

Theory of operation
-------------------
An RTMP or MP4 H.264 stream announces itself with an AVCDecoderConfigurationRecord (ISO/IEC 14496-15
5.3.3.1, "avcC"): a few header bytes and the SPS and PPS NAL units. The SPS (ITU-T H.264 7.3.2.1.1) holds
what operators want to see: profile, level, coded size, cropping, and, in its optional VUI (Annex E), the
frame rate and whether pictures are reordered (B-frames).

Parsing is strict where the answer would otherwise be wrong and lenient where it only costs a fact:

- A malformed record raises `CodecParseError`: without it nothing downstream can decode the stream.
- A malformed SPS up to the frame size raises `CodecParseError`.
- The VUI is best-effort: if it is truncated or odd, `fps` and the reordering facts are None rather than
  the whole SPS being rejected, since many encoders write sloppy VUIs and decoders ignore them.
- `codec_config_from_avc` never raises for a well-formed record, whatever its SPS holds.

The module is pure: no I/O, no trio.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from appliance.media._vui import read_vui_head
from appliance.media.bitreader import BitReader, CodecParseError, unescape_rbsp
from appliance.media.packets import Codec, CodecConfig, Kind

__all__ = [
    "AvcConfig",
    "CodecParseError",
    "H264Sps",
    "build_avc_config",
    "codec_config_from_avc",
    "h264_level_name",
    "h264_profile_name",
    "parse_avc_config",
    "parse_h264_sps",
]

_NAL_SPS = 7
_NAL_PPS = 8

# Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (H.264 7.3.2.1.1).
_HIGH_SPS_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# Profiles whose avcC carries the chroma/bit depth trailer. ISO/IEC 14496-15 5.3.3.1.1 names 100, 110, 122
# and 144 (the withdrawn High 4:4:4); muxers such as FFmpeg's also write it for the later high profiles
# (244 High 4:4:4 Predictive and the rest), so it is read and written for all of them.
_HIGH_RECORD_PROFILES = _HIGH_SPS_PROFILES | {144}
# Profiles where constraint_set3_flag means "intra only" (H.264 A.2.8 to A.2.11, G.10.1.2.1).
_INTRA_CAPABLE_PROFILES = frozenset({44, 86, 100, 110, 122, 244})

_PROFILE_NAMES = {
    66: "Baseline",
    77: "Main",
    88: "Extended",
    100: "High",
    110: "High 10",
    122: "High 4:2:2",
    244: "High 4:4:4 Predictive",
    44: "CAVLC 4:4:4 Intra",
    83: "Scalable Baseline",
    86: "Scalable High",
    118: "Multiview High",
    128: "Stereo High",
    134: "MFC High",
    135: "MFC Depth High",
    138: "Multiview Depth High",
    139: "Enhanced Multiview Depth High",
}

# (SubWidthC, SubHeightC) by chroma_format_idc (H.264 Table 6-1).
_CHROMA_SUBSAMPLING = {1: (2, 2), 2: (2, 1), 3: (1, 1)}

# Bounds from H.264 7.4.2.1.1 and E.2.2; larger values only come from corrupt data and would make the
# parser loop needlessly.
_MAX_REF_FRAMES_IN_POC_CYCLE = 255
_MAX_CPB_COUNT = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).

    Attributes:
        version: configurationVersion, always 1.
        profile_idc: AVCProfileIndication (a copy of the SPS's profile_idc).
        compat: profile_compatibility (the SPS's constraint_set flags byte).
        level_idc: AVCLevelIndication.
        length_size: Bytes per NAL unit length prefix in the stream's samples: 1, 2 or 4.
        sps: The sequence parameter set NAL units, headers included.
        pps: The picture parameter set NAL units.
        chroma_format_idc, bit_depth_luma, bit_depth_chroma: From the high-profile trailer; None when the
            record has none (older muxers omit it).
        sps_ext: SPS extension NAL units from the trailer.
    """

    version: int
    profile_idc: int
    compat: int
    level_idc: int
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    chroma_format_idc: int | None = None
    bit_depth_luma: int | None = None
    bit_depth_chroma: int | None = None
    sps_ext: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class H264Sps:
    """The facts of an H.264 sequence parameter set (ITU-T H.264 7.3.2.1.1 and Annex E).

    Attributes:
        profile_idc: profile_idc.
        constraint_flags: The byte of constraint_set0_flag (bit 7) to constraint_set5_flag (bit 2).
        level_idc: level_idc.
        sps_id: seq_parameter_set_id.
        chroma_format_idc: 0 (monochrome), 1 (4:2:0), 2 (4:2:2) or 3 (4:4:4).
        bit_depth_luma, bit_depth_chroma: Bits per sample.
        width, height: The displayed size in luma samples, after frame cropping.
        frame_mbs_only: False for interlaced (field or MBAFF) coding.
        sar: The sample aspect ratio (width, height) from the VUI, or None.
        fps: Frames per second, time_scale / (2 * num_units_in_tick) (H.264 E.2.1), or None without VUI
            timing information.
        max_num_reorder_frames: How many frames may precede another in decoding order and follow it in
            output order: from the VUI's bitstream restriction, else inferred (0 for intra-only
            profiles), else None.
    """

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    frame_mbs_only: bool
    sar: tuple[int, int] | None = None
    fps: float | None = None
    max_num_reorder_frames: int | None = None

    @property
    def profile_name(self) -> str:
        """The profile's name as H.264 Annex A spells it, e.g. "Constrained Baseline", "High 10"."""
        return h264_profile_name(self.profile_idc, self.constraint_flags)

    @property
    def level_name(self) -> str:
        """The level's name as H.264 Table A-1 spells it, e.g. "3.1", "1b", "4"."""
        return h264_level_name(self.profile_idc, self.constraint_flags, self.level_idc)

    @property
    def has_b_frames(self) -> bool | None:
        """Whether output order can differ from decoding order (B-frames); None when unknown.

        Baseline streams never have B slices, so they are False even without a bitstream restriction.
        """
        if self.max_num_reorder_frames is not None:
            return self.max_num_reorder_frames > 0
        if self.profile_idc == 66:
            return False
        return None


def _constraint(flags: int, n: int) -> bool:
    # constraint_set0_flag is the most significant bit of the byte.
    return bool(flags & (0x80 >> n))


def h264_profile_name(profile_idc: int, constraint_flags: int) -> str:
    """Name an H.264 profile (ITU-T H.264 A.2, G.10.1, H.10.1).

    Args:
        profile_idc: profile_idc.
        constraint_flags: The constraint_set flags byte.

    Returns:
        The name, e.g. "Constrained Baseline", "High 4:2:2 Intra"; "profile N" for unknown values.
    """
    base = _PROFILE_NAMES.get(profile_idc)
    if base is None:
        return f"profile {profile_idc}"
    if profile_idc == 66 and _constraint(constraint_flags, 1):
        return "Constrained Baseline"
    if profile_idc == 100 and _constraint(constraint_flags, 4):
        return "Constrained High" if _constraint(constraint_flags, 5) else "Progressive High"
    if profile_idc in (110, 122, 244, 86) and _constraint(constraint_flags, 3):
        return "High 4:4:4 Intra" if profile_idc == 244 else f"{base} Intra"
    if profile_idc == 110 and _constraint(constraint_flags, 4):
        return "Progressive High 10"
    return base


def h264_level_name(profile_idc: int, constraint_flags: int, level_idc: int) -> str:
    """Name an H.264 level (ITU-T H.264 Table A-1).

    Level 1b is level_idc 11 with constraint_set3_flag in Baseline, Main and Extended, and level_idc 9
    elsewhere (A.3.1, A.3.3).

    Returns:
        E.g. "3.1", "4", "1b".
    """
    baseline_or_main = profile_idc in (66, 77, 88)
    if level_idc == 9 or (level_idc == 11 and baseline_or_main and _constraint(constraint_flags, 3)):
        return "1b"
    major, minor = divmod(level_idc, 10)
    return f"{major}.{minor}" if minor else str(major)


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1).

    The high-profile trailer (chroma format, bit depths, SPS extensions) is read when present for the
    profiles whose SPS carries a chroma format (100, 110, 122, 244, ...); a missing or malformed trailer
    is ignored, as decoders do.

    Args:
        record: The record, as an FLV AVC sequence header or an MP4 avcC box carries it.

    Returns:
        The parsed record.

    Raises:
        CodecParseError: The record is truncated, has a version other than 1, a length size of 3, or an
            empty parameter set.
    """
    if len(record) < 7:
        raise CodecParseError(f"AVC config: {len(record)} bytes, need at least 7")
    version, profile_idc, compat, level_idc = record[0], record[1], record[2], record[3]
    if version != 1:
        raise CodecParseError(f"AVC config: configurationVersion={version}, want 1")
    length_size = (record[4] & 0x03) + 1
    if length_size == 3:
        raise CodecParseError("AVC config: lengthSizeMinusOne=2, want 0, 1 or 3")
    sps, pos = _read_nal_list(record, 6, record[5] & 0x1F, "SPS")
    if pos >= len(record):
        raise CodecParseError(f"AVC config: truncated before numOfPictureParameterSets at offset {pos}")
    pps, pos = _read_nal_list(record, pos + 1, record[pos], "PPS")
    config = AvcConfig(
        version=version,
        profile_idc=profile_idc,
        compat=compat,
        level_idc=level_idc,
        length_size=length_size,
        sps=sps,
        pps=pps,
    )
    if profile_idc in _HIGH_RECORD_PROFILES and len(record) - pos >= 4:
        try:
            ext, _ = _read_nal_list(record, pos + 4, record[pos + 3], "SPS extension")
        except CodecParseError:
            return config
        return AvcConfig(
            version=version,
            profile_idc=profile_idc,
            compat=compat,
            level_idc=level_idc,
            length_size=length_size,
            sps=sps,
            pps=pps,
            chroma_format_idc=record[pos] & 0x03,
            bit_depth_luma=(record[pos + 1] & 0x07) + 8,
            bit_depth_chroma=(record[pos + 2] & 0x07) + 8,
            sps_ext=ext,
        )
    return config


def _read_nal_list(record: bytes, pos: int, count: int, what: str) -> tuple[tuple[bytes, ...], int]:
    nals: list[bytes] = []
    for i in range(count):
        if len(record) - pos < 2:
            raise CodecParseError(f"AVC config: truncated length of {what} {i} at offset {pos}")
        size = int.from_bytes(record[pos : pos + 2], "big")
        pos += 2
        if size == 0:
            raise CodecParseError(f"AVC config: {what} {i} at offset {pos - 2} is empty")
        if size > len(record) - pos:
            raise CodecParseError(
                f"AVC config: {what} {i} of {size} bytes at offset {pos} overruns the record "
                f"({len(record) - pos} bytes left)"
            )
        nals.append(record[pos : pos + size])
        pos += size
    return tuple(nals), pos


def build_avc_config(sps: list[bytes], pps: list[bytes]) -> bytes:
    """Build an AVCDecoderConfigurationRecord with 4-byte NAL lengths from parameter sets.

    Profile, compatibility and level are copied from the first SPS. For high profiles (100, 110, 122, 244,
    ...) the chroma/bit depth trailer of ISO/IEC 14496-15 5.3.3.1.1 is filled from the first SPS, or left
    out if that SPS does not parse.

    Args:
        sps: SPS NAL units (nal_unit_type 7), headers included, without start codes or length prefixes.
        pps: PPS NAL units (nal_unit_type 8).

    Returns:
        The record.

    Raises:
        ValueError: No SPS, a first SPS under 4 bytes, too many parameter sets (31 SPS, 255 PPS), or a
            unit of the wrong type or over 65535 bytes.
    """
    if not sps:
        raise ValueError("build_avc_config: need at least one SPS")
    if len(sps) > 31 or len(pps) > 255:
        raise ValueError(f"build_avc_config: {len(sps)} SPS, {len(pps)} PPS; at most 31 and 255 fit")
    for what, nals, nal_type in (("SPS", sps, _NAL_SPS), ("PPS", pps, _NAL_PPS)):
        for i, nal in enumerate(nals):
            if not nal or nal[0] & 0x1F != nal_type:
                raise ValueError(f"build_avc_config: {what} {i} is not a NAL unit of type {nal_type}")
            if len(nal) > 0xFFFF:
                raise ValueError(f"build_avc_config: {what} {i} is {len(nal)} bytes, at most 65535 fit")
    first = sps[0]
    if len(first) < 4:
        raise ValueError(f"build_avc_config: SPS 0 is {len(first)} bytes, need at least 4")
    # 0xFF: six reserved bits, lengthSizeMinusOne 3. 0xE0: three reserved bits above the SPS count.
    parts = [bytes([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])]
    parts.extend(len(nal).to_bytes(2, "big") + nal for nal in sps)
    parts.append(bytes([len(pps)]))
    parts.extend(len(nal).to_bytes(2, "big") + nal for nal in pps)
    if first[1] in _HIGH_RECORD_PROFILES:
        try:
            parsed: H264Sps | None = parse_h264_sps(first)
        except CodecParseError:
            # Without a readable SPS the trailer is left out, as older muxers do; decoders read the
            # chroma format and bit depth from the SPS itself.
            parsed = None
        if parsed is not None:
            parts.append(
                bytes(
                    [
                        0xFC | parsed.chroma_format_idc,
                        0xF8 | (parsed.bit_depth_luma - 8),
                        0xF8 | (parsed.bit_depth_chroma - 8),
                        0,  # numOfSequenceParameterSetExt
                    ]
                )
            )
    return b"".join(parts)


def parse_h264_sps(nal: bytes) -> H264Sps:
    """Parse an H.264 sequence parameter set NAL unit (ITU-T H.264 7.3.2.1.1, E.1.1).

    Args:
        nal: The NAL unit, header byte included, emulation prevention bytes still in place.

    Returns:
        The SPS's facts. The VUI is best-effort: when it cannot be read, `fps`, `sar` and the reordering
        facts are None (or inferred) rather than raising.

    Raises:
        CodecParseError: Not an SPS, truncated before the end of the frame size and cropping, or holding
            values out of the ranges H.264 7.4.2.1.1 allows.
    """
    if not nal:
        raise CodecParseError("H.264 SPS: empty NAL unit")
    if nal[0] & 0x1F != _NAL_SPS:
        raise CodecParseError(f"H.264 SPS: nal_unit_type={nal[0] & 0x1F}, want {_NAL_SPS}")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.read_bits(8)
    constraint_flags = r.read_bits(8)
    level_idc = r.read_bits(8)
    sps_id = _ue_at_most(r, 31, "seq_parameter_set_id")
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _HIGH_SPS_PROFILES:
        chroma_format_idc = _ue_at_most(r, 3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = r.read_flag()
        bit_depth_luma = 8 + _ue_at_most(r, 6, "bit_depth_luma_minus8")
        bit_depth_chroma = 8 + _ue_at_most(r, 6, "bit_depth_chroma_minus8")
        r.skip_bits(1)  # qpprime_y_zero_transform_bypass_flag
        if r.read_flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.read_flag():  # seq_scaling_list_present_flag[i]
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    _ue_at_most(r, 12, "log2_max_frame_num_minus4")
    poc_type = _ue_at_most(r, 2, "pic_order_cnt_type")
    if poc_type == 0:
        _ue_at_most(r, 12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.skip_bits(1)  # delta_pic_order_always_zero_flag
        r.read_se()  # offset_for_non_ref_pic
        r.read_se()  # offset_for_top_to_bottom_field
        cycle = _ue_at_most(r, _MAX_REF_FRAMES_IN_POC_CYCLE, "num_ref_frames_in_pic_order_cnt_cycle")
        for _ in range(cycle):
            r.read_se()  # offset_for_ref_frame[i]
    r.read_ue()  # max_num_ref_frames
    r.skip_bits(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.read_ue() + 1
    height_map_units = r.read_ue() + 1
    frame_mbs_only = r.read_flag()
    if not frame_mbs_only:
        r.skip_bits(1)  # mb_adaptive_frame_field_flag
    r.skip_bits(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    # A map unit is a macroblock pair when fields may be coded (7-18).
    height = height_map_units * 16 * (2 - frame_mbs_only)
    if r.read_flag():  # frame_cropping_flag
        # Crop offsets count chroma samples (luma for 4:4:4 and monochrome), doubled vertically for
        # field coding (7-19 to 7-22).
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        unit_x, unit_y = _CHROMA_SUBSAMPLING.get(chroma_array_type, (1, 1))
        unit_y *= 2 - frame_mbs_only
        left, right, top, bottom = (r.read_ue() for _ in range(4))
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise CodecParseError(
                f"H.264 SPS: frame cropping ({left}, {right}, {top}, {bottom}) leaves {width}x{height}"
            )
    vui = _Vui()
    if r.read_flag():  # vui_parameters_present_flag
        # Keep what the VUI gave before it went wrong.
        with contextlib.suppress(CodecParseError):
            _parse_vui(r, vui)
    reorder = vui.max_num_reorder_frames
    if reorder is None and profile_idc in _INTRA_CAPABLE_PROFILES and _constraint(constraint_flags, 3):
        reorder = 0  # Intra-only profiles: every picture is output as soon as it is decoded (E.2.1).
    return H264Sps(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        sps_id=sps_id,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
        frame_mbs_only=frame_mbs_only,
        sar=vui.sar,
        fps=vui.fps,
        max_num_reorder_frames=reorder,
    )


def _ue_at_most(r: BitReader, limit: int, name: str) -> int:
    value = r.read_ue()
    if value > limit:
        raise CodecParseError(f"H.264 SPS: {name}={value}, at most {limit} allowed")
    return value


def _skip_scaling_list(r: BitReader, size: int) -> None:
    # H.264 7.3.2.1.1.1: delta-coded until a delta makes the next scale 0, which repeats the last one.
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = r.read_se()
            if not -128 <= delta <= 127:
                raise CodecParseError(f"H.264 SPS: delta_scale={delta}, want -128..127")
            next_scale = (last_scale + delta + 256) % 256
        last_scale = last_scale if next_scale == 0 else next_scale


@dataclass(slots=True)
class _Vui:
    sar: tuple[int, int] | None = None
    fps: float | None = None
    max_num_reorder_frames: int | None = None


def _parse_vui(r: BitReader, vui: _Vui) -> None:
    # H.264 E.1.1. Fields are filled in as they are read, so a truncated tail keeps what came before.
    vui.sar = read_vui_head(r)
    if r.read_flag():  # timing_info_present_flag
        num_units_in_tick = r.read_bits(32)
        time_scale = r.read_bits(32)
        r.skip_bits(1)  # fixed_frame_rate_flag
        # A frame is two field ticks (E.2.1); zero values are forbidden and carry no rate.
        if num_units_in_tick and time_scale:
            vui.fps = time_scale / (2 * num_units_in_tick)
    nal_hrd = r.read_flag()
    if nal_hrd:
        _skip_hrd(r)
    vcl_hrd = r.read_flag()
    if vcl_hrd:
        _skip_hrd(r)
    if nal_hrd or vcl_hrd:
        r.skip_bits(1)  # low_delay_hrd_flag
    r.skip_bits(1)  # pic_struct_present_flag
    if r.read_flag():  # bitstream_restriction_flag
        r.skip_bits(1)  # motion_vectors_over_pic_boundaries_flag
        for _ in range(4):
            # max_bytes_per_pic_denom, max_bits_per_mb_denom, log2_max_mv_length_horizontal/vertical
            r.read_ue()
        reorder = r.read_ue()
        max_dec_frame_buffering = r.read_ue()
        if reorder <= max_dec_frame_buffering <= 16:
            vui.max_num_reorder_frames = reorder


def _skip_hrd(r: BitReader) -> None:
    # H.264 E.1.2.
    cpb_count = r.read_ue() + 1
    if cpb_count > _MAX_CPB_COUNT:
        raise CodecParseError(f"H.264 SPS: cpb_cnt_minus1={cpb_count - 1}, at most 31 allowed")
    r.skip_bits(8)  # bit_rate_scale, cpb_size_scale
    for _ in range(cpb_count):
        r.read_ue()  # bit_rate_value_minus1
        r.read_ue()  # cpb_size_value_minus1
        r.skip_bits(1)  # cbr_flag
    r.skip_bits(20)  # four 5-bit delay and offset lengths


def codec_config_from_avc(record: bytes) -> CodecConfig:
    """Make the H.264 `CodecConfig` for an AVCDecoderConfigurationRecord, with its facts filled in.

    Size, frame rate, profile and level come from the first SPS. If the record has no SPS or its SPS does
    not parse, the size and rate are None, and profile and level come from the record's own header bytes.

    Args:
        record: The record.

    Returns:
        A VIDEO/H264 config whose `data` is `record`.

    Raises:
        CodecParseError: The record itself is malformed (see `parse_avc_config`).
    """
    avc = parse_avc_config(record)
    sps: H264Sps | None = None
    if avc.sps:
        try:
            sps = parse_h264_sps(avc.sps[0])
        except CodecParseError:
            sps = None
    if sps is None:
        return CodecConfig(
            kind=Kind.VIDEO,
            codec=Codec.H264,
            data=bytes(record),
            profile=h264_profile_name(avc.profile_idc, avc.compat),
            level=h264_level_name(avc.profile_idc, avc.compat, avc.level_idc),
        )
    return CodecConfig(
        kind=Kind.VIDEO,
        codec=Codec.H264,
        data=bytes(record),
        width=sps.width,
        height=sps.height,
        fps=sps.fps,
        profile=sps.profile_name,
        level=sps.level_name,
    )
