"""The web child in-process: real hypercorn on 127.0.0.1:0, real HTTP requests from a thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import partial
from typing import Any

import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from appliance.config import Address
from appliance.supervisor import ChildSpec, Supervisor, SupervisorSnapshot
from appliance.web import RouteRegistry, create_app, serve_web


def fetch(url: str, method: str = "GET") -> tuple[int, str, Any]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("content-type", ""), json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), json.loads(e.read() or b"null")


async def get(url: str, method: str = "GET") -> tuple[int, str, Any]:
    return await trio.to_thread.run_sync(partial(fetch, url, method))


class Source:
    version = "9.9.9"
    device_name = "unit"

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.routes = RouteRegistry()

    def uptime_s(self) -> float:
        return 12.5

    def snapshot(self) -> SupervisorSnapshot:
        return self.sup.snapshot()

    def status_extra(self) -> Mapping[str, Any]:
        return {"extra": True}


async def up(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def down(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    raise OSError("device vanished")


async def serve(nursery: trio.Nursery, source: Source) -> str:
    urls: list[str] = await nursery.start(serve_web, create_app(source), Address("127.0.0.1", 0))
    assert urls[0].startswith("http://127.0.0.1:")
    return urls[0]


async def test_health_ok_and_status() -> None:
    sup = Supervisor(
        "root", [ChildSpec(name="relay", factory=up, critical=True), ChildSpec(name="capture", factory=up)]
    )
    source = Source(sup)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        assert await get(base + "/api/health") == (200, "application/json", {"status": "ok"})
        code, _, status = await get(base + "/api/status")
        assert code == 200
        assert status["version"] == "9.9.9" and status["device"] == "unit" and status["uptime_s"] == 12.5
        assert status["extra"] is True and status["healthy"] is True
        names = [c["name"] for c in status["supervisor"]["children"]]
        assert names == ["relay", "capture"]
        nursery.cancel_scope.cancel()


async def test_health_503_names_failing_critical_child_and_degraded_ones() -> None:
    sup = Supervisor(
        "root",
        [
            ChildSpec(name="web", factory=up, critical=True),
            ChildSpec(name="relay", factory=down, critical=True, grace_s=0.0),
            ChildSpec(name="capture", factory=down),
        ],
        max_restarts=1000,
    )
    source = Source(sup)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        code, ctype, body = await get(base + "/api/health")
        assert code == 503 and ctype == "application/json"
        assert body["status"] in ("unhealthy", "starting")
        assert "relay" in body["failing"] and "web" not in body["failing"]
        assert body["degraded"] == ["capture"]
        nursery.cancel_scope.cancel()


async def test_degraded_is_still_200() -> None:
    sup = Supervisor(
        "root", [ChildSpec(name="web", factory=up, critical=True), ChildSpec(name="capture", factory=down)]
    )
    source = Source(sup)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        assert await get(base + "/api/health") == (
            200,
            "application/json",
            {"status": "ok", "degraded": ["capture"]},
        )
        nursery.cancel_scope.cancel()


async def test_route_registry_adds_and_removes_routes_while_serving() -> None:
    sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True)])
    source = Source(sup)

    async def streams(request: Request) -> JSONResponse:
        return JSONResponse({"streams": [], "by": "relay"})

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        code, ctype, body = await get(base + "/api/streams")
        assert code == 404 and ctype == "application/problem+json" and body["status"] == 404
        source.routes.add_route("/api/streams", streams, methods=["GET"], owner="relay")
        assert await get(base + "/api/streams") == (200, "application/json", {"streams": [], "by": "relay"})
        code, _, body = await get(base + "/api/streams", method="DELETE")
        assert code == 405 and body["title"] == "Method Not Allowed"
        with pytest.raises(ValueError, match="already registered by relay"):
            source.routes.add_route("/api/streams", streams, methods=["GET"], owner="webrtc")
        assert source.routes.describe() == [
            {"path": "/api/streams", "methods": ["GET", "HEAD"], "owner": "relay"}
        ]
        assert source.routes.remove_owner("relay") == 1
        assert (await get(base + "/api/streams"))[0] == 404
        nursery.cancel_scope.cancel()


async def test_handler_error_is_a_problem_document() -> None:
    sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True)])
    source = Source(sup)

    async def boom(request: Request) -> JSONResponse:
        raise KeyError("oops")

    source.routes.add_route("/boom", boom, owner="test")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        code, ctype, body = await get(base + "/boom")
        assert code == 500 and ctype == "application/problem+json"
        assert body["detail"] == "KeyError while serving /boom"
        nursery.cancel_scope.cancel()


async def test_port_in_use_is_an_error_for_the_supervisor() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sup = Supervisor("root", [])
        with pytest.raises(
            OSError, match=f"web.listen=127.0.0.1:{port}: cannot listen: Address already in use"
        ):
            await serve_web(create_app(Source(sup)), Address("127.0.0.1", port))


async def test_degraded_names_nested_children_by_path() -> None:
    from appliance.supervisor import DynamicSupervisor

    egress = DynamicSupervisor("egress")
    sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True), egress.as_child()])
    source = Source(sup)

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise ConnectionResetError("ingest hung up")

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        base = await serve(nursery, source)
        await egress.start_child(ChildSpec(name="push-yt", factory=flaky))
        code, _, body = await get(base + "/api/health")
        assert (code, body) == (200, {"status": "ok", "degraded": ["egress/push-yt"]})
        nursery.cancel_scope.cancel()
