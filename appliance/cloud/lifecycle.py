"""The device's cloud-stream lifecycle: a sans-IO state machine between the controller and the push.

Theory of operation
-------------------
The fleet controller asks for a stream (`StartStream`), keeps it wanted (`KeepAlive`) and ends it
(`StopStream`). `DeviceStreams` turns those messages, the push child's reports and the passing of time
into actions for its driver: `StartPush`/`StopPush` for the push child and `Send` for the control socket.
It does no I/O and reads no clock: every input carries `now` (the driver's monotonic clock, seconds).

A device pushes one cloud stream at a time (the single-stream constraint). The current stream moves
through the controller's statuses; each arrow sends an ``rtmp_stream_status``:

    start --> initializing --push_state--> connecting / streaming / reconnecting / error (any order)
    any of those --StopStream--> stopping --push_stopped--> stopped (gone)
    any of those --no keep-alive for deadman_s--> timeout (gone)
    any of those --durationLimit ms after start--> stopped, "duration limit reached" (gone)
    any state --StartStream, another streamId--> stopped, "replaced by <id>" (gone); the new one starts

"Gone" streams are forgotten at once: the status says how they ended, `StopPush` tells the driver to end
the push child, and a later `push_stopped` or `push_state` for them is stale and ignored. Only a
`StopStream` waits in ``stopping`` for the driver's `push_stopped`, so the controller hears "stopped"
when the push really ended. The driver must not forward a push child's reports after its `StopPush`
other than `push_stopped` (a restart reuses the streamId).

Messages about other streamIds never touch the current stream: a stale keep-alive gets an "error"
status for its own id, a stop for an unknown id a "stopped" one (stopping twice is no error).
A start for the current streamId with the same URL and source is a repeat: its status is re-reported
and it counts as a keep-alive; with another URL or source the push restarts.

Timers: the dead-man deadline (last keep-alive or start + `deadman_s`) and the duration limit (start +
``durationLimit``); `get_timer` gives the earlier, `handle_timer` fires it. A stream in ``stopping``
has no deadlines: it is already on its way out. Every input first fires the deadlines that passed, so
a keep-alive arriving at or after the deadline finds the stream already timed out, whatever order the
driver sees them in. The timers keep running while the control socket is down (the driver drops the
`Send`s); on reconnect `announce` re-reports the current stream, and a stream that ended meanwhile is
simply absent, which the controller reads as stopped.

Wire timestamps are wall-clock ms: ``now + wall_offset_s``, the offset given by the driver
(``time.time() - trio.current_time()`` at start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, assert_never

from appliance.cloud import protocol
from appliance.cloud.protocol import KeepAlive, StartStream, StopStream, StreamStats

__all__ = [
    "PUSH_STATES",
    "Action",
    "ActiveStream",
    "DeviceStreams",
    "Send",
    "StartPush",
    "StopPush",
]

PUSH_STATES: Final = ("connecting", "streaming", "reconnecting", "error")  # what push_state may report


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPush:
    """Start a push child sending Bus `source` to `url` for `stream_id`. `url` holds a stream key."""

    stream_id: str
    url: str = field(repr=False)
    source: str
    token: str = field(default="", repr=False)  # a WHIP endpoint's bearer token


@dataclass(frozen=True, slots=True, kw_only=True)
class StopPush:
    """End the push child of `stream_id`; `reason` is for the log."""

    stream_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Send `text` (an encoded device message) on the control socket, if it is up; else drop it."""

    text: str


Action = StartPush | StopPush | Send


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveStream:
    """The current cloud stream, as `DeviceStreams.active` shows it (a snapshot).

    Attributes:
        stream_id, app_id: The controller's ids.
        url: The ingest; holds the stream key, so it is left out of the repr.
        source: The Bus pushed.
        started_at: When it (re)started, driver clock seconds.
        last_seen: The last keep-alive (or start), driver clock seconds.
        state: Its status, one of `protocol.STATUSES` (never "stopped" or "timeout": those are gone).
        duration_limit_ms: The controller's limit, or None.
        video, audio: The controller's wishes, reported, not acted on.
        error: The push's last error text, while `state` is "error".
        stats: The push's last counters, if reported.
        media: The codecs, size and rate really pushed, if reported.
    """

    stream_id: str
    app_id: str
    url: str = field(repr=False)
    source: str
    started_at: float
    last_seen: float
    state: str = "initializing"
    duration_limit_ms: int | None = None
    video: Mapping[str, Any] | None = None
    audio: Mapping[str, Any] | None = None
    error: str | None = None
    stats: StreamStats | None = None
    media: Mapping[str, Mapping[str, object]] | None = None
    token: str = field(default="", repr=False)  # a WHIP endpoint's bearer token


