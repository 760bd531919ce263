"""The fleet-control wire protocol: JSON text frames over a WebSocket, parsed and encoded without I/O.

The device connects out to a fleet controller. Every message is a JSON object
``{"type": ..., "timestamp": <ms>, ...}``; bitrates are in bit/s and durations in ms.

Controller -> device (`parse_controller_message`):

- ``start_rtmp_stream {streamId, appId, rtmpUrl, video?, audio?, stream?: {durationLimit?}, source?}``
  (alias ``start_stream``, with ``streamUrl`` in place of ``rtmpUrl``; a WHIP endpoint URL there, with
  an optional ``streamToken``, the bearer token, makes it a WHIP push) -> `StartStream`;
- ``stop_rtmp_stream {streamId, appId}`` (alias ``stop_stream``) -> `StopStream`;
- ``keep_rtmp_stream_alive {streamId, ackId}`` (alias ``keep_stream_alive``) -> `KeepAlive`.

Device -> controller (the encoders): ``hello``, ``keep_alive_ack``, ``rtmp_stream_status``,
``device_status`` and ``error``, each returned as compact JSON text.

Parsing is strict about what the device acts on and lenient about the rest: a field we use must have
the right type (or the message is refused with a `MessageError` naming it), while keys we do not know are
ignored, so a newer controller can add fields. ``null`` counts as absent for optional fields.
``video`` and ``audio`` are the controller's wishes: checked for shape, kept and reported, not acted on.

Stream URLs carry the ingest's stream key in their path, so no error text ever repeats a URL.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn

from appliance.media.rtmp.url import parse_rtmp_url
from appliance.media.whip_url import is_whip_url, parse_whip_url

__all__ = [
    "DEFAULT_SOURCE",
    "MAX_MESSAGE_BYTES",
    "STATUSES",
    "ControllerMessage",
    "KeepAlive",
    "MessageError",
    "StartStream",
    "StopStream",
    "StreamStats",
    "device_status",
    "error_reply",
    "hello",
    "keep_alive_ack",
    "parse_controller_message",
    "stream_status",
]

MAX_MESSAGE_BYTES: Final = 64 * 1024  # a control message is a few hundred bytes; anything this big is junk
DEFAULT_SOURCE: Final = "live/cam"
STATUSES: Final = (
    "initializing",
    "connecting",
    "streaming",
    "reconnecting",
    "stopping",
    "stopped",
    "error",
    "timeout",
)

_MAX_ID_CHARS = 128  # streamId, appId, ackId: opaque ids, echoed back in replies and logs
_MAX_URL_CHARS = 2048
_MAX_DURATION_MS = 365 * 86400 * 1000  # a year; also keeps `ms / 1000` a float, not an OverflowError
_MAX_ERROR_CHARS = 1000
_BUS_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # as appliance.config's stream names

# Wire name -> (alias?, the URL field's name). The rtmp_* names came first; the newer ones are aliases.
_START = {"start_rtmp_stream": (False, "rtmpUrl"), "start_stream": (True, "streamUrl")}
_STOP = ("stop_rtmp_stream", "stop_stream")
_KEEP = ("keep_rtmp_stream_alive", "keep_stream_alive")
_VIDEO_KEYS = ("width", "height", "bitrate", "fps")
_AUDIO_KEYS = ("bitrate", "sampleRate")


class MessageError(ValueError):
    """A controller message the device cannot act on: not JSON, too big, unknown or malformed.

    The driver answers it with `error_reply` (``str(err)`` and ``err.about``) and keeps the socket open.

    Args:
        message: What is wrong, naming the field (``start_rtmp_stream.rtmpUrl: missing``). Never holds
            a stream URL.
        about: What the message was, as far as it could be read: ``{"type": ..., "streamId": ...}``,
            either key absent when unknown; empty when even the type is unknown.
    """

    def __init__(self, message: str, *, about: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.about: Mapping[str, str] = MappingProxyType(dict(about or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class StartStream:
    """Start pushing `source` to `url` (``start_rtmp_stream``, or ``start_stream`` when `alias`).

    Attributes:
        stream_id: The controller's id for this stream; every status names it.
        app_id: The controller's application id, echoed in statuses.
        url: The ingest, ``rtmp://`` or ``rtmps://``, or a WHIP endpoint (``https://``, ``whip://``; see
            `appliance.media.whip_url`); its path holds the stream key: never log or show it.
        token: The WHIP endpoint's bearer token (``streamToken``), or "".
        source: The Bus to push, ``app/key`` (default ``live/cam``).
        video: Wished ``{width, height, bitrate, fps}``, or None; reported, not acted on.
        audio: Wished ``{bitrate, sampleRate}``, or None; reported, not acted on.
        duration_limit_ms: Stop the stream this long after it starts, or None for no limit.
        alias: The message used the newer name (``start_stream`` / ``streamUrl``).
    """

    stream_id: str
    app_id: str
    url: str = field(repr=False)
    source: str = DEFAULT_SOURCE
    video: Mapping[str, Any] | None = None
    audio: Mapping[str, Any] | None = None
    duration_limit_ms: int | None = None
    alias: bool = False
    token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class StopStream:
    """Stop the stream `stream_id` (``stop_rtmp_stream`` or ``stop_stream``)."""

    stream_id: str
    app_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAlive:
    """The controller still wants `stream_id` (``keep_rtmp_stream_alive``); acknowledge `ack_id`."""

    stream_id: str
    ack_id: str


ControllerMessage = StartStream | StopStream | KeepAlive


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStats:
    """A push's counters, as ``rtmp_stream_status.stats`` reports them.

    Raises:
        ValueError: A value is negative or not finite.
    """

    bitrate_bps: int
    fps: float
    dropped_frames: int
    duration_ms: int

    def __post_init__(self) -> None:
        for name in ("bitrate_bps", "fps", "dropped_frames", "duration_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"StreamStats.{name}={value!r}: want a finite number >= 0")

    def to_json(self) -> dict[str, int | float]:
        """The wire form: ``{bitrate, fps, droppedFrames, duration}``."""
        return {
            "bitrate": self.bitrate_bps,
            "fps": self.fps,
            "droppedFrames": self.dropped_frames,
            "duration": self.duration_ms,
        }


# --- parsing ---------------------------------------------------------------------------------------


def parse_controller_message(text: str) -> ControllerMessage:
    """Parse one text frame from the controller.

    Args:
        text: The frame's text.

    Returns:
        The message; aliases parse to the same classes as the names they stand for.

    Raises:
        MessageError: Over `MAX_MESSAGE_BYTES`, not JSON, not an object, an unknown type, or a field
            missing or malformed; the message names the field, and `about` says what it was about.
    """
    obj = loads_strict(text)
    if not isinstance(obj, dict):
        raise MessageError("want a JSON object")
    kind = obj.get("type")
    if kind is None:
        raise MessageError("type: missing")
    if not isinstance(kind, str):
        raise MessageError("type: want a string")
    if kind not in _START and kind not in _STOP and kind not in _KEEP:
        raise MessageError(f"unknown message type {kind[:64]!r}", about={"type": kind[:64]})
    reader = FieldReader(obj, kind)
    timestamp = obj.get("timestamp")
    if timestamp is not None and (not is_number(timestamp) or not math.isfinite(timestamp)):
        reader.fail("timestamp", "want a number (ms)")
    if kind in _START:
        alias, url_key = _START[kind]
        return _parse_start(reader, alias, url_key)
    stream_id = reader.stream_id()
    if kind in _STOP:
        return StopStream(stream_id=stream_id, app_id=reader.string("appId", empty_ok=True))
    return KeepAlive(stream_id=stream_id, ack_id=reader.string("ackId"))


def loads_strict(text: str) -> object:
    """Parse one frame's JSON, refusing what parsers disagree on (duplicate keys, NaN) and huge frames.

    Raises:
        MessageError: Over `MAX_MESSAGE_BYTES` or not JSON; the message never quotes the document.
    """
    # Check the cheap bound first, so a huge frame is never encoded; surrogatepass so no text raises.
    if len(text) > MAX_MESSAGE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message too big: over the limit of {MAX_MESSAGE_BYTES} bytes")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except MessageError:
        raise
    except json.JSONDecodeError as e:
        # e.msg and e.pos only: str(e) is fine too, but never quote the document (it may hold a URL).
        raise MessageError(f"not JSON: {e.msg} at character {e.pos}") from None
    except ValueError:
        # int() refuses numbers of more than sys.get_int_max_str_digits() digits.
        raise MessageError("not JSON: a number too long") from None
    except RecursionError:
        raise MessageError("not JSON: nested too deeply") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; refuse rather than guess what the controller meant.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MessageError(f"not JSON: duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> NoReturn:
    raise MessageError(f"not JSON: {name} is not a JSON number")


def is_number(value: object) -> bool:
    # bool is an int in Python; JSON's true/false are not numbers.
    return isinstance(value, int | float) and not isinstance(value, bool)


class FieldReader:
    """Reads fields of one message, naming ``type.field`` in its errors."""

    def __init__(self, obj: Mapping[str, Any], kind: str) -> None:
        self.obj = obj
        self.about = {"type": kind}

    def fail(self, where: str, problem: str) -> NoReturn:
        raise MessageError(f"{self.about['type']}.{where}: {problem}", about=self.about)

    def string(self, key: str, *, empty_ok: bool = False) -> str:
        value = self.obj.get(key)
        if value is None:
            self.fail(key, "missing")
        if not isinstance(value, str):
            self.fail(key, "want a string")
        if not value and not empty_ok:
            self.fail(key, "empty")
        if len(value) > _MAX_ID_CHARS:
            self.fail(key, f"longer than {_MAX_ID_CHARS} characters")
        return value

    def stream_id(self) -> str:
        stream_id = self.string("streamId")
        self.about["streamId"] = stream_id
        return stream_id

    def table(self, key: str) -> Mapping[str, Any] | None:
        value = self.obj.get(key)
        if value is not None and not isinstance(value, dict):
            self.fail(key, "want an object")
        return value

    def wishes(self, key: str, numbers: tuple[str, ...]) -> Mapping[str, Any] | None:
        table = self.table(key)
        if table is None:
            return None
        for name in numbers:
            value = table.get(name)
            if value is not None and not (is_number(value) and math.isfinite(value) and value > 0):
                self.fail(f"{key}.{name}", "want a positive number")
        return MappingProxyType(table)


def _parse_start(reader: FieldReader, alias: bool, url_key: str) -> StartStream:
    stream_id = reader.stream_id()
    app_id = reader.string("appId", empty_ok=True)
    url = reader.obj.get(url_key)
    if url is None:
        reader.fail(url_key, "missing")
    if not isinstance(url, str):
        reader.fail(url_key, "want a string")
    problem = _url_problem(url)
    if problem:
        reader.fail(url_key, problem)
    source = reader.obj.get("source")
    if source is None:
        source = DEFAULT_SOURCE
    elif not isinstance(source, str) or not _BUS_NAME_RE.fullmatch(source):
        reader.fail("source", 'want a stream name "app/key", like "live/cam"')
    token = reader.obj.get("streamToken", "")
    if not isinstance(token, str) or len(token) > _MAX_URL_CHARS:
        reader.fail("streamToken", "want a string (the WHIP endpoint's bearer token)")
    if token and not is_whip_url(url):
        reader.fail("streamToken", "only for a WHIP (https://) URL; an RTMP URL carries its key")
    limit: int | None = None
    stream = reader.table("stream")
    if stream is not None and stream.get("durationLimit") is not None:
        value = stream["durationLimit"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_DURATION_MS:
            reader.fail("stream.durationLimit", f"want a whole number of ms from 1 to {_MAX_DURATION_MS}")
        limit = value
    return StartStream(
        stream_id=stream_id,
        app_id=app_id,
        url=url,
        source=source,
        video=reader.wishes("video", _VIDEO_KEYS),
        audio=reader.wishes("audio", _AUDIO_KEYS),
        duration_limit_ms=limit,
        alias=alias,
        token=token,
    )


def _url_problem(url: str) -> str | None:
    """Why `url` is no ingest the push can use, or None. The answer never quotes the URL.

    The RTMP rules are the client's own (`parse_rtmp_url`), so what passes here is what the push connects to.
    """
    if len(url) > _MAX_URL_CHARS:
        return f"longer than {_MAX_URL_CHARS} characters"
    try:
        (parse_whip_url if is_whip_url(url) else parse_rtmp_url)(url)
    except ValueError as e:
        return str(e)
    return None


# --- encoding --------------------------------------------------------------------------------------


def dumps_message(kind: str, now_ms: int, fields: Mapping[str, object]) -> str:
    # allow_nan=False: the controller's parser need not accept NaN; StreamStats already refuses it.
    return json.dumps({"type": kind, "timestamp": now_ms, **fields}, separators=(",", ":"), allow_nan=False)


def hello(*, device_id: str, version: str, board: str, capabilities: Sequence[str], now_ms: int) -> str:
    """The first message on every (re)connect: who this device is.

    Args:
        device_id: The device's fleet id.
        version: The appliance's version.
        board: The board model (``rpi5``, ``jetson-orin-nano``...).
        capabilities: What the device can do (``rtmp``, ``rtmps``...).
        now_ms: The wall clock, ms since the Unix epoch.

    Returns:
        The ``hello`` message's JSON text.
    """
    fields = {"deviceId": device_id, "version": version, "board": board, "capabilities": list(capabilities)}
    return dumps_message("hello", now_ms, fields)


def keep_alive_ack(stream_id: str, ack_id: str, now_ms: int) -> str:
    """The answer to a keep-alive.

    Args:
        stream_id: The keep-alive's streamId.
        ack_id: The keep-alive's ackId, echoed.
        now_ms: The wall clock, ms since the Unix epoch.

    Returns:
        The ``keep_alive_ack`` message's JSON text.
    """
    return dumps_message("keep_alive_ack", now_ms, {"streamId": stream_id, "ackId": ack_id})


def stream_status(
    stream_id: str,
    app_id: str,
    status: str,
    now_ms: int,
    error_details: str | None = None,
    stats: StreamStats | None = None,
    media: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """A stream's state, sent on every change, on request and with every heartbeat while it runs.

    Args:
        stream_id: Which stream.
        app_id: Its appId ("" when not known).
        status: One of `STATUSES`.
        now_ms: The wall clock, ms since the Unix epoch.
        error_details: Why it failed or stopped, if it did; never a URL. Cut to 1000 characters.
        stats: The push's counters, if known.
        media: What really goes out, ``{"video": {codec, width, height, fps, ...}, "audio": {codec,
            sample_rate, channels}}``: the controller's ``video``/``audio`` are wishes, this is the fact.

    Returns:
        The ``rtmp_stream_status`` message's JSON text.

    Raises:
        ValueError: `status` is not one of `STATUSES`.
    """
    if status not in STATUSES:
        raise ValueError(f"status={status!r}: want one of {', '.join(STATUSES)}")
    fields: dict[str, object] = {"streamId": stream_id, "appId": app_id, "status": status}
    if error_details is not None:
        fields["errorDetails"] = error_details[:_MAX_ERROR_CHARS]
    if stats is not None:
        fields["stats"] = stats.to_json()
    if media:
        fields["media"] = {kind: dict(facts) for kind, facts in media.items()}
    return dumps_message("rtmp_stream_status", now_ms, fields)


def device_status(uptime_s: float, streams: Sequence[Mapping[str, object]], health: str, now_ms: int) -> str:
    """The periodic heartbeat.

    Args:
        uptime_s: How long the appliance has run; sent in ms, as every duration on the wire.
        streams: One JSON object per current stream (e.g. ``{streamId, appId, status}``).
        health: The appliance's overall health (``ok``, ``degraded``...).
        now_ms: The wall clock, ms since the Unix epoch.

    Returns:
        The ``device_status`` message's JSON text.

    Raises:
        ValueError: `uptime_s` is negative or not finite.
    """
    if not math.isfinite(uptime_s) or uptime_s < 0:
        raise ValueError(f"uptime_s={uptime_s!r}: want a finite number >= 0")
    fields = {"uptime": round(uptime_s * 1000), "streams": [dict(s) for s in streams], "health": health}
    return dumps_message("device_status", now_ms, fields)


def error_reply(message: str, about: Mapping[str, str] | None, now_ms: int) -> str:
    """The answer to a message the device could not act on.

    Args:
        message: What was wrong (``str(MessageError)``). Cut to 1000 characters.
        about: The message's type and streamId as far as known (`MessageError.about`); omitted if empty.
        now_ms: The wall clock, ms since the Unix epoch.

    Returns:
        The ``error`` message's JSON text.
    """
    fields: dict[str, object] = {"message": message[:_MAX_ERROR_CHARS]}
    if about:
        fields["about"] = dict(about)
    return dumps_message("error", now_ms, fields)
