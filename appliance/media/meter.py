"""A bit-rate meter: bits per second over the last few seconds, from byte counts and a caller's clock."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RateMeter"]


@dataclass
class RateMeter:
    """Bytes in, bits per second out, over a sliding window of half-second samples.

    Pure: the caller passes `now` (trio.current_time() in the drivers).
    """

    window_s: float = 5.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    total: int = 0

    def add(self, now: float, size: int) -> None:
        self.total += size
        if not self.samples or now - self.samples[-1][0] >= 0.5:
            self.samples.append((now, self.total))
            while len(self.samples) > 2 and now - self.samples[1][0] > self.window_s:
                del self.samples[0]

    def bps(self, now: float) -> int:
        return int(self.per_second(now) * 8)

    def per_second(self, now: float) -> float:
        """Units added per second over the window (bytes, or frames when each add is 1)."""
        if len(self.samples) < 2 or now - self.samples[-1][0] > self.window_s:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
