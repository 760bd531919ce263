"""The WHIP push's parts that need no remote peer: its HTTP exchange (307/308 followed with the token
only to URLs the config would take, the redirect limit, the endpoint's refusal in a line), the silence
rule that ends an attempt on a vanished endpoint, refusals of sources WebRTC cannot carry, keyframe
requests (the camera's encoder at most once a second, else the GOP cache's keyframe), and what
`describe` shows (never the token or the URL's path)."""

from __future__ import annotations

import fractions
import http.server
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import av
import pytest
import trio
import trio.testing

from tests.peers import peers_required

try:
    from appliance.media.webrtc.push import SILENT_S, WhipPush, _request, _Silence, _why
except ImportError:
    if peers_required():
        raise
    # Only when APPLIANCE_REQUIRE_PEERS is unset: checked just above.
    pytest.skip("aiortc (the webrtc extra) is not installed", allow_module_level=True)  # REQUIRE_PEERS

from appliance.bus import BusRegistry
from appliance.media.h264 import build_avc_config
from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.media.push_base import PushError

TOKEN = "sk-live-0123456789"


class _Endpoint(http.server.BaseHTTPRequestHandler):
    """A scripted WHIP endpoint: the path says what it answers."""

    seen: list[tuple[str, str, str | None, bytes]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        routes: dict[str, tuple[int, dict[str, str], bytes]] = {
            "/first": (307, {"Location": "/second"}, b""),
            "/second": (308, {"Location": "/whip/final"}, b""),
            "/whip/final": (201, {"Location": "session/1", "Content-Type": "application/sdp"}, b"v=0\r\n"),
            "/loop": (308, {"Location": "/loop"}, b""),
            "/away": (307, {"Location": "http://whip.example.com/steal"}, b""),
            "/ftp": (307, {"Location": "ftp://127.0.0.1/x"}, b""),
        }
        status, headers, answer = routes.get(self.path, (404, {}, b"no such endpoint\nsecond line"))
        self._answer(status, headers, answer)


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Endpoint.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_redirects_are_followed_with_method_body_and_token(endpoint: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
    reply = _request("POST", endpoint + "/first", b"offer", auth, verify_tls=True)
    assert reply.status == 201 and reply.body == b"v=0\r\n"
    # The session URL resolves against where the answer came from, not the configured URL.
    assert reply.url == endpoint + "/whip/final" and reply.headers["location"] == "session/1"
    assert [(m, p, a, b) for m, p, a, b in _Endpoint.seen] == [
        ("POST", path, f"Bearer {TOKEN}", b"offer") for path in ("/first", "/second", "/whip/final")
    ]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/loop", "more than 3 redirects"),
        ("/away", "redirected to a URL the push refuses: http:// to whip.example.com"),
        ("/ftp", "redirected to a URL the push refuses: want https://"),
    ],
)
def test_redirects_that_are_refused(endpoint: str, path: str, error: str) -> None:
    with pytest.raises(PushError, match=re.escape(error)) as info:
        _request("POST", endpoint + path, b"offer", {"Authorization": f"Bearer {TOKEN}"}, verify_tls=True)
    assert TOKEN not in str(info.value)
    # Nothing went anywhere but the endpoint: the refused URL was never contacted.
    assert {p for _, p, _, _ in _Endpoint.seen} == {path}


def test_the_endpoints_refusal_in_a_line(endpoint: str) -> None:
    assert _why(_request("POST", endpoint + "/nope", b"", {}, verify_tls=True)) == (
        "the endpoint answered 404: no such endpoint"
    )
    problem = json.dumps({"title": "Unauthorized", "detail": "token expired"}).encode()
    reply = type(_request("POST", endpoint + "/nope", b"", {}, verify_tls=True))
    assert (
        _why(reply(401, {"content-type": "application/problem+json"}, problem, "u"))
        == "the endpoint answered 401: token expired"
    )
    assert _why(reply(503, {}, b"", "u")) == "the endpoint answered 503"
    assert _why(reply(400, {"content-type": "application/json"}, b"{not json", "u")) == (
        "the endpoint answered 400: {not json"
    )


def test_silence_counts_only_while_media_goes_out() -> None:
    s = _Silence()
    assert s.update(0.0, 0, None) == 0.0  # nothing sent yet
    assert s.update(2.0, 10, None) == 0.0  # sending from now on, no report yet
    assert s.update(4.0, 20, None) == 2.0
    assert s.update(6.0, 30, 0.5) == 0.5  # a report half a second ago
    assert s.update(8.0, 40, 2.5) == 2.5
    assert s.update(20.0, 50, 14.5) > SILENT_S  # the endpoint went quiet at 5.5 s
    # The source pauses: no reports are owed; when it resumes, an old report does not count against it.
    assert s.update(22.0, 50, 16.5) == 0.0
    assert s.update(24.0, 60, 18.5) == 0.0
    assert s.update(26.0, 70, 20.5) == 2.0


