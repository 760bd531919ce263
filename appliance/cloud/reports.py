"""The controller's side of the wire: device messages parsed, controller messages encoded, without I/O.

`protocol` is the device's half (it parses what a controller sends and encodes what a device sends);
this module is the mirror image, for the reference fleet controller (`appliance.cloud.controller`).
Both share `protocol.loads_strict` and `protocol.FieldReader`, so the two ends refuse the same junk in
the same words: oversize frames, bad JSON, duplicate keys, wrong field types.

Device -> controller (`parse_device_message`): ``hello``, ``keep_alive_ack``, ``rtmp_stream_status``,
``device_status`` and ``error``. Like the device, the controller is strict about the fields it acts
on and ignores keys it does not know.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.cloud.protocol import (
    STATUSES,
    FieldReader,
    MessageError,
    StreamStats,
    dumps_message,
    is_number,
    loads_strict,
)
from appliance.media.whip_url import is_whip_url

__all__ = [
    "DeviceError",
    "DeviceMessage",
    "DeviceStatus",
    "Hello",
    "KeepAliveAck",
    "StreamStatus",
    "keep_alive",
    "parse_device_message",
    "start_stream",
    "stop_stream",
]

_MAX_CAPABILITIES = 64
_MAX_STREAMS = 16  # device_status lists a device's streams: one cloud stream plus some static pushes


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """A device (re)connected: who it is."""

    device_id: str
    version: str
    board: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveAck:
    """The device acknowledges the keep-alive `ack_id` of `stream_id`."""

    stream_id: str
    ack_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStatus:
    """A stream's state on the device (``rtmp_stream_status``)."""

    stream_id: str
    app_id: str
    status: str
    error_details: str | None = None
    stats: StreamStats | None = None
    media: Mapping[str, Mapping[str, Any]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus:
    """The device's heartbeat: uptime (ms), its streams' ``{streamId, status}`` and its health."""

    uptime_ms: int
    streams: tuple[Mapping[str, Any], ...] = field(default=())
    health: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceError:
    """The device could not act on one of our messages; `about` is its ``{type, streamId}`` if known."""

    message: str
    about: Mapping[str, Any] | None = None


DeviceMessage = Hello | KeepAliveAck | StreamStatus | DeviceStatus | DeviceError


def parse_device_message(text: str) -> DeviceMessage:
    """Parse one text frame from a device.

    Raises:
        MessageError: Too big, not JSON, not an object, an unknown type, or a field missing or
            malformed; the message names the field.
    """
    obj = loads_strict(text)
    if not isinstance(obj, dict):
        raise MessageError("want a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise MessageError("type: missing" if kind is None else "type: want a string")
    reader = FieldReader(obj, kind)
    if kind == "hello":
        caps = obj.get("capabilities", [])
        if not isinstance(caps, list) or len(caps) > _MAX_CAPABILITIES:
            reader.fail("capabilities", f"want a list of at most {_MAX_CAPABILITIES} strings")
        if not all(isinstance(c, str) and len(c) <= 64 for c in caps):
            reader.fail("capabilities", "want strings of at most 64 characters")
        return Hello(
            device_id=reader.string("deviceId"),
            version=reader.string("version", empty_ok=True),
            board=reader.string("board", empty_ok=True),
            capabilities=tuple(caps),
        )
    if kind == "keep_alive_ack":
        return KeepAliveAck(stream_id=reader.stream_id(), ack_id=reader.string("ackId"))
    if kind == "rtmp_stream_status":
        return _parse_status(reader)
    if kind == "device_status":
        uptime = obj.get("uptime")
        if not isinstance(uptime, int | float) or not is_number(uptime) or not 0 <= uptime < math.inf:
            reader.fail("uptime", "want a number of ms >= 0")
        streams = obj.get("streams", [])
        if not isinstance(streams, list) or len(streams) > _MAX_STREAMS:
            reader.fail("streams", f"want a list of at most {_MAX_STREAMS} objects")
        if not all(isinstance(s, dict) for s in streams):
            reader.fail("streams", "want objects")
        health = obj.get("health", "")
        if not isinstance(health, str):
            reader.fail("health", "want a string")
        return DeviceStatus(uptime_ms=int(uptime), streams=tuple(streams), health=health[:64])
    if kind == "error":
        message = obj.get("message")
        if not isinstance(message, str):
            reader.fail("message", "want a string")
        about = reader.table("about")
        return DeviceError(message=message[:1000], about=about)
    raise MessageError(f"unknown message type {kind[:64]!r}", about={"type": kind[:64]})


def _parse_status(reader: FieldReader) -> StreamStatus:
    stream_id = reader.stream_id()
    app_id = reader.obj.get("appId", "")
    if not isinstance(app_id, str):
        reader.fail("appId", "want a string")
    status = reader.string("status")
    if status not in STATUSES:
        reader.fail("status", f"want one of {', '.join(STATUSES)}")
    details = reader.obj.get("errorDetails")
    if details is not None and not isinstance(details, str):
        reader.fail("errorDetails", "want a string")
    stats: StreamStats | None = None
    table = reader.table("stats")
    if table is not None:
        values = [table.get(k, 0) for k in ("bitrate", "fps", "droppedFrames", "duration")]
        if not all(is_number(v) for v in values):
            reader.fail("stats", "want numbers: bitrate, fps, droppedFrames, duration")
        try:
            stats = StreamStats(
                bitrate_bps=int(values[0]),
                fps=float(values[1]),
                dropped_frames=int(values[2]),
                duration_ms=int(values[3]),
            )
        except (ValueError, OverflowError) as e:
            reader.fail("stats", str(e))
    media = reader.table("media")
    if media is not None and not all(isinstance(v, dict) for v in media.values()):
        reader.fail("media", 'want {"video": {...}, "audio": {...}}')
    return StreamStatus(
        media=media,
        stream_id=stream_id,
        app_id=app_id[:128],
        status=status,
        error_details=None if details is None else details[:1000],
        stats=stats,
    )


# --- encoding (controller -> device) ---------------------------------------------------------------


def start_stream(
    stream_id: str,
    app_id: str,
    url: str,
    now_ms: int,
    *,
    source: str | None = None,
    video: Mapping[str, Any] | None = None,
    audio: Mapping[str, Any] | None = None,
    duration_limit_ms: int | None = None,
    token: str = "",
) -> str:
    """``start_rtmp_stream``: push `source` (default the device's camera) to `url`; for a WHIP endpoint
    (or with a `token`), ``start_stream`` with ``streamUrl`` and ``streamToken``, which only devices
    that know WHIP accept.

    Args:
        stream_id, app_id: The controller's ids for the stream.
        url: ``rtmp://`` or ``rtmps://``, with the stream key, or a WHIP endpoint URL.
        now_ms: The wall clock, ms since the Unix epoch.
        source: The device's Bus to push, or None for its default.
        video, audio: Wishes, passed on as they are.
        duration_limit_ms: The device stops the stream this long after it starts.
        token: The WHIP endpoint's bearer token.
    """
    whip = bool(token) or is_whip_url(url)
    fields: dict[str, object] = {
        "streamId": stream_id,
        "appId": app_id,
        "streamUrl" if whip else "rtmpUrl": url,
    }
    if token:
        fields["streamToken"] = token
    if source is not None:
        fields["source"] = source
    if video is not None:
        fields["video"] = dict(video)
    if audio is not None:
        fields["audio"] = dict(audio)
    if duration_limit_ms is not None:
        fields["stream"] = {"durationLimit": duration_limit_ms}
    return dumps_message("start_stream" if whip else "start_rtmp_stream", now_ms, fields)


def stop_stream(stream_id: str, app_id: str, now_ms: int) -> str:
    """``stop_rtmp_stream``."""
    return dumps_message("stop_rtmp_stream", now_ms, {"streamId": stream_id, "appId": app_id})


def keep_alive(stream_id: str, ack_id: str, now_ms: int) -> str:
    """``keep_rtmp_stream_alive``: the device answers with a `KeepAliveAck` echoing `ack_id`."""
    return dumps_message("keep_rtmp_stream_alive", now_ms, {"streamId": stream_id, "ackId": ack_id})
