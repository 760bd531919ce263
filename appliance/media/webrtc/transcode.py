"""One transcode per stream for WebRTC viewers of H.264 with B-frames (OBS or x264 on default settings).

WebRTC cannot carry reordered pictures, so such a stream is decoded and re-encoded once, as
constrained-baseline H.264 without B-frames (`appliance.media.encode.VideoEncoder`, libx264), into a Bus
of its own, `transcoded_name(source)` (``webrtc/APP.KEY``). Viewers subscribe to that Bus like any other
(each its own subscription, GOP cache, drops to keyframes), so they share the one transcode. It runs
while the stream has WebRTC viewers; PLI/FIR from them asks this encoder for a keyframe.

PyAV work runs in a worker thread (one at a time); the trio task only moves events.
"""

from __future__ import annotations

import logging
from typing import Any

import av
import trio

from appliance.bus import BusRegistry, SubscriberCutOffError
from appliance.media.bus_events import ConfigChanged, PacketReceived
from appliance.media.encode import VideoEncoder
from appliance.media.packets import Codec, CodecConfig, Kind, Packet

__all__ = ["DEFAULT_BITRATE_BPS", "StreamTranscoder", "transcoded_name"]

log = logging.getLogger("appliance.webrtc")

DEFAULT_BITRATE_BPS = 2_500_000
_GOP_S = 2.0


def transcoded_name(source: str) -> str:
    """The Bus a transcoded stream goes to: ``live/obs`` -> ``webrtc/live.obs`` (an app RTMP does not
    serve, so no RTMP client can publish into it)."""
    app, _, key = source.partition("/")
    return f"webrtc/{app}.{key}"


class StreamTranscoder:
    """Source Bus (H.264 with B-frames, any audio) -> `transcoded_name(source)` (baseline, no B-frames;
    the audio is passed through as it is).

    Args:
        buses: The Bus registry.
        source: The stream to transcode.
        encoder: The FFmpeg H.264 encoder to use.
    """

    def __init__(self, buses: BusRegistry, source: str, *, encoder: str = "libx264") -> None:
        self.buses = buses
        self.source = source
        self.target = transcoded_name(source)
        self.encoder_name = encoder
        self.frames = 0
        self._decoder: Any = None
        self._encoder: VideoEncoder | None = None
        self._fps = 30.0
        self._bitrate = DEFAULT_BITRATE_BPS

    def request_keyframe(self) -> None:
        """Ask the encoder for a keyframe (rate-limited by the encoder); any thread."""
        encoder = self._encoder
        if encoder is not None:
            encoder.request_keyframe()

    async def run(self) -> None:
        """Transcode until cancelled (or the source's subscription ends)."""
        limiter = trio.CapacityLimiter(1)
        log.info("webrtc.transcode_started source=%s target=%s", self.source, self.target)
        try:
            with (
                self.buses.subscribe(self.source, max_queue=256, label="webrtc-transcode:h264") as sub,
                self.buses.publish(self.target) as producer,
            ):
                while True:
                    event = await sub.receive()
                    if isinstance(event, ConfigChanged):
                        if event.config.kind is Kind.VIDEO:
                            self._configure(event.config)
                        else:
                            producer.send_config(event.config)
                    elif isinstance(event, PacketReceived):
                        packet = event.packet
                        if packet.kind is not Kind.VIDEO:
                            producer.send_packet(packet)
                        elif self._decoder is not None:
                            out = await trio.to_thread.run_sync(self._work, packet, limiter=limiter)
                            for item in out:
                                if isinstance(item, CodecConfig):
                                    producer.send_config(item)
                                else:
                                    producer.send_packet(item)
        except (SubscriberCutOffError, trio.EndOfChannel):
            pass
        finally:
            log.info("webrtc.transcode_stopped source=%s frames=%d", self.source, self.frames)

    def _configure(self, config: CodecConfig) -> None:
        if config.codec is not Codec.H264:
            self._decoder = None
            return
        decoder = av.CodecContext.create("h264", "r")
        decoder.extradata = config.data  # an avcC record: the decoder reads length-prefixed NAL units
        self._decoder = decoder
        self._encoder = None  # reopened at the next frame, with its size
        if config.fps:
            self._fps = config.fps

    def _work(self, packet: Packet) -> list[CodecConfig | Packet]:
        """In the worker thread: decode one packet, encode what it gave."""
        source = av.Packet(packet.payload)
        source.pts, source.dts = packet.pts_ms, packet.dts_ms
        out: list[CodecConfig | Packet] = []
        try:
            frames = self._decoder.decode(source)
        except av.FFmpegError:
            return out  # a broken packet: the decoder recovers at the next keyframe
        for frame in frames:
            encoder = self._encoder
            if encoder is None or (frame.width, frame.height) != (encoder.width, encoder.height):
                encoder = self._encoder = VideoEncoder(
                    self.encoder_name,
                    width=frame.width,
                    height=frame.height,
                    fps=self._fps,
                    bitrate_bps=self._bitrate,
                    gop=max(1, round(self._fps * _GOP_S)),
                    profile="baseline",
                )
            self.frames += 1
            out += encoder.encode(frame, int(frame.pts if frame.pts is not None else packet.pts_ms))
        return out
