"""The cloud control channel end to end: a controller (trio-websocket, here in the test) drives the real
appliance, which pushes to a real nginx-rtmp ingest; losing the controller never leaves an orphan stream."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from tests.harness import http_get
from tests.integration.rtmp_peers import camera_appliance, free_port, nginx_ingest, probe

pytestmark = pytest.mark.peers

TOKEN = "t0ken-for-tests"


class Controller:
    """Accepts device connections and hands every message to the test."""

    def __init__(self) -> None:
        self.send, self.messages = trio.open_memory_channel[dict[str, Any]](1000)
        self.sockets: list[WebSocketConnection] = []
        self.auth: list[str | None] = []

    async def handler(self, request: WebSocketRequest) -> None:
        self.auth.append(dict(request.headers).get(b"authorization", b"").decode() or None)
        ws = await request.accept()
        self.sockets.append(ws)
        try:
            while True:
                await self.send.send(json.loads(await ws.get_message()))
        except ConnectionClosed:
            pass

    async def next(self, match: Callable[[dict[str, Any]], bool], within: float = 30) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                msg = await self.messages.receive()
                if match(msg):
                    return msg

    async def say(self, **msg: Any) -> None:
        await self.sockets[-1].send_message(json.dumps({"timestamp": 0, **msg}))


def of(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


async def test_cloud_stream_starts_keeps_alive_and_dies_with_its_controller(tmp_path: Path) -> None:
    controller = Controller()
    ingest_port, ws_port = free_port(), free_port()
    url = f"rtmp://127.0.0.1:{ingest_port}/ingest/s1-key"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_websocket, controller.handler, "127.0.0.1", ws_port, None)
        with nginx_ingest(tmp_path / "ingest", ingest_port):
            app = camera_appliance(
                tmp_path,
                f"""
[cloud]
url = "ws://127.0.0.1:{ws_port}/device"
token = "{TOKEN}"
device_id = "north-gate"
deadman = "3s"
heartbeat = "1s"
""",
            )
            try:
                hello = await controller.next(of("hello"))
                assert hello["deviceId"] == "north-gate" and "rtmps" in hello["capabilities"]
                assert controller.auth[-1] == f"Bearer {TOKEN}"
                beat = await controller.next(of("device_status"))
                assert beat["uptime"] > 0 and beat["streams"] == [] and isinstance(beat["health"], str)

                await controller.say(type="start_rtmp_stream", streamId="s1", appId="cam-app", rtmpUrl=url)
                keeping = trio.CancelScope()

                async def keep_alive() -> None:  # what a controller does every keep-alive period
                    with keeping:
                        for n in range(1000):
                            await controller.say(type="keep_rtmp_stream_alive", streamId="s1", ackId=f"a{n}")
                            await trio.sleep(1)

                nursery.start_soon(keep_alive)
                await controller.next(of("rtmp_stream_status", streamId="s1", status="streaming"))
                # With each heartbeat the device reports what it really pushes, and how fast.
                report = await controller.next(
                    lambda m: (
                        of("rtmp_stream_status", streamId="s1")(m) and m.get("stats", {}).get("fps", 0) > 0
                    )
                )
                assert report["stats"]["bitrate"] > 10_000 and report["stats"]["duration"] > 0
                assert report["media"]["video"]["width"] == 320 and report["media"]["audio"]["codec"] == "aac"
                await controller.next(of("keep_alive_ack", streamId="s1", ackId="a1"))
                # Kept alive past its 3 s dead-man time, it streams on.
                assert await trio.to_thread.run_sync(probe, url) == ["aac", "h264,320,240"]
                # A stale keep-alive for another stream is answered with an error, and changes nothing.
                await controller.say(type="keep_stream_alive", streamId="old", ackId="a0")
                stale = await controller.next(of("rtmp_stream_status", streamId="old"))
                assert stale["status"] == "error" and "old" in stale["errorDetails"]
                await controller.say(type="no_such_thing")
                assert "no_such_thing" in (await controller.next(of("error")))["message"]

                # The controller's socket dies and nobody keeps the stream alive: the device reconnects,
                # re-announces the stream, and its dead-man timer stops the push (no orphan at the ingest).
                keeping.cancel()
                await controller.sockets[-1].aclose()
                await controller.next(of("hello"))
                announced = await controller.next(of("rtmp_stream_status", streamId="s1"))
                assert announced["status"] == "streaming"
                await controller.next(of("rtmp_stream_status", streamId="s1", status="timeout"), within=10)
                line = await trio.to_thread.run_sync(lambda: app.event("cloud.push_stopped"))
                assert "no keep-alive" in line["reason"]
                with pytest.raises(subprocess.CalledProcessError):
                    await trio.to_thread.run_sync(probe, url)  # the ingest saw the publisher leave
                base = await trio.to_thread.run_sync(app.web_url)
                status = http_get(base + "/api/status")[1]
                assert status["cloud"]["stream"] is None and status["cloud"]["connects"] >= 2
                assert TOKEN not in app.log_text() and "s1-key" not in app.log_text()
            finally:
                assert await trio.to_thread.run_sync(app.stop) == 0
        nursery.cancel_scope.cancel()
