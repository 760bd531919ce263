"""The web API's security: password hashes, login rate limits, sessions, CSRF, the Host check, the access
policy, `appliance passwd`, the TLS certificate, and the middleware in a real hypercorn on 127.0.0.1:0."""

from __future__ import annotations

import datetime
import io
import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from appliance import cli
from appliance.config import Address, ConfigError, WebConfig, load
from appliance.supervisor import ChildSpec, Supervisor
from appliance.web import create_app, serve_web
from appliance.web.auth import (
    HOW_TO_SET_PASSWORD,
    HostPolicy,
    LoginLimiter,
    PasswordHash,
    Principal,
    Security,
    Session,
    SessionStore,
    csrf_ok,
    decide,
    hash_password,
    require_action,
    token_ok,
)
from appliance.web.passwd_file import with_password_hash
from appliance.web.tls import ensure_certificate, fingerprint
from tests.unit.test_web import Source  # the StatusSource fake (uptime 12.5 s, one extra key)

FAST = {"n": 16, "r": 1, "p": 1}  # cheap scrypt for tests; the format and code path are the same


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- passwords ----------------------------------------------------------------------------------------


def test_hash_round_trips_and_verifies() -> None:
    encoded = hash_password("correct horse", **FAST)
    assert encoded.startswith("scrypt$16$1$1$")
    parsed = PasswordHash.parse(encoded)
    assert str(parsed) == encoded
    assert parsed.verify("correct horse")
    assert not parsed.verify("correct horsE")
    assert not parsed.verify("")
    assert not parsed.verify("x" * 5000)


def test_default_cost_and_salt_differs_each_time() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b  # fresh salt
    assert PasswordHash.parse(a).n == 2**15 and PasswordHash.parse(a).verify("pw")


def test_known_vector_is_stable() -> None:
    # Same password, salt and parameters: same string (so stored hashes keep verifying across versions).
    encoded = hash_password("pw", salt=b"0123456789abcdef", **FAST)
    assert encoded == hash_password("pw", salt=b"0123456789abcdef", **FAST)
    assert encoded.split("$")[4] == "MDEyMzQ1Njc4OWFiY2RlZg"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "scrypt",
        "bcrypt$16$1$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$15$1$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,  # N not a power of two
        "scrypt$16$99$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$16$1$1$!!!$" + "A" * 43,
        "scrypt$16$1$1$MDEy$" + "A" * 43,  # salt too short
        "scrypt$x$1$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    ],
)
def test_malformed_hashes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        PasswordHash.parse(text)


def test_config_names_the_key_and_hides_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^web\.password_hash=<secret>: want") as info:
        load({"web": {"password_hash": "scrypt$nope"}})
    assert "nope" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^web\.api_tokens=<secret>: want a list of tokens"):
        load({"web": {"api_tokens": ["short"]}})
    with pytest.raises(ConfigError, match=r"^web\.allowed_hosts=\['a b'\]"):
        load({"web": {"allowed_hosts": ["a b"]}})
    with pytest.raises(ConfigError, match=r"^web\.tls='yes': want true or false"):
        load({"web": {"tls": "yes"}})
    cfg = load({"web": {"password_hash": hash_password("pw", **FAST), "api_tokens": ["t" * 20]}})
    shown = cfg.to_dict()["web"]
    assert shown["password_hash"] == "<set>" and shown["api_tokens"] == ["<1 set>"]
    assert "t" * 20 not in json.dumps(cfg.to_dict())


def test_hash_password_refuses_empty_and_overlong() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")
    with pytest.raises(ValueError, match="longer"):
        hash_password("x" * 1025)


# -- login rate limit ---------------------------------------------------------------------------------


def test_five_failures_then_exponential_lockout() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock, free=5, base_s=10.0, max_s=3600.0)
    for _ in range(4):
        assert limiter.failure("10.0.0.9") == 0.0
        assert limiter.retry_after("10.0.0.9") == 0.0
    assert limiter.failure("10.0.0.9") == 10.0
    assert limiter.retry_after("10.0.0.9") == 10.0
    assert limiter.retry_after("10.0.0.10") == 0.0  # per client
    clock.now += 4
    assert limiter.retry_after("10.0.0.9") == 6.0
    clock.now += 6
    assert limiter.retry_after("10.0.0.9") == 0.0
    assert limiter.failure("10.0.0.9") == 20.0
    clock.now += 20
    assert limiter.failure("10.0.0.9") == 40.0
    for _ in range(20):
        lock = limiter.failure("10.0.0.9")
    assert lock == 3600.0  # capped


