"""The ASGI app: the web child's own endpoints plus whatever subsystems registered.

``GET /api/health``: 200 ``{"status": "ok"}`` while the supervision tree is healthy (non-critical
children that are down are listed under ``"degraded"``), 503 with the failing critical children
otherwise, or while the appliance is still starting.
``GET /api/status``: version, uptime, device, the supervisor snapshot and the effective config.
Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from appliance.supervisor import SupervisorSnapshot
from appliance.web.auth import Security, SecurityMiddleware
from appliance.web.openapi import openapi_document
from appliance.web.routes import RouteRegistry

__all__ = ["StatusSource", "create_app", "health_body", "problem"]


class StatusSource(Protocol):
    """What the web app reads from the running appliance (appliance.app.Appliance provides it)."""

    version: str
    device_name: str
    routes: RouteRegistry

    def uptime_s(self) -> float: ...
    def snapshot(self) -> SupervisorSnapshot: ...
    def status_extra(self) -> Mapping[str, Any]: ...


def problem(status: int, title: str, detail: str = "", **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def health_body(snap: SupervisorSnapshot) -> tuple[int, dict[str, Any]]:
    """``GET /api/health``'s status code and body (the status page's live feed shows the same)."""
    degraded = [path for path, c in snap.walk() if c.degraded and not c.critical]
    if snap.healthy and snap.all_ready():
        body: dict[str, Any] = {"status": "ok"}
        if degraded:
            body["degraded"] = degraded
        return 200, body
    if snap.escalated:
        state, failing = "failed", [snap.escalated]
    elif not snap.all_ready():
        state, failing = "starting", [c.name for c in snap.children if c.critical and not c.ready]
    else:
        state, failing = "unhealthy", snap.failing()
    return 503, {"status": state, "failing": failing, "degraded": degraded}


def create_app(source: StatusSource, *, security: Security | None = None) -> Starlette:
    """Build the app; registry routes are looked up per request, so they may change while serving.

    ``security`` (appliance.web.auth) decides who may read and act; by default the ``[web]`` defaults:
    public reads, no password (so no actions), Host names of this machine only.
    """
    security = security if security is not None else Security(names=[source.device_name])

    async def health(request: Request) -> Response:
        code, body = health_body(source.snapshot())
        return JSONResponse(body, status_code=code)

    async def status(request: Request) -> Response:
        snap = source.snapshot()
        body: dict[str, Any] = {
            "version": source.version,
            "device": source.device_name,
            "uptime_s": round(source.uptime_s(), 3),
            "healthy": snap.healthy,
            "supervisor": snap.to_dict(),
            "routes": source.routes.describe(),
        }
        body.update(source.status_extra())
        return JSONResponse(body)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc.detail or ""))

    async def server_error(request: Request, exc: Exception) -> Response:
        return problem(500, "Internal Server Error", f"{type(exc).__name__} while serving {request.url.path}")

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(source.version))

    handlers: dict[Any, Callable[..., Any]] = {HTTPException: http_error, 500: server_error}
    app = Starlette(
        routes=[
            Route("/api/health", health, methods=["GET"]),
            Route("/api/status", status, methods=["GET"]),
            Route("/api/openapi.json", openapi, methods=["GET"]),
            *security.routes(),
            Mount("", app=source.routes.router),
        ],
        exception_handlers=handlers,
        middleware=[Middleware(SecurityMiddleware, security=security)],
    )
    app.state.security = security
    security.bind(app.router)
    return app


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    421: "Misdirected Request",
    429: "Too Many Requests",
}
