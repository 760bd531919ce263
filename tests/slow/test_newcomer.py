"""A newcomer's path: `git clone` + `make run` serves /api/health; SIGTERM ends it with exit 0.

Runs offline: the clone reuses this checkout's private uv (.tools) and uv's cache (UV_OFFLINE=1), so
what is checked is the Makefile, the lock file and the entry point, not the network.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import http_get
from tests.peers import require_command

TOP = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_clone_and_make_run_serves_health(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(TOP), str(clone)], check=True)
    (clone / ".tools").symlink_to(TOP / ".tools")
    port = 18000 + os.getpid() % 1000
    env = dict(os.environ, UV_OFFLINE="1")
    env.pop("VIRTUAL_ENV", None)
    rtmp_port = port + 1000
    args = (
        f"--set web.listen=127.0.0.1:{port} --set rtmp.listen=127.0.0.1:{rtmp_port} "
        f"--set state.dir={tmp_path / 'state'}"
    )
    proc = subprocess.Popen(
        ["make", "run", f"RUN_ARGS={args}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = http_get(f"http://127.0.0.1:{port}/api/health", timeout=2)
            except OSError:
                time.sleep(0.2)
                continue
            if status[0] == 200 and not status[1].get("degraded"):  # the camera too has started
                break
            time.sleep(0.2)
        assert status == (200, {"status": "ok"}), proc.stdout.read() if proc.poll() is not None else status
        assert (clone / ".venv/bin/appliance").exists()
        # No camera here: the synthetic one is live at rtmp://HOST/live/cam, as the README promises.
        probe = subprocess.run(
            [require_command("ffprobe"), "-v", "error", "-show_entries", "stream=codec_name",
             "-of", "csv=p=0", f"rtmp://127.0.0.1:{rtmp_port}/live/cam"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert sorted(probe.stdout.split()) == ["aac", "h264"]
    finally:
        # Ctrl-C in the newcomer's terminal: SIGINT to make and to the appliance it runs.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for pid in [proc.pid, *map(int, children)]:
            os.kill(pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    # make reports the interrupt with its own status; the appliance must have stopped cleanly
    assert "event=appliance.stopping signal=SIGINT" in out and "event=appliance.stopped" in out, out
    assert "Traceback" not in out, out
