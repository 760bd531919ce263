"""The cloud-stream lifecycle core: controller messages, push reports and time in; actions out.

Pure: no trio, no sleeps; every call gets its `now` (seconds on the driver's clock).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.cloud.lifecycle import Action, DeviceStreams, Send, StartPush, StopPush
from appliance.cloud.protocol import KeepAlive, StartStream, StopStream, StreamStats

URL = "rtmp://ingest.example.com/live/sk-secret-1"
URL2 = "rtmps://ingest.example.com/live/sk-secret-2"


def start(stream_id: str = "s1", url: str = URL, **over: Any) -> StartStream:
    return StartStream(stream_id=stream_id, app_id="app", url=url, **over)


def keep(stream_id: str = "s1", ack_id: str = "k1") -> KeepAlive:
    return KeepAlive(stream_id=stream_id, ack_id=ack_id)


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    """The Send actions' messages, decoded."""
    return [json.loads(a.text) for a in actions if isinstance(a, Send)]


def statuses(actions: list[Action]) -> list[tuple[str, str]]:
    return [(m["streamId"], m["status"]) for m in sent(actions) if m["type"] == "rtmp_stream_status"]


def pushes(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Send)]


def started(now: float = 0.0, **kwargs: Any) -> DeviceStreams:
    core = DeviceStreams(**kwargs)
    core.handle(start(), now)
    return core


def test_start_pushes_and_reports_initializing() -> None:
    core = DeviceStreams(wall_offset_s=1_700_000_000.0)
    actions = core.handle(start(source="live/cam2"), 10.0)
    assert pushes(actions) == [StartPush(stream_id="s1", url=URL, source="live/cam2")]
    [status] = sent(actions)
    assert status == {
        "type": "rtmp_stream_status",
        "timestamp": 1_700_000_010_000,
        "streamId": "s1",
        "appId": "app",
        "status": "initializing",
    }
    active = core.active
    assert active is not None
    assert (active.stream_id, active.app_id, active.url, active.source) == ("s1", "app", URL, "live/cam2")
    assert (active.started_at, active.state) == (10.0, "initializing")
    assert "sk-secret" not in repr(active) and "sk-secret" not in repr(actions)


def test_deadman_fires_at_exactly_deadman_s() -> None:
    core = started(now=5.0, deadman_s=60.0)
    assert core.get_timer() == 65.0
    assert core.handle_timer(64.999) == []
    actions = core.handle_timer(65.0)
    assert pushes(actions) == [StopPush(stream_id="s1", reason="no keep-alive for 60 s")]
    [status] = sent(actions)
    assert (status["status"], status["errorDetails"]) == ("timeout", "no keep-alive for 60 s")
    assert core.active is None and core.get_timer() is None
    assert core.handle_timer(1000.0) == []


def test_keep_alives_keep_it_alive_and_are_acked() -> None:
    core = started(deadman_s=60.0)
    for i, now in enumerate([50.0, 100.0, 150.0, 200.0]):
        actions = core.handle(keep(ack_id=f"k{i}"), now)
        assert [(m["type"], m["streamId"], m["ackId"]) for m in sent(actions)] == [
            ("keep_alive_ack", "s1", f"k{i}")
        ]
        assert pushes(actions) == []
        assert core.get_timer() == now + 60.0
    assert core.handle_timer(259.9) == []
    assert core.active is not None and core.active.state == "initializing"
    assert statuses(core.handle_timer(260.0)) == [("s1", "timeout")]


def test_late_keep_alive_finds_the_stream_timed_out() -> None:
    # The driver saw the keep-alive before it fired the timer: the deadline still wins.
    core = started(deadman_s=60.0)
    actions = core.handle(keep(), 60.0)
    assert pushes(actions) == [StopPush(stream_id="s1", reason="no keep-alive for 60 s")]
    assert statuses(actions) == [("s1", "timeout"), ("s1", "error")]
    assert sent(actions)[1]["errorDetails"] == "unknown streamId s1"


def test_duplicate_and_out_of_order_keep_alives() -> None:
    core = started()
    acks = []
    for ack in ["k2", "k1", "k2", "k3", "k1"]:
        actions = core.handle(keep(ack_id=ack), 10.0)
        assert pushes(actions) == []
        acks += [m["ackId"] for m in sent(actions)]
    assert acks == ["k2", "k1", "k2", "k3", "k1"]  # each acked, none judged
    assert core.active is not None and core.active.state == "initializing"
    assert core.get_timer() == 70.0


