"""Running the real ``appliance`` process in tests: start it, read its JSON log, talk HTTP, signal it."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ApplianceProcess", "http_get", "raw_request"]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET a JSON document; (status, body) for 2xx and HTTP errors alike."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        with e:  # it holds the response's socket
            return e.code, json.loads(e.read() or b"{}")


def raw_request(
    base: str, path: str, method: str = "GET", timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given (no client-side clean-up of ``..``): status,
    headers (lower-case names) and body."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class ApplianceProcess:
    """``python -m appliance run --config FILE`` with JSON logs collected line by line."""

    def __init__(
        self,
        config: Path | None,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        command: tuple[str, ...] | None = None,
    ) -> None:
        """Run the appliance on `config` (+ `args`), or ``python -m appliance *command`` (another
        subcommand, like ``controller``) when `command` is given."""
        full_env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        full_env.update(env or {})
        # The camera costs CPU in every test that starts the appliance; only tests about capture want it.
        # A test opts in by writing a [capture] section or passing --set capture.*.
        if command is None:
            assert config is not None
            wants_capture = (config.exists() and "[capture]" in config.read_text()) or any(
                "capture." in a for a in args
            )
            no_camera = () if wants_capture else ("--set", "capture.source=none")
            command = ("run", "--config", str(config), "--set", "log.format=json", *no_camera, *args)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._stopping = False
        self._new: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"event": "unparsed", "line": raw.rstrip()}
            self.lines.append(doc)
            self._new.put(doc)
        self._new.put(None)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first log line (seen or still to come) that ``match`` accepts."""
        for doc in list(self.lines):
            if match(doc):
                return doc
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                doc = self._new.get(timeout=left)
            except queue.Empty:
                break
            if doc is None:
                raise AssertionError(
                    f"appliance exited ({self.proc.wait()}) before the expected line:\n{self.log_text()}"
                )
            if match(doc):
                return doc
        raise AssertionError(f"no matching log line within {timeout}s:\n{self.log_text()}")

    def event(self, name: str, timeout: float = 20.0, **fields: str) -> dict[str, Any]:
        return self.wait_for(
            lambda d: d.get("event") == name and all(d.get(k) == v for k, v in fields.items()), timeout
        )

    def web_url(self, timeout: float = 20.0) -> str:
        return str(self.event("web.listening", timeout)["urls"]).split(",")[0]

    def rtmp_address(self, timeout: float = 20.0) -> tuple[str, int]:
        """The relay's bound host and port, from its `rtmp.listening` line."""
        first = str(self.event("rtmp.listening", timeout)["addresses"]).split(",")[0]
        host, _, port = first.rpartition(":")
        return host.strip("[]"), int(port)

    def rtmp_url(self, path: str, timeout: float = 20.0) -> str:
        host, port = self.rtmp_address(timeout)
        return f"rtmp://{host}:{port}/{path}"

    def wait_healthy(self, base: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            try:
                last = http_get(base + "/api/health", timeout=2)
            except OSError:
                last = None
            # 200 comes as soon as the critical children are up (systemd's READY); wait for the rest to
            # finish starting too, so a test reads a settled tree.
            if last and last[0] == 200 and not last[1].get("degraded"):
                children = http_get(base + "/api/status", timeout=2)[1]["supervisor"]["children"]
                if all(c["state"] != "starting" for c in children):
                    return last[1]
            time.sleep(0.05)
        raise AssertionError(f"/api/health never became 200 (last: {last}):\n{self.log_text()}")

    def signal(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (unless a stop signal went already) and the exit code."""
        if self.proc.poll() is None and not self._stopping:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def log_text(self) -> str:
        return "\n".join(json.dumps(d) for d in self.lines[-60:])
