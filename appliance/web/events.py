"""``GET /api/events``: the status page's live feed, as server-sent events (HTML Living Standard, 9.2).

Theory of operation
-------------------
Every ``interval_s`` (1 s) each open stream gets an ``event: status`` whose data is one JSON snapshot of
the device: name, board, version, uptime, health (as ``GET /api/health`` says it), every supervised child
with its path, state, restarts and last error, the machine's vital signs (`appliance.hw.sysinfo`), the
streams (the items of ``GET /api/streams``) and what the recorder is doing. A new stream first gets
``retry:`` (how long the browser waits before reconnecting) and an ``event: history`` with the recent
bitrate and CPU points for the page's plot; a browser reconnecting with ``Last-Event-ID`` already has
them and does not get them again. Each status event carries an ``id:`` (the snapshot's sequence number).

The snapshot is built once per interval however many pages are open: :class:`StatusFeed` keeps the
newest one, and a stream that wakes up within half an interval of it takes it as it is (all streams wake
together, at the newest snapshot's time plus the interval, so the first to wake builds and the others
share). Nothing is built while no page is open. The blocking reads (procfs, statvfs, the recordings
directory) run in a worker thread, one at a time; the tree snapshot and the streams are read on the trio
thread, which owns them.

A stream ends when the client goes away (``http.disconnect``: the sender is cancelled at once) or when
the web child stops (the server's cancellation reaches it like any other request).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from appliance.config import Config
from appliance.hw.sysinfo import SystemSampler
from appliance.media.recorder import Recorder
from appliance.supervisor import SupervisorSnapshot
from appliance.web.app import health_body
from appliance.web.auth import read_access
from appliance.web.routes import RouteRegistry

__all__ = [
    "HISTORY_POINTS",
    "RETRY_MS",
    "FeedSource",
    "Snapshot",
    "StatusFeed",
    "children_rows",
    "format_event",
    "register_events",
]

log = logging.getLogger("appliance.web")

RETRY_MS = 2000  # the browser's reconnect delay after the stream breaks (a web child restart, say)
HISTORY_POINTS = 300  # five minutes at one snapshot a second


class FeedSource(Protocol):
    """What the feed reads from the running appliance (`appliance.app.Appliance` provides it)."""

    version: str
    device_name: str
    recorder: Recorder | None

    @property
    def board(self) -> Mapping[str, str]: ...
    @property
    def cfg(self) -> Config: ...
    @property
    def state_dir(self) -> Path: ...
    def uptime_s(self) -> float: ...
    def snapshot(self) -> SupervisorSnapshot: ...
    def describe_streams(self) -> list[dict[str, Any]]: ...


def _webrtc(src: object) -> dict[str, object]:
    """Whether the page's live previews can play (WHEP served), and why not."""
    read = getattr(src, "webrtc_status", None)
    status = read() if callable(read) else {"state": "off", "reason": "no webrtc subsystem"}
    return {"state": status.get("state"), "reason": status.get("reason")}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One built status: its sequence number, when it was built (trio time) and its JSON text."""

    seq: int
    built_at: float
    data: str


def format_event(event: str, data: str, *, event_id: int | None = None) -> bytes:
    """One server-sent event. ``data`` must be a single line (compact JSON is).

    Raises:
        ValueError: ``data`` or ``event`` has a line break (it would end the field early).
    """
    if "\n" in data or "\r" in data or "\n" in event or "\r" in event:
        raise ValueError("server-sent event fields are single lines")
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def children_rows(snap: SupervisorSnapshot) -> list[dict[str, Any]]:
    """Every child of the tree, depth first, as the page's subsystem table shows it.

    ``path`` is what ``POST /api/children/{path}/restart`` takes; ``depth`` is 0 for the root's
    children; ``last_error_ago_s`` is how long ago the last error was (None without one).
    """
    rows = []
    for path, c in snap.walk():
        rows.append(
            {
                "path": path,
                "name": c.name,
                "depth": path.count("/"),
                "state": c.state.value,
                "critical": c.critical,
                "ok": c.ok,
                "restarts": c.restarts,
                "manual_restarts": c.manual_restarts,
                "last_error": c.last_error,
                "last_error_ago_s": (
                    None if c.last_error_at is None else round(max(0.0, snap.taken_at - c.last_error_at), 1)
                ),
                "uptime_s": None if c.uptime_s is None else round(c.uptime_s, 1),
                "down_for_s": None if c.down_for_s is None else round(c.down_for_s, 1),
                "next_restart_in_s": None if c.next_restart_in_s is None else round(c.next_restart_in_s, 1),
            }
        )
    return rows


def _recording(recorder: Recorder | None) -> dict[str, Any] | None:
    if recorder is None:
        return None
    return {
        s.stream: {"wanted": s.wanted, "recording": s.recording, "error": s.error}
        for s in recorder.status().streams
    }


class StatusFeed:
    """Builds the status snapshot at most once per interval and shares it between the open streams.

    Args:
        source: The appliance.
        interval_s: Time between two snapshots.
        sampler: Reads the machine's vital signs (in a worker thread); by default the real machine's,
            with the recordings directory's disk.
        wall_clock: Seconds since the epoch, for the plot's time axis.
        system: Instead of the sampler in a thread, this (tests: no thread, so trio's mock clock
            stays deterministic).
    """

    def __init__(
        self,
        source: FeedSource,
        *,
        interval_s: float = 1.0,
        sampler: SystemSampler | None = None,
        wall_clock: Callable[[], float] = time.time,
        system: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.source = source
        self._system = system if system is not None else self._sample
        self.interval_s = interval_s
        self._sampler = sampler
        self._wall_clock = wall_clock
        self._lock = trio.Lock()
        self._threads = trio.CapacityLimiter(1)
        self._latest: Snapshot | None = None
        self._seq = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.clients = 0  # open event streams
        self.builds = 0  # snapshots built, however many streams took them

    def _recordings_dir(self) -> Path:
        return self.source.cfg.record.path(self.source.state_dir)

    async def _sample(self) -> dict[str, Any]:
        if self._sampler is None:
            # Made in the thread: its first reading (the CPU baseline) is a blocking read too.
            self._sampler = await trio.to_thread.run_sync(
                lambda: SystemSampler(self._recordings_dir, clock=time.monotonic), limiter=self._threads
            )
        sampler = self._sampler
        return await trio.to_thread.run_sync(sampler.sample, limiter=self._threads)

    async def build(self) -> dict[str, Any]:
        """A status body (JSON-ready), built now. The live feed uses :meth:`current` instead."""
        system = await self._system()
        src = self.source
        snap = src.snapshot()  # after the thread: the tree as it is when the snapshot goes out
        _code, health = health_body(snap)
        streams = src.describe_streams()
        return {
            "time": round(self._wall_clock(), 3),
            "device": src.device_name,
            "board": dict(src.board),
            "version": src.version,
            "uptime_s": round(src.uptime_s(), 1),
            "health": health,
            "healthy": snap.healthy,
            "children": children_rows(snap),
            "system": system,
            "streams": streams,
            "recording": _recording(src.recorder),
            "webrtc": _webrtc(src),
        }

    async def current(self) -> Snapshot:
        """The newest snapshot if it is younger than half an interval, else a new one."""
        async with self._lock:
            latest = self._latest
            if latest is not None and trio.current_time() - latest.built_at < self.interval_s / 2:
                return latest
            body = await self.build()
            self._seq += 1
            self.builds += 1
            body["seq"] = self._seq
            self.history.append(
                {
                    "time": body["time"],
                    "cpu_percent": body["system"]["cpu_percent"],
                    "bitrate_bps": {s["name"]: s.get("bitrate_bps") for s in body["streams"]},
                }
            )
            latest = Snapshot(
                seq=self._seq,
                built_at=trio.current_time(),
                data=json.dumps(body, separators=(",", ":"), allow_nan=False, default=str),
            )
            self._latest = latest
            return latest

    def history_event(self) -> bytes:
        return format_event("history", json.dumps(list(self.history), separators=(",", ":")))

    async def send_events(self, send: Send, *, resumed: bool) -> None:
        """Send the stream's events until cancelled (the caller cancels on disconnect or stop)."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # a reverse proxy in front must not buffer it
                ],
            }
        )
        first = f"retry: {RETRY_MS}\n\n".encode()
        if not resumed:
            first += self.history_event()
        await send({"type": "http.response.body", "body": first, "more_body": True})
        while True:
            snap = await self.current()
            body = format_event("status", snap.data, event_id=snap.seq)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await trio.sleep_until(snap.built_at + self.interval_s)


