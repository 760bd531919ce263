"""Real RTMP peers for the relay's interop tests: ffmpeg, ffprobe, rtmpdump, GStreamer, nginx-rtmp."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness import ApplianceProcess
from tests.peers import require_command

__all__ = [
    "FPS",
    "decode_errors",
    "ffmpeg_publisher",
    "free_port",
    "probe_packets",
    "start",
    "video_frames",
    "write_relay_config",
]

FPS = 25
FF = ["-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]


def write_relay_config(path: Path, state: Path, **rtmp: str) -> Path:
    extra = "".join(f"{k} = {v}\n" for k, v in rtmp.items())
    path.write_text(
        f"""
[web]
listen = "127.0.0.1:0"
[rtmp]
listen = "127.0.0.1:0"
{extra}
[state]
dir = "{state}"
"""
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ffmpeg_publisher(
    url: str,
    seconds: float,
    *,
    gop: int = FPS,
    size: str = "320x240",
    bframes: int = 2,
    extra: tuple[str, ...] = (),
    realtime: bool = True,
) -> list[str]:
    """An ffmpeg command publishing libx264 (with B-frames, as x264 defaults) + AAC at `FPS`."""
    ffmpeg = require_command("ffmpeg")
    return [
        ffmpeg,
        *FF,
        *(["-re"] if realtime else []),
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-bf", str(bframes), "-g", str(gop),
        "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        *extra,
        "-f", "flv", url,
    ]  # fmt: skip


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def probe_packets(path: Path, stream: str = "v:0") -> list[dict[str, str]]:
    """ffprobe's packets of one stream (pts, dts, flags) in file order."""
    ffprobe = require_command("ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", stream, "-show_entries", "packet=pts,dts,flags",
         "-of", "json", str(path)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    packets: list[dict[str, str]] = json.loads(out.stdout).get("packets", [])
    return packets


def video_frames(path: Path) -> int:
    return len(probe_packets(path))


def complete_tags(path: Path) -> Path:
    """A copy of an FLV file without a trailing partial tag (a source stopped mid-tag), for decoding."""
    from appliance.media.flv_file import FlvReader, flv_header, tag

    reader = FlvReader()
    tags = reader.feed(path.read_bytes())
    out = path.with_name(path.stem + ".complete.flv")
    out.write_bytes(
        flv_header(reader.has_audio, reader.has_video)
        + b"".join(tag(t.tag_type, t.ts_ms, t.body) for t in tags)
    )
    return out


def decode_errors(path: Path) -> str:
    """Decode every frame of `path`; return ffmpeg's complaints (empty when it decodes cleanly)."""
    ffmpeg = require_command("ffmpeg")
    out = subprocess.run(
        [ffmpeg, *FF, "-i", str(path), "-f", "null", "-"], capture_output=True, timeout=120, check=False
    )
    return out.stderr.decode(errors="replace").strip() + (
        "" if out.returncode == 0 else f" (exit {out.returncode})"
    )


@contextmanager
def killing(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def wait_events(app: ApplianceProcess, name: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for d in app.lines if d.get("event") == name) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} {name} events in {timeout}s:\n{app.log_text()[-3000:]}")
        time.sleep(0.05)


INGEST_CONF = """
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application ingest {{
            live on;
        }}
    }}
}}
"""


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)


@contextmanager
def nginx_ingest(dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    dir.mkdir(exist_ok=True)
    conf = dir / "nginx.conf"
    conf.write_text(INGEST_CONF.format(dir=dir, port=port))
    proc = start([require_command("nginx"), "-p", str(dir), "-e", str(dir / "error.log"), "-c", str(conf)],
                 dir / "nginx.out")  # fmt: skip
    with killing(proc):
        wait_port(port, proc, dir / "error.log")
        yield proc


def probe(url: str) -> list[str]:
    run = subprocess.run(
        [require_command("ffprobe"), "-v", "error", "-rw_timeout", "15000000", "-show_entries",
         "stream=codec_name,width,height", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return sorted(run.stdout.split())


def camera_appliance(
    tmp_path: Path, extra: str = "", args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> ApplianceProcess:
    """The real appliance on loopback ports with a small synthetic camera (320x240, 15 fps) + `extra`
    (TOML sections after [capture]) + `args` (``--set`` overrides, e.g. for [web] keys)."""
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f"""
[web]
listen = "127.0.0.1:0"
[rtmp]
listen = "127.0.0.1:0"
[state]
dir = "{tmp_path / "state"}"
[capture]
source = "synthetic"
width = 320
height = 240
fps = 15
{extra}
"""
    )
    return ApplianceProcess(cfg, args=args, env=env)


@contextmanager
def running_camera(
    tmp_path: Path, extra: str = "", args: tuple[str, ...] = ()
) -> Iterator[tuple[ApplianceProcess, str]]:
    """`camera_appliance`, healthy, as (process, web base URL); stopped (exit 0 asserted) afterwards."""
    app = camera_appliance(tmp_path, extra, args)
    try:
        base = app.web_url()
        app.wait_healthy(base)
        yield app, base
    finally:
        assert app.stop() == 0
