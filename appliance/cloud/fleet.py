"""The fleet controller's core: one registry of devices and streams, one lifecycle controller, no I/O.

Theory of operation
-------------------
`StreamRegistry` is the single source of truth: which devices are known and connected, which stream
each device is pushing (at most one: the single-stream constraint), and how recent streams ended.
`StreamLifecycleController` moves streams through their lives. It is sans-IO: every input carries
`now` (the driver's monotonic clock, seconds) and returns actions for the driver: `SendTo` a device's
connection, `Close` a connection, `Ended` for the adapter that hosts the stream's ingest, and `Log` lines
(one structured line per transition). `get_timer`/`handle_timer` drive keep-alives and timeouts, so the
whole life of a stream can be replayed under a fake clock.

A stream's life on the controller:

    start --> initializing --device statuses--> connecting / streaming / reconnecting / error
    active --operator stop--> stopping --device says stopped (or stop_timeout_s)--> stopped
    active --max_missed keep-alives unanswered--> timeout
    active --device says stopped / timeout--> stopped / timeout
    active --another start with replace--> stopped, "replaced by <id>"

Keep-alives go out every `keepalive_s` with a fresh ackId; each must be answered within
`ack_timeout_s` or it counts as missed. An ack clears its keep-alive and every older one still pending
(out-of-order acks are fine; a duplicate or late ack is counted and ignored), and resets the missed
count. `max_missed` misses in a row time the stream out. The keep-alive clock keeps running while the
device's socket is down (nothing is sent, so each one is missed): that is the whole grace for a lost
socket. A device that reconnects (``hello``) is sent its stream's start again (the device treats a
repeat start as a keep-alive, or restarts a stream it lost in a reboot) and a keep-alive at once, so an
ack within the grace keeps the stream. Meanwhile the device's own dead-man timer stops a push nobody
keeps alive: neither side can leave an orphan.

Reconciliation: a device reporting a live status for a stream the registry does not have as active on
that device (the controller restarted, or the stream timed out while the socket was down) is told to
stop it (``orphans_stopped``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from appliance.cloud import protocol, reports
from appliance.cloud.protocol import MessageError, StreamStats
from appliance.media.rtmp.url import parse_rtmp_url
from appliance.media.whip_url import is_whip_url, parse_whip_url

__all__ = [
    "ENDED_STATES",
    "MODES",
    "Action",
    "Close",
    "Conflict",
    "Device",
    "DeviceOffline",
    "DuplicateStream",
    "Ended",
    "Log",
    "SendTo",
    "StartRefused",
    "StartRequest",
    "Stream",
    "StreamLifecycleController",
    "StreamRegistry",
    "Timing",
    "UnknownDevice",
]

MODES: Final = ("managed", "unmanaged")
ENDED_STATES: Final = ("stopped", "timeout")
_LIVE_STATES = ("initializing", "connecting", "streaming", "reconnecting", "error")
_HISTORY = 200  # ended streams kept for the API


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """The keep-alive contract (all seconds, but `max_missed`).

    Raises:
        ValueError: A duration is not positive or `max_missed` is below 1.
    """

    keepalive_s: float = 15.0
    ack_timeout_s: float = 10.0
    max_missed: int = 3
    stop_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("keepalive_s", "ack_timeout_s", "stop_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: want > 0")
        if self.max_missed < 1:
            raise ValueError(f"max_missed={self.max_missed!r}: want >= 1")

    @property
    def grace_s(self) -> float:
        """How long an unanswered stream lives at most: from its last ack to its timeout."""
        return self.max_missed * self.keepalive_s + self.ack_timeout_s


# --- the registry's records ------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Device:
    """A device the controller has heard ``hello`` from."""

    device_id: str
    conn: int | None = None  # the connection it talks on, while connected
    version: str = ""
    board: str = ""
    capabilities: tuple[str, ...] = ()
    first_seen: float = 0.0
    last_seen: float = 0.0
    connects: int = 0
    uptime_ms: int | None = None
    health: str | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def to_json(self, active: Stream | None) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "connected": self.connected,
            "version": self.version,
            "board": self.board,
            "capabilities": list(self.capabilities),
            "connects": self.connects,
            "uptimeMs": self.uptime_ms,
            "health": self.health,
            "stream": None if active is None else active.stream_id,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """What an operator (or the managed adapter) asks for.

    Attributes:
        stream_id: Unique among all streams the registry remembers.
        device_id: Which device pushes.
        url: Where it pushes (``rtmp://``/``rtmps://`` with the key, or a WHIP endpoint): never logged or
            shown.
        token: A WHIP endpoint's bearer token, or "": never logged or shown.
        mode: ``managed`` (the controller hosts the ingest) or ``unmanaged`` (the caller's URL).
        app_id, source, video, audio, duration_limit_ms: Passed on to the device.
    """

    stream_id: str
    device_id: str
    url: str = field(repr=False)
    mode: str = "unmanaged"
    app_id: str = ""
    source: str | None = None
    video: Mapping[str, Any] | None = None
    audio: Mapping[str, Any] | None = None
    duration_limit_ms: int | None = None
    token: str = field(default="", repr=False)


@dataclass(slots=True, kw_only=True)
class Stream:
    """One stream's record; `state` is one of `protocol.STATUSES`."""

    request: StartRequest
    state: str = "initializing"
    created_at: float = 0.0
    updated_at: float = 0.0
    ended_at: float | None = None
    end_reason: str | None = None
    error: str | None = None
    stats: StreamStats | None = None
    media: Mapping[str, Mapping[str, Any]] | None = None  # what the device really pushes
    missed: int = 0  # in a row
    missed_total: int = 0
    acks: int = 0
    ack_seq: int = 0
    pending: OrderedDict[str, float] = field(default_factory=OrderedDict)  # ackId -> deadline, oldest first
    next_keepalive: float = 0.0
    stop_deadline: float | None = None

    @property
    def stream_id(self) -> str:
        return self.request.stream_id

    @property
    def device_id(self) -> str:
        return self.request.device_id

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict[str, Any]:
        """The API's view (no URL: it holds the ingest's key)."""
        r = self.request
        return {
            "streamId": r.stream_id,
            "deviceId": r.device_id,
            "appId": r.app_id,
            "mode": r.mode,
            "source": r.source,
            "status": self.state,
            "active": self.active,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
            "error": self.error,
            "stats": None if self.stats is None else self.stats.to_json(),
            "media": None if self.media is None else {k: dict(v) for k, v in self.media.items()},
            "missedAcks": self.missed_total,
            "acks": self.acks,
            "durationLimit": r.duration_limit_ms,
        }


# --- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send `text` on connection `conn` (drop it if that connection is gone)."""

    conn: int
    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection `conn`."""

    conn: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ended:
    """Stream `stream_id` ended: its adapter releases what it holds (a managed ingest)."""

    stream_id: str
    mode: str
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class Log:
    """One structured log line: `event` and its fields (never a URL)."""

    event: str
    fields: Mapping[str, object]
    level: str = "info"


Action = SendTo | Close | Ended | Log


class StartRefused(Exception):
    """A start the registry cannot take; `status` is the HTTP status an API answers with."""

    status = 409


class UnknownDevice(StartRefused):
    status = 404


class DeviceOffline(StartRefused):
    status = 409


class DuplicateStream(StartRefused):
    status = 409


class Conflict(StartRefused):
    """The device already pushes `existing` (one stream per device)."""

    status = 409

    def __init__(self, message: str, existing: str) -> None:
        super().__init__(message)
        self.existing = existing


# --- the registry ----------------------------------------------------------------------------------


class StreamRegistry:
    """Devices and streams, with the one-active-stream-per-device rule enforced on every change."""

    def __init__(self) -> None:
        self.devices: dict[str, Device] = {}
        self.streams: OrderedDict[str, Stream] = OrderedDict()
        self._active: dict[str, str] = {}  # device_id -> stream_id
        self._conns: dict[int, str | None] = {}  # conn -> device_id (None until hello)

    def active_stream(self, device_id: str) -> Stream | None:
        stream_id = self._active.get(device_id)
        return None if stream_id is None else self.streams[stream_id]

    def active_streams(self) -> list[Stream]:
        return [self.streams[s] for s in self._active.values()]

    def check_start(self, request: StartRequest, *, replace: bool) -> Stream | None:
        """Whether `request` may start; returns the stream it replaces, if any.

        Raises:
            UnknownDevice, DeviceOffline, DuplicateStream, Conflict: It may not.
        """
        device = self.devices.get(request.device_id)
        if device is None:
            raise UnknownDevice(f"no device {request.device_id!r} has connected")
        if not device.connected:
            raise DeviceOffline(f"device {request.device_id!r} is not connected")
        if request.stream_id in self.streams:
            raise DuplicateStream(f"stream {request.stream_id!r} exists already; stream ids are never reused")
        current = self.active_stream(request.device_id)
        if current is not None and not replace:
            raise Conflict(
                f"device {request.device_id!r} already pushes stream {current.stream_id!r}; "
                "stop it first or ask to replace it",
                current.stream_id,
            )
        return current

    def add(self, stream: Stream) -> None:
        assert stream.device_id not in self._active, "one active stream per device"
        self.streams[stream.stream_id] = stream
        self._active[stream.device_id] = stream.stream_id

    def end(self, stream: Stream, state: str, reason: str, now: float) -> None:
        assert state in ENDED_STATES
        stream.state, stream.end_reason, stream.ended_at, stream.updated_at = state, reason, now, now
        stream.pending.clear()
        stream.stop_deadline = None
        if self._active.get(stream.device_id) == stream.stream_id:
            del self._active[stream.device_id]
        ended = [s for s in self.streams.values() if not s.active]
        for old in ended[: max(0, len(ended) - _HISTORY)]:
            del self.streams[old.stream_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": [d.to_json(self.active_stream(d.device_id)) for d in self.devices.values()],
            "streams": [s.to_json() for s in self.streams.values()],
        }


# --- the lifecycle controller ----------------------------------------------------------------------

COUNTERS: Final = (
    "starts",
    "conflicts",
    "stops",
    "acks",
    "missed_acks",
    "stale_acks",
    "timeouts",
    "socket_losses",
    "socket_recoveries",
    "orphans_stopped",
    "malformed",
    "device_errors",
)


class StreamLifecycleController:
    """Keep-alives, acks, timeouts and reconciliation over a `StreamRegistry` (module docstring).

    Args:
        timing: The keep-alive contract.
        wall_offset_s: Added to `now` for wire timestamps (wall clock minus the driver's clock).
    """

    def __init__(self, timing: Timing | None = None, *, wall_offset_s: float = 0.0) -> None:
        self.timing = timing or Timing()
        self.wall_offset_s = wall_offset_s
        self.registry = StreamRegistry()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # --- connections -------------------------------------------------------------------------------

    def connected(self, conn: int, now: float, *, device_id: str | None = None) -> list[Action]:
        """A device connection opened; `device_id` binds it (its token names one device), else hello does."""
        self.registry._conns[conn] = device_id
        return []

    def disconnected(self, conn: int, now: float) -> list[Action]:
        """A device connection closed."""
        device_id = self.registry._conns.pop(conn, None)
        device = self.registry.devices.get(device_id or "")
        if device is None or device.conn != conn:
            return []
        device.conn = None
        device.last_seen = now
        stream = self.registry.active_stream(device.device_id)
        fields: dict[str, object] = {"device": device.device_id}
        if stream is not None:
            self.counters["socket_losses"] += 1
            fields |= {"stream": stream.stream_id, "grace_s": self.timing.grace_s}
        return [Log("controller.device_disconnected", fields, "warning")]

    def receive(self, conn: int, text: str, now: float) -> list[Action]:
        """One text frame from connection `conn`; a bad frame gets an ``error`` reply and changes nothing."""
        if conn not in self.registry._conns:
            return []
        try:
            message = reports.parse_device_message(text)
        except MessageError as e:
            self.counters["malformed"] += 1
            return [
                SendTo(conn, protocol.error_reply(str(e), e.about, self._ms(now))),
                Log("controller.malformed", {"conn": conn, "error": str(e)}, "warning"),
            ]
        if isinstance(message, reports.Hello):
            return self._hello(conn, message, now)
        device_id = self.registry._conns[conn]
        device = self.registry.devices.get(device_id or "")
        if device is None or device.conn != conn:
            text = protocol.error_reply("say hello first", {"type": type(message).__name__}, self._ms(now))
            return [SendTo(conn, text)]
        device.last_seen = now
        match message:
            case reports.KeepAliveAck():
                return self._ack(device, message, now)
            case reports.StreamStatus():
                return self._status(device, message, now)
            case reports.DeviceStatus():
                device.uptime_ms, device.health = message.uptime_ms, message.health
                return []
            case reports.DeviceError():
                self.counters["device_errors"] += 1
                about = dict(message.about or {})
                return [
                    Log(
                        "controller.device_error",
                        {"device": device.device_id, "error": message.message, "about": about},
                        "warning",
                    )
                ]
        return []  # pragma: no cover - every message type is matched above

    # --- operator requests -------------------------------------------------------------------------

    def start(
        self, request: StartRequest, now: float, *, replace: bool = False
    ) -> tuple[Stream, list[Action]]:
        """Start `request` on its device.

        Returns:
            The new stream, and the actions (the start message, the replaced stream's end).

        Raises:
            StartRefused: Unknown or offline device, a reused stream id, or the device busy without
                `replace` (`Conflict`, naming the current stream).
            ValueError: The URL, mode or source is malformed.
        """
        if request.mode not in MODES:
            raise ValueError(f"mode={request.mode!r}: want one of {', '.join(MODES)}")
        problem = _url_problem(request.url)
        if problem:
            raise ValueError(f"url: {problem}")
        try:
            old = self.registry.check_start(request, replace=replace)
        except Conflict:
            self.counters["conflicts"] += 1
            raise
        actions: list[Action] = []
        if old is not None:
            actions += self._end(old, "stopped", f"replaced by {request.stream_id}", now, tell_device=False)
        stream = Stream(
            request=request, created_at=now, updated_at=now, next_keepalive=now + self.timing.keepalive_s
        )
        self.registry.add(stream)
        self.counters["starts"] += 1
        actions.append(self._send_start(stream, now))
        actions.append(self._log_state(stream, "new", "initializing", f"{request.mode} start"))
        return stream, actions

    def stop(self, stream_id: str, now: float, reason: str = "stopped by the operator") -> list[Action]:
        """Stop a stream; stopping an ended stream is no error (nothing happens).

        Raises:
            KeyError: No such stream.
        """
        stream = self.registry.streams[stream_id]
        if not stream.active or stream.state == "stopping":
            return []
        self.counters["stops"] += 1
        device = self.registry.devices[stream.device_id]
        if device.conn is None:
            # Nobody to tell: the device's dead-man timer ends the push once keep-alives stop.
            return self._end(
                stream, "stopped", f"{reason}; device offline, its dead-man timer ends the push", now
            )
        old = stream.state
        stream.state, stream.updated_at = "stopping", now
        stream.pending.clear()
        stream.stop_deadline = now + self.timing.stop_timeout_s
        r = stream.request
        return [
            SendTo(device.conn, reports.stop_stream(r.stream_id, r.app_id, self._ms(now))),
            self._log_state(stream, old, "stopping", reason),
        ]

    # --- timers ------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The next deadline (driver clock seconds), or None: call `handle_timer` when it comes."""
        deadlines = [d for s in self.registry.active_streams() for d in self._deadlines(s)]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Send the keep-alives that are due and count the acks that did not come."""
        actions: list[Action] = []
        for stream in self.registry.active_streams():
            actions += self._tick(stream, now)
        return actions

    # --- internals ---------------------------------------------------------------------------------

    def _ms(self, now: float) -> int:
        return round((now + self.wall_offset_s) * 1000)

    def _deadlines(self, stream: Stream) -> list[float]:
        if stream.stop_deadline is not None:
            return [stream.stop_deadline]
        out = [stream.next_keepalive, *stream.pending.values()]
        limit = stream.request.duration_limit_ms
        if limit is not None:
            out.append(stream.created_at + limit / 1000 + self.timing.ack_timeout_s)
        return out

    def _tick(self, stream: Stream, now: float) -> list[Action]:
        if stream.stop_deadline is not None:
            if now < stream.stop_deadline:
                return []
            why = "the device did not confirm the stop; its dead-man timer ends the push"
            return self._end(stream, "stopped", why, now, tell_device=False)
        actions: list[Action] = []
        for ack_id, deadline in list(stream.pending.items()):
            if deadline > now:
                break
            del stream.pending[ack_id]
            stream.missed += 1
            stream.missed_total += 1
            self.counters["missed_acks"] += 1
            actions.append(
                Log(
                    "controller.ack_missed",
                    {
                        "stream": stream.stream_id,
                        "device": stream.device_id,
                        "ack": ack_id,
                        "in_a_row": stream.missed,
                    },
                    "warning",
                )
            )
            if stream.missed >= self.timing.max_missed:
                self.counters["timeouts"] += 1
                why = f"{stream.missed} keep-alives unanswered"
                return actions + self._end(stream, "timeout", why, now)
        limit = stream.request.duration_limit_ms
        if limit is not None and now >= stream.created_at + limit / 1000 + self.timing.ack_timeout_s:
            return actions + self._end(stream, "stopped", "duration limit reached", now)
        if now >= stream.next_keepalive:
            actions += self._keep_alive(stream, now)
        return actions

    def _keep_alive(self, stream: Stream, now: float) -> list[Action]:
        stream.ack_seq += 1
        ack_id = f"{stream.stream_id}:{stream.ack_seq}"
        stream.pending[ack_id] = now + self.timing.ack_timeout_s
        stream.next_keepalive = now + self.timing.keepalive_s
        device = self.registry.devices[stream.device_id]
        if device.conn is None:
            return []  # unsent, so it will be missed: the socket-loss grace runs down
        return [SendTo(device.conn, reports.keep_alive(stream.stream_id, ack_id, self._ms(now)))]

    def _send_start(self, stream: Stream, now: float) -> SendTo:
        r = stream.request
        conn = self.registry.devices[r.device_id].conn
        assert conn is not None
        limit = r.duration_limit_ms
        if limit is not None:  # a re-sent start asks only for what is left
            limit = max(1, limit - round((now - stream.created_at) * 1000))
        text = reports.start_stream(
            r.stream_id,
            r.app_id,
            r.url,
            self._ms(now),
            source=r.source,
            video=r.video,
            audio=r.audio,
            duration_limit_ms=limit,
            token=r.token,
        )
        return SendTo(conn, text)

    def _end(
        self, stream: Stream, state: str, reason: str, now: float, *, tell_device: bool = True
    ) -> list[Action]:
        old = stream.state
        self.registry.end(stream, state, reason, now)
        actions: list[Action] = []
        device = self.registry.devices.get(stream.device_id)
        if tell_device and device is not None and device.conn is not None and old != "stopping":
            r = stream.request
            actions.append(SendTo(device.conn, reports.stop_stream(r.stream_id, r.app_id, self._ms(now))))
        actions += [
            Ended(stream.stream_id, stream.request.mode, state, reason),
            self._log_state(stream, old, state, reason),
        ]
        return actions

    def _log_state(self, stream: Stream, old: str, new: str, reason: str | None) -> Log:
        fields: dict[str, object] = {
            "stream": stream.stream_id,
            "device": stream.device_id,
            "mode": stream.request.mode,
            "from": old,
            "to": new,
        }
        if reason:
            fields["reason"] = reason
        return Log("controller.stream", fields, "warning" if new in ("timeout", "error") else "info")

    def _hello(self, conn: int, hello: reports.Hello, now: float) -> list[Action]:
        bound = self.registry._conns.get(conn)
        if bound is not None and bound != hello.device_id:
            return [Close(conn, f"this connection's token belongs to device {bound!r}")]
        actions: list[Action] = []
        device = self.registry.devices.get(hello.device_id)
        if device is None:
            device = self.registry.devices[hello.device_id] = Device(
                device_id=hello.device_id, first_seen=now
            )
        elif device.conn is not None and device.conn != conn:
            actions.append(Close(device.conn, "the device connected again"))
            self.registry._conns.pop(device.conn, None)
        was_down = device.conn is None
        self.registry._conns[conn] = hello.device_id
        device.conn, device.last_seen = conn, now
        device.version, device.board, device.capabilities = hello.version, hello.board, hello.capabilities
        device.connects += 1
        actions.append(
            Log(
                "controller.device_connected",
                {
                    "device": device.device_id,
                    "version": device.version,
                    "board": device.board,
                    "connects": device.connects,
                },
            )
        )
        stream = self.registry.active_stream(device.device_id)
        if stream is not None and stream.state != "stopping":
            if was_down and device.connects > 1:
                self.counters["socket_recoveries"] += 1
            # Adopt (the device still pushes it) or restart (it lost it in a reboot): a repeat start
            # does either; the keep-alive at once lets the ack clear the misses run up while away.
            actions.append(self._send_start(stream, now))
            actions += self._keep_alive(stream, now)
            actions.append(
                Log(
                    "controller.stream_readopted",
                    {
                        "stream": stream.stream_id,
                        "device": device.device_id,
                        "missed_in_a_row": stream.missed,
                    },
                )
            )
        elif stream is not None:
            r = stream.request
            actions.append(SendTo(conn, reports.stop_stream(r.stream_id, r.app_id, self._ms(now))))
        return actions

    def _ack(self, device: Device, ack: reports.KeepAliveAck, now: float) -> list[Action]:
        stream = self.registry.streams.get(ack.stream_id)
        if stream is None or not stream.active or stream.device_id != device.device_id:
            self.counters["stale_acks"] += 1
            return []
        if ack.ack_id not in stream.pending:
            self.counters["stale_acks"] += 1  # a duplicate, one answered after it was missed, or junk
            return []
        while stream.pending:  # this one and every older one: the device is alive
            ack_id, _ = stream.pending.popitem(last=False)
            if ack_id == ack.ack_id:
                break
        stream.missed = 0
        stream.acks += 1
        self.counters["acks"] += 1
        return []

    def _status(self, device: Device, status: reports.StreamStatus, now: float) -> list[Action]:
        stream = self.registry.streams.get(status.stream_id)
        if stream is None or not stream.active or stream.device_id != device.device_id:
            if status.status in _LIVE_STATES and status.status != "error":
                # The device pushes something nobody here keeps alive: stop it now, not at its dead-man.
                self.counters["orphans_stopped"] += 1
                assert device.conn is not None
                return [
                    SendTo(device.conn, reports.stop_stream(status.stream_id, status.app_id, self._ms(now))),
                    Log(
                        "controller.orphan_stopped",
                        {"stream": status.stream_id, "device": device.device_id},
                        "warning",
                    ),
                ]
            return []
        if status.stats is not None:
            stream.stats = status.stats
        if status.media is not None:
            stream.media = status.media
        if status.status in ENDED_STATES:
            reason = status.error_details or f"the device reports {status.status}"
            if status.status == "timeout":
                self.counters["timeouts"] += 1
            return self._end(stream, status.status, reason, now, tell_device=False)
        if stream.state == "stopping" or status.status == stream.state:
            return []
        old = stream.state
        stream.state, stream.updated_at = status.status, now
        stream.error = status.error_details if status.status == "error" else None
        return [self._log_state(stream, old, status.status, stream.error)]


def _url_problem(url: str) -> str | None:
    try:
        (parse_whip_url if is_whip_url(url) else parse_rtmp_url)(url)
    except ValueError as e:
        return str(e)
    return None
