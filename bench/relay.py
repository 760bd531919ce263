#!/usr/bin/env python3
"""RTMP relay benchmark: the appliance side by side with nginx-rtmp and node-media-server, in one run.

Runs the shared harness (../shared/bench/rtmp_relay_bench.py, used in place: 1 ffmpeg publisher of
720p30 H.264 3 Mbit/s + AAC, N staggered ffmpeg subscribers, one JSON line per run) for every relay
and subscriber count, interleaved (10 subs: appliance, nginx, nms; then 40 subs: ...) so the peers
are measured under the same conditions as the appliance. The harness pins every relay the same way
(relay alone on the first CPU, publisher and subscribers on the others).

Prints each harness JSON line, a markdown comparison table with ratios against the peers measured in
this run, and PASS/FAIL for the relay issue's targets; writes all of it to
bench/results/relay-<timestamp>.md. A FAIL is a finding, not an error: the exit status is 0 unless
the harness is missing or a run produced no JSON line (relay did not start, harness crashed).

  .venv/bin/python bench/relay.py                      # all three relays, 10 and 40 subscribers
  .venv/bin/python bench/relay.py --relays nginx,nms --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Result = dict[str, Any]  # one harness JSON line

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO / ".." / "shared" / "bench").resolve()
HARNESS = SHARED / "rtmp_relay_bench.py"
NMS_APP = REPO / ".tools" / "nms" / "node_modules" / "node-media-server" / "bin" / "app.js"
RESULTS = REPO / "bench" / "results"

RELAYS = ("appliance", "nginx", "nms")
LABELS = {"appliance": "appliance", "nginx": "nginx-rtmp", "nms": "node-media-server"}
PEERS = ("nginx", "nms")

# The relay issue's targets.
FPS_TOLERANCE = 0.02  # every subscriber within 2% of the publisher's frame rate
CPU_VS_NGINX = 3.0  # CPU s per delivered Mbit within 3x of nginx-rtmp's (and at most nms's)
RSS_GROWTH_MB = 25.0  # RSS growth from idle to 40 subscribers
RSS_GROWTH_SUBS = 40
NOISE_PCT = 15.0  # relay core busier than the relay by this many points: the run shared its core


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_out(cmd: list[str], cwd: Path | None = None) -> str:
    """stdout+stderr of a short command, stripped; '' if it can't run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (r.stdout + r.stderr).strip()


# ---------------------------------------------------------------------------------------------- relays


