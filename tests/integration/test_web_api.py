"""The web API against the real process: schemathesis over /api/openapi.json, logins, CSRF, actions.

schemathesis generates requests from the OpenAPI document the appliance serves (with a logged-in
session and its CSRF token, so the actions run for real) and each must be answered without a server
error: nothing at 500, and other 5xx only where the document says so (503 from /api/health while
starting, 503/501 from a snapshot without a decodable keyframe).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.web.auth import HOW_TO_SET_PASSWORD, hash_password
from tests.harness import ApplianceProcess, http_get

PASSWORD = "installer pass"
TOKEN = "automation-token-0123456789"
# Cheap scrypt parameters keep the many failed logins schemathesis makes fast; the format is the same.
FAST_HASH = {"n": 1024, "r": 8, "p": 1}


@schemathesis.serializer("application/sdp", "application/trickle-ice-sdpfrag")
def _sdp(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    # WHEP offers are SDP text; whatever the fuzzer made of the string schema goes as it is.
    return value.encode() if isinstance(value, str) else str(value).encode()


def write_config(tmp: Path, *, password: str | None, camera: bool) -> Path:
    web = ['listen = "127.0.0.1:0"']
    if password is not None:
        web.append(f'password_hash = "{hash_password(password, **FAST_HASH)}"')
        web.append(f'api_tokens = ["{TOKEN}"]')
    capture = '[capture]\nsource = "synthetic"\nwidth = 320\nheight = 240\nfps = 15\n' if camera else ""
    cfg = tmp / "appliance.toml"
    cfg.write_text(
        "[web]\n"
        + "\n".join(web)
        + f'\n[rtmp]\nlisten = "127.0.0.1:0"\n[state]\ndir = "{tmp / "state"}"\n'
        + '[record]\nsegment = "1s"\n'
        + capture
    )
    return cfg


def request(
    url: str, method: str = "GET", body: object = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        with e:
            raw = e.read()
            return e.code, e.headers, json.loads(raw) if raw else None


def login(base: str, password: str = PASSWORD) -> tuple[str, str]:
    """(the session cookie value, its CSRF token)."""
    code, headers, body = request(base + "/api/login", "POST", {"password": password})
    assert code == 200, body
    cookie = headers["set-cookie"].split(";")[0]
    name, _, value = cookie.partition("=")
    assert name == "appliance_session" and value
    return value, body["csrf"]


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApplianceProcess, str]]:
    """One appliance with the small synthetic camera and a password, for the tests that act on it."""
    tmp = tmp_path_factory.mktemp("web_api")
    app = ApplianceProcess(write_config(tmp, password=PASSWORD, camera=True))
    try:
        base = app.web_url()
        app.wait_healthy(base)
        app.event("capture.started", timeout=30)
        deadline = time.monotonic() + 30
        while (request(base + "/api/streams/live/cam")[2] or {}).get("video") is None:
            assert time.monotonic() < deadline, "the camera's stream never showed its video"
            time.sleep(0.1)
        yield app, base
    finally:
        assert app.stop() == 0


def child(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next(c for c in status["supervisor"]["children"] if c["name"] == name)


def test_login_then_restart_a_child_shows_in_status(camera: tuple[ApplianceProcess, str]) -> None:
    app, base = camera
    cookie, csrf = login(base)
    jar = {"Cookie": f"appliance_session={cookie}"}
    code, _, session = request(base + "/api/session", headers=jar)
    assert session["logged_in"] is True and session["csrf"] == csrf and session["password_set"] is True
    before = child(http_get(base + "/api/status")[1], "capture")
    # Without the CSRF token: refused, nothing restarts.
    code, headers, body = request(base + "/api/children/capture/restart", "POST", headers=jar)
    assert code == 403 and headers["content-type"] == "application/problem+json"
    assert "X-CSRF-Token" in body["detail"]
    assert child(http_get(base + "/api/status")[1], "capture")["manual_restarts"] == before["manual_restarts"]
    # With it: restarted, and back.
    code, _, body = request(
        base + "/api/children/capture/restart", "POST", headers={**jar, "X-CSRF-Token": csrf}
    )
    assert code == 200, body
    assert body["child"] == "capture" and body["deferred"] is False and body["state"]["ok"] is True
    after = child(http_get(base + "/api/status")[1], "capture")
    assert after["manual_restarts"] == before["manual_restarts"] + 1
    assert after["last_restart_requested_at"] is not None
    app.event("child.restart_requested", child="capture")
    # A nested path and an unknown one.
    code, _, body = request(
        base + "/api/children/egress/nope/restart", "POST", headers={**jar, "X-CSRF-Token": csrf}
    )
    assert code == 404 and "no child 'egress/nope'" in body["detail"]


def test_stream_item_record_and_keyframe(camera: tuple[ApplianceProcess, str]) -> None:
    _app, base = camera
    auth = {"Authorization": f"Bearer {TOKEN}"}
    code, _, item = request(base + "/api/streams/live/cam")
    assert code == 200 and item["name"] == "live/cam" and item["video"]["width"] == 320
    streams = http_get(base + "/api/streams")[1]["streams"]
    assert [s["name"] for s in streams].count("live/cam") == 1
    code, _, body = request(base + "/api/streams/live/nope")
    assert code == 404 and body["status"] == 404
    code, _, body = request(base + "/api/streams/live/cam/keyframe", "POST", headers=auth)
    assert code == 202 and body == {"stream": "live/cam", "requested": True}
    code, _, body = request(base + "/api/streams/live/cam/record", "POST", {"action": "start"}, auth)
    assert code == 200 and body["stream"] == "live/cam" and body["wanted"] is True
    code, _, body = request(base + "/api/streams/live/cam/record", "POST", {"action": "stop"}, auth)
    assert code == 200 and body["wanted"] is False
    code, _, body = request(base + "/api/streams/live/cam/record", "POST", {"action": "pause"}, auth)
    assert code == 400 and "start" in body["detail"]


_SSE = "/api/events"  # endless by design: schemathesis would wait for its end


def test_schemathesis_finds_no_server_error(camera: tuple[ApplianceProcess, str]) -> None:
    _app, base = camera
    cookie, csrf = login(base)
    auth = {"headers": {"X-CSRF-Token": csrf}, "cookies": {"appliance_session": cookie}}
    schema = schemathesis.openapi.from_url(base + "/api/openapi.json")
    seen: dict[str, set[int]] = {}
    real = {
        "app": "live",
        "key": "cam",
        "path": "capture",
        "file": "live/cam/none.flv",
        "stream": "cam",
        "id": "no-such-session",
        "secret": "not-its-secret",
    }

    def documented(op: schemathesis.APIOperation) -> set[int]:
        return {int(code) for code in op.definition.raw.get("responses", {}) if code.isdigit()}

    def run(op: schemathesis.APIOperation, strategy: st.SearchStrategy[Any], examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            # The logout would end the session the other operations use: it is checked in other tests.
            response = case.call(**auth)
            seen.setdefault(op.label, set()).add(response.status_code)
            status = response.status_code
            assert status != 500 and (status < 500 or status in documented(op)), (
                f"{case.method} {case.formatted_path} -> {status}: {response.text[:500]}"
            )

        check()

    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in (_SSE, "/api/logout"):
            continue
        run(op, op.as_strategy(), 8)
        params = {p.name for p in op.iter_parameters() if p.location == "path"}
        if params:  # and with names that exist, so the actions act
            run(op, op.as_strategy(path_parameters={k: real[k] for k in params}), 3)
    assert {
        "GET /api/status",
        "POST /api/children/{path}/restart",
        "POST /api/streams/{app}/{key}/record",
    } <= set(seen)
    assert 200 in seen["POST /api/children/{path}/restart"]
    assert 200 in seen["GET /api/streams/{app}/{key}"]


def test_openapi_covers_every_route(camera: tuple[ApplianceProcess, str]) -> None:
    _app, base = camera
    doc = http_get(base + "/api/openapi.json")[1]
    assert doc["openapi"].startswith("3.1")
    status = http_get(base + "/api/status")[1]
    documented = set(doc["paths"])
    for route in status["routes"]:
        path = (
            route["path"]
            .replace("{file:path}", "{file}")
            .replace("{path:path}", "{path}")
            .replace("{stream:path}", "{stream}")
        )
        assert path in documented, f"{route} is not in /api/openapi.json"
    for path in ("/api/health", "/api/status", "/api/login", "/api/session", "/api/logout", "/metrics", "/"):
        assert path in documented


def test_wrong_passwords_get_429(tmp_path: Path) -> None:
    app = ApplianceProcess(write_config(tmp_path, password=PASSWORD, camera=False))
    try:
        base = app.web_url()
        for _ in range(5):
            code, _, body = request(base + "/api/login", "POST", {"password": "guess"})
            assert code == 401 and body["detail"] == "wrong password"
        code, headers, body = request(base + "/api/login", "POST", {"password": PASSWORD})
        assert code == 429 and int(headers["retry-after"]) >= 1
        assert body["title"] == "Too Many Requests" and "try again" in body["detail"]
        app.event("web.login_failed")
    finally:
        assert app.stop() == 0


def test_no_password_refuses_actions_with_the_how_to(tmp_path: Path) -> None:
    app = ApplianceProcess(write_config(tmp_path, password=None, camera=False))
    try:
        base = app.web_url()
        app.wait_healthy(base)
        code, _, session = request(base + "/api/session")
        assert session["password_set"] is False and session["how_to_set"] == HOW_TO_SET_PASSWORD
        for path, body in (
            ("/api/children/relay/restart", None),
            ("/api/streams/live/cam/record", {"action": "start"}),
            ("/api/streams/live/cam/keyframe", None),
        ):
            code, headers, problem = request(base + path, "POST", body)
            assert code == 403 and headers["content-type"] == "application/problem+json"
            assert "appliance passwd" in problem["detail"]
        code, _, problem = request(base + "/api/login", "POST", {"password": "anything"})
        assert code == 403 and problem["detail"] == HOW_TO_SET_PASSWORD
        # Reads stay open (web.public defaults to true); a foreign Host name is refused.
        assert http_get(base + "/api/status")[0] == 200
        code, _, problem = request(base + "/api/status", headers={"Host": "rebound.example.net"})
        assert code == 421
    finally:
        assert app.stop() == 0
