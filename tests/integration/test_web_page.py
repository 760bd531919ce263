"""The status page against the real process: its files, its live feed, and headless Chromium using it.

The browser test runs ``tests/browser/status_page.mjs`` (playwright-core driving Debian's Chromium as
root with ``--no-sandbox`` and background networking off) against an appliance with the small synthetic
camera: the page must list ``live/cam`` at 320x240, show a restart of ``capture`` made through the API
while the page stays open (no reload), then log in and restart it again with the page's own button,
then play ``live/cam`` and a second stream (ffmpeg over RTMP) as live previews side by side (the /watch
WHEP player framed in each card; ICE on 127.0.0.1), stop one by its button and the rest by hiding the
page, and check that the viewers the appliance lists come and go with them. With WebRTC off, the Live
button is disabled and says why.
The script's JSON answers are asserted on here; its screenshot lands in the test's tmp_path (path
printed). Chromium, Node.js and the npm packages come from scripts/install-test-deps; missing, they
fail the test under APPLIANCE_REQUIRE_PEERS=1.
"""

from __future__ import annotations

import http.client
import json
import queue
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.web.auth import hash_password
from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import ffmpeg_publisher, killing, running_camera, start
from tests.peers import BROWSER_DIR, require_browser_scripts, require_command

PASSWORD = "page test pass"
TOKEN = "page-test-token-0123456789"


