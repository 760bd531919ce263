"""From RTMP publish to Bus: FLV tag bodies and onMetaData into Packets, CodecConfigs and Metadata.

Pure: the server feeds it the session's media and data events and it calls the Bus producer. It fills in
the codec facts (profile, level, size, frame rate, sample rate, channels) from the sequence headers, so
they are parsed once per publish for the log line, the JSON API and every subscriber.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from appliance.bus import Producer
from appliance.media import aac, flv, h264, hevc
from appliance.media.bitreader import CodecParseError
from appliance.media.packets import Codec, CodecConfig, Kind, Metadata, Packet, avcc_with_4byte_lengths
from appliance.media.rtmp.chunk import MessageType
from appliance.media.rtmp.errors import RemoteProtocolError

__all__ = ["PublishAdapter", "describe_config", "enrich_config"]


def enrich_config(config: CodecConfig, metadata: Mapping[str, object] | None = None) -> CodecConfig:
    """Fill a config's facts from its record (H.264/HEVC SPS, AAC AudioSpecificConfig).

    A record that does not parse keeps its facts empty: an exotic stream still relays, it just shows
    fewer details. The frame rate falls back to onMetaData's `framerate` when the SPS has no timing.

    Args:
        config: A config as the publisher sent it.
        metadata: The stream's onMetaData, if any.

    Returns:
        The config with whatever facts could be learnt.
    """
    try:
        if config.codec is Codec.H264:
            config = h264.codec_config_from_avc(config.data)
        elif config.codec is Codec.HEVC:
            config = hevc.codec_config_from_hevc(config.data)
        elif config.codec is Codec.AAC:
            config = aac.codec_config_from_asc(config.data)
    except (CodecParseError, ValueError):
        return config
    if config.kind is Kind.VIDEO and config.fps is None and metadata is not None:
        rate = metadata.get("framerate", metadata.get("fps"))
        if isinstance(rate, int | float) and not isinstance(rate, bool) and 0 < rate <= 1000:
            config = replace(config, fps=float(rate))
    return config


def describe_config(config: CodecConfig) -> dict[str, object]:
    """The facts of a config as the JSON API shows them."""
    out: dict[str, object] = {"codec": config.codec.value}
    for name in ("profile", "level", "width", "height", "fps", "sample_rate", "channels"):
        value = getattr(config, name)
        if value is not None:
            out[name] = round(value, 3) if isinstance(value, float) else value
    return out


class PublishAdapter:
    """Turns one publisher's RTMP media into Bus calls.

    Args:
        producer: The Bus producer this publish owns.

    Attributes:
        configs: The configs sent, by kind, with facts filled in (for logs and the API).
        bytes_in: Media payload bytes received.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.configs: dict[Kind, CodecConfig] = {}
        self.metadata: Metadata | None = None
        self.bytes_in = 0
        self._length_size = 4
        self._mp3_announced = False

    def media(self, type_id: int, timestamp: int, payload: bytes) -> CodecConfig | None:
        """Handle one audio/video message.

        Args:
            type_id: 8 (audio) or 9 (video).
            timestamp: Unwrapped timestamp in ms.
            payload: The FLV tag body.

        Returns:
            The new config when this message was a sequence header, else None.

        Raises:
            RemoteProtocolError: The body is malformed or uses a codec the relay does not carry.
            appliance.bus.BusError: From the producer (evicted, timestamps going back).
        """
        self.bytes_in += len(payload)
        if not payload:
            return None  # some encoders send empty audio/video messages as keep-alives
        try:
            parsed = (
                flv.parse_video(payload, timestamp)
                if type_id == MessageType.VIDEO
                else flv.parse_audio(payload, timestamp)
            )
        except flv.FlvError as exc:
            kind = "video" if type_id == MessageType.VIDEO else "audio"
            raise RemoteProtocolError(f"{kind} message at {timestamp} ms: {exc}") from None
        if isinstance(parsed, flv.MediaPacket):
            packet = parsed.packet
            if packet.codec is Codec.MP3 and not self._mp3_announced:
                self._announce(CodecConfig(kind=Kind.AUDIO, codec=Codec.MP3, data=b""))
                self._mp3_announced = True
            if packet.kind not in self.configs and packet.kind is not Kind.DATA:
                return None  # frames before their sequence header cannot be decoded by anyone
            if self._length_size != 4 and packet.kind is Kind.VIDEO and packet.codec.nal_based:
                packet = _reprefix(packet, self._length_size)
            self.producer.send_packet(packet)
            return None
        if isinstance(parsed, flv.MediaConfig):
            config = parsed.config
            if config.codec is Codec.H264:
                config = self._normalise_avc(config)
            return self._announce(enrich_config(config, self.metadata))
        return None  # end of sequence, command frames, enhanced metadata: nothing a player needs

    def data(self, name: str, args: tuple[object, ...], payload: bytes, timestamp: int) -> bool:
        """Handle a data message. Returns True when it was onMetaData."""
        if name == "onMetaData":
            values = args[0] if args else {}
            if not isinstance(values, Mapping):
                raise RemoteProtocolError(f"onMetaData with a {type(values).__name__}, want an object")
            self.metadata = Metadata({str(k): v for k, v in values.items()})
            self.producer.send_metadata(self.metadata)
            return True
        if Kind.VIDEO in self.configs or Kind.AUDIO in self.configs:
            # Timed script data (onCuePoint, onTextData, captions) travels with the media.
            self.producer.send_packet(
                Packet(
                    kind=Kind.DATA,
                    codec=Codec.AMF0,
                    payload=payload,
                    pts_ms=timestamp,
                    dts_ms=timestamp,
                    keyframe=True,
                )
            )
        return False

    def _announce(self, config: CodecConfig) -> CodecConfig:
        self.configs[config.kind] = config
        self.producer.send_config(config)
        return config

    def _normalise_avc(self, config: CodecConfig) -> CodecConfig:
        # Packet payloads carry 4-byte NAL lengths; a record with 1- or 2-byte ones is rewritten.
        try:
            record = h264.parse_avc_config(config.data)
        except CodecParseError as exc:
            raise RemoteProtocolError(f"AVC sequence header: {exc}") from None
        self._length_size = record.length_size
        if record.length_size == 4:
            return config
        try:
            return replace(config, data=h264.build_avc_config(list(record.sps), list(record.pps)))
        except ValueError as exc:
            raise RemoteProtocolError(
                f"AVC sequence header with {record.length_size}-byte lengths: {exc}"
            ) from None


def _reprefix(packet: Packet, length_size: int) -> Packet:
    try:
        payload = avcc_with_4byte_lengths(packet.payload, length_size)
    except ValueError as exc:
        raise RemoteProtocolError(f"video frame at {packet.dts_ms} ms: {exc}") from None
    return Packet(
        kind=packet.kind,
        codec=packet.codec,
        payload=payload,
        pts_ms=packet.pts_ms,
        dts_ms=packet.dts_ms,
        keyframe=packet.keyframe,
    )
