"""WHEP against the real appliance with the synthetic camera, from an aiortc client run as its own process
(tests/aiortc_peer/whep_client.py): frames decode at 320x240 and move, Opus audio arrives, ICE stays on
127.0.0.1, sessions end on DELETE (only with their URL), three viewers at once, churn leaves nothing
behind; and without the extra, WHEP answers 503 "disabled: extra not installed" and the rest runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ApplianceProcess, http_get, raw_request
from tests.integration.rtmp_peers import camera_appliance, ffmpeg_publisher, killing, running_camera, start
from tests.peers import peers_required

NO_AIORTC = Path(__file__).resolve().parents[1] / "fixtures" / "no_aiortc"
CLIENT = Path(__file__).resolve().parents[1] / "aiortc_peer" / "whep_client.py"
PUBLISHER = Path(__file__).resolve().parents[1] / "aiortc_peer" / "publish_bframes.py"
WEBRTC = '[webrtc]\nice_addresses = ["127.0.0.1"]\nmax_viewers = 4\n'


def require_aiortc() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        msg = "aiortc (the webrtc extra) is not installed"
        if peers_required():
            pytest.fail(msg + " and APPLIANCE_REQUIRE_PEERS=1")
        pytest.skip(msg)  # only when APPLIANCE_REQUIRE_PEERS is unset: checked just above


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[ApplianceProcess, str]]:
    require_aiortc()
    with running_camera(tmp_path, WEBRTC) as running:
        yield running


def whep_client(app: ApplianceProcess, **opts: Any) -> list[dict[str, Any]]:
    run = subprocess.run(
        [sys.executable, str(CLIENT), json.dumps(opts)], capture_output=True, text=True, timeout=240
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["event"] == "done", run.stdout + run.stderr + app.log_text()
    viewers: list[dict[str, Any]] = lines[-1]["viewers"]
    return viewers


def request(
    base: str, path: str, method: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request, errors included."""
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def settled(base: str) -> dict[str, Any]:
    """/api/status once the webrtc child's figures (refreshed every 2 s) have caught up with hang-ups."""
    time.sleep(4.5)
    status: dict[str, Any] = http_get(base + "/api/status")[1]
    return status


def webrtc_subscribers(base: str) -> list[dict[str, Any]]:
    status, doc = http_get(base + "/api/streams")
    assert status == 200, doc
    streams = doc["streams"]
    return [s for item in streams for s in item["subscribers"] if s["protocol"] == "webrtc"]


@pytest.mark.peers
def test_an_aiortc_viewer_gets_moving_h264_and_opus_over_loopback(
    appliance: tuple[ApplianceProcess, str],
) -> None:
    app, base = appliance
    command = [sys.executable, str(CLIENT), json.dumps({"url": base + "/whep/cam", "frames": 120})]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as client:
        # While it watches, /api/streams lists it under the camera's subscribers.
        app.event("webrtc.viewer_state", state="connected")
        [listed] = webrtc_subscribers(base)
        assert listed["state"] == "connected" and listed["name"] == "webrtc:" + listed["session"]
        assert {"bitrate_bps", "packets_lost", "rtt_ms", "keyframe_requests", "delivered"} <= set(listed)
        # Its figures (refreshed every 2 s): the bit rate it is sent, its candidate pair, its RTT.
        deadline = time.monotonic() + 5
        while not (listed["bitrate_bps"] > 0 and listed["candidate_pair"]) and time.monotonic() < deadline:
            time.sleep(0.25)
            [listed] = webrtc_subscribers(base)
        assert listed["bitrate_bps"] > 10_000, listed
        assert (
            listed["candidate_pair"].startswith("127.0.0.1:") and " -> 127.0.0.1:" in listed["candidate_pair"]
        )
        assert listed["rtt_ms"] is None or listed["rtt_ms"] >= 0
        out, err = client.communicate(timeout=120)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["event"] == "done", out + err + app.log_text()
    [viewer] = lines[-1]["viewers"]
    assert viewer["post"] == 201 and viewer["location_is_session"] and viewer["etag"]
    assert viewer["content_type"].startswith("application/sdp")
    # Only H.264 (the camera's own profile) and Opus are offered back; packetization-mode 1.
    assert set(viewer["answer_video_codecs"]) <= {"H264", "opus", "rtx"}
    assert viewer["answer_h264"] and all("packetization-mode=1" in f for f in viewer["answer_h264"])
    assert viewer["patch"] == 204
    assert viewer["sizes"] == [[320, 240]] and viewer["distinct_frames"] > 5
    assert viewer["audio_frames"] == 10 and viewer["audio_rate"] == 48000
    assert viewer["pair"] == ["127.0.0.1", "127.0.0.1"]
    assert (
        viewer["delete_without_secret"] == 404 and viewer["delete"] == 200 and viewer["delete_again"] == 404
    )
    app.event("webrtc.viewer_removed", why="deleted")
    assert webrtc_subscribers(base) == []