def test_success_resets_and_quiet_clients_are_forgiven() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock, free=2, base_s=1.0, max_s=100.0)
    limiter.failure("a")
    limiter.success("a")
    assert limiter.failure("a") == 0.0  # counting starts again
    assert limiter.failure("a") == 1.0
    clock.now += 101
    assert limiter.retry_after("a") == 0.0
    assert limiter.failure("a") == 0.0  # forgotten after max_s of quiet


def test_limiter_tracks_a_bounded_number_of_clients() -> None:
    limiter = LoginLimiter(Clock(), free=1, base_s=10.0, max_clients=3)
    for ip in ("a", "b", "c", "d"):
        limiter.failure(ip)
    assert limiter.retry_after("a") == 0.0  # the oldest was forgotten
    assert limiter.retry_after("d") == 10.0


# -- sessions and CSRF --------------------------------------------------------------------------------


def test_sessions_expire_when_idle_and_absolutely() -> None:
    clock = Clock()
    store = SessionStore(clock, idle_s=60.0, max_s=300.0, max_sessions=10)
    s = store.create()
    assert len(s.token) >= 40 and s.token != s.csrf
    for _ in range(4):
        clock.now += 59
        assert store.get(s.token) is s  # each use restarts the idle timer
    clock.now += 61
    assert store.get(s.token) is None
    t = store.create()
    for _ in range(5):
        clock.now += 59
        store.get(t.token)
    clock.now += 59
    assert store.get(t.token) is None  # over 300 s since login
    assert store.get("forged") is None and store.get(None) is None and store.get("") is None


def test_sessions_are_bounded_and_deletable() -> None:
    store = SessionStore(Clock(), max_sessions=2)
    a, b, c = store.create(), store.create(), store.create()
    assert store.get(a.token) is None and store.get(b.token) is b and store.get(c.token) is c
    assert store.delete(b.token) and not store.delete(b.token) and not store.delete(None)
    store.clear()
    assert store.get(c.token) is None


def test_csrf_and_token_comparisons() -> None:
    session = Session(token="t", csrf="abc", created=0.0, last_used=0.0)
    assert csrf_ok(session, "abc")
    assert not csrf_ok(session, "abd") and not csrf_ok(session, None) and not csrf_ok(session, "")
    assert token_ok(["x" * 16, "y" * 16], "y" * 16)
    assert not token_ok(["x" * 16], "x" * 15) and not token_ok([], "x" * 16)


# -- Host check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, True),
        ("127.0.0.1:8080", True),
        ("192.168.1.20", True),
        ("[::1]:8080", True),
        ("[fe80::1]", True),
        ("localhost:8080", True),
        ("Cam-01:8080", True),
        ("cam-01.local", True),
        ("cam-01.local.:8080", True),
        ("pi.local", True),
        ("pi", True),
        ("evil.example.com", False),
        ("cam-01.evil.com", False),
        ("127.0.0.1.evil.com", False),
        ("[::1", False),
        ("host:notaport", False),
        ("", False),
    ],
)
def test_host_policy_defaults(header: str | None, ok: bool) -> None:
    assert HostPolicy(["cam-01", "pi"]).allows(header) is ok


def test_host_policy_extra_names_and_wildcards() -> None:
    policy = HostPolicy(["cam"], ["camera.example.com", "*.lan"])
    assert policy.allows("camera.example.com:443") and policy.allows("x.lan") and policy.allows("a.b.lan")
    assert not policy.allows("lan") and not policy.allows("example.com")
    assert HostPolicy([], ["*"]).allows("anything.at.all")


# -- the policy ---------------------------------------------------------------------------------------

SESSION = Principal(kind="session", session=Session(token="t", csrf="c", created=0, last_used=0))
TOKEN = Principal(kind="token")


