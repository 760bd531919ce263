"""WHIP ingest against the real appliance: an aiortc publisher (tests/aiortc_peer/whip_publish.py, its own
process) publishes H.264 + Opus into ``live/KEY``; ffprobe plays it back over RTMP as H.264 + AAC, an
aiortc WHEP viewer sees the picture move, ICE stays on 127.0.0.1; refusals (camera stream, busy stream,
unknown app, publish secrets) and the hang-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import probe, running_camera
from tests.integration.test_webrtc import WEBRTC, request, require_aiortc, whep_client
from tests.peers import require_browser_scripts, require_command

PUBLISHER = Path(__file__).resolve().parents[1] / "aiortc_peer" / "whip_publish.py"


@contextmanager
def publishing(app: ApplianceProcess, url: str, **opts: Any) -> Iterator[dict[str, Any]]:
    """Run the aiortc publisher; yields its "answer" line once the POST is answered (and, on 201, once
    it has a candidate pair: the "connected" line is merged in)."""
    proc = subprocess.Popen(
        [sys.executable, str(PUBLISHER), json.dumps({"url": url, **opts})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        answer = json.loads(proc.stdout.readline() or "{}")
        assert answer.get("event") == "answer", answer or (proc.communicate(timeout=30), app.log_text())
        if answer["status"] == 201:
            answer.update(json.loads(proc.stdout.readline()))
        yield answer
        out, err = proc.communicate(timeout=float(opts.get("seconds", 8)) + 30)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        answer["done"] = lines[-1] if lines else {"stderr": err[-2000:]}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def stream_item(base: str, name: str) -> dict[str, Any] | None:
    streams = http_get(base + "/api/streams")[1]["streams"]
    return next((s for s in streams if s["name"] == name), None)


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.peers
def test_an_aiortc_whip_publisher_is_played_over_rtmp_and_whep(tmp_path: Path) -> None:
    require_aiortc()
    with running_camera(tmp_path, WEBRTC) as (app, base):
        with publishing(app, base + "/whip/live/phone", seconds=12) as answer:
            assert answer["status"] == 201 and "/whip/sessions/" in answer["location"]
            assert answer["state"] == "connected" and answer["pair"] == ["127.0.0.1", "127.0.0.1"]
            item = wait_for(
                lambda: (
                    (s := stream_item(base, "live/phone")) and s["audio"] and s["publisher"]["address"] and s
                )
            )
            assert item, app.log_text()
            publisher = item["publisher"]
            assert publisher["protocol"] == "whip" and publisher["tracks"] == ["video", "audio"]
            assert publisher["address"].startswith("127.0.0.1:")
            assert item["video"]["codec"] == "h264" and item["audio"]["codec"] == "aac"
            # Played back over RTMP by ffprobe: H.264 at the published size, AAC (transcoded from Opus).
            assert probe(app.rtmp_url("live/phone")) == ["aac", "h264,320,240"]
            # And over WHEP, like any stream: the picture moves.
            [viewer] = whep_client(app, url=base + "/whep/live/phone", viewers=1, frames=10)
            assert viewer["post"] == 201 and viewer["sizes"] == [[320, 240]] and viewer["distinct_frames"] > 3
            # A second publisher of the same stream is refused while the first is live.
            status, _, body = request(
                base, "/whip/live/phone", "POST", b"v=0\r\n", {"Content-Type": "application/sdp"}
            )
            assert status == 409 and b"already being published" in body
        assert answer["done"]["delete"] == 200, answer
        unpublished = app.event("whip.unpublish", stream="live/phone")
        assert unpublished["why"] == "deleted" and int(unpublished["packets"]) > 100
        assert wait_for(lambda: (s := stream_item(base, "live/phone")) is None or s["publisher"] is None)
        webrtc = http_get(base + "/api/status")[1]["webrtc"]
        assert webrtc["publishers"] == 0 and webrtc["peer_connections_open"] == 0


@pytest.mark.peers
def test_whip_refusals_and_publish_secrets(tmp_path: Path) -> None:
    require_aiortc()
    secret = ("--set", 'rtmp.auth={ live = { publish = ["pub-secret"] } }')
    with running_camera(tmp_path, WEBRTC, secret) as (app, base):
        status, headers, _ = request(base, "/whip/live/x", "OPTIONS")
        assert status == 204 and headers.get("accept-post") == "application/sdp"
        assert "access-control-allow-origin" not in headers
        sdp = {"Content-Type": "application/sdp", "Authorization": "Bearer pub-secret"}
        status, _, body = request(base, "/whip/live/cam", "POST", b"v=0\r\n", sdp)
        assert status == 409 and b"camera" in body
        status, _, body = request(base, "/whip/nope/x", "POST", b"v=0\r\n", sdp)
        assert status == 404 and b"rtmp.apps" in body
        status, _, _ = request(base, "/whip/live/x", "POST", b"not sdp", sdp)
        assert status == 400
        status, _, _ = request(base, "/whip/sessions/nope/nope", "DELETE")
        assert status == 404
        with publishing(app, base + "/whip/live/x", seconds=1) as refused:
            assert refused["status"] == 401 and "publish secret" in refused["body"]
        with publishing(app, base + "/whip/live/x", seconds=1, token="wrong") as wrong:
            assert wrong["status"] == 401
        with publishing(app, base + "/whip/live/x", seconds=3, token="pub-secret") as ok:
            assert ok["status"] == 201 and ok["state"] == "connected"
            assert wait_for(lambda: (s := stream_item(base, "live/x")) and s["video"])
        assert ok["done"]["delete"] == 200
        # A publisher that vanishes without DELETE is ended when its connection closes.
        with publishing(app, base + "/whip/live/y", seconds=2, token="pub-secret", delete=False) as gone:
            assert gone["status"] == 201
        app.event("whip.unpublish", stream="live/y", timeout=60)
        app.wait_healthy(base)


@pytest.mark.peers
def test_chromium_publishes_a_canvas_over_whip(tmp_path: Path) -> None:
    """Chromium's own WebRTC H.264 encoder and Opus, through the npm whip-whep client (trickle PATCH), then
    played back over RTMP by ffprobe."""
    require_aiortc()
    browser_dir = require_browser_scripts()
    with running_camera(tmp_path, WEBRTC) as (app, base):
        opts = {"url": base, "stream": "live/chromium", "seconds": 8}
        proc = subprocess.Popen(
            [require_command("node"), str(browser_dir / "whip_publish.mjs"), json.dumps(opts)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            published = json.loads(proc.stdout.readline() or "{}")
            assert published.get("event") == "published", (published, app.log_text())
            assert published["videoCodec"] == "video/H264" and published["audioCodec"] == "audio/opus"
            assert published["local"] == "127.0.0.1" and published["remote"] == "127.0.0.1"
            assert wait_for(lambda: (s := stream_item(base, "live/chromium")) and s["audio"]), app.log_text()
            assert probe(app.rtmp_url("live/chromium")) == ["aac", "h264,320,240"]
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        done = json.loads(out.splitlines()[-1])
        assert done["event"] == "done" and done["errors"] == [], out + err
        assert "POST" in done["methods"] and "DELETE" in done["methods"]
        # whip-whep closes its peer connection before its DELETE: whichever comes first ends the session.
        ended = app.event("whip.unpublish", stream="live/chromium")
        assert ended["why"] in ("deleted", "closed") and int(ended["packets"]) > 100
