"""RTMP and RTMPS URLs: `rtmp[s]://host[:port]/app/name[?query]`. Pure (no trio), so config and the cloud
protocol parse URLs exactly as the client that connects to them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORT", "DEFAULT_TLS_PORT", "RtmpUrl", "parse_rtmp_url"]

DEFAULT_PORT = 1935
DEFAULT_TLS_PORT = 443  # rtmps:// (RTMP over TLS), the port cloud ingests listen on
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")  # urlsplit quietly drops some of these: refuse them


@dataclass(frozen=True, slots=True)
class RtmpUrl:
    """`rtmp[s]://host[:port]/app/name[?query]` taken apart."""

    host: str
    port: int
    app: str
    name: str  # with its query, as publish/play send it
    tls: bool = False

    @property
    def tc_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rtmps' if self.tls else 'rtmp'}://{host}:{self.port}/{self.app}"

    def __str__(self) -> str:
        # For logs: the stream name may carry a secret (a cloud ingest's stream key), so it is left out.
        return f"{self.tc_url}/<key>"


def parse_rtmp_url(url: str) -> RtmpUrl:
    """Parse an RTMP or RTMPS URL; the app is the first path segment, the stream name the rest.

    Raises:
        ValueError: Not an rtmp:// or rtmps:// URL with a host, an app and a stream name. The message
            does not repeat the URL's path (it may hold a stream key).
    """
    want = "want rtmp://HOST[:PORT]/APP/KEY or rtmps://..."
    if _CONTROL_RE.search(url):
        raise ValueError(f"has spaces or control characters; {want}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or not a number
    except ValueError:
        raise ValueError(f"not a URL; {want}") from None
    if parts.scheme not in ("rtmp", "rtmps"):
        raise ValueError(want)
    if not parts.hostname:
        raise ValueError(f"no host; {want}")
    if port == 0:
        raise ValueError(f"port 0; {want}")
    app, _, name = parts.path.lstrip("/").partition("/")
    if not app or not name:
        raise ValueError(f"no app or stream key in the path; {want}")
    if parts.query:
        name = f"{name}?{parts.query}"
    tls = parts.scheme == "rtmps"
    return RtmpUrl(parts.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), app, name, tls)