def _decide(**kw: Any) -> int:
    args: dict[str, Any] = {
        "method": "POST",
        "path": "/api/children/capture/restart",
        "public": True,
        "password_set": True,
        "principal": None,
        "bad_credentials": None,
        "csrf_valid": False,
    }
    args.update(kw)
    return decide(**args).status


def test_policy_reads() -> None:
    assert _decide(method="GET", path="/api/status") == 0
    assert _decide(method="GET", path="/metrics", public=False) == 401
    assert _decide(method="GET", path="/metrics", public=False, principal=SESSION) == 0
    assert _decide(method="GET", path="/metrics", public=False, principal=TOKEN) == 0
    for open_path in ("/api/health", "/api/session", "/", "/static/app.js"):
        assert _decide(method="GET", path=open_path, public=False) == 0


def test_policy_actions() -> None:
    assert _decide() == 401
    assert _decide(principal=SESSION) == 403  # no CSRF token
    assert _decide(principal=SESSION, csrf_valid=True) == 0
    assert _decide(principal=TOKEN) == 0  # API tokens need no CSRF
    assert _decide(password_set=False) == 403
    assert _decide(password_set=False, principal=TOKEN) == 0
    # Login and logout check their own credentials.
    assert _decide(path="/api/login") == 0 and _decide(path="/api/logout") == 0
    # Reads open to the public never open actions.
    assert _decide(method="DELETE", path="/api/status", public=True) == 401


def test_no_password_refusal_says_how_to_set_one() -> None:
    d = decide(
        method="POST",
        path="/x",
        public=True,
        password_set=False,
        principal=None,
        bad_credentials=None,
        csrf_valid=False,
    )
    assert d.status == 403 and d.detail == HOW_TO_SET_PASSWORD and "appliance passwd" in d.detail


# -- appliance passwd -----------------------------------------------------------------------------------


def test_with_password_hash_edits_only_that_line() -> None:
    enc = hash_password("pw", **FAST)
    assert tomllib.loads(with_password_hash("", enc)) == {"web": {"password_hash": enc}}
    text = '# my device\n[rtmp]\nlisten = "0.0.0.0:1935"  # keep\n'
    out = with_password_hash(text, enc)
    assert out.startswith(text) and tomllib.loads(out)["web"]["password_hash"] == enc
    text = '[web]\nlisten = "0.0.0.0:80"\n\n[record]\nstreams = ["live/cam"]\n'
    out = with_password_hash(text, enc)
    assert (
        out == f'[web]\npassword_hash = "{enc}"\nlisten = "0.0.0.0:80"\n\n[record]\nstreams = ["live/cam"]\n'
    )
    again = with_password_hash(out, "scrypt$2$1$1$AAAAAAAAAAA$" + "B" * 22)
    assert again.count("password_hash") == 1 and 'listen = "0.0.0.0:80"' in again
    with pytest.raises(ValueError, match="by hand"):
        with_password_hash('web = { listen = "0.0.0.0:80" }\n', enc)
    with pytest.raises(ValueError, match="not valid TOML"):
        with_password_hash("[web\n", enc)


def _run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(argv)


def test_passwd_stdin_prints_the_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_cli(["passwd", "--stdin"], monkeypatch, "s3cret pass\n") == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("password_hash"))
    encoded = tomllib.loads(line)["password_hash"]
    assert PasswordHash.parse(encoded).verify("s3cret pass")


def test_passwd_writes_the_config_keeping_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "appliance.toml"
    cfg.write_text('# site 4\n[web]\nlisten = "127.0.0.1:8080"\n')
    cfg.chmod(0o600)
    assert _run_cli(["passwd", "--config", str(cfg), "--stdin"], monkeypatch, "pw1\n") == 0
    assert "web.password_hash set" in capsys.readouterr().out
    text = cfg.read_text()
    assert text.startswith("# site 4\n[web]\n") and (cfg.stat().st_mode & 0o777) == 0o600
    parsed = load(tomllib.loads(text))
    assert PasswordHash.parse(parsed.web.password_hash).verify("pw1")
    assert str(parsed.web.listen) == "127.0.0.1:8080"
    assert list(tmp_path.iterdir()) == [cfg]  # no temporary file left


