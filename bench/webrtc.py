#!/usr/bin/env python3
"""WebRTC benchmark: CPU per WHEP viewer against the RTMP relay's per-subscriber cost, on the same stream in
the same run, and time to the first frame in Chromium.

The stream: 720p30 H.264 at 3 Mbit/s (no B-frames, 2 s GOP) + AAC, encoded once by ffmpeg into a file and
published in a loop with ``-c copy`` into an appliance running with no camera, so the appliance's CPU is
only relay + egress. For N in 0, 1, 5, 20:

- WHEP: N viewers in one aiortc process (bench/peers/whep_viewers.py) that count frames without decoding;
  ICE on 127.0.0.1 only. Every viewer's frame rate over the window is reported (min over viewers).
- RTMP: N ``ffmpeg -i rtmp://... -c copy -f null -`` players.

Appliance CPU is read from /proc/PID/stat over the window after a warm-up; per viewer = (cpu_N - cpu_0)/N,
with cpu_0 a 0-viewer window read right before that protocol's series.
After each WHEP step the viewers hang up and the bench waits for the appliance's /metrics to show no
viewer, no open peer connection and no loop task before the next step (what stays open is reported as
a leak).
Target: 20 WHEP viewers on one core of this machine (appliance CPU <= 100 % of a core) with every viewer at
full frame rate (>= 29 fps). Then the median time from the WHEP offer to the first decoded frame in headless
Chromium (5 runs), and an RTMP player's time to its first frame (ffmpeg -frames:v 1) for comparison.

Prints a markdown table and writes bench/results/webrtc-<UTC>.md. A missed target is a finding (exit 0).

  .venv/bin/python bench/webrtc.py [--seconds 20] [--warmup 5] [--viewers 1,5,20] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PY = str(REPO / ".venv" / "bin" / "python")
VIEWERS = REPO / "bench" / "peers" / "whep_viewers.py"
FIRST_FRAME = REPO / "tests" / "browser" / "first_frame.mjs"
TICK = os.sysconf("SC_CLK_TCK")
FPS = 30


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if not found:
        raise SystemExit("ffmpeg is missing: scripts/install-test-deps installs it")
    return found


def make_clip(path: Path) -> None:
    subprocess.run(
        [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "20",
         "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-bf", "0", "-g", str(2 * FPS),
         "-b:v", "3M", "-maxrate", "3M", "-bufsize", "3M", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as r:
        doc: dict[str, object] = json.load(r)
        return doc


class Appliance:
    def __init__(self, work: Path) -> None:
        self.web, self.rtmp = free_port(), free_port()
        cfg = work / "bench.toml"
        cfg.write_text(
            f'[web]\nlisten = "127.0.0.1:{self.web}"\n[rtmp]\nlisten = "127.0.0.1:{self.rtmp}"\n'
            f'[state]\ndir = "{work}/state"\n[capture]\nsource = "none"\n[log]\nlevel = "warning"\n'
            '[webrtc]\nice_addresses = ["127.0.0.1"]\nmax_viewers = 100\n'
        )
        self.proc = subprocess.Popen(
            [PY, "-m", "appliance", "run", "--config", str(cfg)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "appliance.log", "w"),  # noqa: SIM115
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.web}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_json(self.base + "/api/health").get("status") == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("the appliance did not become healthy in 60 s")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def metric(app: Appliance, name: str) -> float | None:
    with urllib.request.urlopen(app.base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


GAUGES = ("viewers", "peer_connections_open", "loop_tasks")


def gauges(app: Appliance) -> dict[str, float | None]:
    """The WebRTC leak gauges of /metrics (None: not there)."""
    return {n: metric(app, f"appliance_webrtc_{n}") for n in GAUGES}


def drained(app: Appliance, idle: dict[str, float | None], patience_s: float = 20) -> dict[str, str]:
    """Wait for the gauges to fall back to their `idle` levels (read before any viewer came: the
    loop_tasks gauge counts the task that reads it); what stays above after `patience_s` is returned."""
    deadline = time.monotonic() + patience_s
    while True:
        now = gauges(app)
        above = {}
        for k, v in now.items():
            if v is None or idle[k] is None or v > (idle[k] or 0):
                above[k] = f"{v} (idle {idle[k]})"
        if not above or time.monotonic() > deadline:
            return above
        time.sleep(0.2)


def window_cpu(pid: int, seconds: float) -> float:
    """% of one core over `seconds`."""
    before = cpu_s(pid)
    time.sleep(seconds)
    return 100 * (cpu_s(pid) - before) / seconds


def measure_whep(
    app: Appliance, n: int, a: argparse.Namespace, idle: dict[str, float | None]
) -> dict[str, object]:
    opts = {"url": app.base + "/whep/live/bench", "viewers": n, "warmup": a.warmup, "seconds": a.seconds}
    client = subprocess.Popen([PY, str(VIEWERS), json.dumps(opts)], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    connected = json.loads(client.stdout.readline() or '{"event": "failed"}')
    if connected.get("event") != "connected":
        client.kill()
        raise SystemExit(f"WHEP viewers did not connect: {connected}")
    time.sleep(a.warmup)
    client_before = cpu_s(client.pid)
    cpu = window_cpu(app.proc.pid, a.seconds)
    client_cpu = 100 * (cpu_s(client.pid) - client_before) / a.seconds
    done = json.loads(client.stdout.readline() or "{}")
    client.wait(60)
    fps = done.get("fps") or [0.0]
    return {
        "leftover": drained(app, idle),
        "min_audio_pps": min(done.get("audio_pps") or [0.0]),
        "cpu": cpu,
        "client_cpu": client_cpu,
        "min_fps": min(fps),
        "median_fps": statistics.median(fps),
        "loopback": all(p == ["127.0.0.1", "127.0.0.1"] for p in done.get("pairs", [])),
        "answer_ms": 1000 * statistics.median(connected["answer_s"]),
    }


def measure_rtmp(app: Appliance, n: int, a: argparse.Namespace) -> dict[str, object]:
    url = f"rtmp://127.0.0.1:{app.rtmp}/live/bench"
    players = [
        subprocess.Popen([ffmpeg(), "-v", "error", "-nostdin", "-i", url, "-c", "copy", "-f", "null", "-"])
        for _ in range(n)
    ]
    try:
        time.sleep(a.warmup)
        return {"cpu": window_cpu(app.proc.pid, a.seconds)}
    finally:
        for p in players:
            p.terminate()
        for p in players:
            p.wait(10)


def rtmp_first_frame_ms(app: Appliance, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(
            [ffmpeg(), "-v", "error", "-nostdin", "-i", f"rtmp://127.0.0.1:{app.rtmp}/live/bench",
             "-frames:v", "1", "-f", "null", "-"],
            check=True, timeout=30,
        )  # fmt: skip
        times.append(1000 * (time.monotonic() - t0))
    return statistics.median(times)


def chromium_first_frame(app: Appliance, runs: int) -> dict[str, float] | str:
    node = shutil.which("node")
    if not node or not (REPO / "tests" / "browser" / "node_modules").exists():
        return "node or tests/browser/node_modules missing (scripts/install-test-deps)"
    out = subprocess.run(
        [node, str(FIRST_FRAME), json.dumps({"url": app.base, "stream": "live/bench", "runs": runs})],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines or lines[-1].get("event") != "done":
        return f"failed: {(lines[-1] if lines else out.stderr[-300:])}"
    r = lines[-1]["runs"]
    return {
        "total": statistics.median(x["total"] for x in r),
        "from_post": statistics.median(x["fromPost"] for x in r),
        "answer": statistics.median(x["answer"] for x in r),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--viewers", default="1,5,20")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    counts = [int(x) for x in a.viewers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = work / "clip.flv"
        make_clip(clip)
        app = Appliance(work)
        publisher = subprocess.Popen(
            [ffmpeg(), "-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy",
             "-f", "flv", f"rtmp://127.0.0.1:{app.rtmp}/live/bench"],
        )  # fmt: skip
        try:
            time.sleep(3)
            # A 0-viewer window right before each series: the idle level drifts by a point or so.
            base = {"whep": window_cpu(app.proc.pid, a.seconds)}
            idle = gauges(app)
            whep = {n: measure_whep(app, n, a, idle) for n in counts}
            base["rtmp"] = window_cpu(app.proc.pid, a.seconds)
            rtmp = {n: measure_rtmp(app, n, a) for n in counts}
            chromium = chromium_first_frame(app, a.runs)
            rtmp_ff = rtmp_first_frame_ms(app, a.runs)
        finally:
            publisher.terminate()
            publisher.wait(10)
            app.stop()
    rows = [
        "| viewers | WHEP: appliance CPU % | per viewer % | video fps min / median | audio packets/s min "
        "| RTMP: appliance CPU % | per subscriber % | WHEP/RTMP per viewer | viewer process CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| 0 | {base['whep']:.1f} | | | | {base['rtmp']:.1f} | | | |",
    ]
    for n in counts:
        w, r = whep[n], rtmp[n]
        pw = (float(w["cpu"]) - base["whep"]) / n  # type: ignore[arg-type]
        pr = (float(r["cpu"]) - base["rtmp"]) / n  # type: ignore[arg-type]
        ratio = f"{pw / pr:.1f}x" if pr > 0.05 else "n/a (RTMP cost below noise)"
        rows.append(
            f"| {n} | {w['cpu']:.1f} | {pw:.2f} | {w['min_fps']:.1f} / {w['median_fps']:.1f} "
            f"| {w['min_audio_pps']:.1f} | {r['cpu']:.1f} | {pr:.2f} | {ratio} | {w['client_cpu']:.1f} |"
        )
    top = max(counts)
    hit = float(whep[top]["cpu"]) <= 100 and float(whep[top]["min_fps"]) >= FPS - 1  # type: ignore[arg-type]
    lines = [
        f"# WebRTC benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        "Stream: 720p30 H.264 3 Mbit/s (baseline, no B-frames, 2 s GOP) + AAC 128k, published over RTMP "
        f"with -c copy; window {a.seconds:g} s after {a.warmup:g} s warm-up. WHEP viewers count frames "
        f"without decoding, in one aiortc process that shares the {os.cpu_count()} cores with the appliance. "
        "CPU % is of one core.",
        "",
        *rows,
        "",
        f"Every WHEP pair on 127.0.0.1: {all(bool(whep[n]['loopback']) for n in counts)}. Median WHEP answer "
        f"time (POST -> 201) at {top} viewers: {float(whep[top]['answer_ms']):.0f} ms.",  # type: ignore[arg-type]
        "",
        "Above the idle level after the viewers hung up (viewers, open peer connections, asyncio tasks on "
        "the WebRTC loop; waited up to 20 s; anything but none is a leak): "
        + "; ".join(f"{n} viewers: {whep[n]['leftover'] or 'none'}" for n in counts)
        + ".",
        "",
        f"Target: {top} WHEP viewers on one core at full frame rate: {'MET' if hit else 'MISSED'} "
        f"(appliance {float(whep[top]['cpu']):.0f} % of a core, slowest viewer "  # type: ignore[arg-type]
        f"{float(whep[top]['min_fps']):.1f} fps).",  # type: ignore[arg-type]
        "",
    ]
    if len(counts) > 1:
        # The first viewer also starts what a stream's viewers share (the AAC -> Opus feed, the av.Packet
        # packet made once per access unit): the slope between the two largest counts is one more viewer.
        lo, hi = sorted(counts)[-2:]
        slope_w = (float(whep[hi]["cpu"]) - float(whep[lo]["cpu"])) / (hi - lo)  # type: ignore[arg-type]
        slope_r = (float(rtmp[hi]["cpu"]) - float(rtmp[lo]["cpu"])) / (hi - lo)  # type: ignore[arg-type]
        lines[-1:-1] = [
            "",
            f"One more viewer between {lo} and {hi}: WHEP {slope_w:.2f} % of a core, RTMP {slope_r:.2f} %.",
        ]
    if isinstance(chromium, dict):
        lines.append(
            f"Time to first frame, median of {a.runs}: Chromium over WHEP {chromium['total']:.0f} ms from "
            f"createOffer ({chromium['from_post']:.0f} ms from the POST; the answer took "
            f"{chromium['answer']:.0f} ms); an RTMP player (ffmpeg, connect to first frame) {rtmp_ff:.0f} ms."
        )
    else:
        lines.append(f"Chromium time to first frame: {chromium}. RTMP player: {rtmp_ff:.0f} ms.")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"webrtc-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    out.write_text(text)
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
