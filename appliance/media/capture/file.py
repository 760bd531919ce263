"""The file source: loop a recording (FLV, MP4, MKV) in real time, for demos and tests.

H.264 video and AAC audio pass through untouched; other codecs are decoded and encoded to H.264/AAC like
a camera. Packets are sent when their decode time comes due on the capture clock, and each loop continues
the timeline where the previous one ended (start + file position + loop offset), so timestamps keep rising
across the loop point.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from appliance.media.aac import codec_config_from_asc
from appliance.media.capture.annexb import AnnexBTranslator
from appliance.media.capture.tracks import CaptureLostError, Item, Sink, wait_until
from appliance.media.encode import AudioEncoder, VideoEncoder
from appliance.media.h264 import build_avc_config, codec_config_from_avc, parse_avc_config
from appliance.media.packets import Codec, CodecConfig, Kind, Packet, avcc_with_4byte_lengths

__all__ = ["FileTrack"]

log = logging.getLogger("appliance.capture")

VideoEncoderFactory = Callable[[int, int, float], VideoEncoder]


class _Video:
    """Turns the file's video packets into Bus items: passthrough for H.264, else decode + encode."""

    def __init__(self, stream: av.video.stream.VideoStream, make_encoder: VideoEncoderFactory) -> None:
        ctx = stream.codec_context
        self.stream = stream
        self.fps = float(stream.average_rate or stream.guessed_rate or 30)
        self.encoder: VideoEncoder | None = None
        self.translator: AnnexBTranslator | None = None
        self.config: CodecConfig | None = None
        self.length_size = 4
        extradata = bytes(ctx.extradata or b"")
        if ctx.name == "h264" and extradata[:1] == b"\x01":
            record = parse_avc_config(extradata)
            self.length_size = record.length_size
            if record.length_size != 4:  # payloads get 4-byte lengths below: the record must say so
                extradata = build_avc_config(list(record.sps), list(record.pps))
            self.config = codec_config_from_avc(extradata)
        elif ctx.name == "h264":
            self.translator = AnnexBTranslator(fps=self.fps)
        else:
            self.encoder = make_encoder(ctx.width, ctx.height, self.fps)
        self.mode = "encode" if self.encoder else "passthrough"

    def items(self, packet: Any, pts_ms: int, dts_ms: int, base_ms: float) -> list[Item]:
        data = bytes(packet)
        if self.config is not None:
            data = avcc_with_4byte_lengths(data, self.length_size)
            return [
                self.config,
                Packet(
                    kind=Kind.VIDEO,
                    codec=Codec.H264,
                    payload=data,
                    pts_ms=pts_ms,
                    dts_ms=dts_ms,
                    keyframe=packet.is_keyframe,
                ),
            ]
        if self.translator is not None:
            unit = self.translator.translate(data, pts_ms=pts_ms, dts_ms=dts_ms)
            return list(unit.items())
        assert self.encoder is not None
        out: list[Item] = []
        for frame in packet.decode():
            # Decoders hand out frames in presentation order, later than their packets: stamp each
            # frame with its own time, moved onto the capture timeline like the packet's.
            if frame.pts is not None and frame.time_base is not None:
                pts_ms = max(0, round(float(frame.pts * frame.time_base) * 1000.0 + base_ms))
            out.extend(self.encoder.encode(frame, pts_ms))
        return out


class _Audio:
    """AAC passes through; other codecs are decoded and encoded to AAC."""

    def __init__(self, stream: av.audio.stream.AudioStream, bitrate_bps: int) -> None:
        ctx = stream.codec_context
        self.stream = stream
        extradata = bytes(ctx.extradata or b"")
        self.encoder: AudioEncoder | None = None
        self.config: CodecConfig
        if ctx.name == "aac" and extradata:
            self.config = codec_config_from_asc(extradata)
        else:
            channels = 1 if ctx.channels == 1 else 2
            self.encoder = AudioEncoder(sample_rate=48_000, channels=channels, bitrate_bps=bitrate_bps)
            self.config = self.encoder.config
        self.mode = "encode" if self.encoder else "passthrough"

    def items(self, packet: Any, pts_ms: int) -> list[Item]:
        if self.encoder is None:
            data = bytes(packet)
            return [
                self.config,
                Packet(
                    kind=Kind.AUDIO,
                    codec=Codec.AAC,
                    payload=data,
                    pts_ms=pts_ms,
                    dts_ms=pts_ms,
                    keyframe=True,
                ),
            ]
        out: list[Item] = [self.config]
        for frame in packet.decode():
            assert isinstance(frame, av.AudioFrame)
            out.extend(self.encoder.encode(frame, pts_ms))
        return out


