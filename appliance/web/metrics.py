"""``GET /metrics``: the appliance's state in the Prometheus text format, read live at each scrape.

Theory of operation
-------------------
Nothing here counts anything. The subsystems keep their own counters (the Bus per stream, the supervisor
per child, the watchdog, capture); a custom collector reads them when Prometheus scrapes, so an idle
appliance spends nothing on metrics and a scrape always shows the state of that instant. Each app gets
its own `CollectorRegistry` (never prometheus-client's global one), so two appliances in one process (the
tests) do not mix.

The scrape runs on the trio thread, like every other reader of that state: a snapshot is consistent
because nothing else runs while it is taken. Building the metric families from the inputs is a pure
function (`collect_families`), tested without an appliance.

Labels stay bounded: streams by name (stream keys that are RTMP secrets are left out, as everywhere in the
API), children by their path in the tree (``egress/push:youtube``), subscribers by protocol
(`appliance.bus.subscriber_group`), never per player. Per-protocol counters include the players that
left (the Bus keeps their totals), so they never go down while the stream lives. A stream that goes idle
(no producer, no subscriber) is forgotten by its registry and its series disappear; when it comes back its
counters start from 0, which Prometheus treats as a counter reset.

Board temperature and throttling are not exported yet: `appliance.hw.board` does not read them (the
board-health issue adds them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from appliance.bus import BusRegistry, BusSnapshot, subscriber_group
from appliance.config import Config
from appliance.supervisor import ChildState, SupervisorSnapshot
from appliance.watchdog import WatchdogStats
from appliance.web.routes import RouteRegistry

__all__ = [
    "ApplianceCollector",
    "MetricsInputs",
    "MetricsSource",
    "collect_families",
    "hidden_stream",
    "metrics_registry",
    "process_figures",
    "read_inputs",
    "register_metrics",
]


class _Describable(Protocol):
    def describe(self) -> dict[str, object]: ...


class MetricsSource(Protocol):
    """What /metrics reads from the running appliance (`appliance.app.Appliance` provides it)."""

    @property
    def version(self) -> str: ...
    @property
    def device_name(self) -> str: ...
    @property
    def cfg(self) -> Config: ...
    @property
    def buses(self) -> BusRegistry: ...
    @property
    def capture(self) -> _Describable | None: ...
    @property
    def watchdog_stats(self) -> WatchdogStats: ...

    def uptime_s(self) -> float: ...
    def snapshot(self) -> SupervisorSnapshot: ...
    def webrtc_status(self) -> Mapping[str, object]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsInputs:
    """Everything one scrape shows, read at one instant.

    Attributes:
        version, device, uptime_s: The process.
        supervisor: The supervision tree.
        streams: The Buses to show (secret-keyed ones already left out).
        capture: `CaptureService.describe()`, None without a capture service.
        watchdog: The watchdog's counters, None when it is not running.
        webrtc: The webrtc child's figures (``{"state": "off", ...}`` when it is off), None: not shown.
        process: `process_figures()`, None: not shown.
    """

    version: str
    device: str
    uptime_s: float
    supervisor: SupervisorSnapshot
    streams: Sequence[BusSnapshot] = ()
    capture: Mapping[str, object] | None = None
    watchdog: WatchdogStats | None = None
    webrtc: Mapping[str, object] | None = None
    process: Mapping[str, int] | None = None


def hidden_stream(name: str, secrets: Mapping[str, Sequence[str]]) -> bool:
    """Whether stream ``app/key`` must stay out of /metrics: its key is one of the app's RTMP secrets.

    Args:
        name: The Bus name.
        secrets: Per app, the publish and play secrets of `rtmp.auth`.
    """
    app, _, key = name.partition("/")
    return key in secrets.get(app, ())


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _child_families(snap: SupervisorSnapshot) -> list[Metric]:
    up = GaugeMetricFamily(
        "appliance_child_up", "1 while the supervised child is running and ready.", labels=["child"]
    )
    state = GaugeMetricFamily(
        "appliance_child_state",
        "The supervised child's state: 1 for the current one, 0 for the others.",
        labels=["child", "state"],
    )
    restarts = CounterMetricFamily(
        "appliance_child_restarts",
        "Automatic restarts of the supervised child since the process started.",
        labels=["child"],
    )
    uptime = GaugeMetricFamily(
        "appliance_child_uptime_seconds",
        "Seconds since the supervised child last became ready (0 while it is down).",
        labels=["child"],
    )
    critical = GaugeMetricFamily(
        "appliance_child_critical",
        "1 if the child's failure makes the appliance unhealthy.",
        labels=["child"],
    )
    for path, child in snap.walk():
        up.add_metric([path], 1.0 if child.ok else 0.0)
        for s in ChildState:
            state.add_metric([path, s.value], 1.0 if child.state is s else 0.0)
        restarts.add_metric([path], float(child.restarts))
        uptime.add_metric([path], child.uptime_s or 0.0)
        critical.add_metric([path], 1.0 if child.critical else 0.0)
    return [up, state, restarts, uptime, critical]


def _stream_families(streams: Sequence[BusSnapshot]) -> list[Metric]:
    def per_stream(name: str, doc: str, counter: bool = True) -> CounterMetricFamily | GaugeMetricFamily:
        cls = CounterMetricFamily if counter else GaugeMetricFamily
        return cls(name, doc, labels=["stream"])

    def per_protocol(name: str, doc: str, counter: bool = True) -> CounterMetricFamily | GaugeMetricFamily:
        cls = CounterMetricFamily if counter else GaugeMetricFamily
        return cls(name, doc, labels=["stream", "protocol"])

    live = per_stream("appliance_stream_live", "1 while the stream has a producer.", counter=False)
    publishes = per_stream(
        "appliance_stream_publishes", "Producers (publishers, camera runs) the stream had."
    )
    bytes_in = per_stream("appliance_stream_received_bytes", "Media payload bytes producers sent.")
    packets_in = per_stream("appliance_stream_received_packets", "Media packets producers sent.")
    frames_in = per_stream("appliance_stream_video_frames", "Video frames producers sent.")
    keyframes = per_stream("appliance_stream_keyframes", "Video keyframes producers sent.")
    discarded = per_stream(
        "appliance_stream_discarded_packets", "Video packets refused before a producer's first keyframe."
    )
    clamped = per_stream(
        "appliance_stream_clamped_timestamps", "Packets whose timestamp was clamped to keep time monotonic."
    )
    subscribers = per_protocol(
        "appliance_stream_subscribers", "Subscribers attached now, by protocol.", counter=False
    )
    bytes_out = per_protocol(
        "appliance_stream_sent_bytes", "Media payload bytes delivered to subscribers, by protocol."
    )
    packets_out = per_protocol(
        "appliance_stream_sent_packets", "Media packets delivered to subscribers, by protocol."
    )
    dropped = per_protocol(
        "appliance_stream_dropped_packets",
        "Packets subscribers lost by dropping to the next keyframe (too slow), by protocol.",
    )
    cut_off = per_protocol(
        "appliance_stream_cut_off_subscribers",
        "Subscribers disconnected for staying too far behind, by protocol.",
    )
    lag = per_protocol(
        "appliance_stream_lag_seconds",
        "The largest lag of the stream's subscribers of a protocol (newest media minus oldest undelivered).",
        counter=False,
    )
    queued = per_protocol(
        "appliance_stream_queued_events",
        "Events waiting in the subscribers' queues, by protocol.",
        counter=False,
    )
    for snap in streams:
        s = snap.name
        live.add_metric([s], 1.0 if snap.live else 0.0)
        publishes.add_metric([s], float(snap.producers))
        bytes_in.add_metric([s], float(snap.bytes_in))
        packets_in.add_metric([s], float(snap.packets_in))
        frames_in.add_metric([s], float(snap.video_packets_in))
        keyframes.add_metric([s], float(snap.keyframes))
        discarded.add_metric([s], float(snap.packets_discarded))
        clamped.add_metric([s], float(snap.timestamps_clamped))
        # group -> [attached, delivered, bytes, dropped, cut off, max lag ms, queued]
        groups: dict[str, list[int]] = {}
        for gone in snap.departed:
            groups[gone.group] = [0, gone.delivered, gone.bytes_delivered, gone.dropped, gone.cut_off, 0, 0]
        for sub in snap.subscribers:
            g = groups.setdefault(subscriber_group(sub.name), [0] * 7)
            g[0] += 1
            g[1] += sub.delivered
            g[2] += sub.bytes_delivered
            g[3] += sub.dropped
            g[5] = max(g[5], sub.lag_ms)
            g[6] += sub.queued
        for group in sorted(groups):
            n, delivered, sent, lost, cut, lag_ms, waiting = groups[group]
            labels = [s, group]
            subscribers.add_metric(labels, float(n))
            packets_out.add_metric(labels, float(delivered))
            bytes_out.add_metric(labels, float(sent))
            dropped.add_metric(labels, float(lost))
            cut_off.add_metric(labels, float(cut))
            lag.add_metric(labels, lag_ms / 1000.0)
            queued.add_metric(labels, float(waiting))
    return [
        live,
        publishes,
        bytes_in,
        packets_in,
        frames_in,
        keyframes,
        discarded,
        clamped,
        subscribers,
        bytes_out,
        packets_out,
        dropped,
        cut_off,
        lag,
        queued,
    ]


def _capture_families(capture: Mapping[str, object]) -> list[Metric]:
    out: list[Metric] = []
    encoder = capture.get("encoder")
    enc: Mapping[str, object] = encoder if isinstance(encoder, Mapping) else {}
    info = InfoMetricFamily("appliance_capture", "The camera source and the encoder capture uses.")
    info.add_metric(
        [],
        {
            "stream": str(capture.get("stream", "")),
            "source": str(capture.get("source", capture.get("configured", ""))),
            "encoder": str(enc.get("encoder", "")),
        },
    )
    out.append(info)
    out.append(
        GaugeMetricFamily(
            "appliance_capture_running",
            "1 while capture is delivering frames.",
            value=1.0 if capture.get("state") == "running" else 0.0,
        )
    )
    gauges = (
        ("fps", "appliance_capture_fps", "The frame rate the camera was opened at (negotiated)."),
        ("width", "appliance_capture_width_pixels", "The picture width capture delivers."),
        ("height", "appliance_capture_height_pixels", "The picture height capture delivers."),
    )
    for key, name, doc in gauges:
        value = _num(capture.get(key))
        if value is not None:
            out.append(GaugeMetricFamily(name, doc, value=value))
    counters: tuple[tuple[Mapping[str, object], str, str, str], ...] = (
        (
            capture,
            "frames",
            "appliance_capture_frames",
            "Video frames capture delivered in its current run (rate() is the measured frame rate).",
        ),
        (capture, "bytes", "appliance_capture_bytes", "Media bytes capture delivered in its current run."),
        (capture, "runs", "appliance_capture_runs", "Capture runs started (1 + restarts)."),
        (enc, "keyframe_requests", "appliance_capture_keyframe_requests", "Keyframes viewers asked for."),
        (enc, "keyframes_forced", "appliance_capture_keyframes_forced", "Keyframes forced (rate-limited)."),
        (enc, "reopens", "appliance_capture_encoder_reopens", "Encoder reopens (bit rate changes)."),
    )
    for source, key, name, doc in counters:
        value = _num(source.get(key))
        if value is not None:
            out.append(CounterMetricFamily(name, doc, value=value))
    bitrate = _num(enc.get("bitrate_bps"))
    if bitrate is not None:
        out.append(
            GaugeMetricFamily(
                # Prometheus' base unit is bytes (promtool says so): bit/s / 8.
                "appliance_capture_encoder_target_bytes_per_second",
                "The encoder's target bit rate, in bytes per second (capture.bitrate / 8).",
                value=bitrate / 8,
            )
        )
    return out


def process_figures() -> dict[str, int]:
    """What a leak would show (the churn tests read them): trio tasks, threads, resident memory."""
    count = 0
    root = trio.lowlevel.current_root_task()
    pending = [root] if root is not None else []
    while pending:
        task = pending.pop()
        count += 1
        pending += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    try:
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    return {"trio_tasks": count, "threads": threading.active_count(), "rss_bytes": rss}


def _webrtc_families(webrtc: Mapping[str, object]) -> list[Metric]:
    running = webrtc.get("state") == "running"
    out: list[Metric] = [
        GaugeMetricFamily(
            "appliance_webrtc_running", "1 while WHEP/WHIP are served (0: disabled or no extra).",
            value=1.0 if running else 0.0,
        )
    ]  # fmt: skip
    if not running:
        return out
    gauges = (
        ("viewers", "appliance_webrtc_viewers", "WHEP viewers connected or connecting."),
        ("publishers", "appliance_webrtc_publishers", "WHIP publishers connected or connecting."),
        ("peer_connections_open", "appliance_webrtc_peer_connections_open",
         "Peer connections not closed (viewers + publishers; growth with neither is a leak)."),
        ("loop_tasks", "appliance_webrtc_loop_tasks", "asyncio tasks on the WebRTC loop thread."),
    )  # fmt: skip
    for key, name, doc in gauges:
        value = _num(webrtc.get(key))
        if value is not None:
            out.append(GaugeMetricFamily(name, doc, value=value))
    requested = _num(webrtc.get("keyframes_requested"))
    if requested is not None:
        out.append(
            CounterMetricFamily(
                "appliance_webrtc_keyframe_requests",
                "Keyframes asked of the camera's encoder for WebRTC viewers (PLI/FIR, rate-limited).",
                value=requested,
            )
        )
    return out


def collect_families(inputs: MetricsInputs) -> list[Metric]:
    """The metric families of one scrape.

    Args:
        inputs: The state, read at one instant.

    Returns:
        The families, in a stable order.
    """
    info = InfoMetricFamily("appliance", "The appliance's version and device name.")
    info.add_metric([], {"version": inputs.version, "device": inputs.device})
    out: list[Metric] = [
        info,
        GaugeMetricFamily(
            "appliance_uptime_seconds", "Seconds since the process started.", value=inputs.uptime_s
        ),
        GaugeMetricFamily(
            "appliance_healthy",
            "1 while the supervision tree is healthy (what /api/health and the watchdog say).",
            value=1.0 if inputs.supervisor.healthy else 0.0,
        ),
    ]
    out.extend(_child_families(inputs.supervisor))
    out.extend(_stream_families(inputs.streams))
    if inputs.capture is not None:
        out.extend(_capture_families(inputs.capture))
    if inputs.webrtc is not None:
        out.extend(_webrtc_families(inputs.webrtc))
    if inputs.process is not None:
        out.append(
            GaugeMetricFamily(
                "appliance_trio_tasks", "trio tasks alive (growth at a steady load is a leak).",
                value=inputs.process["trio_tasks"],
            )
        )  # fmt: skip
        out.append(GaugeMetricFamily("appliance_threads", "Threads alive.", value=inputs.process["threads"]))
    if inputs.watchdog is not None:
        w = inputs.watchdog
        out.append(
            GaugeMetricFamily(
                "appliance_watchdog_enabled",
                "1 when systemd asked for watchdog pets (WatchdogSec), else 0.",
                value=1.0 if w.enabled else 0.0,
            )
        )
        out.append(
            CounterMetricFamily("appliance_watchdog_pets", "WATCHDOG=1 pets sent to systemd.", value=w.pets)
        )
        out.append(
            CounterMetricFamily(
                "appliance_watchdog_withheld_pets",
                "Pets not sent: the supervision tree was unhealthy (systemd restarts us if this lasts).",
                value=w.withheld,
            )
        )
    return out


def read_inputs(source: MetricsSource) -> MetricsInputs:
    """Read the appliance's state for one scrape (on the trio thread)."""
    secrets = {app: (*auth.publish, *auth.play) for app, auth in source.cfg.rtmp.auth.items()}
    capture = source.capture
    return MetricsInputs(
        version=source.version,
        device=source.device_name,
        uptime_s=source.uptime_s(),
        supervisor=source.snapshot(),
        streams=[b for b in source.buses.snapshot() if not hidden_stream(b.name, secrets)],
        capture=capture.describe() if capture is not None else None,
        watchdog=source.watchdog_stats,
        webrtc=source.webrtc_status(),
        process=process_figures(),
    )


