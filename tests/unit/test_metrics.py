"""/metrics: the families built from a real supervision tree, real Buses and the watchdog's counters,
rendered by prometheus-client and read back with its parser; the endpoint on real hypercorn."""

from __future__ import annotations

import urllib.request

import trio
import trio.testing
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appliance.bus import BusRegistry
from appliance.config import Address
from appliance.media.packets import Codec, CodecConfig, Kind, Packet
from appliance.supervisor import ChildSpec, DynamicSupervisor, Supervisor
from appliance.watchdog import WatchdogStats
from appliance.web import RouteRegistry, create_app, serve_web
from appliance.web.metrics import (
    MetricsInputs,
    collect_families,
    hidden_stream,
    metrics_registry,
    process_figures,
    register_metrics,
)

V = CodecConfig(kind=Kind.VIDEO, codec=Codec.H264, data=b"\x01\x42\xc0\x1e")
A = CodecConfig(kind=Kind.AUDIO, codec=Codec.AAC, data=b"\x12\x10")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def vid(dts: int, key: bool = False) -> Packet:
    payload = b"\x00\x00\x00\x02" + (b"\x65\x88" if key else b"\x41\x9a")
    return Packet(kind=Kind.VIDEO, codec=Codec.H264, payload=payload, pts_ms=dts, dts_ms=dts, keyframe=key)


def aud(dts: int) -> Packet:
    return Packet(
        kind=Kind.AUDIO, codec=Codec.AAC, payload=b"\x21\x10\x00", pts_ms=dts, dts_ms=dts, keyframe=True
    )


