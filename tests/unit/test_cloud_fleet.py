"""The fleet controller's sans-IO core: registry invariants, keep-alive bookkeeping, timeouts, grace on
socket loss, reconciliation; and the driver's timer loop under trio's autojump clock."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cloud import reports
from appliance.cloud.controller import (
    Controller,
    ControllerSettings,
    ManagedIngest,
    parse_device_tokens,
    settings_from,
)
from appliance.cloud.fleet import (
    Action,
    Close,
    Conflict,
    DeviceOffline,
    DuplicateStream,
    Ended,
    Log,
    SendTo,
    StartRequest,
    StreamLifecycleController,
    Timing,
    UnknownDevice,
)
from appliance.config import Address

URL = "rtmp://ingest.example/live/secret-key"


def hello(device: str = "dev1") -> str:
    return json.dumps(
        {"type": "hello", "deviceId": device, "version": "1", "board": "pc", "capabilities": []}
    )


def sent(actions: Sequence[Action], conn: int | None = None) -> list[dict[str, Any]]:
    return [json.loads(a.text) for a in actions if isinstance(a, SendTo) and (conn is None or a.conn == conn)]


def of(actions: Sequence[Action], kind: str) -> list[dict[str, Any]]:
    return [m for m in sent(actions) if m["type"] == kind]


def ack(stream_id: str, ack_id: str) -> str:
    return json.dumps({"type": "keep_alive_ack", "streamId": stream_id, "ackId": ack_id})


def status(stream_id: str, state: str, details: str | None = None) -> str:
    doc: dict[str, Any] = {"type": "rtmp_stream_status", "streamId": stream_id, "appId": "a", "status": state}
    if details:
        doc["errorDetails"] = details
    return json.dumps(doc)


def online(core: StreamLifecycleController, conn: int = 1, device: str = "dev1", now: float = 0.0) -> None:
    core.connected(conn, now)
    core.receive(conn, hello(device), now)


def started(
    core: StreamLifecycleController, stream_id: str = "s1", now: float = 0.0, **kw: Any
) -> list[Action]:
    _, actions = core.start(
        StartRequest(stream_id=stream_id, device_id=kw.pop("device", "dev1"), url=URL, **kw), now
    )
    return actions


def run_until(
    core: StreamLifecycleController, until: float, answer: bool = True, conn: int = 1
) -> list[Action]:
    """Fire every timer up to `until`, answering each keep-alive at once when `answer`."""
    actions: list[Action] = []
    while (deadline := core.get_timer()) is not None and deadline <= until:
        step = core.handle_timer(deadline)
        actions += step
        if answer:
            for msg in of(step, "keep_rtmp_stream_alive"):
                actions += core.receive(conn, ack(msg["streamId"], msg["ackId"]), deadline)
    return actions


def test_start_sends_the_start_and_registers_one_stream_per_device() -> None:
    core = StreamLifecycleController()
    online(core)
    actions = started(core, source="live/cam", duration_limit_ms=60_000, app_id="app")
    (start,) = of(actions, "start_rtmp_stream")
    assert start["streamId"] == "s1" and start["rtmpUrl"] == URL and start["source"] == "live/cam"
    assert start["stream"] == {"durationLimit": 60_000} and start["appId"] == "app"
    assert [s.stream_id for s in core.registry.active_streams()] == ["s1"]
    with pytest.raises(Conflict) as conflict:
        started(core, "s2")
    assert conflict.value.existing == "s1" and core.counters["conflicts"] == 1
    with pytest.raises(DuplicateStream):
        core.start(StartRequest(stream_id="s1", device_id="dev1", url=URL), 0.0, replace=True)
    with pytest.raises(UnknownDevice):
        started(core, "s3", device="nobody")
    with pytest.raises(ValueError, match="url"):
        core.start(StartRequest(stream_id="s4", device_id="dev1", url="http://x/y/z"), 0.0)
    # Replacing ends the old stream (the device stops it itself when it gets the new start).
    _, actions = core.start(StartRequest(stream_id="s5", device_id="dev1", url=URL), 1.0, replace=True)
    assert [e for e in actions if isinstance(e, Ended)] == [
        Ended("s1", "unmanaged", "stopped", "replaced by s5")
    ]
    assert of(actions, "stop_rtmp_stream") == []
    assert [s.stream_id for s in core.registry.active_streams()] == ["s5"]
    assert core.registry.streams["s1"].end_reason == "replaced by s5"


def test_an_offline_device_cannot_start() -> None:
    core = StreamLifecycleController()
    online(core)
    core.disconnected(1, 0.0)
    with pytest.raises(DeviceOffline):
        started(core)


def test_keep_alives_answered_keep_the_stream_forever() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3))
    online(core)
    started(core)
    actions = run_until(core, 3600)
    assert len(of(actions, "keep_rtmp_stream_alive")) == 240
    stream = core.registry.streams["s1"]
    assert stream.active and stream.missed_total == 0 and core.counters["acks"] == 240


def test_three_missed_acks_time_the_stream_out_and_tell_the_device() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3))
    online(core)
    started(core)
    actions = run_until(core, 1000, answer=False)
    stream = core.registry.streams["s1"]
    # Keep-alives at 15, 30, 45; the third is missed at 55.
    assert (
        stream.state == "timeout"
        and stream.ended_at == 55
        and stream.end_reason == "3 keep-alives unanswered"
    )
    assert len(of(actions, "keep_rtmp_stream_alive")) == 3
    assert [m["streamId"] for m in of(actions, "stop_rtmp_stream")] == ["s1"]
    assert [a for a in actions if isinstance(a, Ended)] == [
        Ended("s1", "unmanaged", "timeout", "3 keep-alives unanswered")
    ]
    assert core.registry.active_streams() == [] and core.counters["missed_acks"] == 3
    assert core.counters["timeouts"] == 1 and core.get_timer() is None


def test_an_answer_resets_the_run_of_misses() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3))
    online(core)
    started(core)
    for _ in range(5):  # miss two, answer the third, over and over: never three in a row
        for answer in (False, False, True):
            deadline = core.get_timer()
            assert deadline is not None
            step = core.handle_timer(deadline)
            while deadline is not None and not of(step, "keep_rtmp_stream_alive"):
                deadline = core.get_timer()
                assert deadline is not None
                step = core.handle_timer(deadline)
            if answer:
                (msg,) = of(step, "keep_rtmp_stream_alive")
                core.receive(1, ack("s1", msg["ackId"]), deadline)
    stream = core.registry.streams["s1"]
    assert stream.active and stream.missed_total >= 8 and stream.missed == 0


def test_duplicate_late_unknown_and_out_of_order_acks() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=20, max_missed=3))
    online(core)
    started(core)
    first = of(core.handle_timer(15), "keep_rtmp_stream_alive")[0]["ackId"]
    second = of(core.handle_timer(30), "keep_rtmp_stream_alive")[0]["ackId"]
    stream = core.registry.streams["s1"]
    assert list(stream.pending) == [first, second]
    # Out of order: the newer ack clears the older keep-alive too (the device is alive)...
    assert core.receive(1, ack("s1", second), 31) == []
    assert not stream.pending and stream.acks == 1
    # ...and the older ack, arriving after, is stale, as are duplicates and ids never sent.
    for late in (first, second, "never-sent"):
        core.receive(1, ack("s1", late), 32)
    core.receive(1, ack("other-stream", first), 32)
    assert core.counters["stale_acks"] == 4 and core.counters["acks"] == 1
    assert stream.active and stream.missed == 0


def test_ack_loss_then_a_late_answer_does_not_undo_the_miss() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3))
    online(core)
    started(core)
    ka = of(core.handle_timer(15), "keep_rtmp_stream_alive")[0]["ackId"]
    core.handle_timer(25)  # missed
    core.receive(1, ack("s1", ka), 26)
    stream = core.registry.streams["s1"]
    assert stream.missed == 1 and core.counters["stale_acks"] == 1


def test_a_lost_socket_is_graced_and_a_reconnect_within_it_keeps_the_stream() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3))
    online(core)
    started(core, duration_limit_ms=600_000)
    run_until(core, 20)  # one keep-alive answered at 15
    assert [a.event for a in core.disconnected(1, 20) if isinstance(a, Log)] == [
        "controller.device_disconnected"
    ]
    assert core.counters["socket_losses"] == 1
    run_until(core, 50, answer=False)  # keep-alives at 30 and 45 go nowhere; the one at 30 is missed at 40
    stream = core.registry.streams["s1"]
    assert stream.active and stream.missed == 1
    core.connected(2, 52)
    actions = core.receive(2, hello(), 52)
    # The device is sent its stream again (adopt, or restart after a reboot: the device decides) with what
    # is left of its duration limit, and a keep-alive at once.
    (start,) = of(actions, "start_rtmp_stream")
    assert start["streamId"] == "s1" and start["stream"]["durationLimit"] == 600_000 - 52_000
    (ka,) = of(actions, "keep_rtmp_stream_alive")
    assert all(a.conn == 2 for a in actions if isinstance(a, SendTo))
    core.receive(2, ack("s1", ka["ackId"]), 52.5)
    core.receive(2, status("s1", "streaming"), 52.6)
    run_until(core, 500, conn=2)
    assert stream.active and stream.state == "streaming" and core.counters["socket_recoveries"] == 1


def test_a_socket_that_stays_down_times_the_stream_out_within_the_grace() -> None:
    timing = Timing(keepalive_s=15, ack_timeout_s=10, max_missed=3)
    core = StreamLifecycleController(timing)
    online(core)
    started(core)
    run_until(core, 15)  # answered at 15
    core.disconnected(1, 16)
    actions = run_until(core, 1000, answer=False)
    stream = core.registry.streams["s1"]
    assert stream.state == "timeout" and stream.ended_at == 15 + timing.grace_s
    assert sent(actions) == []  # nobody to tell: the device's dead-man timer stops its push


def test_operator_stop_waits_for_the_device_then_gives_up() -> None:
    core = StreamLifecycleController(Timing(stop_timeout_s=10))
    online(core)
    started(core)
    actions = core.stop("s1", 1)
    assert [m["streamId"] for m in of(actions, "stop_rtmp_stream")] == ["s1"]
    stream = core.registry.streams["s1"]
    assert stream.state == "stopping" and stream.active
    assert core.stop("s1", 2) == []  # stopping twice is no error
    core.receive(1, status("s1", "streaming"), 3)  # an in-flight status does not revive it
    assert stream.state == "stopping"
    actions = core.receive(1, status("s1", "stopped", "stopped by the controller"), 4)
    assert stream.state == "stopped" and not stream.active and any(isinstance(a, Ended) for a in actions)
    # Unconfirmed: ended after stop_timeout_s anyway (keep-alives stopped, so the dead-man ends the push).
    started(core, "s2", now=5)
    core.stop("s2", 6)
    assert core.get_timer() == 16
    core.handle_timer(16)
    assert core.registry.streams["s2"].state == "stopped"
    assert "did not confirm" in (core.registry.streams["s2"].end_reason or "")
    with pytest.raises(KeyError):
        core.stop("nope", 0)


def test_stop_of_an_offline_device_ends_at_once() -> None:
    core = StreamLifecycleController()
    online(core)
    started(core)
    core.disconnected(1, 1)
    actions = core.stop("s1", 2)
    assert sent(actions) == [] and core.registry.streams["s1"].state == "stopped"


def test_device_statuses_move_the_stream_and_end_it() -> None:
    core = StreamLifecycleController()
    online(core)
    started(core)
    stream = core.registry.streams["s1"]
    for state in ("connecting", "streaming", "reconnecting", "error", "streaming"):
        actions = core.receive(1, status("s1", state, "boom" if state == "error" else None), 1)
        assert stream.state == state and [a.fields["to"] for a in actions if isinstance(a, Log)] == [state]
    assert stream.error is None
    core.receive(1, status("s1", "timeout", "no keep-alive for 60 s"), 2)
    assert stream.state == "timeout" and stream.end_reason == "no keep-alive for 60 s"


def test_orphans_are_stopped_and_stale_errors_ignored() -> None:
    core = StreamLifecycleController()
    online(core)
    actions = core.receive(1, status("ghost", "streaming"), 1)
    assert [m["streamId"] for m in of(actions, "stop_rtmp_stream")] == ["ghost"]
    assert core.counters["orphans_stopped"] == 1
    # The device's answer to a stale keep-alive, or a final status, needs nothing.
    assert sent(core.receive(1, status("ghost", "error", "unknown streamId ghost"), 2)) == []
    assert sent(core.receive(1, status("ghost", "stopped"), 2)) == []
    # A stream that timed out while the device was away is an orphan when the device reports it.
    started(core)
    core.disconnected(1, 3)
    run_until(core, 1000, answer=False)
    core.connected(2, 1001)
    core.receive(2, hello(), 1001)
    actions = core.receive(2, status("s1", "streaming"), 1002)
    assert [m["streamId"] for m in of(actions, "stop_rtmp_stream")] == ["s1"]


def test_malformed_frames_get_errors_and_change_nothing() -> None:
    core = StreamLifecycleController()
    core.connected(1, 0)
    (reply,) = sent(core.receive(1, ack("s1", "a"), 0))
    assert reply["type"] == "error" and "hello" in reply["message"]
    online(core)
    started(core)
    for junk in ("", "{", "[1]", '{"type": null}', '{"type": "weird"}', '{"type": "hello"}',
                 '{"type": "rtmp_stream_status", "streamId": "s1", "status": "dancing"}',
                 '{"type": "keep_alive_ack", "streamId": "s1", "ackId": 5}', "x" * 70_000):  # fmt: skip
        replies = sent(core.receive(1, junk, 1))
        assert [r["type"] for r in replies] == ["error"], junk
    assert core.counters["malformed"] == 9
    assert core.registry.streams["s1"].state == "initializing"


def test_a_second_connection_of_a_device_replaces_the_first() -> None:
    core = StreamLifecycleController()
    online(core, conn=1)
    core.connected(2, 1)
    actions = core.receive(2, hello(), 1)
    assert Close(1, "the device connected again") in actions
    assert core.registry.devices["dev1"].conn == 2
    assert core.disconnected(1, 2) == []  # the old connection's end changes nothing
    assert core.registry.devices["dev1"].connected


def test_a_token_bound_to_a_device_refuses_another_device_id() -> None:
    core = StreamLifecycleController()
    core.connected(1, 0, device_id="dev1")
    assert core.receive(1, hello("dev2"), 0) == [Close(1, "this connection's token belongs to device 'dev1'")]
    assert "dev2" not in core.registry.devices


def test_the_controller_also_ends_a_stream_at_its_duration_limit() -> None:
    core = StreamLifecycleController(Timing(keepalive_s=15, ack_timeout_s=10))
    online(core)
    started(core, duration_limit_ms=30_000)
    run_until(core, 1000)
    stream = core.registry.streams["s1"]
    assert (
        stream.state == "stopped" and stream.end_reason == "duration limit reached" and stream.ended_at == 40
    )


# --- the one-stream rule under any interleaving -----------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from(["dev1", "dev2"]), st.booleans()),
        st.tuples(st.just("stop"), st.integers(0, 20)),
        st.tuples(st.just("tick"), st.floats(0, 30)),
        st.tuples(st.just("drop"), st.sampled_from(["dev1", "dev2"])),
        st.tuples(st.just("back"), st.sampled_from(["dev1", "dev2"])),
        st.tuples(st.just("ack"), st.integers(0, 20)),
        st.tuples(st.just("status"), st.integers(0, 20), st.sampled_from(["streaming", "stopped", "error"])),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_never_more_than_one_active_stream_per_device(ops: list[tuple[Any, ...]]) -> None:
    core = StreamLifecycleController(Timing(keepalive_s=5, ack_timeout_s=3, max_missed=2, stop_timeout_s=4))
    conns = {"dev1": 1, "dev2": 2}
    next_conn = 3
    for device, conn in conns.items():
        online(core, conn, device)
    now, n = 0.0, 0
    sent_keepalives: list[dict[str, Any]] = []
    for op in ops:
        if op[0] == "start":
            n += 1
            with contextlib.suppress(Conflict, DeviceOffline):
                core.start(StartRequest(stream_id=f"s{n}", device_id=op[1], url=URL), now, replace=op[2])
        elif op[0] == "stop" and f"s{op[1]}" in core.registry.streams:
            core.stop(f"s{op[1]}", now)
        elif op[0] == "tick":
            now += op[1]
            while (deadline := core.get_timer()) is not None and deadline <= now:
                sent_keepalives += of(core.handle_timer(deadline), "keep_rtmp_stream_alive")
        elif op[0] == "drop" and core.registry.devices[op[1]].connected:
            core.disconnected(conns[op[1]], now)
        elif op[0] == "back" and not core.registry.devices[op[1]].connected:
            conns[op[1]] = next_conn
            next_conn += 1
            online(core, conns[op[1]], op[1], now)
        elif op[0] == "ack" and op[1] < len(sent_keepalives):
            msg = sent_keepalives[op[1]]
            stream = core.registry.streams.get(msg["streamId"])
            if stream is not None:
                core.receive(conns[stream.device_id], ack(msg["streamId"], msg["ackId"]), now)
        elif op[0] == "status" and f"s{op[1]}" in core.registry.streams:
            stream = core.registry.streams[f"s{op[1]}"]
            core.receive(conns[stream.device_id], status(stream.stream_id, op[2]), now)
        for device in ("dev1", "dev2"):
            active = [s for s in core.registry.streams.values() if s.active and s.device_id == device]
            assert len(active) <= 1
            assert core.registry.active_stream(device) is (active[0] if active else None)
        for stream in core.registry.streams.values():
            assert stream.active == (stream.state not in ("stopped", "timeout"))


# --- wire, tokens, settings, managed ingest -----------------------------------------------------------


def test_device_messages_round_trip_through_the_device_encoders() -> None:
    from appliance.cloud import protocol
    from appliance.cloud.protocol import StreamStats

    text = protocol.stream_status("s1", "a", "streaming", 5, None, StreamStats(bitrate_bps=1, fps=2.5,
                                  dropped_frames=3, duration_ms=4))  # fmt: skip
    parsed = reports.parse_device_message(text)
    assert isinstance(parsed, reports.StreamStatus) and parsed.stats is not None and parsed.stats.fps == 2.5
    beat = reports.parse_device_message(protocol.device_status(1.5, [{"streamId": "s1"}], "ok", 5))
    assert beat == reports.DeviceStatus(uptime_ms=1500, streams=({"streamId": "s1"},), health="ok")
    err = reports.parse_device_message(protocol.error_reply("bad", {"type": "x"}, 5))
    assert isinstance(err, reports.DeviceError) and err.about == {"type": "x"}
    # And what the controller sends, the device parses.
    start = protocol.parse_controller_message(reports.start_stream("s1", "a", URL, 1, duration_limit_ms=9))
    assert isinstance(start, protocol.StartStream) and start.duration_limit_ms == 9 and start.url == URL
    keep = protocol.parse_controller_message(reports.keep_alive("s1", "k1", 1))
    assert keep == protocol.KeepAlive(stream_id="s1", ack_id="k1")
    assert protocol.parse_controller_message(reports.stop_stream("s1", "a", 1)) == protocol.StopStream(
        stream_id="s1", app_id="a"
    )


def test_device_tokens_parse_from_env_and_file_forms() -> None:
    assert parse_device_tokens("north=aaaaaaaaaaaaaaaa, south=bbbbbbbbbbbbbbbb") == {
        "aaaaaaaaaaaaaaaa": "north",
        "bbbbbbbbbbbbbbbb": "south",
    }
    assert parse_device_tokens("# fleet\nnorth cccccccccccccccc\n* dddddddddddddddd\neeeeeeeeeeeeeeee\n") == {
        "cccccccccccccccc": "north",
        "dddddddddddddddd": None,
        "eeeeeeeeeeeeeeee": None,
    }
    with pytest.raises(ValueError, match="16 characters"):
        parse_device_tokens("north=short")
    with pytest.raises(ValueError, match="twice"):
        parse_device_tokens("a=aaaaaaaaaaaaaaaa,b=aaaaaaaaaaaaaaaa")


def test_settings_name_the_bad_flag_and_refuse_an_open_public_listen() -> None:
    args = SimpleNamespace(listen="127.0.0.1:1", rtmp_listen="off", public_host="", device_tokens=None,
                           keepalive="15s", ack_timeout="10s", max_missed=3, stop_timeout="10s")  # fmt: skip
    assert settings_from(args, {}).rtmp_listen is None
    with pytest.raises(ValueError, match="--keepalive=15"):
        settings_from(SimpleNamespace(**{**vars(args), "keepalive": "15"}), {})
    with pytest.raises(ValueError, match="tokens"):
        settings_from(SimpleNamespace(**{**vars(args), "listen": "0.0.0.0:8700"}), {})


def test_managed_ingest_wants_the_stream_secret_to_publish_and_forgets_it_on_close() -> None:
    ingest = ManagedIngest(Address("127.0.0.1", 1936), "cloud.example", "managed")
    url = ingest.open("s 1")
    key, _, query = url.rpartition("/")[2].partition("?key=")
    assert url.startswith("rtmp://cloud.example:1936/managed/s_1-") and len(query) >= 20
    auth = ingest._authorise
    assert auth("publish", "managed", key, {"key": query}, {})
    assert auth("publish", "managed", key, {}, {"key": query})
    assert not auth("publish", "managed", key, {"key": "guess"}, {})
    assert not auth("publish", "live", key, {"key": query}, {})
    assert auth("play", "managed", key, {}, {}) and not auth("play", "managed", "other", {}, {})
    assert ingest.play_url("s 1") == f"rtmp://cloud.example:1936/managed/{key}"
    ingest.close("s 1", "stopped")
    assert not auth("publish", "managed", key, {"key": query}, {}) and not auth(
        "play", "managed", key, {}, {}
    )


async def test_the_driver_keeps_alive_and_times_out_on_trio_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    controller = Controller(ControllerSettings(rtmp_listen=None))
    send, receive = trio.open_memory_channel[str](100)
    controller._outboxes[1] = send
    controller.apply(controller.core.connected(1, trio.current_time()))
    controller.apply(controller.core.receive(1, hello(), trio.current_time()))
    _, actions = controller.core.start(
        StartRequest(stream_id="s1", device_id="dev1", url=URL), trio.current_time()
    )
    controller.apply(actions)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(controller._timers)
        start = trio.current_time()
        assert json.loads(receive.receive_nowait())["type"] == "start_rtmp_stream"
        seen: list[tuple[float, str]] = []
        for _ in range(3):
            msg = json.loads(await receive.receive())
            seen.append((trio.current_time() - start, msg["type"]))
        assert seen == [
            (15, "keep_rtmp_stream_alive"),
            (30, "keep_rtmp_stream_alive"),
            (45, "keep_rtmp_stream_alive"),
        ]
        msg = json.loads(await receive.receive())
        assert (trio.current_time() - start, msg["type"]) == (55, "stop_rtmp_stream")
        assert controller.core.registry.active_streams() == []
        nursery.cancel_scope.cancel()
