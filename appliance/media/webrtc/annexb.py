"""H.264 for RTP packetizers, pure: Bus payloads (4-byte length-prefixed NAL units) to Annex-B, once per
packet, with the parameter sets in front of each keyframe so a viewer can start at any keyframe."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["START", "avcc_to_annexb", "profile_level_id"]

START = b"\x00\x00\x00\x01"


def avcc_to_annexb(payload: bytes, parameter_sets: Sequence[bytes] = ()) -> bytes:
    """`payload`'s NAL units with start codes, after `parameter_sets` (SPS, PPS; give them for keyframes).

    Raises:
        ValueError: A length runs past the end of the payload.
    """
    out = bytearray()
    for nal in parameter_sets:
        out += START + nal
    pos, end = 0, len(payload)
    while pos < end:
        if pos + 4 > end:
            raise ValueError(f"truncated NAL length at byte {pos}")
        size = int.from_bytes(payload[pos : pos + 4], "big")
        pos += 4
        if size > end - pos:
            raise ValueError(f"NAL of {size} bytes at byte {pos} runs past the payload's {end} bytes")
        out += START + payload[pos : pos + size]
        pos += size
    return bytes(out)


def profile_level_id(sps: bytes) -> str:
    """The SDP ``profile-level-id`` (hex of profile_idc, constraint flags, level_idc) of an SPS NAL unit.

    Raises:
        ValueError: Too short to be an SPS.
    """
    if len(sps) < 4:
        raise ValueError(f"an SPS of {len(sps)} bytes: want at least 4")
    return sps[1:4].hex()