class DeviceStreams:
    """The device's cloud-stream state machine (see the module docstring).

    Args:
        deadman_s: Stop a stream that had no keep-alive (or start) for this long.
        wall_offset_s: Added to `now` for wire timestamps (wall clock minus the driver's clock).

    Raises:
        ValueError: `deadman_s` is not positive.
    """

    def __init__(self, deadman_s: float = 60.0, *, wall_offset_s: float = 0.0) -> None:
        if not deadman_s > 0:
            raise ValueError(f"deadman_s={deadman_s!r}: want > 0")
        self.deadman_s = deadman_s
        self.wall_offset_s = wall_offset_s
        self._active: ActiveStream | None = None

    @property
    def active(self) -> ActiveStream | None:
        """The current stream, or None."""
        return self._active

    # --- inputs ------------------------------------------------------------------------------------

    def handle(self, message: StartStream | StopStream | KeepAlive, now: float) -> list[Action]:
        """Act on one controller message.

        Args:
            message: From `protocol.parse_controller_message`.
            now: The driver's clock, seconds.

        Returns:
            What to do, in order (deadlines that passed by `now` first).
        """
        actions = self._expire(now)
        match message:
            case StartStream():
                actions += self._start(message, now)
            case StopStream():
                actions += self._stop(message, now)
            case KeepAlive():
                actions += self._keep_alive(message, now)
            case _:  # pragma: no cover - mypy proves it unreachable
                assert_never(message)
        return actions

    def receive(self, text: str, now: float) -> list[Action]:
        """Parse one text frame from the controller and act on it; a bad frame gets an ``error`` reply.

        Args:
            text: The frame's text.
            now: The driver's clock, seconds.

        Returns:
            What to do, in order.
        """
        try:
            message = protocol.parse_controller_message(text)
        except protocol.MessageError as e:
            return [*self._expire(now), Send(text=protocol.error_reply(str(e), e.about, self._ms(now)))]
        return self.handle(message, now)

    def push_state(
        self,
        stream_id: str,
        state: str,
        now: float,
        error: str | None = None,
        stats: StreamStats | None = None,
    ) -> list[Action]:
        """The push child of `stream_id` reports its state; a change is sent as a status.

        Args:
            stream_id: Whose push. Reports for streams that are gone or stopping are ignored.
            state: One of `PUSH_STATES`.
            now: The driver's clock, seconds.
            error: What went wrong, for "error" (sent as errorDetails; never a URL).
            stats: The push's counters; kept, and sent with the next status.

        Returns:
            A status `Send` if the state changed, else nothing (after any deadlines that passed).

        Raises:
            ValueError: `state` is not one of `PUSH_STATES`.
        """
        if state not in PUSH_STATES:
            raise ValueError(f"push_state state={state!r}: want one of {', '.join(PUSH_STATES)}")
        actions = self._expire(now)
        current = self._active
        if current is None or current.stream_id != stream_id or current.state == "stopping":
            return actions
        changed = state != current.state
        current = dataclasses.replace(
            current,
            state=state,
            error=error if state == "error" else None,
            stats=stats if stats is not None else current.stats,
        )
        self._active = current
        if changed:
            actions.append(self._status(current, now))
        return actions

    def report(
        self,
        stream_id: str,
        now: float,
        stats: StreamStats,
        media: Mapping[str, Mapping[str, object]] | None = None,
    ) -> list[Action]:
        """The push's periodic counters: kept, and sent as a status (the controller's live view).

        Args:
            stream_id: Whose push. Reports for streams that are gone or stopping are ignored.
            now: The driver's clock, seconds.
            stats: Bitrate, fps, drops, duration.
            media: What really goes out (codecs, size, rate).

        Returns:
            The status with the stats (after any deadlines that passed), or nothing.
        """
        actions = self._expire(now)
        current = self._active
        if current is None or current.stream_id != stream_id or current.state == "stopping":
            return actions
        self._active = current = dataclasses.replace(current, stats=stats, media=media or current.media)
        actions.append(self._status(current, now))
        return actions

    def push_stopped(self, stream_id: str, now: float) -> list[Action]:
        """The push child of `stream_id` has ended, confirming a `StopStream`.

        Args:
            stream_id: Whose push.
            now: The driver's clock, seconds.

        Returns:
            The "stopped" status if `stream_id` was stopping, else nothing (pushes of streams that are
            gone, or replaced by a restart, were already reported).
        """
        actions = self._expire(now)
        current = self._active
        if current is not None and current.stream_id == stream_id and current.state == "stopping":
            self._active = None
            actions.append(self._status(current, now, state="stopped"))
        return actions

    def announce(self, now: float) -> list[Action]:
        """The control socket (re)connected: report every current stream, for the controller to reconcile.

        Args:
            now: The driver's clock, seconds.

        Returns:
            The current stream's status (after any deadlines that passed), or nothing.
        """
        actions = self._expire(now)
        if self._active is not None:
            actions.append(self._status(self._active, now))
        return actions

    # --- timers ------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline (driver clock seconds), or None: call `handle_timer` when it comes."""
        deadline, _ = self._next_deadline()
        return deadline

    def handle_timer(self, now: float) -> list[Action]:
        """Fire the deadlines that passed by `now`.

        Args:
            now: The driver's clock, seconds.

        Returns:
            `StopPush` and the final status of a stream that timed out or reached its duration limit.
        """
        return self._expire(now)

    # --- internals ---------------------------------------------------------------------------------

    def _ms(self, now: float) -> int:
        return round((now + self.wall_offset_s) * 1000)

    def _status(
        self, stream: ActiveStream, now: float, *, state: str | None = None, details: str | None = None
    ) -> Send:
        state = state or stream.state
        if details is None and state == "error":
            details = stream.error
        text = protocol.stream_status(
            stream.stream_id, stream.app_id, state, self._ms(now), details, stream.stats, stream.media
        )
        return Send(text=text)

    def _next_deadline(self) -> tuple[float | None, str]:
        current = self._active
        if current is None or current.state == "stopping":
            return None, ""
        deadline, why = current.last_seen + self.deadman_s, "deadman"
        if current.duration_limit_ms is not None:
            limit_at = current.started_at + current.duration_limit_ms / 1000
            if limit_at < deadline:
                deadline, why = limit_at, "limit"
        return deadline, why

    def _expire(self, now: float) -> list[Action]:
        deadline, why = self._next_deadline()
        current = self._active
        if deadline is None or now < deadline or current is None:
            return []
        self._active = None
        if why == "deadman":
            reason = f"no keep-alive for {self.deadman_s:g} s"
            return [
                StopPush(stream_id=current.stream_id, reason=reason),
                self._status(current, now, state="timeout", details=reason),
            ]
        reason = "duration limit reached"
        return [
            StopPush(stream_id=current.stream_id, reason=reason),
            self._status(current, now, state="stopped", details=reason),
        ]

    def _start(self, message: StartStream, now: float) -> list[Action]:
        actions: list[Action] = []
        current = self._active
        if current is not None and current.stream_id == message.stream_id:
            if current.state != "stopping" and (current.url, current.source, current.token) == (
                message.url,
                message.source,
                message.token,
            ):
                # A repeat (the controller retried, or reconciles after a reconnect): no restart.
                self._active = dataclasses.replace(current, last_seen=now)
                return [self._status(current, now)]
            if current.state != "stopping":
                actions.append(
                    StopPush(stream_id=current.stream_id, reason="restarted with a new URL or source")
                )
        elif current is not None:
            reason = f"replaced by {message.stream_id}"
            if current.state != "stopping":  # else its StopPush went out with the StopStream
                actions.append(StopPush(stream_id=current.stream_id, reason=reason))
            actions.append(self._status(current, now, state="stopped", details=reason))
        new = ActiveStream(
            stream_id=message.stream_id,
            app_id=message.app_id,
            url=message.url,
            source=message.source,
            started_at=now,
            last_seen=now,
            duration_limit_ms=message.duration_limit_ms,
            video=message.video,
            audio=message.audio,
            token=message.token,
        )
        self._active = new
        actions += [
            StartPush(stream_id=new.stream_id, url=new.url, source=new.source, token=new.token),
            self._status(new, now),
        ]
        return actions

    def _stop(self, message: StopStream, now: float) -> list[Action]:
        current = self._active
        if current is None or current.stream_id != message.stream_id:
            # Stopping what is not running is done already: say so, for the controller's books.
            text = protocol.stream_status(message.stream_id, message.app_id, "stopped", self._ms(now))
            return [Send(text=text)]
        if current.state == "stopping":
            return [self._status(current, now)]
        current = dataclasses.replace(current, state="stopping", error=None)
        self._active = current
        return [
            StopPush(stream_id=current.stream_id, reason="stopped by the controller"),
            self._status(current, now),
        ]

    def _keep_alive(self, message: KeepAlive, now: float) -> list[Action]:
        current = self._active
        if current is None or current.stream_id != message.stream_id:
            # A stale keep-alive (an old stream's, or one that crossed a stop) must not touch the current
            # stream; telling the controller lets it stop asking.
            details = f"unknown streamId {message.stream_id}"
            text = protocol.stream_status(message.stream_id, "", "error", self._ms(now), details)
            return [Send(text=text)]
        self._active = dataclasses.replace(current, last_seen=now)
        return [Send(text=protocol.keep_alive_ack(message.stream_id, message.ack_id, self._ms(now)))]
