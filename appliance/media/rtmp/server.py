"""The RTMP server: trio driver of `ServerSession`s, publishing into and playing from Buses.

Theory of operation
-------------------
One task per connection reads the socket and feeds the session core; a play runs in a second task that
awaits the Bus subscription and queues pre-built chunks on the session. Both touch the core only between
awaits, on the trio thread. Whichever of them queued something then sends (`_Client.pump`): if the other
is already sending, it returns at once and the sender picks the new bytes up with its next write, so every
write carries all that accumulated while the previous one was in flight (one send per batch, not per
chunk, and no extra task switch per message: profiling showed a writer task and a per-write timeout
scope cost more than the sends themselves).

Backpressure. A player's output is bounded twice: the Bus queue (overflow drops to the next keyframe)
and the unsent bytes on the connection (`_HIGH_WATER`): above it the play task stops taking events, so
the Bus queue fills and drops. A player stuck for `rtmp.max_lag` (the Bus's lag cut-off, or a write that
does not finish, which one reaper task checks every second for all connections, as it does a silent
publisher after `rtmp.idle_timeout`) is disconnected with a log line. Publishers and other players
never wait for it.

Every failure is the connection's own: a protocol error, a timeout or a crash in a handler closes that
connection with a logged reason, and the server keeps serving the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection, Mapping

import trio

from appliance.bus import (
    Bus,
    BusBusyError,
    BusError,
    BusRegistry,
    ProducerEvictedError,
    SubscriberCutOffError,
    validate_bus_name,
)
from appliance.config import Address, RtmpConfig
from appliance.log import quote
from appliance.media.meter import RateMeter
from appliance.media.packets import Kind
from appliance.media.rtmp import events as ev
from appliance.media.rtmp.errors import RemoteProtocolError
from appliance.media.rtmp.fanout import FanOut, Play
from appliance.media.rtmp.player import ChunkCache, PlayAdapter, UnsupportedCodecError
from appliance.media.rtmp.publisher import PublishAdapter, describe_config
from appliance.media.rtmp.session import ServerSession, State

__all__ = ["ENHANCED_FOURCCS", "Authorise", "RtmpServer", "serve_rtmp"]

log = logging.getLogger("appliance.rtmp")

# (role, app, stream name, publish/play query, connect query) -> allowed?
Authorise = Callable[[str, str, str, Mapping[str, str], Mapping[str, str]], bool]

ENHANCED_FOURCCS = ("avc1", "hvc1", "av01", "vp09")
_HIGH_WATER = 1 << 20  # unsent bytes per connection above which a play stops taking events
_RECV = 65536
_HANDSHAKE_TIMEOUT_S = 10.0


class _Client:
    """One connection: its core, socket and what it publishes or plays."""

    def __init__(self, server: RtmpServer, cid: int, stream: trio.SocketStream, peer: str) -> None:
        self.server = server
        self.cid = cid
        self.stream = stream
        self.peer = peer
        cfg = server.cfg
        self.session = ServerSession(chunk_size=cfg.chunk_size, epoch_ms=int(trio.current_time() * 1000))
        self.app = ""
        self.connect_query: Mapping[str, str] = {}
        self.publishing: dict[int, tuple[str, PublishAdapter]] = {}
        self.playing: dict[int, trio.CancelScope] = {}
        self.play_buses: dict[int, str] = {}  # stream id -> the Bus it plays
        self.drained = trio.Event()
        self.in_flight = 0
        self.sending = False
        self.send_started = 0.0
        self.backlog = memoryview(b"")  # what a non-blocking send left over
        self.last_rx = trio.current_time()
        # A second handle on the same socket for non-blocking sends (MSG_DONTWAIT: the descriptor's own
        # flags, which trio owns, are never touched). Closed with the connection.
        self.raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
        self.closing: str | None = None
        self.scope: trio.CancelScope | None = None
        self.meter = RateMeter()
        self.connected_at = time.time()

    # -- writing --------------------------------------------------------------------------------------

    def kick(self, reason: str) -> None:
        """Close this connection from outside its own tasks."""
        self.closing = reason
        if self.scope is not None:
            self.scope.cancel()

    def unsent(self) -> int:
        return self.in_flight + len(self.backlog) + self.session.pending_bytes

    def send_now(self) -> bool:
        """Write what is queued without waiting; False when some of it is left for `pump()`."""
        return not self.sending and self._try_send()

    def _try_send(self) -> bool:
        if not self.backlog:
            data = self.session.data_to_send()
            if not data:
                return True
            try:
                sent = self.raw.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # pump() will meet the same error through trio and close the connection
            if sent == len(data):
                return True
            self.backlog = memoryview(data)[sent:]
        return False

    async def pump(self) -> None:
        """Send what the core has queued, unless another task is sending (it will take it along)."""
        if self.sending:
            return
        self.sending = True
        try:
            while True:
                if self.backlog:
                    data, self.backlog = self.backlog, memoryview(b"")
                    await self._send(data)
                if self._try_send():
                    break
        finally:
            self.sending = False
            self.drained.set()
            self.drained = trio.Event()

    async def _send(self, data: memoryview) -> None:
        self.in_flight = len(data)
        self.send_started = trio.current_time()
        try:
            await self.stream.send_all(data)
        finally:
            self.in_flight = 0


class _Close(Exception):
    """Close this connection, logging `reason`."""


class RtmpServer:
    """Serves RTMP publish and play over the given Buses.

    Args:
        cfg: The `[rtmp]` config.
        buses: The process's Bus registry.
        reserved: Streams this device produces itself (the camera's): RTMP clients may play them but not
            publish to them, so a stray encoder can't take over the camera's stream.
        authorise: Decides publish and play instead of `rtmp.auth`, for keys that come and go (the fleet
            controller's per-stream publish secrets): called with the role (``publish``/``play``), app,
            stream name, the publish/play query and the connect query.
    """

    def __init__(
        self,
        cfg: RtmpConfig,
        buses: BusRegistry,
        *,
        reserved: Collection[str] = (),
        authorise: Authorise | None = None,
    ) -> None:
        self.cfg = cfg
        self.authorise = authorise
        self.buses = buses
        self.reserved = frozenset(reserved)
        self.clients: dict[int, _Client] = {}
        self._next_cid = 1
        self._caches: dict[str, ChunkCache] = {}
        self._fanouts: dict[str, FanOut] = {}
        self._nursery: trio.Nursery | None = None
        self.publishers: dict[str, _Client] = {}
        self.bound: list[Address] = []

    async def serve(self, *, task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on `rtmp.listen` and serve until cancelled.

        Raises:
            OSError: The address can't be bound (the supervisor retries with backoff).
        """
        listen = self.cfg.listen
        host = None if listen.host in ("", "0.0.0.0", "::") else listen.host
        listeners = await trio.open_tcp_listeners(listen.port, host=host)
        self.bound = []
        for listener in listeners:
            sockname = listener.socket.getsockname()
            self.bound.append(Address(str(sockname[0]), int(sockname[1])))
        log.info("rtmp.listening addresses=%s", ",".join(str(a) for a in self.bound))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reap)
            task_status.started(self.bound)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _reap(self) -> None:
        # One timer for every connection instead of a timeout scope per read and per write (profiled:
        # the scopes cost more than the socket calls). It closes stalled writes, a handshake that does not
        # finish, and silent connections other than players (they only send acknowledgements, and may
        # wait for a publisher as long as they like).
        max_lag = self.cfg.max_lag_s
        idle = self.cfg.idle_timeout_s
        while True:
            await trio.sleep(min(1.0, max_lag / 2, idle / 2))
            now = trio.current_time()
            for client in list(self.clients.values()):
                silent = now - client.last_rx
                if client.in_flight and now - client.send_started > max_lag:
                    client.kick(f"write stalled for {max_lag:g}s (peer not reading)")
                elif client.session.state is State.HANDSHAKE and silent > _HANDSHAKE_TIMEOUT_S:
                    client.kick(f"no handshake in {_HANDSHAKE_TIMEOUT_S:g}s")
                elif silent > idle and (client.publishing or not client.playing):
                    client.kick(f"no data for {idle:g}s")

    # -- per connection -------------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            peer_addr = stream.socket.getpeername()
            peer = f"{peer_addr[0]}:{peer_addr[1]}"
        except OSError:
            peer = "?"
        cid = self._next_cid
        self._next_cid += 1
        if len(self.clients) >= self.cfg.max_connections:
            log.warning("rtmp.refused conn=%d peer=%s reason=max_connections", cid, peer)
            await stream.aclose()
            return
        client = _Client(self, cid, stream, peer)
        self.clients[cid] = client
        reason = "closed by peer"
        try:
            async with trio.open_nursery() as nursery:
                client.scope = nursery.cancel_scope
                await self._read_loop(client, nursery)
                reason = client.closing or reason
                with trio.move_on_after(1.0):  # let a refusal's status reach the client
                    while client.unsent():
                        if client.sending:
                            await client.drained.wait()
                        else:
                            await client.pump()
                nursery.cancel_scope.cancel()
        except* _Close as group:
            reason = str(group.exceptions[0])
        except* RemoteProtocolError as group:
            reason = f"protocol error: {group.exceptions[0]}"
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as group:
            reason = f"connection lost: {group.exceptions[0] or type(group.exceptions[0]).__name__}"
        except* trio.TooSlowError:
            reason = "timed out"
        finally:
            if client.closing and reason == "closed by peer":
                reason = client.closing  # kicked from outside (replaced publisher)
            self._cleanup(client)
            client.raw.close()
            with trio.CancelScope(shield=True):
                if client.in_flight == 0 and not reason.startswith("connection lost"):
                    await self._last_words(client)
                await trio.aclose_forcefully(stream)
            log.info("rtmp.disconnect conn=%d peer=%s reason=%s", cid, peer, quote(reason))

    async def _last_words(self, client: _Client) -> None:
        # An error status (refused publish, unsupported codec) should reach the client before we close.
        data = client.session.data_to_send()
        if not data or len(data) > _HIGH_WATER:
            return
        lost = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)
        with trio.move_on_after(1.0), contextlib.suppress(*lost):
            await client.stream.send_all(data)

    async def _read_loop(self, client: _Client, nursery: trio.Nursery) -> None:
        session = client.session
        while session.state not in (State.CLOSED, State.ERROR) and client.closing is None:
            # Silence is timed by the reaper (`_reap`), not by a timeout scope per read.
            data = await client.stream.receive_some(_RECV)
            client.last_rx = trio.current_time()
            for event in session.receive_data(data):
                self._on_event(client, event, nursery)
            await client.pump()

    def _on_event(self, client: _Client, event: ev.Event, nursery: trio.Nursery) -> None:
        match event:
            case ev.MediaReceived() | ev.DataReceived():
                self._on_published(client, event)
            case ev.ConnectRequested():
                self._on_connect(client, event, nursery)
            case ev.PublishRequested():
                self._on_publish(client, event)
            case ev.PlayRequested():
                self._on_play(client, event, nursery)
            case ev.StreamClosed():
                self._end_stream(client, event.stream_id, event.command)
            case ev.ConnectionClosed():
                client.closing = "closed by peer"
            case ev.HandshakeCompleted():
                log.debug("rtmp.handshake conn=%d digest=%s", client.cid, event.digest)
            case _:
                pass

    def _on_connect(self, client: _Client, event: ev.ConnectRequested, nursery: trio.Nursery) -> None:
        client.app = event.app
        client.connect_query = event.query
        log.info(
            "rtmp.connect conn=%d peer=%s app=%s flashver=%s fourcc=%s",
            client.cid,
            client.peer,
            quote(event.app),
            quote(event.flash_ver),
            ",".join(event.fourcc_list) or "-",
        )
        if event.app not in self.cfg.apps:
            client.session.reject_connect("NetConnection.Connect.InvalidApp", f"no app {event.app!r} here")
            client.closing = f"unknown app {event.app!r}"
            return
        held = client.session.accept_connect(fourcc_list=ENHANCED_FOURCCS if event.fourcc_list else ())
        for later in held:
            self._on_event(client, later, nursery)

    def _authorised(self, client: _Client, role: str, name: str, query: Mapping[str, str]) -> bool:
        if self.authorise is not None:
            return self.authorise(role, client.app, name, query, client.connect_query)
        auth = self.cfg.auth.get(client.app)
        secrets = getattr(auth, role, ()) if auth is not None else ()
        if not secrets:
            return True
        offered = {query.get("key"), client.connect_query.get("key"), name}
        return any(s in offered for s in secrets)

    def _on_publish(self, client: _Client, event: ev.PublishRequested) -> None:
        session = client.session
        sid = event.stream_id
        bus_name = f"{client.app}/{event.name}"
        shown = self._shown(bus_name)
        if not self._authorised(client, "publish", event.name, event.query):
            self._refuse(
                client,
                "publish",
                sid,
                shown,
                "unauthorized",
                "NetStream.Publish.Denied",
                "publishing here needs a valid key",
            )
            return
        if bus_name in self.reserved:
            self._refuse(
                client,
                "publish",
                sid,
                shown,
                "reserved",
                "NetStream.Publish.BadName",
                f"{shown} is this device's camera stream; publish under another key",
            )
            return
        try:
            validate_bus_name(bus_name)
            bus = self.buses.get_or_create(bus_name)
            producer = bus.publish(replace=self.cfg.replace_publisher)
        except BusBusyError:
            self._refuse(
                client,
                "publish",
                sid,
                shown,
                "stream busy",
                "NetStream.Publish.BadName",
                f"{shown} is already being published",
            )
            return
        except (BusError, ValueError) as exc:
            self._refuse(
                client,
                "publish",
                sid,
                shown,
                f"bad name: {exc}",
                "NetStream.Publish.BadName",
                f"bad stream name: want {client.app}/KEY",
            )
            return
        old = self.publishers.get(bus_name)
        if old is not None and old is not client:
            log.info("rtmp.publisher_replaced stream=%s old_conn=%d new_conn=%d", shown, old.cid, client.cid)
            old.kick(f"publisher replaced by conn {client.cid}")
        self.publishers[bus_name] = client
        client.publishing[sid] = (bus_name, PublishAdapter(producer))
        session.accept_publish(sid, event.name)
        log.info("rtmp.publish conn=%d peer=%s stream=%s mode=%s", client.cid, client.peer, shown, event.mode)

    def _on_published(self, client: _Client, event: ev.MediaReceived | ev.DataReceived) -> None:
        entry = client.publishing.get(event.stream_id)
        if entry is None:
            return  # media before publish (or after unpublish): nobody to give it to
        bus_name, adapter = entry
        try:
            if isinstance(event, ev.DataReceived):
                adapter.data(event.name, event.args, event.payload, event.timestamp)
                return
            client.meter.add(trio.current_time(), len(event.payload))
            config = adapter.media(event.type_id, event.timestamp, event.payload)
        except ProducerEvictedError:
            raise _Close(f"publisher of {bus_name} replaced by a newer one") from None
        except BusError as exc:
            raise _Close(f"publish of {bus_name} refused by the bus: {exc}") from None
        if config is not None:
            facts = describe_config(config)
            log.info(
                "rtmp.codec conn=%d stream=%s kind=%s %s",
                client.cid,
                self._shown(bus_name),
                config.kind.value,
                " ".join(f"{k}={quote(str(v))}" for k, v in facts.items()),
            )

    def _refuse(
        self, client: _Client, what: str, sid: int, shown: str, reason: str, code: str, description: str
    ) -> None:
        """Refuse a publish or play: log it, send the error status, close after it has gone out."""
        log.warning("rtmp.%s_refused conn=%d stream=%s reason=%s", what, client.cid, shown, quote(reason))
        client.session.reject(sid, code, description)
        client.closing = f"{what} refused: {reason}"

    def _on_play(self, client: _Client, event: ev.PlayRequested, nursery: trio.Nursery) -> None:
        session = client.session
        sid = event.stream_id
        bus_name = f"{client.app}/{event.name}"
        shown = self._shown(bus_name)
        if not self._authorised(client, "play", event.name, event.query):
            self._refuse(
                client,
                "play",
                sid,
                shown,
                "unauthorized",
                "NetStream.Play.Failed",
                "playing here needs a valid key",
            )
            return
        try:
            validate_bus_name(bus_name)
        except ValueError as exc:
            self._refuse(
                client,
                "play",
                sid,
                shown,
                f"bad name: {exc}",
                "NetStream.Play.StreamNotFound",
                f"bad stream name: want {client.app}/KEY",
            )
            return
        if sid in client.playing:
            client.playing.pop(sid).cancel()
        scope = trio.CancelScope()
        client.playing[sid] = scope
        client.play_buses[sid] = bus_name
        session.accept_play(sid, event.name)
        log.info("rtmp.play conn=%d peer=%s stream=%s", client.cid, client.peer, shown)
        nursery.start_soon(self._play, client, sid, bus_name, event.name, scope)

    async def _play(
        self, client: _Client, sid: int, bus_name: str, name: str, scope: trio.CancelScope
    ) -> None:
        cfg = self.cfg
        cache = self._caches.get(bus_name)
        if cache is None:
            cache = self._caches[bus_name] = ChunkCache()
        adapter = PlayAdapter(client.session, sid, name, client.session.fourcc_list, cache)
        bus: Bus = self.buses.get_or_create(bus_name)
        with (
            scope,
            bus.subscribe(
                max_queue=cfg.queue,
                max_lag_ms=int(cfg.max_lag_s * 1000),
                name=f"rtmp:{client.peer}#{client.cid}",
            ) as sub,
        ):
            play = Play(client, sub, adapter, _HIGH_WATER)
            fanout = self._fanout(bus_name, bus)
            fanout.add(play)
            try:
                # The fan-out serves this play; this task only finishes writes the socket did not take at
                # once, and ends the play when the fan-out says why.
                while True:
                    await play.needs_task.wait()
                    play.needs_task = trio.Event()
                    if play.error is not None:
                        raise play.error
                    await client.pump()
                    fanout.wake.set()
            except SubscriberCutOffError as exc:
                log.warning(
                    "rtmp.player_cut_off conn=%d peer=%s stream=%s lag_ms=%d",
                    client.cid,
                    client.peer,
                    quote(bus_name),
                    exc.lag_ms,
                )
                raise _Close(f"player fell {exc.lag_ms} ms behind (rtmp.max_lag)") from None
            except UnsupportedCodecError as exc:
                log.warning(
                    "rtmp.play_unsupported conn=%d stream=%s reason=%s",
                    client.cid,
                    quote(bus_name),
                    quote(str(exc)),
                )
                client.kick(f"play refused: {exc}")
            except trio.EndOfChannel:
                pass
            finally:
                fanout.remove(play)

    def _fanout(self, bus_name: str, bus: Bus) -> FanOut:
        fanout = self._fanouts.get(bus_name)
        if fanout is None or fanout.bus is not bus:
            fanout = self._fanouts[bus_name] = FanOut(bus, lambda: self._fanout_done(bus_name, fanout))
            assert self._nursery is not None
            self._nursery.start_soon(fanout.run)
        return fanout

    def _fanout_done(self, bus_name: str, fanout: FanOut | None) -> None:
        if self._fanouts.get(bus_name) is fanout:
            del self._fanouts[bus_name]

    def drop_stream(self, bus_name: str, reason: str) -> int:
        """Disconnect the publisher and every player of `bus_name` (its ingest is being removed).

        Returns:
            How many connections were closed.
        """
        dropped = 0
        for client in list(self.clients.values()):
            if bus_name in client.play_buses.values() or any(
                b == bus_name for b, _ in client.publishing.values()
            ):
                client.kick(reason)
                dropped += 1
        log.info("rtmp.stream_dropped stream=%s connections=%d reason=%s", self._shown(bus_name), dropped,
                 quote(reason))  # fmt: skip
        return dropped

    def _end_stream(self, client: _Client, sid: int, command: str) -> None:
        client.play_buses.pop(sid, None)
        scope = client.playing.pop(sid, None)
        if scope is not None:
            scope.cancel()
        entry = client.publishing.pop(sid, None)
        if entry is not None:
            self._unpublish(client, *entry, why=command)
        if command == "FCUnpublish" and not entry:
            # FCUnpublish names the stream, not a stream id; end every publish of this connection.
            for other in list(client.publishing):
                self._unpublish(client, *client.publishing.pop(other), why=command)

    def _unpublish(self, client: _Client, bus_name: str, adapter: PublishAdapter, *, why: str) -> None:
        adapter.producer.close()
        if self.publishers.get(bus_name) is client:
            del self.publishers[bus_name]
        log.info("rtmp.unpublish conn=%d stream=%s why=%s", client.cid, quote(bus_name), why)

    def _cleanup(self, client: _Client) -> None:
        for sid in list(client.publishing):
            self._unpublish(client, *client.publishing.pop(sid), why="disconnect")
        for scope in client.playing.values():
            scope.cancel()
        client.playing.clear()
        self.clients.pop(client.cid, None)
        for name in [n for n in self._caches if n not in self.buses]:
            del self._caches[name]

    def _shown(self, bus_name: str) -> str:
        app, _, key = bus_name.partition("/")
        return _shown_name(app, key, self._secret_names(app))

    def _secret_names(self, app: str) -> tuple[str, ...]:
        auth = self.cfg.auth.get(app)
        return (*auth.publish, *auth.play) if auth is not None else ()

    # -- for the JSON API -----------------------------------------------------------------------------

    def describe_streams(self) -> list[dict[str, object]]:
        """Every Bus with its publisher, codecs, bitrate and subscribers (the JSON API's view)."""
        now = trio.current_time()
        out: list[dict[str, object]] = []
        for bus in self.buses:
            snap = bus.snapshot()
            app, key = bus.name.split("/", 1)
            item: dict[str, object] = {
                "name": _shown_name(app, key, self._secret_names(app)),
                "live": snap.live,
            }
            client = self.publishers.get(bus.name)
            configs = bus.configs
            item["publisher"] = (
                {"protocol": "rtmp", "address": client.peer, "since": client.connected_at}
                if client is not None
                else None
            )
            item["video"] = describe_config(configs[Kind.VIDEO]) if Kind.VIDEO in configs else None
            item["audio"] = describe_config(configs[Kind.AUDIO]) if Kind.AUDIO in configs else None
            item["bitrate_bps"] = client.meter.bps(now) if client is not None else 0
            item["packets_in"] = snap.packets_in
            item["bytes_in"] = snap.bytes_in
            item["subscribers"] = [
                {
                    "protocol": s.name.split(":", 1)[0] if ":" in s.name else "internal",
                    "name": s.name,
                    "delivered": s.delivered,
                    "dropped": s.dropped,
                    "lag_ms": s.lag_ms,
                    "queued": s.queued,
                }
                for s in snap.subscribers
            ]
            out.append(item)
        return out


def _shown_name(app: str, key: str, secrets: tuple[str, ...]) -> str:
    # A stream key that is itself a secret must not reach logs or the API.
    return f"{app}/<secret>" if key in secrets else f"{app}/{key}"


async def serve_rtmp(
    server: RtmpServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Supervisor child: run `server` until cancelled."""
    await trio.lowlevel.checkpoint()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        task_status.started()