def appliance_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def appliance_cmd() -> str:
    py = appliance_python()
    sets = [
        "rtmp.listen=127.0.0.1:{port}",
        "web.listen=127.0.0.1:0",
        "capture.source=none",
        "state.dir={run_dir}/state",
        "log.level=warning",
    ]
    # capture.source=none keeps a camera pipeline out of the measured process tree; leave it out
    # on a build whose config doesn't know it.
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as empty:
        r = subprocess.run(
            [py, "-m", "appliance", "check-config", empty.name, "--set", "capture.source=none"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
    if r.returncode != 0:
        print("relay.py: capture.source=none not accepted, running with the default capture", file=sys.stderr)
        sets.remove("capture.source=none")
    # Relative to the harness's cwd (shared/bench): the venv's python finds the package installed in it.
    return "exec " + shlex.join([py, "-m", "appliance", "run"]) + "".join(f" --set {s}" for s in sets)


def nginx_cmd(work: Path, port: int) -> str:
    """A per-run copy of the shared nginx-rtmp.conf: this port, pid/logs under `work`."""
    src = (SHARED / "nginx-rtmp.conf").read_text()
    conf = src.replace("/tmp/nginx-rtmp-bench", str(work))
    conf, n = re.subn(r"listen\s+127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{port};", conf)
    if n != 1 or "/tmp/nginx-rtmp-bench" in conf:
        raise SystemExit(
            f"relay.py: {SHARED / 'nginx-rtmp.conf'} changed shape: can't retarget its port/paths"
        )
    work.mkdir(parents=True, exist_ok=True)
    path = work / "nginx.conf"
    path.write_text(conf)
    args = ["nginx", "-p", f"{work}/", "-e", str(work / "error.log"), "-c", str(path)]
    test = subprocess.run([*args, "-t", "-q"], capture_output=True, text=True)
    if test.returncode != 0:
        raise SystemExit(f"relay.py: nginx -t failed for {path}:\n{test.stderr}")
    return "exec " + shlex.join(args)


def nms_cmd() -> str:
    if not NMS_APP.exists():
        raise SystemExit(f"relay.py: {NMS_APP} is missing: run scripts/install-bench-deps")
    # The shared config as it is (bind 127.0.0.1, no webadmin, no recording); port and data paths
    # from the command line so parallel runs don't share /tmp/nms.
    return (
        "exec "
        + shlex.join(["node", str(NMS_APP), "-c", str(SHARED / "nms-bench.json")])
        + " --rtmp-port {port} --data-path {run_dir}/nms/data --record-path {run_dir}/nms/record"
    )


def versions() -> dict[str, str]:
    v = {
        "appliance": run_out(["git", "describe", "--always", "--dirty"], cwd=REPO) or "?",
        "nginx": run_out(["nginx", "-v"]).replace("nginx version: ", ""),
        "libnginx-mod-rtmp": run_out(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-rtmp"]),
        "ffmpeg": " ".join(run_out(["ffmpeg", "-version"]).split()[2:3]) or "?",
        "node": run_out(["node", "--version"]),
    }
    pkg = NMS_APP.parent.parent / "package.json"
    if pkg.exists():
        v["node-media-server"] = json.loads(pkg.read_text()).get("version", "?")
    return v


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    relay: str
    subs: int
    result: Result | None = None
    error: str = ""
    log_tail: list[str] = field(default_factory=list)


def newest_run_dir(label: str, since: float) -> Path | None:
    dirs = [p for p in Path("/tmp").glob(f"rtmp_bench_{label}_*") if p.stat().st_mtime >= since - 1]
    return max(dirs, key=lambda p: p.stat().st_mtime, default=None)


def tail(path: Path, n: int = 30) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def run_harness(relay: str, subs: int, a: argparse.Namespace, work: Path) -> Run:
    port = free_port()
    if relay == "appliance":
        cmd = appliance_cmd()
    elif relay == "nginx":
        cmd = nginx_cmd(work / f"nginx-{subs}", port)
    else:
        cmd = nms_cmd()
    argv = [
        sys.executable,
        str(a.harness),
        "--label",
        relay,
        "--port",
        str(port),
        "--subs",
        str(subs),
        "--window",
        str(a.window),
        "--probes",
        str(a.probes),
        "--cmd",
        cmd,
    ]
    if a.settle is not None:
        argv += ["--settle", str(a.settle)]
    print(f"\n## {LABELS[relay]}, {subs} subscribers (port {port})", file=sys.stderr, flush=True)
    print("$ " + shlex.join(argv), file=sys.stderr, flush=True)
    t0 = time.time()
    r = subprocess.run(argv, capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    run = Run(relay, subs)
    line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")), None)
    if r.returncode == 0 and line:
        run.result = json.loads(line)
        print(line, flush=True)
        bad = (run.result.get("video_fraction") or 0) < 1.0 or not run.result.get("relay_alive")
        if bad:
            run.log_tail = tail(Path(run.result["run_dir"]) / "relay.log")
    else:
        last = (r.stderr.strip().splitlines() or [""])[-1]
        run.error = f"harness exited {r.returncode}" + (f": {last}" if last else "")
        d = newest_run_dir(relay, t0)
        if d:
            run.error += f" (run dir {d})"
            run.log_tail = tail(d / "relay.log")
        print(f"relay.py: {LABELS[relay]} with {subs} subscribers: {run.error}", file=sys.stderr, flush=True)
    if run.log_tail:
        print(f"relay.py: last lines of the {LABELS[relay]} log:", file=sys.stderr)
        for ln in run.log_tail:
            print("  " + ln, file=sys.stderr)
    return run


# ---------------------------------------------------------------------------------------------- report


def probe_s(res: Result) -> tuple[float | None, int]:
    """(median seconds of the late-join probes that decoded, number that failed)."""
    probes = res.get("decode_probe") or []
    ok = [p["s"] for p in probes if p.get("rc") == 0 and p.get("s") is not None]
    return (statistics.median(ok) if ok else None), len(probes) - len(ok)


def metrics(res: Result) -> dict[str, float | None]:
    pub = res.get("pub_fps") or 0.0
    fps_min = res.get("sub_fps_min")
    return {
        "cpu_pct": res.get("relay_cpu_pct"),
        "rss_mb": res.get("rss_peak_mb"),
        "rss_idle_mb": res.get("rss_idle_mb"),
        "rss_growth_mb": (
            round(res["rss_peak_mb"] - res["rss_idle_mb"], 1)
            if res.get("rss_peak_mb") is not None and res.get("rss_idle_mb") is not None
            else None
        ),
        "cpu_per_mbit": res.get("cpu_s_per_delivered_mbit"),
        "video_fraction": res.get("video_fraction"),
        "fps_ratio": (fps_min / pub) if fps_min is not None and pub else None,
        "startup": res.get("startup_s_median"),
        "late_join": probe_s(res)[0],
        "cpu_busy": None,
    }


ROWS = [  # (metric key, label, format)
    ("cpu_pct", "relay CPU %", "{:.1f}"),
    ("rss_mb", "RSS peak MB", "{:.1f}"),
    ("rss_growth_mb", "RSS growth idle->peak MB", "{:.1f}"),
    ("cpu_per_mbit", "CPU s per delivered Mbit", "{:.6f}"),
    ("video_fraction", "video_fraction", "{:.3f}"),
    ("fps_ratio", "sub_fps_min / pub_fps", "{:.3f}"),
    ("startup", "startup median s", "{:.2f}"),
    ("late_join", "late-join decode median s", "{:.2f}"),
    ("cpu_busy", "machine CPU busy % per core (relay on the first)", ""),
]


def fmt(v: float | None, f: str) -> str:
    return "-" if v is None else f.format(v)


def cell(res: Result | None, key: str, f: str) -> str:
    if res is None:
        return "error"
    if key == "cpu_busy":
        return " / ".join(f"{v:.0f}" for v in (res.get("cpu_busy_pct") or {}).values())
    m = metrics(res)
    s = fmt(m[key], f)
    if key == "fps_ratio" and m[key] is not None:
        s += f" ({res['sub_fps_min']:.2f}/{res['pub_fps']:.2f})"
    if key == "rss_growth_mb" and m[key] is not None:
        s += f" ({res['rss_idle_mb']:.1f}->{res['rss_peak_mb']:.1f})"
    if key == "late_join":
        failed = probe_s(res)[1]
        if failed:
            s += f" ({failed} failed)"
    return s


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def table(runs: dict[tuple[str, int], Run], relays: list[str], subs_list: list[int]) -> str:
    pairs = [
        (r, p) for r in relays for p in PEERS if p in relays and p != r and not (r == "nginx" and p == "nms")
    ]
    head = ["metric", "subs"] + [LABELS[r] for r in relays] + [f"{r} / {p}" for r, p in pairs]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, f in ROWS:
        for n in subs_list:
            res = {r: runs[(r, n)].result for r in relays}
            row = [label, str(n)] + [cell(res[r], key, f) for r in relays]
            for r, p in pairs:
                rr, rp = res[r], res[p]
                row.append(ratio(metrics(rr)[key], metrics(rp)[key]) if rr and rp else "-")
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def noise_notes(runs: dict[tuple[str, int], Run]) -> list[str]:
    """Runs whose relay core was busy with more than the relay: others' load skews their figures."""
    core = f"cpu{min(os.sched_getaffinity(0))}"
    notes = []
    for (r, n), run in runs.items():
        res = run.result
        if not res or not res.get("pinned"):
            continue
        busy, own = (res.get("cpu_busy_pct") or {}).get(core), res.get("relay_cpu_pct") or 0.0
        if busy is not None and busy - own > NOISE_PCT:
            notes.append(
                f"NOTE  {LABELS[r]} {n} subs: {core} (the relay's core) was {busy:.0f}% busy, the relay "
                f"used {own:.1f}%: other processes competed for it in the window; re-run on a quiet machine"
            )
    return notes


def targets(runs: dict[tuple[str, int], Run], relays: list[str], subs_list: list[int]) -> list[str]:
    subject = "appliance"
    if subject not in relays:
        return ["SKIP  all targets: the appliance was not measured in this run (--relays)"]
    lines = []

    def verdict(ok: bool | None, name: str, detail: str) -> None:
        word = "PASS" if ok else ("FAIL" if ok is False else "N/A ")
        lines.append(f"{word}  {name}: {detail}")

    def res(r: str, n: int) -> Result | None:
        run = runs.get((r, n))
        return run.result if run else None

    # 1. every subscriber at the full frame rate
    oks: list[bool | None] = []
    det: list[str] = []
    for n in subs_list:
        a = res(subject, n)
        if a is None:
            oks.append(False)
            det.append(f"{n} subs: no result ({runs[(subject, n)].error})")
            continue
        pub, fmin, vf = a["pub_fps"], a["sub_fps_min"], a["video_fraction"]
        ok = vf == 1.0 and fmin is not None and pub > 0 and fmin >= pub * (1 - FPS_TOLERANCE)
        oks.append(ok)
        det.append(f"{n} subs: video_fraction {vf}, sub_fps_min {fmin} vs publisher {pub}")
    verdict(
        all(oks),
        "every subscriber at full frame rate (video_fraction 1.0, sub_fps_min within 2%)",
        "; ".join(det),
    )

    # 2. CPU s per delivered Mbit: at most nms's, within 3x nginx-rtmp's
    oks, det = [], []
    for n in subs_list:
        a, g, m = res(subject, n), res("nginx", n), res("nms", n)
        ca = a and a.get("cpu_s_per_delivered_mbit")
        cg = g and g.get("cpu_s_per_delivered_mbit")
        cm = m and m.get("cpu_s_per_delivered_mbit")
        if not ca or not cg or not cm:
            oks.append(None if a else False)
            det.append(f"{n} subs: missing a figure (appliance {ca}, nginx {cg}, nms {cm})")
            continue
        ok = ca <= cm and ca <= CPU_VS_NGINX * cg
        oks.append(ok)
        det.append(f"{n} subs: {ca:.6f} vs nms {cm:.6f} ({ca / cm:.2f}x), nginx {cg:.6f} ({ca / cg:.2f}x)")
    verdict(
        False if False in oks else (None if None in oks else True),
        "CPU s per delivered Mbit <= node-media-server's and <= 3x nginx-rtmp's",
        "; ".join(det),
    )

    # 3. RSS growth idle -> 40 subscribers
    n = RSS_GROWTH_SUBS if RSS_GROWTH_SUBS in subs_list else max(subs_list)
    a = res(subject, n)
    if a is None:
        verdict(
            False, f"RSS growth idle->{RSS_GROWTH_SUBS} subscribers < {RSS_GROWTH_MB:.0f} MB", "no result"
        )
    else:
        growth = a["rss_peak_mb"] - a["rss_idle_mb"]
        note = "" if n == RSS_GROWTH_SUBS else f" (measured at {n} subs only, not {RSS_GROWTH_SUBS})"
        verdict(
            None if note else growth < RSS_GROWTH_MB,
            f"RSS growth idle->{RSS_GROWTH_SUBS} subscribers < {RSS_GROWTH_MB:.0f} MB",
            f"{growth:.1f} MB ({a['rss_idle_mb']} idle -> {a['rss_peak_mb']} peak){note}",
        )

    # 4. late joiners decode faster than with nginx-rtmp
    oks, det = [], []
    for n in subs_list:
        a, g = res(subject, n), res("nginx", n)
        pa = probe_s(a)[0] if a else None
        pg = probe_s(g)[0] if g else None
        if pa is None or pg is None:
            oks.append(False if a is None or pa is None else None)
            det.append(f"{n} subs: appliance {pa}, nginx {pg} (median s)")
            continue
        oks.append(pa < pg)
        det.append(f"{n} subs: {pa:.2f} s vs nginx-rtmp {pg:.2f} s (median of probes)")
    verdict(
        False if False in oks else (None if None in oks else True),
        "late-join decode probe faster than nginx-rtmp's",
        "; ".join(det),
    )
    return lines


# ---------------------------------------------------------------------------------------------- main


def csv_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subs", default="10,40", help="subscriber counts, comma-separated (default 10,40)")
    ap.add_argument("--relays", default=",".join(RELAYS), help="relays to measure: appliance,nginx,nms")
    ap.add_argument("--window", type=float, help="measurement window in seconds (harness default 20)")
    ap.add_argument("--probes", type=int, help="late-join decode probes per run (harness default 3)")
    ap.add_argument("--settle", type=float, help="seconds after the last subscriber before the window")
    ap.add_argument("--quick", action="store_true", help="one short window (8 s, 2 probes): a smoke test")
    ap.add_argument("--harness", type=Path, default=HARNESS, help=argparse.SUPPRESS)
    a = ap.parse_args()

    relays = csv_list(a.relays)
    unknown = [r for r in relays if r not in RELAYS]
    if unknown or not relays:
        ap.error(f"--relays: unknown {unknown}; choose from {','.join(RELAYS)}")
    relays = [r for r in RELAYS if r in relays]
    try:
        subs_list = [int(x) for x in csv_list(a.subs)]
    except ValueError:
        ap.error("--subs: comma-separated integers")
    if not subs_list or min(subs_list) < 1:
        ap.error("--subs: at least one count, each >= 1")
    a.window = a.window if a.window is not None else (8.0 if a.quick else 20.0)
    a.probes = a.probes if a.probes is not None else (2 if a.quick else 3)

    a.harness = a.harness.resolve()
    if not a.harness.is_file():
        print(
            f"relay.py: the shared harness {a.harness} is missing (expected ../shared/bench/ beside the repo,"
            " i.e. the project's shared/ folder); can't benchmark without it",
            file=sys.stderr,
        )
        return 2
    missing = [
        t
        for t in ("ffmpeg", "taskset")
        + (("nginx",) if "nginx" in relays else ())
        + (("node",) if "nms" in relays else ())
        if shutil.which(t) is None
    ]
    if missing:
        print(
            f"relay.py: {', '.join(missing)} not found: run scripts/install-test-deps and "
            "scripts/install-bench-deps (make bench does)",
            file=sys.stderr,
        )
        return 2

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix=f"relay-bench-{stamp}-", dir="/tmp"))
    vers = versions()
    cpus = len(os.sched_getaffinity(0))
    started = time.monotonic()
    runs: dict[tuple[str, int], Run] = {}
    for n in subs_list:  # interleaved, so every relay of one size sees the same machine state
        for r in relays:
            runs[(r, n)] = run_harness(r, n, a, work)
    elapsed = time.monotonic() - started

    tbl = table(runs, relays, subs_list)
    tgt = targets(runs, relays, subs_list) + noise_notes(runs)
    jsonl = [json.dumps(runs[(r, n)].result) for n in subs_list for r in relays if runs[(r, n)].result]
    errors = [f"{LABELS[r]} {n} subs: {run.error}" for (r, n), run in runs.items() if run.result is None]
    pinned = {bool(run.result.get("pinned")) for run in runs.values() if run.result}

    print("\n" + tbl)
    print()
    for ln in tgt:
        print(ln)
    for e in errors:
        print(f"ERROR {e}")

    pin_text = {True: "yes", False: "no"}.get(pinned.pop(), "?") if len(pinned) == 1 else "mixed/unknown"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"relay-{stamp}.md"
    md = [
        f"# RTMP relay benchmark {stamp}",
        "",
        f"Machine: {platform.node()}, {cpus} CPUs, Linux {platform.release()}; relay pinned to one core: "
        f"{pin_text}; window {a.window:g} s, {a.probes} late-join probes"
        f"{', quick' if a.quick else ''}; {elapsed:.0f} s in all.",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in vers.items()),
        "",
        "Command: `" + shlex.join([Path(sys.executable).name, "bench/relay.py", *sys.argv[1:]]) + "`",
        "",
        "## Harness JSON lines",
        "",
        "```",
        *jsonl,
        "```",
        "",
        "## Comparison",
        "",
        tbl,
        "",
        "## Targets",
        "",
        "```",
        *tgt,
        "```",
    ]
    if errors or any(run.log_tail for run in runs.values()):
        md += ["", "## Errors", ""]
        for (r, n), run in runs.items():
            if run.error or run.log_tail:
                md += [
                    f"{LABELS[r]}, {n} subs: {run.error or 'ran, but see the relay log'}",
                    "",
                    "```",
                    *run.log_tail,
                    "```",
                    "",
                ]
    out.write_text("\n".join(md) + "\n")
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
