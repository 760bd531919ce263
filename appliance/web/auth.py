"""Who may do what on the web API: passwords, sessions, CSRF, API tokens, login rate limits, Host checks.

Theory of operation
-------------------
The device sits on a customer LAN, so anyone who can reach port 8080 is a possible attacker, and so is
any web page a customer's browser opens (it can make the browser send requests to the device).

- Reads: with ``web.public = true`` (the default) the page, ``GET /api/*`` and ``/metrics`` need no login.
  With ``public = false`` everything but the login plumbing (``/api/health``, ``/api/login``,
  ``/api/session``, ``/api/logout``) and the page's shell (``/``, ``/static/...``, which carry no data:
  the page asks ``/api/session`` and shows a login form) needs a session or an API token.
- Actions (every other non-GET request) need a session plus the session's CSRF token in
  ``X-CSRF-Token``, or ``Authorization: Bearer <one of web.api_tokens>`` (automation; no CSRF, since
  browsers never add that header on their own). With no ``web.password_hash`` nobody can log in and
  actions are refused with a 403 that says how to set one; API tokens still work, being a credential
  the operator set on purpose.
- Sessions: random 256-bit tokens in an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` over TLS),
  kept in memory (a restart of the process logs everyone out), idle and absolute expiry, a bounded table.
- Login attempts are counted per client address: after ``FREE_FAILURES`` failures each further one
  locks the address out for twice as long as the last (``LOCKOUT_BASE_S`` up to ``LOCKOUT_MAX_S``);
  a locked-out attempt gets 429 with ``Retry-After`` and its password is not even checked.
- DNS rebinding: a hostile page can point its own name at the device's address, which makes the
  browser treat the device as same-origin with the hostile page. The Host header then carries the
  hostile name, so requests whose Host is not an IP literal, ``localhost``, the device's name or host
  name (``NAME.local`` too) or one of ``web.allowed_hosts`` are refused (421).
- No CORS headers are ever sent: other origins can't read responses, and SameSite=Strict keeps the
  cookie off their requests.

The cores here (:class:`PasswordHash`, :class:`LoginLimiter`, :class:`SessionStore`,
:class:`HostPolicy`, :func:`decide`) are pure and take the time as an argument or an injected clock;
:class:`Security` and :class:`SecurityMiddleware` are the starlette glue.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from appliance.config import WebConfig

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "FREE_FAILURES",
    "HOW_TO_SET_PASSWORD",
    "LOCKOUT_BASE_S",
    "LOCKOUT_MAX_S",
    "Decision",
    "HostPolicy",
    "LoginLimiter",
    "PasswordHash",
    "Principal",
    "Security",
    "SecurityMiddleware",
    "Session",
    "SessionStore",
    "decide",
    "hash_password",
    "read_access",
    "require_action",
    "stream_access",
    "viewer_decision",
]

log = logging.getLogger("appliance.web")

COOKIE = "appliance_session"
CSRF_HEADER = "x-csrf-token"
HOW_TO_SET_PASSWORD = (
    "No web password is set, so actions are refused. On the device run "
    "`appliance passwd --config /etc/appliance/appliance.toml` (it writes web.password_hash), "
    "then `systemctl reload appliance`."
)

# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB and ~0.1 s per check on a Pi 4; RFC 7914 section 2's
# interactive-login figure.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_PASSWORD = 1024  # characters; longer ones are refused before hashing

FREE_FAILURES = 5
LOCKOUT_BASE_S = 10.0
LOCKOUT_MAX_S = 3600.0
_MAX_TRACKED_CLIENTS = 10_000

SESSION_IDLE_S = 12 * 3600.0
SESSION_MAX_S = 7 * 86400.0
MAX_SESSIONS = 64

_MAX_LOGIN_BODY = 8192
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reachable without a login in every mode: the login plumbing, health (systemd, load balancers), and
# the page's shell, which holds no data of its own.
_OPEN_PATHS = frozenset({"/api/health", "/api/login", "/api/session", "/api/logout", "/", "/favicon.ico"})
_OPEN_PREFIXES = ("/static/", "/watch/")  # page shells: no data in them
# Non-GET endpoints that check credentials themselves.
_SELF_CHECKED = frozenset({"/api/login", "/api/logout"})
# WHEP (watching over WebRTC) and WHIP (publishing): the webrtc handlers check `stream_access` themselves,
# since a play or publish secret (rtmp.auth's, as a bearer token) is a credential the middleware lacks.
_STREAM_PREFIXES = ("/whep/", "/whip/")


# ---------------------------------------------------------------------------------------------------
# Passwords.


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordHash:
    """A scrypt password hash, written ``scrypt$N$r$p$SALT$HASH`` (salt and hash in unpadded base64).

    The string says its own parameters, so hashes made with other costs keep verifying.
    """

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or self.n > 2**20:
            raise ValueError(f"scrypt N={self.n}: want a power of two from 2 to 2**20")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError(f"scrypt r={self.r} p={self.p}: want r in 1..32 and p in 1..16")
        if len(self.salt) < 8 or not 16 <= len(self.digest) <= 64:
            raise ValueError("want a salt of at least 8 bytes and a hash of 16 to 64 bytes")

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Read ``scrypt$N$r$p$SALT$HASH``.

        Raises:
            ValueError: not that format, or parameters out of range (the message never echoes the text).
        """
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError('want "scrypt$N$r$p$SALT$HASH" as printed by `appliance passwd`')
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt, digest = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise ValueError("want decimal N, r, p and base64 salt and hash") from None
        return cls(n=n, r=r, p=p, salt=salt, digest=digest)

    def __str__(self) -> str:
        return f"scrypt${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"

    def _derive(self, password: str) -> bytes:
        return hashlib.scrypt(
            password.encode("utf-8"),
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=128 * self.r * (self.n + self.p + 2) + (1 << 20),
            dklen=len(self.digest),
        )

    def verify(self, password: str) -> bool:
        """True when ``password`` hashes to this (a constant-time comparison). Takes ~0.1 s of CPU."""
        if len(password) > _MAX_PASSWORD:
            return False
        return hmac.compare_digest(self._derive(password), self.digest)


