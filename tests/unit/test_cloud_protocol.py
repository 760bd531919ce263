"""The fleet-control wire protocol: parsing the controller's messages, encoding the device's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cloud.protocol import (
    DEFAULT_SOURCE,
    MAX_MESSAGE_BYTES,
    STATUSES,
    KeepAlive,
    MessageError,
    StartStream,
    StopStream,
    StreamStats,
    device_status,
    error_reply,
    hello,
    keep_alive_ack,
    parse_controller_message,
    stream_status,
)
from tests.fuzz import examples

KEY = "sk-live-8f3a2c9d"  # a stream key: must never show up in error text
URL = f"rtmp://ingest.example.com/live/{KEY}"


def msg(**fields: Any) -> str:
    return json.dumps({"timestamp": 1_700_000_000_000, **fields})


def start(**over: Any) -> dict[str, Any]:
    return {"type": "start_rtmp_stream", "streamId": "s1", "appId": "app", "rtmpUrl": URL, **over}


def refused(text: str) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_controller_message(text)
    assert KEY not in str(info.value)
    return info.value


# --- parsing: the good cases -----------------------------------------------------------------------


def test_start_minimal_takes_defaults() -> None:
    m = parse_controller_message(msg(**start()))
    assert m == StartStream(stream_id="s1", app_id="app", url=URL, source=DEFAULT_SOURCE)
    assert m.video is None and m.audio is None and m.duration_limit_ms is None and not m.alias
    assert KEY not in repr(m)


def test_start_full() -> None:
    video = {"width": 1280, "height": 720, "bitrate": 2_500_000, "fps": 30}
    audio = {"bitrate": 128_000, "sampleRate": 48_000}
    m = parse_controller_message(
        msg(**start(video=video, audio=audio, stream={"durationLimit": 90_000}, source="live/cam2"))
    )
    assert isinstance(m, StartStream)
    assert m.video == video and m.audio == audio
    assert m.duration_limit_ms == 90_000 and m.source == "live/cam2"


def test_start_alias_uses_stream_url() -> None:
    m = parse_controller_message(msg(type="start_stream", streamId="s1", appId="a", streamUrl=URL))
    assert m == StartStream(stream_id="s1", app_id="a", url=URL, alias=True)
    e = refused(msg(type="start_stream", streamId="s1", appId="a", rtmpUrl=URL))
    assert str(e) == "start_stream.streamUrl: missing"


@pytest.mark.parametrize("url", [URL, "rtmps://a.example:443/app/key?x=1", "RTMP://[::1]:1935/live/k"])
def test_start_accepts_rtmp_urls(url: str) -> None:
    m = parse_controller_message(msg(**start(rtmpUrl=url)))
    assert isinstance(m, StartStream) and m.url == url


def test_nulls_are_absent_and_unknown_keys_ignored() -> None:
    m = parse_controller_message(
        msg(**start(video=None, audio=None, stream={"durationLimit": None}, source=None, future=[1]))
    )
    assert m == StartStream(stream_id="s1", app_id="app", url=URL)


def test_duration_limit_whole_float() -> None:
    m = parse_controller_message(msg(**start(stream={"durationLimit": 5000.0})))
    assert isinstance(m, StartStream) and m.duration_limit_ms == 5000


@pytest.mark.parametrize("kind", ["stop_rtmp_stream", "stop_stream"])
def test_stop(kind: str) -> None:
    assert parse_controller_message(msg(type=kind, streamId="s1", appId="a")) == StopStream(
        stream_id="s1", app_id="a"
    )


@pytest.mark.parametrize("kind", ["keep_rtmp_stream_alive", "keep_stream_alive"])
def test_keep_alive(kind: str) -> None:
    assert parse_controller_message(msg(type=kind, streamId="s1", ackId="k9")) == KeepAlive(
        stream_id="s1", ack_id="k9"
    )


def test_timestamp_is_optional() -> None:
    text = json.dumps({"type": "stop_stream", "streamId": "s1", "appId": "a"})
    assert isinstance(parse_controller_message(text), StopStream)


# --- parsing: the bad cases ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"rtmpUrl": None}, "start_rtmp_stream.rtmpUrl: missing"),
        ({"rtmpUrl": 5}, "start_rtmp_stream.rtmpUrl: want a string"),
        ({"streamId": None}, "start_rtmp_stream.streamId: missing"),
        ({"streamId": 7}, "start_rtmp_stream.streamId: want a string"),
        ({"streamId": ""}, "start_rtmp_stream.streamId: empty"),
        ({"streamId": "x" * 129}, "start_rtmp_stream.streamId: longer than 128 characters"),
        ({"appId": None}, "start_rtmp_stream.appId: missing"),
        ({"appId": []}, "start_rtmp_stream.appId: want a string"),
        ({"source": "cam"}, "start_rtmp_stream.source: want a stream name"),
        ({"source": 3}, "start_rtmp_stream.source: want a stream name"),
        ({"video": [1]}, "start_rtmp_stream.video: want an object"),
        ({"video": {"bitrate": "fast"}}, "start_rtmp_stream.video.bitrate: want a positive number"),
        ({"video": {"fps": True}}, "start_rtmp_stream.video.fps: want a positive number"),
        ({"audio": {"sampleRate": -1}}, "start_rtmp_stream.audio.sampleRate: want a positive number"),
        ({"stream": 60}, "start_rtmp_stream.stream: want an object"),
        ({"stream": {"durationLimit": 0}}, "start_rtmp_stream.stream.durationLimit: want a whole number"),
        ({"stream": {"durationLimit": 1.5}}, "start_rtmp_stream.stream.durationLimit: want a whole number"),
        ({"stream": {"durationLimit": 10**40}}, "start_rtmp_stream.stream.durationLimit: want a whole"),
        ({"stream": {"durationLimit": "1m"}}, "start_rtmp_stream.stream.durationLimit: want a whole"),
        ({"timestamp": "now"}, "start_rtmp_stream.timestamp: want a number"),
        ({"timestamp": False}, "start_rtmp_stream.timestamp: want a number"),
    ],
)
def test_start_malformed_names_the_field(fields: dict[str, Any], error: str) -> None:
    e = refused(msg(**start(**fields)))
    assert str(e).startswith(error)
    assert e.about["type"] == "start_rtmp_stream"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            f"http://ingest.example.com/whip/{KEY}",
            "http:// to ingest.example.com: the token would go in clear",
        ),
        (f"https://user:pw@ingest.example.com/whip/{KEY}", "credentials in the URL"),
        (f"srt://ingest.example.com/live/{KEY}", "want rtmp://"),
        (f"ingest.example.com/live/{KEY}", "want rtmp://"),
        (f"rtmp:///live/{KEY}", "no host"),
        ("rtmp://ingest.example.com/live", "no app or stream key"),
        (f"rtmp://ingest.example.com:99999/live/{KEY}", "not a URL"),
        (f"rtmp://ingest.example.com:0/live/{KEY}", "port 0"),
        (f"rtmp://[::1/live/{KEY}", "not a URL"),
        (f"rtmp://ingest.example.com/live/{KEY} x", "spaces or control characters"),
        (f"rtmp://ingest.example.com/live/{KEY}\n", "spaces or control characters"),
        (f"rtmp://ingest.example.com/live/{KEY}" + "x" * 2048, "longer than 2048"),
    ],
)
def test_bad_urls_refused_without_their_key(url: str, error: str) -> None:
    e = refused(msg(**start(rtmpUrl=url)))
    assert str(e).startswith("start_rtmp_stream.rtmpUrl: ")
    assert error in str(e)
    assert e.about == {"type": "start_rtmp_stream", "streamId": "s1"}


def test_whip_endpoints_are_accepted_with_their_token() -> None:
    parsed = parse_controller_message(
        msg(
            **start(type="start_stream", streamUrl=f"whip://ingest.example.com/whip/{KEY}", streamToken="t0k")
        )
    )
    assert isinstance(parsed, StartStream)
    assert parsed.url == f"whip://ingest.example.com/whip/{KEY}" and parsed.token == "t0k"
    assert "t0k" not in repr(parsed) and KEY not in repr(parsed)
    e = refused(
        msg(**start(type="start_stream", streamUrl=f"rtmp://i.example.com/live/{KEY}", streamToken="t"))
    )
    assert str(e).startswith("start_stream.streamToken: only for a WHIP")


def test_keep_alive_malformed() -> None:
    e = refused(msg(type="keep_rtmp_stream_alive", streamId="s1", ackId=3))
    assert str(e) == "keep_rtmp_stream_alive.ackId: want a string"
    assert e.about == {"type": "keep_rtmp_stream_alive", "streamId": "s1"}
    assert str(refused(msg(type="keep_stream_alive", streamId="s1"))) == "keep_stream_alive.ackId: missing"
    e = refused(msg(type="keep_stream_alive", ackId="a"))
    assert str(e) == "keep_stream_alive.streamId: missing"
    assert e.about == {"type": "keep_stream_alive"}


def test_stop_malformed() -> None:
    assert str(refused(msg(type="stop_rtmp_stream", streamId="s1"))) == "stop_rtmp_stream.appId: missing"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "not JSON: Expecting value at character 0"),
        ('{"type": "stop_stream",', "not JSON: "),
        ("[1, 2]", "want a JSON object"),
        ('"start_rtmp_stream"', "want a JSON object"),
        ("null", "want a JSON object"),
        ("{}", "type: missing"),
        ('{"type": 1}', "type: want a string"),
        ('{"type": "foo"}', "unknown message type 'foo'"),
        ('{"type": "stop_stream", "type": "start_stream"}', "not JSON: duplicate key 'type'"),
        ('{"type": "stop_stream", "timestamp": NaN}', "not JSON: NaN is not a JSON number"),
        ('{"type": "stop_stream", "timestamp": 1' + "0" * 5000 + "}", "not JSON: a number too long"),
        ("[" * 100_000, "message too big"),
    ],
)
def test_not_a_message(text: str, error: str) -> None:
    assert str(refused(text)).startswith(error)


def test_deep_nesting_is_refused() -> None:
    depth = 10_000  # well under the size cap, well over the parser's recursion limit
    e = refused('{"type": "stop_stream", "x": ' + "[" * depth + "]" * depth + "}")
    assert "not JSON" in str(e)


def test_unknown_type_about() -> None:
    assert refused('{"type": "foo"}').about == {"type": "foo"}
    assert refused('{"type": 1}').about == {}


def test_size_cap_counts_utf8_bytes() -> None:
    pad = MAX_MESSAGE_BYTES - len(msg(type="stop_stream", streamId="s", appId="a", pad=""))
    ok = msg(type="stop_stream", streamId="s", appId="a", pad="x" * pad)
    assert len(ok.encode()) == MAX_MESSAGE_BYTES
    assert isinstance(parse_controller_message(ok), StopStream)
    over = ok.replace("x" * pad, "é" * (pad // 2 + 1))  # fewer characters, more bytes
    assert len(over) <= MAX_MESSAGE_BYTES < len(over.encode())
    assert str(refused(over)) == f"message too big: over the limit of {MAX_MESSAGE_BYTES} bytes"


def test_no_error_text_repeats_the_json() -> None:
    e = refused('{"type": "start_rtmp_stream", "rtmpUrl": "rtmp://h/live/' + KEY + '", oops}')
    assert str(e).startswith("not JSON: ")


# --- encoders --------------------------------------------------------------------------------------


def test_hello() -> None:
    text = hello(device_id="d1", version="0.1.0", board="rpi5", capabilities=("rtmp", "rtmps"), now_ms=5)
    assert json.loads(text) == {
        "type": "hello",
        "timestamp": 5,
        "deviceId": "d1",
        "version": "0.1.0",
        "board": "rpi5",
        "capabilities": ["rtmp", "rtmps"],
    }
    assert " " not in text  # compact


def test_keep_alive_ack() -> None:
    assert json.loads(keep_alive_ack("s1", "k9", 7)) == {
        "type": "keep_alive_ack",
        "timestamp": 7,
        "streamId": "s1",
        "ackId": "k9",
    }


def test_stream_status_minimal_and_full() -> None:
    assert json.loads(stream_status("s1", "a", "streaming", 9)) == {
        "type": "rtmp_stream_status",
        "timestamp": 9,
        "streamId": "s1",
        "appId": "a",
        "status": "streaming",
    }
    stats = StreamStats(bitrate_bps=2_000_000, fps=29.97, dropped_frames=3, duration_ms=61_000)
    got = json.loads(stream_status("s1", "a", "error", 9, error_details="refused", stats=stats))
    assert got["errorDetails"] == "refused"
    assert got["stats"] == {"bitrate": 2_000_000, "fps": 29.97, "droppedFrames": 3, "duration": 61_000}
    assert len(json.loads(stream_status("s1", "a", "error", 9, "x" * 5000))["errorDetails"]) == 1000


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_encodes(status: str) -> None:
    assert json.loads(stream_status("s", "a", status, 0))["status"] == status


def test_stream_status_refuses_unknown_status() -> None:
    with pytest.raises(ValueError, match="status='live'"):
        stream_status("s1", "a", "live", 0)


def test_stream_stats_validates() -> None:
    with pytest.raises(ValueError, match="fps"):
        StreamStats(bitrate_bps=0, fps=float("nan"), dropped_frames=0, duration_ms=0)
    with pytest.raises(ValueError, match="dropped_frames"):
        StreamStats(bitrate_bps=0, fps=0, dropped_frames=-1, duration_ms=0)


def test_device_status() -> None:
    streams = [{"streamId": "s1", "appId": "a", "status": "streaming"}]
    assert json.loads(device_status(12.5, streams, "ok", 3)) == {
        "type": "device_status",
        "timestamp": 3,
        "uptime": 12_500,
        "streams": streams,
        "health": "ok",
    }
    with pytest.raises(ValueError, match="uptime_s"):
        device_status(-1, [], "ok", 3)


def test_error_reply() -> None:
    assert json.loads(error_reply("bad", {"type": "stop_stream", "streamId": "s"}, 4)) == {
        "type": "error",
        "timestamp": 4,
        "message": "bad",
        "about": {"type": "stop_stream", "streamId": "s"},
    }
    assert "about" not in json.loads(error_reply("bad", None, 4))
    assert "about" not in json.loads(error_reply("bad", {}, 4))


def test_error_reply_round_trips_a_message_error() -> None:
    e = refused(msg(type="keep_rtmp_stream_alive", streamId="s1", ackId=3))
    got = json.loads(error_reply(str(e), e.about, 1))
    assert got["message"] == "keep_rtmp_stream_alive.ackId: want a string"
    assert got["about"] == {"type": "keep_rtmp_stream_alive", "streamId": "s1"}


# --- round trips and properties --------------------------------------------------------------------

ids = st.text(min_size=1, max_size=128)
bus_names = st.from_regex(r"[A-Za-z0-9_.-]{1,8}/[A-Za-z0-9_.-]{1,8}", fullmatch=True)
urls = st.builds(
    "{}://{}/{}/{}".format,
    st.sampled_from(["rtmp", "rtmps"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?(:[1-9][0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_.-][A-Za-z0-9_.?=&-]{0,39}", fullmatch=True),
)
starts = st.builds(
    StartStream,
    stream_id=ids,
    app_id=st.text(max_size=128),
    url=urls,
    source=bus_names,
    video=st.none() | st.fixed_dictionaries({}, optional={"width": st.integers(1, 8000), "fps": st.just(30)}),
    audio=st.none() | st.fixed_dictionaries({}, optional={"sampleRate": st.just(48_000)}),
    duration_limit_ms=st.none() | st.integers(1, 10**9),
    alias=st.booleans(),
)


def encode(m: StartStream | StopStream | KeepAlive) -> str:
    """The controller's side of the wire: what `parse_controller_message` must read back as `m`."""
    if isinstance(m, StartStream):
        obj: dict[str, Any] = {
            "type": "start_stream" if m.alias else "start_rtmp_stream",
            "streamId": m.stream_id,
            "appId": m.app_id,
            "streamUrl" if m.alias else "rtmpUrl": m.url,
            "source": m.source,
            "video": None if m.video is None else dict(m.video),
            "audio": None if m.audio is None else dict(m.audio),
            "stream": {"durationLimit": m.duration_limit_ms},
        }
    elif isinstance(m, StopStream):
        obj = {"type": "stop_rtmp_stream", "streamId": m.stream_id, "appId": m.app_id}
    else:
        obj = {"type": "keep_rtmp_stream_alive", "streamId": m.stream_id, "ackId": m.ack_id}
    return json.dumps({"timestamp": 1, **obj})


