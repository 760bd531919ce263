#!/usr/bin/env python3
"""Capture benchmark: the appliance's camera path (capture -> encode -> Bus) against the ffmpeg CLI.

Two measurements, each side by side with ffmpeg doing the same encode in the same run (same lavfi
testsrc2 source, size, rate, libx264 preset/tune/profile, GOP, bit rate, AAC audio):

1. CPU at real time: the appliance process running its synthetic camera (clock drawn in, H.264 + AAC into
   the Bus, relay and web idle, no viewers) for DURATION seconds, against `ffmpeg -re ... -f null -`.
   CPU seconds from /proc/PID/stat (children included). Target: appliance / ffmpeg <= 1.15.
   Each side runs `--rounds` times, alternating; the medians are compared.
2. Capacity: frames per second when nothing paces the loop: the appliance's own pipeline (testsrc2
   graph, clock drawing, VideoEncoder) in this process for N frames, against ffmpeg `-frames:v N`.

Both at 720p30 and 1080p30. Prints a markdown table and writes bench/results/capture-<timestamp>.md.
A missed target is a finding, not an error (exit 0).

  .venv/bin/python bench/capture.py [--duration 20] [--frames 600]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
TARGET_RATIO = 1.15
SIZES = ((1280, 720), (1920, 1080))
FPS = 30
BITRATE = 2_000_000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime (+ waited-for children) of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def ffmpeg_args(width: int, height: int, *, realtime: bool, frames: int | None) -> list[str]:
    gop = 2 * FPS
    args = [shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-nostdin"]
    if realtime:
        args.append("-re")
    args += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}"]
    if realtime:
        args += [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:beep_factor=4:sample_rate=48000:samples_per_frame=1024",
        ]
    args += [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
        "-g", str(gop), "-keyint_min", str(gop), "-x264-params", "scenecut=0",
        "-b:v", str(BITRATE), "-maxrate", str(BITRATE), "-bufsize", str(BITRATE),
    ]  # fmt: skip
    if realtime:
        args += ["-c:a", "aac", "-b:a", "128k", "-ac", "1"]
    if frames:
        args += ["-frames:v", str(frames)]
    return [*args, "-f", "null", "-"]


def measure_ffmpeg_realtime(width: int, height: int, duration: float) -> float:
    proc = subprocess.Popen(ffmpeg_args(width, height, realtime=True, frames=None))
    try:
        time.sleep(3)  # start-up (x264 init, first frames) is not steady state
        before = cpu_s(proc.pid)
        time.sleep(duration)
        return (cpu_s(proc.pid) - before) / duration
    finally:
        proc.terminate()
        proc.wait()


def measure_appliance_realtime(width: int, height: int, duration: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            f'[web]\nlisten = "127.0.0.1:0"\n[rtmp]\nlisten = "127.0.0.1:0"\n[state]\ndir = "{tmp}/state"\n'
            f'[capture]\nsource = "synthetic"\nwidth = {width}\nheight = {height}\nfps = {FPS}\n'
            f'bitrate = "{BITRATE // 1000}kbit"\nencoder = "libx264"\n'
        )
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/python"), "-m", "appliance", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started = threading.Event()

        def watch() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "capture.started" in line:
                    started.set()

        threading.Thread(target=watch, daemon=True).start()
        try:
            if not started.wait(60):
                raise SystemExit("appliance: capture did not start within 60 s")
            time.sleep(3)
            before = cpu_s(proc.pid)
            time.sleep(duration)
            return (cpu_s(proc.pid) - before) / duration
        finally:
            proc.terminate()
            proc.wait()


def capacity_ffmpeg(width: int, height: int, frames: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(ffmpeg_args(width, height, realtime=False, frames=frames), check=True)
    return frames / (time.perf_counter() - t0)


def capacity_appliance(width: int, height: int, frames: int) -> float:
    import av
    from av.filter import Graph

    from appliance.media.capture.synthetic import clock_position, clock_text, draw_clock
    from appliance.media.encode import VideoEncoder

    encoder = VideoEncoder(
        "libx264", width=width, height=height, fps=FPS, bitrate_bps=BITRATE, gop=2 * FPS, profile="baseline"
    )
    graph = Graph()
    src = graph.add("testsrc2", f"size={width}x{height}:rate={FPS}")
    fmt = graph.add("format", "yuv420p")
    out = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(out)
    graph.configure()
    x, y, scale = clock_position(width, height)
    t0 = time.perf_counter()
    for n in range(frames):
        frame = out.pull()
        assert isinstance(frame, av.VideoFrame)
        draw_clock(frame, x, y, clock_text(time.time()), scale)
        encoder.encode(frame, n * 1000 // FPS)
    encoder.flush()
    return frames / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of steady state per CPU run")
    parser.add_argument("--frames", type=int, default=600, help="frames per capacity run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating CPU runs per side (median kept)")
    args = parser.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("ffmpeg not found: run scripts/install-test-deps")
    rows = []
    for width, height in SIZES:
        label = f"{height}p{FPS}"
        print(f"== {label}: CPU at real time ({args.duration:g} s each)", flush=True)
        # Alternate the two sides so drift in the machine's load hits both alike; keep the medians.
        app_runs, ff_runs = [], []
        for _ in range(args.rounds):
            app_runs.append(measure_appliance_realtime(width, height, args.duration))
            ff_runs.append(measure_ffmpeg_realtime(width, height, args.duration))
        app_cpu, ff_cpu = statistics.median(app_runs), statistics.median(ff_runs)
        print(
            f"   appliance {[round(x, 3) for x in app_runs]} ffmpeg {[round(x, 3) for x in ff_runs]}",
            flush=True,
        )
        print(f"== {label}: capacity ({args.frames} frames each)", flush=True)
        app_fps = capacity_appliance(width, height, args.frames)
        ff_fps = capacity_ffmpeg(width, height, args.frames)
        rows.append((label, app_cpu, ff_cpu, app_fps, ff_fps))
    import av

    lines = [
        f"# Capture benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}; "
        f"PyAV {av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}); "
        f"{subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True).stdout.splitlines()[0]}",
        "",
        "Same encode on both sides: testsrc2, libx264 ultrafast/zerolatency/baseline, GOP 2 s, 2 Mbit/s;"
        " real-time runs add 48 kHz AAC audio.",
        "",
        "| mode | appliance CPU (cores) | ffmpeg CPU (cores) | ratio (target <= 1.15) | "
        "appliance capacity (fps) | ffmpeg capacity (fps) | capacity ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, app_cpu, ff_cpu, app_fps, ff_fps in rows:
        ratio = app_cpu / ff_cpu
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        lines.append(
            f"| {label} | {app_cpu:.3f} | {ff_cpu:.3f} | {ratio:.2f} {verdict} | "
            f"{app_fps:.0f} | {ff_fps:.0f} | {app_fps / ff_fps:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"capture-{datetime.now(UTC):%Y%m%dT%H%M%S}.md"
    out.write_text(text)
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
