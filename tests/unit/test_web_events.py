"""The status page's live feed (one snapshot per interval shared by every open stream, ended by the
client going away) and its static files (ETag, no file system paths from requests), under trio's
autojump clock with a stand-in appliance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from appliance.config import Config
from appliance.media.recorder import Recorder
from appliance.supervision.snapshot import ChildSnapshot, SupervisorSnapshot
from appliance.supervision.spec import ChildState, Restart
from appliance.web.events import StatusFeed, _EventStream, children_rows, format_event
from appliance.web.page import STATIC_DIR, etag_matches, load_static


def child(name: str, **kw: Any) -> ChildSnapshot:
    fields: dict[str, Any] = dict(
        name=name,
        state=ChildState.RUNNING,
        critical=False,
        restart=Restart.PERMANENT,
        ready=True,
        ever_ready=True,
        restarts=0,
        last_error=None,
        last_error_trace=(),
        last_error_at=None,
        uptime_s=12.34,
        next_restart_in_s=None,
        down_for_s=None,
        grace_s=5.0,
        ok=True,
        healthy=True,
        degraded=False,
        children=None,
    )
    fields.update(kw)
    return ChildSnapshot(**fields)


def tree() -> SupervisorSnapshot:
    push = child("push:yt", state=ChildState.BACKOFF, ok=False, degraded=True, restarts=3,
                 last_error="ConnectionRefusedError: [Errno 111]", last_error_at=95.0, uptime_s=None,
                 down_for_s=4.0, next_restart_in_s=1.5)  # fmt: skip
    egress = SupervisorSnapshot(
        name="egress", strategy="dynamic", children=(push,), taken_at=100.0, escalated=None
    )
    return SupervisorSnapshot(
        name="root",
        strategy="one_for_one",
        children=(child("web", critical=True, manual_restarts=1), child("egress", children=egress)),
        taken_at=100.0,
        escalated=None,
    )


class Source:
    """The parts of the Appliance the feed reads."""

    version = "9.9.9"
    device_name = "cam-1"
    recorder: Recorder | None = None
    board = {"model": "Raspberry Pi 4 Model B Rev 1.5"}
    cfg = Config()

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.streams_read = 0

    def uptime_s(self) -> float:
        return 42.0

    def snapshot(self) -> SupervisorSnapshot:
        return tree()

    def describe_streams(self) -> list[dict[str, Any]]:
        self.streams_read += 1
        return [{"name": "live/cam", "bitrate_bps": 1000 * self.streams_read, "subscribers": []}]


def test_format_event_lines() -> None:
    assert format_event("status", '{"a":1}', event_id=7) == b'id: 7\nevent: status\ndata: {"a":1}\n\n'
    assert format_event("history", "[]") == b"event: history\ndata: []\n\n"
    with pytest.raises(ValueError, match="single lines"):
        format_event("status", "a\nb")


def test_children_rows_flatten_the_tree_with_paths() -> None:
    rows = children_rows(tree())
    assert [(r["path"], r["depth"]) for r in rows] == [("web", 0), ("egress", 0), ("egress/push:yt", 1)]
    web, _, push = rows
    assert web["manual_restarts"] == 1 and web["uptime_s"] == 12.3 and web["last_error_ago_s"] is None
    assert push["state"] == "backoff" and push["restarts"] == 3 and push["last_error_ago_s"] == 5.0
    assert push["next_restart_in_s"] == 1.5 and push["down_for_s"] == 4.0 and push["uptime_s"] is None


class Client:
    """One open stream: what was sent, and a way to hang up."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = trio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def events(self) -> list[dict[str, str]]:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body").decode()
        return [
            dict(line.split(": ", 1) for line in block.splitlines()) for block in body.split("\n\n") if block
        ]


async def test_one_snapshot_per_interval_shared_by_every_stream(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    source = Source(tmp_path)
    system = {"cpu_percent": 12.5, "temperature_c": None}

    async def sample() -> dict[str, Any]:
        return dict(system)

    feed = StatusFeed(source, system=sample, wall_clock=lambda: 1_700_000_000.0 + trio.current_time())
    a, b = Client(), Client()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_EventStream(feed, client="a", resumed=False), {}, a.receive, a.send)
        await trio.sleep(0.25)  # b opens a quarter interval later, and a reconnection (Last-Event-ID)
        nursery.start_soon(_EventStream(feed, client="b", resumed=True), {}, b.receive, b.send)
        await trio.sleep(3.5)
        assert feed.clients == 2
        a.gone.set()
        await trio.sleep(2)
        assert feed.clients == 1  # a's stream ended when it hung up; b's goes on
        b.gone.set()
    assert feed.clients == 0
    assert a.sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in a.sent[0]["headers"]
    ea, eb = a.events(), b.events()
    assert ea[0] == {"retry": "2000"} and ea[1] == {"event": "history", "data": "[]"}
    assert eb[0] == {"retry": "2000"} and eb[1]["event"] == "status"  # no history for a reconnection
    status_a = [e for e in ea if e.get("event") == "status"]
    status_b = [e for e in eb if e.get("event") == "status"]
    # Built once a second whoever asks: b got a's first snapshot, then both the same ones.
    assert [e["id"] for e in status_a] == ["1", "2", "3", "4"]
    assert [e["id"] for e in status_b] == ["1", "2", "3", "4", "5", "6"]
    assert feed.builds == source.streams_read == 6
    doc = json.loads(status_b[-1]["data"])
    assert doc["seq"] == 6 and doc["device"] == "cam-1" and doc["version"] == "9.9.9"
    assert doc["board"]["model"].startswith("Raspberry Pi 4") and doc["uptime_s"] == 42.0
    assert doc["health"] == {"status": "ok", "degraded": ["egress/push:yt"]}
    assert [c["path"] for c in doc["children"]] == ["web", "egress", "egress/push:yt"]
    assert doc["streams"][0]["bitrate_bps"] == 6000 and doc["recording"] is None
    assert doc["system"] == system
    # The plot's history: one point per snapshot, a stream's bitrate by name.
    assert [p["bitrate_bps"]["live/cam"] for p in feed.history] == [1000 * n for n in range(1, 7)]
    assert {p["cpu_percent"] for p in feed.history} == {12.5}
    assert feed.history_event().startswith(b"event: history\ndata: [{")


def test_static_files_and_etags() -> None:
    files = load_static()
    assert set(files) == {"index.html", "app.js", "style.css", "watch.html", "watch.js", "watch.css"}
    page = files["index.html"]
    assert (
        page.media_type == "text/html; charset=utf-8"
        and page.body == (STATIC_DIR / "index.html").read_bytes()
    )
    assert page.etag.startswith('"') and page.etag != files["app.js"].etag
    assert etag_matches(page.etag, page.etag)
    assert etag_matches(f'"other", W/{page.etag}', page.etag)
    assert etag_matches("*", page.etag)
    assert not etag_matches('"other"', page.etag) and not etag_matches("", page.etag)


async def test_the_real_sampler_runs_in_a_thread(tmp_path: Path) -> None:
    feed = StatusFeed(Source(tmp_path))
    body = await feed.build()
    assert body["system"]["memory"]["total_bytes"] > 0 and body["system"]["temperature_c"] is None
    assert any(i["name"] == "lo" for i in body["system"]["network"])