def test_passwd_prompts_twice(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["passwd"]) == 1
    assert "differ" in capsys.readouterr().err
    answers = iter(["same", "same"])
    assert cli.main(["passwd"]) == 0
    assert "password_hash = " in capsys.readouterr().out


def test_passwd_refuses_an_empty_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "a.toml"
    assert _run_cli(["passwd", "--config", str(cfg), "--stdin"], monkeypatch, "\n") == 1
    assert "empty" in capsys.readouterr().err and not cfg.exists()


# -- TLS ----------------------------------------------------------------------------------------------


def test_certificate_made_once_with_the_device_names(tmp_path: Path) -> None:
    cert_path, key_path = ensure_certificate(tmp_path / "tls", ["Cam-01", "pi"])
    assert (key_path.stat().st_mode & 0o777) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cam-01", "pi", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    first = fingerprint(cert_path)
    assert ensure_certificate(tmp_path / "tls", ["other"]) == (cert_path, key_path)
    assert fingerprint(cert_path) == first  # reused, not remade
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3640)
    ensure_certificate(tmp_path / "tls", ["cam-01"], now=later)
    assert fingerprint(cert_path) != first  # about to expire: renewed
    key_path.write_text("garbage")
    ensure_certificate(tmp_path / "tls", ["cam-01"])
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string() == "CN=cam-01"


# -- the middleware and login endpoints, in a real server ------------------------------------------------


def fetch(
    url: str, method: str = "GET", body: object = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], Any]:
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


async def call(*args: Any, **kw: Any) -> tuple[int, Mapping[str, str], Any]:
    return await trio.to_thread.run_sync(partial(fetch, *args, **kw))


async def up(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def serve_with(nursery: trio.Nursery, cfg: WebConfig) -> tuple[str, Security, list[str]]:
    sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True)])
    await nursery.start(sup.run)
    source = Source(sup)
    acted: list[str] = []

    async def act(request: Request) -> Response:
        if (refusal := require_action(request)) is not None:
            return refusal
        acted.append(request.url.path)
        return JSONResponse({"done": True})

    source.routes.add_route("/api/streams/{app}/{key}/record", act, methods=["POST"], owner="test")
    security = Security(cfg, names=["unit"])
    app = create_app(source, security=security)
    urls: list[str] = await nursery.start(serve_web, app, Address("127.0.0.1", 0))
    return urls[0], security, acted


async def test_login_csrf_and_actions_over_http() -> None:
    cfg = WebConfig(password_hash=hash_password("pw", **FAST))
    async with trio.open_nursery() as nursery:
        base, security, acted = await serve_with(nursery, cfg)
        action = base + "/api/streams/live/cam/record"
        code, _, body = await call(action, "POST", {})
        assert code == 401 and body["title"] == "Unauthorized"
        code, headers, body = await call(base + "/api/login", "POST", {"password": "pw"})
        assert code == 200 and set(body) == {"csrf"}
        cookie = headers["set-cookie"]
        assert cookie.startswith("appliance_session=")
        low = cookie.lower()
        assert "httponly" in low and "samesite=strict" in low and "path=/" in low and "secure" not in low
        jar = {"Cookie": cookie.split(";")[0]}
        code, _, body = await call(action, "POST", {}, jar)
        assert code == 403 and "X-CSRF-Token" in body["detail"]
        code, _, _ = await call(action, "POST", {}, {**jar, "X-CSRF-Token": "wrong"})
        assert code == 403 and acted == []
        csrf = body_csrf = (await call(base + "/api/session", headers=jar))[2]["csrf"]
        assert body_csrf
        code, _, body = await call(action, "POST", {}, {**jar, "X-CSRF-Token": csrf})
        assert code == 200 and acted == ["/api/streams/live/cam/record"]
        # Unknown routes and methods are answered as before (404/405), not hidden behind a 401.
        assert (await call(base + "/api/nothing", "POST", {}))[0] == 404
        assert (await call(base + "/api/status", "DELETE"))[0] in (404, 405)
        # Logout ends the session.
        code, headers, _ = await call(base + "/api/logout", "POST", {}, jar)
        assert code == 204 and "appliance_session=" in headers["set-cookie"]
        assert (await call(action, "POST", {}, {**jar, "X-CSRF-Token": csrf}))[0] == 401
        # A new password ends every session.
        code, headers, body = await call(base + "/api/login", "POST", {"password": "pw"})
        jar = {"Cookie": headers["set-cookie"].split(";")[0], "X-CSRF-Token": body["csrf"]}
        security.update(WebConfig(password_hash=hash_password("pw2", **FAST)), ["unit"])
        assert (await call(action, "POST", {}, jar))[0] == 401
        nursery.cancel_scope.cancel()