@settings(max_examples=examples(200))
@given(
    starts
    | st.builds(StopStream, stream_id=ids, app_id=st.text(max_size=128))
    | st.builds(KeepAlive, stream_id=ids, ack_id=ids)
)
def test_round_trip(m: StartStream | StopStream | KeepAlive) -> None:
    assert parse_controller_message(encode(m)) == m


@settings(max_examples=examples(300))
@given(st.text())
def test_any_text_is_a_message_or_message_error(text: str) -> None:
    try:
        m = parse_controller_message(text)
    except MessageError:
        return
    assert isinstance(m, StartStream | StopStream | KeepAlive)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
field_names = st.sampled_from(
    ["streamId", "appId", "ackId", "rtmpUrl", "streamUrl", "source", "video", "audio", "stream", "timestamp"]
)
kinds = st.sampled_from(
    ["start_rtmp_stream", "start_stream", "stop_rtmp_stream", "stop_stream", "keep_rtmp_stream_alive"]
)


@settings(max_examples=examples(300))
@given(
    kinds,
    st.dictionaries(field_names, json_values | urls | st.just({"durationLimit": 5}), max_size=8),
)
def test_any_object_is_a_message_or_message_error(kind: str, fields: dict[str, Any]) -> None:
    """Near-miss messages (the right type, fields of any JSON shape) reach every field check."""
    try:
        m = parse_controller_message(json.dumps({"type": kind, **fields}))
    except MessageError as e:
        assert str(e).startswith(f"{kind}.")
        assert e.about["type"] == kind
    else:
        assert isinstance(m, StartStream | StopStream | KeepAlive)