def hash_password(
    password: str, *, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> str:
    """The ``web.password_hash`` string for ``password`` (a fresh random salt unless one is given).

    Raises:
        ValueError: an empty or overlong password, or bad scrypt parameters.
    """
    if not password:
        raise ValueError("the password is empty")
    if len(password) > _MAX_PASSWORD:
        raise ValueError(f"the password is longer than {_MAX_PASSWORD} characters")
    proto = PasswordHash(n=n, r=r, p=p, salt=salt or secrets.token_bytes(16), digest=bytes(32))
    return str(dataclasses.replace(proto, digest=proto._derive(password)))


# ---------------------------------------------------------------------------------------------------
# Login rate limiting.


@dataclass(slots=True)
class _Attempts:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginLimiter:
    """Failed logins per client: ``free`` failures, then an exponential lockout after each further one.

    Args:
        clock: monotonic seconds (injected: tests drive it by hand).
        free: failures allowed before the first lockout.
        base_s: the first lockout; each later failure doubles it.
        max_s: the longest lockout; a client's record is forgotten this long after its last failure.
        max_clients: clients tracked at once (the least recently seen are forgotten first).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        free: int = FREE_FAILURES,
        base_s: float = LOCKOUT_BASE_S,
        max_s: float = LOCKOUT_MAX_S,
        max_clients: int = _MAX_TRACKED_CLIENTS,
    ) -> None:
        self._clock = clock
        self._free = free
        self._base_s = base_s
        self._max_s = max_s
        self._max_clients = max_clients
        self._clients: OrderedDict[str, _Attempts] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may try now."""
        rec = self._lookup(client)
        return 0.0 if rec is None else max(0.0, rec.locked_until - self._clock())

    def failure(self, client: str) -> float:
        """Count a wrong password; returns the lockout it starts (0 while still within ``free``)."""
        now = self._clock()
        rec = self._lookup(client) or _Attempts()
        rec.failures += 1
        rec.last = now
        lock = 0.0
        if rec.failures >= self._free:
            lock = min(self._max_s, self._base_s * 2.0 ** (rec.failures - self._free))
            rec.locked_until = now + lock
        self._clients[client] = rec
        self._clients.move_to_end(client)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        return lock

    def success(self, client: str) -> None:
        """A right password: the client's count starts again."""
        self._clients.pop(client, None)

    def _lookup(self, client: str) -> _Attempts | None:
        rec = self._clients.get(client)
        if rec is not None and self._clock() - rec.last > self._max_s and self._clock() >= rec.locked_until:
            del self._clients[client]  # quiet for long enough: forgiven
            return None
        return rec


# ---------------------------------------------------------------------------------------------------
# Sessions.


@dataclass(slots=True, kw_only=True)
class Session:
    """One login. ``token`` goes in the cookie, ``csrf`` in the X-CSRF-Token header of each action."""

    token: str
    csrf: str
    created: float
    last_used: float


class SessionStore:
    """Sessions in memory, keyed by a hash of their token; idle and absolute expiry, bounded in number.

    Args:
        clock: monotonic seconds.
        idle_s: a session unused this long ends.
        max_s: a session ends this long after login however much it is used.
        max_sessions: the oldest session ends when one more logs in.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        idle_s: float = SESSION_IDLE_S,
        max_s: float = SESSION_MAX_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self._idle_s = idle_s
        self._max_s = max_s
        self._max = max_sessions
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    @staticmethod
    def _key(token: str) -> bytes:
        # Looked up by digest, so that dict probing can't leak timing about live tokens.
        return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()

    def create(self) -> Session:
        now = self._clock()
        session = Session(
            token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, last_used=now
        )
        self._sessions[self._key(session.token)] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle timer restarts), or None."""
        if not token:
            return None
        key = self._key(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used > self._idle_s or now - session.created > self._max_s:
            del self._sessions[key]
            return None
        session.last_used = now
        return session

    def delete(self, token: str | None) -> bool:
        return bool(token) and self._sessions.pop(self._key(token or ""), None) is not None

    def clear(self) -> None:
        self._sessions.clear()


def csrf_ok(session: Session, header: str | None) -> bool:
    """The request carries the session's CSRF token (constant-time comparison)."""
    return header is not None and hmac.compare_digest(header.encode(), session.csrf.encode())


def token_ok(tokens: Iterable[str], presented: str) -> bool:
    """``presented`` is one of the API tokens; every token is compared, in constant time each."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(token.encode(), presented.encode())
    return found


# ---------------------------------------------------------------------------------------------------
# Host header.


class HostPolicy:
    """Which Host headers are ours (against DNS rebinding).

    Accepted: IP literals, ``localhost``, each of ``names`` (the device name, the host name) and
    ``NAME.local`` (mDNS), and each of ``extra`` (``web.allowed_hosts``: exact names or ``*.domain``;
    ``"*"`` accepts anything). Case-insensitive, port and trailing dot ignored.
    """

    def __init__(self, names: Iterable[str], extra: Iterable[str] = ()) -> None:
        exact = {"localhost"}
        for name in names:
            name = name.strip().rstrip(".").lower()
            if name:
                exact.add(name)
                exact.add(name.removesuffix(".local") + ".local")
        self._any = False
        self._suffixes: list[str] = []
        for entry in extra:
            entry = entry.strip().rstrip(".").lower()
            if entry == "*":
                self._any = True
            elif entry.startswith("*."):
                self._suffixes.append(entry[1:])
            elif entry:
                exact.add(entry)
        self._exact = frozenset(exact)

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this Host header is for us. No header (HTTP/1.0 tools): allowed."""
        if host_header is None or self._any:
            return True
        host = _host_only(host_header)
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        return host in self._exact or any(host.endswith(s) for s in self._suffixes)


def _host_only(header: str) -> str | None:
    """``"Name.local:8080"`` -> ``"name.local"``, ``"[::1]:80"`` -> ``"::1"``; None when malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0 or (header[end + 1 :] and not header[end + 1 :].startswith(":")):
            return None
        return header[1:end]
    host, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    return host.rstrip(".") or None


# ---------------------------------------------------------------------------------------------------
# The policy.


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who sent a request: a logged-in session or an API token."""

    kind: str  # "session" | "token"
    session: Session | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """None of the fields set: go ahead. Otherwise the refusal's status, title and detail."""

    status: int = 0
    title: str = ""
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.status == 0


ALLOW = Decision()


def decide(
    *,
    method: str,
    path: str,
    public: bool,
    password_set: bool,
    principal: Principal | None,
    bad_credentials: str | None,
    csrf_valid: bool,
) -> Decision:
    """What to do with a request (pure).

    Args:
        method, path: the request's.
        public: ``web.public``.
        password_set: ``web.password_hash`` is set.
        principal: who the credentials say sent it (None: nobody).
        bad_credentials: why the credentials presented were refused (an unknown API token), or None.
        csrf_valid: a session request carries its CSRF token.

    Returns:
        ALLOW, or the refusal.
    """
    if path.startswith(_STREAM_PREFIXES):
        return ALLOW  # the handlers decide (`stream_access`; a session's URL is its own secret)
    if method in _SAFE_METHODS:
        return read_decision(path=path, public=public, principal=principal, bad_credentials=bad_credentials)
    if path in _SELF_CHECKED:
        return ALLOW
    return action_decision(
        password_set=password_set, principal=principal, bad_credentials=bad_credentials, csrf_valid=csrf_valid
    )


def read_decision(
    *, path: str, public: bool, principal: Principal | None, bad_credentials: str | None
) -> Decision:
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES) or public or principal is not None:
        return ALLOW
    return Decision(401, "Unauthorized", bad_credentials or "web.public is false: log in (POST /api/login) "
                    "or send Authorization: Bearer TOKEN")  # fmt: skip


def viewer_decision(
    *,
    public: bool,
    principal: Principal | None,
    play_secrets: Sequence[str],
    presented: str | None,
    role: str = "play",
) -> Decision:
    """May this request watch a stream (a WHEP offer, role ``play``) or publish one (a WHIP offer, role
    ``publish``)? Like RTMP: with secrets set for the stream's app and role, one of them must be presented
    (``Authorization: Bearer SECRET``). Without, watching is reading (``web.public``) and publishing is
    open, as an RTMP publish is. A logged-in session or an API token may always do either (the status
    page's previews)."""
    if principal is not None:
        return ALLOW
    if play_secrets:
        if presented is not None and any(hmac.compare_digest(presented, s) for s in play_secrets):
            return ALLOW
        what = f"a wrong {role} secret" if presented else f"no {role} secret"
        return Decision(401, "Unauthorized", f"{what}: send Authorization: Bearer SECRET (rtmp.auth {role})")
    if public or role == "publish":
        return ALLOW
    return Decision(401, "Unauthorized", "web.public is false: log in (POST /api/login) "
                    "or send Authorization: Bearer TOKEN")  # fmt: skip


def action_decision(
    *, password_set: bool, principal: Principal | None, bad_credentials: str | None, csrf_valid: bool
) -> Decision:
    if principal is not None and principal.kind == "token":
        return ALLOW
    if bad_credentials is not None:
        return Decision(401, "Unauthorized", bad_credentials)
    if not password_set:
        return Decision(403, "Forbidden", HOW_TO_SET_PASSWORD)
    if principal is None:
        detail = bad_credentials or "actions need a login (POST /api/login) or Authorization: Bearer TOKEN"
        return Decision(401, "Unauthorized", detail)
    if not csrf_valid:
        return Decision(
            403,
            "Forbidden",
            "missing or wrong X-CSRF-Token header: send the csrf from POST /api/login or GET /api/session",
        )
    return ALLOW


# ---------------------------------------------------------------------------------------------------
# The starlette glue.


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # appliance.web.app.problem, which we can't import (app imports us).
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


class Security:
    """The web child's security state: config, sessions, login limits, the Host policy.

    Args:
        cfg: the ``[web]`` section.
        names: the device's own names for the Host check (device name, host name).
        clock: monotonic seconds for sessions and the login limiter.
    """

    def __init__(
        self,
        cfg: WebConfig | None = None,
        *,
        names: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cfg is None:
            from appliance.config import WebConfig

            cfg = WebConfig()
        self.sessions = SessionStore(clock)
        self.limiter = LoginLimiter(clock)
        self._verify_limiter = trio.CapacityLimiter(2)  # scrypt is ~32 MiB and 0.1 s a go
        self.cfg = cfg
        self.hosts = HostPolicy(names, cfg.allowed_hosts)
        self._router: Router | None = None
        self._hash: PasswordHash | None = PasswordHash.parse(cfg.password_hash) if cfg.password_hash else None

    def update(self, cfg: WebConfig, names: Iterable[str]) -> None:
        """A new ``[web]`` section (reload). A changed password ends every session."""
        if cfg.password_hash != self.cfg.password_hash:
            self.sessions.clear()
            self._hash = PasswordHash.parse(cfg.password_hash) if cfg.password_hash else None
        self.cfg = cfg
        self.hosts = HostPolicy(names, cfg.allowed_hosts)

    def bind(self, router: Router) -> None:
        """The app's router: the middleware applies the rules to requests a route will serve, and lets
        the others through to their 404 or 405."""
        self._router = router

    def routed(self, scope: Scope) -> bool:
        """Whether some route (registry routes included) serves this path with this method."""
        return self._router is None or _routed(self._router.routes, scope)

    @property
    def password_set(self) -> bool:
        return self._hash is not None

    def identify(self, request: Request) -> tuple[Principal | None, str | None]:
        """(who sent it, why presented credentials were refused)."""
        auth = request.headers.get("authorization")
        if auth is not None:
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() == "bearer" and presented.strip():
                if token_ok(self.cfg.api_tokens, presented.strip()):
                    return Principal(kind="token"), None
                return None, "unknown API token"
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return Principal(kind="session", session=session), None
        return None, None

    def check(self, request: Request, *, action: bool | None = None) -> Response | None:
        """None when ``request`` may proceed, else the refusal. ``action``: force the read (False) or
        action (True) rules instead of choosing by method."""
        principal, bad = self.identify(request)
        session = principal.session if principal is not None else None
        csrf_valid = session is not None and csrf_ok(session, request.headers.get(CSRF_HEADER))
        if action is None:
            d = decide(
                method=request.method,
                path=request.url.path,
                public=self.cfg.public,
                password_set=self.password_set,
                principal=principal,
                bad_credentials=bad,
                csrf_valid=csrf_valid,
            )
        elif action:
            d = action_decision(
                password_set=self.password_set,
                principal=principal,
                bad_credentials=bad,
                csrf_valid=csrf_valid,
            )
        else:
            d = read_decision(path="", public=self.cfg.public, principal=principal, bad_credentials=bad)
        if d.allowed:
            return None
        headers = {"WWW-Authenticate": 'Bearer realm="appliance"'} if d.status == 401 else None
        return _problem(d.status, d.title, d.detail, headers)

    # -- the login endpoints ----------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/session", self.session_info, methods=["GET"]),
        ]

    async def login(self, request: Request) -> Response:
        """``POST /api/login`` {"password": "..."} -> {"csrf": TOKEN} and the session cookie."""
        if self._hash is None:
            return _problem(403, "Forbidden", HOW_TO_SET_PASSWORD)
        client = request.client.host if request.client is not None else "unknown"
        wait = self.limiter.retry_after(client)
        if wait > 0:
            return _too_many(wait)
        password = await _read_password(request)
        if isinstance(password, Response):
            return password
        stored = self._hash
        async with self._verify_limiter:
            ok = await trio.to_thread.run_sync(stored.verify, password)
        if not ok or stored is not self._hash:  # the password changed meanwhile: try again
            lock = self.limiter.failure(client)
            log.warning("web.login_failed client=%s locked_s=%g", client, lock)
            return _problem(401, "Unauthorized", "wrong password")
        self.limiter.success(client)
        session = self.sessions.create()
        log.info("web.login client=%s sessions=%d", client, len(self.sessions))
        response = JSONResponse({"csrf": session.csrf}, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            COOKIE,
            session.token,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """``POST /api/logout``: ends the session of the cookie (if any), clears the cookie."""
        if self.sessions.delete(request.cookies.get(COOKIE)):
            log.info("web.logout sessions=%d", len(self.sessions))
        response = Response(status_code=204)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    async def session_info(self, request: Request) -> Response:
        """``GET /api/session``: whether the cookie is logged in, its CSRF token, and the password state."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        body = {
            "logged_in": session is not None,
            "csrf": session.csrf if session is not None else None,
            "password_set": self.password_set,
            "how_to_set": HOW_TO_SET_PASSWORD if not self.password_set else "",
            "public": self.cfg.public,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _too_many(wait: float) -> Response:
    seconds = max(1, int(wait + 0.999))
    return _problem(
        429,
        "Too Many Requests",
        f"too many wrong passwords from this address: try again in {seconds} s",
        {"Retry-After": str(seconds)},
    )


async def _read_password(request: Request) -> str | Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_LOGIN_BODY:
            return _problem(413, "Content Too Large", f"a login body is at most {_MAX_LOGIN_BODY} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        return _problem(400, "Bad Request", 'want a JSON body {"password": "..."}')
    password = doc.get("password") if isinstance(doc, dict) else None
    if not isinstance(password, str) or not password:
        return _problem(400, "Bad Request", 'want a JSON body {"password": "..."} with a non-empty string')
    return password


def _routed(routes: Iterable[BaseRoute], scope: Scope) -> bool:
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        if isinstance(route, Mount):
            inner = getattr(route.app, "routes", None)
            if inner is None or _routed(inner, {**scope, **child}):
                return True
            continue
        return True
    return False


def _security(request: Request) -> Security:
    security = getattr(request.app.state, "security", None)
    if not isinstance(security, Security):
        raise RuntimeError("the web app has no Security (appliance.web.create_app sets it)")
    return security


def read_access(request: Request) -> Response | None:
    """For read-only handlers: None when the request may read, else the 401 problem to return.

    ``web.public = true`` lets everyone read; otherwise a session or an API token is needed.
    (:class:`SecurityMiddleware` applies the same rule before any handler runs; this is for handlers
    that want to say so explicitly, or that serve data under a path the middleware treats as open.)
    """
    return _security(request).check(request, action=False)


def stream_access(request: Request, secrets_: Sequence[str], role: str = "play") -> Response | None:
    """For WHEP (``play``) and WHIP (``publish``) offers: None when ``request`` may, else the 401 problem
    (see `viewer_decision`)."""
    security = _security(request)
    principal, _bad = security.identify(request)
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    secret = presented.strip() if scheme.lower() == "bearer" and presented.strip() else None
    d = viewer_decision(
        public=security.cfg.public, principal=principal, play_secrets=secrets_, presented=secret, role=role
    )
    if d.allowed:
        return None
    return _problem(d.status, d.title, d.detail, {"WWW-Authenticate": 'Bearer realm="appliance"'})


def require_action(request: Request) -> Response | None:
    """For state-changing handlers: None when the request may act, else the 401/403 problem to return.

    A session with its X-CSRF-Token header, or an API token; with no password set, a 403 saying how to
    set one.
    """
    return _security(request).check(request, action=True)


class SecurityMiddleware:
    """ASGI middleware: the Host check, then :func:`decide` for every HTTP request, plus the response
    headers that keep the page out of other sites' frames and sniffers."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal: Response | None = None
        if not self.security.hosts.allows(request.headers.get("host")):
            refusal = _problem(
                421,
                "Misdirected Request",
                "this Host name is not one of the device's (DNS rebinding protection); "
                "add it to web.allowed_hosts to use it",
            )
        elif scope["type"] == "http" and self.security.routed(scope):
            refusal = self.security.check(request)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _with_headers(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, _add_headers(send) if scope["type"] == "http" else send)


_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


def _with_headers(response: Response) -> Response:
    for name, value in _HEADERS:
        response.headers[name.decode()] = value.decode()
    return response


def _add_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend((n, v) for n, v in _HEADERS if n not in present)
            message = {**message, "headers": headers}
        await send(message)

    return wrapped