def test_stale_keep_alive_changes_nothing() -> None:
    core = started()
    core.handle(start("s2"), 5.0)  # replaces s1
    before = core.active
    actions = core.handle(keep("s1"), 30.0)
    assert pushes(actions) == []
    [status] = sent(actions)
    assert status == {
        "type": "rtmp_stream_status",
        "timestamp": 30_000,
        "streamId": "s1",
        "appId": "",
        "status": "error",
        "errorDetails": "unknown streamId s1",
    }
    assert core.active == before
    assert core.get_timer() == 65.0  # s2's dead-man was not reset by s1's keep-alive


def test_keep_alive_with_nothing_running() -> None:
    core = DeviceStreams()
    assert statuses(core.handle(keep("ghost"), 0.0)) == [("ghost", "error")]
    assert core.active is None


def test_second_start_replaces_the_first_old_stopped_first() -> None:
    core = started()
    actions = core.handle(start("s2", URL2), 5.0)
    assert actions[0] == StopPush(stream_id="s1", reason="replaced by s2")
    assert isinstance(actions[1], Send)
    assert actions[2] == StartPush(stream_id="s2", url=URL2, source="live/cam")
    assert statuses(actions) == [("s1", "stopped"), ("s2", "initializing")]
    assert sent(actions)[0]["errorDetails"] == "replaced by s2"
    assert core.active is not None and core.active.stream_id == "s2"
    # s1's push winding down is stale now.
    assert core.push_state("s1", "error", 6.0, error="closed") == []
    assert core.push_stopped("s1", 6.0) == []


def test_repeated_start_is_idempotent() -> None:
    core = started()
    core.push_state("s1", "streaming", 2.0)
    actions = core.handle(start(), 30.0)
    assert pushes(actions) == []
    assert statuses(actions) == [("s1", "streaming")]
    assert core.active is not None and core.active.started_at == 0.0
    assert core.get_timer() == 90.0  # a start counts as a keep-alive


@pytest.mark.parametrize("change", [{"url": URL2}, {"source": "live/other"}])
def test_start_same_id_new_url_or_source_restarts(change: dict[str, str]) -> None:
    core = started()
    core.push_state("s1", "streaming", 2.0)
    new = start(**change)
    actions = core.handle(new, 30.0)
    assert pushes(actions) == [
        StopPush(stream_id="s1", reason="restarted with a new URL or source"),
        StartPush(stream_id="s1", url=new.url, source=new.source),
    ]
    assert statuses(actions) == [("s1", "initializing")]
    assert core.active is not None and core.active.started_at == 30.0 and core.active.url == new.url


def test_stop_waits_for_the_push_to_end() -> None:
    core = started()
    actions = core.handle(StopStream(stream_id="s1", app_id="app"), 10.0)
    assert pushes(actions) == [StopPush(stream_id="s1", reason="stopped by the controller")]
    assert statuses(actions) == [("s1", "stopping")]
    assert core.get_timer() is None  # on its way out: no dead-man
    assert core.active is not None and core.active.state == "stopping"
    # A repeated stop re-reports, stops nothing twice; a push report while stopping is ignored.
    again = core.handle(StopStream(stream_id="s1", app_id="app"), 11.0)
    assert pushes(again) == [] and statuses(again) == [("s1", "stopping")]
    assert core.push_state("s1", "reconnecting", 11.5) == []
    # The keep-alive that crossed the stop is still acked.
    assert [m["type"] for m in sent(core.handle(keep(), 11.7))] == ["keep_alive_ack"]
    assert statuses(core.push_stopped("s1", 12.0)) == [("s1", "stopped")]
    assert core.active is None
    assert core.push_stopped("s1", 13.0) == []


def test_stop_unknown_is_stopped_and_changes_nothing() -> None:
    core = started()
    before = core.active
    actions = core.handle(StopStream(stream_id="old", app_id="a2"), 10.0)
    assert pushes(actions) == []
    [status] = sent(actions)
    assert (status["streamId"], status["appId"], status["status"]) == ("old", "a2", "stopped")
    assert core.active == before
    assert statuses(DeviceStreams().handle(StopStream(stream_id="x", app_id="a"), 0.0)) == [("x", "stopped")]


def test_start_while_stopping_another() -> None:
    core = started()
    core.handle(StopStream(stream_id="s1", app_id="app"), 1.0)
    actions = core.handle(start("s2"), 2.0)
    # s1's StopPush already went out with the StopStream.
    assert pushes(actions) == [StartPush(stream_id="s2", url=URL, source="live/cam")]
    assert statuses(actions) == [("s1", "stopped"), ("s2", "initializing")]


