"""AAC <-> Opus with PyAV, once per stream: AAC from the Bus to Opus for WHEP viewers (shared by all of
them), and Opus from a WHIP publisher to AAC for RTMP players."""

from __future__ import annotations

from fractions import Fraction

import av

from appliance.media.encode import AudioEncoder
from appliance.media.packets import Packet

__all__ = ["OPUS_RATE", "OpusToAac", "OpusTranscoder"]

OPUS_RATE = 48000
_FRAME = 960  # 20 ms, what browsers expect


class OpusTranscoder:
    """Feed AAC access units; get Opus packets (bytes, pts in 1/48000 s).

    Args:
        asc: The AudioSpecificConfig (the Bus's AAC config data).
        bitrate: Opus bit rate.
    """

    def __init__(self, asc: bytes, bitrate: int = 64000) -> None:
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = asc
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
        self._fifo = av.AudioFifo()
        enc = av.CodecContext.create("libopus", "w")
        enc.sample_rate = OPUS_RATE
        enc.layout = "stereo"
        enc.format = "s16"
        enc.bit_rate = bitrate
        enc.time_base = Fraction(1, OPUS_RATE)
        enc.open()
        self._encoder = enc
        self._next_pts: int | None = None

    def feed(self, payload: bytes, pts_ms: int) -> list[tuple[bytes, int]]:
        """One AAC access unit at `pts_ms`; the Opus packets that are ready.

        Raises:
            av.FFmpegError: The AAC does not decode.
        """
        out: list[tuple[bytes, int]] = []
        if self._next_pts is None:
            self._next_pts = pts_ms * OPUS_RATE // 1000
        for frame in self._decoder.decode(av.Packet(payload)):
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                resampled.pts = None
                self._fifo.write(resampled)
        while self._fifo.samples >= _FRAME:
            chunk = self._fifo.read(_FRAME)
            assert chunk is not None  # the fifo holds at least a frame
            chunk.pts = self._next_pts
            chunk.time_base = Fraction(1, OPUS_RATE)
            self._next_pts += _FRAME
            for packet in self._encoder.encode(chunk):
                out.append((bytes(packet), int(packet.pts if packet.pts is not None else chunk.pts)))
        return out


class OpusToAac:
    """Opus packets (from a WHIP publisher) to AAC-LC access units (for RTMP players and recordings).

    One per published stream. Timestamps: the caller passes each packet's time on the stream's clock; a
    jump of more than `_GAP_MS` from what the samples say (discontinuous transmission, lost packets)
    re-anchors the AAC clock so audio stays on the video's timeline.
    """

    _GAP_MS = 100

    def __init__(self, *, channels: int = 2, bitrate_bps: int = 128_000) -> None:
        self._decoder = av.CodecContext.create("libopus", "r")
        self._decoder.sample_rate = OPUS_RATE
        self._decoder.layout = "stereo" if channels == 2 else "mono"
        self._encoder = AudioEncoder(sample_rate=OPUS_RATE, channels=channels, bitrate_bps=bitrate_bps)
        self.config = self._encoder.config
        self._expected_ms: float | None = None
        self.errors = 0

    def feed(self, payload: bytes, pts_ms: int) -> list[Packet]:
        """One Opus packet at `pts_ms`; the AAC packets that are ready (a bad packet loses only itself)."""
        try:
            frames = self._decoder.decode(av.Packet(payload))
        except av.FFmpegError:
            self.errors += 1
            return []
        if self._expected_ms is not None and abs(pts_ms - self._expected_ms) > self._GAP_MS:
            self._encoder.reset_clock()
        out: list[Packet] = []
        for frame in frames:
            frame.pts = None
            out += self._encoder.encode(frame, pts_ms)
            pts_ms += round(frame.samples * 1000 / OPUS_RATE)
        self._expected_ms = pts_ms
        return out
