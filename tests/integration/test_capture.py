"""Capture in the real process: the synthetic camera, the file source, a Pi camera helper that dies.

ffprobe/ffmpeg read the camera's stream over RTMP as any viewer would; the drawn clock is read back from
the decoded pictures to prove the picture moves and keeps time.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from appliance.media.capture.synthetic import clock_position
from appliance.media.clockfont import read_text
from appliance.media.rtmp.client import RtmpClient, RtmpUrl, StatusError
from appliance.media.rtmp.events import MediaReceived, StatusReceived
from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import decode_errors, probe_packets
from tests.peers import require_command

pytestmark = pytest.mark.peers


def write_config(path: Path, state: Path, capture: str) -> Path:
    path.write_text(
        f"""
[web]
listen = "127.0.0.1:0"
[rtmp]
listen = "127.0.0.1:0"
[state]
dir = "{state}"
[capture]
{capture}
"""
    )
    return path


def start_appliance(tmp_path: Path, capture: str, env: dict[str, str] | None = None) -> ApplianceProcess:
    cfg = write_config(tmp_path / "appliance.toml", tmp_path / "state", capture)
    return ApplianceProcess(cfg, env=env)


def ffprobe_streams(url: str) -> list[dict[str, object]]:
    run = subprocess.run(
        [
            require_command("ffprobe"), "-v", "error", "-rw_timeout", "10000000",
            "-show_streams", "-of", "json", url,
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    streams: list[dict[str, object]] = json.loads(run.stdout)["streams"]
    return streams


def luma_frames(url: str, width: int, height: int, seconds: float) -> list[bytes]:
    """Decode `seconds` of the stream to 8-bit grey (the luma plane) with ffmpeg."""
    run = subprocess.run(
        [
            require_command("ffmpeg"), "-v", "error", "-rw_timeout", "10000000",
            "-i", url, "-t", str(seconds),
            "-map", "0:v", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-",
        ],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    size = width * height
    return [run.stdout[i : i + size] for i in range(0, len(run.stdout) - size + 1, size)]


def test_default_camera_is_synthetic_h264_aac_with_a_clock_that_advances(tmp_path: Path) -> None:
    app = start_appliance(tmp_path, 'source = "auto"')
    try:
        base = app.web_url()
        app.wait_healthy(base, timeout=30)
        url = app.rtmp_url("live/cam")
        streams = ffprobe_streams(url)
        video = next(s for s in streams if s["codec_type"] == "video")
        audio = next(s for s in streams if s["codec_type"] == "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
        assert video["r_frame_rate"] == "30/1"
        assert video["profile"] == "Constrained Baseline"
        assert (audio["codec_name"], audio["sample_rate"]) == ("aac", "48000")

        x, y, scale = clock_position(1280, 720)
        frames = luma_frames(url, 1280, 720, 3)
        assert len(frames) >= 80, f"{len(frames)} frames in 3 s at 30 fps"
        texts = [read_text(f, 1280, x, y, 23, scale) for f in frames]
        stamps = [time.mktime(time.strptime(t[:19], "%Y-%m-%d %H:%M:%S")) + int(t[20:]) / 1000 for t in texts]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), texts[:5]
        span = stamps[-1] - stamps[0]
        assert abs(span - (len(frames) - 1) / 30) < 0.2, (span, len(frames))
        assert abs(time.mktime(time.gmtime()) - stamps[-1]) < 30  # UTC wall clock, drawn recently

        _status, doc = http_get(base + "/api/status")
        capture = doc["capture"]
        assert capture["source"] == "synthetic" and capture["state"] == "running"
        assert "no V4L2 camera" in capture["reason"]
        assert capture["encoder"]["encoder"] == "libx264"
        probes = {c["name"]: c for c in capture["encoder_probe"]["candidates"]}
        assert probes["libx264"]["available"]
        assert not probes["h264_v4l2m2m"]["available"] and probes["h264_v4l2m2m"]["reason"]
        assert app.event("capture.encoder")["chosen"] == "libx264"

        _status, listing = http_get(base + "/api/streams")
        cam = next(item for item in listing["streams"] if item["name"] == "live/cam")
        assert cam["publisher"]["protocol"] == "capture" and cam["publisher"]["source"] == "synthetic"
        assert (cam["video"]["codec"], cam["video"]["width"], cam["video"]["height"]) == ("h264", 1280, 720)
        assert cam["video"]["profile"] == "Constrained Baseline"
        assert cam["audio"]["codec"] == "aac" and cam["audio"]["sample_rate"] == 48000
        assert 500_000 < cam["bitrate_bps"] < 4_000_000

        # Audio and video share the capture clock: over three seconds their timelines stay together.
        copy = tmp_path / "cam.flv"
        subprocess.run(
            [require_command("ffmpeg"), "-v", "error", "-rw_timeout", "10000000", "-i", url,
             "-t", "3", "-c", "copy", str(copy)],
            check=True, timeout=60,
        )  # fmt: skip
        vdts = [int(p["dts"]) for p in probe_packets(copy, "v:0")]
        adts = [int(p["dts"]) for p in probe_packets(copy, "a:0")]
        for v in vdts[len(vdts) // 10 :]:  # after the first packets (the GOP cache starts with video)
            nearest = min(abs(v - a) for a in adts)
            assert nearest <= 21, (v, nearest)  # an AAC frame is 21.3 ms: some audio within half of one
        assert abs(vdts[-1] - adts[-1]) <= 40  # and neither runs ahead at the end
    finally:
        assert app.stop() == 0


@pytest.mark.parametrize(
    ("name", "codecs", "modes"),
    [
        ("clip.mp4", ("libx264", "aac"), ("h264/passthrough", "passthrough")),
        ("clip.flv", ("libx264", "aac"), ("h264/passthrough", "passthrough")),
        # Not H.264/AAC: decoded and encoded like a camera's frames.
        ("clip.mkv", ("mpeg4", "libmp3lame"), ("mpeg4/encode", "encode")),
    ],
)
def test_file_source_loops_with_rising_timestamps(
    tmp_path: Path, name: str, codecs: tuple[str, str], modes: tuple[str, str]
) -> None:
    clip = tmp_path / name
    subprocess.run(
        [
            require_command("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
            "-c:v", codecs[0], "-g", "25", "-bf", "2", "-c:a", codecs[1], "-shortest", str(clip),
        ],
        check=True, timeout=60,
    )  # fmt: skip
    app = start_appliance(tmp_path, f'source = "file"\nfile = "{clip}"')
    try:
        app.wait_healthy(app.web_url(), timeout=30)
        line = app.event("capture.file")
        assert (line["video"], line["audio"]) == modes
        copy = tmp_path / "copy.flv"
        subprocess.run(
            [
                require_command("ffmpeg"), "-v", "error", "-rw_timeout", "10000000",
                "-i", app.rtmp_url("live/cam"), "-t", "5.5", "-c", "copy", str(copy),
            ],
            check=True, timeout=60,
        )  # fmt: skip
        vdts = [int(p["dts"]) for p in probe_packets(copy, "v:0")]
        adts = [int(p["dts"]) for p in probe_packets(copy, "a:0")]
        assert vdts == sorted(vdts) and adts == sorted(adts)
        assert vdts[-1] - vdts[0] > 4500, "played past at least two loops of a 2 s clip"
        # No stall at the loop point: frames stay one frame (40 ms) apart, except at the loop where the
        # clip's audio runs a little longer than its video (AAC priming) and the next loop waits for it.
        gaps = [b - a for a, b in itertools.pairwise(vdts)]
        assert sorted(gaps)[len(gaps) // 2] == 40
        assert max(gaps) <= 200, max(gaps)
        assert decode_errors(copy) == ""
        assert app.event("capture.plan", source="file")
    finally:
        assert app.stop() == 0


FAKE_RPICAM = r"""#!/bin/sh
# Stands in for rpicam-vid: lists one camera, or writes raw I420 frames like `--codec yuv420 -o -`.
if [ "$1" = "--list-cameras" ]; then
  cat "$(dirname "$0")/list-cameras.txt"
  exit 0
