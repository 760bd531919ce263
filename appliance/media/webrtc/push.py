"""WHIP push egress: one Bus to one remote WHIP endpoint (RFC 9725), e.g. a cloud's WebRTC ingest.

Theory of operation
-------------------
`WhipPush` has `RtmpPush`'s surface (`describe`, `media`, `stream_stats`, `run`, `on_state`), so
``[[push.targets]]`` and the cloud channel run either as a child of ``egress``. Like `RtmpPush.run`, `run`
reports ready at once and makes one attempt; any failure raises `PushError` and the supervisor restarts it
with its backoff, so reconnecting is the supervisor's job.

An attempt: subscribe to the source (the GOP cache gives the configs, then a keyframe), wait for its H.264
config (state ``waiting``), then on a loop thread of its own (`loop.py`; one per push, so a stuck endpoint
never holds up WHEP viewers or other pushes) make a send-only peer connection: H.264 of the source's own
profile (packetization-mode 1), passed through as Annex-B ``av.Packet``s with the parameter sets before
keyframes (as for a WHEP viewer), and Opus transcoded from the source's AAC (`OpusFeed`). The offer, with
every candidate gathered, is POSTed with ``Authorization: Bearer TOKEN``; ``307``/``308`` are followed (at
most 3, and only to a URL the config would take: https, or http to loopback, since the token goes along);
``201`` gives the answer and the session URL (``Location``). The attempt ends when the connection fails
or closes, does not connect within `CONNECT_TIMEOUT_S`, the endpoint sends no RTCP receiver report for
`SILENT_S` while media goes out (a vanished endpoint; ICE consent alone takes about 30 s), the endpoint
takes nothing for `MAX_LAG_MS`, or the subscription is cut off; the session URL is then DELETEd (best
effort) and the peer connection closed. `describe` adds the session's outbound-rtp figures (``rtp``:
bit rate, bytes and packets sent, packets lost, round-trip time, the candidate pair).

ICE servers an endpoint announces in ``Link: <...>; rel="ice-server"`` on its 201 are not used: the offer
is non-trickle, so its candidates are gathered before the 201 arrives, and aiortc cannot restart ICE to
add them; configure ``webrtc.ice_servers`` instead.

Sources with B-frames are refused (WebRTC cannot carry them): publish them without, or push over RTMP.
PLI/FIR from the endpoint asks the camera's encoder for a keyframe (at most once a second), or, for
another source, resends the GOP cache's keyframe (`PassthroughTrack.resync`).

HTTP is the standard library's ``http.client`` in a trio worker thread: the two requests per attempt do
not justify another dependency.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import logging
import ssl
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import trio
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    clock,
)

from appliance.bus import BusRegistry, ProducerJoined, ProducerLeft, SubscriberCutOffError, Subscription
from appliance.config import IceServer
from appliance.media.bus_events import ConfigChanged, PacketReceived
from appliance.media.h264 import parse_avc_config, parse_h264_sps
from appliance.media.packets import Codec, CodecConfig, Kind
from appliance.media.push_base import PushBase, PushError
from appliance.media.webrtc.loop import AsyncioThread
from appliance.media.webrtc.negotiation import has_b_frames, keyframe_prefix, profile_level_id
from appliance.media.webrtc.tracks import (
    PEER_CONNECTIONS,
    OpusFeed,
    OpusTrack,
    PassthroughTrack,
    _h264_preferences,
    _selected_pair,
    restrict_host_addresses,
)
from appliance.media.whip_url import WhipUrl, parse_whip_url

__all__ = ["CONNECT_TIMEOUT_S", "SILENT_S", "WhipPush"]

log = logging.getLogger("appliance.push")

CONNECT_TIMEOUT_S = 15.0
HTTP_TIMEOUT_S = 15.0
QUEUE = 512
MAX_LAG_MS = 10_000
STATS_EVERY_S = 2.0
SILENT_S = 10.0
_KEYFRAME_INTERVAL_S = 1.0
_MAX_REDIRECTS = 3


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # after redirects: Location resolves against it


def _request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], *, verify_tls: bool
) -> _Reply:
    """One HTTP exchange, following 307/308 (the method and body kept). In a worker thread."""
    for _ in range(_MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context()
            if not verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(
                parts.hostname or "", port, timeout=HTTP_TIMEOUT_S, context=context
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", port, timeout=HTTP_TIMEOUT_S)
        try:
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = _Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(64 * 1024),
                url,
            )
        finally:
            conn.close()
        if reply.status in (307, 308) and "location" in reply.headers:
            # The token goes with the redirected POST, so the target must pass the rules the configured
            # URL passed: https, or http only to loopback (never https -> http to another host).
            try:
                url = parse_whip_url(urllib.parse.urljoin(url, reply.headers["location"])).url
            except ValueError as e:
                raise PushError(f"the endpoint redirected to a URL the push refuses: {e}") from None
            continue
        return reply
    raise PushError(f"more than {_MAX_REDIRECTS} redirects")


@dataclass
class _Silence:
    """How long the endpoint has sent no RTCP receiver report while media went out. Pure: the figures
    and the time come in. A pause of the source (nothing sent) restarts the count: an endpoint owes no
    reports about nothing."""

    packets_before: int = 0
    expecting_since: float | None = None  # media has gone out without a pause since then

    def update(self, now: float, packets_sent: int, report_age_s: float | None) -> float:
        """Seconds of silence as of `now`, given the packets sent so far and the age of the newest
        receiver report (None before the first)."""
        sending = packets_sent > self.packets_before
        self.packets_before = packets_sent
        if not sending:
            self.expecting_since = None
            return 0.0
        if self.expecting_since is None:
            self.expecting_since = now
        if report_age_s is None:
            return now - self.expecting_since
        return now - max(self.expecting_since, now - report_age_s)


def _why(reply: _Reply) -> str:
    """The endpoint's refusal in a line: its problem detail or title when it sent one."""
    text = ""
    if reply.headers.get("content-type", "").startswith(("application/problem+json", "application/json")):
        try:
            doc = json.loads(reply.body)
            text = str(doc.get("detail") or doc.get("title") or "")
        except (ValueError, AttributeError):
            text = ""
    if not text:
        text = (
            reply.body.decode("utf-8", "replace").strip().splitlines()[0][:200] if reply.body.strip() else ""
        )
    return f"the endpoint answered {reply.status}" + (f": {text}" if text else "")


