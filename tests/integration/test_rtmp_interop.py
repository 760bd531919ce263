"""The relay against real RTMP peers: ffmpeg, rtmpdump, GStreamer, nginx-rtmp (fail under REQUIRE_PEERS)."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from appliance.media.rtmp.client import RtmpClient, RtmpUrl
from appliance.media.rtmp.events import MediaReceived, StatusReceived
from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import (
    FF,
    FPS,
    complete_tags,
    decode_errors,
    ffmpeg_publisher,
    free_port,
    killing,
    probe_packets,
    start,
    video_frames,
    wait_events,
    write_relay_config,
)
from tests.peers import require_command

pytestmark = pytest.mark.peers

_keys = itertools.count()


def key(prefix: str) -> str:
    return f"{prefix}{next(_keys)}"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApplianceProcess]:
    tmp = tmp_path_factory.mktemp("relay")
    cfg = write_relay_config(tmp / "appliance.toml", tmp / "state", max_lag='"3s"')
    app = ApplianceProcess(cfg)
    try:
        app.rtmp_address()
        yield app
    finally:
        app.stop()


def count(app: ApplianceProcess, event: str, **fields: str) -> int:
    return sum(
        1 for d in app.lines if d.get("event") == event and all(d.get(k) == v for k, v in fields.items())
    )


def test_ffmpeg_publisher_reaches_every_ffmpeg_player(relay: ApplianceProcess, tmp_path: Path) -> None:
    ffmpeg = require_command("ffmpeg")
    name = key("fan")
    url = relay.rtmp_url(f"live/{name}")
    seconds, gop, players = 6, FPS, 3
    before = count(relay, "rtmp.play")
    outs = [tmp_path / f"player{i}.flv" for i in range(players)]
    procs = [
        start([ffmpeg, *FF, "-i", url, "-c", "copy", "-f", "flv", str(o)], tmp_path / f"p{i}.log")
        for i, o in enumerate(outs)
    ]
    with killing(*procs):
        wait_events(relay, "rtmp.play", before + players)  # players connect first and wait
        pub = subprocess.run(
            ffmpeg_publisher(url, seconds, gop=gop), capture_output=True, timeout=60, check=False
        )
        assert pub.returncode == 0, pub.stderr.decode()
        for p in procs:
            p.wait(timeout=20)  # UnpublishNotify ends an ffmpeg player
    sent = seconds * FPS
    for i, out in enumerate(outs):
        frames = video_frames(out)
        assert sent - gop <= frames <= sent, f"player {i} got {frames} of {sent} frames"
        assert decode_errors(out) == "", f"player {i} output does not decode cleanly"
        assert len(probe_packets(out, "a:0")) > (seconds - 1) * 44100 / 1024 * 0.9, f"player {i} lacks audio"
    # B-frames survived the relay: some packets have pts != dts.
    assert any(p["pts"] != p["dts"] for p in probe_packets(outs[0]))
    codec = relay.event("rtmp.codec", kind="video")
    assert codec["codec"] == "h264" and codec["width"] == "320" and codec["height"] == "240"


@pytest.fixture
def live_stream(relay: ApplianceProcess, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A 2 s GOP stream published for the length of a test."""
    name = key("live")
    gop = 2 * FPS
    pub = start(ffmpeg_publisher(relay.rtmp_url(f"live/{name}"), 60, gop=gop), tmp_path / "pub.log")
    with killing(pub):
        relay.event("rtmp.codec", stream=f"live/{name}", kind="video")
        yield name, gop


