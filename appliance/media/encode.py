"""Video and audio encoders behind one interface: frames in, Bus packets and configs out.

`VideoEncoder` wraps a PyAV H.264 encoder (a hardware one where the probe found it, else libx264). It is
used from the capture worker thread only; the two controls other subsystems need go through thread-safe
flags that the next `encode()` applies:

- `request_keyframe()`: a new WebRTC/MoQ viewer or a PLI wants a keyframe. Rate-limited by
  `KeyframeGate`, so many viewers asking at once cost one keyframe.
- `set_bitrate(bps)`: thermal throttling or congestion. libx264 reconfigures in place (FFmpeg's libx264
  wrapper calls x264_encoder_reconfig when the context's bit rate changes); encoders that can't are
  reopened at the next frame, which starts with a keyframe.

The GOP is fixed (`gop` frames; scene-cut keyframes off), so segmenters and late joiners can rely on it.

`AudioEncoder` turns PCM frames of any layout and rate into AAC-LC access units of 1024 samples.
"""

from __future__ import annotations

import fractions
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import av.audio.fifo
import av.audio.resampler
import av.codec.hwaccel

from appliance.hw.encoders import encoder_options
from appliance.media.aac import build_audio_specific_config, codec_config_from_asc
from appliance.media.capture.annexb import AnnexBTranslator
from appliance.media.capture.timing import KeyframeGate
from appliance.media.packets import Codec, CodecConfig, Kind, Packet

__all__ = ["AudioEncoder", "VideoEncoder"]

log = logging.getLogger("appliance.capture")

_MS = fractions.Fraction(1, 1000)


