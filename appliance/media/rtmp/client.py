"""A trio RTMP client over `ClientSession`: connect, then publish or play one stream.

Thin on purpose: the protocol is in the core. The push egress and the tests' players use it. Callers
bound every wait with their own `fail_after`/`move_on_after`.
"""

from __future__ import annotations

import collections
import ssl

import trio

from appliance.media.rtmp.chunk import MessageType
from appliance.media.rtmp.client_session import ClientSession
from appliance.media.rtmp.errors import RemoteProtocolError
from appliance.media.rtmp.events import ConnectionClosed, Event, StatusReceived
from appliance.media.rtmp.session import State
from appliance.media.rtmp.url import RtmpUrl, parse_rtmp_url

__all__ = ["RtmpClient", "RtmpUrl", "StatusError", "parse_rtmp_url"]


class StatusError(Exception):
    """The server answered a publish, play or createStream with an error status."""

    def __init__(self, status: StatusReceived) -> None:
        super().__init__(f"{status.code}: {status.description}")
        self.status = status


class RtmpClient:
    """One client connection. Make it with `RtmpClient.connect`."""

    def __init__(self, stream: trio.abc.Stream, session: ClientSession) -> None:
        self.stream = stream
        self.session = session
        self._events: collections.deque[Event] = collections.deque()

    @classmethod
    async def connect(
        cls, url: RtmpUrl, *, fourcc_list: tuple[str, ...] = (), verify_tls: bool = True
    ) -> RtmpClient:
        """Open TCP (and TLS for rtmps), handshake and `connect` to `url.app`.

        Args:
            url: Where to.
            fourcc_list: Enhanced RTMP codecs to announce.
            verify_tls: Check the server's certificate and host name (rtmps); False for self-signed
                ingests on a trusted network.

        Raises:
            OSError: TCP connect failed.
            trio.BrokenResourceError: The TLS handshake failed (its cause says why, e.g. the certificate).
            RemoteProtocolError: Handshake or connect failed (the message has the server's code).
        """
        tcp = await trio.open_tcp_stream(url.host, url.port)
        stream: trio.abc.Stream = tcp
        if url.tls:
            context = ssl.create_default_context()
            if not verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            tls = trio.SSLStream(tcp, context, server_hostname=url.host)
            try:
                await tls.do_handshake()
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            stream = tls
        session = ClientSession(
            app=url.app, tc_url=url.tc_url, fourcc_list=fourcc_list, epoch_ms=int(trio.current_time() * 1000)
        )
        client = cls(stream, session)
        try:
            session.initiate()
            await client.flush()
            while session.state is not State.CONNECTED:
                await client._fill()
                if session.state in (State.CLOSED, State.ERROR):
                    raise RemoteProtocolError("server closed the connection during connect")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return client

    async def flush(self) -> None:
        """Send whatever the core has queued."""
        data = self.session.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = bytes(await self.stream.receive_some(65536))
        self._events.extend(self.session.receive_data(data))
        await self.flush()

    async def next_event(self) -> Event:
        """The next event from the server (`ConnectionClosed` at EOF, then it repeats)."""
        while not self._events:
            if self.session.state in (State.CLOSED, State.ERROR):
                return ConnectionClosed()
            await self._fill()
        return self._events.popleft()

    async def _status(self, *, transaction_id: float | None = None, prefix: str = "") -> StatusReceived:
        while True:
            event = await self.next_event()
            if isinstance(event, ConnectionClosed):
                raise RemoteProtocolError("server closed the connection")
            if not isinstance(event, StatusReceived):
                continue
            if transaction_id is not None and event.transaction_id == transaction_id:
                if event.name == "_error":
                    raise StatusError(event)
                return event
            if transaction_id is None and event.name == "onStatus" and event.code.startswith(prefix):
                if event.level == "error":
                    raise StatusError(event)
                return event
            if transaction_id is None and event.name == "onStatus" and event.level == "error":
                raise StatusError(event)

    async def create_stream(self) -> int:
        """createStream; returns the stream id."""
        tid = self.session.create_stream()
        await self.flush()
        result = await self._status(transaction_id=tid)
        sid = result.args[1] if len(result.args) > 1 else None
        if not isinstance(sid, float | int):
            raise RemoteProtocolError(f"createStream result without a stream id: {result.args!r}")
        return int(sid)

    async def publish(self, name: str) -> int:
        """createStream + publish; waits for NetStream.Publish.Start. Returns the stream id.

        Raises:
            StatusError: The server refused (e.g. NetStream.Publish.BadName).
        """
        sid = await self.create_stream()
        self.session.publish(sid, name)
        await self.flush()
        await self._status(prefix="NetStream.Publish.Start")
        return sid

    async def play(self, name: str) -> int:
        """createStream + play; waits for NetStream.Play.Start. Returns the stream id.

        Raises:
            StatusError: The server refused.
        """
        sid = await self.create_stream()
        self.session.play(sid, name)
        await self.flush()
        await self._status(prefix="NetStream.Play.Start")
        return sid

    async def send_media(self, stream_id: int, type_id: MessageType, timestamp: int, payload: bytes) -> None:
        """Send one audio, video or data message."""
        self.session.send_media(stream_id, type_id, timestamp, payload)
        await self.flush()

    async def aclose(self) -> None:
        """Close the TCP connection."""
        await trio.aclose_forcefully(self.stream)
