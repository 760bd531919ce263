"""``GET /api/streams/{app}/{key}/snapshot.jpg``: a stream's newest keyframe as a JPEG.

200 ``image/jpeg`` with ``Cache-Control: no-store`` (the page refreshes it); ``?width=N`` scales it down
(never up). 404 problem for an unknown stream; 503 problem with ``Retry-After`` while the stream has no
keyframe yet (no producer, or not since it joined); 501 for a video codec snapshots don't decode; 400 for a
bad ``width``. The work and its cache are `appliance.media.snapshot.Snapshots`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from appliance.bus import BusRegistry
from appliance.media.snapshot import (
    NoKeyframeError,
    Snapshots,
    UnknownStreamError,
    UnsupportedCodecError,
    parse_width,
)
from appliance.web.app import problem
from appliance.web.auth import read_access
from appliance.web.routes import RouteRegistry

__all__ = ["RETRY_AFTER_S", "register_snapshots"]

RETRY_AFTER_S = 2  # about one GOP: the next keyframe is due by then


def register_snapshots(routes: RouteRegistry, buses: BusRegistry, *, owner: str = "web") -> Snapshots:
    """Serve the snapshot endpoint for ``buses``.

    Returns:
        The snapshot service (its ``decodes`` counter shows the cache at work).
    """
    snapshots = Snapshots(buses)

    async def snapshot(request: Request) -> Response:
        if (refusal := read_access(request)) is not None:
            return refusal
        name = f"{request.path_params['app']}/{request.path_params['key']}"
        try:
            width = parse_width(request.query_params.get("width"))
        except ValueError as e:
            return problem(400, "Bad Request", str(e))
        try:
            jpeg = await snapshots.jpeg(name, width)
        except UnknownStreamError:
            return problem(404, "Not Found", f"no stream {name!r}; GET /api/streams lists them")
        except NoKeyframeError as e:
            response = problem(503, "Service Unavailable", f"{e}; try again shortly")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except UnsupportedCodecError as e:
            return problem(501, "Not Implemented", str(e))
        return Response(
            jpeg.data,
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Snapshot-Dts-Ms": str(jpeg.dts_ms)},
        )

    routes.add_route("/api/streams/{app}/{key}/snapshot.jpg", snapshot, methods=["GET"], owner=owner)
    return snapshots