class VideoEncoder:
    """An H.264 encoder with keyframe requests and live bit rate changes.

    Args:
        name: The FFmpeg encoder ("libx264", "h264_v4l2m2m", ...).
        width, height, fps: The picture the frames have (frames of another size or format are converted).
        bitrate_bps: The initial bit rate.
        gop: Frames between keyframes.
        profile: "baseline", "main" or "high".
        keyframe_interval_s: At most one forced keyframe per this many seconds.
        monotonic: The clock the keyframe rate limit reads (tests pass a fake).

    Raises:
        av.error.FFmpegError: The encoder did not open.
    """

    def __init__(
        self,
        name: str,
        *,
        width: int,
        height: int,
        fps: float,
        bitrate_bps: int,
        gop: int,
        profile: str,
        keyframe_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.width = width
        self.height = height
        self.fps = fps
        self.gop = gop
        self.profile = profile
        self._bitrate_bps = bitrate_bps
        self._pending_bitrate: int | None = None
        self._lock = threading.Lock()
        self._gate = KeyframeGate(keyframe_interval_s)
        self._monotonic = monotonic
        self._translator = AnnexBTranslator(fps=fps)
        self.frames_in = 0
        self.packets_out = 0
        self.reopens = 0
        self._ctx = self._open()

    # -- controls, callable from any thread ---------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask for a keyframe soon (rate-limited)."""
        with self._lock:
            self._gate.request()

    def set_bitrate(self, bitrate_bps: int) -> None:
        """Change the bit rate from the next frame on."""
        if bitrate_bps <= 0:
            raise ValueError(f"bitrate_bps={bitrate_bps}: want > 0")
        with self._lock:
            self._pending_bitrate = bitrate_bps

    @property
    def bitrate_bps(self) -> int:
        return self._bitrate_bps

    def stats(self) -> dict[str, object]:
        return {
            "encoder": self.name,
            "bitrate_bps": self._bitrate_bps,
            "gop": self.gop,
            "profile": self.profile,
            "keyframe_requests": self._gate.requests,
            "keyframes_forced": self._gate.forced,
            "reopens": self.reopens,
        }

    # -- the worker thread's side -------------------------------------------------------------------

    def encode(self, frame: av.VideoFrame, pts_ms: int) -> list[CodecConfig | Packet]:
        """Encode one frame stamped `pts_ms`; returns what came out for the Bus, in order (a config when
        the parameter sets changed, then packets; often nothing yet, or more than one)."""
        force = self._apply_controls()
        if frame.width != self.width or frame.height != self.height or frame.format.name != self._pix_fmt:
            frame = frame.reformat(width=self.width, height=self.height, format=self._pix_fmt)
        frame.pts = pts_ms
        frame.time_base = _MS
        # Sources such as lavfi's testsrc mark every frame as an I picture, and encoders honour the
        # picture type as a request: clear it unless we mean it.
        frame.pict_type = av.video.frame.PictureType.I if force else av.video.frame.PictureType.NONE
        self.frames_in += 1
        return self._collect(self._ctx.encode(frame))

    def flush(self) -> list[CodecConfig | Packet]:
        """Drain the encoder (at the end of a source)."""
        try:
            return self._collect(self._ctx.encode(None))
        except av.error.EOFError:
            return []

    # -- internals ----------------------------------------------------------------------------------

    def _open(self) -> av.video.codeccontext.VideoCodecContext:
        settings = encoder_options(
            self.name, profile=self.profile, gop=self.gop, bitrate_bps=self._bitrate_bps, fps=self.fps
        )
        hwaccel = av.codec.hwaccel.HWAccel(settings.hwaccel) if settings.hwaccel else None
        ctx = av.CodecContext.create(self.name, "w", hwaccel=hwaccel)
        assert isinstance(ctx, av.video.codeccontext.VideoCodecContext)
        ctx.width = self.width
        ctx.height = self.height
        ctx.pix_fmt = settings.pix_fmt
        ctx.time_base = _MS
        ctx.framerate = fractions.Fraction(self.fps).limit_denominator(1001)
        ctx.bit_rate = self._bitrate_bps
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.options = dict(settings.options)
        ctx.open()
        self._pix_fmt = settings.pix_fmt
        self._settings = settings
        return ctx

    def _apply_controls(self) -> bool:
        now = self._monotonic()
        with self._lock:
            bitrate = self._pending_bitrate
            self._pending_bitrate = None
            force = self._gate.should_force(now)
        if bitrate is not None and bitrate != self._bitrate_bps:
            old = self._bitrate_bps
            self._bitrate_bps = bitrate
            settings = self._settings
            if settings.live_bitrate and bitrate <= settings.live_bitrate_max_bps:
                self._ctx.bit_rate = bitrate
            else:
                # This encoder can't reach that rate while open (no live change at all, or above the
                # ceiling it opened with): reopen at the new rate; the next frame is an IDR.
                self._ctx = self._open()
                self.reopens += 1
            log.info("capture.bitrate encoder=%s from_bps=%d to_bps=%d", self.name, old, bitrate)
        return force

    def _collect(self, packets: list[Any]) -> list[CodecConfig | Packet]:
        out: list[CodecConfig | Packet] = []
        for packet in packets:
            pts = packet.pts
            if pts is None:
                continue
            dts = packet.dts if packet.dts is not None else pts
            unit = self._translator.translate(bytes(packet), pts_ms=int(pts), dts_ms=int(min(dts, pts)))
            if unit.packet is not None:
                self.packets_out += 1
                if unit.packet.keyframe:
                    with self._lock:
                        self._gate.keyframe_made(self._monotonic())
            out.extend(unit.items())
        return out


class AudioEncoder:
    """PCM frames -> AAC-LC access units.

    Args:
        sample_rate: The output rate (48000 unless the source has another AAC rate).
        channels: 1 or 2.
        bitrate_bps: The AAC bit rate.
    """

    FRAME_SAMPLES = 1024  # AAC-LC frame length (ISO/IEC 14496-3 4.5.1.1)

    def __init__(self, *, sample_rate: int = 48_000, channels: int = 1, bitrate_bps: int = 128_000) -> None:
        layout = "mono" if channels == 1 else "stereo"
        ctx = av.CodecContext.create("aac", "w")
        assert isinstance(ctx, av.audio.codeccontext.AudioCodecContext)
        ctx.sample_rate = sample_rate
        ctx.layout = layout
        ctx.format = "fltp"
        ctx.bit_rate = bitrate_bps
        ctx.time_base = fractions.Fraction(1, sample_rate)
        ctx.open()
        self._ctx = ctx
        self.sample_rate = sample_rate
        self.channels = channels
        self._resampler = av.audio.resampler.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        self._fifo = av.audio.fifo.AudioFifo()
        asc = bytes(ctx.extradata or b"") or build_audio_specific_config(2, sample_rate, channels)
        self.config = codec_config_from_asc(asc)
        self._samples = 0  # samples handed to the encoder so far
        self._origin_ms: float | None = None
        self._last_ms: int | None = None

    def encode(self, frame: av.AudioFrame, pts_ms: int) -> list[Packet]:
        """Encode PCM that starts at `pts_ms`; returns whole AAC frames as they complete.

        Timestamps come from the sample count after the first frame, so they are exact and gap-free; a
        source that loses audio (an overrun) re-anchors by calling `reset_clock()`.
        """
        if self._origin_ms is None:
            self._origin_ms = pts_ms - self._samples * 1000.0 / self.sample_rate
        out: list[Packet] = []
        chunks: list[av.AudioFrame] = []
        if self._ready(frame):
            # Already what the encoder takes, in whole AAC frames (the synthetic sine): no resampler, no
            # FIFO, which cost as much Python per frame as the encode itself.
            chunks.append(frame)
        else:
            for resampled in self._resampler.resample(frame):
                resampled.pts = None
                self._fifo.write(resampled)
            while self._fifo.samples >= self.FRAME_SAMPLES:
                chunk = self._fifo.read(self.FRAME_SAMPLES)
                if chunk is None:
                    break
                chunks.append(chunk)
        for chunk in chunks:
            chunk.pts = self._samples
            chunk.time_base = self._ctx.time_base
            self._samples += self.FRAME_SAMPLES
            for packet in self._ctx.encode(chunk):
                out.append(self._packet(packet))
        return out

    def _ready(self, frame: av.AudioFrame) -> bool:
        return (
            frame.samples == self.FRAME_SAMPLES
            and frame.format.name == "fltp"
            and frame.sample_rate == self.sample_rate
            and frame.layout.nb_channels == self.channels
            and self._fifo.samples == 0
        )

    def reset_clock(self) -> None:
        """Take the next frame's timestamp as the new origin (after lost audio)."""
        self._origin_ms = None

    def _packet(self, packet: Any) -> Packet:
        samples = packet.pts if packet.pts is not None else self._samples
        assert self._origin_ms is not None
        exact = self._origin_ms + samples * 1000.0 / self.sample_rate
        frame_ms = self.FRAME_SAMPLES * 1000.0 / self.sample_rate
        if self._last_ms is not None and exact < self._last_ms + frame_ms - 1:
            # Re-anchored backwards (a device that delivered faster than real time): move on, never back.
            self._origin_ms += self._last_ms + frame_ms - exact
            exact = self._last_ms + frame_ms
        ts = max(0, round(exact))
        self._last_ms = ts
        return Packet(
            kind=Kind.AUDIO, codec=Codec.AAC, payload=bytes(packet), pts_ms=ts, dts_ms=ts, keyframe=True
        )
