"""RTMP push egress: one Bus to one remote RTMP or RTMPS ingest (YouTube, Twitch, a cloud relay, nginx).

Theory of operation
-------------------
`RtmpPush.run` is a supervised child (in the `egress` dynamic supervisor). It reports ready at once, so a
target that is down at boot is retried rather than dropped, then makes one attempt: connect (TCP, TLS for
rtmps), `connect`/`publish`, subscribe to the source Bus and pump. Any failure raises and the supervisor
restarts the child with its backoff; each attempt starts clean from the Bus's GOP cache (configs, then a
keyframe), so the ingest never sees a half GOP.

Memory while the ingest is down or slow is bounded by the Bus: the subscription's queue drops to the next
keyframe, and a subscription `max_lag` behind is cut off (the attempt fails and reconnects). Nothing here
can stall the camera. Between attempts there is no subscription at all.

The connection has two tasks: the pump (Bus events -> `PlayAdapter` -> the session's output) and a reader
(acknowledgements, pings, the server's status messages; EOF ends the attempt). They share the socket
through a lock. Sending the Bus's events reuses the relay's play path (`PlayAdapter`): to the ingest we
look exactly like a relay serving one player.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from appliance.bus import BusRegistry, ProducerJoined, ProducerLeft, SubscriberCutOffError, Subscription
from appliance.errors import sole_exception
from appliance.media.bus_events import PacketReceived
from appliance.media.packets import Kind
from appliance.media.push_base import PushBase, PushError, PushStats
from appliance.media.rtmp.client import RtmpClient, RtmpUrl, StatusError, parse_rtmp_url
from appliance.media.rtmp.errors import RemoteProtocolError
from appliance.media.rtmp.events import ConnectionClosed, StatusReceived
from appliance.media.rtmp.player import ChunkCache, PlayAdapter
from appliance.media.rtmp.session import State

__all__ = ["PushError", "PushStats", "RtmpPush"]  # the first two re-exported from push_base

log = logging.getLogger("appliance.push")

CONNECT_TIMEOUT_S = 10.0
QUEUE = 512  # Bus events the push may have queued before it drops to the next keyframe
MAX_LAG_MS = 10_000  # further behind than this (a stalled ingest): cut off, reconnect


class RtmpPush(PushBase):
    """Push `source` to `url`.

    Args:
        name: The target's name (config `push.targets.name`, or the cloud stream id).
        url: rtmp:// or rtmps:// with app and stream key.
        source: The Bus to push, `app/key`.
        buses: The process's Bus registry.
        verify_tls: Check the ingest's certificate (rtmps).

    Raises:
        ValueError: A malformed URL (the message does not repeat its key).
    """

    def __init__(
        self,
        name: str,
        url: str,
        source: str,
        buses: BusRegistry,
        *,
        verify_tls: bool = True,
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        super().__init__(name, source, buses, on_state)
        self.url: RtmpUrl = parse_rtmp_url(url)
        self.verify_tls = verify_tls

    async def _attempt(self) -> None:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                client = await RtmpClient.connect(self.url, verify_tls=self.verify_tls)
        except trio.TooSlowError:
            raise PushError(
                f"no answer from {self.url.host}:{self.url.port} within {CONNECT_TIMEOUT_S:g} s"
            ) from None
        except OSError as e:
            raise PushError(f"cannot connect to {self.url.host}:{self.url.port}: {e.strerror or e}") from None
        except trio.BrokenResourceError as e:
            raise PushError(f"TLS with {self.url.host} failed: {e.__cause__ or e}") from None
        except RemoteProtocolError as e:
            raise PushError(f"RTMP connect refused: {e}") from None
        try:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    stream_id = await client.publish(self.url.name)
            except StatusError as e:
                raise PushError(f"publish refused: {e.status.code}") from None
            except (trio.TooSlowError, RemoteProtocolError, trio.BrokenResourceError, OSError) as e:
                raise PushError(f"publish failed: {e!r}") from None
            self._connected()
            await self._pump(client, stream_id)
        finally:
            await client.aclose()

    async def _pump(self, client: RtmpClient, stream_id: int) -> None:
        lock = trio.Lock()
        adapter = PlayAdapter(client.session, stream_id, self.source, ("*",), ChunkCache(size=8))
        sub = self.buses.subscribe(
            self.source, max_queue=QUEUE, max_lag_ms=MAX_LAG_MS, label=f"rtmp-push:{self.name}"
        )
        with sub:
            try:
                await self._pump_events(client, stream_id, adapter, sub, lock)
            except BaseException as exc:
                leaf = sole_exception(exc)
                if isinstance(leaf, SubscriberCutOffError | trio.TooSlowError):
                    raise PushError(f"the ingest took nothing for {MAX_LAG_MS // 1000} s") from None
                if isinstance(leaf, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
                    raise PushError(f"connection lost: {leaf!r}") from None
                if isinstance(leaf, PushError) and leaf is not exc:
                    raise leaf from None
                raise
            finally:
                self._dropped_base += sub.stats().dropped
                self.stats.dropped = self._dropped_base

    async def _pump_events(
        self, client: RtmpClient, stream_id: int, adapter: PlayAdapter, sub: Subscription, lock: trio.Lock
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, client, lock)
            self._state("streaming" if sub.bus.live else "waiting")
            sent = 0  # this attempt's bytes, as far as the meter has them
            while True:
                event = await sub.receive()
                if isinstance(event, ProducerJoined):
                    self._state("streaming")
                elif isinstance(event, ProducerLeft):
                    self._state("waiting")
                adapter.handle(event)
                # A stalled ingest (it accepts but takes nothing) would block here for ever, while the
                # Bus drops for us; give up after the same time the Bus would cut us off.
                with trio.fail_after(MAX_LAG_MS / 1000):
                    async with lock:
                        await client.flush()
                adapter.flushed()
                now = trio.current_time()
                self._bytes.add(now, adapter.bytes_out - sent)
                sent = adapter.bytes_out
                if isinstance(event, PacketReceived) and event.packet.kind is Kind.VIDEO:
                    self._frames.add(now, 1)
                self.stats.bytes_out = adapter.bytes_out
                self.stats.packets_out = adapter.messages_out
                self.stats.dropped = self._dropped_base + sub.stats().dropped

    async def _read(self, client: RtmpClient, lock: trio.Lock) -> None:
        """Take what the ingest sends: acks and pings (answered by the core), status, EOF."""
        session = client.session
        while True:
            data = bytes(await client.stream.receive_some(65536))
            if not data:
                raise PushError("the ingest closed the connection")
            for event in session.receive_data(data):
                if isinstance(event, StatusReceived) and event.level == "error":
                    raise PushError(f"the ingest said {event.code}: {event.description}")
                if isinstance(event, ConnectionClosed):
                    raise PushError("the ingest closed the connection")
            if session.state in (State.CLOSED, State.ERROR):
                raise PushError("the RTMP session ended")
            async with lock:
                await client.flush()
