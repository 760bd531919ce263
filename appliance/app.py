"""The running appliance: the Bus registry, the route registry, the root supervisor and signal handling.

Each root child declares the config sections it reads. On SIGHUP the config is read again; children
whose sections changed are restarted with the new config, all others keep running untouched (their
connections and media are not disturbed). A bad config on reload is logged and the old one kept.
SIGTERM/SIGINT stop the children in reverse start order within their shutdown timeouts, then exit 0.
If a critical child exhausts its restart intensity the root supervisor escalates: everything stops,
the watchdog has already stopped petting, and we exit non-zero so systemd restarts the process.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appliance import __version__
from appliance import log as applog
from appliance.bus import BusRegistry
from appliance.cloud.client import CloudClient
from appliance.config import Config, ConfigError, PushTarget, changed_sections, load_file
from appliance.hw.board import probe_board
from appliance.log import quote
from appliance.media.capture.service import CaptureService
from appliance.media.egress import Push, make_push
from appliance.media.recorder import Recorder
from appliance.media.rtmp.server import RtmpServer, serve_rtmp
from appliance.supervisor import (
    Backoff,
    ChildSpec,
    DynamicSupervisor,
    Supervisor,
    SupervisorEscalation,
    SupervisorSnapshot,
)
from appliance.watchdog import WatchdogStats, run_watchdog, status_line
from appliance.web import RouteRegistry, create_app, serve_web
from appliance.web.actions import ActionRefused, add_action_routes
from appliance.web.app import problem
from appliance.web.auth import Security
from appliance.web.events import register_events
from appliance.web.metrics import process_figures, register_metrics
from appliance.web.page import register_page
from appliance.web.recordings import register_recordings
from appliance.web.snapshots import register_snapshots
from appliance.web.tls import ensure_certificate, fingerprint

__all__ = ["EXIT_ESCALATED", "Appliance", "ChildDef"]

log = logging.getLogger("appliance.app")

EXIT_ESCALATED = 70  # EX_SOFTWARE: a critical subsystem kept failing; systemd restarts us


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildDef:
    """A root child: the config sections it reads and how to build its spec from a config."""

    name: str
    sections: frozenset[str]
    build: Callable[[Config], ChildSpec]


class Appliance:
    """One appliance process. Construct, then ``await run()``; returns the process exit code."""

    def __init__(
        self, cfg: Config, *, config_path: Path | None = None, overrides: Sequence[str] = ()
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = tuple(overrides)
        self.version = __version__
        self.device_name = cfg.device.display_name()
        self.buses = BusRegistry()
        self.routes = RouteRegistry()
        self.security = Security(cfg.web, names=self._host_names(cfg))
        self.web_app = create_app(self, security=self.security)
        # Recording switched on or off through the API: outlives recorder restarts, not a config reload.
        self.record_overrides: dict[str, bool] = {}
        self._nursery: trio.Nursery | None = None
        self._started = time.monotonic()
        self.state_dir = cfg.state.path
        s = cfg.supervisor
        backoff = Backoff(
            initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, reset_after_s=s.stable_after_s
        )
        # Push targets and cloud streams are started and stopped here at run time (RTMP push, WHIP, MoQ).
        self.egress = DynamicSupervisor(
            "egress", max_restarts=s.max_restarts, max_seconds=s.window_s, backoff=backoff
        )
        self.board = probe_board()  # read once: capture's encoder probe and the cloud hello both use it
        self.watchdog_stats = WatchdogStats()  # the watchdog's pets, for /metrics
        self.relay: RtmpServer | None = None
        self.recorder: Recorder | None = None
        self.capture: CaptureService | None = None
        self.webrtc: Any = None  # the WhepService when the webrtc extra is installed
        self.webrtc_off: str | None = None  # why WebRTC is off ("disabled: extra not installed")
        self.cloud: CloudClient | None = None
        # Static pushes ([[push.targets]]), children of `egress` named push:NAME.
        self.pushes: dict[str, tuple[PushTarget, Push]] = {}
        # Start order is this order; stop order the reverse. The watchdog comes last so that it stops
        # first (STOPPING=1 goes out before anything else winds down).
        self.children: list[ChildDef] = [
            ChildDef(name="web", sections=frozenset({"web"}), build=self._web_spec),
            ChildDef(name="relay", sections=frozenset({"rtmp"}), build=self._relay_spec),
            ChildDef(name="capture", sections=frozenset({"capture"}), build=self._capture_spec),
            ChildDef(name="recorder", sections=frozenset({"record"}), build=self._recorder_spec),
            ChildDef(
                name="egress",
                sections=frozenset(),
                build=lambda cfg: self.egress.as_child(shutdown_s=cfg.supervisor.shutdown_s),
            ),
            ChildDef(name="cloud", sections=frozenset({"cloud"}), build=self._cloud_spec),
            ChildDef(name="webrtc", sections=frozenset({"webrtc", "capture"}), build=self._webrtc_spec),
            ChildDef(name="watchdog", sections=frozenset(), build=self._watchdog_spec),
        ]
        self.root = Supervisor(
            "root",
            [c.build(cfg) for c in self.children],
            max_restarts=s.max_restarts,
            max_seconds=s.window_s,
            backoff=backoff,
        )
        self._reload_lock = trio.Lock()
        self.routes.add_route("/api/streams", self._api_streams, methods=["GET"], owner="relay")
        add_action_routes(self.routes, self)
        register_metrics(self.routes, self)
        self.snapshots = register_snapshots(self.routes, self.buses)
        register_recordings(self.routes, self)
        self.events = register_events(self.routes, self)  # GET /api/events, the page's live feed
        register_page(self.routes)  # GET / and /static/...

    # -- child specs ---------------------------------------------------------------------------

    def _web_spec(self, cfg: Config) -> ChildSpec:
        self.security.update(cfg.web, self._host_names(cfg))  # a reload: new password, tokens, hosts

        async def run_web(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
            tls = None
            if cfg.web.tls:
                # Made once, at the first start with web.tls = true, then reused (appliance.web.tls).
                names = self._host_names(cfg)
                tls = await trio.to_thread.run_sync(ensure_certificate, self.state_dir / "tls", names)
                log.info("web.tls_certificate sha256=%s", await trio.to_thread.run_sync(fingerprint, tls[0]))
            await serve_web(self.web_app, cfg.web.listen, tls=tls, task_status=task_status)

        return ChildSpec(
            name="web",
            factory=run_web,
            critical=True,
            grace_s=cfg.supervisor.critical_grace_s,
            shutdown_s=cfg.supervisor.shutdown_s,
        )

    def _relay_spec(self, cfg: Config) -> ChildSpec:
        async def run_relay(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            # A fresh server per (re)start: a restart after a crash or an [rtmp] change starts clean;
            # the Buses live on outside it, so players of other streams lose nothing but their socket.
            self.relay = RtmpServer(cfg.rtmp, self.buses, reserved=self._reserved_streams())
            await serve_rtmp(self.relay, task_status=task_status)

        return ChildSpec(
            name="relay",
            factory=run_relay,
            critical=True,
            grace_s=cfg.supervisor.critical_grace_s,
            shutdown_s=cfg.supervisor.shutdown_s,
        )

    def _capture_spec(self, cfg: Config) -> ChildSpec:
        # One service per config: it remembers its camera (for re-plug) and its encoder probe across the
        # supervisor's restarts. Not critical: a missing camera must not take the relay down.
        service = CaptureService(cfg.capture, self.buses, board=self.board)
        self.capture = service
        if self.relay is not None:  # a reload changed [capture]: the relay keeps its clients
            self.relay.reserved = self._reserved_streams(cfg)
        return ChildSpec(name="capture", factory=service.run, shutdown_s=cfg.supervisor.shutdown_s)

    def _webrtc_spec(self, cfg: Config) -> ChildSpec:
        # Not critical. Without the extra (or with webrtc.enabled = false) the child idles and says why,
        # and /whep answers 503 with that reason; everything else runs.
        from appliance.media.webrtc import missing_extra

        why = missing_extra() if cfg.webrtc.enabled else "disabled: webrtc.enabled = false"

        async def run_disabled(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async def refuse(request: Request) -> Response:
                return problem(503, "Service Unavailable", str(why))

            methods = ["POST", "PATCH", "DELETE", "OPTIONS"]
            self.routes.add_route("/whep/{path:path}", refuse, methods=methods, owner="webrtc")
            self.routes.add_route("/whip/{path:path}", refuse, methods=methods, owner="webrtc")
            log.info("webrtc.off reason=%s", quote(str(why)))
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.routes.remove_owner("webrtc")

        self.webrtc_off = why
        if why is not None:
            self.webrtc = None
            return ChildSpec(name="webrtc", factory=run_disabled, shutdown_s=cfg.supervisor.shutdown_s)
        from appliance.media.webrtc.whep import WhepService

        service = WhepService(
            self.buses,
            self.routes,
            camera=cfg.capture.stream,
            cfg=cfg.webrtc,
            # The current config's (a reload of [rtmp] changes them without restarting webrtc).
            play_secrets=lambda app: auth[app].play if app in (auth := self.cfg.rtmp.auth) else (),
            publish_secrets=lambda app: auth[app].publish if app in (auth := self.cfg.rtmp.auth) else (),
            apps=lambda: self.cfg.rtmp.apps,
            reserved=lambda: self._reserved_streams(),
            # Looked up at each request: a reload may replace the capture service.
            request_keyframe=lambda: self.capture.request_keyframe() if self.capture is not None else False,
        )
        self.webrtc = service
        return ChildSpec(name="webrtc", factory=service.run, shutdown_s=cfg.supervisor.shutdown_s)

    def _cloud_spec(self, cfg: Config) -> ChildSpec:
        # Not critical: a controller that can't be reached must not take the device down. Its streams
        # run in `egress` and end by their dead-man timers if the channel stays down.
        client = CloudClient(
            cfg.cloud,
            self.egress,
            self.buses,
            device_id=cfg.cloud.device_id or cfg.device.display_name(),
            version=self.version,
            board=self.board["model"],
            shutdown_s=cfg.supervisor.shutdown_s,
            status=lambda: (self.uptime_s(), status_line(self.snapshot())),
            make_push=partial(
                make_push,
                webrtc=cfg.webrtc,
                camera=cfg.capture.stream,
                request_keyframe=self._request_camera_keyframe,
            ),
        )
        self.cloud = client
        return ChildSpec(name="cloud", factory=client.run, shutdown_s=cfg.supervisor.shutdown_s)

    def _recorder_spec(self, cfg: Config) -> ChildSpec:
        async def run_recorder(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            # Not critical: a full or broken disk stops recordings, never the relay or the health check.
            self.recorder = Recorder(cfg.record, self.state_dir, self.buses)
            for name, on in self.record_overrides.items():  # what the API switched, until a reload
                (self.recorder.start if on else self.recorder.stop)(name)
            await self.recorder.run(task_status=task_status)

        return ChildSpec(name="recorder", factory=run_recorder, shutdown_s=cfg.supervisor.shutdown_s)

    @staticmethod
    def _host_names(cfg: Config) -> list[str]:
        """The names this device answers to (the Host check, the TLS certificate)."""
        return list(dict.fromkeys([cfg.device.display_name(), socket.gethostname()]))

    def _reserved_streams(self, cfg: Config | None = None) -> frozenset[str]:
        capture = (cfg or self.cfg).capture
        return frozenset() if capture.source == "none" else frozenset({capture.stream})

    async def _api_streams(self, request: Request) -> Response:
        return JSONResponse({"streams": self.describe_streams()})

    def describe_streams(self) -> list[dict[str, Any]]:
        """The items of ``GET /api/streams``."""
        relay = self.relay
        streams = relay.describe_streams() if relay is not None else []
        capture = self.capture
        camera = capture.publisher() if capture is not None else None
        for item in streams:
            if camera is not None and item["name"] == self.cfg.capture.stream and item["publisher"] is None:
                item["bitrate_bps"] = camera.pop("bitrate_bps")
                item["publisher"] = camera
        ingest = self.webrtc.ingest if self.webrtc is not None else None
        whip: dict[str, dict[str, object]] = ingest.describe() if ingest is not None else {}
        for item in streams if whip else ():
            publisher = whip.get(str(item["name"]))
            if publisher is not None and item["publisher"] is None:
                item["bitrate_bps"] = publisher.pop("bitrate_bps")
                item["publisher"] = publisher
        viewers: dict[str, dict[str, object]] = self.webrtc.describe() if self.webrtc is not None else {}
        for item in streams if viewers else ():
            for sub in item["subscribers"]:  # type: ignore[attr-defined]
                sub.update(viewers.get(str(sub["name"]), {}))
        return streams

    def _watchdog_spec(self, cfg: Config) -> ChildSpec:
        return ChildSpec(
            name="watchdog",
            factory=partial(run_watchdog, self.snapshot, stats=self.watchdog_stats),
            shutdown_s=1.0,
        )

    async def _sync_pushes(self, cfg: Config) -> None:
        """Make the egress supervisor's push children match `push.targets`: start new or changed targets,
        stop removed, changed or disabled ones. Others keep streaming untouched."""
        wanted = {f"push:{t.name}": t for t in cfg.push.targets if t.enabled}
        for name, (target, _push) in list(self.pushes.items()):
            if wanted.get(name) != target:
                del self.pushes[name]
                if self.egress.has_child(name):
                    await self.egress.stop_child(name)
                log.info("push.removed target=%s", target.name)
        for name, target in wanted.items():
            if name in self.pushes:
                continue
            push = make_push(
                target.name,
                target.url,
                target.source,
                self.buses,
                webrtc=cfg.webrtc,
                verify_tls=target.verify_tls,
                token=target.token,
                camera=cfg.capture.stream,
                request_keyframe=self._request_camera_keyframe,
            )
            # Permanent: a target that fails (ingest down, refused) is retried with the supervisor's
            # backoff for as long as it is configured.
            spec = ChildSpec(name=name, factory=push.run, shutdown_s=cfg.supervisor.shutdown_s)
            await self.egress.start_child(spec)
            self.pushes[name] = (target, push)
            log.info("push.added target=%s url=%s source=%s", target.name, target.shown_url(), target.source)

    # -- what the web app reads (web.app.StatusSource) -----------------------------------------

    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def snapshot(self) -> SupervisorSnapshot:
        return self.root.snapshot()

    def _request_camera_keyframe(self) -> object:
        # Looked up at each request: a reload may replace the capture service.
        return self.capture.request_keyframe() if self.capture is not None else False

    def webrtc_status(self) -> Mapping[str, object]:
        """The webrtc child's figures, or why it is off (``/api/status``, ``/metrics``)."""
        if self.webrtc is not None:
            status: Mapping[str, object] = self.webrtc.status()
            return status
        return {"state": "off", "reason": self.webrtc_off}

    def status_extra(self) -> Mapping[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "capture": self.capture.describe() if self.capture is not None else None,
            "config": self.cfg.to_dict(),
            "buses": [jsonable(b) for b in self.buses.snapshot()],
            "pushes": [push.describe() for _, push in self.pushes.values()],
            "cloud": self.cloud.describe() if self.cloud is not None else None,
            "webrtc": self.webrtc_status(),
            "process": process_figures(),
        }

    # -- what the action endpoints call (web.actions.ActionTarget) -----------------------------

    def stream_item(self, name: str) -> dict[str, Any] | None:
        return next((item for item in self.describe_streams() if item["name"] == name), None)

    async def restart_child(self, path: str) -> dict[str, Any]:
        """Restart a child of the tree by path (``capture``, ``egress/push:x``) as an operator would.

        Returns:
            The child's snapshot once it is back (or failed its first attempt); for ``web`` itself,
            ``{"child": "web", "deferred": true}``: it restarts a moment later, after the answer went out.

        Raises:
            KeyError: no such child.
            ActionRefused: the appliance is not running (starting or stopping).
        """
        parent, _, name = path.rpartition("/")
        nested = {"": self.root, "egress": self.egress}
        sup = nested.get(parent)
        if sup is None or name not in sup.names:
            raise KeyError(path)
        if not sup.running:
            raise ActionRefused(f"supervisor {sup.name} is not running")
        log.info("web.restart_requested child=%s", path)
        if sup is self.root and name == "web":
            if self._nursery is None:
                raise ActionRefused("the appliance is not running")
            self._nursery.start_soon(self._restart_web_later)
            return {"child": path, "deferred": True}
        try:
            await sup.restart_child(name)
        except (KeyError, RuntimeError) as e:  # removed or stopping meanwhile
            raise ActionRefused(f"{path}: {e}") from None
        found = next((c for p, c in self.snapshot().walk() if p == path), None)
        return {"child": path, "deferred": False, "state": found.to_dict() if found else None}

    async def _restart_web_later(self) -> None:
        # Restarting the web child cancels the request that asked for it: answer first.
        await trio.sleep(0.5)
        await self.root.restart_child("web")

    async def record_stream(self, name: str, start: bool) -> dict[str, Any]:
        """Start or stop recording ``name`` until the next reload of ``[record]``.

        Raises:
            KeyError: no such stream.
            ActionRefused: the recorder is not running.
        """
        if name not in self.buses:
            raise KeyError(name)
        recorder = self.recorder
        if recorder is None or not any(p == "recorder" and c.ok for p, c in self.snapshot().walk()):
            raise ActionRefused("the recorder is not running; /api/status says why")
        self.record_overrides[name] = start
        (recorder.start if start else recorder.stop)(name)
        log.info("web.record stream=%s action=%s", name, "start" if start else "stop")
        status = next((s for s in recorder.status().streams if s.stream == name), None)
        if status is None:
            return {"stream": name, "wanted": start, "recording": False}
        return dict(jsonable(status))

    def request_keyframe(self, name: str) -> dict[str, Any]:
        """Ask the camera's encoder for a keyframe (rate-limited to one a second).

        Raises:
            KeyError: no such stream.
            ActionRefused: not the camera's stream (an RTMP publisher can't be asked), or nothing is
                encoded here right now (camera off, or passing its own H.264 through).
        """
        if name not in self.buses:
            raise KeyError(name)
        capture = self.capture
        if name != self.cfg.capture.stream or capture is None or self.cfg.capture.source == "none":
            raise ActionRefused(
                f"{name} is not the camera's stream: its publisher sends keyframes on its own schedule "
                "and RTMP has no way to ask it for one"
            )
        if not capture.request_keyframe():
            raise ActionRefused(
                f"{name}: no encoder running here (camera down, or its own H.264 passed through)"
            )
        return {"stream": name, "requested": True}

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or escalation (EXIT_ESCALATED)."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"state.dir={str(self.state_dir)!r}: cannot create: {e.strerror}") from None
        log.info(
            "appliance.starting version=%s device=%s state_dir=%s config=%s",
            self.version,
            quote(self.device_name),
            quote(str(self.state_dir)),
            quote(str(self.config_path) if self.config_path else "defaults"),
        )
        escalated = False
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(self.root.run)
                    await self._sync_pushes(self.cfg)
                    log.info("appliance.started status=%s", quote(status_line(self.snapshot())))
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            nursery.start_soon(self.reload)
                            continue
                        log.info("appliance.stopping signal=%s", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        break
            except* SupervisorEscalation as group:
                for exc in group.exceptions:
                    log.critical("appliance.escalated reason=%s", quote(str(exc)))
                escalated = True
        if escalated:
            return EXIT_ESCALATED
        log.info("appliance.stopped uptime_s=%.1f", self.uptime_s())
        return 0

    async def reload(self) -> None:
        """Re-read the config; restart only the children whose sections changed."""
        async with self._reload_lock:
            try:
                new = load_file(self.config_path, self.overrides)
            except ConfigError as e:
                log.error("config.reload_failed error=%s keeping=%s", quote(str(e)), "previous")
                return
            changed = changed_sections(self.cfg, new)
            if not changed:
                log.info("config.reloaded changed=none")
                return
            log.info("config.reloaded changed=%s", ",".join(sorted(changed)))
            for section in sorted(changed & _NEEDS_PROCESS_RESTART):
                log.warning(
                    "config.needs_restart section=%s reason=%s", section, quote("applies at next start")
                )
                # Keep showing (in /api/status) what is in force, not what will be.
                new = dataclasses.replace(new, **{section: getattr(self.cfg, section)})
            self.cfg = new
            self.device_name = new.device.display_name()
            if "log" in changed:
                applog.setup(new.log.format, new.log.level)
            if "record" in changed:
                self.record_overrides.clear()  # the file says what is recorded again
            if "push" in changed:
                await self._sync_pushes(new)
            for child in self.children:
                if child.sections & changed:
                    log.info("config.restart_child child=%s", child.name)
                    await self.root.restart_child(child.name, child.build(new))


# Sections read once at process start.
_NEEDS_PROCESS_RESTART = frozenset({"supervisor", "state"})


def jsonable(obj: object) -> Any:
    """Frozen dataclasses, enums, paths and tuples -> JSON-ready values."""
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    return obj