@pytest.mark.peers
def test_three_viewers_at_once_then_churn_leaves_nothing_behind(
    appliance: tuple[ApplianceProcess, str],
) -> None:
    app, base = appliance
    viewers = whep_client(app, url=base + "/whep/cam", viewers=3, frames=15)
    assert [v["post"] for v in viewers] == [201, 201, 201]
    assert all(v["sizes"] == [[320, 240]] and v["distinct_frames"] > 3 for v in viewers)
    assert all(v["pair"] == ["127.0.0.1", "127.0.0.1"] for v in viewers)
    before = settled(base)
    churn = whep_client(app, url=base + "/whep/cam", viewers=1, frames=0, rounds=50)
    assert [v["post"] for v in churn] == [201] * 50
    assert all(v["state"] == "connected" and v["delete"] == 200 for v in churn)
    assert webrtc_subscribers(base) == []
    after = settled(base)
    print("churn:", [(s["webrtc"], s["process"]) for s in (before, after)])
    assert after["webrtc"]["viewers"] == 0 and after["webrtc"]["streams"] == []
    bus = next(b for b in after["buses"] if b["name"] == "live/cam")
    assert not [s for s in bus["subscribers"] if s["name"].startswith("webrtc")]
    # Nothing left behind: trio tasks, asyncio tasks and threads as before, peer connections closed, and
    # memory within what 50 connections' worth of allocator slack can explain.
    # (A task or two come and go with the HTTP connections; a leak of 50 rounds would be 50 or more.)
    assert after["process"]["trio_tasks"] <= before["process"]["trio_tasks"] + 2
    assert after["webrtc"]["loop_tasks"] <= before["webrtc"]["loop_tasks"]
    assert after["process"]["threads"] <= before["process"]["threads"] + 2
    assert after["webrtc"]["peer_connections_open"] == 0
    assert after["process"]["rss_bytes"] - before["process"]["rss_bytes"] < 40 << 20


@pytest.mark.peers
def test_whep_refusals(appliance: tuple[ApplianceProcess, str]) -> None:
    app, base = appliance
    status, headers, _ = request(base, "/whep/cam", "OPTIONS")
    assert status == 204 and headers.get("accept-post") == "application/sdp"
    assert "access-control-allow-origin" not in headers
    sdp = {"Content-Type": "application/sdp"}
    status, _, body = request(base, "/whep/live/nothing", "POST", b"v=0\r\n", sdp)
    assert status == 404 and b"no live stream" in body
    status, _, body = request(base, "/whep/cam", "POST", b"v=0\r\n", {"Content-Type": "text/plain"})
    assert status == 415 and b"application/sdp" in body
    status, _, _ = request(base, "/whep/cam", "POST", b"not an offer", sdp)
    assert status == 400
    status, _, _ = request(base, "/whep/sessions/nope/nope", "DELETE")
    assert status == 404
    app.wait_healthy(base)


@pytest.mark.peers
def test_play_secrets_gate_whep_like_rtmp_play(tmp_path: Path) -> None:
    require_aiortc()
    play_secret = ("--set", 'rtmp.auth={ live = { play = ["watch-secret"] } }')
    with running_camera(tmp_path, WEBRTC, play_secret) as (app, base):
        [refused] = whep_client(app, url=base + "/whep/cam", viewers=1, frames=0)
        assert refused["post"] == 401
        [wrong] = whep_client(app, url=base + "/whep/cam", viewers=1, frames=0, token="nope")
        assert wrong["post"] == 401
        [viewer] = whep_client(app, url=base + "/whep/cam", viewers=1, frames=3, token="watch-secret")
        assert viewer["post"] == 201 and viewer["sizes"] == [[320, 240]]


