"""The reference fleet controller (`appliance controller`) driving a real appliance: managed streams on
the controller's own relay, unmanaged streams to nginx-rtmp, players on the play URL (ffprobe), and the
streaming seed's success criteria when the device's control socket dies."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.harness import ApplianceProcess
from tests.integration.rtmp_peers import FF, camera_appliance, free_port, nginx_ingest, probe
from tests.peers import require_command

pytestmark = pytest.mark.peers

DEVICE_TOKEN = "device-token-for-tests-0123"
API_TOKEN = "api-token-for-tests-4567"


def start_controller(port: int, rtmp_port: int) -> ApplianceProcess:
    # Short keep-alive timings so the grace (3 x 1 s + 1 s) fits a test; the defaults are 15 s/10 s/3.
    return ApplianceProcess(
        None,
        command=("controller", "--listen", f"127.0.0.1:{port}", "--rtmp-listen", f"127.0.0.1:{rtmp_port}",
                 "--keepalive", "1s", "--ack-timeout", "1s", "--max-missed", "3", "--stop-timeout", "3s",
                 "--log-format", "json"),
        env={"APPLIANCE_CONTROLLER_DEVICE_TOKENS": f"north-gate={DEVICE_TOKEN}",
             "APPLIANCE_CONTROLLER_API_TOKEN": API_TOKEN},
    )  # fmt: skip


def stop_all(*procs: ApplianceProcess) -> list[int]:
    """Stop every process, even when one of them fails to stop in time (it is killed: -9), so no process
    outlives the test."""
    codes = []
    for proc in procs:
        try:
            codes.append(proc.stop())
        except subprocess.TimeoutExpired:
            codes.append(-9)
    return codes


def device(tmp_path: Path, ws_port: int) -> ApplianceProcess:
    return camera_appliance(
        tmp_path,
        f"""
[cloud]
url = "ws://127.0.0.1:{ws_port}/device"
token = "{DEVICE_TOKEN}"
device_id = "north-gate"
deadman = "3s"
heartbeat = "1s"
""",
    )


def api(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        with e:  # it holds the response's socket
            return e.code, json.loads(e.read() or b"{}")


def until(check: Callable[[], Any], within: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        time.sleep(0.1)


def stream_is(port: int, stream_id: str, status: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        doc = api(port, "GET", f"/api/streams/{stream_id}")[1]
        return doc if doc.get("status") == status else None

    return check


def counters(port: int) -> dict[str, int]:
    return api(port, "GET", "/api/status")[1]["counters"]  # type: ignore[no-any-return]


def connected(port: int) -> bool:
    devices = api(port, "GET", "/api/devices")[1].get("devices", [])
    return any(d["deviceId"] == "north-gate" and d["connected"] for d in devices)


class Cutter:
    """A TCP proxy between the device and the controller that can cut the control socket."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.refuse = False
        self.scopes: set[trio.CancelScope] = set()

    async def serve(
        self, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, down: trio.SocketStream) -> None:
        if self.refuse:
            await down.aclose()
            return
        with trio.CancelScope() as scope:
            self.scopes.add(scope)
            try:
                up = await trio.open_tcp_stream("127.0.0.1", self.upstream)
                async with up, down, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pipe, down, up, nursery.cancel_scope)
                    nursery.start_soon(self._pipe, up, down, nursery.cancel_scope)
            except OSError:
                pass
            finally:
                self.scopes.discard(scope)

    @staticmethod
    async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            async for chunk in src:
                await dst.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        scope.cancel()

    def cut(self, *, refuse: bool) -> int:
        self.refuse = refuse
        cut = len(self.scopes)
        for scope in list(self.scopes):
            scope.cancel()
        return cut


def publish_without_secret(url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require_command("ffmpeg"), *FF, "-re", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5",
         "-t", "3", "-c:v", "libx264", "-f", "flv", url],
        capture_output=True, timeout=60,
    )  # fmt: skip


