"""AAC (from the Bus) to Opus (for WebRTC), with PyAV: one transcoder per stream, shared by its viewers."""

from __future__ import annotations

from fractions import Fraction

import av

__all__ = ["OPUS_RATE", "OpusTranscoder"]

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
