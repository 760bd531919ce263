"""The session cores, client and server linked in memory (no sockets): command flow and control messages."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.rtmp import amf0
from appliance.media.rtmp.chunk import MessageType, encode_message
from appliance.media.rtmp.client_session import ClientSession
from appliance.media.rtmp.errors import LocalProtocolError, RemoteProtocolError
from appliance.media.rtmp.events import (
    AckReceived,
    CommandReceived,
    ConnectRequested,
    DataReceived,
    Event,
    MediaReceived,
    PlayRequested,
    PublishRequested,
    StatusReceived,
    StreamClosed,
)
from appliance.media.rtmp.session import ServerSession, State, split_query
from tests.fuzz import examples


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)


class Pair:
    """A client and a server session passing bytes to each other."""

    def __init__(self, *, fourccs: tuple[str, ...] = (), app: str = "live") -> None:
        r = rng()
        self.client = ClientSession(app=app, tc_url=f"rtmp://h/{app}", fourcc_list=fourccs, rng=r.randbytes)
        self.server = ServerSession(rng=r.randbytes)
        self.client.initiate()

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Exchange bytes until both sides are quiet; return (server events, client events)."""
        server_events: list[Event] = []
        client_events: list[Event] = []
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                server_events += self.server.receive_data(to_server)
            to_client = self.server.data_to_send()
            if to_client:
                client_events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                return server_events, client_events

    def connected(self) -> ConnectRequested:
        server_events, _ = self.pump()
        connect = next(e for e in server_events if isinstance(e, ConnectRequested))
        self.server.accept_connect()
        self.pump()
        assert self.client.state is State.CONNECTED and self.server.state is State.CONNECTED
        return connect


def test_connect_publish_and_media_flow() -> None:
    pair = Pair(app="live?key=abc")
    connect = pair.connected()
    assert connect.app == "live" and connect.query == {"key": "abc"}
    tid = pair.client.create_stream()
    _, client_events = pair.pump()
    result = next(e for e in client_events if isinstance(e, StatusReceived) and e.transaction_id == tid)
    sid = int(result.args[1])  # type: ignore[call-overload]
    pair.client.publish(sid, "cam?token=1")
    server_events, _ = pair.pump()
    (publish,) = [e for e in server_events if isinstance(e, PublishRequested)]
    assert (publish.stream_id, publish.name, publish.query, publish.mode) == (
        sid,
        "cam",
        {"token": "1"},
        "live",
    )
    pair.server.accept_publish(sid, "cam")
    _, client_events = pair.pump()
    assert any(isinstance(e, StatusReceived) and e.code == "NetStream.Publish.Start" for e in client_events)
    pair.client.send_media(sid, MessageType.VIDEO, 40, b"\x17\x01\x00\x00\x00frame")
    pair.client.send_media(
        sid, MessageType.DATA_AMF0, 0, amf0.encode("@setDataFrame", "onMetaData", {"w": 1.0})
    )
    server_events, _ = pair.pump()
    assert server_events[0] == MediaReceived(
        stream_id=sid, type_id=9, timestamp=40, payload=b"\x17\x01\x00\x00\x00frame"
    )
    data = server_events[1]
    assert isinstance(data, DataReceived) and data.name == "onMetaData" and data.args == ({"w": 1.0},)


def test_play_and_close_stream() -> None:
    pair = Pair()
    pair.connected()
    pair.client.play(1, "cam")
    pair.client.delete_stream(1)
    server_events, _ = pair.pump()
    assert [type(e) for e in server_events] == [PlayRequested, StreamClosed]


def test_connect_can_be_refused() -> None:
    pair = Pair()
    pair.pump()
    pair.server.reject_connect("NetConnection.Connect.InvalidApp", "no such app")
    with pytest.raises(RemoteProtocolError, match=r"NetConnection\.Connect\.InvalidApp"):
        pair.pump()
    assert pair.server.state is State.CLOSED


def test_enhanced_rtmp_fourcc_list_is_read() -> None:
    pair = Pair(fourccs=("hvc1", "av01"))
    assert pair.connected().fourcc_list == ("hvc1", "av01")


def test_amf3_wrapped_connect_is_understood() -> None:
    server = ServerSession(rng=rng().randbytes)
    hs = ClientSession(app="x", tc_url="rtmp://h/x", rng=rng().randbytes)
    hs.initiate()
    server.receive_data(hs.data_to_send())
    hs.receive_data(server.data_to_send())
    c2 = hs.data_to_send()
    # Replace the client's own (AMF0) connect with a type-17 one: a format byte, then AMF0 values.
    handshake_end = 1536
    body = b"\x00" + amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
    events = server.receive_data(
        c2[:handshake_end] + encode_message(3, MessageType.COMMAND_AMF3, 0, 0, body, 128)
    )
    (connect,) = [e for e in events if isinstance(e, ConnectRequested)]
    assert connect.app == "live"


