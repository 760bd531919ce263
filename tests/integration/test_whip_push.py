"""WHIP push from the real appliance: a ``[[push.targets]]`` with a WHIP URL publishes the camera to a
second appliance's WHIP ingest (bearer token = its publish secret), where ffprobe plays it over RTMP as
H.264 320x240 + AAC; ICE on 127.0.0.1 only (both ends' host candidates) and the receiving side reports a
loopback address. The endpoint going away makes the push retry until it is back; a wrong token is named
in the push's error; the cloud channel's ``start_stream`` with a WHIP ``streamUrl`` pushes the same way
and ``stop_stream`` DELETEs the session. Against an aiortc WHIP endpoint (tests/aiortc_peer/whip_server.py)
that decodes what arrives: moving 320x240 H.264 and 48 kHz Opus through a 307, RTP figures in
/api/status, a killed endpoint noticed by its silence and reconnected to, a DELETE when the appliance
stops."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import camera_appliance, free_port, probe
from tests.integration.test_controller import (
    DEVICE_TOKEN,
    api,
    connected,
    start_controller,
    stop_all,
    stream_is,
    until,
)
from tests.integration.test_webrtc import WEBRTC, require_aiortc

SECRET = "whip-publish-secret"
SERVER = Path(__file__).resolve().parents[1] / "aiortc_peer" / "whip_server.py"


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


@contextmanager
def ingest(tmp_path: Path, port: int) -> Iterator[tuple[ApplianceProcess, str]]:
    """The receiving appliance: WHIP at http://127.0.0.1:PORT/whip/live/..., publish secret SECRET."""
    tmp_path.mkdir(exist_ok=True)
    app = camera_appliance(
        tmp_path,
        WEBRTC,
        (
            "--set",
            f"web.listen=127.0.0.1:{port}",
            "--set",
            f'rtmp.auth={{ live = {{ publish = ["{SECRET}"] }} }}',
        ),
    )
    try:
        base = app.web_url()
        app.wait_healthy(base)
        yield app, base
    finally:
        app.stop()


def pushes(base: str) -> list[dict[str, Any]]:
    pushes_: list[dict[str, Any]] = http_get(base + "/api/status")[1]["pushes"]
    return pushes_


def publisher(base: str, name: str) -> dict[str, Any] | None:
    streams = http_get(base + "/api/streams")[1]["streams"]
    item = next((s for s in streams if s["name"] == name), None)
    return item["publisher"] if item is not None and item["audio"] else None


@pytest.mark.peers
def test_a_whip_target_pushes_the_camera_and_comes_back_after_the_endpoint_does(tmp_path: Path) -> None:
    require_aiortc()
    port = free_port()
    target = f"""
[[push.targets]]
name = "cloud"
url = "http://127.0.0.1:{port}/whip/live/fromcam"
token = "{SECRET}"
"""
    with ingest(tmp_path / "b", port) as (receiver, base_b):
        sender = camera_appliance(tmp_path, WEBRTC + target)
        try:
            base_a = sender.web_url()
            sender.wait_healthy(base_a)
            got = wait_for(lambda: publisher(base_b, "live/fromcam"))
            assert got, receiver.log_text() + sender.log_text()
            assert got["protocol"] == "whip" and got["tracks"] == ["video", "audio"]
            assert wait_for(lambda: publisher(base_b, "live/fromcam")["address"])
            assert publisher(base_b, "live/fromcam")["address"].startswith("127.0.0.1:")
            assert probe(receiver.rtmp_url("live/fromcam")) == ["aac", "h264,320,240"]
            [push] = pushes(base_a)
            assert push["protocol"] == "whip" and push["state"] == "streaming"
            assert push["url"] == f"http://127.0.0.1:{port}/<path>"
            assert wait_for(lambda: pushes(base_a)[0]["bytes_out"] > 10_000)
            config = http_get(base_a + "/api/status")[1]["config"]["push"]["targets"][0]
            assert config["token"] == "<set>" and SECRET not in str(config)
        except BaseException:
            sender.stop()
            raise
    # The endpoint is gone: the push fails and retries with the supervisor's backoff.
    try:
        assert wait_for(lambda: pushes(base_a)[0]["state"] != "streaming"), pushes(base_a)
        assert wait_for(lambda: pushes(base_a)[0]["attempts"] >= 2)
        # Back on the same address: the push reconnects by itself.
        with ingest(tmp_path / "b2", port) as (receiver, base_b):
            assert wait_for(lambda: publisher(base_b, "live/fromcam"), timeout=60), sender.log_text()
            assert wait_for(lambda: pushes(base_a)[0]["state"] == "streaming")
    finally:
        assert sender.stop() == 0