def scrape(inputs: MetricsInputs) -> tuple[str, Samples]:
    text = generate_latest(metrics_registry(lambda: inputs, process=False)).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def up(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def crash(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    raise OSError("camera gone")


def inputs(sup: Supervisor, buses: BusRegistry, **kw: object) -> MetricsInputs:
    return MetricsInputs(
        version="1.2.3",
        device="pi",
        uptime_s=42.0,
        supervisor=sup.snapshot(),
        streams=buses.snapshot(),
        **kw,  # type: ignore[arg-type]
    )


async def test_children_by_path_with_state_restarts_and_uptime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    egress = DynamicSupervisor("egress")
    sup = Supervisor(
        "root",
        [
            ChildSpec(name="relay", factory=up, critical=True),
            ChildSpec(name="capture", factory=crash),
            egress.as_child(),
        ],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await egress.start_child(ChildSpec(name="push:yt", factory=up))
        await trio.sleep(3.0)
        _, s = scrape(inputs(sup, BusRegistry()))
        nursery.cancel_scope.cancel()
    assert value(s, "appliance_info", version="1.2.3", device="pi") == 1.0
    assert value(s, "appliance_uptime_seconds") == 42.0
    assert value(s, "appliance_healthy") == 1.0  # capture is not critical
    assert value(s, "appliance_child_up", child="relay") == 1.0
    assert value(s, "appliance_child_up", child="capture") == 0.0
    assert value(s, "appliance_child_up", child="egress/push:yt") == 1.0
    assert value(s, "appliance_child_restarts_total", child="capture") >= 2
    assert value(s, "appliance_child_restarts_total", child="relay") == 0
    assert value(s, "appliance_child_uptime_seconds", child="relay") >= 3.0
    assert value(s, "appliance_child_critical", child="relay") == 1.0
    states = {
        labels: v
        for (n, labels), v in s.items()
        if n == "appliance_child_state" and ("child", "relay") in labels
    }
    assert sum(states.values()) == 1.0
    assert value(s, "appliance_child_state", child="relay", state="running") == 1.0
    assert value(s, "appliance_child_state", child="capture", state="backoff") == 1.0


async def test_streams_counters_by_protocol_survive_players_leaving() -> None:
    sup = Supervisor("root", [])
    buses = BusRegistry()
    player1 = buses.subscribe("live/cam", label="rtmp:10.0.0.1:5000#1")
    player2 = buses.subscribe("live/cam", label="rtmp:10.0.0.2:5000#2")
    buses.subscribe("live/cam", label="record")
    producer = buses.publish("live/cam")
    producer.send_config(V)
    producer.send_config(A)
    producer.send_packet(vid(0, key=True))
    producer.send_packet(aud(10))
    producer.send_packet(vid(40))
    for sub in (player1, player2):
        while True:
            try:
                sub.receive_nowait()
            except trio.WouldBlock:
                break
    _, before = scrape(inputs(sup, buses))
    player2.close()
    _, after = scrape(inputs(sup, buses))

    s = after
    assert value(s, "appliance_stream_live", stream="live/cam") == 1.0
    assert value(s, "appliance_stream_received_bytes_total", stream="live/cam") == 15
    assert value(s, "appliance_stream_received_packets_total", stream="live/cam") == 3
    assert value(s, "appliance_stream_video_frames_total", stream="live/cam") == 2
    assert value(s, "appliance_stream_keyframes_total", stream="live/cam") == 1
    assert value(s, "appliance_stream_publishes_total", stream="live/cam") == 1
    assert value(s, "appliance_stream_subscribers", stream="live/cam", protocol="rtmp") == 1
    assert value(s, "appliance_stream_subscribers", stream="live/cam", protocol="record") == 1
    assert value(s, "appliance_stream_queued_events", stream="live/cam", protocol="record") > 0
    assert value(s, "appliance_stream_lag_seconds", stream="live/cam", protocol="record") == 0.04
    assert value(s, "appliance_stream_sent_bytes_total", stream="live/cam", protocol="record") == 0
    # Both players got everything; one left: its bytes still count.
    for name, total in (
        ("appliance_stream_sent_bytes_total", 30),
        ("appliance_stream_sent_packets_total", 6),
    ):
        assert value(before, name, stream="live/cam", protocol="rtmp") == total
        assert value(after, name, stream="live/cam", protocol="rtmp") == total
    assert value(s, "appliance_stream_dropped_packets_total", stream="live/cam", protocol="rtmp") == 0
    assert value(s, "appliance_stream_cut_off_subscribers_total", stream="live/cam", protocol="rtmp") == 0


def test_capture_and_watchdog_series() -> None:
    capture = {
        "stream": "live/cam",
        "configured": "auto",
        "state": "running",
        "source": "synthetic",
        "width": 1280,
        "height": 720,
        "fps": 30.0,
        "encoder": {
            "encoder": "libx264",
            "bitrate_bps": 2_000_000,
            "keyframe_requests": 3,
            "keyframes_forced": 1,
            "reopens": 0,
        },
        "frames": 900,
        "bytes": 123456,
        "runs": 2,
    }
    stats = WatchdogStats(enabled=True, ready_sent=True, pets=7, withheld=1)
    _, s = scrape(inputs(Supervisor("root", []), BusRegistry(), capture=capture, watchdog=stats))
    assert value(s, "appliance_capture_info", stream="live/cam", source="synthetic", encoder="libx264") == 1
    assert value(s, "appliance_capture_running") == 1
    assert value(s, "appliance_capture_fps") == 30.0
    assert value(s, "appliance_capture_width_pixels") == 1280
    assert value(s, "appliance_capture_frames_total") == 900
    assert value(s, "appliance_capture_runs_total") == 2
    assert value(s, "appliance_capture_keyframes_forced_total") == 1
    assert value(s, "appliance_capture_encoder_target_bytes_per_second") == 250_000
    assert value(s, "appliance_watchdog_enabled") == 1
    assert value(s, "appliance_watchdog_pets_total") == 7
    assert value(s, "appliance_watchdog_withheld_pets_total") == 1

    # Passthrough and a capture that never planned: only what is known is shown.
    bare = {"stream": "live/cam", "configured": "v4l2", "state": "starting", "encoder": {"encoder": "none"}}
    _, s = scrape(inputs(Supervisor("root", []), BusRegistry(), capture=bare))
    assert value(s, "appliance_capture_running") == 0
    assert "appliance_capture_fps" not in names(s)
    assert "appliance_capture_frames_total" not in names(s)
    assert "appliance_watchdog_pets_total" not in names(s)


def test_no_capture_no_streams_no_series() -> None:
    families = collect_families(inputs(Supervisor("root", []), BusRegistry()))
    present = {f.name for f in families if f.samples}
    assert present == {"appliance", "appliance_uptime_seconds", "appliance_healthy"}


def test_secret_stream_keys_stay_out() -> None:
    secrets = {"live": ("s3cret", "v13w")}
    assert hidden_stream("live/s3cret", secrets) and hidden_stream("live/v13w", secrets)
    assert not hidden_stream("live/cam", secrets) and not hidden_stream("other/s3cret", secrets)


async def test_endpoint_serves_text_format_with_process_metrics() -> None:
    class Source:
        version = "9.9.9"
        device_name = "unit"

        def __init__(self) -> None:
            from appliance.config import Config

            self.cfg = Config()
            self.buses = BusRegistry()
            self.capture = None
            self.watchdog_stats = WatchdogStats()
            self.routes = RouteRegistry()
            self.sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True)])

        def uptime_s(self) -> float:
            return 1.0

        def snapshot(self) -> object:
            return self.sup.snapshot()

        def status_extra(self) -> dict[str, object]:
            return {}

        def webrtc_status(self) -> dict[str, object]:
            return {"state": "off", "reason": "disabled: extra not installed"}

    source = Source()
    registry = register_metrics(source.routes, source)  # type: ignore[arg-type]
    source.buses.publish("live/cam")
    async with trio.open_nursery() as nursery:
        await nursery.start(source.sup.run)
        app = create_app(source)  # type: ignore[arg-type]
        urls: list[str] = await nursery.start(serve_web, app, Address("127.0.0.1", 0))

        def get() -> tuple[str, str]:
            with urllib.request.urlopen(urls[0] + "/metrics", timeout=5) as resp:
                return resp.headers["content-type"], resp.read().decode()

        content_type, text = await trio.to_thread.run_sync(get)
        nursery.cancel_scope.cancel()
    assert content_type.startswith("text/plain; version=0.0.4")
    found = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "appliance_child_up"} <= found
    assert 'appliance_stream_live{stream="live/cam"} 1.0' in text
    assert registry is not None


async def test_webrtc_and_process_series() -> None:
    webrtc = {
        "state": "running",
        "viewers": 3,
        "publishers": 1,
        "peer_connections_open": 4,
        "loop_tasks": 12,
        "keyframes_requested": 5,
    }
    process = process_figures()
    assert process["trio_tasks"] >= 1 and process["threads"] >= 1 and process["rss_bytes"] > 0
    _, s = scrape(inputs(Supervisor("root", []), BusRegistry(), webrtc=webrtc, process=process))
    assert value(s, "appliance_webrtc_running") == 1
    assert value(s, "appliance_webrtc_viewers") == 3
    assert value(s, "appliance_webrtc_publishers") == 1
    assert value(s, "appliance_webrtc_peer_connections_open") == 4
    assert value(s, "appliance_webrtc_keyframe_requests_total") == 5
    assert value(s, "appliance_trio_tasks") == process["trio_tasks"]
    off = {"state": "off", "reason": "disabled: extra not installed"}
    _, s = scrape(inputs(Supervisor("root", []), BusRegistry(), webrtc=off))
    assert value(s, "appliance_webrtc_running") == 0 and "appliance_webrtc_viewers" not in names(s)
