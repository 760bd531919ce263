"""The recordings endpoints: list, download the FLV, play it as MP4 remuxed on the fly.

- ``GET /api/recordings``: ``{"recordings": [...], "disk": {...}}``, newest first. Each recording:
  ``file`` (its id, ``app/key/YYYYmmdd-HHMMSS-SEQ.flv``, the path under the recordings directory),
  ``stream``, ``size_bytes``, ``duration_s`` (onMetaData, else the last tag's time; null if unreadable),
  ``started`` (ISO 8601 UTC, as the clock had it), ``download_url`` and ``mp4_url``. ``disk``: the file
  system holding the recordings (``used_bytes``, ``free_bytes``, ``total_bytes``) and ``recordings_bytes``.
- ``GET /api/recordings/{file}``: the FLV as an attachment.
- ``GET /api/recordings/{file}/mp4``: the same recording as fragmented MP4 (`appliance.media.remux`),
  streamed while it is made, for a ``<video>`` element.

A ``file`` that is not exactly ``app/key/NAME.flv`` with the recorder's segment name (``..``, absolute
paths, other files, symlinks out of the directory) is refused with 400 before the file system is touched;
a well-formed one that does not exist is 404. Streams whose key is an RTMP secret are not listed (the
key would show in the file name) and their files are 404, as the rest of the API hides them.

Durations are read once per file version (path, size, mtime) and cached. Listing, durations and the remux
run in worker threads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from appliance.config import Config
from appliance.log import quote as log_quote
from appliance.media.bus_events import validate_bus_name
from appliance.media.recording_files import Recording, scan_recordings
from appliance.media.remux import RemuxError, flv_duration_s, probe_flv, remux_to_fmp4
from appliance.web.app import problem
from appliance.web.auth import read_access
from appliance.web.metrics import hidden_stream
from appliance.web.routes import RouteRegistry

__all__ = [
    "BadRecordingNameError",
    "DurationCache",
    "RecordingsSource",
    "disk_usage",
    "list_recordings",
    "register_recordings",
    "resolve_recording",
]

log = logging.getLogger("appliance.web")

_SEGMENT = re.compile(r"\d{8}-\d{6}-\d+\.flv")
_MAX_DURATIONS = 8192
_REMUX_CHUNK = 256 * 1024


class BadRecordingNameError(ValueError):
    """A recording id that is not ``app/key/NAME.flv``."""


class RecordingsSource(Protocol):
    """What the recordings endpoints read (`appliance.app.Appliance` provides it)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def state_dir(self) -> Path: ...


def _secrets(cfg: Config) -> dict[str, tuple[str, ...]]:
    return {app: (*auth.publish, *auth.play) for app, auth in cfg.rtmp.auth.items()}


def resolve_recording(root: Path, file_id: str) -> Path:
    """The path of recording ``file_id`` under ``root``, or an error for anything else.

    Args:
        root: The recordings directory.
        file_id: ``app/key/YYYYmmdd-HHMMSS-SEQ.flv``.

    Returns:
        ``root/app/key/NAME.flv`` (it may not exist).

    Raises:
        BadRecordingNameError: Not of that form (which rules out ``..``, absolute paths and other files).
    """
    parts = file_id.split("/")
    if len(parts) != 3 or not _SEGMENT.fullmatch(parts[2]):
        raise BadRecordingNameError(f"file={file_id[:120]!r}: want app/key/YYYYmmdd-HHMMSS-SEQ.flv")
    if not _stream_name(f"{parts[0]}/{parts[1]}"):
        raise BadRecordingNameError(f"file={file_id[:120]!r}: not a stream's recording")
    return root.joinpath(*parts)


