"""Recording end to end: ffmpeg publishes to the real appliance, ffprobe and ffmpeg check the segments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance.media.recording_files import read_duration
from tests.harness import ApplianceProcess
from tests.integration.rtmp_peers import (
    FPS,
    decode_errors,
    ffmpeg_publisher,
    probe_packets,
    write_relay_config,
)
from tests.peers import require_command

pytestmark = pytest.mark.peers

SEGMENT_S = 2.0
SECONDS = 7


def probe_duration(path: Path) -> float:
    ffprobe = require_command("ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", str(path)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return float(out.stdout)


def test_a_published_stream_is_recorded_in_whole_segments(tmp_path: Path) -> None:
    require_command("ffmpeg")
    state = tmp_path / "state"
    config = write_relay_config(tmp_path / "appliance.toml", state)
    with config.open("a") as f:
        f.write(f'[record]\nstreams = ["live/*"]\nsegment = "{SEGMENT_S:g}s"\n')
    app = ApplianceProcess(config)
    try:
        url = app.rtmp_url("live/cam")
        pub = subprocess.run(
            ffmpeg_publisher(url, SECONDS, gop=FPS), capture_output=True, timeout=60, check=False
        )
        assert pub.returncode == 0, pub.stderr.decode()
        # The publisher's departure closes the last segment.
        app.event("record.segment_closed", reason="producer")
    finally:
        app.stop()
    directory = state / "recordings" / "live" / "cam"
    assert not list(directory.glob("*.part"))
    files = sorted(directory.glob("*.flv"))
    assert len(files) >= 3, app.log_text()
    covered = 0.0
    for path in files:
        packets = probe_packets(path)
        assert packets and packets[0]["flags"].startswith("K"), f"{path.name} does not start at a keyframe"
        dts = [int(p["dts"]) for p in packets]
        assert dts[0] == 0, f"{path.name} starts at {dts[0]} ms"
        real = (dts[-1] - dts[0]) / 1000 + 1 / FPS  # the last frame lasts one frame interval
        probed = probe_duration(path)
        metadata = read_duration(path)
        assert metadata is not None
        assert probed == pytest.approx(real, abs=0.5), f"{path.name}: ffprobe {probed} s, frames {real} s"
        assert probed == pytest.approx(metadata, abs=0.05), (
            f"{path.name}: ffprobe {probed} s, onMetaData {metadata}"
        )
        assert decode_errors(path) == "", f"{path.name} does not decode cleanly"
        covered += real
    # Whole segments of about SEGMENT_S (cut at the first keyframe after it), the last one shorter.
    assert all(probe_duration(p) == pytest.approx(SEGMENT_S, abs=1 / FPS + 0.01) for p in files[:-1])
    assert covered >= SECONDS - 1.5, f"only {covered:.1f} s of {SECONDS} s recorded"
