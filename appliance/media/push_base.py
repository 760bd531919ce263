"""What every push egress shares, RTMP (`appliance.media.rtmp.push`) or WHIP
(`appliance.media.webrtc.push`): its state and counters, the figures the status page and the cloud
channel read, and the one-attempt `run` the egress supervisor repeats with its backoff.

A subclass implements `_attempt` (connect, send until something ends it, raise `PushError` saying why)
and keeps `stats`, `_bytes` and `_frames` up to date while it sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from appliance.bus import BusRegistry
from appliance.log import quote
from appliance.media.meter import RateMeter
from appliance.media.rtmp.publisher import describe_config

__all__ = ["PushBase", "PushError", "PushStats"]

log = logging.getLogger("appliance.push")


class PushError(Exception):
    """An attempt ended: the message says why (no URL secrets in it)."""


@dataclass
class PushStats:
    """What the status page and the cloud channel report about a push."""

    state: str = "starting"  # connecting | streaming | waiting (for the source) | reconnecting
    attempts: int = 0
    connected_at: float | None = None
    bytes_out: int = 0
    packets_out: int = 0
    dropped: int = 0
    last_error: str | None = None
    history: list[str] = field(default_factory=list)


class PushBase:
    """The shared half of a push. `url` is whatever the subclass shows for it (never a secret).

    Args:
        name: The target's name (config ``push.targets.name``, or the cloud stream id).
        source: The Bus to push, ``app/key``.
        buses: The process's Bus registry.
        on_state: Told every state change and failure (state, error): the cloud channel reports them.
    """

    protocol = "rtmp"
    url: object

    def __init__(
        self,
        name: str,
        source: str,
        buses: BusRegistry,
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.buses = buses
        self.on_state = on_state
        self.stats = PushStats()
        self._bytes = RateMeter()
        self._frames = RateMeter()
        self._started_at: float | None = None  # the first connect: the stream's duration counts from here
        self._dropped_base = 0  # drops of earlier attempts' subscriptions

    def _state(self, state: str) -> None:
        if state != self.stats.state:
            self.stats.state = state
            log.info("push.state target=%s state=%s", self.name, state)
            if self.on_state is not None:
                self.on_state(state, None)

    def _connected(self) -> None:
        """Call when an attempt starts sending."""
        self.stats.connected_at = trio.current_time()
        if self._started_at is None:
            self._started_at = self.stats.connected_at
        log.info("push.connected target=%s url=%s source=%s", self.name, self.url, self.source)

    def describe(self) -> dict[str, object]:
        s = self.stats
        return {
            "name": self.name,
            "protocol": self.protocol,
            "url": str(self.url),
            "source": self.source,
            "state": s.state,
            "attempts": s.attempts,
            "bytes_out": s.bytes_out,
            "packets_out": s.packets_out,
            "last_error": s.last_error,
            "dropped": s.dropped,
            "media": self.media(),
        }

    def media(self) -> dict[str, dict[str, object]]:
        """What really goes out: the source's codecs, size and rate (the cloud status reports them)."""
        bus = self.buses.get(self.source)
        if bus is None:
            return {}
        return {kind.name.lower(): describe_config(config) for kind, config in bus.configs.items()}

    def stream_stats(self, now: float) -> dict[str, int | float]:
        """Bitrate and frame rate over the last seconds, frames dropped, ms since the first connect
        (the keyword arguments of the cloud protocol's `StreamStats`)."""
        duration = 0.0 if self._started_at is None else now - self._started_at
        streaming = self.stats.state == "streaming"
        return {
            "bitrate_bps": self._bytes.bps(now) if streaming else 0,
            "fps": round(self._frames.per_second(now), 2) if streaming else 0.0,
            "dropped_frames": self.stats.dropped,
            "duration_ms": round(duration * 1000),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One attempt (the supervisor repeats it). Raises PushError when it ends."""
        task_status.started()
        self.stats.attempts += 1
        self._state("connecting" if self.stats.attempts == 1 else "reconnecting")
        try:
            await self._attempt()
        except PushError as e:
            self.stats.last_error = str(e)
            if self.on_state is not None:
                self.on_state("error", str(e))
            log.warning("push.failed target=%s url=%s error=%s", self.name, self.url, quote(str(e)))
            raise
        finally:
            self.stats.connected_at = None

    async def _attempt(self) -> None:
        raise NotImplementedError
