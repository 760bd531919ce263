"""WHIP push from the real appliance: a ``[[push.targets]]`` with a WHIP URL publishes the camera to a
second appliance's WHIP ingest (bearer token = its publish secret), where ffprobe plays it over RTMP as
H.264 320x240 + AAC; ICE on 127.0.0.1 only (both ends' host candidates) and the receiving side reports a
loopback address. The endpoint going away makes the push retry until it is back; a wrong token is named
in the push's error; the cloud channel's ``start_stream`` with a WHIP ``streamUrl`` pushes the same way
and ``stop_stream`` DELETEs the session."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
