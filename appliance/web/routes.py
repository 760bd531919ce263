"""The route registry: how subsystems add endpoints to the web app without the web package importing them.

The relay adds ``/api/streams``, the WebRTC subsystem ``/whep`` and ``/whip``: each calls
:meth:`RouteRegistry.add_route` (or :meth:`mount`) with its own handlers. Routes may be added and removed
while the server runs; the registry's router is consulted on every request after the web app's own routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp

__all__ = ["RouteRegistry"]


class RouteRegistry:
    """Endpoints contributed by subsystems, each tagged with the subsystem that owns it."""

    def __init__(self) -> None:
        self.router = Router()
        self._owners: dict[int, str] = {}

    def _add(self, route: BaseRoute, owner: str) -> None:
        path = getattr(route, "path", None)
        for existing in self.router.routes:
            if getattr(existing, "path", None) == path and _methods(existing) & _methods(route):
                raise ValueError(f"route {path} is already registered by {self._owners[id(existing)]}")
        self.router.routes.append(route)
        self._owners[id(route)] = owner

    def add_route(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str] | None = None,
        owner: str,
        name: str | None = None,
    ) -> None:
        """Serve ``endpoint`` (a starlette request handler) at ``path`` on behalf of subsystem ``owner``.

        Raises:
            ValueError: another subsystem already serves that path with one of those methods.
        """
        self._add(Route(path, endpoint, methods=list(methods) if methods else None, name=name), owner)

    def add_websocket_route(self, path: str, endpoint: Callable[..., Any], *, owner: str) -> None:
        self._add(WebSocketRoute(path, endpoint), owner)

    def mount(self, path: str, app: ASGIApp, *, owner: str) -> None:
        """Hand everything under ``path`` to another ASGI app."""
        self._add(Mount(path, app=app), owner)

    def remove_owner(self, owner: str) -> int:
        """Drop every route of ``owner`` (a subsystem being disabled); returns how many went."""
        keep = [r for r in self.router.routes if self._owners.get(id(r)) != owner]
        gone = len(self.router.routes) - len(keep)
        for r in self.router.routes:
            if self._owners.get(id(r)) == owner:
                del self._owners[id(r)]
        self.router.routes[:] = keep
        return gone

    def describe(self) -> list[dict[str, object]]:
        """Path, methods and owner of each registered route (for /api/status)."""
        return [
            {"path": getattr(r, "path", ""), "methods": sorted(_methods(r)), "owner": self._owners[id(r)]}
            for r in self.router.routes
        ]


def _methods(route: BaseRoute) -> set[str]:
    if isinstance(route, Route):
        return set(route.methods or ())
    if isinstance(route, WebSocketRoute):
        return {"WEBSOCKET"}
    return {"*"}
