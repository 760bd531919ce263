"""RTMP chunk stream: reassemble messages from chunks, and split messages into chunks.

Theory of operation
-------------------
An RTMP connection after the handshake is a sequence of chunks (Adobe RTMP spec 5.3). Each chunk has a
basic header (format 0-3 and a chunk stream id, 1 to 3 bytes), a message header whose size depends on the
format (11, 7, 3 or 0 bytes), an optional 4-byte extended timestamp, and at most `chunk_size` bytes of one
message's payload. Formats 1-3 inherit what they leave out from the previous chunk on the same chunk
stream, so the reader keeps per chunk stream state.

Timestamps. A format-0 header carries an absolute timestamp, formats 1 and 2 a delta, and a format-3 chunk
that starts a new message applies the previous delta again (for a format-0 predecessor, its timestamp:
librtmp and FFmpeg read it that way). A field of 0xFFFFFF means a 4-byte extended timestamp follows; a
format-3 chunk repeats it when the chunk stream's last header used one. Some senders leave it out of
format-3 continuation chunks, so the reader peeks: the four bytes are taken as the extended timestamp only
when they equal it. Message timestamps are 32-bit and wrap; undoing the wrap is the session's job.

Control messages that change the reader itself take effect at once, mid-buffer: Set Chunk Size (type 1)
for every following chunk, Abort (type 2) by dropping the named chunk stream's partial message. They are
also returned like every other message.

Limits. Every buffer is capped: a message longer than `max_message_size`, more than `max_chunk_streams`
chunk streams, or more than `max_pending_bytes` of partial messages raise `RemoteProtocolError`, as does
any malformed header. Memory follows the bytes actually received, never a length the peer declares.

Writing. `encode_message` builds a message's chunks with a format-0 header and format-3 continuations.
That costs 11 bytes per message over header compression but makes a message's bytes independent of what
went before on the connection, so the relay builds them once and sends the same bytes to every player
with that chunk size.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from appliance.media.rtmp.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkReader",
    "Message",
    "MessageType",
    "encode_message",
]

DEFAULT_CHUNK_SIZE = 128  # RTMP spec 5.4.1: until a Set Chunk Size says otherwise
MAX_CHUNK_SIZE = 0x7FFFFFFF  # 31 bits: the top bit of Set Chunk Size must be 0
_EXTENDED = 0xFFFFFF
_MASK32 = 0xFFFFFFFF


class MessageType(enum.IntEnum):
    """RTMP message type ids (RTMP spec 5.4, 7.1)."""

    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


@dataclass(frozen=True, slots=True)
class Message:
    """One reassembled RTMP message.

    Attributes:
        csid: The chunk stream it arrived on.
        type_id: Its message type (see `MessageType`; unknown ids are passed on).
        stream_id: The message stream id (0 for control and NetConnection commands).
        timestamp: Its 32-bit timestamp in ms, as on the wire (it wraps).
        payload: The message body.
    """

    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class _InStream:
    """What the reader remembers about one chunk stream."""

    __slots__ = (
        "delta",
        "ext",
        "has_header",
        "length",
        "parts",
        "received",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.has_header = False
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.ext: int | None = None  # the extended timestamp field of the last header, if it had one
        self.parts: list[bytes] = []
        self.received = 0  # payload bytes of the current message so far; 0 = no message in progress


class ChunkReader:
    """Reassembles RTMP messages from the bytes after the handshake.

    Args:
        max_message_size: Largest message accepted, in bytes.
        max_chunk_streams: Most chunk streams one peer may use.
        max_pending_bytes: Most bytes of incomplete messages held across all chunk streams.

    Attributes:
        chunk_size: The peer's current chunk size.
        bytes_received: Bytes fed so far (for acknowledgements and error offsets).
    """

    def __init__(
        self,
        *,
        max_message_size: int = 16 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_pending_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self._max_message = max_message_size
        self._max_streams = max_chunk_streams
        self._max_pending = max_pending_bytes
        self._pending = 0
        self._streams: dict[int, _InStream] = {}
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes and return the messages they complete.

        Args:
            data: Bytes from the peer, split anywhere.

        Returns:
            Complete messages in arrival order.

        Raises:
            RemoteProtocolError: A malformed chunk or a limit was passed. The reader is unusable after.
        """
        self.bytes_received += len(data)
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        while True:
            used = self._chunk(buf, pos, end, out)
            if used == 0:
                break
            pos += used
        if pos:
            del buf[:pos]
            self._base += pos
        return out

    def _chunk(self, buf: bytearray, pos: int, end: int, out: list[Message]) -> int:
        """Parse one chunk at `pos`; return the bytes it used, or 0 if it is not complete yet."""
        if pos >= end:
            return 0
        start = pos
        first = buf[pos]
        fmt = first >> 6
        csid = first & 0x3F
        pos += 1
        if csid == 0:
            if end - pos < 1:
                return 0
            csid = 64 + buf[pos]
            pos += 1
        elif csid == 1:
            if end - pos < 2:
                return 0
            csid = 64 + buf[pos] + (buf[pos + 1] << 8)
            pos += 2
        header_len = (11, 7, 3, 0)[fmt]
        if end - pos < header_len:
            return 0
        st = self._streams.get(csid)
        if st is None:
            if len(self._streams) >= self._max_streams:
                raise RemoteProtocolError(
                    f"chunk stream {csid}: more than {self._max_streams} chunk streams",
                    offset=self._base + start,
                )
            if fmt != 0:
                raise RemoteProtocolError(
                    f"chunk stream {csid}: first chunk has format {fmt}, want 0", offset=self._base + start
                )
            st = self._streams[csid] = _InStream()
        elif fmt != 3 and st.received:
            raise RemoteProtocolError(
                f"chunk stream {csid}: format {fmt} header in the middle of a message "
                f"({st.received}/{st.length} bytes)",
                offset=self._base + start,
            )
        ts_field = 0
        length = st.length
        type_id = st.type_id
        stream_id = st.stream_id
        if fmt <= 2:
            ts_field = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if fmt <= 1:
                length = (buf[pos + 3] << 16) | (buf[pos + 4] << 8) | buf[pos + 5]
                type_id = buf[pos + 6]
                if fmt == 0:
                    stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
            pos += header_len
            ext: int | None = None
            if ts_field == _EXTENDED:
                if end - pos < 4:
                    return 0
                ext = int.from_bytes(buf[pos : pos + 4], "big")
                ts_field = ext
                pos += 4
        else:
            if not st.has_header:
                raise RemoteProtocolError(
                    f"chunk stream {csid}: format 3 chunk without a previous header",
                    offset=self._base + start,
                )
            ext = st.ext
            if ext is not None:
                # Present by the spec; left out by some senders on continuation chunks (see module doc).
                if end - pos < 4:
                    return 0
                if int.from_bytes(buf[pos : pos + 4], "big") == ext:
                    pos += 4
                elif not st.received:
                    # A new message must repeat it; a different value means it is the new delta.
                    ext = int.from_bytes(buf[pos : pos + 4], "big")
                    pos += 4
        new_message = st.received == 0
        if new_message and length > self._max_message:
            raise RemoteProtocolError(
                f"chunk stream {csid}: message of {length} bytes exceeds the {self._max_message} byte limit",
                offset=self._base + start,
            )
        want = min(self.chunk_size, length - st.received)
        if end - pos < want:
            return 0
        # The chunk is complete: commit the header state.
        if fmt <= 2:
            st.ext = ext
            if fmt == 0:
                st.timestamp = ts_field
                st.delta = ts_field
            else:
                st.delta = ts_field
                st.timestamp = (st.timestamp + ts_field) & _MASK32
            st.length = length
            st.type_id = type_id
            st.stream_id = stream_id
            st.has_header = True
        elif new_message:
            if ext is not None and ext != st.ext:
                st.delta = ext
                st.ext = ext
            st.timestamp = (st.timestamp + st.delta) & _MASK32
        piece = bytes(buf[pos : pos + want])
        pos += want
        if length == 0:
            self._complete(st, csid, b"", out)
            return pos - start
        st.parts.append(piece)
        st.received += want
        self._pending += want
        if self._pending > self._max_pending:
            raise RemoteProtocolError(
                f"more than {self._max_pending} bytes of incomplete messages", offset=self._base + start
            )
        if st.received == length:
            payload = st.parts[0] if len(st.parts) == 1 else b"".join(st.parts)
            self._pending -= length
            st.parts = []
            st.received = 0
            self._complete(st, csid, payload, out)
        return pos - start

    def _complete(self, st: _InStream, csid: int, payload: bytes, out: list[Message]) -> None:
        msg = Message(csid, st.type_id, st.stream_id, st.timestamp, payload)
        if st.type_id == MessageType.SET_CHUNK_SIZE:
            self.chunk_size = _parse_chunk_size(payload, self._base)
        elif st.type_id == MessageType.ABORT:
            self._abort(payload)
        out.append(msg)

    def _abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RemoteProtocolError(f"Abort message of {len(payload)} bytes, want 4", offset=self._base)
        victim = self._streams.get(int.from_bytes(payload[:4], "big"))
        if victim is not None and victim.received:
            self._pending -= victim.received
            victim.parts = []
            victim.received = 0