@pytest.mark.peers
def test_a_wrong_token_is_named_in_the_push_error(tmp_path: Path) -> None:
    require_aiortc()
    port = free_port()
    target = f"""
[[push.targets]]
name = "cloud"
url = "http://127.0.0.1:{port}/whip/live/fromcam"
token = "not-the-secret"
"""
    with ingest(tmp_path / "b", port) as (_receiver, base_b):
        sender = camera_appliance(tmp_path, WEBRTC + target)
        try:
            base_a = sender.web_url()  # not wait_healthy: the refused push makes egress degraded
            error = wait_for(lambda: (p := pushes(base_a)) and p[0]["last_error"])
            assert "401" in error and "publish secret" in error, error
            assert publisher(base_b, "live/fromcam") is None
        finally:
            assert sender.stop() == 0


@pytest.mark.peers
def test_the_cloud_channel_starts_and_stops_a_whip_push(tmp_path: Path) -> None:
    """The reference controller sends ``start_stream`` with a WHIP ``streamUrl`` and ``streamToken``; the
    device pushes to the WHIP endpoint; ``stop_stream`` ends it and the endpoint sees the DELETE."""
    require_aiortc()
    port, whip_port = free_port(), free_port()
    controller = start_controller(port, free_port())
    cloud = f"""
[cloud]
url = "ws://127.0.0.1:{port}/device"
token = "{DEVICE_TOKEN}"
device_id = "north-gate"
heartbeat = "1s"
"""
    with ingest(tmp_path / "b", whip_port) as (receiver, base_b):
        app = camera_appliance(tmp_path, WEBRTC + cloud)
        try:
            controller.event("controller.listening")
            until(lambda: connected(port), what="device connected")
            body = {
                "streamId": "w1",
                "streamUrl": f"http://127.0.0.1:{whip_port}/whip/live/cloud",
                "streamToken": SECRET,
            }
            status, doc = api(port, "POST", "/api/devices/north-gate/streams", body)
            assert status == 201, doc
            assert wait_for(lambda: publisher(base_b, "live/cloud")), app.log_text()
            is_streaming = stream_is(port, "w1", "streaming")
            streaming = until(lambda: (d := is_streaming()) and d.get("media") and d, what="w1 media")
            assert streaming["media"]["video"]["codec"] == "h264"
            assert streaming["media"]["audio"]["codec"] == "opus"
            status, _ = api(port, "DELETE", "/api/streams/w1")
            assert status in (200, 202)
            ended = receiver.event("whip.unpublish", stream="live/cloud")
            assert ended["why"] == "deleted"
        finally:
            assert stop_all(app, controller) == [0, 0]