class FileTrack:
    """Loop `path` on the capture clock.

    Args:
        path: The recording.
        make_encoder: Builds the H.264 encoder for files whose video is not H.264 (width, height, fps).
        audio: Whether to send the file's audio.
        audio_bitrate_bps: For audio that is not AAC.
        start_ms: The capture clock time of the file's first packet.
    """

    name = "file"

    def __init__(
        self,
        path: Path,
        *,
        make_encoder: VideoEncoderFactory,
        audio: bool,
        audio_bitrate_bps: int,
        start_ms: float,
    ) -> None:
        self.path = path
        self.make_encoder = make_encoder
        self.audio = audio
        self.audio_bitrate_bps = audio_bitrate_bps
        self.start_ms = start_ms
        self.loops = 0
        self.describe: dict[str, object] = {}

    def interrupt(self) -> None:
        pass

    def _open(self) -> av.container.InputContainer:
        try:
            return av.open(str(self.path))
        except (OSError, av.error.FFmpegError) as e:
            raise CaptureLostError(f"capture.file={str(self.path)!r}: {e}") from e

    def run(self, sink: Sink, stop: threading.Event) -> None:
        clock = sink.clock
        base_ms: float | None = None  # capture ms = file ms + base_ms
        video: _Video | None = None
        audio: _Audio | None = None
        while not stop.is_set():
            with self._open() as container:
                if not container.streams.video:
                    raise CaptureLostError(f"capture.file={str(self.path)!r}: has no video stream")
                if video is None:
                    video = _Video(container.streams.video[0], self.make_encoder)
                    if self.audio and container.streams.audio:
                        audio = _Audio(container.streams.audio[0], self.audio_bitrate_bps)
                    self.describe = {"video": video.mode, "audio": audio.mode if audio else "none"}
                    log.info(
                        "capture.file path=%s video=%s/%s audio=%s",
                        self.path, video.stream.codec_context.name, video.mode,
                        audio.mode if audio else "none",
                    )  # fmt: skip
                else:
                    video.stream = container.streams.video[0]
                    if audio is not None:
                        audio.stream = container.streams.audio[0]
                streams = [s for s in (video.stream, audio.stream if audio else None) if s is not None]
                first_ms: float | None = None
                end_ms = 0.0
                for packet in container.demux(streams):
                    if stop.is_set():
                        return
                    if packet.dts is None or packet.time_base is None:
                        continue
                    dts = float(packet.dts * packet.time_base) * 1000.0
                    pts = float(packet.pts * packet.time_base) * 1000.0 if packet.pts is not None else dts
                    duration = float(packet.duration * packet.time_base) * 1000.0 if packet.duration else 0.0
                    if first_ms is None:
                        first_ms = dts
                    if base_ms is None:
                        base_ms = self.start_ms - dts
                    end_ms = max(end_ms, dts + (duration or 1000.0 / video.fps))
                    due = dts + base_ms
                    if not wait_until(clock, due, stop):
                        return
                    if packet.stream is video.stream:
                        items = video.items(packet, max(0, round(pts + base_ms)), max(0, round(due)), base_ms)
                    elif audio is not None:
                        items = audio.items(packet, max(0, round(due)))
                    else:
                        continue
                    if items:
                        sink.emit(items)
                if first_ms is None:
                    raise CaptureLostError(f"capture.file={str(self.path)!r}: no packets")
                assert base_ms is not None
                base_ms += end_ms - first_ms
                self.loops += 1