def _parse_chunk_size(payload: bytes, offset: int) -> int:
    if len(payload) < 4:
        raise RemoteProtocolError(f"Set Chunk Size of {len(payload)} bytes, want 4", offset=offset)
    size = int.from_bytes(payload[:4], "big")
    if size & 0x80000000 or size == 0:
        raise RemoteProtocolError(f"Set Chunk Size {size}: want 1..{MAX_CHUNK_SIZE}", offset=offset)
    return size


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes((fmt << 6 | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        rest = csid - 64
        return bytes((fmt << 6 | 1, rest & 0xFF, rest >> 8))
    raise ValueError(f"chunk stream id {csid}: want 2..65599")


def encode_message(
    csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes, chunk_size: int
) -> bytes:
    """Split one message into chunks: a format-0 chunk, then format-3 continuations.

    Args:
        csid: Chunk stream id, 2..65599 (2 is for protocol control messages).
        type_id: Message type id.
        stream_id: Message stream id.
        timestamp: Timestamp in ms; taken modulo 2**32 (RTMP timestamps wrap).
        payload: The message body (at most 0xFFFFFF bytes: the length field has 24 bits).
        chunk_size: Our current outgoing chunk size.

    Returns:
        The chunks' bytes.

    Raises:
        ValueError: An argument is out of range.
    """
    size = len(payload)
    if size > 0xFFFFFF:
        raise ValueError(f"message of {size} bytes: RTMP lengths have 24 bits")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size={chunk_size}: want 1..{MAX_CHUNK_SIZE}")
    ts = timestamp & _MASK32
    extended = ts >= _EXTENDED
    ext = ts.to_bytes(4, "big") if extended else b""
    header = b"".join(
        (
            _basic_header(0, csid),
            (_EXTENDED if extended else ts).to_bytes(3, "big"),
            size.to_bytes(3, "big"),
            bytes((type_id,)),
            stream_id.to_bytes(4, "little"),
            ext,
        )
    )
    if size <= chunk_size:
        return header + payload
    continuation = _basic_header(3, csid) + ext
    parts = [header, payload[:chunk_size]]
    for offset in range(chunk_size, size, chunk_size):
        parts.append(continuation)
        parts.append(payload[offset : offset + chunk_size])
    return b"".join(parts)
