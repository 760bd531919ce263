"""Capture timing: one clock for every source, device timestamps mapped onto it, keyframe rate limits.

Theory of operation
-------------------
Every packet the capture subsystem produces carries a timestamp on one timeline: milliseconds of a
monotonic clock since the capture service was created. Restarting a source (a camera re-plugged, the
capture child restarted by its supervisor) keeps the clock, so the timeline never steps back. Audio and
video are stamped on the same clock, which is what keeps them in sync.

Devices stamp their own frames (V4L2 buffers carry the kernel's capture time, ALSA the time of the period).
Those stamps have the right spacing but an unknown origin. `DeviceTimeline` anchors the first stamp to the
clock's "now" and follows the device from there, so frame spacing comes from the device, not from when a
thread happened to be scheduled. If the device clock and ours drift apart by more than `max_drift_ms`
(a device that restarted its clock, a driver that stamps nonsense) the timeline re-anchors on "now".

`KeyframeGate` decides when a keyframe asked for by a viewer (WebRTC PLI, a new MoQ subscriber) is
forced: at once when none was made in the last `min_interval_s`, else at the end of that interval, and
not at all when the encoder makes one on its own in the meantime. A storm of requests from many viewers
therefore costs at most one extra keyframe per interval.

Nothing here reads a clock by itself: callers pass `now`.
"""

from __future__ import annotations

__all__ = ["DeviceTimeline", "KeyframeGate"]


class DeviceTimeline:
    """Map a device's timestamps (seconds, any origin) onto the capture clock (ms).

    Args:
        max_drift_ms: How far the mapped time may run from the clock before the timeline re-anchors.
        min_step_ms: The smallest step between two mapped timestamps (video wants strictly increasing
            times; 0 allows equal ones).
    """

    def __init__(self, *, max_drift_ms: float = 500.0, min_step_ms: int = 1) -> None:
        self._max_drift_ms = max_drift_ms
        self._min_step_ms = min_step_ms
        self._origin: tuple[float, float] | None = None  # (device seconds, clock ms) of the anchor
        self._last: int | None = None
        self.reanchors = 0

    def map(self, device_s: float | None, now_ms: float) -> int:
        """The clock time of a frame the device stamped `device_s` (None: unstamped, use `now_ms`).

        Args:
            device_s: The device's timestamp in seconds.
            now_ms: The capture clock when the frame arrived.

        Returns:
            A timestamp in ms that is at least `min_step_ms` after the previous one.
        """
        if device_s is None:
            mapped = now_ms
        else:
            if self._origin is None:
                self._origin = (device_s, now_ms)
            mapped = self._origin[1] + (device_s - self._origin[0]) * 1000.0
            if abs(mapped - now_ms) > self._max_drift_ms:
                self.reanchors += 1
                self._origin = (device_s, now_ms)
                mapped = now_ms
        ts = round(mapped)
        if self._last is not None and ts < self._last + self._min_step_ms:
            ts = self._last + self._min_step_ms
        self._last = ts
        return ts


class KeyframeGate:
    """Rate-limit forced keyframes.

    Args:
        min_interval_s: At most one forced keyframe in this many seconds.
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s={min_interval_s}: want >= 0")
        self._min_interval_s = min_interval_s
        self._pending = False
        self._last_s: float | None = None
        self.requests = 0
        self.forced = 0

    @property
    def pending(self) -> bool:
        """A request is waiting for a keyframe."""
        return self._pending

    def request(self) -> None:
        """Ask for a keyframe (cheap; safe to call for every PLI)."""
        self.requests += 1
        self._pending = True

    def should_force(self, now_s: float) -> bool:
        """Whether the frame about to be encoded at `now_s` must be a keyframe; counts it if so."""
        if not self._pending:
            return False
        if self._last_s is not None and now_s - self._last_s < self._min_interval_s:
            return False
        self.forced += 1
        self._pending = False
        self._last_s = now_s
        return True

    def keyframe_made(self, now_s: float) -> None:
        """The encoder made a keyframe (forced or on its own): pending requests are served by it."""
        self._pending = False
        self._last_s = now_s
