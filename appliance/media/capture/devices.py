"""Tracks for real devices: V4L2 cameras, ALSA microphones, and Raspberry Pi cameras through rpicam-vid.

None of these can run on the development machine (no camera, no sound card, no Pi). They are written so
that the part that differs per device is just where the bytes come from: `V4l2Video` takes the PyAV
opener as a parameter, and `RpicamVideo` runs whatever command it is given, so the tests drive the same
code with a file in place of /dev/video0 and a script in place of rpicam-vid.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any

import av

from appliance.media.capture.annexb import AnnexBTranslator
from appliance.media.capture.timing import DeviceTimeline
from appliance.media.capture.tracks import CaptureError, CaptureLostError, Item, Sink
from appliance.media.encode import AudioEncoder, VideoEncoder

__all__ = ["AlsaAudio", "RpicamVideo", "V4l2Video", "rpicam_command"]

log = logging.getLogger("appliance.capture")

Opener = Callable[..., Any]


class V4l2Video:
    """A V4L2 camera through FFmpeg's video4linux2 demuxer.

    H.264 from the camera passes through (parameter sets moved out of band, nothing re-encoded); MJPEG and
    raw frames are decoded and encoded with `encoder`.

    Args:
        path: The device node.
        input_format: FFmpeg's name for the negotiated format ("h264", "mjpeg", "yuyv422", "nv12", ...).
        width, height, fps: The negotiated mode.
        encoder: None for H.264 passthrough.
        open_input: `av.open`, or a stand-in in tests.
    """

    name = "video"

    def __init__(
        self,
        path: str,
        *,
        input_format: str,
        width: int,
        height: int,
        fps: float,
        encoder: VideoEncoder | None,
        open_input: Opener = av.open,
        format_name: str = "video4linux2",
    ) -> None:
        self.path = path
        self.input_format = input_format
        self.width = width
        self.height = height
        self.fps = fps
        self.encoder = encoder
        self.open_input = open_input
        self.format_name = format_name
        self.frames = 0

    def interrupt(self) -> None:
        pass

    def _options(self) -> dict[str, str]:
        return {
            "input_format": self.input_format,
            "video_size": f"{self.width}x{self.height}",
            "framerate": f"{self.fps:g}",
        }

    def run(self, sink: Sink, stop: threading.Event) -> None:
        try:
            container = self.open_input(self.path, format=self.format_name, options=self._options())
        except (OSError, av.error.FFmpegError) as e:
            raise CaptureLostError(f"capture.device={self.path!r}: cannot open: {e}") from e
        timeline = DeviceTimeline()
        translator = AnnexBTranslator(fps=self.fps) if self.encoder is None else None
        clock = sink.clock
        with container:
            stream = container.streams.video[0]
            try:
                for packet in container.demux(stream):
                    if stop.is_set():
                        return
                    if packet.size == 0:
                        continue
                    device_s = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    ts = timeline.map(device_s, clock.now_ms())
                    if translator is not None:
                        unit = translator.translate(bytes(packet), pts_ms=ts)
                        items: list[Item] = list(unit.items())
                    else:
                        assert self.encoder is not None
                        items = []
                        for frame in packet.decode():
                            items.extend(self.encoder.encode(frame, ts))
                    self.frames += 1
                    if items:
                        sink.emit(items)
            except (OSError, av.error.FFmpegError) as e:
                raise CaptureLostError(f"capture.device={self.path!r}: read failed: {e}") from e
        if not stop.is_set():
            raise CaptureLostError(f"capture.device={self.path!r}: the device stopped sending frames")


class AlsaAudio:
    """An ALSA capture device (`capture.audio_device`, like "hw:1,0" or "plughw:CARD=Device"), as AAC."""

    name = "audio"

    def __init__(
        self,
        device: str,
        encoder: AudioEncoder,
        *,
        open_input: Opener = av.open,
        format_name: str = "alsa",
    ) -> None:
        self.device = device
        self.encoder = encoder
        self.open_input = open_input
        self.format_name = format_name

    def interrupt(self) -> None:
        pass

    def run(self, sink: Sink, stop: threading.Event) -> None:
        options = {"sample_rate": str(self.encoder.sample_rate), "channels": str(self.encoder.channels)}
        try:
            container = self.open_input(self.device, format=self.format_name, options=options)
        except (OSError, av.error.FFmpegError) as e:
            raise CaptureLostError(f"capture.audio_device={self.device!r}: cannot open: {e}") from e
        sink.emit([self.encoder.config])
        # Audio is stamped by counting samples from an anchor on the capture clock; the timeline only
        # notices when the device's stamps and ours part (lost periods after an overrun) to re-anchor.
        timeline = DeviceTimeline(max_drift_ms=200.0, min_step_ms=0)
        clock = sink.clock
        with container:
            stream = container.streams.audio[0]
            try:
                for packet in container.demux(stream):
                    if stop.is_set():
                        return
                    device_s = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    before = timeline.reanchors
                    ts = timeline.map(device_s, clock.now_ms())
                    if timeline.reanchors != before:
                        log.warning("capture.audio_resync device=%s", self.device)
                        self.encoder.reset_clock()
                    packets = []
                    for frame in packet.decode():
                        packets.extend(self.encoder.encode(frame, ts))
                    if packets:
                        sink.emit(packets)
            except (OSError, av.error.FFmpegError) as e:
                raise CaptureLostError(f"capture.audio_device={self.device!r}: read failed: {e}") from e


def i420_frame(data: memoryview, width: int, height: int) -> av.VideoFrame:
    """A yuv420p frame from tightly packed I420 bytes (Y, then U, then V; no row padding)."""
    frame = av.VideoFrame(width, height, "yuv420p")
    offset = 0
    for index, (w, h) in enumerate(((width, height), (width // 2, height // 2), (width // 2, height // 2))):
        plane = frame.planes[index]
        size = w * h
        dst = memoryview(plane)
        if plane.line_size == w:
            dst[:size] = data[offset : offset + size]
        else:  # FFmpeg pads rows to its alignment: copy row by row
            for row in range(h):
                start = offset + row * w
                dst[row * plane.line_size : row * plane.line_size + w] = data[start : start + w]
        offset += size
    return frame


def rpicam_command(configured: str) -> str | None:
    """The rpicam-vid executable: the configured one, else libcamera-vid (Raspberry Pi OS before 2024)."""
    for name in (configured, "libcamera-vid") if configured == "rpicam-vid" else (configured,):
        found = shutil.which(name)
        if found:
            return found
    return None


class RpicamVideo:
    """A Raspberry Pi CSI camera: rpicam-vid writes to a pipe, we read it.

    Modes: "yuv420" (raw I420 frames, encoded here with `encoder`; keyframe requests and bit rate changes
    work) or "h264" (rpicam-vid drives the Pi's hardware encoder itself; its GOP and rate are fixed for
    the life of the process).

    Args:
        command: The executable.
        mode: "yuv420" or "h264".
        width, height, fps: The mode to ask for.
        camera: libcamera's camera index.
        encoder: The encoder for "yuv420".
        gop, bitrate_bps, profile: For "h264".
    """

    name = "video"

    def __init__(
        self,
        command: str,
        *,
        mode: str,
        width: int,
        height: int,
        fps: float,
        camera: int,
        encoder: VideoEncoder | None,
        gop: int,
        bitrate_bps: int,
        profile: str,
    ) -> None:
        if mode not in ("yuv420", "h264"):
            raise ValueError(f"mode={mode!r}: want yuv420 or h264")
        if mode == "yuv420" and encoder is None:
            raise ValueError("yuv420 mode needs an encoder")
        self.command = command
        self.mode = mode
        self.width = width
        self.height = height
        self.fps = fps
        self.camera = camera
        self.encoder = encoder
        self.gop = gop
        self.bitrate_bps = bitrate_bps
        self.profile = profile
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)

    def argv(self) -> list[str]:
        """The rpicam-vid command line (documented options of rpicam-apps)."""
        args = [
            self.command, "-t", "0", "-n", "--camera", str(self.camera),
            "--width", str(self.width), "--height", str(self.height), "--framerate", f"{self.fps:g}",
            "--flush", "-o", "-",
        ]  # fmt: skip
        if self.mode == "yuv420":
            args += ["--codec", "yuv420"]
        else:
            args += [
                "--codec", "h264", "--inline", "--intra", str(self.gop),
                "--bitrate", str(self.bitrate_bps), "--profile", self.profile,
            ]  # fmt: skip
        return args

    def interrupt(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _why(self, proc: subprocess.Popen[bytes]) -> str:
        code = proc.wait()
        tail = next((line for line in reversed(self._stderr) if line.strip()), "")
        return f"{self.command} exited with status {code}" + (f": {tail}" if tail else "")

    def run(self, sink: Sink, stop: threading.Event) -> None:
        try:
            proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as e:
            raise CaptureError(f"capture.rpicam_command={self.command!r}: cannot run: {e.strerror}") from e
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        reader = threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True)
        reader.start()
        try:
            if self.mode == "yuv420":
                self._run_yuv(proc.stdout, sink, stop)
            else:
                self._run_h264(proc.stdout, sink, stop)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            reader.join(timeout=1.0)
        if not stop.is_set():
            raise CaptureLostError(self._why(proc))

    def _run_yuv(self, out: IO[bytes], sink: Sink, stop: threading.Event) -> None:
        # I420 as rpicam-vid writes it with --codec yuv420: full Y plane, then U and V at half size, rows
        # unpadded (the widths we ask for are multiples of 64, where the ISP adds no row padding).
        size = self.width * self.height * 3 // 2
        assert self.encoder is not None
        clock = sink.clock
        timeline = DeviceTimeline()
        buf = bytearray(size)
        view = memoryview(buf)
        while not stop.is_set():
            got = 0
            while got < size:
                n = out.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    return
                got += n
            ts = timeline.map(None, clock.now_ms())
            frame = i420_frame(view, self.width, self.height)
            items: list[Item] = list(self.encoder.encode(frame, ts))
            if items:
                sink.emit(items)

    def _run_h264(self, out: IO[bytes], sink: Sink, stop: threading.Event) -> None:
        translator = AnnexBTranslator(fps=self.fps)
        clock = sink.clock
        timeline = DeviceTimeline()
        try:
            container = av.open(out, "r", format="h264", options={"framerate": f"{self.fps:g}"})
        except av.error.FFmpegError:
            return  # the process died before writing a header; run() reports why
        with container:
            try:
                for packet in container.demux(container.streams.video[0]):
                    if stop.is_set():
                        return
                    if packet.size == 0:
                        continue
                    unit = translator.translate(bytes(packet), pts_ms=timeline.map(None, clock.now_ms()))
                    items = list(unit.items())
                    if items:
                        sink.emit(items)
            except av.error.FFmpegError:
                return