# -- on the loop thread -------------------------------------------------------------------------------


async def _offer(
    video: PassthroughTrack,
    audio: OpusTrack | None,
    plid: str,
    ice_servers: Sequence[RTCIceServer],
    on_keyframe_request: Callable[[], None],
    on_state: Callable[[str], None],
) -> tuple[Any, str]:
    """A send-only peer connection and its offer, every candidate gathered (non-trickle)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
    PEER_CONNECTIONS.add(pc)
    try:
        picture = pc.addTransceiver(video, direction="sendonly")
        picture.setCodecPreferences(_h264_preferences(plid))
        picture.sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
        if audio is not None:
            # The track carries Opus packets already encoded: an endpoint must not pick PCMU/G722.
            sound = pc.addTransceiver(audio, direction="sendonly")
            opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]
            sound.setCodecPreferences(opus)

        @pc.on("connectionstatechange")
        def changed() -> None:
            on_state(pc.connectionState)

        await pc.setLocalDescription(await pc.createOffer())
    except BaseException:
        await pc.close()
        raise
    return pc, pc.localDescription.sdp


async def _accept(pc: Any, sdp: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


async def _rtp_figures(pc: Any) -> dict[str, Any]:
    """What the peer connection really sent (outbound-rtp, video and audio), what the endpoint reported
    back (remote-inbound-rtp: packets lost, round-trip time) and how long ago its last receiver report
    came (None before the first), and the selected candidate pair."""
    report = await pc.getStats()
    out: dict[str, Any] = {"bytes_sent": 0, "packets_sent": 0, "packets_lost": 0, "rtt_s": None}
    last: datetime.datetime | None = None
    for s in report.values():
        if s.type == "outbound-rtp":
            out["bytes_sent"] += s.bytesSent
            out["packets_sent"] += s.packetsSent
        elif s.type == "remote-inbound-rtp":
            out["packets_lost"] += s.packetsLost or 0
            if s.kind == "video" and s.roundTripTime is not None:
                out["rtt_s"] = s.roundTripTime
            last = s.timestamp if last is None else max(last, s.timestamp)
    # aiortc stamps a remote-inbound-rtp entry when the receiver report arrives (its own clock).
    out["report_age_s"] = None if last is None else (clock.current_datetime() - last).total_seconds()
    out["candidate_pair"] = _selected_pair(pc)
    return out


# -- on trio's thread ---------------------------------------------------------------------------------


class WhipPush(PushBase):
    """Push `source` to the WHIP endpoint `url`.

    Args:
        name: The target's name (config ``push.targets.name``, or the cloud stream id).
        url: The endpoint (see `appliance.media.whip_url`).
        source: The Bus to push, ``app/key``.
        buses: The process's Bus registry.
        token: The bearer token, or "" for none.
        verify_tls: Check the endpoint's certificate.
        ice_addresses: Host candidate addresses (``webrtc.ice_addresses``; empty: every interface).
        ice_servers: STUN/TURN servers (``webrtc.ice_servers``).
        udp_ports: Ports for the ICE sockets (``webrtc.udp_ports``), or None for any.
        request_keyframe: Asks the camera's encoder for a keyframe; used when `source` is `camera`.
        camera: The camera's stream name.
        on_state: Told every state change and failure (state, error), as `RtmpPush`'s.

    Raises:
        ValueError: A malformed URL (the message does not repeat its path).
    """

    def __init__(
        self,
        name: str,
        url: str,
        source: str,
        buses: BusRegistry,
        *,
        token: str = "",
        verify_tls: bool = True,
        ice_addresses: Sequence[str] = (),
        ice_servers: Sequence[IceServer] = (),
        udp_ports: range | None = None,
        request_keyframe: Callable[[], object] | None = None,
        camera: str = "live/cam",
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        super().__init__(name, source, buses, on_state)
        self.url: WhipUrl = parse_whip_url(url)
        self.token = token
        self.verify_tls = verify_tls
        self.ice_addresses = tuple(ice_addresses)
        self.ice_servers = [
            RTCIceServer(urls=list(s.urls), username=s.username or None, credential=s.credential or None)
            for s in ice_servers
        ]
        self.udp_ports = udp_ports
        self.request_keyframe = request_keyframe
        self.camera = camera
        self.rtp: dict[str, object] = {}  # the current session's outbound-rtp figures (see _watch_rtp)
        self.keyframe_requests = 0
        self._pc_state = "new"
        self._pc_ended = trio.Event()
        self._last_keyframe = float("-inf")
        self._prefix = b""
        self._last_pts_ms = 0

    protocol = "whip"

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "keyframe_requests": self.keyframe_requests, "rtp": self.rtp}

    def media(self) -> dict[str, dict[str, object]]:
        """What goes out: the source's H.264 as it is, and Opus when it has audio."""
        out = super().media()
        if "audio" in out:
            out["audio"] = {"codec": "opus", "sample_rate": 48000, "channels": 2}
        return out

    async def _attempt(self) -> None:
        sub = self.buses.subscribe(
            self.source, max_queue=QUEUE, max_lag_ms=MAX_LAG_MS, label=f"whip-push:{self.name}"
        )
        with sub:
            try:
                config = await self._wait_for_video(sub)
                restrict_host_addresses(self.ice_addresses)
                loop = AsyncioThread(name=f"whip-push-{self.name}", udp_ports=self.udp_ports)
                loop.start()
                try:
                    await self._session(loop, sub, config)
                finally:
                    await trio.to_thread.run_sync(loop.stop)
            except SubscriberCutOffError:
                raise PushError(f"the endpoint took nothing for {MAX_LAG_MS // 1000} s") from None
            finally:
                self._dropped_base += sub.stats().dropped
                self.stats.dropped = self._dropped_base

    async def _wait_for_video(self, sub: Subscription) -> CodecConfig:
        bus = sub.bus
        config = bus.configs.get(Kind.VIDEO)
        if config is None:
            self._state("waiting")
        while config is None:
            event = await sub.receive()
            if isinstance(event, ConfigChanged) and event.config.kind is Kind.VIDEO:
                config = event.config
        if config.codec is not Codec.H264:
            raise PushError(f"{self.source} is {config.codec.value}; WHIP push sends H.264")
        return config

    async def _session(self, loop: AsyncioThread, sub: Subscription, config: CodecConfig) -> None:
        try:
            avc = parse_avc_config(config.data)
            plid = profile_level_id(avc.sps[0])
            sps = parse_h264_sps(avc.sps[0])
        except (ValueError, IndexError) as e:
            raise PushError(f"{self.source}: its H.264 config does not parse: {e}") from None
        if has_b_frames(sps, (p for p in sub.bus.gop if p.kind is Kind.VIDEO)):
            raise PushError(
                f"{self.source} has B-frames, which WebRTC cannot carry: publish it without "
                "(x264: bframes=0; OBS: profile baseline), or push it over RTMP"
            )
        self._prefix = keyframe_prefix(avc.sps, avc.pps)
        audio_config = sub.bus.configs.get(Kind.AUDIO)
        video = PassthroughTrack()
        audio = OpusTrack() if audio_config is not None and audio_config.codec is Codec.AAC else None
        feed = OpusFeed()
        if audio is not None and audio_config is not None:
            feed.tracks.add(audio)
            feed.configure(audio_config.data)  # the loop thread has not seen it yet
        self._pc_state = "new"
        self._pc_ended = trio.Event()
        self.rtp = {}

        def on_keyframe_request() -> None:  # on the loop thread
            loop.to_trio(self._on_keyframe_request, loop, video)

        def on_state(state: str) -> None:  # on the loop thread
            loop.to_trio(self._on_pc_state, state)

        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                pc, offer = await loop.run(
                    _offer(video, audio, plid, self.ice_servers, on_keyframe_request, on_state)
                )
        except trio.TooSlowError:
            raise PushError(f"gathering ICE candidates took over {CONNECT_TIMEOUT_S:g} s") from None
        except Exception as e:  # aiortc's errors have no common base
            raise PushError(f"cannot make an offer: {e}") from None
        location: str | None = None
        try:
            headers = {"Content-Type": "application/sdp"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            reply = await self._http("POST", self.url.url, offer.encode(), headers)
            if reply.status != 201:
                raise PushError(_why(reply))
            if "location" in reply.headers:
                location = urllib.parse.urljoin(reply.url, reply.headers["location"])
            try:
                await loop.run(_accept(pc, reply.body.decode("utf-8", "replace")))
            except Exception as e:
                raise PushError(f"the endpoint's answer does not fit the offer: {e}") from None
            await self._wait_connected()
            await self._pump(loop, pc, sub, video, audio, feed)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if location is not None:
                    auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                    # Best effort: the endpoint ends the session when ICE times out anyway.
                    with contextlib.suppress(PushError, OSError):
                        await self._http("DELETE", location, None, auth)
                await loop.run(pc.close())

    async def _http(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        try:
            return await trio.to_thread.run_sync(
                lambda: _request(method, url, body, headers, verify_tls=self.verify_tls),
                abandon_on_cancel=True,
            )
        except ssl.SSLError as e:
            raise PushError(f"TLS with {self.url.host} failed: {e.reason or e}") from None
        except (OSError, http.client.HTTPException) as e:
            raise PushError(f"{method} to {self.url.host}:{self.url.port} failed: {e!r}") from None

    def _on_pc_state(self, state: str) -> None:
        self._pc_state = state
        if state in ("failed", "closed"):
            self._pc_ended.set()

    async def _wait_connected(self) -> None:
        with trio.move_on_after(CONNECT_TIMEOUT_S):
            while self._pc_state != "connected":
                if self._pc_ended.is_set():
                    raise PushError(f"ICE/DTLS with the endpoint {self._pc_state}")
                await trio.sleep(0.05)
            self._connected()
            return
        raise PushError(f"not connected within {CONNECT_TIMEOUT_S:g} s (state {self._pc_state})")

    async def _pump(
        self,
        loop: AsyncioThread,
        pc: Any,
        sub: Subscription,
        video: PassthroughTrack,
        audio: OpusTrack | None,
        feed: OpusFeed,
    ) -> None:
        # trio wraps a task's error in an ExceptionGroup: unwrap what ends a session, so the push's
        # last_error says "the connection to the endpoint failed", not "1 sub-exception".
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    await self._pc_ended.wait()
                    raise PushError(f"the connection to the endpoint {self._pc_state}")

                nursery.start_soon(watch)
                nursery.start_soon(self._watch_rtp, loop, pc)
                self._state("streaming" if sub.bus.live else "waiting")
                post = loop.post
                while True:
                    event = await sub.receive()
                    if isinstance(event, ProducerJoined):
                        self._state("streaming")
                    elif isinstance(event, ProducerLeft):
                        self._state("waiting")
                    elif isinstance(event, ConfigChanged):
                        if event.config.kind is Kind.VIDEO:
                            if event.config.codec is not Codec.H264:
                                raise PushError(f"{self.source} changed to {event.config.codec.value}")
                            avc = parse_avc_config(event.config.data)
                            self._prefix = keyframe_prefix(avc.sps, avc.pps)
                        elif audio is not None and event.config.codec is Codec.AAC:
                            post(feed.configure, event.config.data)
                    elif isinstance(event, PacketReceived):
                        packet = event.packet
                        now = trio.current_time()
                        if packet.kind is Kind.VIDEO:
                            data = self._prefix + packet.annexb() if packet.keyframe else packet.annexb()
                            out = av.Packet(data)
                            out.pts = packet.pts_ms * 90
                            out.time_base = Fraction(1, 90000)
                            self._last_pts_ms = packet.pts_ms
                            post(video.push, out, packet.keyframe)
                            self._frames.add(now, 1)
                        elif audio is not None and packet.codec is Codec.AAC:
                            post(feed.feed, packet.payload, packet.pts_ms)
                        else:
                            continue
                        self._bytes.add(now, len(packet.payload))
                        self.stats.bytes_out += len(packet.payload)
                        self.stats.packets_out += 1
                        self.stats.dropped = self._dropped_base + sub.stats().dropped
        except BaseExceptionGroup as group:
            ended, rest = group.split((PushError, SubscriberCutOffError))
            if ended is None or rest is not None:
                raise
            first: BaseException = ended
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _watch_rtp(self, loop: AsyncioThread, pc: Any) -> None:
        """Every `STATS_EVERY_S`: the outbound-rtp figures for `describe`; and the end of the attempt
        when the endpoint sends no RTCP receiver report for `SILENT_S` while media goes out. A vanished
        endpoint is otherwise noticed only by ICE consent checks, after about 30 s (aioice: 6 x 5 s)."""
        silence = _Silence()
        at_before: float | None = None
        bytes_before = 0
        while True:
            await trio.sleep(STATS_EVERY_S)
            with trio.move_on_after(STATS_EVERY_S):  # a loop thread too busy to answer: next time
                figures = await loop.run(_rtp_figures(pc))
                now = trio.current_time()
                bitrate = 0
                if at_before is not None and now > at_before:
                    bitrate = round((figures["bytes_sent"] - bytes_before) * 8 / (now - at_before))
                at_before, bytes_before = now, figures["bytes_sent"]
                rtt = figures["rtt_s"]
                self.rtp = {
                    "bitrate_bps": bitrate,
                    "bytes_sent": figures["bytes_sent"],
                    "packets_sent": figures["packets_sent"],
                    "packets_lost": figures["packets_lost"],
                    "rtt_ms": None if rtt is None else round(rtt * 1000),
                    "candidate_pair": figures["candidate_pair"],
                }
                silent = silence.update(now, figures["packets_sent"], figures["report_age_s"])
                if silent > SILENT_S:
                    raise PushError(f"the endpoint sent no RTCP receiver report for {silent:.0f} s")

    def _on_keyframe_request(self, loop: AsyncioThread, video: PassthroughTrack) -> None:
        now = trio.current_time()
        if now - self._last_keyframe < _KEYFRAME_INTERVAL_S:
            return
        self._last_keyframe = now
        self.keyframe_requests += 1
        if self.source == self.camera and self.request_keyframe is not None:
            self.request_keyframe()
            return
        bus = self.buses.get(self.source)
        key = next((p for p in bus.gop if p.kind is Kind.VIDEO and p.keyframe), None) if bus else None
        if key is None or not self._prefix:
            return
        packet = av.Packet(self._prefix + key.annexb())
        packet.pts = (self._last_pts_ms + 1) * 90
        packet.time_base = Fraction(1, 90000)
        loop.post(video.resync, packet)