def read_events(base: str, count: int, headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The first ``count`` server-sent events of /api/events (fields per event), then hang up."""
    host = base.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.request("GET", "/api/events", headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type", "").startswith("text/event-stream")
        assert resp.getheader("cache-control") == "no-store"
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        while len(events) < count:
            line = resp.readline().decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
        return events
    finally:
        conn.close()


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApplianceProcess, str]]:
    """The appliance with the synthetic camera, a password (cheap scrypt) and an API token."""
    tmp = tmp_path_factory.mktemp("web_page")
    pw_hash = hash_password(PASSWORD, n=1024, r=8, p=1)
    with running_camera(
        tmp,
        '[record]\nstreams = ["live/cam"]\nsegment = "1s"\n[webrtc]\nice_addresses = ["127.0.0.1"]\n',
        args=("--set", f'web.password_hash="{pw_hash}"', "--set", f'web.api_tokens=["{TOKEN}"]'),
    ) as running:
        yield running


def test_page_files_are_served_with_caching_and_a_csp(appliance: tuple[ApplianceProcess, str]) -> None:
    _app, base = appliance
    with urllib.request.urlopen(base + "/") as resp:
        html = resp.read().decode()
        etag = resp.headers["etag"]
        assert resp.headers["content-type"] == "text/html; charset=utf-8"
        assert resp.headers["cache-control"] == "no-cache"
        assert "default-src 'self'" in resp.headers["content-security-policy"]
    # Relative URLs only (the page works under any host name or prefix), nothing from elsewhere.
    assert 'src="static/app.js"' in html and 'href="static/style.css"' in html
    assert "http://" not in html and "https://" not in html
    req = urllib.request.Request(base + "/", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 304
    err.value.close()
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css")):
        with urllib.request.urlopen(f"{base}/static/{name}") as resp:
            assert resp.headers["content-type"].startswith(media)
            assert resp.headers["etag"] and resp.headers["cache-control"] == "no-cache"
            assert b"innerHTML" not in resp.read()  # text goes in through textContent only
    code, body = http_get(base + "/static/..%2Fevents.py")
    assert code == 404 and body["title"] == "Not Found"


def test_events_stream_status_snapshots(appliance: tuple[ApplianceProcess, str]) -> None:
    app, base = appliance
    events = read_events(base, 4)
    assert events[0] == {"retry": "2000"}
    assert events[1]["event"] == "history" and isinstance(json.loads(events[1]["data"]), list)
    first, second = (json.loads(e["data"]) for e in events[2:])
    assert [e["event"] for e in events[2:]] == ["status", "status"]
    assert int(events[3]["id"]) > int(events[2]["id"]) == first["seq"]
    status = http_get(base + "/api/status")[1]
    assert first["device"] == status["device"] and first["version"] == status["version"]
    assert first["board"]["model"] and first["health"]["status"] == "ok"
    paths = [c["path"] for c in first["children"]]
    assert paths[:3] == ["web", "relay", "capture"] and "egress" in paths
    system = second["system"]
    assert system["temperature_c"] is None and system["throttling"] is None
    assert 0 <= system["cpu_percent"] <= 100 and system["memory"]["total_bytes"] > 0
    assert system["disk"]["total_bytes"] > 0
    lo = next(i for i in system["network"] if i["name"] == "lo")
    assert {"family": "ipv4", "address": "127.0.0.1", "prefix": 8, "scope": None} in lo["addresses"]
    # The page hung up: the server noticed and ended the stream.
    app.event("web.events_closed", reason="client_gone")
    # A reconnecting browser (Last-Event-ID) has the history already: only retry and status come.
    again = read_events(base, 2, {"Last-Event-ID": events[3]["id"]})
    assert again[0] == {"retry": "2000"} and again[1]["event"] == "status"


class Browser:
    """``node status_page.mjs`` with its JSON lines read by a thread (so waits can time out)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        node = require_command("node")
        self.proc = subprocess.Popen(
            [node, str(BROWSER_DIR / "status_page.mjs"), json.dumps(opts)],
            cwd=BROWSER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.lines.put({"event": "unparsed", "line": raw})
        self.lines.put(None)

    def next(self, timeout: float = 120.0) -> dict[str, Any]:
        try:
            doc = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the browser script said nothing for {timeout}s") from None
        if doc is None:
            assert self.proc.stderr is not None
            raise AssertionError(f"the browser script ended early: {self.proc.stderr.read()}")
        assert doc["event"] != "error", doc
        return doc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def wait_for_video(base: str, stream: str) -> None:
    """Until ``stream`` is on the Bus with its video config (before the page can show or play it)."""
    deadline = time.monotonic() + 30
    while (http_get(f"{base}/api/streams/{stream}")[1] or {}).get("video") is None:
        assert time.monotonic() < deadline, f"{stream} never showed its video"
        time.sleep(0.1)


def test_page_in_headless_chromium(appliance: tuple[ApplianceProcess, str], tmp_path: Path) -> None:
    chromium = require_command("chromium")
    require_browser_scripts()
    app, base = appliance
    wait_for_video(base, "live/cam")
    # A second stream (ffmpeg over RTMP) so that two live previews play at once. Main profile without
    # B-frames: Debian's Chromium offers no High profile H.264, and WHEP passes the stream's own through.
    main_profile = ("-profile:v", "main")
    two = ffmpeg_publisher(app.rtmp_url("live/two"), 120, bframes=0, size="320x180", extra=main_profile)
    publisher = start(two, tmp_path / "ffmpeg.log")
    screenshot = tmp_path / "status-page.png"
    live_screenshot = tmp_path / "status-page-live.png"
    browser = Browser(
        {
            "url": base + "/",
            "stream": "live/cam",
            "child": "capture",
            "screenshot": str(screenshot),
            "live_screenshot": str(live_screenshot),
            "password": PASSWORD,
            "chromium": chromium,
            "recording": True,
            "live": ["live/cam", "live/two"],
        }
    )
    with killing(publisher):
        try:
            wait_for_video(base, "live/two")
            ready = browser.next()
            assert ready["event"] == "ready" and ready["resolution"] == "320x240"
            # Restart the camera through the API while the page is open; the page must show it live.
            req = urllib.request.Request(
                base + "/api/children/capture/restart",
                method="POST",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
                assert json.load(resp)["state"]["manual_restarts"] == ready["manual_restarts"] + 1
            done = browser.next()
            assert browser.proc.wait(60) == 0
        finally:
            browser.close()
    print(f"status page screenshots: {screenshot} {live_screenshot}")
    assert done["event"] == "done"
    assert "live/cam" in done["streams"] and done["resolution"] == "320x240"
    assert done["fps"] == "15 fps" and done["codec"].startswith("h264")
    assert done["publisher"].startswith("camera (synthetic")
    counts = done["manual_restarts"]
    assert counts["after_api"] == counts["before"] + 1
    assert done["logged_in"] is True and counts["after_click"] == counts["after_api"] + 1
    assert done["no_reload"] is True and done["connection"] == "live"
    assert done["health"] in ("ok", "degraded")
    assert done["temperature"] == "not available" and done["throttling"] == "not available"
    assert "lo" in done["interfaces"]
    assert done["preview_loaded"] is True
    assert done["recordings"] and all(f.startswith("live/cam/") for f in done["recordings"])
    assert done["video"] == {"width": 320, "height": 240}
    assert done["console_errors"] == [] and done["page_errors"] == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert live_screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    app.event("web.restart_requested", child="capture")

    live = done["live"]
    # Both previews played at once: frames decoded while time advanced, over a loopback candidate pair.
    sizes = {"live/cam": (320, 240), "live/two": (320, 180)}
    for name, (width, height) in sizes.items():
        started = live["started"][name]
        assert started["button"]["pressed"] == "true" and started["button"]["text"] == "Stop live"
        assert (started.get("width"), started.get("height")) == (width, height), started
        assert started["frames"] >= 15 and started["advanced"] is True
        assert started["pair"] == ["127.0.0.1", "127.0.0.1"]
    assert live["subscribers_while_live"] == {"live/cam": 1, "live/two": 1}
    # Stop on live/cam: its frame and its viewer went; live/two still played.
    stopped = live["after_stop"]
    assert stopped["iframe_gone"] is True
    assert stopped["button"]["pressed"] == "false" and stopped["button"]["text"] == "Live"
    assert stopped["subscribers"] == {"live/cam": 0, "live/two": 1}
    assert stopped["others_playing"] == {"live/two": 320}
    # The page hidden: both stopped, and stayed stopped when it was shown again.
    hidden = live["hidden"]
    assert hidden["subscribers_before"] == {"live/cam": 1, "live/two": 1}
    assert hidden["frames"] == 0 and hidden["frames_after_shown"] == 0
    assert hidden["subscribers"] == {"live/cam": 0, "live/two": 0}
    assert all(b["pressed"] == "false" for b in hidden["buttons"].values())
    # Removing a frame made its player DELETE its session (pagehide): one DELETE per session, each to the
    # URL the 201 gave. Chromium also closes the frame's peer connection as the frame goes (DTLS
    # close_notify), which usually reaches the appliance first; so the viewer ends "closed" or "deleted",
    # never by ICE giving up, and the three sessions (live/cam twice, live/two once) all ended.
    assert len(live["sessions"]) == 3 and sorted(live["deletes"]) == sorted(live["sessions"])
    added = [d for d in app.lines if d.get("event") == "webrtc.viewer_added"]
    removed = [d for d in app.lines if d.get("event") == "webrtc.viewer_removed"]
    assert sorted(d["stream"] for d in added) == ["live/cam", "live/cam", "live/two"]
    assert sorted(d["viewer"] for d in removed) == sorted(d["viewer"] for d in added)
    assert {d["why"] for d in removed} <= {"deleted", "closed"}, removed


def test_live_button_says_why_when_webrtc_is_off(tmp_path: Path) -> None:
    """With ``webrtc.enabled = false`` the Live button is disabled, its title the reason /api/status gives."""
    chromium = require_command("chromium")
    require_browser_scripts()
    with running_camera(tmp_path, "[webrtc]\nenabled = false\n") as (_app, base):
        reason = http_get(base + "/api/status")[1]["webrtc"]
        assert reason == {"state": "off", "reason": "disabled: webrtc.enabled = false"}
        wait_for_video(base, "live/cam")
        browser = Browser(
            {
                "url": base + "/",
                "stream": "live/cam",
                "child": "capture",
                "chromium": chromium,
                "screenshot": str(tmp_path / "status-page-webrtc-off.png"),
                "live_off": True,
            }
        )
        try:
            done = browser.next()
            assert browser.proc.wait(60) == 0
        finally:
            browser.close()
    assert done["event"] == "done" and done["resolution"] == "320x240"
    assert done["button"] == {
        "text": "Live",
        "pressed": "false",
        "disabled": True,
        "title": "WebRTC is off: disabled: webrtc.enabled = false",
    }
    assert done["frames"] == 0  # clicking it did nothing
    assert done["console_errors"] == [] and done["page_errors"] == []