class ApplianceCollector(Collector):
    """A prometheus-client collector that reads the appliance at scrape time.

    Args:
        read: Returns the state to show; called once per scrape.
    """

    def __init__(self, read: Callable[[], MetricsInputs]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return collect_families(self._read())


def metrics_registry(read: Callable[[], MetricsInputs], *, process: bool = True) -> CollectorRegistry:
    """A registry of its own with the appliance's collector and (``process``) CPU and memory of this process.

    Args:
        read: Returns the state to show at each scrape.
        process: Add prometheus-client's process collector (``process_cpu_seconds_total``,
            ``process_resident_memory_bytes``, open fds, start time).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ApplianceCollector(read))
    if process:
        ProcessCollector(registry=registry)
    return registry


def register_metrics(
    routes: RouteRegistry, source: MetricsSource, *, owner: str = "web"
) -> CollectorRegistry:
    """Serve ``GET /metrics`` for ``source``.

    Returns:
        The registry (tests and other subsystems may register further collectors on it).
    """
    registry = metrics_registry(lambda: read_inputs(source))

    async def metrics(request: Request) -> Response:
        # Who may read it is the auth middleware's decision (a GET: what any read needs, web.public).
        # Synchronous on purpose: the collectors read trio-owned state, which is consistent only here.
        return Response(
            generate_latest(registry),
            # Our names are all legacy-valid, so the text is the 0.0.4 format every Prometheus 2.x reads;
            # prometheus-client's "latest" (1.0.0) label would only confuse older scrapers.
            media_type=CONTENT_TYPE_PLAIN_0_0_4,
            headers={"Cache-Control": "no-store"},
        )

    routes.add_route("/metrics", metrics, methods=["GET"], owner=owner, name="metrics")
    return registry