def test_ping_request_is_answered_and_acknowledgements_follow_the_window() -> None:
    pair = Pair()
    pair.connected()
    pair.client.send_window_ack_size(1000)  # the client asks the server to ack every 1000 bytes
    pair.server.send_ping(12345)
    _, client_events = pair.pump()
    for _ in range(3):
        pair.client.send_media(1, MessageType.VIDEO, 0, bytes(600))
    _server_events, client_events = pair.pump()
    acks = [e for e in client_events if isinstance(e, AckReceived)]
    assert acks and acks[-1].sequence >= 1000
    assert pair.server.bytes_sent > 0


def test_timestamps_unwrap_past_32_bits() -> None:
    pair = Pair()
    pair.connected()
    for ts in (0xFFFFFF00, 0xFFFFFFF0, 0x10, 0x20):
        pair.client.send_media(1, MessageType.AUDIO, ts, b"\xaf\x01x")
    server_events, _ = pair.pump()
    stamps = [e.timestamp for e in server_events if isinstance(e, MediaReceived)]
    assert stamps == [0xFFFFFF00, 0xFFFFFFF0, 0x100000010, 0x100000020]


def test_aggregate_message_is_split_into_its_tags() -> None:
    pair = Pair()
    pair.connected()

    def sub(tag_type: int, ts: int, body: bytes) -> bytes:
        head = bytes((tag_type,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        return head + bytes((ts >> 24,)) + b"\x00\x00\x00" + body + (11 + len(body)).to_bytes(4, "big")

    aggregate = sub(9, 1000, b"\x17\x01\x00\x00\x00v") + sub(8, 1020, b"\xaf\x01a")
    pair.client.send_message(7, MessageType.AGGREGATE, 1, 5000, aggregate)
    server_events, _ = pair.pump()
    assert [(e.type_id, e.timestamp) for e in server_events if isinstance(e, MediaReceived)] == [
        (9, 5000),
        (8, 5020),
    ]


def test_command_before_connect_is_a_protocol_error() -> None:
    server = ServerSession(rng=rng().randbytes)
    client = ClientSession(app="x", tc_url="rtmp://h/x", rng=rng().randbytes)
    client.initiate()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    c2 = client.data_to_send()[:1536]
    play = encode_message(3, MessageType.COMMAND_AMF0, 1, 0, amf0.encode("play", 0.0, None, "x"), 128)
    with pytest.raises(RemoteProtocolError, match="before connect"):
        server.receive_data(c2 + play)
    assert server.state is State.ERROR


def test_malformed_amf_is_a_protocol_error() -> None:
    pair = Pair()
    pair.connected()
    pair.client.send_message(3, MessageType.COMMAND_AMF0, 0, 0, b"\x02\x00\x10short")
    with pytest.raises(RemoteProtocolError, match="malformed AMF"):
        pair.pump()


def test_unknown_command_gets_an_error_result_and_an_event() -> None:
    pair = Pair()
    pair.connected()
    pair.client.send_command(0, "frobnicate", 7.0, None)
    server_events, client_events = pair.pump()
    assert any(isinstance(e, CommandReceived) and e.name == "frobnicate" for e in server_events)
    assert any(
        isinstance(e, StatusReceived) and e.name == "_error" and e.transaction_id == 7.0
        for e in client_events
    )


def test_answering_without_a_pending_connect_is_local_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        ServerSession().accept_connect()


def test_split_query() -> None:
    assert split_query("cam?key=a&x=1&key=b") == ("cam", {"key": "b", "x": "1"})
    assert split_query("cam") == ("cam", {})


def _client_bytes() -> bytes:
    """Everything a client sends in a connect, play and some media, recorded from a live pair."""
    pair = Pair()
    sent: list[bytes] = []
    while True:
        to_server = pair.client.data_to_send()
        sent.append(to_server)
        for e in pair.server.receive_data(to_server) if to_server else []:
            if isinstance(e, ConnectRequested):
                pair.server.accept_connect()
        to_client = pair.server.data_to_send()
        if to_client:
            pair.client.receive_data(to_client)
        if pair.client.state is State.CONNECTED and not to_server and not to_client:
            break
    pair.client.play(1, "cam")
    for ts in range(0, 400, 40):
        pair.client.send_media(1, MessageType.VIDEO, ts, bytes(range(200)))
    sent.append(pair.client.data_to_send())
    return b"".join(sent)


CLIENT_BYTES = _client_bytes()


def _accepting(server: ServerSession, data: bytes) -> list[Event]:
    events = server.receive_data(data) if data else []
    out: list[Event] = []
    for e in events:
        out.append(e)
        if isinstance(e, ConnectRequested):
            out += server.accept_connect()
    return out


@settings(max_examples=examples(100))
@given(st.lists(st.integers(1, 300), max_size=60))
def test_any_split_of_the_client_bytes_gives_the_same_events(cuts: list[int]) -> None:
    whole = _accepting(ServerSession(rng=rng().randbytes), CLIENT_BYTES)
    assert any(isinstance(e, PlayRequested) for e in whole)
    split_server = ServerSession(rng=rng().randbytes)
    split: list[Event] = []
    pos = 0
    for cut in [*cuts, len(CLIENT_BYTES)]:
        split += _accepting(split_server, CLIENT_BYTES[pos : pos + cut])
        pos += cut
    assert split == whole
