"""Configuration: TOML into frozen dataclasses, with strict validation and defaults that run anywhere.

Every key is optional. In the TOML file units live in the values (``"5s"``, ``"500MB"``, ``"2Mbit"``);
in code the parsed fields carry their unit in their name (``backoff_max_s``, ``max_bytes``). A bad value
or an unknown key raises :class:`ConfigError` whose message names the key, the value and what was
expected, with a "did you mean" hint for misspelt keys.

Adding a key: add a field to its section made with :func:`setting` (the TOML name, a parser and the
default). Adding a section: a frozen dataclass of such fields, then a field of :class:`Config` made
with :func:`section`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_PATH",
    "Address",
    "CaptureConfig",
    "CloudConfig",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "LogConfig",
    "PushConfig",
    "PushTarget",
    "RecordConfig",
    "RtmpConfig",
    "StateConfig",
    "SupervisorConfig",
    "WebConfig",
    "changed_sections",
    "default_state_dir",
    "load",
    "load_file",
    "parse_duration",
    "parse_rate",
    "parse_size",
]

DEFAULT_PATH = Path("/etc/appliance/appliance.toml")

T = TypeVar("T")
Parser = Callable[[object], Any]


class ConfigError(ValueError):
    """A config file or override that can't be used; the message names the key and the problem."""


class _Invalid(ValueError):
    """Raised by parsers with just "what was expected"; the loader adds the key and value."""


# ---------------------------------------------------------------------------------------------------
# Value parsers. Each takes the raw TOML value and returns the parsed value or raises _Invalid.

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SIZE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?bit)(?:/s|ps)?\s*$", re.IGNORECASE)