def test_start_same_id_while_stopping_restarts() -> None:
    core = started()
    core.handle(StopStream(stream_id="s1", app_id="app"), 1.0)
    actions = core.handle(start(), 2.0)
    assert pushes(actions) == [StartPush(stream_id="s1", url=URL, source="live/cam")]
    assert statuses(actions) == [("s1", "initializing")]
    assert core.push_stopped("s1", 3.0) == []  # the old push's end: the new one is not stopping


def test_duration_limit() -> None:
    core = DeviceStreams(deadman_s=60.0)
    core.handle(start(duration_limit_ms=90_000), 10.0)
    assert core.get_timer() == 70.0  # the dead-man comes first
    core.handle(keep(), 60.0)
    assert core.get_timer() == 100.0  # now the limit does
    assert core.handle_timer(99.0) == []
    actions = core.handle_timer(100.0)
    assert pushes(actions) == [StopPush(stream_id="s1", reason="duration limit reached")]
    [status] = sent(actions)
    assert (status["status"], status["errorDetails"]) == ("stopped", "duration limit reached")
    assert core.active is None


def test_announce_after_reconnect() -> None:
    core = started()
    assert DeviceStreams().announce(0.0) == []
    core.push_state("s1", "streaming", 1.0)
    # The socket is down from 2 s; keep-alives don't arrive, the dead-man keeps running.
    actions = core.announce(30.0)
    assert statuses(actions) == [("s1", "streaming")] and pushes(actions) == []
    actions = core.announce(61.0)  # reconnected too late: the stream timed out first
    assert statuses(actions) == [("s1", "timeout")]
    assert core.announce(62.0) == []


def test_push_state_transitions_reported_once_each() -> None:
    core = started()
    stats = StreamStats(bitrate_bps=2_000_000, fps=30.0, dropped_frames=0, duration_ms=4000)
    reports = [
        ("connecting", None),
        ("connecting", None),
        ("streaming", None),
        ("streaming", None),
        ("reconnecting", None),
        ("streaming", None),
        ("error", "connection refused"),
        ("error", "connection refused again"),
    ]
    got = []
    for i, (state, error) in enumerate(reports):
        got += sent(core.push_state("s1", state, 1.0 + i, error=error, stats=stats if i == 3 else None))
    assert [m["status"] for m in got] == ["connecting", "streaming", "reconnecting", "streaming", "error"]
    assert got[-1]["errorDetails"] == "connection refused"
    assert got[3]["stats"] == {"bitrate": 2_000_000, "fps": 30.0, "droppedFrames": 0, "duration": 4000}
    assert "errorDetails" not in got[3]
    assert core.active is not None and core.active.state == "error" and core.active.stats == stats
    # An error report is in the status the announce re-sends.
    assert sent(core.announce(20.0))[0]["errorDetails"] == "connection refused again"


def test_push_state_stale_and_invalid() -> None:
    core = started()
    assert core.push_state("other", "streaming", 1.0) == []
    assert DeviceStreams().push_state("s1", "streaming", 1.0) == []
    with pytest.raises(ValueError, match="'stopped'"):
        core.push_state("s1", "stopped", 1.0)
    assert core.active is not None and core.active.state == "initializing"


def test_receive_parses_and_answers_bad_frames() -> None:
    core = DeviceStreams()
    text = json.dumps({"type": "start_rtmp_stream", "streamId": "s1", "appId": "a", "rtmpUrl": URL})
    assert pushes(core.receive(text, 0.0)) == [StartPush(stream_id="s1", url=URL, source="live/cam")]
    [reply] = sent(core.receive('{"type": "keep_stream_alive", "streamId": "s1"}', 1.0))
    assert reply == {
        "type": "error",
        "timestamp": 1000,
        "message": "keep_stream_alive.ackId: missing",
        "about": {"type": "keep_stream_alive", "streamId": "s1"},
    }
    assert core.active is not None and core.active.last_seen == 0.0
    # A bad frame at the deadline still fires it.
    assert statuses(core.receive("junk", 60.0)) == [("s1", "timeout")]


def test_deadman_must_be_positive() -> None:
    with pytest.raises(ValueError, match="deadman_s"):
        DeviceStreams(deadman_s=0)
    core = started(deadman_s=2.5)
    assert pushes(core.handle_timer(2.5)) == [StopPush(stream_id="s1", reason="no keep-alive for 2.5 s")]
