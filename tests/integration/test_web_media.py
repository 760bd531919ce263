"""/metrics, snapshots and recordings of the real appliance with the synthetic camera, checked by real
peers: promtool (Prometheus' own linter) on a scrape, PyAV on the JPEG, ffprobe on the remuxed MP4."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ApplianceProcess, http_get, raw_request
from tests.integration.rtmp_peers import running_camera
from tests.peers import require_command

pytestmark = pytest.mark.peers

WIDTH, HEIGHT = 320, 240  # camera_appliance's camera


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApplianceProcess, str]]:
    """One appliance with the small synthetic camera, recorded in 1 s segments."""
    with running_camera(
        tmp_path_factory.mktemp("web_media"), '[record]\nstreams = ["live/cam"]\nsegment = "1s"\n'
    ) as running:
        yield running


def test_metrics_scrape_passes_promtool_and_counts_the_camera(camera: tuple[ApplianceProcess, str]) -> None:
    promtool = require_command("promtool")
    app, base = camera
    app.event("record.segment_open", stream="live/cam")  # the recorder is a subscriber by now
    status, headers, body = raw_request(base, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["cache-control"] == "no-store"
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    helps: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        helps[family.name] = family.documentation
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    cam = {"stream": "live/cam"}
    assert value("appliance_stream_live", **cam) == 1
    assert value("appliance_stream_received_bytes_total", **cam) > 0
    assert value("appliance_stream_video_frames_total", **cam) > 0
    assert value("appliance_stream_keyframes_total", **cam) > 0
    assert value("appliance_stream_subscribers", protocol="record", **cam) == 1
    assert value("appliance_stream_sent_bytes_total", protocol="record", **cam) > 0
    for child in ("web", "relay", "capture", "recorder", "egress", "watchdog"):
        assert value("appliance_child_up", child=child) == 1
        assert value("appliance_child_restarts_total", child=child) == 0
        assert value("appliance_child_state", child=child, state="running") == 1
    assert value("appliance_healthy") == 1
    assert value("appliance_capture_running") == 1
    assert value("appliance_capture_fps") == 15
    assert value("appliance_capture_frames_total") > 0
    assert value("appliance_capture_info", stream="live/cam", source="synthetic", encoder="libx264") == 1
    assert value("appliance_watchdog_enabled") == 0  # no systemd here
    assert value("process_cpu_seconds_total") > 0 and value("process_resident_memory_bytes") > 0
    assert all(helps[name] for name in helps if name.startswith("appliance_"))


def test_snapshot_is_a_jpeg_of_the_camera(camera: tuple[ApplianceProcess, str]) -> None:
    _, base = camera
    status, headers, body = raw_request(base, "/api/streams/live/cam/snapshot.jpg")
    assert status == 200, body
    assert headers["content-type"] == "image/jpeg" and headers["cache-control"] == "no-store"
    with av.open(io.BytesIO(body), "r", format="image2pipe") as jpeg:
        assert jpeg.streams.video[0].codec_context.name == "mjpeg"
        frame = next(jpeg.decode(video=0))
    assert (frame.width, frame.height) == (WIDTH, HEIGHT)

    status, _, body = raw_request(base, "/api/streams/live/cam/snapshot.jpg?width=160")
    assert status == 200
    with av.open(io.BytesIO(body), "r", format="image2pipe") as jpeg:
        frame = next(jpeg.decode(video=0))
    assert (frame.width, frame.height) == (160, 120)

    status, headers, body = raw_request(base, "/api/streams/live/nobody/snapshot.jpg")
    assert status == 404 and headers["content-type"] == "application/problem+json"
    status, headers, body = raw_request(base, "/api/streams/live/cam/snapshot.jpg?width=abc")
    assert status == 400 and b"width" in body


def test_snapshot_of_a_stream_without_a_keyframe_is_503_with_retry_after(
    camera: tuple[ApplianceProcess, str],
) -> None:
    app, base = camera
    ffmpeg = require_command("ffmpeg")
    # A player waiting for a publisher that has not come: the stream exists, with no picture.
    player = subprocess.Popen(
        [ffmpeg, "-nostdin", "-loglevel", "error", "-i", app.rtmp_url("live/later"), "-f", "null", "-"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        app.event("rtmp.play", stream="live/later")
        assert any(s["name"] == "live/later" for s in http_get(base + "/api/streams")[1]["streams"])
        status, headers, body = raw_request(base, "/api/streams/live/later/snapshot.jpg")
        assert status == 503, body
        assert headers["retry-after"] == "2" and headers["content-type"] == "application/problem+json"
        assert "no keyframe" in json.loads(body)["detail"]
    finally:
        player.kill()
        player.wait()


def probe(path: Path) -> dict[str, Any]:
    ffprobe = require_command("ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_name,codec_type:format=duration",
         "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def test_recordings_list_download_and_play_as_mp4(
    camera: tuple[ApplianceProcess, str], tmp_path: Path
) -> None:
    app, base = camera
    closed = app.event("record.segment_closed", timeout=30, stream="live/cam", reason="duration")
    # The camera announces audio and video before its first packet: the first segment is a full one.
    closes = [d for d in app.lines if d.get("event") == "record.segment_closed"]
    assert [d for d in closes if d.get("reason") == "config"] == []
    status, listing = http_get(base + "/api/recordings")
    assert status == 200
    disk = listing["disk"]
    assert disk["total_bytes"] >= disk["used_bytes"] > 0 and disk["free_bytes"] > 0
    assert disk["recordings_bytes"] > 0
    rec = next(r for r in listing["recordings"] if closed["path"].endswith(r["file"]))
    assert rec["stream"] == "live/cam" and rec["size_bytes"] > 0
    assert rec["duration_s"] == pytest.approx(float(closed["duration_s"]), abs=0.01) and rec["duration_s"] > 0
    assert rec["started"].endswith("Z")

    status, headers, flv = raw_request(base, rec["download_url"])
    assert status == 200 and flv == Path(closed["path"]).read_bytes()
    assert headers["content-disposition"].startswith("attachment;")
    (tmp_path / "rec.flv").write_bytes(flv)
    assert {s["codec_name"] for s in probe(tmp_path / "rec.flv")["streams"]} == {"h264", "aac"}

    status, headers, mp4 = raw_request(base, rec["mp4_url"])
    assert status == 200 and headers["content-type"] == "video/mp4"
    (tmp_path / "rec.mp4").write_bytes(mp4)
    probed = probe(tmp_path / "rec.mp4")
    assert sorted((s["codec_type"], s["codec_name"]) for s in probed["streams"]) == [
        ("audio", "aac"),
        ("video", "h264"),
    ]
    assert float(probed["format"]["duration"]) == pytest.approx(rec["duration_s"], abs=0.2)


def test_recordings_refuse_paths_out_of_the_directory(camera: tuple[ApplianceProcess, str]) -> None:
    _, base = camera
    for path in (
        "/api/recordings/../../../etc/passwd",
        "/api/recordings/live/cam/..%2F..%2F..%2Fappliance.toml",
        "/api/recordings/%2e%2e/%2e%2e/appliance.toml",
        "/api/recordings/live/cam/../../../appliance.toml/mp4",
    ):
        status, headers, body = raw_request(base, path)
        assert status == 400, (path, body)
        assert headers["content-type"] == "application/problem+json"
        assert b"[capture]" not in body
    status, headers, _ = raw_request(base, "/api/recordings/live/cam/20990101-000000-999999.flv")
    assert status == 404 and headers["content-type"] == "application/problem+json"