def _stream_name(name: str) -> bool:
    try:
        validate_bus_name(name)
    except ValueError:
        return False
    return True


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` really is a regular file under ``root`` (no symlink leads out of it)."""
    try:
        real = path.resolve(strict=True)
        return real.is_relative_to(root.resolve(strict=True)) and real.is_file()
    except OSError:
        return False


class DurationCache:
    """Recording durations by (path, size, mtime): a file is read once per version. Thread-safe enough:
    only ever used from one worker thread at a time (the listing's limiter)."""

    def __init__(
        self, read: Callable[[Path], float | None] = flv_duration_s, size: int = _MAX_DURATIONS
    ) -> None:
        self._read = read
        self._size = size
        self._known: OrderedDict[tuple[str, int, float], float | None] = OrderedDict()
        self.reads = 0

    def duration_s(self, rec: Recording) -> float | None:
        key = (str(rec.path), rec.size_bytes, rec.mtime)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        value = self._read(rec.path)
        self.reads += 1
        self._known[key] = value
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return value


def disk_usage(root: Path) -> dict[str, int]:
    """The file system holding ``root`` (or its nearest existing parent): used, free and total bytes."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return {"used_bytes": usage.used, "free_bytes": usage.free, "total_bytes": usage.total}


def list_recordings(
    root: Path,
    durations: DurationCache,
    *,
    base_url: str = "/api/recordings",
    secrets: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The ``GET /api/recordings`` body's two parts (blocking: file system reads).

    Args:
        root: The recordings directory (it may not exist yet: no recordings).
        durations: The duration cache.
        base_url: Where the endpoints are served.
        secrets: Per app, the RTMP secrets: streams keyed by one are left out.

    Returns:
        (recordings newest first, disk usage with ``recordings_bytes``).
    """
    out: list[dict[str, Any]] = []
    total = 0
    for rec in reversed(scan_recordings(root)):
        if not _stream_name(rec.stream) or hidden_stream(rec.stream, secrets or {}):
            continue  # not the recorder's (it only makes valid names), or a key that is a secret
        file_id = f"{rec.stream}/{rec.path.name}"
        url = f"{base_url}/{quote(file_id, safe='/')}"
        total += rec.size_bytes
        out.append(
            {
                "file": file_id,
                "stream": rec.stream,
                "size_bytes": rec.size_bytes,
                "duration_s": durations.duration_s(rec),
                "started": rec.started_utc,
                "download_url": url,
                "mp4_url": url + "/mp4",
            }
        )
    disk = disk_usage(root)
    disk["recordings_bytes"] = total
    return out, disk


class _Fmp4Response(StreamingResponse):
    """The remux's output as it is made: a worker thread remuxes, this task sends, one chunk in flight.

    When the client goes away the thread stops at its next chunk (its hand-off raises `trio.Cancelled`).
    """

    def __init__(self, path: Path, limiter: trio.CapacityLimiter, headers: Mapping[str, str]) -> None:
        self._path = path
        self._limiter = limiter
        self._chunks, receive = trio.open_memory_channel[bytes](1)
        super().__init__(receive, media_type="video/mp4", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._remux)
            await super().__call__(scope, receive, send)
            nursery.cancel_scope.cancel()  # the client left before the end: stop the remux

    async def _remux(self) -> None:
        chunks = self._chunks

        def hand_over(chunk: bytes) -> None:
            trio.from_thread.run(chunks.send, chunk)

        async with chunks:
            try:
                sent = await trio.to_thread.run_sync(
                    partial(remux_to_fmp4, self._path, hand_over, chunk_bytes=_REMUX_CHUNK),
                    limiter=self._limiter,
                )
            except RemuxError as e:  # damaged after the probe: the response ends short
                log.warning(
                    "web.remux_failed file=%s error=%s", log_quote(self._path.name), log_quote(str(e))
                )
                return
            log.info("web.remuxed file=%s bytes=%d", log_quote(self._path.name), sent)


def register_recordings(routes: RouteRegistry, source: RecordingsSource, *, owner: str = "web") -> None:
    """Serve the recordings endpoints (see the module docstring) for ``source``'s recordings directory."""
    durations = DurationCache()
    listing = trio.CapacityLimiter(1)
    remuxes = trio.CapacityLimiter(2)

    def root() -> Path:
        return source.cfg.record.path(source.state_dir)

    async def find(request: Request) -> Path | Response:
        file_id = request.path_params["file"]
        cfg = source.cfg
        try:
            path = resolve_recording(root(), file_id)
        except BadRecordingNameError as e:
            return problem(400, "Bad Request", str(e))
        stream = file_id.rsplit("/", 1)[0]
        found = await trio.to_thread.run_sync(_inside, root(), path)
        if not found or hidden_stream(stream, _secrets(cfg)):
            return problem(404, "Not Found", f"no recording {file_id!r}; GET /api/recordings lists them")
        return path

    async def recordings(request: Request) -> Response:
        if (refusal := read_access(request)) is not None:
            return refusal
        base = request.scope.get("root_path", "") + "/api/recordings"
        items, disk = await trio.to_thread.run_sync(
            partial(list_recordings, root(), durations, base_url=base, secrets=_secrets(source.cfg)),
            limiter=listing,
        )
        return JSONResponse({"recordings": items, "disk": disk}, headers={"Cache-Control": "no-store"})

    async def download(request: Request) -> Response:
        if (refusal := read_access(request)) is not None:
            return refusal
        path = await find(request)
        if isinstance(path, Response):
            return path
        stream = request.path_params["file"].rsplit("/", 1)[0]
        return FileResponse(
            path,
            media_type="video/x-flv",
            filename=f"{stream.replace('/', '-')}-{path.name}",
            content_disposition_type="attachment",
            stat_result=await trio.to_thread.run_sync(os.stat, path),
        )

    async def mp4(request: Request) -> Response:
        if (refusal := read_access(request)) is not None:
            return refusal
        path = await find(request)
        if isinstance(path, Response):
            return path
        try:
            # Before any byte goes out: a file PyAV can't read gets a problem document, not a cut body.
            await trio.to_thread.run_sync(probe_flv, path, limiter=remuxes)
        except RemuxError as e:
            return problem(422, "Unprocessable Content", str(e))
        stream = request.path_params["file"].rsplit("/", 1)[0]
        name = f"{stream.replace('/', '-')}-{path.stem}.mp4"
        headers = {"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"}
        if request.method == "HEAD":
            return Response(media_type="video/mp4", headers=headers)
        return _Fmp4Response(path, remuxes, headers)

    # The /mp4 route first: {file:path} would otherwise take "x.flv/mp4" as a file id.
    routes.add_route("/api/recordings", recordings, methods=["GET"], owner=owner)
    routes.add_route("/api/recordings/{file:path}/mp4", mp4, methods=["GET"], owner=owner)
    routes.add_route("/api/recordings/{file:path}", download, methods=["GET"], owner=owner)
