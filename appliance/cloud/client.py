"""The device side of the cloud control channel: a thin trio driver around `DeviceStreams`.

The device connects out (so it works behind NAT) to `cloud.url` with its bearer token, says `hello`,
re-announces its stream (the controller adopts or stops it) and then feeds every frame to the sans-IO
lifecycle. The lifecycle's actions run in one task, in order: `Send` goes out on the socket when it is up
(dropped otherwise), `StartPush`/`StopPush` start and stop a push child `cloud:ID` (RTMP, or WHIP for a WHIP
endpoint URL: `appliance.media.egress.make_push`) in the `egress`
supervisor, and the push's state changes flow back into the lifecycle as statuses.

A lost socket is retried with exponential backoff and jitter. The stream keeps running meanwhile, until
its dead-man timer (no keep-alive for `cloud.deadman`) stops it: a lost controller never leaves an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Sequence

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from appliance.bus import BusRegistry
from appliance.cloud import protocol
from appliance.cloud.lifecycle import Action, DeviceStreams, Send, StartPush, StopPush
from appliance.config import CloudConfig
from appliance.log import quote
from appliance.media.egress import Push, make_push
from appliance.media.webrtc import missing_extra
from appliance.supervisor import ChildSpec, DynamicSupervisor

__all__ = ["CloudClient"]

log = logging.getLogger("appliance.cloud")

_PUSH_STATES = {"connecting": "connecting", "waiting": "connecting", "streaming": "streaming",
                "reconnecting": "reconnecting", "error": "error"}  # fmt: skip
_ACTIONS_QUEUE = 256
# What hello says the device can push to: WHIP only with the webrtc extra.
_CAPABILITIES = ["rtmp", "rtmps"] + (["whip"] if missing_extra() is None else [])


def child_name(stream_id: str) -> str:
    """The egress child of a cloud stream (child names are bare words)."""
    return "cloud:" + re.sub(r"[^A-Za-z0-9_.:-]", "_", stream_id)


class CloudClient:
    """The `cloud` root child.

    Args:
        cfg: The [cloud] section.
        egress: Where cloud pushes run.
        buses: The Bus registry (what pushes read).
        device_id, version, board: For `hello`.
        shutdown_s: Per push child, on stop.
    """

    def __init__(
        self,
        cfg: CloudConfig,
        egress: DynamicSupervisor,
        buses: BusRegistry,
        *,
        device_id: str,
        version: str,
        board: str,
        shutdown_s: float = 10.0,
        status: Callable[[], tuple[float, str]] = lambda: (0.0, "ok"),
        make_push: Callable[..., Push] = make_push,
    ) -> None:
        self.cfg = cfg
        self.egress = egress
        self.buses = buses
        self.device_id = device_id
        self.version = version
        self.board = board
        self.shutdown_s = shutdown_s
        self.status = status  # (uptime_s, health) for device_status
        # (name, url, source, buses, token=, on_state=) -> the push (RTMP or WHIP by the URL)
        self.make_push = make_push
        self.state = "off" if not cfg.url else "connecting"
        self.connects = 0
        self.last_error: str | None = None
        self.streams = DeviceStreams(cfg.deadman_s)  # made again in run(), on trio's clock
        self._ws: WebSocketConnection | None = None
        self._actions_in, self._actions_out = trio.open_memory_channel[Sequence[Action]](_ACTIONS_QUEUE)
        self._changed = trio.Event()
        self._heartbeat_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._pushes: dict[str, Push] = {}  # stream_id -> its push, for the heartbeat's stats

    def describe(self) -> dict[str, object]:
        active = self.streams.active
        return {
            "state": self.state,
            "connects": self.connects,
            "last_error": self.last_error,
            "stream": None if active is None else {"streamId": active.stream_id, "source": active.source},
        }

    def _now(self) -> float:
        return trio.current_time()

    def _queue(self, actions: Sequence[Action]) -> None:
        if actions:
            try:
                self._actions_in.send_nowait(actions)
            except trio.WouldBlock:
                log.error("cloud.actions_dropped count=%d", len(actions))
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.cfg.url:
            log.info("cloud.off reason=%s", quote("cloud.url is empty"))
            await trio.sleep_forever()
        self.streams = DeviceStreams(self.cfg.deadman_s, wall_offset_s=time.time() - trio.current_time())
        # A previous run's lifecycle is gone with its dead-man timers: its pushes would be orphans.
        for name in self.egress.names:
            if name.startswith("cloud:") and self.egress.has_child(name):
                log.warning("cloud.orphan_stopped child=%s", name)
                await self.egress.stop_child(name)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._act)
            nursery.start_soon(self._timers)
            await self._connect_forever()

    async def _heartbeat(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        """`device_status` every `cloud.heartbeat` while this connection is up."""
        with scope:
            while True:
                await trio.sleep(self.cfg.heartbeat_s)
                uptime_s, health = self.status()
                active = self.streams.active
                push = None if active is None else self._pushes.get(active.stream_id)
                if active is not None and push is not None:
                    now = self._now()
                    got = push.stream_stats(now)
                    stats = protocol.StreamStats(
                        bitrate_bps=int(got["bitrate_bps"]), fps=float(got["fps"]),
                        dropped_frames=int(got["dropped_frames"]), duration_ms=int(got["duration_ms"]),
                    )  # fmt: skip
                    self._queue(self.streams.report(active.stream_id, now, stats, push.media()))
                streams = [] if active is None else [{"streamId": active.stream_id, "status": active.state}]
                text = protocol.device_status(uptime_s, streams, health, int(time.time() * 1000))
                try:
                    await ws.send_message(text)
                except ConnectionClosed:
                    return

    async def _timers(self) -> None:
        while True:
            self._changed = trio.Event()
            deadline = self.streams.get_timer()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._changed.wait()
                continue
            self._queue(self.streams.handle_timer(self._now()))

    async def _connect_forever(self) -> None:
        failures = 0
        headers = [(b"Authorization", f"Bearer {self.cfg.token}".encode())] if self.cfg.token else []
        while True:
            try:
                async with open_websocket_url(self.cfg.url, extra_headers=headers, connect_timeout=10) as ws:
                    self._ws = ws
                    self.connects += 1
                    failures = 0
                    self.state = "connected"
                    log.info("cloud.connected url=%s", quote(self.cfg.url))
                    wall_ms = int(time.time() * 1000)
                    await ws.send_message(
                        protocol.hello(
                            device_id=self.device_id, version=self.version, board=self.board,
                            capabilities=_CAPABILITIES, now_ms=wall_ms,
                        )
                    )  # fmt: skip
                    self._queue(self.streams.announce(self._now()))
                    self._heartbeat_scope = trio.CancelScope()
                    assert self._nursery is not None
                    self._nursery.start_soon(self._heartbeat, ws, self._heartbeat_scope)
                    while True:
                        text = await ws.get_message()
                        if isinstance(text, bytes):
                            text = text.decode("utf-8", "replace")
                        self._queue(self.streams.receive(text, self._now()))
            except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as e:
                why = str(e) or str(e.__cause__ or "") or "closed"
                self.last_error = f"{type(e).__name__}: {why}"
                log.warning("cloud.disconnected error=%s", quote(self.last_error))
            finally:
                self._ws = None
                self._heartbeat_scope.cancel()
            failures += 1
            self.state = "reconnecting"
            delay = min(self.cfg.reconnect_max_s, 0.5 * 2 ** min(failures, 10)) * random.uniform(0.8, 1.2)
            await trio.sleep(delay)

    async def _act(self) -> None:
        async for actions in self._actions_out:
            for action in actions:
                if isinstance(action, Send):
                    ws = self._ws
                    if ws is not None:
                        # A closed socket: the reader notices and reconnects; announce re-reports.
                        with contextlib.suppress(ConnectionClosed):
                            await ws.send_message(action.text)
                elif isinstance(action, StartPush):
                    await self._start_push(action)
                elif isinstance(action, StopPush):
                    await self._stop_push(action)

    async def _start_push(self, action: StartPush) -> None:
        name = child_name(action.stream_id)
        if self.egress.has_child(name):
            await self.egress.stop_child(name)
        stream_id = action.stream_id

        def on_state(state: str, error: str | None) -> None:
            mapped = _PUSH_STATES.get(state)
            if mapped is not None:
                self._queue(self.streams.push_state(stream_id, mapped, self._now(), error=error))

        try:
            push = self.make_push(
                name, action.url, action.source, self.buses, token=action.token, on_state=on_state
            )
        except ValueError as e:
            self._queue(self.streams.push_state(stream_id, "error", self._now(), error=str(e)))
            return
        await self.egress.start_child(ChildSpec(name=name, factory=push.run, shutdown_s=self.shutdown_s))
        self._pushes[stream_id] = push
        shown = push.describe()["url"]
        log.info("cloud.push_started stream=%s url=%s source=%s", quote(stream_id), shown, action.source)

    async def _stop_push(self, action: StopPush) -> None:
        name = child_name(action.stream_id)
        self._pushes.pop(action.stream_id, None)
        if self.egress.has_child(name):
            await self.egress.stop_child(name)
        log.info("cloud.push_stopped stream=%s reason=%s", quote(action.stream_id), quote(action.reason))
        self._queue(self.streams.push_stopped(action.stream_id, self._now()))