def _encode(bframes: int, count: int = 12) -> tuple[bytes, list[Packet]]:
    """A 64x48 libx264 stream: its avcC and its access units as Bus packets (ms timestamps)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 48, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 15)
    ctx.options = {"x264-params": f"keyint=30:bframes={bframes}:log-level=error", "profile": "high"}
    out: list[av.Packet] = []
    for i in range(count):
        frame = av.VideoFrame(64, 48, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 20) % 256]) * plane.buffer_size)
        frame.pts = i
        out += ctx.encode(frame)
    out += ctx.encode(None)
    sps: list[bytes] = []
    pps: list[bytes] = []
    packets: list[Packet] = []
    for p in out:
        nals = [n for n in re.split(b"\x00\x00\x00?\x01", bytes(p)) if n]
        sps += [n for n in nals if n[0] & 0x1F == 7 and n not in sps]
        pps += [n for n in nals if n[0] & 0x1F == 8 and n not in pps]
        units = [n for n in nals if n[0] & 0x1F not in (7, 8)]
        assert p.pts is not None and p.dts is not None
        packets.append(
            Packet(
                kind=Kind.VIDEO,
                codec=Codec.H264,
                payload=b"".join(len(n).to_bytes(4, "big") + n for n in units),
                pts_ms=(p.pts + 2) * 1000 // 15,
                dts_ms=(p.dts + 2) * 1000 // 15,
                keyframe=p.is_keyframe,
            )
        )
    return build_avc_config(sps, pps), packets


async def _attempt(registry: BusRegistry, **kw: Any) -> tuple[WhipPush, list[tuple[str, str | None]]]:
    told: list[tuple[str, str | None]] = []
    push = WhipPush("w", "http://127.0.0.1:9/whip/x", "live/x", registry, on_state=lambda *a: told.append(a))
    with pytest.raises(PushError), trio.fail_after(10):
        await push.run()
    return push, told


async def test_a_source_with_b_frames_is_refused_before_any_request() -> None:
    registry = BusRegistry()
    config, packets = _encode(bframes=2)
    assert any(p.pts_ms != p.dts_ms for p in packets)
    with registry.publish("live/x") as producer:
        producer.send_config(CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=config))
        for packet in packets:
            producer.send_packet(packet)
        push, told = await _attempt(registry)
    assert push.stats.last_error is not None and "B-frames" in push.stats.last_error
    assert "bframes=0" in push.stats.last_error and told[-1] == ("error", push.stats.last_error)
    assert push.stats.attempts == 1 and push.rtp == {}


async def test_a_source_that_is_not_h264_is_refused() -> None:
    registry = BusRegistry()
    with registry.publish("live/x") as producer:
        producer.send_config(CodecConfig(kind=Kind.VIDEO, codec=Codec.HEVC, data=b"\x01" + bytes(22)))
        push, _ = await _attempt(registry)
    assert push.stats.last_error == "live/x is hevc; WHIP push sends H.264"


async def test_keyframe_requests_go_to_the_camera_at_most_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked: list[int] = []
    push = WhipPush(
        "w",
        "https://cloud.example.com/whip/x",
        "live/cam",
        BusRegistry(),
        request_keyframe=lambda: asked.append(1),
    )
    posted: list[object] = []

    class Loop:
        def post(self, fn: object, *args: object) -> None:
            posted.append(fn)

    for _ in range(3):
        push._on_keyframe_request(Loop(), None)  # type: ignore[arg-type]
    assert len(asked) == 1 and push.keyframe_requests == 1
    await trio.sleep(1.01)
    push._on_keyframe_request(Loop(), None)  # type: ignore[arg-type]
    assert len(asked) == 2 and posted == []


async def test_another_source_gets_its_gop_keyframe_resent_for_a_picture_loss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = BusRegistry()
    config, packets = _encode(bframes=0)
    push = WhipPush("w", "https://cloud.example.com/whip/x", "live/x", registry)
    posted: list[tuple[object, av.Packet]] = []

    class Loop:
        def post(self, fn: object, packet: av.Packet) -> None:
            posted.append((fn, packet))

    class Video:
        def resync(self, packet: av.Packet) -> None:
            raise AssertionError("posted, not called")

    video = Video()
    with registry.publish("live/x") as producer:
        producer.send_config(CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=config))
        for packet in packets:
            producer.send_packet(packet)
        push._on_keyframe_request(Loop(), video)  # type: ignore[arg-type]
        assert posted == []  # no prefix yet: the session has not started
        await trio.sleep(1.01)
        push._prefix = b"\x00\x00\x00\x01prefix"
        push._last_pts_ms = 500
        push._on_keyframe_request(Loop(), video)  # type: ignore[arg-type]
    [(fn, resent)] = posted
    assert fn == video.resync and bytes(resent).startswith(b"\x00\x00\x00\x01prefix")
    key = next(p for p in packets if p.keyframe)
    assert bytes(resent).endswith(key.annexb()) and resent.pts == 501 * 90


def test_describe_shows_neither_token_nor_path() -> None:
    push = WhipPush("w", "whip://cloud.example.com/whip/sk-secret", "live/cam", BusRegistry(), token=TOKEN)
    shown = push.describe()
    assert shown["url"] == "https://cloud.example.com:443/<path>" and shown["protocol"] == "whip"
    assert shown["rtp"] == {} and shown["keyframe_requests"] == 0 and shown["state"] == "starting"
    assert TOKEN not in repr(shown) and "sk-secret" not in repr(shown)
    with pytest.raises(ValueError, match="the token would go in clear"):
        WhipPush("w", "http://cloud.example.com/whip/sk-secret", "live/cam", BusRegistry())