async def test_managed_stream_is_hosted_played_and_removed_on_stop(tmp_path: Path) -> None:
    port, rtmp_port = free_port(), free_port()
    controller = start_controller(port, rtmp_port)
    app = device(tmp_path, port)
    try:
        await trio.to_thread.run_sync(controller.event, "controller.listening")
        await trio.to_thread.run_sync(lambda: until(lambda: connected(port), what="device connected"))
        status, stream = await trio.to_thread.run_sync(
            api, port, "POST", "/api/devices/north-gate/streams", {"mode": "managed", "streamId": "m1"}
        )
        assert status == 201, stream
        play_url = stream["playUrl"]
        assert play_url.startswith(f"rtmp://127.0.0.1:{rtmp_port}/managed/m1-")
        await trio.to_thread.run_sync(lambda: until(stream_is(port, "m1", "streaming"), what="streaming"))
        # Many viewers may play it; ffprobe is one.
        assert await trio.to_thread.run_sync(probe, play_url) == ["aac", "h264,320,240"]
        doc = await trio.to_thread.run_sync(
            lambda: until(
                lambda: (d := api(port, "GET", "/api/streams/m1")[1]).get("stats") and d, what="stats"
            )
        )
        assert doc["ingestPublishing"] is True and doc["stats"]["bitrate"] > 0
        assert doc["media"]["video"]["codec"] == "h264" and doc["media"]["video"]["height"] == 240
        # The key alone does not let anyone else publish (it would replace the device's push).
        refused = await trio.to_thread.run_sync(publish_without_secret, play_url)
        assert refused.returncode != 0
        assert any(d.get("event") == "rtmp.publish_refused" or "unauthorized" in json.dumps(d)
                   for d in controller.lines)  # fmt: skip
        # One stream per device: a second start is a conflict naming the current stream.
        status, body = api(port, "POST", "/api/devices/north-gate/streams", {"mode": "managed"})
        assert status == 409 and body["existing"] == "m1"

        status, body = api(port, "DELETE", "/api/streams/m1")
        assert status == 202 and body["status"] == "stopping"
        await trio.to_thread.run_sync(lambda: until(stream_is(port, "m1", "stopped"), what="stopped"))
        line = await trio.to_thread.run_sync(lambda: app.event("cloud.push_stopped"))
        assert line["reason"] == "stopped by the controller"
        with pytest.raises(subprocess.CalledProcessError):
            await trio.to_thread.run_sync(probe, play_url)  # the ingest is gone
        totals = counters(port)
        assert totals["starts"] == 1 and totals["stops"] == 1 and totals["conflicts"] == 1
        for text in (controller.log_text(), app.log_text()):
            assert DEVICE_TOKEN not in text and API_TOKEN not in text
    finally:
        assert await trio.to_thread.run_sync(stop_all, app, controller) == [0, 0]


async def test_unmanaged_stream_survives_a_short_cut_and_dies_with_a_long_one(tmp_path: Path) -> None:
    port, cut_port, ingest_port = free_port(), free_port(), free_port()
    cutter = Cutter(port)
    controller = start_controller(port, free_port())
    async with trio.open_nursery() as nursery:
        await nursery.start(cutter.serve, cut_port)
        with nginx_ingest(tmp_path / "ingest", ingest_port):
            app = device(tmp_path, cut_port)
            try:
                await trio.to_thread.run_sync(controller.event, "controller.listening")
                await trio.to_thread.run_sync(lambda: until(lambda: connected(port), what="device connected"))
                # Five operators start a stream on the same device at once: exactly one wins.
                results: list[tuple[int, dict[str, Any]]] = []

                async def start(n: int) -> None:
                    body = {"streamId": f"u{n}", "rtmpUrl": f"rtmp://127.0.0.1:{ingest_port}/ingest/u{n}"}
                    results.append(
                        await trio.to_thread.run_sync(
                            api, port, "POST", "/api/devices/north-gate/streams", body
                        )
                    )

                async with trio.open_nursery() as starts:
                    for n in range(5):
                        starts.start_soon(start, n)
                assert sorted(status for status, _ in results) == [201, 409, 409, 409, 409]
                winner = next(body["streamId"] for status, body in results if status == 201)
                active = api(port, "GET", "/api/streams?active=1")[1]["streams"]
                assert [s["streamId"] for s in active] == [winner]
                url = f"rtmp://127.0.0.1:{ingest_port}/ingest/{winner}"
                await trio.to_thread.run_sync(
                    lambda: until(stream_is(port, winner, "streaming"), what="streaming")
                )
                assert await trio.to_thread.run_sync(probe, url) == ["aac", "h264,320,240"]

                # A short cut: the device reconnects within the grace (3 x 1 s + 1 s) and keeps its stream.
                assert cutter.cut(refuse=False) == 1
                await trio.to_thread.run_sync(
                    lambda: until(lambda: counters(port)["socket_recoveries"] >= 1, what="socket recovery")
                )
                await trio.sleep(6)  # longer than the grace and the device's dead-man time
                doc = api(port, "GET", f"/api/streams/{winner}")[1]
                assert doc["active"] and doc["status"] == "streaming", doc
                assert await trio.to_thread.run_sync(probe, url) == ["aac", "h264,320,240"]

                # The seed's criteria: the socket dies for good mid-stream. The controller times the stream
                # out (zero active streams) and the device's dead-man timer stops the push at the ingest.
                cutter.cut(refuse=True)
                await trio.to_thread.run_sync(
                    lambda: until(lambda: api(port, "GET", "/api/status")[1]["activeStreams"] == 0, within=20,
                                  what="controller timed the stream out")
                )  # fmt: skip
                doc = api(port, "GET", f"/api/streams/{winner}")[1]
                assert doc["status"] == "timeout" and "unanswered" in doc["endReason"]
                line = await trio.to_thread.run_sync(lambda: app.event("cloud.push_stopped"))
                assert "no keep-alive" in line["reason"]
                with pytest.raises(subprocess.CalledProcessError):
                    await trio.to_thread.run_sync(probe, url)  # nginx saw the publisher leave
                totals = counters(port)
                assert totals["missed_acks"] >= 3 and totals["timeouts"] == 1 and totals["socket_losses"] >= 2
            finally:
                assert await trio.to_thread.run_sync(stop_all, app, controller) == [0, 0]
        nursery.cancel_scope.cancel()