def parse_duration(value: object) -> float:
    """``"5s"``, ``"200ms"``, ``"2m"``, ``"1h"``, ``"1d"`` -> seconds. Bare numbers are refused."""
    if isinstance(value, str) and (m := _DURATION_RE.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise _Invalid('want a duration with a unit, like "5s", "200ms", "2m" or "1h"')


def parse_size(value: object) -> int:
    """``"500MB"``, ``"2GiB"``, ``"64KB"`` -> bytes (KB/MB/GB are powers of 10, KiB/MiB/GiB of 2)."""
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        unit = m.group(2).upper()
        return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise _Invalid('want a size with a unit, like "500MB", "2GiB" or "64KB"')


def parse_rate(value: object) -> int:
    """``"2Mbit"``, ``"500kbit"`` -> bits per second."""
    if isinstance(value, str) and (m := _RATE_RE.match(value)):
        return int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])
    raise _Invalid('want a bit rate with a unit, like "2Mbit" or "500kbit"')


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` listen or connect address; IPv6 hosts are written in brackets (``[::1]:8080``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: object) -> Address:
    want = 'want "host:port", like "0.0.0.0:1935" or "[::1]:8080", with port 0-65535'
    if not isinstance(value, str):
        raise _Invalid(want)
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\]:(\d+)$", value) or re.match(r"^([^:\[\]\s]+):(\d+)$", value)
    if not m:
        raise _Invalid(want)
    host, port = m.group(1), int(m.group(2))
    if port > 65535:
        raise _Invalid(want)
    if value.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(want) from None
    elif not re.match(r"^[A-Za-z0-9.\-]+$", host):
        raise _Invalid(want)
    return Address(host, port)


def parse_path(value: object) -> Path:
    if not isinstance(value, str) or not value or "\0" in value:
        raise _Invalid("want a file system path")
    return Path(value)


def parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid("want a string")
    return value


def parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("want true or false")
    return value


def choice(*options: str) -> Parser:
    def parse(value: object) -> str:
        if value not in options:
            raise _Invalid("want one of " + ", ".join(f'"{o}"' for o in options))
        return str(value)

    return parse


def integer(lo: int, hi: int) -> Parser:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _Invalid(f"want an integer from {lo} to {hi}")
        return value

    return parse


def positive(parser: Parser) -> Parser:
    def parse(value: object) -> Any:
        parsed = parser(value)
        if parsed <= 0:
            raise _Invalid("want a value above zero")
        return parsed

    return parse


def setting(key: str, parse: Parser, default: Any = None, doc: str = "", *, secret: bool = False) -> Any:
    """A config field: its TOML key, the parser of its raw value, its default and a one-line doc.

    A `secret` field's value never appears in error messages.
    """
    meta = {"key": key, "parse": parse, "doc": doc, "secret": secret}
    if isinstance(default, Mapping):  # unhashable: dataclasses want a factory (the value is read-only)
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: Callable[[], T], doc: str = "") -> Any:
    return field(default_factory=cls, metadata={"section": True, "doc": doc})


# ---------------------------------------------------------------------------------------------------
# Sections.


def default_state_dir() -> Path:
    """/var/lib/appliance when we may write there (the device), else ./var (a laptop checkout)."""
    system = Path("/var/lib/appliance")
    probe = system if system.exists() else system.parent
    if os.access(probe, os.W_OK | os.X_OK):
        return system
    return Path("var").absolute()


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceConfig:
    name: str = setting("name", parse_str, "", "device name shown on the status page (default: hostname)")

    def display_name(self) -> str:
        return self.name or socket.gethostname()


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def parse_names(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and _NAME_RE.fullmatch(v) for v in value)
    ):
        raise _Invalid('want a non-empty list of names made of letters, digits, "_", "." and "-"')
    return tuple(value)


@dataclass(frozen=True, slots=True)
class AppAuth:
    """Secrets of one RTMP app: a client passes with `?key=SECRET` or by using a secret as stream key."""

    publish: tuple[str, ...] = ()
    play: tuple[str, ...] = ()


def parse_auth(value: object) -> Mapping[str, AppAuth]:
    if not isinstance(value, Mapping):
        raise _Invalid('want a table of apps, like { live = { publish = ["secret"] } }')
    out: dict[str, AppAuth] = {}
    for app, table in value.items():
        if not isinstance(table, Mapping):
            raise _Invalid(f"{app}: want a table with publish and/or play lists")
        for key, secrets in table.items():
            if key not in ("publish", "play"):
                raise _Invalid(
                    f"{app}.{key}: unknown key{_hint(str(key), ['publish', 'play'])}; want publish, play"
                )
            if not isinstance(secrets, list) or not all(isinstance(x, str) and x for x in secrets):
                raise _Invalid(f"{app}.{key}: want a list of non-empty strings")
        out[str(app)] = AppAuth(tuple(table.get("publish", ())), tuple(table.get("play", ())))
    return MappingProxyType(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class RtmpConfig:
    listen: Address = setting("listen", parse_address, Address("0.0.0.0", 1935), "RTMP server address")
    apps: tuple[str, ...] = setting(
        "apps", parse_names, ("live",), "apps clients may use: rtmp://HOST/APP/KEY"
    )
    replace_publisher: bool = setting(
        "replace_publisher",
        parse_bool,
        True,
        "a new publisher of a live key replaces the old (false: refused)",
    )
    max_lag_s: float = setting(
        "max_lag", positive(parse_duration), 10.0, "a player this far behind the stream is disconnected"
    )
    queue: int = setting("queue", integer(64, 100_000), 1024, "media messages a player may have queued")
    chunk_size: int = setting("chunk_size", integer(128, 0x7FFFFFFF), 4096, "outgoing RTMP chunk size")
    idle_timeout_s: float = setting(
        "idle_timeout", positive(parse_duration), 30.0, "a publisher silent this long is disconnected"
    )
    max_connections: int = setting(
        "max_connections", integer(1, 100_000), 1000, "further clients are refused"
    )
    auth: Mapping[str, AppAuth] = setting(
        "auth",
        parse_auth,
        MappingProxyType({}),
        'per-app secrets: { live = { publish = ["s"], play = [] } }',
        secret=True,
    )

    def __post_init__(self) -> None:
        for app in self.auth:
            if app not in self.apps:
                raise ConfigError(f"rtmp.auth.{app}: no such app; rtmp.apps = {list(self.apps)}")


def parse_password_hash(value: object) -> str:
    from appliance.web.auth import PasswordHash  # the one parser of the format

    if value == "":
        return ""
    if not isinstance(value, str):
        raise _Invalid('want "scrypt$N$r$p$SALT$HASH" as printed by `appliance passwd`')
    try:
        PasswordHash.parse(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    return value


def parse_tokens(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and len(v) >= 16 and v.isprintable() and " " not in v for v in value
    ):
        raise _Invalid("want a list of tokens of at least 16 printable characters without spaces")
    return tuple(value)


def parse_hosts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and re.fullmatch(r"\*|(\*\.)?[A-Za-z0-9_.-]+", v) for v in value
    ):
        raise _Invalid('want a list of host names like ["camera.example.com", "*.lan"], or ["*"] for any')
    return tuple(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebConfig:
    listen: Address = setting(
        "listen", parse_address, Address("0.0.0.0", 8080), "JSON API (later the status page and metrics)"
    )
    password_hash: str = setting(
        "password_hash",
        parse_password_hash,
        "",
        "scrypt hash written by `appliance passwd`; empty: no login, actions refused",
        secret=True,
    )
    public: bool = setting(
        "public", parse_bool, True, "the page, GET /api/* and /metrics without login (false: login needed)"
    )
    api_tokens: tuple[str, ...] = setting(
        "api_tokens",
        parse_tokens,
        (),
        "bearer tokens for automation (Authorization: Bearer TOKEN)",
        secret=True,
    )
    allowed_hosts: tuple[str, ...] = setting(
        "allowed_hosts",
        parse_hosts,
        (),
        'Host names accepted besides IP literals, localhost and the device\'s names ("*.lan"; "*": any)',
    )
    tls: bool = setting("tls", parse_bool, False, "https with a self-signed certificate made at first start")


def parse_streams(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Invalid('want a list of stream names like ["live/cam"], or ["*"] for every stream')
    for v in value:
        if v != "*" and not re.fullmatch(r"[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+|\*)", v):
            raise _Invalid(f'{v!r}: want "app/key", "app/*" or "*"')
    return tuple(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordConfig:
    streams: tuple[str, ...] = setting(
        "streams", parse_streams, (), 'streams recorded to FLV: ["live/cam"], ["live/*"] or ["*"]; [] = none'
    )
    dir: Path | None = setting("dir", parse_path, None, "where recordings go (default STATE_DIR/recordings)")
    segment_s: float = setting(
        "segment", positive(parse_duration), 60.0, "segments are cut at the first keyframe after this"
    )
    max_bytes: int = setting(
        "max_bytes", positive(parse_size), 2 * 1000**3, "oldest recordings are deleted above this total"
    )
    max_age_s: float = setting(
        "max_age", positive(parse_duration), 7 * 86400.0, "recordings older than this go"
    )
    min_free_bytes: int = setting(
        "min_free",
        positive(parse_size),
        200 * 1000**2,
        "recording stops (with a clear status) below this free space",
    )

    def path(self, state_dir: Path) -> Path:
        return self.dir if self.dir is not None else state_dir / "recordings"


CAPTURE_SOURCES = ("auto", "v4l2", "rpicam", "synthetic", "file", "none")
H264_PROFILES = ("baseline", "main", "high")
_BUS_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def parse_bus_name(value: object) -> str:
    if not isinstance(value, str) or not _BUS_NAME_RE.fullmatch(value):
        raise _Invalid('want a stream name "app/key", like "live/cam"')
    return value


def parse_optional_path(value: object) -> Path | None:
    if value == "":
        return None
    return parse_path(value)


def parse_device(value: object) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/dev/")):
        raise _Invalid('want a device path like "/dev/video0", or "" for the first camera found')
    return value


def parse_encoder(value: object) -> str:
    from appliance.hw.encoders import CANDIDATES  # imports PyAV: only when the key is set

    if value != "auto" and value not in CANDIDATES:
        raise _Invalid("want " + ", ".join(f'"{n}"' for n in ("auto", *CANDIDATES)))
    return str(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class CaptureConfig:
    source: str = setting(
        "source", choice(*CAPTURE_SOURCES), "auto", "auto: first V4L2 camera, else Pi camera, else synthetic"
    )
    stream: str = setting("stream", parse_bus_name, "live/cam", "the stream the camera publishes")
    device: str = setting("device", parse_device, "", "V4L2 device (default: the first capture device)")
    width: int = setting("width", integer(16, 4096), 1280, "wished width (cameras: the closest offered)")
    height: int = setting("height", integer(16, 2304), 720, "wished height")
    fps: int = setting("fps", integer(1, 120), 30, "wished frame rate")
    gop_s: float = setting("gop", positive(parse_duration), 2.0, "keyframe interval of the encoder")
    bitrate_bps: int = setting("bitrate", positive(parse_rate), 2_000_000, "video bit rate")
    profile: str = setting(
        "profile", choice(*H264_PROFILES), "baseline", "H.264 profile (baseline plays everywhere, WebRTC too)"
    )
    encoder: str = setting("encoder", parse_encoder, "auto", "auto: hardware when it opens, else libx264")
    audio: bool = setting("audio", parse_bool, True, "AAC audio (synthetic: a sine; file: its audio)")
    audio_device: str = setting("audio_device", parse_str, "", 'ALSA capture device, like "hw:1,0"')
    audio_bitrate_bps: int = setting("audio_bitrate", positive(parse_rate), 128_000, "AAC bit rate")
    file: Path | None = setting("file", parse_optional_path, None, "recording looped by source = file")
    rpicam_command: str = setting(
        "rpicam_command", parse_str, "rpicam-vid", "Pi camera helper (libcamera-vid on older images)"
    )
    camera: int = setting("camera", integer(0, 15), 0, "libcamera camera index for source = rpicam")

    def __post_init__(self) -> None:
        for key, value in (("width", self.width), ("height", self.height)):
            if value % 2:
                raise ConfigError(f"capture.{key}={value}: want an even number (4:2:0 video)")
        if self.source == "file" and self.file is None:
            raise ConfigError('capture.file: required when capture.source = "file"')
        if self.gop_s * self.fps < 1:
            raise ConfigError(f"capture.gop={_fmt_s(self.gop_s)!r}: shorter than one frame at {self.fps} fps")

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.gop_s * self.fps))


@dataclass(frozen=True, slots=True, kw_only=True)
class PushTarget:
    """One static push: a Bus to a remote RTMP(S) ingest or WHIP endpoint."""

    name: str
    url: str  # holds the ingest's stream key: never logged or shown whole
    source: str = "live/cam"
    verify_tls: bool = True
    enabled: bool = True
    token: str = ""  # WHIP's bearer token: never logged or shown

    @property
    def whip(self) -> bool:
        from appliance.media.whip_url import is_whip_url

        return is_whip_url(self.url)

    def shown_url(self) -> str:
        if self.whip:
            from appliance.media.whip_url import parse_whip_url

            return str(parse_whip_url(self.url))
        scheme, _, rest = self.url.partition("://")
        host, _, path = rest.partition("/")
        app = path.partition("/")[0]
        return f"{scheme}://{host}/{app}/<key>"


_TARGET_KEYS = ("name", "url", "source", "verify_tls", "enabled", "token")


def parse_targets(value: object) -> tuple[PushTarget, ...]:
    from appliance.media.rtmp.url import parse_rtmp_url  # the same (pure) parsers the pushes use
    from appliance.media.whip_url import is_whip_url, parse_whip_url

    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise _Invalid('want [[push.targets]] tables with name = "...", url = "rtmp://..."')
    out: list[PushTarget] = []
    for i, table in enumerate(value):
        where = f"[{i}]"
        for key in table:
            if key not in _TARGET_KEYS:
                hint = _hint(str(key), _TARGET_KEYS)
                raise _Invalid(f"{where}.{key}: unknown key{hint}; known keys: {', '.join(_TARGET_KEYS)}")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise _Invalid(f'{where}.name: want a name made of letters, digits, "_", "." and "-"')
        where = f"[{name}]"
        url = table.get("url")
        if not isinstance(url, str):
            raise _Invalid(f"{where}.url: want rtmp://HOST[:PORT]/APP/KEY, rtmps://... or https://... (WHIP)")
        try:
            (parse_whip_url if is_whip_url(url) else parse_rtmp_url)(url)
        except ValueError as e:
            raise _Invalid(f"{where}.url: {e}") from None
        token = table.get("token", "")
        if not isinstance(token, str):
            raise _Invalid(f"{where}.token: want a string (the WHIP endpoint's bearer token)")
        if token and not is_whip_url(url):
            raise _Invalid(f"{where}.token: only for WHIP (https://) URLs; an RTMP URL carries its key")
        source = table.get("source", "live/cam")
        if not isinstance(source, str) or not _BUS_NAME_RE.fullmatch(source):
            raise _Invalid(f'{where}.source: want a stream name "app/key"')
        flags = {}
        for key in ("verify_tls", "enabled"):
            flag = table.get(key, True)
            if not isinstance(flag, bool):
                raise _Invalid(f"{where}.{key}: want true or false")
            flags[key] = flag
        if any(t.name == name for t in out):
            raise _Invalid(f"{where}: two targets with this name")
        out.append(PushTarget(name=name, url=url, source=source, token=token, **flags))
    return tuple(out)


@dataclass(frozen=True, kw_only=True, slots=True)
class PushConfig:
    targets: tuple[PushTarget, ...] = setting(
        "targets",
        parse_targets,
        (),
        "[[push.targets]] name, url (rtmp://, rtmps://, or https:// for WHIP), source, verify_tls, enabled, "
        "token (WHIP's bearer token)",
        secret=True,
    )


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def parse_cloud_url(value: object) -> str:
    from urllib.parse import urlsplit

    want = 'want "" (off), wss://HOST[:PORT]/PATH, or ws:// to a loopback address'
    if value == "":
        return ""
    if not isinstance(value, str):
        raise _Invalid(want)
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise _Invalid(want) from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise _Invalid(want)
    if parts.scheme == "ws" and parts.hostname not in _LOOPBACK_HOSTS:
        # The bearer token would cross the network in clear text.
        raise _Invalid(f"plain ws:// only to loopback (the token would travel in clear); {want}")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class CloudConfig:
    url: str = setting("url", parse_cloud_url, "", "fleet controller, wss://...; empty: no cloud channel")
    token: str = setting("token", parse_str, "", "bearer token presented to the controller", secret=True)
    deadman_s: float = setting(
        "deadman", positive(parse_duration), 60.0, "a cloud stream with no keep-alive this long is stopped"
    )
    device_id: str = setting("device_id", parse_str, "", "id in the fleet (default: device.name or hostname)")
    heartbeat_s: float = setting(
        "heartbeat", positive(parse_duration), 15.0, "device_status is sent this often while connected"
    )
    reconnect_max_s: float = setting(
        "reconnect_max", positive(parse_duration), 30.0, "cap of the reconnect backoff"
    )


def parse_ip_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _Invalid('want a list of IP addresses, like ["127.0.0.1"] (empty: every interface)')
    for x in value:
        try:
            ipaddress.ip_address(x)
        except ValueError:
            raise _Invalid(f"{x!r} is not an IP address") from None
    return tuple(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class IceServer:
    """One STUN or TURN server for WebRTC (the RTCIceServer of the W3C API)."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""  # a TURN password: never logged or shown


_ICE_SERVER_KEYS = ("urls", "username", "credential")


def parse_ice_servers(value: object) -> tuple[IceServer, ...]:
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise _Invalid('want a list of tables like { urls = ["stun:stun.example.com:3478"] }')
    out: list[IceServer] = []
    for i, table in enumerate(value):
        for key in table:
            if key not in _ICE_SERVER_KEYS:
                hint = _hint(str(key), _ICE_SERVER_KEYS)
                raise _Invalid(f"[{i}].{key}: unknown key{hint}; known keys: {', '.join(_ICE_SERVER_KEYS)}")
        urls = table.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise _Invalid(f'[{i}].urls: want "stun:HOST:PORT" or "turn:HOST:PORT", or a list of them')
        for u in urls:
            if not u.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise _Invalid(f"[{i}].urls: {u!r} is not a stun:, stuns:, turn: or turns: URL")
        username, credential = table.get("username", ""), table.get("credential", "")
        if not isinstance(username, str) or not isinstance(credential, str):
            raise _Invalid(f"[{i}]: want username and credential as strings")
        if any(u.startswith("turn") for u in urls) and not (username and credential):
            raise _Invalid(f"[{i}]: a TURN server needs username and credential")
        out.append(IceServer(urls=tuple(urls), username=username, credential=credential))
    return tuple(out)


def parse_port_range(value: object) -> range | None:
    if value == "":
        return None
    lo, sep, hi = str(value).partition("-") if isinstance(value, str) else ("", "", "")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
        raise _Invalid('want "FIRST-LAST", like "50000-50100" (empty: any port)')
    first, last = int(lo), int(hi)
    if not 1024 <= first <= last <= 65535:
        raise _Invalid("want 1024 <= FIRST <= LAST <= 65535")
    return range(first, last + 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class WebrtcConfig:
    enabled: bool = setting("enabled", parse_bool, True, "WHEP viewers (needs the webrtc extra)")
    ice_addresses: tuple[str, ...] = setting(
        "ice_addresses", parse_ip_list, (), "host candidate addresses; empty: every interface"
    )
    ice_servers: tuple[IceServer, ...] = setting(
        "ice_servers",
        parse_ice_servers,
        (),
        'STUN/TURN servers: [{ urls = ["turn:HOST:3478"], username = "u", credential = "c" }]',
        secret=True,
    )
    udp_ports: range | None = setting(
        "udp_ports", parse_port_range, None, 'UDP ports for ICE, like "50000-50100" (default: any)'
    )
    transcode: bool = setting(
        "transcode", parse_bool, True, "streams with B-frames: transcode once per stream (false: refuse)"
    )
    max_viewers: int = setting("max_viewers", integer(1, 1000), 50, "further WHEP offers get 503")


@dataclass(frozen=True, kw_only=True, slots=True)
class StateConfig:
    dir: Path | None = setting(
        "dir", parse_path, None, "state and recordings (default /var/lib/appliance or ./var)"
    )

    @property
    def path(self) -> Path:
        return self.dir if self.dir is not None else default_state_dir()


@dataclass(frozen=True, kw_only=True, slots=True)
class LogConfig:
    format: str = setting("format", choice("auto", "logfmt", "json"), "auto", "auto: JSON under journald")
    level: str = setting("level", choice("debug", "info", "warning", "error"), "info")


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisorConfig:
    max_restarts: int = setting(
        "max_restarts", integer(1, 1000), 5, "restarts of a critical child in `window` before giving up"
    )
    window_s: float = setting("window", positive(parse_duration), 60.0)
    backoff_initial_s: float = setting("backoff_initial", positive(parse_duration), 0.5)
    backoff_max_s: float = setting("backoff_max", positive(parse_duration), 30.0)
    stable_after_s: float = setting(
        "stable_after", positive(parse_duration), 60.0, "run time after which backoff resets"
    )
    critical_grace_s: float = setting(
        "critical_grace", parse_duration, 10.0, "how long a critical child may be down before health fails"
    )
    shutdown_s: float = setting("shutdown_timeout", positive(parse_duration), 10.0, "per child, on stop")

    def __post_init__(self) -> None:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"supervisor.backoff_max={_fmt_s(self.backoff_max_s)!r}: "
                f"want at least supervisor.backoff_initial ({_fmt_s(self.backoff_initial_s)})"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    device: DeviceConfig = section(DeviceConfig)
    rtmp: RtmpConfig = section(RtmpConfig)
    web: WebConfig = section(WebConfig)
    capture: CaptureConfig = section(CaptureConfig)
    record: RecordConfig = section(RecordConfig)
    push: PushConfig = section(PushConfig)
    cloud: CloudConfig = section(CloudConfig)
    webrtc: WebrtcConfig = section(WebrtcConfig)
    state: StateConfig = section(StateConfig)
    log: LogConfig = section(LogConfig)
    supervisor: SupervisorConfig = section(SupervisorConfig)

    def __post_init__(self) -> None:
        app = self.capture.stream.partition("/")[0]
        if self.capture.source != "none" and app not in self.rtmp.apps:
            raise ConfigError(
                f"capture.stream={self.capture.stream!r}: app {app!r} is not in "
                f"rtmp.apps {list(self.rtmp.apps)}"
            )

    def to_dict(self) -> dict[str, dict[str, object]]:
        """The effective config in TOML terms (units back in the values), for `/api/status`."""
        out: dict[str, dict[str, object]] = {}
        for sec in dataclasses.fields(self):
            obj = getattr(self, sec.name)
            out[sec.name] = {
                f.metadata["key"]: _render(getattr(obj, f.name), f) for f in dataclasses.fields(obj)
            }
        return out


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def _render(value: object, f: dataclasses.Field[Any]) -> object:
    if f.name.endswith("_s") and isinstance(value, float):
        return _fmt_s(value)
    if isinstance(value, Address | Path):
        return str(value)
    if f.name.endswith("_bps") and isinstance(value, int):
        unit = next(u for u in ("Mbit", "kbit", "bit") if value % _RATE_UNITS[u.lower()] == 0)
        return f"{value // _RATE_UNITS[unit.lower()]}{unit}"
    if f.name.endswith("bytes") and isinstance(value, int):
        unit = next(u for u in ("TB", "GB", "MB", "KB", "B") if value % _SIZE_UNITS[u] == 0)
        return f"{value // _SIZE_UNITS[unit]}{unit}"
    if f.name == "ice_servers" and isinstance(value, tuple):
        # TURN credentials never leave the process.
        return [{"urls": list(i.urls), "username": i.username, "credential": "<set>" if i.credential else ""}
                for i in value]  # fmt: skip
    if f.name == "udp_ports":
        return f"{value.start}-{value.stop - 1}" if isinstance(value, range) else ""
    if f.name == "targets" and isinstance(value, tuple):
        # Stream keys never leave the process.
        return [
            {"name": t.name, "url": t.shown_url(), "source": t.source, "verify_tls": t.verify_tls,
             "enabled": t.enabled, "token": "<set>" if t.token else ""}
            for t in value
        ]  # fmt: skip
    if f.metadata.get("secret") and isinstance(value, tuple):
        return [f"<{len(value)} set>"] if value else []
    if isinstance(value, tuple):
        return list(value)
    if f.metadata.get("secret") and isinstance(value, str):
        return "<set>" if value else ""
    if f.name == "auth" and isinstance(value, Mapping):
        # Secrets never leave the process: say how many there are, not what they are.
        return {app: {"publish": len(a.publish), "play": len(a.play)} for app, a in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------
# Loading.


def _hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _build_section(cls: type[T], name: str, raw: object) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}]={raw!r}: want a table of settings")
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{name}.{key}: unknown key{_hint(key, list(fields))}; known keys: {known}")
        try:
            kwargs[f.name] = f.metadata["parse"](value)
        except _Invalid as e:
            shown = "<secret>" if f.metadata["secret"] else repr(value)
            raise ConfigError(f"{name}.{key}={shown}: {e}") from None
    return cls(**kwargs)


def load(raw: Mapping[str, object]) -> Config:
    """Build a :class:`Config` from parsed TOML.

    Raises:
        ConfigError: naming the first bad key, its value and what was expected.
    """
    sections = _section_classes()
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        cls = sections.get(name)
        if cls is None:
            hint = _hint(name, list(sections))
            raise ConfigError(f"[{name}]: unknown section{hint}; known sections: {', '.join(sections)}")
        kwargs[name] = _build_section(cls, name, value)
    return Config(**kwargs)


def _section_classes() -> dict[str, type[Any]]:
    defaults = Config()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(Config)}


def parse_override(text: str) -> tuple[str, str, object]:
    """``"rtmp.listen=127.0.0.1:1935"`` -> (section, key, value).

    The value is read as a TOML value when it is one (``true``, ``5``, ``"quoted"``), else taken as a
    bare string, so ``--set web.listen=127.0.0.1:0`` needs no quotes.
    """
    lhs, eq, rhs = text.partition("=")
    sec, dot, key = lhs.strip().partition(".")
    if not eq or not dot or not sec or not key:
        raise ConfigError(f"--set {text!r}: want section.key=value, like rtmp.listen=0.0.0.0:1935")
    try:
        value: object = tomllib.loads(f"v = {rhs}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs.strip()
    return sec, key, value


def load_file(path: Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML file (None: defaults only), apply ``--set`` overrides, validate.

    Raises:
        ConfigError: unreadable file, TOML syntax error, or a bad key or value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for text in overrides:
        sec, key, value = parse_override(text)
        table = raw.setdefault(sec, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{sec}]={table!r}: want a table of settings")
        table[key] = value
    return load(raw)


def changed_sections(old: Config, new: Config) -> set[str]:
    """Names of the sections whose values differ (drives what a SIGHUP reload restarts)."""
    return {f.name for f in dataclasses.fields(Config) if getattr(old, f.name) != getattr(new, f.name)}


def describe() -> list[tuple[str, str, str]]:
    """(key, default, doc) for every setting, for the README and `appliance check-config --list`."""
    rows = []
    defaults = Config()
    for sec in dataclasses.fields(Config):
        obj = getattr(defaults, sec.name)
        for f in dataclasses.fields(obj):
            default = _render(getattr(obj, f.name), f)
            rows.append((f"{sec.name}.{f.metadata['key']}", repr(default), f.metadata.get("doc", "")))
    return rows
