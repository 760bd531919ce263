"""The reference fleet controller (``appliance controller``): the cloud side of the control channel.

A thin trio driver around `StreamLifecycleController` (appliance/cloud/fleet.py), serving on one port:

- ``/device`` (WebSocket): devices connect out to it with their bearer token and speak the protocol of
  appliance/cloud/protocol.py. Each connection has a bounded outbox drained by its own writer task, so
  the sans-IO core's actions are applied synchronously and one slow device never holds up another.
- ``/api/...`` (JSON, errors as RFC 9457 problem documents): list devices and streams, start a stream
  on a device, stop it, read its status and the controller's counters.

Two adapters consume the core's events. ``unmanaged`` streams push to a URL the caller gives.
``managed`` streams push to the controller's own embedded RTMP relay (the appliance's relay code) under
a fresh key with a per-stream publish secret; viewers play the returned play URL, and the ingest (its
secret, its publisher and its players) is removed when the stream stops or times out.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from appliance import __version__
from appliance.bus import BusRegistry
from appliance.cloud.fleet import (
    Action,
    Close,
    Conflict,
    Ended,
    Log,
    SendTo,
    StartRefused,
    StartRequest,
    Stream,
    StreamLifecycleController,
    Timing,
)
from appliance.config import Address, RtmpConfig
from appliance.log import quote
from appliance.media.rtmp.server import RtmpServer
from appliance.web.app import problem
from appliance.web.server import serve_web

__all__ = ["Controller", "ControllerSettings", "ManagedIngest"]

log = logging.getLogger("appliance.controller")

_OUTBOX = 256  # messages queued for one device; a device that lets this fill is disconnected
_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_KEY_RE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_BODY = 16 * 1024
DEFAULT_LISTEN = Address("127.0.0.1", 8700)
DEFAULT_RTMP_LISTEN = Address("127.0.0.1", 1936)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """How the controller runs.

    Attributes:
        listen: The HTTP API and the devices' WebSocket.
        rtmp_listen: The managed ingest's RTMP relay, or None for no managed streams.
        public_host: The host in the URLs handed out (devices push to it, viewers play from it);
            default the RTMP listen host.
        device_tokens: Bearer token -> the device id it belongs to (None: any device id). Empty: no
            authentication, allowed only when `listen` is a loopback address.
        api_token: Bearer token for the operator API; empty: the API is open (loopback only).
        timing: The keep-alive contract.
        managed_app: The RTMP app managed streams live under.
    """

    listen: Address = DEFAULT_LISTEN
    rtmp_listen: Address | None = DEFAULT_RTMP_LISTEN
    public_host: str = ""
    device_tokens: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    api_token: str = ""
    timing: Timing = field(default_factory=Timing)
    managed_app: str = "managed"

    def __post_init__(self) -> None:
        if not _is_loopback(self.listen.host) and (not self.device_tokens or not self.api_token):
            raise ValueError(
                f"listen={self.listen}: not loopback, so device tokens and an API token are required"
            )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ManagedIngest:
    """The managed adapter: an embedded RTMP relay whose keys and publish secrets come and go."""

    def __init__(self, listen: Address, public_host: str, app: str) -> None:
        self.app = app
        self.public_host = public_host or listen.host
        cfg = RtmpConfig(listen=listen, apps=(app,), replace_publisher=True)
        self.buses = BusRegistry()
        self.server = RtmpServer(cfg, self.buses, authorise=self._authorise)
        self.port = listen.port
        self._keys: dict[str, tuple[str, str]] = {}  # stream_id -> (key, publish secret)

    def _authorise(
        self, role: str, app: str, name: str, query: Mapping[str, str], connect_query: Mapping[str, str]
    ) -> bool:
        if app != self.app:
            return False
        for key, secret in self._keys.values():
            if key == name:
                if role == "play":
                    return True
                offered = query.get("key") or connect_query.get("key") or ""
                return secrets.compare_digest(offered.encode(), secret.encode())
        return False

    def _base(self) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"rtmp://{host}:{self.port}/{self.app}"

    def open(self, stream_id: str) -> str:
        """Make an ingest for `stream_id`; returns the publish URL (with its secret) for the device."""
        key = f"{_KEY_RE.sub('_', stream_id)[:64]}-{secrets.token_hex(4)}"
        secret = secrets.token_urlsafe(18)
        self._keys[stream_id] = (key, secret)
        return f"{self._base()}/{key}?key={secret}"

    def play_url(self, stream_id: str) -> str | None:
        entry = self._keys.get(stream_id)
        return None if entry is None else f"{self._base()}/{entry[0]}"

    def describe(self, stream_id: str) -> dict[str, Any] | None:
        entry = self._keys.get(stream_id)
        if entry is None:
            return None
        bus = self.buses.get(f"{self.app}/{entry[0]}")
        return {"playUrl": self.play_url(stream_id), "publishing": bus is not None and bus.live}

    def close(self, stream_id: str, reason: str) -> None:
        """Remove the ingest: its secret stops working and its publisher and players are disconnected."""
        entry = self._keys.pop(stream_id, None)
        if entry is not None:
            self.server.drop_stream(f"{self.app}/{entry[0]}", reason)


class Controller:
    """The fleet controller process: WebSocket for devices, HTTP API for operators, managed ingest."""

    def __init__(self, settings: ControllerSettings) -> None:
        self.settings = settings
        self.core = StreamLifecycleController(settings.timing)
        self.ingest = (
            None
            if settings.rtmp_listen is None
            else ManagedIngest(settings.rtmp_listen, settings.public_host, settings.managed_app)
        )
        self.started = time.monotonic()
        self.bound: list[str] = []
        self._outboxes: dict[int, trio.MemorySendChannel[str]] = {}
        self._closing: dict[int, tuple[trio.CancelScope, list[str]]] = {}
        self._next_conn = 1
        self._changed = trio.Event()
        self.app = self._make_app()

    # --- running -----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started with the bound HTTP URLs."""
        self.core.wall_offset_s = time.time() - trio.current_time()
        async with trio.open_nursery() as nursery:
            if self.ingest is not None:
                await nursery.start(self.ingest.server.serve)
            nursery.start_soon(self._timers)
            self.bound = await nursery.start(
                partial(serve_web, self.app, self.settings.listen, graceful_s=1.0)
            )
            log.info(
                "controller.listening api=%s rtmp=%s",
                ",".join(self.bound),
                ",".join(str(a) for a in self.ingest.server.bound) if self.ingest else "off",
            )
            task_status.started(self.bound)

    async def _timers(self) -> None:
        while True:
            self._changed = trio.Event()
            deadline = self.core.get_timer()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._changed.wait()
                continue
            self.apply(self.core.handle_timer(trio.current_time()))

    def apply(self, actions: Sequence[Action]) -> None:
        """Carry out the core's actions; none of them waits."""
        for action in actions:
            match action:
                case SendTo(conn, text):
                    outbox = self._outboxes.get(conn)
                    if outbox is None:
                        continue
                    try:
                        outbox.send_nowait(text)
                    except trio.WouldBlock:
                        self._close(conn, f"outbox full ({_OUTBOX} messages): the device does not read")
                    except trio.BrokenResourceError:
                        pass
                case Close(conn, reason):
                    self._close(conn, reason)
                case Ended(stream_id, mode, state, reason):
                    if mode == "managed" and self.ingest is not None:
                        self.ingest.close(stream_id, f"stream {state}: {reason}")
                case Log(event, fields, level):
                    line = " ".join(f"{k}={quote(v)}" for k, v in fields.items())
                    log.log(logging.getLevelName(level.upper()), "%s %s", event, line)
        self._changed.set()

    def _close(self, conn: int, reason: str) -> None:
        entry = self._closing.get(conn)
        if entry is not None:
            entry[1].append(reason)
            entry[0].cancel()

    # --- the device socket -------------------------------------------------------------------------

    def _device_for_token(self, header: str | None) -> tuple[bool, str | None]:
        tokens = self.settings.device_tokens
        if not tokens:
            return True, None
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False, None
        for known, device_id in tokens.items():
            if secrets.compare_digest(known.encode(), token.encode()):
                return True, device_id
        return False, None

    async def _device_socket(self, ws: WebSocket) -> None:
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        ok, bound = self._device_for_token(ws.headers.get("authorization"))
        if not ok:
            log.warning(
                "controller.device_refused peer=%s reason=%s", peer, quote("bad or missing bearer token")
            )
            await ws.close(code=1008)  # before accept: the handshake is answered 403
            return
        await ws.accept()
        conn = self._next_conn
        self._next_conn += 1
        send, receive = trio.open_memory_channel[str](_OUTBOX)
        scope = trio.CancelScope()
        reasons: list[str] = []
        self._outboxes[conn] = send
        self._closing[conn] = (scope, reasons)
        log.info("controller.connection conn=%d peer=%s", conn, peer)
        self.apply(self.core.connected(conn, trio.current_time(), device_id=bound))
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, ws, receive, scope)
                    while True:
                        message = await ws.receive()
                        if message["type"] == "websocket.disconnect":
                            break
                        text = message.get("text")
                        if text is None:
                            text = (message.get("bytes") or b"").decode("utf-8", "replace")
                        self.apply(self.core.receive(conn, text, trio.current_time()))
                    nursery.cancel_scope.cancel()
        finally:
            del self._outboxes[conn], self._closing[conn]
            send.close()
            self.apply(self.core.disconnected(conn, trio.current_time()))
            log.info(
                "controller.connection_closed conn=%d reason=%s",
                conn,
                quote(reasons[0] if reasons else "closed"),
            )
        if reasons:
            with trio.move_on_after(2):
                try:
                    await ws.close(code=4000, reason=reasons[0][:120])
                except Exception as e:  # the socket may be gone already; the close is best effort
                    log.debug("controller.close_failed conn=%d error=%s", conn, quote(repr(e)))

    async def _writer(
        self, ws: WebSocket, outbox: trio.MemoryReceiveChannel[str], scope: trio.CancelScope
    ) -> None:
        try:
            async for text in outbox:
                await ws.send_text(text)
        except Exception:  # the peer went away mid-send: end the connection, the reader sees it too
            scope.cancel()
            raise

    # --- the operator API --------------------------------------------------------------------------

    def _make_app(self) -> Starlette:
        routes = [
            Route("/api/health", self._health, methods=["GET"]),
            Route("/api/status", self._status, methods=["GET"]),
            Route("/api/devices", self._devices, methods=["GET"]),
            Route("/api/devices/{device_id}", self._device, methods=["GET"]),
            Route("/api/devices/{device_id}/streams", self._start, methods=["POST"]),
            Route("/api/streams", self._streams, methods=["GET"]),
            Route("/api/streams/{stream_id}", self._stream, methods=["GET"]),
            Route("/api/streams/{stream_id}", self._stop, methods=["DELETE"]),
            WebSocketRoute("/device", self._device_socket),
        ]
        return Starlette(routes=routes)

    def _refused(self, request: Request) -> Response | None:
        token = self.settings.api_token
        if not token:
            return None
        scheme, _, offered = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(offered.encode(), token.encode()):
            return None
        return problem(401, "Unauthorized", "the controller's API wants Authorization: Bearer API_TOKEN")

    def _stream_json(self, stream: Stream) -> dict[str, Any]:
        body = stream.to_json()
        if stream.request.mode == "managed" and self.ingest is not None:
            ingest = self.ingest.describe(stream.stream_id)
            body["playUrl"] = None if ingest is None else ingest["playUrl"]
            body["ingestPublishing"] = bool(ingest and ingest["publishing"])
        return body

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _status(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        registry = self.core.registry
        timing = self.core.timing
        return JSONResponse(
            {
                "version": __version__,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "devices": len(registry.devices),
                "connected": sum(d.connected for d in registry.devices.values()),
                "activeStreams": len(registry.active_streams()),
                "counters": dict(self.core.counters),
                "timing": {
                    "keepalive_s": timing.keepalive_s,
                    "ack_timeout_s": timing.ack_timeout_s,
                    "max_missed": timing.max_missed,
                    "grace_s": timing.grace_s,
                },
                "managed": None if self.ingest is None else [str(a) for a in self.ingest.server.bound],
            }
        )

    async def _devices(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        registry = self.core.registry
        devices = [d.to_json(registry.active_stream(d.device_id)) for d in registry.devices.values()]
        return JSONResponse({"devices": devices})

    async def _device(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        registry = self.core.registry
        device = registry.devices.get(request.path_params["device_id"])
        if device is None:
            return problem(404, "Not Found", "no such device")
        active = registry.active_stream(device.device_id)
        body = device.to_json(active)
        body["stream"] = None if active is None else self._stream_json(active)
        return JSONResponse(body)

    async def _streams(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        active_only = request.query_params.get("active") in ("1", "true")
        streams = [s for s in self.core.registry.streams.values() if s.active or not active_only]
        return JSONResponse({"streams": [self._stream_json(s) for s in streams]})

    async def _stream(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        stream = self.core.registry.streams.get(request.path_params["stream_id"])
        if stream is None:
            return problem(404, "Not Found", "no such stream")
        return JSONResponse(self._stream_json(stream))

    async def _stop(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        stream_id = request.path_params["stream_id"]
        try:
            actions = self.core.stop(stream_id, trio.current_time())
        except KeyError:
            return problem(404, "Not Found", "no such stream")
        self.apply(actions)
        stream = self.core.registry.streams[stream_id]
        return JSONResponse(self._stream_json(stream), status_code=202 if stream.active else 200)

    async def _start(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.body()
        if len(body) > _MAX_BODY:
            return problem(413, "Content Too Large", f"want a JSON body under {_MAX_BODY} bytes")
        try:
            doc = json.loads(body or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("want a JSON object")
            start, replace = self._start_request(request.path_params["device_id"], doc)
        except ValueError as e:
            return problem(400, "Bad Request", str(e))
        url = start.url
        if start.mode == "managed":
            if self.ingest is None:
                return problem(
                    409, "Conflict", "managed streams are off: the controller runs without --rtmp-listen"
                )
            url = self.ingest.open(start.stream_id)
        try:
            stream, actions = self.core.start(
                StartRequest(
                    stream_id=start.stream_id,
                    device_id=start.device_id,
                    url=url,
                    mode=start.mode,
                    app_id=start.app_id,
                    source=start.source,
                    video=start.video,
                    audio=start.audio,
                    duration_limit_ms=start.duration_limit_ms,
                    token=start.token,
                ),
                trio.current_time(),
                replace=replace,
            )
        except (StartRefused, ValueError) as e:
            if start.mode == "managed" and self.ingest is not None:
                self.ingest.close(start.stream_id, "start refused")
            if isinstance(e, Conflict):
                return problem(409, "Conflict", str(e), existing=e.existing)
            if isinstance(e, StartRefused):
                return problem(e.status, "Conflict" if e.status == 409 else "Not Found", str(e))
            return problem(400, "Bad Request", str(e))
        self.apply(actions)
        return JSONResponse(
            self._stream_json(stream),
            status_code=201,
            headers={"Location": f"/api/streams/{stream.stream_id}"},
        )

    def _start_request(self, device_id: str, doc: Mapping[str, Any]) -> tuple[StartRequest, bool]:
        """The operator's start body: {mode, rtmpUrl or streamUrl (unmanaged; streamUrl may be a WHIP
        endpoint), streamToken? (WHIP's bearer token), streamId?, appId?, source?, video?, audio?,
        durationLimit?, replace?}."""
        mode = doc.get("mode", "unmanaged")
        if mode not in ("managed", "unmanaged"):
            raise ValueError('mode: want "managed" or "unmanaged"')
        stream_id = doc.get("streamId") or f"s-{secrets.token_hex(6)}"
        if not isinstance(stream_id, str) or not _ID_RE.fullmatch(stream_id):
            raise ValueError("streamId: want 1-128 letters, digits, '_', '.', ':' or '-'")
        url = doc.get("rtmpUrl") or doc.get("streamUrl", "")
        if mode == "unmanaged" and (not isinstance(url, str) or not url):
            raise ValueError(
                "rtmpUrl: an unmanaged stream needs the ingest's rtmp:// or rtmps:// URL (or streamUrl: "
                "a WHIP endpoint's https:// URL)"
            )
        token = doc.get("streamToken", "")
        if not isinstance(token, str):
            raise ValueError("streamToken: want a string (the WHIP endpoint's bearer token)")
        if mode == "managed" and url:
            raise ValueError("rtmpUrl: a managed stream's ingest is the controller's own; leave it out")
        app_id = doc.get("appId", "")
        source = doc.get("source")
        limit = doc.get("durationLimit")
        replace = doc.get("replace", False)
        checks = [
            (isinstance(app_id, str) and len(app_id) <= 128, "appId: want a string"),
            (source is None or (isinstance(source, str) and "/" in source), 'source: want "app/key"'),
            (
                limit is None or (type(limit) is int and limit > 0),
                "durationLimit: want a whole number of ms > 0",
            ),
            (isinstance(replace, bool), "replace: want true or false"),
        ]
        for key in ("video", "audio"):
            checks.append((doc.get(key) is None or isinstance(doc.get(key), dict), f"{key}: want an object"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        request = StartRequest(
            stream_id=stream_id,
            device_id=device_id,
            url=url,
            mode=mode,
            app_id=app_id,
            source=source,
            video=doc.get("video"),
            audio=doc.get("audio"),
            duration_limit_ms=limit,
            token=token,
        )
        return request, replace


# --- the command -----------------------------------------------------------------------------------


def parse_device_tokens(text: str) -> dict[str, str | None]:
    """Device tokens from ``DEVICE=TOKEN,...`` (env) or lines ``DEVICE TOKEN`` (file); a bare token or
    device ``*`` is accepted from any device id.

    Raises:
        ValueError: A token is empty, repeated or shorter than 16 characters.
    """
    out: dict[str, str | None] = {}
    entries = [e for line in text.splitlines() for e in line.split(",")]
    for n, entry in enumerate(entries, 1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        device, sep, token = entry.replace("=", " ", 1).partition(" ")
        if not sep:
            device, token = "*", device
        token = token.strip()
        if len(token) < 16:
            raise ValueError(f"device token {n}: want at least 16 characters")
        if token in out:
            raise ValueError(f"device token {n}: the same token twice")
        out[token] = None if device == "*" else device
    return out


def settings_from(args: Any, environ: Mapping[str, str]) -> ControllerSettings:
    """`ControllerSettings` from ``appliance controller``'s arguments and the environment.

    Raises:
        ValueError: A malformed argument, named.
    """
    from appliance.config import ConfigError, parse_address, parse_duration

    def duration(flag: str, value: str) -> float:
        try:
            return parse_duration(value)
        except (ConfigError, ValueError) as e:
            raise ValueError(f"--{flag}={value}: {e}") from None

    def address(flag: str, value: str) -> Address:
        try:
            return parse_address(value)
        except (ConfigError, ValueError) as e:
            raise ValueError(f"--{flag}={value}: {e}") from None

    tokens = parse_device_tokens(environ.get("APPLIANCE_CONTROLLER_DEVICE_TOKENS", ""))
    if args.device_tokens:
        with open(args.device_tokens, encoding="utf-8") as f:
            tokens |= parse_device_tokens(f.read())
    timing = Timing(
        keepalive_s=duration("keepalive", args.keepalive),
        ack_timeout_s=duration("ack-timeout", args.ack_timeout),
        max_missed=args.max_missed,
        stop_timeout_s=duration("stop-timeout", args.stop_timeout),
    )
    return ControllerSettings(
        listen=address("listen", args.listen),
        rtmp_listen=None if args.rtmp_listen == "off" else address("rtmp-listen", args.rtmp_listen),
        public_host=args.public_host,
        device_tokens=MappingProxyType(tokens),
        api_token=environ.get("APPLIANCE_CONTROLLER_API_TOKEN", ""),
        timing=timing,
    )


async def run_controller(settings: ControllerSettings) -> int:
    """Run the controller until SIGTERM or SIGINT (exit 0)."""
    import signal

    controller = Controller(settings)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(controller.run)
            async for signum in signals:
                log.info("controller.stopping signal=%s", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    return 0
