"""The status page's files: ``GET /`` (``index.html``), ``GET /watch/{stream}`` (``watch.html``, the WHEP
player) and ``GET /static/{file}`` (their scripts and styles).

The files ship inside the package (``appliance/web/static/``: no build step, nothing from other sites)
and are read once, at registration. Only the files that are there are served (a fixed table, so no path
from a request ever reaches the file system). Caching: ``Cache-Control: no-cache`` with a strong ``ETag``
(a hash of the content): the browser keeps its copy and asks each time with ``If-None-Match``, getting
304 until an update changes the file, so a new version shows at the next load without stale mixes of old
script and new page. The page gets a Content-Security-Policy that allows only its own origin, which
keeps anything that slipped into its text from running.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from appliance.web.app import problem
from appliance.web.routes import RouteRegistry

__all__ = ["CSP", "STATIC_DIR", "StaticFile", "etag_matches", "load_static", "register_page"]

STATIC_DIR = Path(__file__).parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The player may be framed by the status page (its live previews), and by nothing else.
PLAYER_CSP = CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file, in memory, with its type and entity tag."""

    body: bytes
    media_type: str
    etag: str

    def response(self, request: Request, *, page: bool = False, csp: str = CSP) -> Response:
        """200 with the file, or 304 when the browser's copy (``If-None-Match``) is this version."""
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if page:
            headers["Content-Security-Policy"] = csp
        if etag_matches(request.headers.get("if-none-match", ""), self.etag):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 section 13.1.2: weak comparison)."""
    if if_none_match.strip() == "*":
        return True
    return etag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of a known type directly in ``directory``, by name.

    Raises:
        OSError: the directory can't be read (a broken install).
    """
    out = {}
    for path in sorted(directory.iterdir()):
        media_type = _TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        out[path.name] = StaticFile(
            body=body, media_type=media_type, etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        )
    return out


def register_page(routes: RouteRegistry, *, owner: str = "web", directory: Path = STATIC_DIR) -> None:
    """Serve ``/`` and ``/static/{file}`` from ``directory`` (read now)."""
    files = load_static(directory)
    index = files["index.html"]
    player = files["watch.html"]

    async def page(request: Request) -> Response:
        return index.response(request, page=True)

    async def static(request: Request) -> Response:
        name = request.path_params["file"]
        found = files.get(name)
        if found is None:
            return problem(404, "Not Found", f"no static file {name!r}")
        return found.response(request)

    async def watch(request: Request) -> Response:
        return player.response(request, page=True, csp=PLAYER_CSP)

    routes.add_route("/", page, methods=["GET"], owner=owner)
    routes.add_route("/static/{file}", static, methods=["GET"], owner=owner)
    # The WHEP player: one page for every stream (it reads the name from its own URL). Without the
    # webrtc extra it says why it cannot play (the WHEP endpoint's 503 problem).
    routes.add_route("/watch/{stream:path}", watch, methods=["GET"], owner=owner)
