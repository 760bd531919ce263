"""RTMP connection cores above the chunk stream: control messages, commands, media; server side.

Theory of operation
-------------------
`Connection` holds what both sides share: the chunk reader, protocol control (Set Chunk Size, Window
Acknowledgement Size and the acknowledgements it asks for, Set Peer Bandwidth, Abort), user control
(StreamBegin, StreamEOF, PingRequest answered at once with PingResponse), timestamp unwrapping, and the
output buffer. `ServerSession` adds the handshake and the NetConnection/NetStream command flow of a server:

    HANDSHAKE --C0C1, C2--> CONNECTING --connect--> (driver: accept_connect) --> CONNECTED
    any state --malformed input--> ERROR        any state --EOF--> CLOSED

In CONNECTED the session answers the bookkeeping commands itself (releaseStream, FCPublish, createStream,
getStreamLength, _checkbw, receiveAudio/receiveVideo) and turns the ones that need a decision into events
(`PublishRequested`, `PlayRequested`, `StreamClosed`); the driver answers with `accept_*`/`reject_*`.
Command messages may be AMF0 (type 20) or AMF3-wrapped (type 17); data messages AMF0 (18) or AMF3 (15).
Aggregate messages (22) are split into their audio, video and data sub-messages.

Timestamps: media timestamps are 32-bit on the wire and wrap after 49.7 days of stream time (and pass
0xFFFFFF, which needs the extended field, after 4h39m). The session unwraps them per message stream, so
`MediaReceived.timestamp` keeps counting: a step back of more than 2**31 is a wrap.

Nothing here does I/O or reads a clock; `rng` and `epoch_ms` are injected for the handshake.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from appliance.media.rtmp import amf0
from appliance.media.rtmp.chunk import ChunkReader, Message, MessageType, encode_message
from appliance.media.rtmp.errors import LocalProtocolError, RemoteProtocolError
from appliance.media.rtmp.events import (
    AckReceived,
    CommandReceived,
    ConnectionClosed,
    ConnectRequested,
    DataReceived,
    Event,
    HandshakeCompleted,
    MediaReceived,
    PlayRequested,
    PublishRequested,
    StreamClosed,
)
from appliance.media.rtmp.handshake import ClientHandshake, HandshakeError, ServerHandshake

__all__ = [
    "CSID_COMMAND",
    "CSID_CONTROL",
    "CSID_STREAM",
    "Connection",
    "ServerSession",
    "State",
    "split_query",
]

CSID_CONTROL = 2  # protocol and user control messages (RTMP spec 5.4, 6.2)
CSID_COMMAND = 3  # NetConnection commands
CSID_STREAM = 5  # NetStream commands and data
CSID_AUDIO = 6
CSID_VIDEO = 7

UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

_MAX_STREAMS = 16  # message streams one connection may create
_MAX_DEFERRED_BYTES = 8 * 1024 * 1024  # what a client may send behind connect before it is answered
_WRAP = 1 << 32
_HALF = 1 << 31


class State(enum.Enum):
    """Where a connection is (see the module docstring)."""

    HANDSHAKE = 1
    CONNECTING = 2
    CONNECTED = 3
    CLOSED = 4
    ERROR = 5


def split_query(value: str) -> tuple[str, dict[str, str]]:
    """Split `name?a=1&b=2` into the name and its query (last value of a repeated key wins).

    Args:
        value: A stream name or app as a client sends it.

    Returns:
        The part before `?`, and the parsed query.
    """
    name, sep, query = value.partition("?")
    return name, (dict(parse_qsl(query, keep_blank_values=True)) if sep else {})


class _Unwrapper:
    """Turns 32-bit wrapping timestamps of one message stream into a growing count."""

    __slots__ = ("base", "last")

    def __init__(self) -> None:
        self.base = 0
        self.last: int | None = None

    def unwrap(self, raw: int) -> int:
        last = self.last
        if last is None:
            self.last = raw
            return raw
        if raw < last and last - raw > _HALF:
            self.base += _WRAP  # went past 2**32
        elif raw > last and raw - last > _HALF and self.base:
            # A straggler from just before the wrap (audio interleaved with video).
            return self.base - _WRAP + raw
        self.last = raw
        return self.base + raw


class Connection:
    """State and behaviour both ends of an RTMP connection share.

    Args:
        chunk_size: Our outgoing chunk size, announced with Set Chunk Size.
        max_message_size: Largest incoming message accepted.
        amf_limits: Caps for decoding AMF values.
    """

    _handshake: ServerHandshake | ClientHandshake  # set by the subclass

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        max_message_size: int = 16 * 1024 * 1024,
        amf_limits: amf0.Limits = amf0.DEFAULT_LIMITS,
    ) -> None:
        self.state = State.HANDSHAKE
        self.out_chunk_size = 128
        self._wanted_chunk_size = chunk_size
        self._reader = ChunkReader(max_message_size=max_message_size)
        self._amf_limits = amf_limits
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._ack_window = 0  # the peer's Window Acknowledgement Size: ack every so many bytes
        self._acked = 0
        self._unwrap: dict[int, _Unwrapper] = {}
        self.bytes_sent = 0
        self.peer_buffer_ms: int | None = None

    # -- output ---------------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes queued for the peer.

        Returns:
            Bytes to write; empty when there is nothing.
        """
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_bytes = 0
        self.bytes_sent += len(data)
        return data

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken by `data_to_send`."""
        return self._out_bytes

    def send_raw(self, data: bytes) -> None:
        """Queue pre-built chunks (the relay builds a media message once for all players).

        Args:
            data: Complete chunks built with `encode_message` at this connection's `out_chunk_size`.
        """
        self._out.append(data)
        self._out_bytes += len(data)

    def send_message(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        """Queue one message, chunked at our current chunk size."""
        self.send_raw(encode_message(csid, type_id, stream_id, timestamp, payload, self.out_chunk_size))

    def send_command(self, stream_id: int, *values: object) -> None:
        """Queue an AMF0 command message (name, transaction id, command object, args...)."""
        csid = CSID_COMMAND if stream_id == 0 else CSID_STREAM
        self.send_message(csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(*values))

    def send_status(
        self, stream_id: int, code: str, description: str, *, level: str = "status", **extra: object
    ) -> None:
        """Queue an onStatus message (NetStream status codes, e.g. NetStream.Play.Start)."""
        info: dict[str, object] = {"level": level, "code": code, "description": description}
        info.update(extra)
        self.send_command(stream_id, "onStatus", 0.0, None, info)

    def send_user_control(self, event: int, *values: int) -> None:
        """Queue a user control message (RTMP spec 7.1.7): event type then 32-bit values."""
        payload = struct.pack(f">H{len(values)}I", event, *values)
        self.send_message(CSID_CONTROL, MessageType.USER_CONTROL, 0, 0, payload)

    def send_stream_begin(self, stream_id: int) -> None:
        """Queue StreamBegin for `stream_id`."""
        self.send_user_control(UC_STREAM_BEGIN, stream_id)

    def send_stream_eof(self, stream_id: int) -> None:
        """Queue StreamEOF for `stream_id`."""
        self.send_user_control(UC_STREAM_EOF, stream_id)

    def send_ping(self, timestamp: int) -> None:
        """Queue a PingRequest; the peer should answer with a PingResponse carrying `timestamp`."""
        self.send_user_control(UC_PING_REQUEST, timestamp & 0xFFFFFFFF)

    def set_chunk_size(self, size: int) -> None:
        """Announce and start using an outgoing chunk size."""
        self.send_message(CSID_CONTROL, MessageType.SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"))
        self.out_chunk_size = size

    def send_window_ack_size(self, size: int) -> None:
        """Ask the peer to acknowledge every `size` bytes."""
        self.send_message(CSID_CONTROL, MessageType.WINDOW_ACK_SIZE, 0, 0, size.to_bytes(4, "big"))

    def send_peer_bandwidth(self, size: int, limit_type: int = 2) -> None:
        """Set Peer Bandwidth (limit type 2 = dynamic)."""
        payload = size.to_bytes(4, "big") + bytes((limit_type,))
        self.send_message(CSID_CONTROL, MessageType.SET_PEER_BANDWIDTH, 0, 0, payload)

    # -- input ----------------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer: the handshake first, then chunks.

        Args:
            data: Received bytes; `b""` means the peer closed the connection.

        Returns:
            Events, in order.

        Raises:
            RemoteProtocolError: The peer broke the protocol (or refused connect, on the client side);
                close the connection (state is ERROR).
        """
        events: list[Event] = []
        if self.state in (State.CLOSED, State.ERROR):
            return events
        if not data:
            self.state = State.CLOSED
            events.append(ConnectionClosed())
            return events
        try:
            if self.state is State.HANDSHAKE:
                handshake = self._handshake
                handshake.receive_data(data)
                self.send_raw(handshake.data_to_send())
                if not handshake.complete:
                    return events
                self.state = State.CONNECTING
                events.append(HandshakeCompleted(digest=handshake.digest_used))
                self._handshake_done()
                data = handshake.leftover()
                if not data:
                    return events
            self._feed_chunks(data, events)
        except HandshakeError as exc:
            self.state = State.ERROR
            raise RemoteProtocolError(f"handshake: {exc}") from None
        except RemoteProtocolError:
            self.state = State.ERROR
            raise
        return events

    def _handshake_done(self) -> None:
        """Called once the handshake completes (the client sends connect here)."""

    def _feed_chunks(self, data: bytes, events: list[Event]) -> None:
        for msg in self._reader.feed(data):
            self._dispatch(msg, events)
        window = self._ack_window
        if window and self._reader.bytes_received - self._acked >= window:
            self._acked = self._reader.bytes_received
            self.send_message(
                CSID_CONTROL, MessageType.ACKNOWLEDGEMENT, 0, 0, (self._acked & 0xFFFFFFFF).to_bytes(4, "big")
            )

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        if t == MessageType.AUDIO or t == MessageType.VIDEO:
            ts = self._unwrapper(msg.stream_id).unwrap(msg.timestamp)
            events.append(
                MediaReceived(stream_id=msg.stream_id, type_id=t, timestamp=ts, payload=msg.payload)
            )
        elif t == MessageType.COMMAND_AMF0 or t == MessageType.COMMAND_AMF3:
            values = self._decode(msg.payload, amf3=t == MessageType.COMMAND_AMF3, what="command")
            if not values or not isinstance(values[0], str):
                raise RemoteProtocolError(f"command message without a name: {values[:1]!r}")
            tid = values[1] if len(values) > 1 else 0.0
            if not isinstance(tid, float | int) or isinstance(tid, bool):
                raise RemoteProtocolError(f"command {values[0]!r}: transaction id {tid!r} is not a number")
            self._command(msg.stream_id, values[0], float(tid), tuple(values[2:]), events)
        elif t == MessageType.DATA_AMF0 or t == MessageType.DATA_AMF3:
            self._data(msg, events)
        elif t == MessageType.AGGREGATE:
            for sub in _split_aggregate(msg):
                self._dispatch(sub, events)
        else:
            self._control(msg, events)

    def _unwrapper(self, stream_id: int) -> _Unwrapper:
        unwrapper = self._unwrap.get(stream_id)
        if unwrapper is None:
            if len(self._unwrap) >= _MAX_STREAMS:
                raise RemoteProtocolError(f"media on more than {_MAX_STREAMS} message streams")
            unwrapper = self._unwrap[stream_id] = _Unwrapper()
        return unwrapper

    def _decode(self, payload: bytes, *, amf3: bool, what: str) -> list[object]:
        try:
            if amf3:
                return amf0.decode_command_amf3(payload, self._amf_limits)
            return amf0.decode_all(payload, limits=self._amf_limits)
        except amf0.AMFError as exc:
            raise RemoteProtocolError(f"malformed AMF in {what} message: {exc}") from None

    def _data(self, msg: Message, events: list[Event]) -> None:
        payload = msg.payload
        if msg.type_id == MessageType.DATA_AMF3 and payload[:1] == b"\x00":
            payload = payload[1:]
        values = self._decode(payload, amf3=False, what="data")
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if not values or not isinstance(values[0], str):
            return  # nameless data: nothing anyone can act on
        ts = self._unwrapper(msg.stream_id).unwrap(msg.timestamp)
        events.append(
            DataReceived(
                stream_id=msg.stream_id, timestamp=ts, name=values[0], args=tuple(values[1:]), payload=payload
            )
        )

    def _control(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        p = msg.payload
        if t == MessageType.SET_CHUNK_SIZE or t == MessageType.ABORT:
            return  # the reader applied it already
        if t == MessageType.ACKNOWLEDGEMENT:
            if len(p) >= 4:
                events.append(AckReceived(sequence=int.from_bytes(p[:4], "big")))
        elif t == MessageType.WINDOW_ACK_SIZE:
            if len(p) < 4:
                raise RemoteProtocolError(f"Window Acknowledgement Size of {len(p)} bytes, want 4")
            self._ack_window = int.from_bytes(p[:4], "big")
        elif t == MessageType.USER_CONTROL:
            if len(p) < 2:
                raise RemoteProtocolError(f"user control message of {len(p)} bytes")
            event = int.from_bytes(p[:2], "big")
            if event == UC_PING_REQUEST and len(p) >= 6:
                self.send_user_control(UC_PING_RESPONSE, int.from_bytes(p[2:6], "big"))
            elif event == UC_SET_BUFFER_LENGTH and len(p) >= 10:
                self.peer_buffer_ms = int.from_bytes(p[6:10], "big")
        # Set Peer Bandwidth, shared objects and unknown types: nothing to do for a relay.

    def _command(
        self, stream_id: int, name: str, tid: float, args: tuple[object, ...], events: list[Event]
    ) -> None:
        raise NotImplementedError


def _split_aggregate(msg: Message) -> list[Message]:
    """Split an aggregate message (RTMP spec 7.1.6): FLV tags whose timestamps are relative to the first."""
    out: list[Message] = []
    p = msg.payload
    pos = 0
    first_ts: int | None = None
    while len(p) - pos >= 11:
        tag_type = p[pos]
        size = int.from_bytes(p[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(p[pos + 4 : pos + 7], "big") | (p[pos + 7] << 24)
        body_end = pos + 11 + size
        if body_end > len(p):
            raise RemoteProtocolError(f"aggregate sub-message of {size} bytes overruns the message")
        if first_ts is None:
            first_ts = ts
        stamp = (msg.timestamp + ts - first_ts) & 0xFFFFFFFF
        if tag_type in (MessageType.AUDIO, MessageType.VIDEO, MessageType.DATA_AMF0):
            out.append(Message(msg.csid, tag_type, msg.stream_id, stamp, p[pos + 11 : body_end]))
        pos = body_end + 4  # back pointer
    return out


class ServerSession(Connection):
    """The server side of one RTMP connection.

    Args:
        rng: Random bytes for the handshake.
        epoch_ms: Our uptime in ms, for the handshake's time field.
        chunk_size: Outgoing chunk size, announced after connect.
        window_ack_size: Window Acknowledgement Size and peer bandwidth we announce.
        max_message_size, amf_limits: As for `Connection`.
    """

    def __init__(
        self,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        epoch_ms: int = 0,
        chunk_size: int = 4096,
        window_ack_size: int = 5_000_000,
        max_message_size: int = 16 * 1024 * 1024,
        amf_limits: amf0.Limits = amf0.DEFAULT_LIMITS,
    ) -> None:
        super().__init__(chunk_size=chunk_size, max_message_size=max_message_size, amf_limits=amf_limits)
        self._handshake = ServerHandshake(rng=rng, epoch_ms=epoch_ms)
        self._window = window_ack_size
        self._connect: ConnectRequested | None = None
        self._deferred: list[Message] = []  # arrived after connect, before the driver answered it
        self._deferred_bytes = 0
        self._streams: set[int] = set()
        self._next_stream = 1
        self.fourcc_list: tuple[str, ...] = ()
        self.app = ""

    # -- commands from the client ---------------------------------------------------------------------

    def _dispatch(self, msg: Message, events: list[Event]) -> None:
        if self.state is State.CONNECTING and self._connect is not None:
            # Clients may pipeline createStream/play behind connect; hold them until it is answered.
            self._deferred_bytes += len(msg.payload) + 16
            if self._deferred_bytes > _MAX_DEFERRED_BYTES:
                raise RemoteProtocolError(
                    f"more than {_MAX_DEFERRED_BYTES} bytes sent before connect was answered"
                )
            self._deferred.append(msg)
            return
        super()._dispatch(msg, events)

    def _command(
        self, stream_id: int, name: str, tid: float, args: tuple[object, ...], events: list[Event]
    ) -> None:
        if name == "connect":
            self._on_connect(tid, args, events)
            return
        if self.state is not State.CONNECTED:
            raise RemoteProtocolError(f"command {name!r} before connect was accepted")
        if name == "createStream":
            if len(self._streams) >= _MAX_STREAMS:
                self.send_command(
                    0, "_error", tid, None, _info("error", "NetConnection.Call.Failed", "too many streams")
                )
                return
            sid = self._next_stream
            self._next_stream += 1
            self._streams.add(sid)
            self.send_command(0, "_result", tid, None, float(sid))
        elif name == "publish":
            raw = _arg_str(args, 1, "publish", "name")
            mode = _arg_str(args, 2, "publish", "type", default="live")
            stream, query = split_query(raw)
            events.append(
                PublishRequested(stream_id=self._stream(stream_id), name=stream, query=query, mode=mode)
            )
        elif name == "play":
            raw = _arg_str(args, 1, "play", "name")
            start = args[2] if len(args) > 2 and isinstance(args[2], float | int) else -2.0
            stream, query = split_query(raw)
            events.append(
                PlayRequested(stream_id=self._stream(stream_id), name=stream, query=query, start=float(start))
            )
        elif name in ("deleteStream", "closeStream", "FCUnpublish"):
            target = stream_id
            if name == "deleteStream" and len(args) > 1 and isinstance(args[1], float | int):
                target = int(args[1])
                self._streams.discard(target)
            events.append(StreamClosed(stream_id=target, command=name))
        elif name in ("releaseStream", "FCPublish", "getStreamLength", "_checkbw", "FCSubscribe"):
            if name == "FCPublish":
                stream = split_query(_arg_str(args, 1, name, "name", default=""))[0]
                self.send_command(
                    0, "onFCPublish", 0.0, None, _info("status", "NetStream.Publish.Start", stream)
                )
            if tid:
                self.send_command(
                    0, "_result", tid, None, 0.0 if name == "getStreamLength" else amf0.UNDEFINED
                )
        elif name in ("receiveAudio", "receiveVideo", "pause", "seek", "_result", "_error", "onStatus"):
            events.append(CommandReceived(stream_id=stream_id, name=name, transaction_id=tid, args=args))
        else:
            events.append(CommandReceived(stream_id=stream_id, name=name, transaction_id=tid, args=args))
            if tid:
                self.send_command(
                    stream_id,
                    "_error",
                    tid,
                    None,
                    _info("error", "NetConnection.Call.Failed", f"unknown {name}"),
                )

    def _stream(self, stream_id: int) -> int:
        if stream_id == 0:
            # Some clients publish on the NetConnection stream; give them the first stream id.
            return 1 if not self._streams else min(self._streams)
        if stream_id not in self._streams:
            if len(self._streams) >= _MAX_STREAMS:
                raise RemoteProtocolError(f"command on unknown stream {stream_id}")
            self._streams.add(stream_id)
        return stream_id

    def _on_connect(self, tid: float, args: tuple[object, ...], events: list[Event]) -> None:
        if self.state is not State.CONNECTING:
            raise RemoteProtocolError("connect sent twice")
        obj = args[0] if args else None
        if not isinstance(obj, Mapping):
            raise RemoteProtocolError(f"connect without a command object: {obj!r:.80}")
        app_raw = obj.get("app", "")
        if not isinstance(app_raw, str):
            raise RemoteProtocolError(f"connect: app={app_raw!r:.80} is not a string")
        tc_url = obj.get("tcUrl", "")
        app, query = split_query(app_raw.strip("/"))
        if not query and isinstance(tc_url, str):
            query = split_query(tc_url)[1]
        fourccs = obj.get("fourCcList", ())
        fourcc_list = (
            tuple(x for x in fourccs if isinstance(x, str)) if isinstance(fourccs, list | tuple) else ()
        )
        infomap = obj.get("videoFourCcInfoMap")
        if isinstance(infomap, Mapping):  # Enhanced RTMP v2 announces codecs here too
            fourcc_list += tuple(k for k in infomap if isinstance(k, str) and k not in fourcc_list)
        encoding = obj.get("objectEncoding", 0.0)
        flash_ver = obj.get("flashVer", "")
        ev = ConnectRequested(
            transaction_id=tid,
            app=app,
            query=query,
            tc_url=tc_url if isinstance(tc_url, str) else "",
            fourcc_list=fourcc_list,
            object_encoding=float(encoding) if isinstance(encoding, float | int) else 0.0,
            flash_ver=flash_ver if isinstance(flash_ver, str) else "",
        )
        self._connect = ev
        self.fourcc_list = fourcc_list
        self.app = app
        events.append(ev)

    # -- answers from the driver ----------------------------------------------------------------------

    def accept_connect(self, *, fourcc_list: tuple[str, ...] = ()) -> list[Event]:
        """Accept the pending connect: window, bandwidth, chunk size, then `_result` Connect.Success.

        Args:
            fourcc_list: Enhanced RTMP codecs the server relays, announced back in the result.

        Returns:
            Events of messages the client sent behind connect without waiting for the answer.

        Raises:
            LocalProtocolError: No connect is pending.
            RemoteProtocolError: One of those held messages is malformed.
        """
        ev = self._pending_connect()
        self.send_window_ack_size(self._window)
        self.send_peer_bandwidth(self._window)
        self.set_chunk_size(self._wanted_chunk_size)
        props: dict[str, object] = {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0}
        if fourcc_list:
            props["fourCcList"] = list(fourcc_list)
        info = _info("status", "NetConnection.Connect.Success", "Connection succeeded.")
        info["objectEncoding"] = ev.object_encoding
        self.send_command(0, "_result", ev.transaction_id, props, info)
        self.state = State.CONNECTED
        events: list[Event] = []
        deferred, self._deferred, self._deferred_bytes = self._deferred, [], 0
        try:
            for msg in deferred:
                self._dispatch(msg, events)
        except RemoteProtocolError:
            self.state = State.ERROR
            raise
        return events

    def reject_connect(self, code: str, description: str) -> None:
        """Refuse the pending connect with `_error` (e.g. NetConnection.Connect.Rejected); then close."""
        ev = self._pending_connect()
        self.send_command(0, "_error", ev.transaction_id, None, _info("error", code, description))
        self._deferred = []
        self.state = State.CLOSED

    def _pending_connect(self) -> ConnectRequested:
        if self._connect is None or self.state is not State.CONNECTING:
            raise LocalProtocolError(f"no connect to answer in state {self.state.name}")
        return self._connect

    def accept_publish(self, stream_id: int, name: str) -> None:
        """Tell the client its publish started (StreamBegin, NetStream.Publish.Start)."""
        self.send_stream_begin(stream_id)
        self.send_status(stream_id, "NetStream.Publish.Start", f"{name} is now published.", details=name)

    def reject(self, stream_id: int, code: str, description: str) -> None:
        """Refuse a publish or play with an error onStatus (e.g. NetStream.Publish.BadName)."""
        self.send_status(stream_id, code, description, level="error")

    def accept_play(self, stream_id: int, name: str) -> None:
        """Start a play: StreamBegin, Play.Reset, Play.Start, |RtmpSampleAccess."""
        self.send_stream_begin(stream_id)
        self.send_status(stream_id, "NetStream.Play.Reset", f"Playing and resetting {name}.", details=name)
        self.send_status(stream_id, "NetStream.Play.Start", f"Started playing {name}.", details=name)
        self.send_message(
            CSID_STREAM, MessageType.DATA_AMF0, stream_id, 0, amf0.encode("|RtmpSampleAccess", True, True)
        )


def _info(level: str, code: str, description: str) -> dict[str, object]:
    return {"level": level, "code": code, "description": description}


def _arg_str(
    args: tuple[object, ...], index: int, command: str, what: str, default: str | None = None
) -> str:
    value = args[index] if len(args) > index else default
    if isinstance(value, str):
        return value
    if value is None and default is not None:
        return default
    raise RemoteProtocolError(f"{command}: {what}={value!r:.80} is not a string")
