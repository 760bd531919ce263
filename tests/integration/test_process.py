"""The real `appliance run` process: health, clean SIGTERM, SIGHUP reload, systemd notify protocol."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import ApplianceProcess, http_get

SHUTDOWN_BOUND_S = 10.0  # supervisor.shutdown_timeout below, per child; the whole stop must fit in it


def write_config(path: Path, state: Path, *, web: str = "127.0.0.1:0", name: str = "bench-unit") -> None:
    path.write_text(
        f"""
[device]
name = "{name}"
[web]
listen = "{web}"
[rtmp]
listen = "127.0.0.1:0"
[state]
dir = "{state}"
[supervisor]
shutdown_timeout = "{SHUTDOWN_BOUND_S:g}s"
"""
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "appliance.toml"
    write_config(path, tmp_path / "state")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_starts_serves_health_and_stops_cleanly_on_sigterm(cfg: Path, tmp_path: Path) -> None:
    app = ApplianceProcess(cfg)
    try:
        base = app.web_url()
        assert app.wait_healthy(base) == {"status": "ok"}
        code, status = http_get(base + "/api/status")
        assert code == 200
        assert status["device"] == "bench-unit"
        assert status["healthy"] is True
        children = {c["name"]: c for c in status["supervisor"]["children"]}
        assert children["web"]["state"] == "running" and children["web"]["critical"] is True
        assert children["watchdog"]["state"] == "running"
        assert children["egress"]["state"] == "running" and children["egress"]["children"]["children"] == []
        assert status["config"]["web"]["listen"] == "127.0.0.1:0"
        assert status["state_dir"] == str(tmp_path / "state")
        assert (tmp_path / "state").is_dir()
        code, problem = http_get(base + "/api/nothing-here")
        assert code == 404 and problem["title"] == "Not Found"
        # `appliance status` reads the same API
        res = subprocess.run(
            [sys.executable, "-m", "appliance", "status", "--url", base],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert res.returncode == 0, res.stderr
        assert "on bench-unit" in res.stdout and "healthy" in res.stdout
        assert "web" in res.stdout and "critical" in res.stdout
        # every line names its subsystem
        assert all("subsystem" in d for d in app.lines)
        assert app.event("web.listening")["subsystem"] == "web"
    finally:
        t0 = time.monotonic()
        rc = app.stop(timeout=SHUTDOWN_BOUND_S + 5)
        took = time.monotonic() - t0
    assert rc == 0, app.log_text()
    assert took < SHUTDOWN_BOUND_S, f"stop took {took:.1f}s"
    app.event("appliance.stopped", timeout=1)
    stops = [d["child"] for d in app.lines if d.get("event") == "child.stopped"]
    assert stops.index("watchdog") < stops.index("web"), "children stop in reverse start order"


def test_sigint_also_stops_cleanly(cfg: Path) -> None:
    app = ApplianceProcess(cfg)
    try:
        app.wait_healthy(app.web_url())
        app.signal(signal.SIGINT)
        assert app.proc.wait(SHUTDOWN_BOUND_S) == 0
    finally:
        app.stop()


def test_sighup_reloads_only_changed_sections(cfg: Path, tmp_path: Path) -> None:
    app = ApplianceProcess(cfg)
    try:
        base = app.web_url()
        app.wait_healthy(base)
        web_before = {c["name"]: c for c in http_get(base + "/api/status")[1]["supervisor"]["children"]}[
            "web"
        ]

        # 1. only device.name changes: the web child keeps running untouched, the new name shows
        write_config(cfg, tmp_path / "state", name="north-gate")
        app.signal(signal.SIGHUP)
        app.event("config.reloaded", changed="device")
        status = http_get(base + "/api/status")[1]
        assert status["device"] == "north-gate"
        web_after = {c["name"]: c for c in status["supervisor"]["children"]}["web"]
        assert web_after["restarts"] == web_before["restarts"]
        assert web_after["uptime_s"] >= web_before["uptime_s"]
        assert not [d for d in app.lines if d.get("event") == "config.restart_child"]

        # 2. a broken file: logged, the old config stays, still healthy
        cfg.write_text("[web]\nlisten = 'nowhere'\n")
        app.signal(signal.SIGHUP)
        failed = app.event("config.reload_failed")
        assert "web.listen='nowhere'" in failed["error"]
        assert http_get(base + "/api/health")[0] == 200

        # 3. web.listen changes: the web child alone restarts on the new address
        port = free_port()
        write_config(cfg, tmp_path / "state", web=f"127.0.0.1:{port}", name="north-gate")
        app.signal(signal.SIGHUP)
        app.event("config.restart_child", child="web")
        new_base = f"http://127.0.0.1:{port}"
        assert app.wait_healthy(new_base) == {"status": "ok"}
        with pytest.raises(OSError):
            http_get(base + "/api/health", timeout=2)
        children = {c["name"]: c for c in http_get(new_base + "/api/status")[1]["supervisor"]["children"]}
        assert children["watchdog"]["restarts"] == 0
        assert children["watchdog"]["uptime_s"] > children["web"]["uptime_s"]
    finally:
        assert app.stop() == 0, app.log_text()


def recv_all(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"{until!r} never came; got {got}")


def test_notify_protocol_with_real_socket(cfg: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    # WatchdogSec=1 -> pets every 0.5 s
    app = ApplianceProcess(cfg, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    try:
        got = recv_all(sock, "READY=1")
        assert any("STATUS=ok" in m for m in got), got
        pets = recv_all(sock, "WATCHDOG=1")
        assert pets
        pets = recv_all(sock, "WATCHDOG=1")  # and again: it keeps petting while healthy
        assert pets
    finally:
        app.signal(signal.SIGTERM)
        stopping = recv_all(sock, "STOPPING=1")
        assert stopping
        assert app.stop() == 0


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rtmp]\nlisten = "0.0.0.0:99999"\n')
    res = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "rtmp.listen='0.0.0.0:99999'" in res.stderr


def test_critical_child_that_keeps_failing_exits_70_without_ready_or_pets(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    with socket.socket() as squatter:  # someone else holds the web port: the web child can never start
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg = tmp_path / "appliance.toml"
        write_config(cfg, tmp_path / "state", web=f"127.0.0.1:{port}")
        app = ApplianceProcess(
            cfg,
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
            args=(
                "--set",
                "supervisor.max_restarts=2",
                "--set",
                "supervisor.backoff_initial=50ms",
                "--set",
                "supervisor.backoff_max=100ms",
            ),
        )
        rc = app.proc.wait(30)
        app.stop()
    assert rc == 70, app.log_text()
    escalated = app.event("appliance.escalated", timeout=1)
    assert "web" in escalated["reason"]
    gave_up = app.event("supervisor.escalated", timeout=1)
    assert (
        gave_up["child"] == "web" and gave_up["restarts"] == "3"
    )  # two restarts allowed, the third is one too many
    assert f"web.listen=127.0.0.1:{port}: cannot listen" in gave_up["error"]
    sock.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    assert not [m for m in messages if "READY=1" in m or "WATCHDOG=1" in m], messages
    assert "STOPPING=1" in messages[-1]


def test_unusable_state_dir_exits_2_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--set",
            f"state.dir={blocker}/state",
            "--set",
            "web.listen=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert f"state.dir='{blocker}/state': cannot create" in res.stderr


def test_sighup_with_a_start_time_only_section_warns_and_keeps_it(cfg: Path) -> None:
    app = ApplianceProcess(cfg)
    try:
        base = app.web_url()
        app.wait_healthy(base)
        cfg.write_text(cfg.read_text().replace("[supervisor]", "[supervisor]\nmax_restarts = 9"))
        app.signal(signal.SIGHUP)
        app.event("config.needs_restart", section="supervisor")
        status = http_get(base + "/api/status")[1]
        assert status["config"]["supervisor"]["max_restarts"] == 5  # what is in force until the next start
        assert not [d for d in app.lines if d.get("event") == "config.restart_child"]
    finally:
        assert app.stop() == 0
