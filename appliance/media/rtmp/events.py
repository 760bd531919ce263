"""Events the RTMP session cores emit (past tense: each says what the peer did)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AckReceived",
    "CommandReceived",
    "ConnectRequested",
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "HandshakeCompleted",
    "MediaReceived",
    "PlayRequested",
    "PublishRequested",
    "StatusReceived",
    "StreamClosed",
]


class Event:
    """Base of the session events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted(Event):
    """The handshake finished. `digest` tells whether the peer used the digest (Flash-era) scheme."""

    digest: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequested(Event):
    """The client sent `connect`; answer with `accept_connect` or `reject_connect`.

    Attributes:
        app: The application name without its query (`live` for `rtmp://host/live?key=x`).
        query: The app's query parameters (`?key=...`), last value wins.
        tc_url: The tcUrl the client connected to (may hold a secret in its query: never log it whole).
        fourcc_list: Codecs the client announced in Enhanced RTMP's `fourCcList` (`hvc1`, `av01`, `*`...).
        object_encoding: 0 (AMF0) or 3 (AMF3), echoed in the answer.
        flash_ver: The client's flashVer string (`FMLE/3.0 (compatible; Lavf...)`), for logs.
    """

    transaction_id: float
    app: str
    query: Mapping[str, str]
    tc_url: str
    fourcc_list: tuple[str, ...]
    object_encoding: float
    flash_ver: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishRequested(Event):
    """The client asked to publish `name` on message stream `stream_id`."""

    stream_id: int
    name: str
    query: Mapping[str, str]
    mode: str  # live | record | append


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayRequested(Event):
    """The client asked to play `name` on message stream `stream_id`."""

    stream_id: int
    name: str
    query: Mapping[str, str]
    start: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClosed(Event):
    """The client ended what it did on `stream_id` (deleteStream, closeStream or FCUnpublish)."""

    stream_id: int
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaReceived(Event):
    """An audio (type 8) or video (type 9) message: an FLV tag body.

    `timestamp` is unwrapped: it keeps counting past 2**32 ms instead of wrapping to 0.
    """

    stream_id: int
    type_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(Event):
    """A data message (`@setDataFrame`/`onMetaData`, `onCuePoint`, ...). `name` has @setDataFrame removed."""

    stream_id: int
    timestamp: int
    name: str
    args: tuple[object, ...]
    payload: bytes  # the AMF0 body as received


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived(Event):
    """A command the session does not answer itself (the driver may log it)."""

    stream_id: int
    name: str
    transaction_id: float
    args: tuple[object, ...] = field(default=())


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReceived(Event):
    """An `onStatus` or `_result`/`_error` the peer sent (the client side reads these)."""

    stream_id: int
    name: str  # onStatus | _result | _error | onFCPublish ...
    transaction_id: float
    level: str
    code: str
    description: str
    args: tuple[object, ...] = field(default=())


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived(Event):
    """The peer acknowledged `sequence` bytes."""

    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The peer closed the connection (EOF)."""