async def test_controller_refuses_bad_tokens_and_answers_junk_with_errors(tmp_path: Path) -> None:
    port = free_port()
    controller = start_controller(port, free_port())
    try:
        await trio.to_thread.run_sync(controller.event, "controller.listening")
        url = f"ws://127.0.0.1:{port}/device"
        # (A raw upgrade request: trio-websocket's client leaves the socket of a refused handshake open.)
        assert await trio.to_thread.run_sync(upgrade_status, port, "Bearer wrong") == 403
        assert await trio.to_thread.run_sync(upgrade_status, port, None) == 403
        assert api(port, "GET", "/api/devices")[1] == {"devices": []}
        status, body = await trio.to_thread.run_sync(api_without_token, port)
        assert status == 401 and "Bearer" in body["detail"]

        headers = [(b"Authorization", f"Bearer {DEVICE_TOKEN}".encode())]
        async with open_websocket_url(url, extra_headers=headers) as ws:
            await ws.send_message('{"type": "keep_alive_ack", "streamId": "x", "ackId": "1"}')
            assert "hello first" in json.loads(await ws.get_message())["message"]
            # A token names its device: another device id is refused.
            await ws.send_message(json.dumps({"type": "hello", "deviceId": "north-gate", "version": "t",
                                              "board": "pc", "capabilities": ["rtmp"]}))  # fmt: skip
            for junk in ("{not json", "[]", '{"type": 7}', '{"type": "bogus"}', '{"type": "hello"}'):
                await ws.send_message(junk)
                reply = json.loads(await ws.get_message())
                assert reply["type"] == "error" and reply["message"], (junk, reply)
            # Acks and statuses for streams the controller never started change nothing, and a live
            # stream it does not know is an orphan the device is told to stop.
            await ws.send_message('{"type": "keep_alive_ack", "streamId": "ghost", "ackId": "1"}')
            await ws.send_message(
                '{"type": "rtmp_stream_status", "streamId": "ghost", "appId": "", "status": "streaming"}'
            )
            stop = json.loads(await ws.get_message())
            assert stop["type"] == "stop_rtmp_stream" and stop["streamId"] == "ghost"
        totals = counters(port)
        assert totals["malformed"] == 5 and totals["stale_acks"] == 1 and totals["orphans_stopped"] == 1
        assert controller.event("controller.device_refused")["reason"] == "bad or missing bearer token"
    finally:
        assert await trio.to_thread.run_sync(controller.stop) == 0


def upgrade_status(port: int, authorization: str | None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    if authorization:
        headers["Authorization"] = authorization
    try:
        connection.request("GET", "/device", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def api_without_token(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/devices", timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        with e:  # it holds the response's socket
            return e.code, json.loads(e.read() or b"{}")