def test_late_joiner_decodes_its_first_frame_at_once(
    relay: ApplianceProcess, live_stream: tuple[str, int]
) -> None:
    ffmpeg = require_command("ffmpeg")
    name, gop = live_stream
    time.sleep(1.3)  # mid-GOP: without a GOP cache a player would wait ~0.7 s for the next keyframe
    took = []
    for _ in range(2):
        t0 = time.monotonic()
        out = subprocess.run(
            [ffmpeg, *FF, "-i", relay.rtmp_url(f"live/{name}"), "-frames:v", "1", "-f", "null", "-"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        took.append(time.monotonic() - t0)
        assert out.returncode == 0, out.stderr.decode()
    gop_s = gop / FPS
    assert min(took) < gop_s / 2, f"first frame took {took} s; GOP is {gop_s} s"


def test_rtmpdump_records_five_seconds(
    relay: ApplianceProcess, live_stream: tuple[str, int], tmp_path: Path
) -> None:
    rtmpdump = require_command("rtmpdump")
    name, _ = live_stream
    out = tmp_path / "dump.flv"
    # rtmpdump's --stop counts from timestamp 0, not from where a live stream joins: stop it by signal.
    proc = start(
        [rtmpdump, "-q", "--live", "-r", relay.rtmp_url(f"live/{name}"), "-o", str(out)], tmp_path / "rd.log"
    )
    with killing(proc):
        time.sleep(5.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert out.exists() and out.stat().st_size > 10_000, (tmp_path / "rd.log").read_text()
    packets = probe_packets(out)
    span_s = (int(packets[-1]["dts"]) - int(packets[0]["dts"])) / 1000
    assert span_s >= 4.0 and packets[0]["flags"].startswith("K")
    assert decode_errors(out) == ""


@pytest.mark.parametrize("sink", ["rtmp2sink", "rtmpsink"])
def test_gstreamer_publishes(relay: ApplianceProcess, tmp_path: Path, sink: str) -> None:
    gst = require_command("gst-launch-1.0")
    ffmpeg = require_command("ffmpeg")
    name = key("gstpub")
    url = relay.rtmp_url(f"live/{name}")
    out = tmp_path / "gst.flv"
    player = start([ffmpeg, *FF, "-i", url, "-c", "copy", "-f", "flv", str(out)], tmp_path / "player.log")
    with killing(player):
        relay.event("rtmp.play", stream=f"live/{name}")
        pipeline = (
            f"videotestsrc is-live=true num-buffers={4 * FPS} "
            f"! video/x-raw,width=320,height=240,framerate={FPS}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={FPS} ! h264parse "
            f"! flvmux streamable=true ! {sink} location={url}"
        )
        run = subprocess.run([gst, "-q", *pipeline.split()], capture_output=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr.decode()
        player.wait(timeout=20)
    frames = video_frames(out)
    assert 3 * FPS <= frames <= 4 * FPS, frames
    assert decode_errors(out) == ""


@pytest.mark.parametrize("source", ["rtmp2src", "rtmpsrc"])
def test_gstreamer_plays(
    relay: ApplianceProcess, live_stream: tuple[str, int], tmp_path: Path, source: str
) -> None:
    gst = require_command("gst-launch-1.0")
    name, _ = live_stream
    url = relay.rtmp_url(f"live/{name}")
    if source == "rtmpsrc":
        url += " live=1"  # librtmp option syntax
    out = tmp_path / "gst.flv"
    # num-buffers ends the source after that many FLV tags (video + audio), so the file ends on a whole tag.
    run = subprocess.run(
        [gst, "-q", source, f"location={url}", "num-buffers=250", "!", "filesink", f"location={out}"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    # The source stops after N reads, which may end mid-tag: only whole tags count.
    out = complete_tags(out)
    frames = video_frames(out)
    assert frames >= 2 * FPS, f"{source} got {frames} frames"
    assert probe_packets(out)[0]["flags"].startswith("K")
    assert decode_errors(out) == ""


NGINX_CONF = """
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    access_log {dir}/access.log;
    server {{
        listen 127.0.0.1:{port};
        application pull {{
            live on;
            pull rtmp://127.0.0.1:{relay_port}/live;
        }}
        application push {{
            live on;
            push rtmp://127.0.0.1:{relay_port}/live;
        }}
    }}
}}
"""


@pytest.fixture
def nginx(relay: ApplianceProcess, tmp_path: Path) -> Iterator[int]:
    binary = require_command("nginx")
    port = free_port()
    _, relay_port = relay.rtmp_address()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port, relay_port=relay_port))
    proc = start(
        [binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        tmp_path / "nginx.out",
    )
    with killing(proc):
        deadline = time.monotonic() + 10
        while True:
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (
                    tmp_path / "error.log"
                ).read_text()
                time.sleep(0.05)
        yield port


def test_nginx_rtmp_pulls_from_us(
    relay: ApplianceProcess, live_stream: tuple[str, int], nginx: int, tmp_path: Path
) -> None:
    ffmpeg = require_command("ffmpeg")
    name, _ = live_stream
    out = tmp_path / "via-nginx.flv"
    run = subprocess.run(
        [ffmpeg, *FF, "-i", f"rtmp://127.0.0.1:{nginx}/pull/{name}", "-t", "4", "-c", "copy",
         "-f", "flv", str(out)],
        capture_output=True, timeout=40, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    assert video_frames(out) >= 3 * FPS
    assert decode_errors(out) == ""
    assert count(relay, "rtmp.play", stream=f"live/{name}") >= 1  # nginx's pull played from us


def test_nginx_rtmp_pushes_to_us(relay: ApplianceProcess, nginx: int, tmp_path: Path) -> None:
    ffmpeg = require_command("ffmpeg")
    name = key("pushed")
    pub = start(ffmpeg_publisher(f"rtmp://127.0.0.1:{nginx}/push/{name}", 30), tmp_path / "pub.log")
    with killing(pub):
        relay.event("rtmp.codec", stream=f"live/{name}", kind="video", timeout=20)
        out = tmp_path / "pushed.flv"
        run = subprocess.run(
            [ffmpeg, *FF, "-i", relay.rtmp_url(f"live/{name}"), "-t", "3", "-c", "copy",
             "-f", "flv", str(out)],
            capture_output=True, timeout=40, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr.decode()
    assert video_frames(out) >= 2 * FPS
    assert decode_errors(out) == ""


def test_long_timestamps_past_24_bits_relay_monotonic(relay: ApplianceProcess, tmp_path: Path) -> None:
    ffmpeg = require_command("ffmpeg")
    name = key("long")
    url = relay.rtmp_url(f"live/{name}")
    out = tmp_path / "long.flv"
    offset_s = 16_777.0  # 0xFFFFFF ms is 16777.215 s: the stream crosses into extended timestamps
    # -copyts: keep the stream's timestamps (ffmpeg would otherwise rebase its output to 0).
    player = start(
        [ffmpeg, *FF, "-copyts", "-i", url, "-c", "copy", "-f", "flv", str(out)], tmp_path / "player.log"
    )
    with killing(player):
        relay.event("rtmp.play", stream=f"live/{name}")
        pub = subprocess.run(
            ffmpeg_publisher(url, 4, extra=("-output_ts_offset", f"{offset_s:g}")),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert pub.returncode == 0, pub.stderr.decode()
        player.wait(timeout=20)
    dts = [int(p["dts"]) for p in probe_packets(out)]
    assert len(dts) >= 3 * FPS
    assert dts == sorted(dts), "timestamps went backwards"
    assert dts[0] >= offset_s * 1000 - 1000 and dts[-1] > 0xFFFFFF, (dts[0], dts[-1])


def test_api_streams_lists_publisher_codecs_and_players(
    relay: ApplianceProcess, live_stream: tuple[str, int], tmp_path: Path
) -> None:
    ffmpeg = require_command("ffmpeg")
    name, _ = live_stream
    player = start(
        [ffmpeg, *FF, "-i", relay.rtmp_url(f"live/{name}"), "-c", "copy", "-f", "null", "-"],
        tmp_path / "p.log",
    )
    with killing(player):
        relay.event("rtmp.play", stream=f"live/{name}")
        time.sleep(2.5)
        status, body = http_get(relay.web_url() + "/api/streams")
    assert status == 200
    (stream,) = [s for s in body["streams"] if s["name"] == f"live/{name}"]
    assert stream["live"] and stream["publisher"]["protocol"] == "rtmp"
    assert stream["publisher"]["address"].startswith("127.0.0.1:")
    assert stream["video"] == {
        "codec": "h264",
        "profile": "High",
        "level": stream["video"]["level"],
        "width": 320,
        "height": 240,
        "fps": FPS,
    } | {k: v for k, v in stream["video"].items() if k not in ("codec", "profile", "width", "height", "fps")}
    assert stream["audio"]["codec"] == "aac" and stream["audio"]["sample_rate"] == 44100
    assert stream["bitrate_bps"] > 10_000
    (sub,) = [s for s in stream["subscribers"] if s["protocol"] == "rtmp"]
    assert sub["delivered"] > FPS and sub["lag_ms"] < 2000


def test_enhanced_rtmp_hevc_relays_to_players_that_announce_it(
    relay: ApplianceProcess, tmp_path: Path
) -> None:
    ffmpeg = require_command("ffmpeg")  # Debian's 5.1: a legacy player
    name = key("hevc")
    url = relay.rtmp_url(f"live/{name}")
    helper = [sys.executable, "-m", "tests.integration.pyav_rtmp"]
    modern = subprocess.Popen([*helper, "play", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    legacy = subprocess.Popen([ffmpeg, *FF, "-i", url, "-f", "null", "-"], stderr=subprocess.PIPE)
    with killing(modern, legacy):
        relay.wait_for(lambda d: d.get("event") == "rtmp.connect" and "hvc1" in str(d.get("fourcc")))
        pub = subprocess.run([*helper, "publish", url, "3"], capture_output=True, timeout=60, check=False)
        assert pub.returncode == 0, pub.stderr.decode()
        out, err = modern.communicate(timeout=30)
        _, legacy_err = legacy.communicate(timeout=30)
    got = json.loads(out)
    assert got["codec"] == "hevc" and (got["width"], got["height"]) == (320, 240), err.decode()
    assert got["frames"] >= 3 * FPS - 5 and got["keyframes"] >= 3
    assert "needs Enhanced RTMP" in legacy_err.decode()
    codec = relay.event("rtmp.codec", stream=f"live/{name}", kind="video")
    assert codec["codec"] == "hevc" and codec["profile"] == "Main"


async def test_publisher_killed_players_get_unpublish_notify_and_resume(
    relay: ApplianceProcess, tmp_path: Path
) -> None:
    name = key("killed")
    host, port = relay.rtmp_address()
    player = await RtmpClient.connect(RtmpUrl(host, port, "live", name))
    try:
        await player.play(name)
        cmd = ffmpeg_publisher(relay.rtmp_url(f"live/{name}"), 60)
        codes: list[str] = []
        stamps: list[int] = []
        for round_ in range(2):
            pub = start(cmd, tmp_path / f"pub{round_}.log")
            with killing(pub):
                with trio.fail_after(20):
                    frames = 0
                    while frames < FPS:  # a second of video from this publisher
                        event = await player.next_event()
                        if isinstance(event, StatusReceived):
                            codes.append(event.code)
                        elif (
                            isinstance(event, MediaReceived) and event.type_id == 9 and event.payload[1] == 1
                        ):
                            stamps.append(event.timestamp)
                            frames += 1
                pub.kill()  # SIGKILL: no FCUnpublish, no deleteStream, just a dead socket
                pub.wait()
                with trio.fail_after(10):
                    while not codes or codes[-1] != "NetStream.Play.UnpublishNotify":
                        event = await player.next_event()
                        if isinstance(event, StatusReceived):
                            codes.append(event.code)
        assert codes.count("NetStream.Play.UnpublishNotify") == 2
        assert "NetStream.Play.PublishNotify" in codes
        assert stamps == sorted(stamps), "timestamps went backwards across the republish"
    finally:
        await player.aclose()


async def test_slow_player_is_cut_off_while_others_keep_full_frame_rate(
    relay: ApplianceProcess, tmp_path: Path
) -> None:
    ffmpeg = require_command("ffmpeg")
    name = key("slow")
    url = relay.rtmp_url(f"live/{name}")
    host, port = relay.rtmp_address()
    seconds = 12
    # ~16 Mbit/s so that the stalled player's socket buffers fill within a few seconds.
    heavy = (
        "-b:v",
        "16M",
        "-minrate",
        "16M",
        "-maxrate",
        "16M",
        "-bufsize",
        "4M",
        "-x264-params",
        "nal-hrd=cbr",
    )
    out = tmp_path / "fast.flv"
    fast = start([ffmpeg, *FF, "-i", url, "-c", "copy", "-f", "flv", str(out)], tmp_path / "fast.log")
    slow = await RtmpClient.connect(RtmpUrl(host, port, "live", name))
    slow.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        with killing(fast):
            await slow.play(name)  # and never read again
            pub = start(
                ffmpeg_publisher(url, seconds, gop=FPS, size="640x360", extra=heavy), tmp_path / "pub.log"
            )
            with killing(pub):
                await trio.to_thread.run_sync(pub.wait)
            await trio.to_thread.run_sync(fast.wait)
    finally:
        await slow.aclose()
    reasons = [str(d.get("reason")) for d in relay.lines if d.get("event") == "rtmp.disconnect"]
    assert any("behind" in r or "stalled" in r for r in reasons), reasons
    frames = video_frames(out)
    assert frames >= seconds * FPS - FPS, f"the fast player got {frames} of {seconds * FPS} frames"