class _EventStream:
    """The ASGI response of one open stream: sends events and, beside that, waits for the client to
    go away; whichever ends first ends both (a plain StreamingResponse would only notice a gone client
    at its next write on some servers)."""

    def __init__(self, feed: StatusFeed, *, client: str, resumed: bool) -> None:
        self.feed = feed
        self.client = client
        self.resumed = resumed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        feed = self.feed
        feed.clients += 1
        log.info("web.events_opened client=%s clients=%d resumed=%s", self.client, feed.clients, self.resumed)
        reason = "stopped"
        try:
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    nonlocal reason
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    reason = "client_gone"
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                await feed.send_events(send, resumed=self.resumed)
        finally:
            feed.clients -= 1
            log.info("web.events_closed client=%s clients=%d reason=%s", self.client, feed.clients, reason)


def register_events(routes: RouteRegistry, source: FeedSource, *, owner: str = "web") -> StatusFeed:
    """Serve ``GET /api/events`` for ``source``.

    Returns:
        The feed (its ``clients`` and ``builds`` counters show it at work).
    """
    feed = StatusFeed(source)

    async def events(request: Request) -> Response | _EventStream:
        if (refusal := read_access(request)) is not None:
            return refusal
        client = request.client.host if request.client is not None else "unknown"
        return _EventStream(feed, client=client, resumed="last-event-id" in request.headers)

    routes.add_route("/api/events", events, methods=["GET"], owner=owner)
    return feed
