from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest
import trio

from appliance import log as applog


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    yield out
    for h in list(root.handlers):
        if getattr(h, "_appliance", False):
            root.removeHandler(h)
    root.setLevel(level)


def test_parse_event() -> None:
    assert applog.parse_event('rtmp.publish conn=3 app=live note="a b"') == (
        "rtmp.publish",
        {"conn": "3", "app": "live", "note": "a b"},
    )
    assert applog.parse_event("just words here") == ("just words here", {})
    assert applog.parse_event("event") == ("event", {})
    assert applog.parse_event("k=v only") == ("k=v only", {})
    assert applog.parse_event("e k=v trailing words") == ("e k=v trailing words", {})


def test_logfmt_line_carries_subsystem(stream: io.StringIO) -> None:
    applog.setup("logfmt", "info", stream)
    token = applog.bind_subsystem("relay")
    try:
        logging.getLogger("x").info("rtmp.publish conn=%s app=%s path=%r", 7, "live", "a b")
    finally:
        applog.SUBSYSTEM.reset(token)
    line = stream.getvalue().strip()
    assert "\n" not in line
    assert " level=info subsystem=relay event=rtmp.publish conn=7 app=live " in line
    assert line.endswith('path="a b"')
    assert line.startswith("ts=")


def test_json_line(stream: io.StringIO) -> None:
    applog.setup("json", "debug", stream)
    logging.getLogger("x").debug("child.crashed child=%s error=%s", "web", '"boom here"')
    doc = json.loads(stream.getvalue())
    assert doc["subsystem"] == "main"
    assert doc["event"] == "child.crashed"
    assert doc["child"] == "web"
    assert doc["error"] == "boom here"
    assert doc["level"] == "debug"


def test_exception_stays_on_one_line(stream: io.StringIO) -> None:
    applog.setup("logfmt", "info", stream)
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("x").exception("capture.failed")
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert "ValueError: bad frame" in out


async def test_subsystem_propagates_to_spawned_tasks(stream: io.StringIO) -> None:
    applog.setup("json", "info", stream)

    async def child() -> None:
        logging.getLogger("x").info("inner.event")

    applog.bind_subsystem("capture")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
    assert json.loads(stream.getvalue())["subsystem"] == "capture"


def test_auto_picks_json_under_journald(
    stream: io.StringIO, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w") as f:  # stands in for the journal socket systemd hands us
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert applog.under_journald(f)
        assert not applog.under_journald(stream)
        applog.setup("auto", "info", f)
        logging.getLogger("x").info("hello k=v")
    assert json.loads((tmp_path / "journal").read_text())["k"] == "v"
