"""The pure parts of WHEP: what a stream can offer a browser, trickle ICE fragments, session ETags.

No aiortc, trio or sockets here: `whep.py` drives aiortc with these answers.

- H.264 as it is on the Bus goes to browsers only without B-frames (WebRTC has no reordering: RTP
  timestamps are presentation times and browsers decode in arrival order). `has_b_frames` decides from the
  SPS when it says (baseline, or a VUI bitstream restriction), else from the packets seen (pts != dts).
- The SDP answer offers the stream's own profile only (`sdp_profile`), packetization-mode 1.
- Trickle ICE (RFC 8840, draft-ietf-wish-whep section 4.3): a PATCH body is an SDP fragment with the
  ufrag/pwd and ``a=candidate`` lines of one or more media sections (`parse_sdpfrag`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from appliance.media.h264 import H264Sps, h264_profile_name
from appliance.media.packets import Packet

__all__ = [
    "START",
    "SdpFragmentError",
    "TrickleCandidate",
    "TrickleFragment",
    "candidate_address",
    "etag",
    "has_b_frames",
    "keyframe_prefix",
    "parse_sdpfrag",
    "profile_level_id",
    "sdp_profile",
]

START = b"\x00\x00\x00\x01"
_MAX_FRAGMENT_LINES = 256


class SdpFragmentError(ValueError):
    """A PATCH body that is not a trickle-ice-sdpfrag this server understands."""


def profile_level_id(sps: bytes) -> str:
    """The SDP ``profile-level-id`` (hex of profile_idc, constraint flags, level_idc) of an SPS NAL unit.

    Raises:
        ValueError: Too short to be an SPS.
    """
    if len(sps) < 4:
        raise ValueError(f"an SPS of {len(sps)} bytes: want at least 4")
    return sps[1:4].hex()


def sdp_profile(plid: str) -> str:
    """The profile family a ``profile-level-id`` means in SDP negotiation (RFC 6184 8.1): offers and
    answers match on it, not on the level. E.g. "42e01f" -> "Constrained Baseline".

    Raises:
        ValueError: Not six hex digits.
    """
    if len(plid) != 6:
        raise ValueError(f"profile-level-id {plid!r}: want six hex digits")
    raw = bytes.fromhex(plid)
    return h264_profile_name(raw[0], raw[1])


def keyframe_prefix(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """The parameter sets in Annex-B form, to put in front of each keyframe so a viewer can start there."""
    return b"".join(START + nal for nal in (*sps, *pps))


def has_b_frames(sps: H264Sps | None, seen: Iterable[Packet]) -> bool:
    """Whether a stream reorders pictures: from the SPS when it says, else from packets seen so far.

    Args:
        sps: The stream's parsed SPS, or None when it did not parse.
        seen: Video packets (the GOP cache): any with pts != dts means reordering.
    """
    known = sps.has_b_frames if sps is not None else None
    if known is not None:
        return known
    return any(p.pts_ms != p.dts_ms for p in seen)


@dataclass(frozen=True, slots=True)
class TrickleCandidate:
    """One ``a=candidate`` line of a fragment and the media section it belongs to."""

    mid: str | None
    mline_index: int
    candidate: str  # the attribute value, after "candidate:"


@dataclass(frozen=True, slots=True)
class TrickleFragment:
    """A parsed trickle-ice-sdpfrag: credentials, candidates, and whether gathering ended."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: tuple[TrickleCandidate, ...] = field(default=())
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> TrickleFragment:
    """Parse a PATCH body (RFC 8840 section 9).

    Raises:
        SdpFragmentError: A line that is not SDP, too many lines, or a candidate without a media section.
    """
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if len(lines) > _MAX_FRAGMENT_LINES:
        raise SdpFragmentError(f"{len(lines)} lines: at most {_MAX_FRAGMENT_LINES}")
    ufrag = pwd = None
    mid: str | None = None
    index = -1
    end = False
    out: list[TrickleCandidate] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpFragmentError(f"{line[:40]!r} is not an SDP line")
        kind, value = line[0], line[2:]
        if kind == "m":
            index += 1
            mid = None
        elif kind != "a":
            continue
        elif value.startswith("mid:"):
            mid = value[4:]
        elif value.startswith("ice-ufrag:"):
            ufrag = value[10:]
        elif value.startswith("ice-pwd:"):
            pwd = value[8:]
        elif value == "end-of-candidates":
            end = True
        elif value.startswith("candidate:"):
            if index < 0 and mid is None:
                raise SdpFragmentError("a candidate before any m= line or a=mid")
            out.append(TrickleCandidate(mid=mid, mline_index=max(index, 0), candidate=value[10:]))
    return TrickleFragment(ufrag=ufrag, pwd=pwd, candidates=tuple(out), end_of_candidates=end)


def candidate_address(candidate: str) -> str | None:
    """The connection address of a candidate attribute value (RFC 8839 5.1), or None if it has none."""
    parts = candidate.split()
    if len(parts) < 5:
        return None
    try:
        return str(ipaddress.ip_address(parts[4]))
    except ValueError:
        return parts[4]  # an mDNS name (xxx.local)


def etag(session_id: str, ufrag: str) -> str:
    """The session's entity tag: it changes when an ICE restart changes the local credentials."""
    return '"' + hashlib.sha256(f"{session_id}:{ufrag}".encode()).hexdigest()[:16] + '"'
