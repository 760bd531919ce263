"""Which push a URL gets: `RtmpPush` for rtmp:// and rtmps://, `WhipPush` for WHIP endpoints (https://,
whip://, loopback http://). Both ``[[push.targets]]`` and the cloud channel's ``start_stream`` come here.

Without the `webrtc` extra a WHIP target gets an `UnavailablePush`: a child that says "disabled: extra not
installed" in its state and idles, rather than failing (and being restarted) for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from appliance.bus import BusRegistry
from appliance.config import WebrtcConfig
from appliance.log import quote
from appliance.media.push_base import PushBase, PushStats
from appliance.media.rtmp.push import RtmpPush
from appliance.media.whip_url import is_whip_url, parse_whip_url

__all__ = ["Push", "UnavailablePush", "make_push"]

log = logging.getLogger("appliance.push")


class Push(Protocol):
    """What egress, the status page and the cloud channel use of a push."""

    name: str
    source: str
    stats: PushStats

    def describe(self) -> dict[str, object]: ...
    def media(self) -> dict[str, dict[str, object]]: ...
    def stream_stats(self, now: float) -> dict[str, int | float]: ...
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


class UnavailablePush(PushBase):
    """A WHIP target while the `webrtc` extra is missing: reports why, sends nothing."""

    protocol = "whip"

    def __init__(self, name: str, url: str, source: str, buses: BusRegistry, reason: str) -> None:
        super().__init__(name, source, buses)
        self.url = parse_whip_url(url)
        self.reason = reason
        self.stats = PushStats(state=reason, last_error=reason)

    def media(self) -> dict[str, dict[str, object]]:
        return {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.warning("push.unavailable target=%s reason=%s", self.name, quote(self.reason))
        task_status.started()
        await trio.sleep_forever()


def make_push(
    name: str,
    url: str,
    source: str,
    buses: BusRegistry,
    *,
    webrtc: WebrtcConfig | None = None,
    verify_tls: bool = True,
    token: str = "",
    camera: str = "live/cam",
    request_keyframe: Callable[[], object] | None = None,
    on_state: Callable[[str, str | None], None] | None = None,
) -> Push:
    """The push for `url`.

    Raises:
        ValueError: A malformed URL (the message does not repeat its secret part).
    """
    if not is_whip_url(url):
        return RtmpPush(name, url, source, buses, verify_tls=verify_tls, on_state=on_state)
    from appliance.media.webrtc import missing_extra

    why = missing_extra()
    if why is not None:
        return UnavailablePush(name, url, source, buses, why)
    from appliance.media.webrtc.push import WhipPush

    webrtc = webrtc or WebrtcConfig()
    return WhipPush(
        name,
        url,
        source,
        buses,
        token=token,
        verify_tls=verify_tls,
        ice_addresses=webrtc.ice_addresses,
        ice_servers=webrtc.ice_servers,
        udp_ports=webrtc.udp_ports,
        request_keyframe=request_keyframe,
        camera=camera,
        on_state=on_state,
    )
