"""WHEP viewers nobody here wrote, against the real appliance with the synthetic camera: the /watch player
page in three headless Chromium tabs at once, the npm `whip-whep` client (trickle ICE) in Chromium, and
GStreamer's webrtcbin. Each decodes the camera's H.264 at 320x240 and ICE stays on 127.0.0.1 (every
candidate but loopback is dropped, and the selected pair is checked)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ApplianceProcess
from tests.integration.rtmp_peers import running_camera
from tests.peers import require_browser_scripts, require_command

pytestmark = pytest.mark.peers


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[tuple[ApplianceProcess, str]]:
    with running_camera(tmp_path, '[webrtc]\nice_addresses = ["127.0.0.1"]\n') as running:
        yield running


def run_script(name: str, opts: dict[str, object], app: ApplianceProcess) -> dict[str, Any]:
    """``node tests/browser/NAME`` with `opts`; its last JSON line, which must say done."""
    browser_dir = require_browser_scripts()
    command = [require_command("node"), str(browser_dir / name), json.dumps(opts)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["event"] == "done", run.stdout + run.stderr + app.log_text()
    return lines[-1]


def test_three_chromium_tabs_play_the_camera_over_whep(appliance: tuple[ApplianceProcess, str]) -> None:
    app, base = appliance
    tabs = run_script("watch.mjs", {"url": base, "stream": "cam", "tabs": 3}, app)["tabs"]
    assert len(tabs) == 3
    for tab in tabs:
        assert (tab["width"], tab["height"]) == (320, 240), tab
        assert tab["videoCodec"] == "video/H264" and tab["framesDecoded"] > 10, tab
        assert tab["distinct"] >= 3 and tab["lit"] > 1000, tab  # a real picture, and it moves
        assert (tab["local"], tab["remote"]) == ("127.0.0.1", "127.0.0.1"), tab
        assert tab["audioPackets"] > 0 and tab["errors"] == [], tab


def test_the_npm_whip_whep_client_views_the_camera(appliance: tuple[ApplianceProcess, str]) -> None:
    app, base = appliance
    got = run_script("whep_client.mjs", {"url": base, "stream": "cam"}, app)
    assert (got["width"], got["height"]) == (320, 240) and got["framesDecoded"] > 10, got
    assert (got["local"], got["remote"]) == ("127.0.0.1", "127.0.0.1"), got
    assert got["methods"][0] == "POST" and got["methods"][-1] == "DELETE" and got["errors"] == [], got


def test_gstreamer_webrtcbin_views_the_camera(appliance: tuple[ApplianceProcess, str]) -> None:
    require_command("gst-inspect-1.0")
    script = Path(__file__).resolve().parents[1] / "gst" / "whep_client.py"
    app, base = appliance
    command = ["/usr/bin/python3", str(script), base + "/whep/cam", "4"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip(), run.stderr + app.log_text()
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert "error" not in got, (json.dumps(got), run.stderr[-3000:])
    assert (got["width"], got["height"]) == (320, 240) and got["frames"] > 10 and got["audio_buffers"] > 0, (
        got
    )
    assert got["candidates"] == ["127.0.0.1"] and got["deleted"] is True, got
    assert got["pairs"] and all(pair == ["127.0.0.1", "127.0.0.1"] for pair in got["pairs"]), got