class WhipServer:
    """tests/aiortc_peer/whip_server.py as a process; its JSON lines are read on a thread."""

    def __init__(self, port: int, token: str) -> None:
        command = [sys.executable, str(SERVER), json.dumps({"port": port, "token": token})]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.event(lambda e: e["event"] == "listening")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The first line (since the last call) that `match`es; every line read is kept in `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching line from the WHIP server; saw {self.seen[-5:]}") from None
            self.seen.append(line)
            if match(line):
                return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def whip_server(port: int, token: str = SECRET) -> Iterator[WhipServer]:
    server = WhipServer(port, token)
    try:
        yield server
    finally:
        server.stop()


def decoded(server: WhipServer, frames: int = 45) -> dict[str, Any]:
    """The first report of a session that has decoded `frames` video frames and some audio."""
    return server.event(
        lambda e: e["event"] == "frames" and e["video_frames"] >= frames and e["audio_frames"] >= 20, 60
    )


@pytest.mark.peers
def test_an_aiortc_endpoint_decodes_the_push_and_a_killed_one_is_reconnected_to(tmp_path: Path) -> None:
    require_aiortc()
    port = free_port()
    target = f"""
[[push.targets]]
name = "w"
url = "http://127.0.0.1:{port}/redirect/cam"
token = "{SECRET}"
"""
    with whip_server(port) as server:
        app = camera_appliance(tmp_path, WEBRTC + target)
        try:
            base = app.web_url()
            # The POST went to /redirect/cam, was sent on (307) to /whip/cam with its token, and taken.
            assert server.event(lambda e: e["event"] == "post")["status"] == 307
            assert server.event(lambda e: e["event"] == "post")["status"] == 201
            offer = next(e for e in server.seen if e["event"] == "offer")
            assert set(offer["codecs"]) <= {"H264", "opus", "rtx"} and "H264" in offer["codecs"]
            assert offer["h264_fmtp"] and all("packetization-mode=1" in f for f in offer["h264_fmtp"])
            assert len({f.split("profile-level-id=")[1][:6] for f in offer["h264_fmtp"]}) == 1
            assert offer["directions"] == ["sendonly", "sendonly"]
            got = decoded(server)
            assert got["sizes"] == [[320, 240]] and got["distinct_frames"] > 10, got
            assert got["audio_rate"] == 48000 and got["pair"] == ["127.0.0.1", "127.0.0.1"], got
            # The appliance's side: streaming, real RTP going out over a loopback pair.
            push = wait_for(lambda: (p := pushes(base)[0])["rtp"].get("bitrate_bps", 0) > 10_000 and p)
            assert push, pushes(base)
            assert push["state"] == "streaming" and push["protocol"] == "whip"
            assert push["rtp"]["packets_sent"] > 50 and push["rtp"]["bytes_sent"] > 10_000
            local, remote = push["rtp"]["candidate_pair"].split(" -> ")
            assert local.startswith("127.0.0.1:") and remote.startswith("127.0.0.1:"), push
            assert push["url"] == f"http://127.0.0.1:{port}/<path>" and push["attempts"] == 1
            # The endpoint dies without a word (SIGKILL): no RTCP receiver reports any more.
            server.kill()
            killed = time.monotonic()
            failed = wait_for(lambda: (p := pushes(base)[0])["last_error"] and p, timeout=40)
            noticed_s = time.monotonic() - killed
            assert failed and "no RTCP receiver report" in failed["last_error"], failed
            assert noticed_s < 20, noticed_s
            assert wait_for(lambda: pushes(base)[0]["attempts"] >= 2), pushes(base)
            print(f"killed endpoint noticed after {noticed_s:.1f} s")
        except BaseException:
            app.stop()
            raise
    # Back on the same port: the push reconnects by itself, and DELETEs its session when the appliance stops.
    try:
        with whip_server(port) as server:
            back = time.monotonic()
            got = decoded(server, frames=15)
            print(f"frames decoding again {time.monotonic() - back:.1f} s after the endpoint came back")
            assert got["sizes"] == [[320, 240]] and got["pair"] == ["127.0.0.1", "127.0.0.1"]
            assert wait_for(lambda: pushes(base)[0]["state"] == "streaming")
            assert app.stop() == 0
            assert server.event(lambda e: e["event"] == "deleted")["session"] == got["session"]
    finally:
        app.stop()


@pytest.mark.peers
def test_an_endpoint_refusing_the_token_is_named_in_the_push_state(tmp_path: Path) -> None:
    require_aiortc()
    port = free_port()
    target = f"""
[[push.targets]]
name = "w"
url = "http://127.0.0.1:{port}/whip/cam"
token = "not-{SECRET}"
"""
    with whip_server(port) as server:
        app = camera_appliance(tmp_path, WEBRTC + target)
        try:
            base = app.web_url()
            assert server.event(lambda e: e["event"] == "post")["status"] == 401
            push = wait_for(lambda: (p := pushes(base)[0])["last_error"] and p)
            assert push["last_error"] == "the endpoint answered 401: wrong bearer token", push
            assert push["state"] != "streaming" and push["rtp"] == {}
            assert not any(e["event"] == "offer" for e in server.seen)
        finally:
            assert app.stop() == 0
