"""WHIP endpoint URLs for the WHIP push. Pure and free of aiortc, so config and the cloud protocol check
URLs exactly as the push will use them, with or without the `webrtc` extra.

- ``https://HOST[:PORT]/PATH``: WHIP over TLS, what RFC 9725 requires of a real endpoint.
- ``whip://HOST[:PORT]/PATH``: the same as ``https://`` (a scheme some tools and docs use for WHIP).
- ``http://HOST[:PORT]/PATH``: plain HTTP, only to a loopback address (a local relay, tests): the bearer
  token and the session URL would travel in clear.

The path (and any query) may hold a secret, like an RTMP stream key: `WhipUrl.__str__` leaves it out.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["WHIP_SCHEMES", "WhipUrl", "is_whip_url", "parse_whip_url"]

WHIP_SCHEMES = ("https://", "http://", "whip://")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")
_WANT = "want https://HOST[:PORT]/PATH (or whip://..., the same; http:// only to a loopback address)"


@dataclass(frozen=True, slots=True)
class WhipUrl:
    """A WHIP endpoint: `url` is what is POSTed to (http or https)."""

    url: str = ""
    host: str = ""
    port: int = 443
    tls: bool = True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/<path>"


def is_whip_url(url: str) -> bool:
    """Whether `url` is meant for the WHIP push (by its scheme; `parse_whip_url` checks the rest)."""
    return url.lower().startswith(WHIP_SCHEMES)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_whip_url(url: str) -> WhipUrl:
    """Check a WHIP endpoint URL.

    Raises:
        ValueError: Not one of the forms above. The message does not repeat the URL's path.
    """
    if _CONTROL_RE.search(url):
        raise ValueError(f"has spaces or control characters; {_WANT}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not a URL; {_WANT}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http", "whip"):
        raise ValueError(_WANT)
    if not parts.hostname:
        raise ValueError(f"no host; {_WANT}")
    if port == 0:
        raise ValueError(f"port 0; {_WANT}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL: put the bearer token in `token` instead")
    tls = scheme != "http"
    if not tls and not _loopback(parts.hostname):
        raise ValueError(f"http:// to {parts.hostname}: the token would go in clear; use https://")
    target = parts._replace(scheme="https" if tls else "http").geturl()
    return WhipUrl(url=target, host=parts.hostname, port=port or (443 if tls else 80), tls=tls)
