"""The synthetic camera: lavfi testsrc2 (moving colour bars) with the wall-clock time drawn in, and a sine.

It is what `make run` shows on a machine without a camera, and what the tests decode: the drawn clock
proves the picture moves and lets a test read when a frame was made. The PyAV wheels' FFmpeg has no
drawtext filter, so the digits come from `appliance.media.clockfont`.

One thread paces the frames on the capture clock and makes each frame's sound with it, from one start
time, so audio and video line up: video frame n is stamped start + n/fps, audio sample s start + s/rate.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

import av
from av.filter import Graph

from appliance.media import clockfont
from appliance.media.capture.tracks import CaptureClock, Item, Sink, wait_until
from appliance.media.encode import AudioEncoder, VideoEncoder
from appliance.media.packets import CodecConfig

__all__ = ["SyntheticAudio", "SyntheticVideo", "clock_position", "clock_text", "draw_clock"]

log = logging.getLogger("appliance.capture")

# A frame later than this behind its slot is skipped rather than sent late (a starved CPU must not make
# the picture lag further and further behind real time).
_MAX_LATE_FRAMES = 5


def clock_position(width: int, height: int) -> tuple[int, int, int]:
    """Where the clock is drawn in a picture of this size: (x, y, scale)."""
    scale = max(1, height // 180)
    return 8 * scale, 8 * scale, scale


def clock_text(epoch_s: float) -> str:
    """The text drawn for a wall-clock time: ``YYYY-MM-DD HH:MM:SS.mmm`` in UTC."""
    t = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _wall_s(clock: CaptureClock, ts_ms: float) -> float:
    return time.time() + (ts_ms - clock.now_ms()) / 1000.0


def draw_clock(frame: av.VideoFrame, x: int, y: int, text: str, scale: int) -> None:
    """Draw `text` into a yuv420p frame: glyphs into the luma plane, the box neutral grey in chroma (else
    the colour bars beneath would tint it)."""
    luma = frame.planes[0]
    clockfont.draw_text(memoryview(luma), luma.line_size, x, y, text, scale)
    width, height = clockfont.text_size(len(text), scale)
    x0, x1 = x // 2, (x + width + 1) // 2
    neutral = b"\x80" * (x1 - x0)
    for index in (1, 2):
        plane = frame.planes[index]
        view = memoryview(plane)
        for row in range(y // 2, (y + height + 1) // 2):
            start = row * plane.line_size
            view[start + x0 : start + x1] = neutral


class SyntheticVideo:
    """testsrc2 frames with the time drawn in, encoded by `encoder`; with `audio`, its sound too."""

    name = "video"

    def __init__(
        self,
        encoder: VideoEncoder,
        *,
        width: int,
        height: int,
        fps: int,
        start_ms: float,
        audio: SyntheticAudio | None = None,
    ) -> None:
        self.encoder = encoder
        self.audio = audio
        self.width = width
        self.height = height
        self.fps = fps
        self.start_ms = start_ms

    def interrupt(self) -> None:
        pass

    def run(self, sink: Sink, stop: threading.Event) -> None:
        graph = Graph()
        src = graph.add("testsrc2", f"size={self.width}x{self.height}:rate={self.fps}")
        fmt = graph.add("format", "yuv420p")
        out = graph.add("buffersink")
        src.link_to(fmt)
        fmt.link_to(out)
        graph.configure()
        x, y, scale = clock_position(self.width, self.height)
        clock = sink.clock
        slot = 0
        skipped = 0
        while not stop.is_set():
            due = self.start_ms + slot * 1000.0 / self.fps
            late = clock.now_ms() - due
            if late > _MAX_LATE_FRAMES * 1000.0 / self.fps:
                behind = int(late * self.fps / 1000.0)
                slot += behind
                skipped += behind
                log.warning("capture.frames_skipped track=video frames=%d total=%d", behind, skipped)
                continue
            if not wait_until(clock, due, stop):
                return
            frame = out.pull()
            assert isinstance(frame, av.VideoFrame)
            ts = round(due)
            draw_clock(frame, x, y, clock_text(_wall_s(clock, ts)), scale)
            items: list[Item] = list(self.encoder.encode(frame, ts))
            if self.audio is not None:
                # The sound of this frame's interval rides along: one hand-off to trio per frame. Its
                # config goes ahead of the first video packet, so a recording's first segment starts
                # with both (a config arriving later would end that segment at once).
                audio = self.audio.produce_until(due + 1000.0 / self.fps)
                configs = [i for i in audio if isinstance(i, CodecConfig)]
                items = configs + items + [i for i in audio if not isinstance(i, CodecConfig)]
            if items:
                sink.emit(items)
            slot += 1


class SyntheticAudio:
    """A 440 Hz sine with a short 1760 Hz beep every second, as AAC.

    Not a track of its own: `SyntheticVideo` makes each frame's sound in its thread and hands both to
    trio together (a second thread cost more CPU than the audio encode).
    """

    def __init__(self, encoder: AudioEncoder, *, start_ms: float) -> None:
        self.encoder = encoder
        self.start_ms = start_ms
        self._graph: Graph | None = None
        self._out: Any = None
        self._samples = 0

    def _open(self) -> None:
        rate = self.encoder.sample_rate
        graph = Graph()
        src = graph.add("sine", f"frequency=440:beep_factor=4:sample_rate={rate}:samples_per_frame=1024")
        # The encoder's own format (planar float, mono), converted once in the graph.
        fmt = graph.add("aformat", f"sample_fmts=fltp:channel_layouts=mono:sample_rates={rate}")
        out = graph.add("abuffersink")
        src.link_to(fmt)
        fmt.link_to(out)
        graph.configure()
        self._graph = graph  # the sink is only valid while its graph lives
        self._out = out

    def produce_until(self, until_ms: float) -> list[Item]:
        """The audio that starts before `until_ms` and was not produced yet (the config first, once)."""
        items: list[Item] = []
        if self._out is None:
            self._open()
            items.append(self.encoder.config)
        rate = self.encoder.sample_rate
        while (ts := self.start_ms + self._samples * 1000.0 / rate) < until_ms:
            frame = self._out.pull()
            assert isinstance(frame, av.AudioFrame)
            items.extend(self.encoder.encode(frame, round(ts)))
            self._samples += frame.samples
        return items