@pytest.mark.peers
def test_a_stream_with_b_frames_is_transcoded_once_or_refused(tmp_path: Path) -> None:
    require_aiortc()
    for transcode in (True, False):
        args = ("--set", f"webrtc.transcode={str(transcode).lower()}")
        (tmp_path / str(transcode)).mkdir()
        with running_camera(tmp_path / str(transcode), WEBRTC, args) as (app, base):
            publisher = subprocess.Popen(
                [sys.executable, str(PUBLISHER), app.rtmp_url("live/bf"), "30"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                app.event("rtmp.publish", stream="live/bf")
                url = base + "/whep/live/bf"
                if not transcode:
                    [refused] = whep_client(app, url=url, frames=0, wait_for_stream=True)
                    assert refused["post"] == 422 and "B-frames" in refused["problem"]
                    assert "webrtc.transcode" in refused["problem"]
                    continue
                viewers = whep_client(app, url=url, viewers=2, frames=10, wait_for_stream=True)
                assert [v["post"] for v in viewers] == [201, 201]
                assert all(v["sizes"] == [[320, 240]] and v["distinct_frames"] > 3 for v in viewers)
                # One transcode for both viewers, and it stops with the last of them.
                app.event("webrtc.transcode_stopped", source="live/bf")
                starts = [d for d in app.lines if d.get("event") == "webrtc.transcode_started"]
                assert len(starts) == 1
                assert webrtc_subscribers(base) == []
            finally:
                publisher.kill()
                publisher.wait()


def test_without_the_extra_whep_is_503_and_everything_else_runs(tmp_path: Path) -> None:
    # A WHIP push target too: it says why it sends nothing, and the rest runs.
    target = '[[push.targets]]\nname = "w"\nurl = "https://whip.example.com/whip/k"\ntoken = "t"\n'
    app = camera_appliance(tmp_path, target, env={"PYTHONPATH": str(NO_AIORTC)})
    try:
        base = app.web_url()
        app.wait_healthy(base)
        assert app.event("webrtc.off")["reason"] == "disabled: extra not installed"
        status, _headers, body = raw_request(base, "/whep/cam", "POST")
        assert status == 503 and b"disabled: extra not installed" in body
        streams = http_get(base + "/api/streams")[1]["streams"]
        assert any(s["name"] == "live/cam" for s in streams)
        status_doc = http_get(base + "/api/status")[1]
        assert status_doc["webrtc"] == {"state": "off", "reason": "disabled: extra not installed"}
        children = {c["name"]: c["state"] for c in status_doc["supervisor"]["children"]}
        assert children["webrtc"] == "running" and children["capture"] == "running"
        [push] = status_doc["pushes"]
        assert push["state"] == "disabled: extra not installed" and push["protocol"] == "whip"
        status, _headers, body = raw_request(base, "/whip/live/x", "POST")
        assert status == 503 and b"disabled: extra not installed" in body
    finally:
        assert app.stop() == 0


@pytest.mark.peers
def test_picture_loss_gets_a_keyframe_from_the_camera_or_the_gop_cache(tmp_path: Path) -> None:
    """PLI from a viewer of the camera asks its encoder; from a viewer of an RTMP publisher's stream (no
    encoder to ask) the GOP cache's keyframe is served. Either way the viewer decodes on."""
    require_aiortc()
    with running_camera(tmp_path, WEBRTC) as (app, base):
        [camera_viewer] = whep_client(app, url=base + "/whep/cam", frames=10, pli=True)
        assert camera_viewer["frames_after_pli"] == 10 and camera_viewer["distinct_frames"] > 10
        assert http_get(base + "/api/status")[1]["webrtc"]["keyframes_requested"] >= 1
        publisher = start(
            ffmpeg_publisher(
                app.rtmp_url("live/ff"), 30, gop=30, bframes=0, extra=("-profile:v", "baseline")
            ),
            tmp_path / "ffmpeg.log",
        )
        with killing(publisher):
            app.event("rtmp.publish", stream="live/ff")
            [viewer] = whep_client(app, url=base + "/whep/live/ff", frames=10, pli=True, wait_for_stream=True)
            assert viewer["post"] == 201, viewer  # aiortc decodes only baseline: so is the publisher
            assert viewer["frames_after_pli"] == 10
            assert viewer["distinct_frames"] > 10
            app.event("webrtc.keyframe_resent", stream="live/ff")
