"""What every capture track shares: the sink it emits into, the clock, pacing, and the errors.

A source is one or more tracks (video, audio), each run by a worker thread. A track is blocking code
(PyAV reads, decodes and encodes) with a stop flag it checks at least once per frame. It emits configs,
metadata and packets into a `Sink`; the sink hands them to the trio thread, which owns the Bus producer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from appliance.media.packets import CodecConfig, Packet

__all__ = [
    "CaptureClock",
    "CaptureError",
    "CaptureLostError",
    "Item",
    "Sink",
    "Track",
    "wait_until",
]

Item = CodecConfig | Packet | Mapping[str, object]


class CaptureError(Exception):
    """Capture can't run as configured (the message names the key or device and says why)."""


class CaptureLostError(CaptureError):
    """The source went away while running: device unplugged or failing, helper process died, EOF."""


class CaptureClock:
    """Milliseconds of the monotonic clock since this clock was made: the capture timeline.

    One clock lives as long as the capture service, across restarts of its sources, so timestamps never
    go back.
    """

    def __init__(self) -> None:
        self._epoch_ns = time.monotonic_ns()

    def now_ms(self) -> float:
        return (time.monotonic_ns() - self._epoch_ns) / 1e6


class Sink(Protocol):
    """Where tracks put what they produce. Called from worker threads."""

    clock: CaptureClock

    def emit(self, items: Sequence[Item]) -> None:
        """Deliver items in order; raises CaptureError if the consumer is gone."""


class Track(Protocol):
    """One thread's worth of capture work."""

    name: str

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Produce until `stop` is set (return) or the source fails (raise CaptureLostError)."""

    def interrupt(self) -> None:
        """Unblock `run` if it is waiting on something other than a frame (kill a helper process)."""


def wait_until(clock: CaptureClock, due_ms: float, stop: threading.Event) -> bool:
    """Sleep until the clock reaches `due_ms`, waking at once when `stop` is set.

    Returns:
        False if stopped.
    """
    delay = (due_ms - clock.now_ms()) / 1000.0
    if delay > 0:
        return not stop.wait(delay)
    return not stop.is_set()
