"""The start of the video usability information H.264 (E.1.1) and H.265 (E.2.1) share.

Both VUIs open with the same four optional groups (aspect ratio, overscan, video signal type, chroma
sample location) before they diverge; `read_vui_head` reads them for `appliance.media.h264` and
`appliance.media.hevc`. Pure: no I/O.
"""

from __future__ import annotations

from appliance.media.bitreader import BitReader

_EXTENDED_SAR = 255

# H.264 Table E-1 and H.265 Table E.1: the sample aspect ratio for aspect_ratio_idc 1 to 16.
_SAR_TABLE: dict[int, tuple[int, int]] = {
    1: (1, 1),
    2: (12, 11),
    3: (10, 11),
    4: (16, 11),
    5: (40, 33),
    6: (24, 11),
    7: (20, 11),
    8: (32, 11),
    9: (80, 33),
    10: (18, 11),
    11: (15, 11),
    12: (64, 33),
    13: (160, 99),
    14: (4, 3),
    15: (3, 2),
    16: (2, 1),
}


def read_vui_head(r: BitReader) -> tuple[int, int] | None:
    """Read the VUI from aspect_ratio_info_present_flag through the chroma sample location.

    Returns:
        The sample aspect ratio (width, height), or None when absent, reserved or with a zero term.

    Raises:
        BitstreamError: The data ends inside these fields.
    """
    sar: tuple[int, int] | None = None
    if r.read_flag():  # aspect_ratio_info_present_flag
        idc = r.read_bits(8)
        if idc == _EXTENDED_SAR:
            sar_w, sar_h = r.read_bits(16), r.read_bits(16)
            if sar_w and sar_h:
                sar = (sar_w, sar_h)
        else:
            sar = _SAR_TABLE.get(idc)
    if r.read_flag():  # overscan_info_present_flag
        r.skip_bits(1)  # overscan_appropriate_flag
    if r.read_flag():  # video_signal_type_present_flag
        r.skip_bits(4)  # video_format, video_full_range_flag
        if r.read_flag():  # colour_description_present_flag
            r.skip_bits(24)  # colour_primaries, transfer_characteristics, matrix_coefficients
    if r.read_flag():  # chroma_loc_info_present_flag
        r.read_ue()  # chroma_sample_loc_type_top_field
        r.read_ue()  # chroma_sample_loc_type_bottom_field
    return sar