fi
W=640; H=480; F=30
while [ $# -gt 0 ]; do
  case "$1" in --width) W=$2;; --height) H=$2;; --framerate) F=$2;; esac
  shift
done
echo "$$" >> "$(dirname "$0")/pids"
exec ffmpeg -v error -re -f lavfi -i "testsrc2=size=${W}x${H}:rate=${F}" -f rawvideo -pix_fmt yuv420p -
"""

LIST_CAMERAS = """Available cameras
-----------------
0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)
    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
                             2304x1296 [56.03 fps - (0, 0)/4608x2592 crop]
                             4608x2592 [14.35 fps - (0, 0)/4608x2592 crop]
"""


async def test_capture_restarts_when_its_camera_helper_dies_and_players_resume(tmp_path: Path) -> None:
    require_command("ffmpeg")
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "rpicam-vid"
    fake.write_text(FAKE_RPICAM)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tools / "list-cameras.txt").write_text(LIST_CAMERAS)
    env = {"PATH": f"{tools}:{os.environ['PATH']}"}
    app = start_appliance(
        tmp_path, 'source = "rpicam"\nwidth = 320\nheight = 240\nfps = 15\naudio = false', env=env
    )
    try:
        base = app.web_url()
        await trio.to_thread.run_sync(lambda: app.wait_healthy(base, timeout=30))
        host, port = app.rtmp_address()
        player = await RtmpClient.connect(RtmpUrl(host, port, "live", "cam"))
        codes: list[str] = []
        stamps: list[int] = []

        async def frames(n: int) -> None:
            with trio.fail_after(30):
                got = 0
                while got < n:
                    event = await player.next_event()
                    if isinstance(event, StatusReceived):
                        codes.append(event.code)
                    elif isinstance(event, MediaReceived) and event.type_id == 9 and event.payload[1] == 1:
                        stamps.append(event.timestamp)
                        got += 1

        try:
            await player.play("cam")
            await frames(15)
            pid = int((tools / "pids").read_text().split()[-1])
            os.kill(pid, 9)  # the camera "vanishes": its helper dies mid-stream
            await frames(15)  # ... and comes back through a supervisor restart
        finally:
            await player.aclose()
        assert codes.index("NetStream.Play.UnpublishNotify") < len(codes) - 1
        assert codes[codes.index("NetStream.Play.UnpublishNotify") + 1] == "NetStream.Play.PublishNotify"
        assert stamps == sorted(stamps), "timestamps went backwards across the capture restart"
        plan = app.event("capture.plan", source="rpicam")
        assert plan["reason"].startswith("libcamera camera 0 (imx708)")
        assert len((tools / "pids").read_text().split()) >= 2
        # The camera's stream is the camera's: a stray encoder can't publish over it.
        intruder = await RtmpClient.connect(RtmpUrl(host, port, "live", "cam"))
        try:
            with pytest.raises(
                StatusError, match=r"NetStream\.Publish\.BadName: live/cam is this device's camera"
            ):
                await intruder.publish("cam")
        finally:
            await intruder.aclose()
        _status, doc = http_get(base + "/api/status")
        assert doc["capture"]["runs"] >= 2
        assert "exited" in doc["capture"].get("last_error", "")
    finally:
        assert app.stop() == 0


def test_bad_capture_config_names_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "a.toml", tmp_path / "state", "width = 1279")
    run = subprocess.run(
        [sys.executable, "-m", "appliance", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "capture.width=1279: want an even number" in run.stderr


def test_sighup_with_a_new_capture_size_restarts_capture_alone(tmp_path: Path) -> None:
    app = start_appliance(tmp_path, "width = 320\nheight = 240\nfps = 15")
    try:
        base = app.web_url()
        app.wait_healthy(base, timeout=30)
        url = app.rtmp_url("live/cam")
        video = next(s for s in ffprobe_streams(url) if s["codec_type"] == "video")
        assert (video["width"], video["height"], video["r_frame_rate"]) == (320, 240, "15/1")
        write_config(tmp_path / "appliance.toml", tmp_path / "state", "width = 640\nheight = 480\nfps = 15")
        app.signal(signal.SIGHUP)
        first = app.event("capture.started")
        app.event("config.restart_child", child="capture")
        app.wait_for(lambda d: d.get("event") == "capture.started" and d is not first)
        video = next(s for s in ffprobe_streams(url) if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (640, 480)
        children = {c["name"]: c for c in http_get(base + "/api/status")[1]["supervisor"]["children"]}
        assert children["relay"]["restarts"] == 0 and children["web"]["restarts"] == 0
    finally:
        assert app.stop() == 0
