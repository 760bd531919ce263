"""The action endpoints (restart a subsystem, start/stop recording, ask for a keyframe) and one stream.

Handlers are thin: they check access (:func:`appliance.web.auth.require_action`; the middleware has
already applied the same rule), parse the request, call the :class:`ActionTarget` (the Appliance) and
turn its answer or its exception into JSON or a problem document:

- ``POST /api/children/{path}/restart``: 200 with the child's state once it is back (or failed its first
  attempt); 202 for ``web`` itself, which restarts just after answering; 404 for an unknown path.
- ``POST /api/streams/{app}/{key}/record`` {"action": "start"|"stop"}: 200 with the stream's recording
  state; 404 for an unknown stream; 409 while the recorder is not running.
- ``POST /api/streams/{app}/{key}/keyframe``: 202 once asked; 409 when nobody can be asked (a stream
  published over RTMP: the protocol has no way to ask the publisher).
- ``GET /api/streams/{app}/{key}``: one item of ``GET /api/streams``; 404 when unknown.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appliance.web.app import problem
from appliance.web.auth import read_access, require_action
from appliance.web.routes import RouteRegistry

__all__ = ["ActionRefused", "ActionTarget", "add_action_routes"]

_MAX_BODY = 4096


class ActionRefused(Exception):
    """The action can't be done now (409); the message says why."""


class ActionTarget(Protocol):
    """What the action endpoints call (appliance.app.Appliance provides it)."""

    def stream_item(self, name: str) -> dict[str, Any] | None:
        """One stream as ``GET /api/streams`` lists it, or None."""
        ...

    async def restart_child(self, path: str) -> dict[str, Any]:
        """Restart the child at ``path`` (``capture``, ``egress/push:x``); returns its state afterwards,
        with ``"deferred": true`` when the restart happens after the answer. KeyError: no such child."""
        ...

    async def record_stream(self, name: str, start: bool) -> dict[str, Any]:
        """Start or stop recording a stream; returns its recording state. KeyError: no such stream;
        ActionRefused: the recorder isn't running."""
        ...

    def request_keyframe(self, name: str) -> dict[str, Any]:
        """Ask the stream's encoder for a keyframe. KeyError: no such stream; ActionRefused: nobody to
        ask."""
        ...


def add_action_routes(routes: RouteRegistry, target: ActionTarget, *, owner: str = "web") -> None:
    """Register the action endpoints and ``GET /api/streams/{app}/{key}`` on behalf of ``owner``."""

    async def stream(request: Request) -> Response:
        if (refusal := read_access(request)) is not None:
            return refusal
        name = _stream_name(request)
        item = target.stream_item(name)
        if item is None:
            return problem(404, "Not Found", f"no stream {name!r}; GET /api/streams lists them")
        return JSONResponse(item)

    async def restart(request: Request) -> Response:
        if (refusal := require_action(request)) is not None:
            return refusal
        path = request.path_params["path"]
        try:
            body = await target.restart_child(path)
        except KeyError:
            return problem(404, "Not Found", f"no child {path!r}; /api/status lists the supervision tree")
        except ActionRefused as e:
            return problem(409, "Conflict", str(e))
        return JSONResponse(body, status_code=202 if body.get("deferred") else 200)

    async def record(request: Request) -> Response:
        if (refusal := require_action(request)) is not None:
            return refusal
        doc = await _json_body(request)
        action = doc.get("action") if isinstance(doc, dict) else None
        if action not in ("start", "stop"):
            return problem(400, "Bad Request", 'want a JSON body {"action": "start"} or {"action": "stop"}')
        name = _stream_name(request)
        try:
            body = await target.record_stream(name, action == "start")
        except KeyError:
            return problem(404, "Not Found", f"no stream {name!r}; GET /api/streams lists them")
        except ActionRefused as e:
            return problem(409, "Conflict", str(e))
        return JSONResponse(body)

    async def keyframe(request: Request) -> Response:
        if (refusal := require_action(request)) is not None:
            return refusal
        name = _stream_name(request)
        try:
            body = target.request_keyframe(name)
        except KeyError:
            return problem(404, "Not Found", f"no stream {name!r}; GET /api/streams lists them")
        except ActionRefused as e:
            return problem(409, "Conflict", str(e))
        return JSONResponse(body, status_code=202)

    # Stream names are "app/key": two path segments, so these never shadow other helpers' routes under
    # /api/streams/{name:path}/... (snapshot.jpg and the like).
    routes.add_route("/api/streams/{app}/{key}", stream, methods=["GET"], owner=owner)
    routes.add_route("/api/streams/{app}/{key}/record", record, methods=["POST"], owner=owner)
    routes.add_route("/api/streams/{app}/{key}/keyframe", keyframe, methods=["POST"], owner=owner)
    routes.add_route("/api/children/{path:path}/restart", restart, methods=["POST"], owner=owner)


def _stream_name(request: Request) -> str:
    return f"{request.path_params['app']}/{request.path_params['key']}"


async def _json_body(request: Request) -> object:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            return None
    try:
        return json.loads(body)
    except ValueError:
        return None