async def test_wrong_passwords_are_rate_limited() -> None:
    cfg = WebConfig(password_hash=hash_password("pw", **FAST))
    async with trio.open_nursery() as nursery:
        base, _, _ = await serve_with(nursery, cfg)
        for _ in range(5):
            code, _, body = await call(base + "/api/login", "POST", {"password": "nope"})
            assert code == 401 and body["detail"] == "wrong password"
        code, headers, body = await call(base + "/api/login", "POST", {"password": "pw"})
        assert code == 429 and int(headers["retry-after"]) >= 1 and "try again" in body["detail"]
        for bad in (b"not json", b"[]", b'{"password": 5}'):
            assert (await call(base + "/api/login", "POST", bad))[0] == 429  # locked: not even parsed
        nursery.cancel_scope.cancel()


async def test_api_tokens_and_no_password() -> None:
    cfg = WebConfig(api_tokens=("T" * 24,))
    async with trio.open_nursery() as nursery:
        base, _, acted = await serve_with(nursery, cfg)
        action = base + "/api/streams/live/cam/record"
        code, _, body = await call(action, "POST", {})
        assert code == 403 and body["detail"] == HOW_TO_SET_PASSWORD
        code, _, body = await call(base + "/api/login", "POST", {"password": "x"})
        assert code == 403 and "appliance passwd" in body["detail"]
        code, _, session = await call(base + "/api/session")
        assert session == {
            "logged_in": False,
            "csrf": None,
            "password_set": False,
            "how_to_set": HOW_TO_SET_PASSWORD,
            "public": True,
        }
        code, headers, body = await call(action, "POST", {}, {"Authorization": "Bearer " + "X" * 24})
        assert (
            code == 401 and body["detail"] == "unknown API token" and "Bearer" in headers["www-authenticate"]
        )
        code, _, _ = await call(action, "POST", {}, {"Authorization": "Bearer " + "T" * 24})
        assert code == 200 and acted == ["/api/streams/live/cam/record"]
        nursery.cancel_scope.cancel()


async def test_private_mode_and_host_check() -> None:
    cfg = WebConfig(public=False, api_tokens=("T" * 24,))
    async with trio.open_nursery() as nursery:
        base, _, _ = await serve_with(nursery, cfg)
        code, headers, body = await call(base + "/api/status")
        assert code == 401 and headers["content-type"] == "application/problem+json"
        assert (await call(base + "/api/status", headers={"Authorization": "Bearer " + "T" * 24}))[0] == 200
        assert (await call(base + "/api/health"))[0] == 200
        assert (await call(base + "/api/session"))[0] == 200
        code, headers, body = await call(base + "/api/health", headers={"Host": "evil.example.com"})
        assert code == 421 and "web.allowed_hosts" in body["detail"]
        code, headers, _ = await call(base + "/api/health", headers={"Host": "unit.local:8080"})
        assert code == 200
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert not any(h.lower().startswith("access-control-") for h in headers)
        nursery.cancel_scope.cancel()


# -- the restart action's supervisor side ---------------------------------------------------------------


async def test_restart_child_counts_in_the_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    sup = Supervisor("root", [ChildSpec(name="capture", factory=up)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        before = sup.snapshot().children[0]
        assert before.manual_restarts == 0 and before.last_restart_requested_at is None
        await trio.sleep(5)
        await sup.restart_child("capture")
        after = sup.snapshot().children[0]
        assert after.manual_restarts == 1 and after.restarts == 0 and after.ok
        assert after.last_restart_requested_at == trio.current_time()
        assert after.to_dict()["manual_restarts"] == 1
        nursery.cancel_scope.cancel()
