"""The chunk stream core: all four header types, extended timestamps, control messages, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.media.rtmp.chunk import ChunkReader, Message, MessageType, encode_message
from appliance.media.rtmp.errors import RemoteProtocolError
from tests.fuzz import examples


def header(
    fmt: int,
    csid: int,
    ts: int | None = None,
    length: int | None = None,
    type_id: int | None = None,
    stream_id: int | None = None,
    ext: int | None = None,
) -> bytes:
    """Hand-build a chunk header as the spec draws it (RTMP spec 5.3.1)."""
    if csid < 64:
        out = bytes((fmt << 6 | csid,))
    elif csid < 320:
        out = bytes((fmt << 6, csid - 64))
    else:
        out = bytes((fmt << 6 | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
    if fmt <= 2:
        assert ts is not None
        out += ts.to_bytes(3, "big")
    if fmt <= 1:
        assert length is not None and type_id is not None
        out += length.to_bytes(3, "big") + bytes((type_id,))
    if fmt == 0:
        assert stream_id is not None
        out += stream_id.to_bytes(4, "little")
    if ext is not None:
        out += ext.to_bytes(4, "big")
    return out


def feed_all(reader: ChunkReader, data: bytes) -> list[Message]:
    return reader.feed(data)


def set_chunk_size(size: int) -> bytes:
    return encode_message(2, MessageType.SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"), 128)


@pytest.mark.parametrize("csid", [2, 3, 63, 64, 319, 320, 65599])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 1000, 70_000])
def test_encode_then_read_round_trips(csid: int, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = encode_message(csid, 9, 1, 1234, payload, 128)
    (msg,) = ChunkReader().feed(data)
    assert msg == Message(csid, 9, 1, 1234, payload)


def test_format_1_2_3_headers_inherit_and_apply_deltas() -> None:
    r = ChunkReader()
    data = (
        header(0, 4, ts=1000, length=3, type_id=8, stream_id=1)
        + b"abc"
        + header(1, 4, ts=20, length=2, type_id=9)
        + b"de"  # new length and type, delta 20
        + header(2, 4, ts=30)
        + b"fg"  # same length and type, delta 30
        + header(3, 4)
        + b"hi"  # everything again, delta 30 once more
    )
    msgs = r.feed(data)
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in msgs] == [
        (8, 1, 1000, b"abc"),
        (9, 1, 1020, b"de"),
        (9, 1, 1050, b"fg"),
        (9, 1, 1080, b"hi"),
    ]


def test_format_3_after_format_0_reuses_its_timestamp_as_delta() -> None:
    # librtmp and FFmpeg read it this way; a sender that means "same timestamp" uses format 2 with 0.
    r = ChunkReader()
    msgs = r.feed(header(0, 5, ts=40, length=1, type_id=8, stream_id=1) + b"a" + header(3, 5) + b"b")
    assert [m.timestamp for m in msgs] == [40, 80]


def test_continuation_chunks_split_at_chunk_size() -> None:
    r = ChunkReader()
    payload = bytes(300)
    data = header(0, 6, ts=0, length=300, type_id=9, stream_id=1) + payload[:128]
    data += header(3, 6) + payload[128:256] + header(3, 6) + payload[256:]
    assert r.feed(data) == [Message(6, 9, 1, 0, payload)]


@pytest.mark.parametrize("repeat_on_continuation", [True, False])
def test_extended_timestamp_past_4h39m(repeat_on_continuation: bool) -> None:
    ts = 0x01000000  # 4h39m37s: past the 24-bit field
    r = ChunkReader()
    payload = bytes(range(200))
    data = header(0, 6, ts=0xFFFFFF, length=200, type_id=9, stream_id=1, ext=ts) + payload[:128]
    data += header(3, 6, ext=ts if repeat_on_continuation else None) + payload[128:]
    assert r.feed(data) == [Message(6, 9, 1, ts, payload)]


def test_extended_delta_on_format_1_and_following_format_3() -> None:
    r = ChunkReader()
    data = header(0, 4, ts=10, length=1, type_id=8, stream_id=1) + b"a"
    data += header(1, 4, ts=0xFFFFFF, length=1, type_id=8, ext=0x1000000) + b"b"
    data += header(3, 4, ext=0x1000000) + b"c"
    assert [m.timestamp for m in r.feed(data)] == [10, 10 + 0x1000000, 10 + 0x2000000]


def test_timestamps_wrap_at_32_bits() -> None:
    r = ChunkReader()
    data = header(0, 4, ts=0xFFFFFF, length=1, type_id=8, stream_id=1, ext=0xFFFFFFF0) + b"a"
    data += header(2, 4, ts=0x20) + b"b"
    assert [m.timestamp for m in r.feed(data)] == [0xFFFFFFF0, 0x10]


def test_encoder_writes_extended_timestamp_on_every_chunk() -> None:
    data = encode_message(6, 9, 1, 0x12345678, bytes(300), 128)
    assert data[1:4] == b"\xff\xff\xff"
    assert data[12:16] == (0x12345678).to_bytes(4, "big")
    # Continuations: one byte basic header (format 3) then the extended timestamp again.
    second = 1 + 11 + 4 + 128
    assert data[second] == 0xC6 and data[second + 1 : second + 5] == (0x12345678).to_bytes(4, "big")
    assert ChunkReader().feed(data)[0].timestamp == 0x12345678


def test_set_chunk_size_applies_to_the_rest_of_the_same_buffer() -> None:
    r = ChunkReader()
    big = bytes(5000)
    data = set_chunk_size(4096) + encode_message(6, 9, 1, 0, big, 4096)
    msgs = r.feed(data)
    assert msgs[0].type_id == MessageType.SET_CHUNK_SIZE and r.chunk_size == 4096
    assert msgs[1].payload == big


def test_largest_chunk_size_is_accepted() -> None:
    r = ChunkReader()
    r.feed(set_chunk_size(0x7FFFFFFF))
    payload = bytes(70_000)
    assert r.feed(encode_message(6, 9, 1, 0, payload, 0x7FFFFFFF))[0].payload == payload


@pytest.mark.parametrize("size", [0, 0x80000000, 0xFFFFFFFF])
def test_bad_chunk_size_is_a_protocol_error(size: int) -> None:
    with pytest.raises(RemoteProtocolError, match="Set Chunk Size"):
        ChunkReader().feed(set_chunk_size(size))


def test_abort_drops_the_partial_message() -> None:
    r = ChunkReader()
    partial = header(0, 6, ts=0, length=300, type_id=9, stream_id=1) + bytes(128)
    abort = encode_message(2, MessageType.ABORT, 0, 0, (6).to_bytes(4, "big"), 128)
    fresh = header(0, 6, ts=5, length=2, type_id=9, stream_id=1) + b"ok"
    msgs = r.feed(partial + abort + fresh)
    assert [m.type_id for m in msgs] == [MessageType.ABORT, 9]
    assert msgs[1].payload == b"ok"


def test_interleaved_chunk_streams_reassemble_independently() -> None:
    a = encode_message(6, 8, 1, 0, b"A" * 200, 128)
    v = encode_message(7, 9, 1, 0, b"V" * 200, 128)
    # audio chunk 1, video chunk 1, audio chunk 2, video chunk 2
    a1, a2 = a[: 12 + 128], a[12 + 128 :]
    v1, v2 = v[: 12 + 128], v[12 + 128 :]
    msgs = ChunkReader().feed(a1 + v1 + a2 + v2)
    assert [(m.csid, m.payload[:1], len(m.payload)) for m in msgs] == [(6, b"A", 200), (7, b"V", 200)]


def test_first_chunk_of_a_stream_must_be_format_0() -> None:
    with pytest.raises(RemoteProtocolError, match="format 1, want 0"):
        ChunkReader().feed(header(1, 4, ts=0, length=1, type_id=8) + b"x")


def test_new_header_in_the_middle_of_a_message_is_refused() -> None:
    data = header(0, 4, ts=0, length=200, type_id=8, stream_id=1) + bytes(128)
    data += header(0, 4, ts=0, length=1, type_id=8, stream_id=1) + b"x"
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        ChunkReader().feed(data)


def test_message_size_limit() -> None:
    r = ChunkReader(max_message_size=1000)
    with pytest.raises(RemoteProtocolError, match="exceeds the 1000 byte limit"):
        r.feed(header(0, 4, ts=0, length=1001, type_id=9, stream_id=1))


def test_chunk_stream_limit() -> None:
    r = ChunkReader(max_chunk_streams=3)
    data = b"".join(encode_message(csid, 8, 1, 0, b"x", 128) for csid in (3, 4, 5))
    r.feed(data)
    with pytest.raises(RemoteProtocolError, match="more than 3 chunk streams"):
        r.feed(encode_message(6, 8, 1, 0, b"x", 128))


def test_pending_bytes_limit_counts_received_bytes_not_declared_lengths() -> None:
    r = ChunkReader(max_pending_bytes=300)
    # Declaring large messages costs nothing; sending their bytes does.
    for csid in (3, 4):
        r.feed(header(0, csid, ts=0, length=10_000, type_id=9, stream_id=1) + bytes(128))
    with pytest.raises(RemoteProtocolError, match="incomplete messages"):
        r.feed(header(0, 5, ts=0, length=10_000, type_id=9, stream_id=1) + bytes(128))


def test_zero_length_message() -> None:
    assert ChunkReader().feed(header(0, 4, ts=7, length=0, type_id=8, stream_id=1)) == [
        Message(4, 8, 1, 7, b"")
    ]


messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 6, 7, 64, 400]),
        st.sampled_from([8, 9, 18, 20]),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=600),
    ),
    max_size=8,
)


@settings(max_examples=examples(200))
@given(messages, st.sampled_from([1, 7, 128, 4096]), st.data())
def test_any_split_of_the_bytes_gives_the_same_messages(
    msgs: list[tuple[int, int, int, bytes]], chunk_size: int, data: st.DataObject
) -> None:
    wire = (set_chunk_size(chunk_size) if chunk_size != 128 else b"") + b"".join(
        encode_message(c, t, 1, ts, p, chunk_size) for c, t, ts, p in msgs
    )
    whole = [m for m in ChunkReader().feed(wire) if m.type_id != MessageType.SET_CHUNK_SIZE]
    assert [(m.csid, m.type_id, m.timestamp, m.payload) for m in whole] == msgs
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    r = ChunkReader()
    split: list[Message] = []
    last = 0
    for cut in [*cuts, len(wire)]:
        split += r.feed(wire[last:cut])
        last = cut
    assert [m for m in split if m.type_id != MessageType.SET_CHUNK_SIZE] == whole


@settings(max_examples=examples(500))
@given(st.binary(max_size=2000))
def test_any_bytes_give_messages_or_a_protocol_error(data: bytes) -> None:
    r = ChunkReader(max_message_size=100_000, max_pending_bytes=200_000)
    try:
        for msg in r.feed(data):
            assert isinstance(msg.payload, bytes)
    except RemoteProtocolError:
        pass
