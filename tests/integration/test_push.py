"""RTMP push egress against a real ingest: nginx-rtmp, plain and behind stunnel (RTMPS)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import ApplianceProcess, http_get
from tests.integration.rtmp_peers import (
    camera_appliance,
    free_port,
    killing,
    nginx_ingest,
    probe,
    start,
    wait_port,
)
from tests.peers import require_command

pytestmark = pytest.mark.peers

STUNNEL_CONF = """
foreground = yes
pid =
[rtmps]
accept = 127.0.0.1:{tls_port}
connect = 127.0.0.1:{port}
cert = {dir}/cert.pem
key = {dir}/key.pem
"""


@contextmanager
def stunnel(dir: Path, tls_port: int, port: int) -> Iterator[None]:
    subprocess.run(
        [require_command("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=ingest.test", "-keyout", str(dir / "key.pem"), "-out", str(dir / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    conf = dir / "stunnel.conf"
    conf.write_text(STUNNEL_CONF.format(dir=dir, tls_port=tls_port, port=port))
    proc = start([require_command("stunnel4"), str(conf)], dir / "stunnel.out")
    with killing(proc):
        wait_port(tls_port, proc, dir / "stunnel.out")
        yield


def pushes(base: str) -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in http_get(base + "/api/status")[1]["pushes"]}


def nth(app: ApplianceProcess, event: str, n: int, timeout: float = 60.0, **fields: str) -> dict[str, object]:
    """The n-th (1-based) log line of `event` with `fields`."""
    seen = [0]

    def match(d: dict[str, object]) -> bool:
        if d.get("event") == event and all(d.get(k) == v for k, v in fields.items()):
            seen[0] += 1
        return seen[0] >= n

    return app.wait_for(match, timeout)


def test_push_waits_for_its_ingest_and_survives_its_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/ingest/s3cr3t-key"
    app = camera_appliance(tmp_path, f'[[push.targets]]\nname = "nginx"\nurl = "{url}"\n')
    try:
        base = app.web_url()
        # Nothing listens yet: the target is retried with backoff, not dropped.
        app.event("push.failed", target="nginx", timeout=30)
        for round_ in (1, 2):
            with nginx_ingest(tmp_path / f"ingest{round_}", port):
                nth(app, "push.connected", round_, target="nginx")
                assert probe(url) == ["aac", "h264,320,240"]
                state = pushes(base)["nginx"]
                assert state["state"] == "streaming"
                assert state["url"] == f"rtmp://127.0.0.1:{port}/ingest/<key>"
            # The ingest is killed: the push notices and keeps retrying until it is back.
            nth(app, "push.failed", round_ + 1, target="nginx")
        # The stream key never reaches the log or the API.
        assert "s3cr3t-key" not in app.log_text() and "s3cr3t-key" not in str(
            http_get(base + "/api/status")[1]
        )
        streams = http_get(base + "/api/streams")[1]["streams"]
        cam = next(item for item in streams if item["name"] == "live/cam")
        assert cam["subscribers"] == []  # the dead push left no subscription behind
    finally:
        assert app.stop() == 0


def test_rtmps_push_with_a_self_signed_ingest(tmp_path: Path) -> None:
    port, tls_port = free_port(), free_port()
    with nginx_ingest(tmp_path / "ingest", port), stunnel(tmp_path, tls_port, port):
        url = f"rtmps://127.0.0.1:{tls_port}/ingest"
        app = camera_appliance(
            tmp_path,
            f'[[push.targets]]\nname = "trusting"\nurl = "{url}/one"\nverify_tls = false\n'
            f'[[push.targets]]\nname = "checking"\nurl = "{url}/two"\n',
        )
        try:
            base = app.web_url()
            app.event("push.connected", target="trusting", timeout=30)
            assert probe(f"rtmp://127.0.0.1:{port}/ingest/one") == ["aac", "h264,320,240"]
            failed = app.event("push.failed", target="checking", timeout=30)
            assert (
                "CERTIFICATE_VERIFY_FAILED" in failed["error"]
                or "certificate verify failed" in failed["error"]
            )
            assert pushes(base)["checking"]["state"] in ("connecting", "reconnecting")
        finally:
            assert app.stop() == 0


def test_sighup_applies_push_target_changes(tmp_path: Path) -> None:
    port = free_port()
    first = f'[[push.targets]]\nname = "a"\nurl = "rtmp://127.0.0.1:{port}/ingest/a"\n'
    with nginx_ingest(tmp_path / "ingest", port):
        app = camera_appliance(tmp_path, first)
        try:
            base = app.web_url()
            app.event("push.connected", target="a", timeout=30)
            # a is disabled, b is new: b starts, a stops, nothing else restarts.
            cfg = tmp_path / "appliance.toml"
            cfg.write_text(
                cfg.read_text().replace(first, "")
                + first
                + "enabled = false\n"
                + f'[[push.targets]]\nname = "b"\nurl = "rtmp://127.0.0.1:{port}/ingest/b"\n'
            )
            app.signal(signal.SIGHUP)
            app.event("push.removed", target="a")
            app.event("push.connected", target="b", timeout=30)
            assert probe(f"rtmp://127.0.0.1:{port}/ingest/b") == ["aac", "h264,320,240"]
            assert set(pushes(base)) == {"b"}
            children = {c["name"]: c for c in http_get(base + "/api/status")[1]["supervisor"]["children"]}
            assert children["capture"]["restarts"] == 0 and children["relay"]["restarts"] == 0
        finally:
            assert app.stop() == 0


def test_a_stalled_ingest_never_stalls_the_camera(tmp_path: Path) -> None:
    port = free_port()
    with nginx_ingest(tmp_path / "ingest", port) as ingest:
        app = camera_appliance(
            tmp_path, f'[[push.targets]]\nname = "stuck"\nurl = "rtmp://127.0.0.1:{port}/ingest/k"\n'
        )
        try:
            base = app.web_url()
            app.event("push.connected", target="stuck", timeout=30)
            ingest.send_signal(signal.SIGSTOP)  # accepts nothing more: its socket buffers fill, then stop
            try:
                frames_before = http_get(base + "/api/status")[1]["capture"]["frames"]
                failed = app.event("push.failed", target="stuck", timeout=40)
                assert "took nothing for 10 s" in failed["error"]
                status = http_get(base + "/api/status")[1]
                # 15 fps went on regardless, the whole time the push was stuck.
                assert status["capture"]["frames"] - frames_before >= 15 * 9
                assert status["capture"]["state"] == "running"
                cam = next(
                    s for s in http_get(base + "/api/streams")[1]["streams"] if s["name"] == "live/cam"
                )
                assert all(s["queued"] <= 512 for s in cam["subscribers"])  # bounded while stuck
            finally:
                ingest.send_signal(signal.SIGCONT)
        finally:
            assert app.stop() == 0
