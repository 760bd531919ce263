"""FLV tag bodies <-> the appliance's media types (Adobe FLV spec v10.1 Annex E, Enhanced RTMP v1 and v2).

Theory of operation
-------------------
RTMP audio (type 8) and video (type 9) message payloads are FLV AUDIODATA and VIDEODATA tag bodies, and
data messages (type 18) are SCRIPTDATA (AMF0), so this one module maps both RTMP messages and FLV file tags
to and from `Packet`, `CodecConfig` and onMetaData. The file layer (tag headers, the reader, onMetaData
patching) lives in `appliance.media.flv_file`.

Reading. `parse_video` and `parse_audio` turn one body into one of four results:

- `MediaConfig`: a sequence header (AVC/HEVC/AV1/VP configuration record, AudioSpecificConfig, OpusHead);
- `MediaPacket`: one coded frame or access unit;
- `EndOfSequence`: the publisher ended the codec sequence;
- `Skipped`: a well-formed body the appliance does not carry (command frames, HDR colorInfo metadata,
  multitrack messages beyond the default track, codecs we do not relay), with a reason for the log.

A malformed body (truncated, reserved values, unknown FourCC) raises `FlvError`, never `IndexError`.
The message (or tag) timestamp is the decode time; the signed 24-bit composition offset gives
pts = dts + offset. MP3 has no sequence header, so `parse_audio` returns only packets for it: the ingress
edge creates the MP3 `CodecConfig` (with empty data) itself before the first packet.

Writing. `video_body`, `audio_body` and the `*_config_body` functions build bodies; the caller sends them
with the packet's `dts_ms` as the message or tag timestamp. H.264, AAC and MP3 use the legacy headers every
player reads; HEVC, AV1, VP9 and Opus exist in FLV only as Enhanced RTMP FourCC bodies (`needs_enhanced`),
which a push edge may send only to peers that announced the FourCC in their connect command.

Cost. The relay and the recorder call the packet paths on every frame, so those do a few index reads, one
slice (parse) or one concatenation with a prebuilt header (write), and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.media.rtmp import amf0

__all__ = [
    "EndOfSequence",
    "FlvError",
    "MediaConfig",
    "MediaPacket",
    "Skipped",
    "audio_body",
    "audio_config_body",
    "fourcc",
    "metadata_body",
    "needs_enhanced",
    "parse_audio",
    "parse_script",
    "parse_video",
    "video_body",
    "video_config_body",
]


class FlvError(ValueError):
    """A tag body (or FLV stream) is malformed, or a packet cannot be expressed in FLV."""


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """A body that was a sequence header."""

    config: CodecConfig


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """A body that was a coded frame or access unit."""

    packet: Packet


@dataclass(frozen=True, slots=True)
class EndOfSequence:
    """A body that ended a codec sequence (AVC end of sequence, E-RTMP SequenceEnd)."""

    kind: Kind
    codec: Codec


@dataclass(frozen=True, slots=True)
class Skipped:
    """A well-formed body the appliance does not carry; `reason` says why, for the log."""

    reason: str


_Parsed = MediaConfig | MediaPacket | EndOfSequence | Skipped

# FLV spec E.4.3.1 VideoTagHeader: FrameType (and the E-RTMP IsExVideoHeader bit above it).
_EX_HEADER = 0x80
_KEY_FRAME = 1
_GENERATED_KEY_FRAME = 4
_COMMAND_FRAME = 5
_VALID_FRAME_TYPES = frozenset({1, 2, 3, 4, 5})  # 0, 6 and 7 are reserved
_CODEC_ID_AVC = 7
_CODEC_ID_HEVC = 12  # not in Adobe's spec: the Chinese "flv_hevc" extension; same layout as AVC
_LEGACY_VIDEO_CODECS = frozenset({2, 3, 4, 5, 6})  # H.263, Screen video, VP6, VP6 alpha, Screen video 2

# E-RTMP v2 VideoPacketType / AudioPacketType. The shared low values mean the same for both.
_SEQUENCE_START = 0
_CODED_FRAMES = 1
_SEQUENCE_END = 2
_CODED_FRAMES_X = 3  # video only: CodedFrames with an implied composition offset of 0
_VIDEO_METADATA = 4
_MPEG2TS_SEQUENCE_START = 5
_VIDEO_MULTITRACK = 6
_AUDIO_MULTICHANNEL_CONFIG = 4
_AUDIO_MULTITRACK = 5
_MOD_EX = 7
_TIMESTAMP_OFFSET_NANO = 0  # the only VideoPacketModExType/AudioPacketModExType defined so far
# AvMultitrackType
_ONE_TRACK = 0
_MANY_TRACKS_MANY_CODECS = 2

# FLV spec E.4.2.1 AudioTagHeader SoundFormat, and E-RTMP v2's ExHeader value.
_SOUND_MP3 = 2
_SOUND_EX_HEADER = 9  # E-RTMP v2 SoundFormat.ExHeader; 12 and 13 stay reserved
_SOUND_AAC = 10
_SOUND_MP3_8K = 14
_RESERVED_SOUND_FORMATS = frozenset({12, 13})  # the others are PCM, ADPCM, Nellymoser, G.711, Speex, device
_AAC_SEQUENCE_HEADER = 0
_AAC_RAW = 1

_FOURCCS: dict[Codec, bytes] = {
    Codec.H264: b"avc1",
    Codec.HEVC: b"hvc1",
    Codec.AV1: b"av01",
    Codec.VP9: b"vp09",
    Codec.AAC: b"mp4a",
    Codec.OPUS: b"Opus",
    Codec.MP3: b".mp3",
}
_VIDEO_FOURCCS = {_FOURCCS[c]: c for c in (Codec.H264, Codec.HEVC, Codec.AV1, Codec.VP9)}
_AUDIO_FOURCCS = {_FOURCCS[c]: c for c in (Codec.AAC, Codec.OPUS, Codec.MP3)}
# Defined by E-RTMP v2 but not relayed: well-formed, so Skipped rather than FlvError.
_OTHER_VIDEO_FOURCCS = {b"vp08": "VP8", b"vvc1": "VVC"}
_OTHER_AUDIO_FOURCCS = {b"ac-3": "AC-3", b"ec-3": "E-AC-3", b"fLaC": "FLAC"}
_ENHANCED = frozenset({Codec.HEVC, Codec.AV1, Codec.VP9, Codec.OPUS})

_SI24_MIN = -0x800000
_SI24_MAX = 0x7FFFFF

# Prebuilt headers for the write paths, indexed by `keyframe` (False = 0, True = 1).
_CODED_HEADERS: dict[Codec, tuple[bytes, bytes]] = {
    # Legacy AVC NALU with a zero composition offset: 0x27/0x17, AVCPacketType 1, SI24 0.
    Codec.H264: (b"\x27\x01\x00\x00\x00", b"\x17\x01\x00\x00\x00"),
    # E-RTMP: HEVC CodedFramesX (offset implied 0); AV1 and VP9 CodedFrames (they carry no offset).
    Codec.HEVC: (b"\xa3hvc1", b"\x93hvc1"),
    Codec.AV1: (b"\xa1av01", b"\x91av01"),
    Codec.VP9: (b"\xa1vp09", b"\x91vp09"),
}
_AAC_RAW_HEADER = b"\xaf\x01"  # FLV spec E.4.2.1: AAC always signals 44 kHz, 16-bit, stereo (0xAF)
_AAC_CONFIG_HEADER = b"\xaf\x00"
_OPUS_CODED_HEADER = bytes((_SOUND_EX_HEADER << 4 | _CODED_FRAMES,)) + b"Opus"
_OPUS_CONFIG_HEADER = bytes((_SOUND_EX_HEADER << 4 | _SEQUENCE_START,)) + b"Opus"
_MP3_RATE_BITS = {5500: 0, 5512: 0, 11025: 1, 22050: 2, 44100: 3}


def needs_enhanced(codec: Codec) -> bool:
    """Tell whether FLV can carry `codec` only as an Enhanced RTMP FourCC body.

    Args:
        codec: Any codec.

    Returns:
        True for HEVC, AV1, VP9 (E-RTMP v1 video) and Opus (E-RTMP v2 audio); False for H.264, AAC, MP3 and
        AMF0, which the legacy FLV headers carry.
    """
    return codec in _ENHANCED


def fourcc(codec: Codec) -> bytes:
    """Return the E-RTMP FourCC of `codec` (b"avc1", b"hvc1", b"av01", b"vp09", b"mp4a", b"Opus", b".mp3").

    Raises:
        ValueError: `codec` has no FourCC (AMF0).
    """
    try:
        return _FOURCCS[codec]
    except KeyError:
        raise ValueError(f"{codec.name} has no E-RTMP FourCC") from None


# --- reading -------------------------------------------------------------------------------------------


def parse_video(body: bytes, ts_ms: int) -> MediaConfig | MediaPacket | EndOfSequence | Skipped:
    """Parse a VIDEODATA body (an RTMP type 9 payload or an FLV tag body).

    Args:
        body: The body, legacy (FLV spec E.4.3.1) or enhanced (E-RTMP v1/v2 ExVideoTagHeader).
        ts_ms: The message or tag timestamp (unwrapped), which is the decode time.

    Returns:
        The parsed result. Packet payloads are slices of `body`; a pts below 0 is clamped to 0.

    Raises:
        FlvError: The body is empty, truncated, or uses a reserved value or an unknown FourCC.
        ValueError, TypeError: `ts_ms` is negative or not an int (from `Packet`).
    """
    if not body:
        raise FlvError("empty video body")
    first = body[0]
    if first & _EX_HEADER:
        return _parse_ex_video(body, ts_ms)
    frame_type = first >> 4
    codec_id = first & 0x0F
    if codec_id == _CODEC_ID_AVC:
        codec = Codec.H264
    elif codec_id == _CODEC_ID_HEVC:
        codec = Codec.HEVC
    elif codec_id in _LEGACY_VIDEO_CODECS:
        return Skipped(f"legacy video codec id {codec_id} is not relayed")
    else:
        raise FlvError(f"reserved video codec id {codec_id}")
    if frame_type == _COMMAND_FRAME:
        return Skipped("video info/command frame")
    if frame_type not in _VALID_FRAME_TYPES:
        raise FlvError(f"reserved video frame type {frame_type}")
    if len(body) < 5:
        raise FlvError(f"{codec.name} video body of {len(body)} bytes is shorter than its 5-byte header")
    packet_type = body[1]
    if packet_type == 1:
        cto = body[2] << 16 | body[3] << 8 | body[4]
        if cto & 0x800000:
            cto -= 0x1000000
        return MediaPacket(_video_packet(codec, body[5:], ts_ms, cto, frame_type))
    if packet_type == 0:
        return MediaConfig(CodecConfig(kind=Kind.VIDEO, codec=codec, data=body[5:]))
    if packet_type == 2:
        return EndOfSequence(Kind.VIDEO, codec)
    raise FlvError(f"reserved AVCPacketType {packet_type}")


def _video_packet(codec: Codec, payload: bytes, dts: int, cto: int, frame_type: int) -> Packet:
    pts = dts + cto
    if pts < 0:
        # Muxers that shift B-frame streams so the first dts is 0 can leave the first frames with a negative
        # offset larger than their dts. Packet timestamps are non-negative, and the frame still decodes:
        # presenting it at 0 keeps the stream instead of failing it over a few ms at its very start.
        pts = 0
    keyframe = frame_type in (_KEY_FRAME, _GENERATED_KEY_FRAME)
    return Packet(kind=Kind.VIDEO, codec=codec, payload=payload, pts_ms=pts, dts_ms=dts, keyframe=keyframe)


def _parse_ex_video(body: bytes, ts_ms: int) -> _Parsed:
    # E-RTMP v2 "Enhanced Video": IsExVideoHeader UB[1], VideoFrameType UB[3], VideoPacketType UB[4].
    first = body[0]
    frame_type = (first >> 4) & 0x07
    packet_type = first & 0x0F
    pos = 1
    if packet_type == _MOD_EX:
        packet_type, pos, skip = _skip_mod_ex(body, pos, "video")
        if skip is not None:
            return skip
    if packet_type == _VIDEO_METADATA:
        # The frame type is ignored for Metadata (E-RTMP v2), and colorInfo is not something Packet carries.
        return Skipped("video metadata (colorInfo) is not relayed")
    if frame_type == _COMMAND_FRAME:
        return Skipped("video command frame")
    if frame_type not in _VALID_FRAME_TYPES:
        raise FlvError(f"reserved video frame type {frame_type}")
    end = len(body)
    if packet_type == _VIDEO_MULTITRACK:
        track = _single_track(body, pos, "video", _VIDEO_MULTITRACK)
        if isinstance(track, Skipped):
            return track
        packet_type, tag, pos, end = track
    else:
        tag = _read_fourcc(body, pos, "video")
        pos += 4
    codec = _VIDEO_FOURCCS.get(tag)
    if codec is None:
        if tag in _OTHER_VIDEO_FOURCCS:
            return Skipped(f"video codec {_OTHER_VIDEO_FOURCCS[tag]} ({tag.decode()}) is not relayed")
        raise FlvError(f"unknown video FourCC {tag!r}")
    if packet_type == _CODED_FRAMES_X or (packet_type == _CODED_FRAMES and not codec.nal_based):
        # AV1 and VP9 CodedFrames carry no composition offset (E-RTMP v2 ExVideoTagBody).
        return MediaPacket(_video_packet(codec, body[pos:end], ts_ms, 0, frame_type))
    if packet_type == _CODED_FRAMES:
        if end - pos < 3:
            raise FlvError(f"{codec.name} CodedFrames body is missing its 3-byte composition offset")
        cto = int.from_bytes(body[pos : pos + 3], "big", signed=True)
        return MediaPacket(_video_packet(codec, body[pos + 3 : end], ts_ms, cto, frame_type))
    if packet_type == _SEQUENCE_START:
        return MediaConfig(CodecConfig(kind=Kind.VIDEO, codec=codec, data=body[pos:end]))
    if packet_type == _SEQUENCE_END:
        return EndOfSequence(Kind.VIDEO, codec)
    if packet_type == _VIDEO_METADATA:
        return Skipped("video metadata (colorInfo) is not relayed")
    if packet_type == _MPEG2TS_SEQUENCE_START:
        return Skipped("MPEG2TSSequenceStart video descriptor is not relayed")
    raise FlvError(f"reserved VideoPacketType {packet_type}")


def parse_audio(body: bytes, ts_ms: int) -> MediaConfig | MediaPacket | EndOfSequence | Skipped:
    """Parse an AUDIODATA body (an RTMP type 8 payload or an FLV tag body).

    MP3 bodies always give packets (MP3 has no sequence header); the caller creates the MP3 `CodecConfig`
    with empty data before the first one. Audio packets have pts = dts = `ts_ms` and keyframe=True.

    Args:
        body: The body, legacy (FLV spec E.4.2.1) or enhanced (E-RTMP v2 ExAudioTagHeader).
        ts_ms: The message or tag timestamp (unwrapped).

    Returns:
        The parsed result; an empty body is E-RTMP's "audio silence" message, returned as `Skipped`.

    Raises:
        FlvError: The body is truncated, or uses a reserved value or an unknown FourCC.
        ValueError, TypeError: `ts_ms` is negative or not an int (from `Packet`).
    """
    if not body:
        return Skipped("empty audio message (silence)")
    sound_format = body[0] >> 4
    if sound_format == _SOUND_AAC:
        if len(body) < 2:
            raise FlvError("AAC audio body is missing its AACPacketType")
        packet_type = body[1]
        if packet_type == _AAC_RAW:
            return MediaPacket(_audio_packet(Codec.AAC, body[2:], ts_ms))
        if packet_type == _AAC_SEQUENCE_HEADER:
            return MediaConfig(CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=body[2:]))
        raise FlvError(f"reserved AACPacketType {packet_type}")
    if sound_format in (_SOUND_MP3, _SOUND_MP3_8K):
        return MediaPacket(_audio_packet(Codec.MP3, body[1:], ts_ms))
    if sound_format == _SOUND_EX_HEADER:
        return _parse_ex_audio(body, ts_ms)
    if sound_format in _RESERVED_SOUND_FORMATS:
        raise FlvError(f"reserved sound format {sound_format}")
    return Skipped(f"legacy audio sound format {sound_format} is not relayed")


def _audio_packet(codec: Codec, payload: bytes, ts_ms: int) -> Packet:
    return Packet(kind=Kind.AUDIO, codec=codec, payload=payload, pts_ms=ts_ms, dts_ms=ts_ms, keyframe=True)


def _parse_ex_audio(body: bytes, ts_ms: int) -> _Parsed:
    # E-RTMP v2 "Enhanced Audio": SoundFormat 9 (ExHeader), then AudioPacketType UB[4].
    packet_type = body[0] & 0x0F
    pos = 1
    if packet_type == _MOD_EX:
        packet_type, pos, skip = _skip_mod_ex(body, pos, "audio")
        if skip is not None:
            return skip
    end = len(body)
    if packet_type == _AUDIO_MULTITRACK:
        track = _single_track(body, pos, "audio", _AUDIO_MULTITRACK)
        if isinstance(track, Skipped):
            return track
        packet_type, tag, pos, end = track
    else:
        tag = _read_fourcc(body, pos, "audio")
        pos += 4
    codec = _AUDIO_FOURCCS.get(tag)
    if codec is None:
        if tag in _OTHER_AUDIO_FOURCCS:
            return Skipped(f"audio codec {_OTHER_AUDIO_FOURCCS[tag]} ({tag.decode()}) is not relayed")
        raise FlvError(f"unknown audio FourCC {tag!r}")
    if packet_type == _CODED_FRAMES:
        return MediaPacket(_audio_packet(codec, body[pos:end], ts_ms))
    if packet_type == _SEQUENCE_START:
        if codec is Codec.MP3:
            return Skipped("E-RTMP defines no MP3 sequence header")
        return MediaConfig(CodecConfig(kind=Kind.AUDIO, codec=codec, data=body[pos:end]))
    if packet_type == _SEQUENCE_END:
        return EndOfSequence(Kind.AUDIO, codec)
    if packet_type == _AUDIO_MULTICHANNEL_CONFIG:
        return Skipped("audio MultichannelConfig is not relayed")
    raise FlvError(f"reserved AudioPacketType {packet_type}")


def _read_fourcc(body: bytes, pos: int, what: str) -> bytes:
    tag = body[pos : pos + 4]
    if len(tag) < 4:
        raise FlvError(f"enhanced {what} body ends inside its FourCC (offset {pos})")
    return tag


def _skip_mod_ex(body: bytes, pos: int, what: str) -> tuple[int, int, Skipped | None]:
    """Skip E-RTMP v2 ModEx blocks; return (the real packet type, the offset after them, Skipped or None)."""
    packet_type = _MOD_EX
    skip: Skipped | None = None
    while packet_type == _MOD_EX:
        if pos >= len(body):
            raise FlvError(f"{what} body ends inside a ModEx size (offset {pos})")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > len(body):
                raise FlvError(f"{what} body ends inside a 16-bit ModEx size (offset {pos})")
            size = int.from_bytes(body[pos : pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= len(body):
            raise FlvError(f"{what} body ends inside a {size}-byte ModEx block")
        mod_ex_type = body[pos] >> 4
        packet_type = body[pos] & 0x0F
        pos += 1
        # TimestampOffsetNano adds a sub-millisecond offset; Packet timestamps are whole ms, so it is
        # dropped. An unknown modifier may change what the packet means: skip the packet, don't guess.
        if mod_ex_type != _TIMESTAMP_OFFSET_NANO and skip is None:
            skip = Skipped(f"unknown {what} ModEx type {mod_ex_type}")
    return packet_type, pos, skip


def _single_track(body: bytes, pos: int, what: str, multitrack: int) -> tuple[int, bytes, int, int] | Skipped:
    """Parse an E-RTMP v2 multitrack message; return (packet type, FourCC, start, end) of its one track.

    Only a message holding exactly one track, the default track 0, is relayed: Packet has no track id, so
    mixing tracks would interleave renditions.
    """
    if pos >= len(body):
        raise FlvError(f"{what} body ends before its AvMultitrackType")
    multitrack_type = body[pos] >> 4
    packet_type = body[pos] & 0x0F
    pos += 1
    if multitrack_type > _MANY_TRACKS_MANY_CODECS:
        raise FlvError(f"reserved AvMultitrackType {multitrack_type}")
    if packet_type in (multitrack, _MOD_EX):
        raise FlvError(f"{what} multitrack packet type {packet_type} is not allowed inside a multitrack")
    tag = b""
    if multitrack_type != _MANY_TRACKS_MANY_CODECS:
        tag = _read_fourcc(body, pos, what)
        pos += 4
    tracks: list[tuple[int, bytes, int, int]] = []
    while pos < len(body):
        if multitrack_type == _MANY_TRACKS_MANY_CODECS:
            tag = _read_fourcc(body, pos, what)
            pos += 4
        if pos >= len(body):
            raise FlvError(f"{what} multitrack body ends before a track id (offset {pos})")
        track_id = body[pos]
        pos += 1
        if multitrack_type == _ONE_TRACK:
            tracks.append((track_id, tag, pos, len(body)))
            break
        if pos + 3 > len(body):
            raise FlvError(f"{what} multitrack body ends inside a track size (offset {pos})")
        size = int.from_bytes(body[pos : pos + 3], "big")
        pos += 3
        if pos + size > len(body):
            raise FlvError(f"{what} track {track_id} of {size} bytes overruns the body (offset {pos})")
        tracks.append((track_id, tag, pos, pos + size))
        pos += size
    if not tracks:
        raise FlvError(f"{what} multitrack message holds no track")
    if len(tracks) > 1:
        return Skipped(f"{what} multitrack message with {len(tracks)} tracks; only single-track 0 is relayed")
    track_id, tag, start, end = tracks[0]
    if track_id != 0:
        return Skipped(f"{what} track {track_id} is not the default track 0")
    return packet_type, tag, start, end


def parse_script(body: bytes) -> tuple[str, list[object]]:
    """Parse a SCRIPTDATA body (an RTMP type 18 payload or an FLV script tag body).

    Args:
        body: AMF0 values: a name string, then its arguments. A leading "@setDataFrame" (what publishers
            send to have the server store onMetaData) is dropped.

    Returns:
        The name and the remaining values.

    Raises:
        FlvError: The AMF0 is malformed, empty, or does not start with a string.
    """
    try:
        values = amf0.decode_all(body)
    except amf0.AMFError as exc:
        raise FlvError(f"script data: {exc}") from exc
    if values and values[0] == "@setDataFrame":
        del values[0]
    if not values:
        raise FlvError("script data holds no name")
    name = values[0]
    if not isinstance(name, str):
        raise FlvError(f"script data starts with {type(name).__name__}, not a name string")
    return name, values[1:]


# --- writing -------------------------------------------------------------------------------------------


def video_body(packet: Packet) -> bytes:
    """Build the VIDEODATA body of a video packet.

    H.264 gets a legacy AVC NALU body; HEVC an E-RTMP CodedFrames body with its composition offset, or
    CodedFramesX when pts equals dts; AV1 and VP9 E-RTMP CodedFrames (which carry no offset). Send it with
    `packet.dts_ms` as the timestamp.

    Args:
        packet: A video packet.

    Returns:
        The body.

    Raises:
        FlvError: The packet is not H.264/HEVC/AV1/VP9 video; its pts - dts does not fit FLV's signed 24-bit
            composition offset; or it is AV1/VP9 with pts != dts.
    """
    cto = packet.pts_ms - packet.dts_ms
    if cto == 0:
        headers = _CODED_HEADERS.get(packet.codec)
        if headers is not None:
            return headers[packet.keyframe] + packet.payload
    return _video_body_with_offset(packet, cto)


def _video_body_with_offset(packet: Packet, cto: int) -> bytes:
    codec = packet.codec
    if codec not in _CODED_HEADERS:
        raise FlvError(f"{codec.name} is not an FLV video codec")
    if not codec.nal_based:
        raise FlvError(f"{codec.name} carries no composition offset in E-RTMP: pts-dts={cto}ms must be 0")
    if not _SI24_MIN <= cto <= _SI24_MAX:
        raise FlvError(f"composition offset {cto}ms does not fit FLV's signed 24 bits")
    offset = (cto & 0xFFFFFF).to_bytes(3, "big")
    if codec is Codec.H264:
        return (b"\x17\x01" if packet.keyframe else b"\x27\x01") + offset + packet.payload
    # E-RTMP CodedFrames: IsExVideoHeader | frame type 1 or 2 | packet type 1, FourCC, SI24.
    return (b"\x91hvc1" if packet.keyframe else b"\xa1hvc1") + offset + packet.payload


def video_config_body(config: CodecConfig) -> bytes:
    """Build the sequence header body for a video config.

    H.264: legacy AVC sequence header (17 00 00 00 00 + AVCDecoderConfigurationRecord). HEVC, AV1, VP9:
    E-RTMP SequenceStart (0x90 + FourCC + configuration record).

    Raises:
        FlvError: The config is not H.264/HEVC/AV1/VP9.
    """
    codec = config.codec
    if codec is Codec.H264:
        return b"\x17\x00\x00\x00\x00" + config.data
    if codec in _CODED_HEADERS:
        return bytes((_EX_HEADER | _KEY_FRAME << 4 | _SEQUENCE_START,)) + _FOURCCS[codec] + config.data
    raise FlvError(f"{codec.name} is not an FLV video codec")


def audio_body(packet: Packet, config: CodecConfig | None) -> bytes:
    """Build the AUDIODATA body of an audio packet.

    AAC gets the legacy header 0xAF 0x01 (FLV spec E.4.2.1: AAC always signals 44 kHz, 16-bit, stereo; the
    real values are in the AudioSpecificConfig); Opus an E-RTMP v2 CodedFrames body; MP3 a legacy header
    whose rate and stereo bits come from `config` (44 kHz stereo when unknown).

    Args:
        packet: An audio packet.
        config: The stream's audio config, or None.

    Returns:
        The body.

    Raises:
        FlvError: The packet is not AAC/Opus/MP3, or `config` is for another codec.
    """
    codec = packet.codec
    if config is not None and config.codec is not codec:
        raise FlvError(f"audio packet is {codec.name} but its config is {config.codec.name}")
    if codec is Codec.AAC:
        return _AAC_RAW_HEADER + packet.payload
    if codec is Codec.OPUS:
        return _OPUS_CODED_HEADER + packet.payload
    if codec is Codec.MP3:
        return bytes((_mp3_flags(config),)) + packet.payload
    raise FlvError(f"{codec.name} is not an FLV audio codec")


def _mp3_flags(config: CodecConfig | None) -> int:
    rate = config.sample_rate if config is not None else None
    stereo = 0 if config is not None and config.channels == 1 else 1
    if rate == 8000:
        return _SOUND_MP3_8K << 4 | 0x02 | stereo
    # SoundRate has only 5.5/11/22/44 kHz; other rates say 44 kHz, as FFmpeg does: MP3 frames state theirs.
    return _SOUND_MP3 << 4 | _MP3_RATE_BITS.get(rate or 44100, 3) << 2 | 0x02 | stereo


def audio_config_body(config: CodecConfig) -> bytes:
    """Build the sequence header body for an audio config.

    AAC: 0xAF 0x00 + AudioSpecificConfig. Opus: E-RTMP v2 SequenceStart + "Opus" + OpusHead.

    Raises:
        FlvError: The codec has no FLV sequence header (MP3 has none: send its packets only) or is not audio.
    """
    if config.codec is Codec.AAC:
        return _AAC_CONFIG_HEADER + config.data
    if config.codec is Codec.OPUS:
        return _OPUS_CONFIG_HEADER + config.data
    if config.codec is Codec.MP3:
        raise FlvError("MP3 has no FLV sequence header: send only its packets")
    raise FlvError(f"{config.codec.name} is not an FLV audio codec")


def metadata_body(metadata: Mapping[str, object]) -> bytes:
    """Build an onMetaData SCRIPTDATA body: the string "onMetaData" and an AMF0 ECMA array.

    No "@setDataFrame" is prepended: files and players want the bare form; a publishing client adds it.

    Args:
        metadata: The properties. Nested mappings (`Metadata` included) become AMF0 objects, tuples and
            lists strict arrays.

    Returns:
        The body.

    Raises:
        FlvError: A value has no AMF0 encoding.
    """
    try:
        return amf0.encode("onMetaData", amf0.ECMAArray(metadata))
    except (TypeError, ValueError) as exc:
        raise FlvError(f"onMetaData: {exc}") from exc
