"""H.264 access units in Annex-B form (encoders, UVC cameras, rpicam-vid) -> Bus packets and configs.

Encoders and cameras write parameter sets (SPS/PPS) in band, in front of keyframes. The Bus wants them
out of band, as an AVCDecoderConfigurationRecord in a `CodecConfig`, and the packet payloads in 4-byte
length-prefixed form. `AnnexBTranslator` does that per access unit and remembers the parameter sets, so a
new config is announced only when they change (an encoder reopened at another size or bit rate).
Access unit delimiters go (FLV and MP4 carry none); SEI and slices stay.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.media.h264 import build_avc_config, codec_config_from_avc
from appliance.media.packets import Codec, CodecConfig, Kind, Packet, avcc_from_annexb, iter_avcc

__all__ = ["AccessUnit", "AnnexBTranslator"]

_NAL_IDR = 5
_NAL_SPS = 7
_NAL_PPS = 8
_NAL_AUD = 9
_OUT_OF_BAND = (_NAL_SPS, _NAL_PPS, _NAL_AUD)


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One translated access unit: a new config (when the parameter sets changed) and the packet."""

    config: CodecConfig | None
    packet: Packet | None  # None: the unit held only parameter sets or delimiters

    def items(self) -> list[CodecConfig | Packet]:
        """What goes to the Bus, in order: the config change first, then the packet."""
        return [x for x in (self.config, self.packet) if x is not None]


class AnnexBTranslator:
    """Translate H.264 Annex-B access units into `CodecConfig` + `Packet`.

    Args:
        fps: The frame rate to record in the config when the SPS carries none.
    """

    def __init__(self, *, fps: float | None = None) -> None:
        self._fps = fps
        self._sps: list[bytes] = []
        self._pps: list[bytes] = []
        self._record: bytes | None = None
        self.config: CodecConfig | None = None

    def translate(self, data: bytes, *, pts_ms: int, dts_ms: int | None = None) -> AccessUnit:
        """Translate one access unit.

        Args:
            data: The Annex-B bytes of one access unit.
            pts_ms: Its presentation time.
            dts_ms: Its decode time (default `pts_ms`: no B-frames).

        Returns:
            The unit's config change and packet. No packet comes out before the first parameter sets:
            a decoder could not use it.

        Raises:
            ValueError: The bytes are not Annex-B, or the parameter sets are malformed.
        """
        avcc = avcc_from_annexb(data)
        kept: list[bytes] = []
        sps: list[bytes] = []
        pps: list[bytes] = []
        keyframe = False
        aud = 0
        for nal in iter_avcc(avcc):
            nal_type = nal[0] & 0x1F
            if nal_type == _NAL_SPS:
                sps.append(nal)
            elif nal_type == _NAL_PPS:
                pps.append(nal)
            elif nal_type == _NAL_AUD:
                aud += 1
            else:
                keyframe = keyframe or nal_type == _NAL_IDR
                kept.append(nal)
        config = self._update(sps, pps)
        if not kept or self.config is None:
            return AccessUnit(config, None)
        # Most units (every delta frame of an encoder) lose nothing: their AVCC form is the payload.
        dropped = len(sps) + len(pps) + aud
        payload = b"".join(len(n).to_bytes(4, "big") + n for n in kept) if dropped else avcc
        dts = pts_ms if dts_ms is None else dts_ms
        packet = Packet(
            kind=Kind.VIDEO, codec=Codec.H264, payload=payload, pts_ms=pts_ms, dts_ms=dts, keyframe=keyframe
        )
        return AccessUnit(config, packet)

    def _update(self, sps: list[bytes], pps: list[bytes]) -> CodecConfig | None:
        if not sps and not pps:
            return None
        new_sps = sps or self._sps
        new_pps = pps or self._pps
        if not new_sps or not new_pps:
            # A PPS before any SPS (or the reverse): wait for the other half.
            self._sps, self._pps = new_sps, new_pps
            return None
        record = build_avc_config(new_sps, new_pps)
        self._sps, self._pps = new_sps, new_pps
        if record == self._record:
            return None
        self._record = record
        config = codec_config_from_avc(record)
        if config.fps is None and self._fps is not None:
            config = CodecConfig(
                kind=config.kind,
                codec=config.codec,
                data=config.data,
                width=config.width,
                height=config.height,
                fps=self._fps,
                profile=config.profile,
                level=config.level,
            )
        self.config = config
        return config
