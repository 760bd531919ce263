"""WHEP viewers (draft-ietf-wish-whep): one RTCPeerConnection per viewer, each fed from the stream's Bus
by its own subscription, H.264 passed through (no decode, no re-encode).

Theory of operation
-------------------
``POST /whep/{app}/{key}`` (``/whep/cam``: the camera) with an SDP offer: the stream must be on the Bus
registry with H.264 video and no B-frames. aiortc (on the loop thread, `loop.py`) answers with the
stream's profile only; the answer comes back ``201`` with ``Location: /whep/sessions/{id}/{secret}`` (the
URL is the session's credential: ``PATCH`` trickle ICE and ``DELETE`` need it, nothing else) and an ETag.

Per viewer, a trio pump task reads the viewer's own Bus subscription (bounded: a slow viewer drops to the
next keyframe and never slows the camera or other viewers; it starts at once from the GOP cache) and
posts ``av.Packet``s to its track. The ``av.Packet``s (Annex-B, parameter sets before keyframes) are made
once per Bus packet by the stream's `_VideoCache` and shared by all viewers. AAC is transcoded to Opus once
per stream while it has viewers (`OpusFeed`, on the loop thread, fed by one Bus subscription).

PLI/FIR from any viewer of the camera asks the encoder for a keyframe, at most once per
`KEYFRAME_INTERVAL_S` for all viewers; other streams' viewers are served the GOP cache as they join.
A viewer ends on DELETE, when its connection fails or closes, when it does not connect within
`CONNECT_TIMEOUT_S`, or when the Bus cuts its subscription off.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import trio
from aiortc import RTCIceServer
from starlette.requests import Request
from starlette.responses import Response

from appliance.bus import BusRegistry, SubscriberCutOffError
from appliance.config import WebrtcConfig
from appliance.media.bus_events import ConfigChanged, PacketReceived
from appliance.media.h264 import parse_avc_config, parse_h264_sps
from appliance.media.packets import Codec, Kind, Packet
from appliance.media.webrtc.loop import AsyncioThread
from appliance.media.webrtc.negotiation import (
    has_b_frames,
    keyframe_prefix,
    profile_level_id,
)
from appliance.media.webrtc.sessions import created, offer_options, read_offer, session_options, trickle
from appliance.media.webrtc.tracks import (
    PEER_CONNECTIONS,
    AvPacket,
    OpusFeed,
    OpusTrack,
    PassthroughTrack,
    answer,
    loop_tasks,
    restrict_host_addresses,
    stats,
)
from appliance.media.webrtc.transcode import StreamTranscoder, transcoded_name
from appliance.media.webrtc.whip import ANSWER_TIMEOUT_S, WhipIngest, answer_timed_out
from appliance.web.app import problem
from appliance.web.auth import stream_access
from appliance.web.routes import RouteRegistry

__all__ = ["CONNECT_TIMEOUT_S", "KEYFRAME_INTERVAL_S", "WhepService"]

log = logging.getLogger("appliance.webrtc")

KEYFRAME_INTERVAL_S = 1.0
CONNECT_TIMEOUT_S = 30.0
_STATS_EVERY_S = 2.0
_SUB_QUEUE = 256
_TRANSCODED_PROFILE = (
    "42e01f"  # what the transcode makes: constrained baseline (level 3.1; asymmetry allowed)
)


class _VideoCache:
    """A stream's ``av.Packet``s, made once per Bus packet and shared by its viewers (the newest few)."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[int, tuple[Packet, bytes, AvPacket]] = OrderedDict()
        self._size = size

    def get(self, packet: Packet, prefix: bytes) -> AvPacket:
        hit = self._items.get(id(packet))
        if hit is not None and hit[0] is packet and hit[1] is prefix:
            return hit[2]
        data = prefix + packet.annexb() if packet.keyframe else packet.annexb()
        out = av.Packet(data)
        out.pts = packet.pts_ms * 90
        out.time_base = Fraction(1, 90000)
        self._items[id(packet)] = (packet, prefix, out)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return out


@dataclass
class _Viewer:
    id: str
    secret: str
    stream: str
    bus: str  # the Bus it reads: the stream's, or its transcode's
    pc: Any
    track: PassthroughTrack
    audio: OpusTrack | None
    ufrag: str
    created: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    state: str = "new"
    keyframe_requests: int = 0
    resyncs: int = 0  # cached keyframes served on PLI (an RTMP publisher's stream)
    last_resync: float = float("-inf")
    prefix: bytes = b""  # the parameter sets in force, Annex-B
    last_pts_ms: int = 0  # of the newest video packet handed to the track
    figures: dict[str, Any] = field(default_factory=dict)
    bitrate_bps: int = 0

    @property
    def label(self) -> str:
        return f"webrtc:{self.id}"


@dataclass
class _Stream:
    """What a stream's viewers share: the av.Packet cache and the Opus feed."""

    cache: _VideoCache = field(default_factory=_VideoCache)
    viewers: set[str] = field(default_factory=set)
    opus: OpusFeed | None = None
    opus_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    transcoder: StreamTranscoder | None = None
    transcode_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class WhepService:
    """The webrtc child: WHEP endpoints over the Bus registry.

    Args:
        buses: The Bus registry.
        routes: Where the endpoints are registered (removed again when the child stops).
        camera: The camera's stream name (``/whep/cam``).
        cfg: The [webrtc] section.
        play_secrets: The play secrets of an RTMP app (rtmp.auth); a WHEP viewer presents one as a bearer
            token when there are any.
        publish_secrets: The publish secrets of an RTMP app; a WHIP publisher presents one when there are any.
        apps: The apps WHIP may publish under (``rtmp.apps``).
        reserved: Streams WHIP may not publish (the camera's).
        request_keyframe: Asks the camera's encoder for a keyframe (PLI/FIR from a camera viewer).
    """

    def __init__(
        self,
        buses: BusRegistry,
        routes: RouteRegistry,
        *,
        camera: str,
        cfg: WebrtcConfig,
        play_secrets: Callable[[str], Sequence[str]] = lambda app: (),
        publish_secrets: Callable[[str], Sequence[str]] = lambda app: (),
        apps: Callable[[], Sequence[str]] = lambda: ("live",),
        reserved: Callable[[], frozenset[str]] = frozenset,
        request_keyframe: Callable[[], object] | None = None,
    ) -> None:
        self.buses = buses
        self.routes = routes
        self.camera = camera
        self.cfg = cfg
        self.play_secrets = play_secrets
        self.publish_secrets = publish_secrets
        self.apps = apps
        self.reserved = reserved
        self.ingest: WhipIngest | None = None
        self.request_keyframe = request_keyframe
        self.viewers: dict[str, _Viewer] = {}
        self.keyframes_requested = 0
        self._streams: dict[str, _Stream] = {}
        self._last_keyframe = float("-inf")
        self._loop_tasks = 0
        self._loop: AsyncioThread | None = None
        self._nursery: trio.Nursery | None = None
        self._ice_servers = [
            RTCIceServer(urls=list(s.urls), username=s.username or None, credential=s.credential or None)
            for s in cfg.ice_servers
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The child: serve the endpoints until cancelled, then hang up on every viewer."""
        restrict_host_addresses(self.cfg.ice_addresses)
        loop = self._loop = AsyncioThread(udp_ports=self.cfg.udp_ports)
        loop.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                add = self.routes.add_route
                add("/whep/sessions/{id}/{secret}", self._session, methods=["PATCH", "DELETE", "OPTIONS"],
                    owner="webrtc")  # fmt: skip
                add("/whep/cam", self._post_cam, methods=["POST", "OPTIONS"], owner="webrtc")
                add("/whep/{app}/{key}", self._post, methods=["POST", "OPTIONS"], owner="webrtc")
                ingest = self.ingest = WhipIngest(
                    self.buses,
                    loop,
                    ice_servers=self._ice_servers,
                    apps=self.apps,
                    reserved=self.reserved,
                    publish_secrets=self.publish_secrets,
                )
                await nursery.start(ingest.run)
                add("/whip/sessions/{id}/{secret}", ingest.session, methods=["PATCH", "DELETE", "OPTIONS"],
                    owner="webrtc")  # fmt: skip
                add("/whip/{app}/{key}", ingest.offer, methods=["POST", "OPTIONS"], owner="webrtc")
                nursery.start_soon(self._watch)
                log.info("webrtc.on ice_addresses=%s", ",".join(self.cfg.ice_addresses) or "all")
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.routes.remove_owner("webrtc")
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for viewer in list(self.viewers.values()):
                    await self._close(viewer, "stopping")
            loop.stop()

    def describe(self) -> dict[str, dict[str, object]]:
        """Each viewer's figures by its Bus subscriber name (``webrtc:ID``), for ``GET /api/streams``."""
        return {
            v.label: {
                "session": v.id,
                "state": v.state,
                "bitrate_bps": v.bitrate_bps,
                "packets_lost": int(v.figures.get("packets_lost", 0)),
                "rtt_ms": _rtt_ms(v.figures.get("rtt_s")),
                "keyframe_requests": v.keyframe_requests,
                "keyframes_resent": v.resyncs,
                "dropped_on_send": v.track.dropped,
                "candidate_pair": v.figures.get("pair"),
            }
            for v in self.viewers.values()
        }

    def status(self) -> dict[str, object]:
        """For ``/api/status``."""
        return {
            "state": "running",
            "viewers": len(self.viewers),
            "max_viewers": self.cfg.max_viewers,
            "streams": sorted(self._streams),
            "keyframes_requested": self.keyframes_requested,
            "publishers": len(self.ingest.publishers) if self.ingest is not None else 0,
            # What a leak would show: connections not closed, asyncio tasks on the loop thread.
            "peer_connections_open": sum(
                1 for pc in list(PEER_CONNECTIONS) if pc.connectionState != "closed"
            ),
            "loop_tasks": self._loop_tasks,
        }

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _post_cam(self, request: Request) -> Response:
        return await self._offer(request, self.camera)

    async def _post(self, request: Request) -> Response:
        return await self._offer(request, f"{request.path_params['app']}/{request.path_params['key']}")

    async def _offer(self, request: Request, stream: str) -> Response:
        if request.method == "OPTIONS":
            return offer_options()
        refusal = stream_access(request, self.play_secrets(stream.partition("/")[0]))
        if refusal is not None:
            return refusal
        offer = await read_offer(request)
        if isinstance(offer, Response):
            return offer
        bus = self.buses.get(stream)
        if bus is None or Kind.VIDEO not in bus.configs:
            return problem(404, "Not Found", f"no live stream {stream!r} with video")
        config = bus.configs[Kind.VIDEO]
        if config.codec is not Codec.H264:
            return problem(
                422, "Unprocessable Content", f"{stream} is {config.codec.value}; WHEP serves H.264"
            )
        try:
            avc = parse_avc_config(config.data)
            sps = avc.sps[0]
            plid = profile_level_id(sps)
            parsed = parse_h264_sps(sps)
        except (ValueError, IndexError) as e:
            return problem(422, "Unprocessable Content", f"{stream}: its H.264 config does not parse: {e}")
        transcode = has_b_frames(parsed, (p for p in bus.gop if p.kind is Kind.VIDEO))
        if transcode and not self.cfg.transcode:
            return problem(
                422,
                "Unprocessable Content",
                f"{stream} has B-frames, which WebRTC cannot carry, and webrtc.transcode is false: publish "
                "without B-frames (x264: bframes=0; OBS: profile baseline) or set webrtc.transcode = true",
            )
        if transcode:
            plid = _TRANSCODED_PROFILE
        if len(self.viewers) >= self.cfg.max_viewers:
            return problem(503, "Service Unavailable", f"webrtc.max_viewers ({self.cfg.max_viewers}) reached")
        assert self._loop is not None and self._nursery is not None
        loop = self._loop
        audio_config = bus.configs.get(Kind.AUDIO)
        audio = OpusTrack() if audio_config is not None and audio_config.codec is Codec.AAC else None
        track = PassthroughTrack()
        viewer_id = secrets.token_hex(6)

        def on_keyframe_request() -> None:  # on the loop thread
            loop.to_trio(self._on_keyframe_request, viewer_id)

        def on_state(state: str) -> None:  # on the loop thread
            loop.to_trio(self._on_state, viewer_id, state)

        answered = None
        try:
            with trio.move_on_after(ANSWER_TIMEOUT_S):
                answered = await loop.run(
                    answer(
                        offer,
                        track,
                        audio,
                        plid,
                        self._ice_servers,
                        on_keyframe_request,
                        on_state,
                    )
                )
        except Exception as e:  # aiortc's errors have no common base; any of them means this offer
            return problem(400, "Bad Request", f"cannot answer this offer: {e}")
        if answered is None:
            return answer_timed_out()
        pc, sdp, ufrag = answered
        viewer = _Viewer(
            id=viewer_id,
            secret=secrets.token_urlsafe(18),
            stream=stream,
            bus=transcoded_name(stream) if transcode else stream,
            pc=pc,
            track=track,
            audio=audio,
            ufrag=ufrag,
            created=trio.current_time(),
        )
        self.viewers[viewer.id] = viewer
        shared = self._streams.get(stream)
        if shared is None:
            shared = self._streams[stream] = _Stream()
        shared.viewers.add(viewer.id)
        if transcode and shared.transcoder is None:
            transcoder = shared.transcoder = StreamTranscoder(self.buses, stream)
            self._nursery.start_soon(self._transcode, transcoder, shared.transcode_scope)
        self._nursery.start_soon(self._pump, viewer, shared)
        if audio is not None:
            if shared.opus is None:
                feed = shared.opus = OpusFeed()
                self._nursery.start_soon(self._audio_pump, stream, shared, feed)
            loop.post(shared.opus.tracks.add, audio)
        log.info("webrtc.viewer_added stream=%s viewer=%s viewers=%d", stream, viewer.id, len(self.viewers))
        return created(sdp, "whep", viewer.id, viewer.secret, viewer.ufrag)

    async def _session(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return session_options()
        viewer = self.viewers.get(request.path_params["id"])
        if viewer is None or not hmac.compare_digest(viewer.secret, request.path_params["secret"]):
            return problem(404, "Not Found", "no such session")
        if request.method == "DELETE":
            await self._close(viewer, "deleted")
            return Response(status_code=200)
        assert self._loop is not None
        return await trickle(
            request,
            loop=self._loop,
            pc=viewer.pc,
            session_id=viewer.id,
            ufrag=viewer.ufrag,
            event="webrtc.trickle",
        )

    # -- viewers ------------------------------------------------------------------------------------

    def _on_keyframe_request(self, viewer_id: str) -> None:
        viewer = self.viewers.get(viewer_id)
        if viewer is None:
            return
        viewer.keyframe_requests += 1
        now = trio.current_time()
        shared = self._streams.get(viewer.stream)
        transcoder = shared.transcoder if shared is not None else None
        if transcoder is not None:
            transcoder.request_keyframe()  # our own encoder: it rate-limits
        elif self.ingest is not None and self.ingest.request_keyframe(viewer.stream):
            pass  # a WHIP publisher: asked with a PLI (rate-limited there)
        elif viewer.stream != self.camera or self.request_keyframe is None:
            self._resync(viewer, now)  # passthrough from an RTMP publisher: nobody to ask
        elif now - self._last_keyframe >= KEYFRAME_INTERVAL_S:
            self._last_keyframe = now
            self.keyframes_requested += 1
            self.request_keyframe()

    def _resync(self, viewer: _Viewer, now: float) -> None:
        """Serve `viewer` the GOP cache's keyframe (at most once a second per viewer)."""
        bus = self.buses.get(viewer.bus)
        if bus is None or not viewer.prefix or now - viewer.last_resync < KEYFRAME_INTERVAL_S:
            return
        key = next((p for p in bus.gop if p.kind is Kind.VIDEO and p.keyframe), None)
        if key is None:
            return
        viewer.last_resync = now
        viewer.resyncs += 1
        packet = av.Packet(viewer.prefix + key.annexb())
        packet.pts = (viewer.last_pts_ms + 1) * 90
        packet.time_base = Fraction(1, 90000)
        assert self._loop is not None
        self._loop.post(viewer.track.resync, packet)
        log.info("webrtc.keyframe_resent viewer=%s stream=%s", viewer.id, viewer.stream)

    def _on_state(self, viewer_id: str, state: str) -> None:
        viewer = self.viewers.get(viewer_id)
        if viewer is None:
            return
        viewer.state = state
        log.info("webrtc.viewer_state viewer=%s state=%s", viewer.id, state)
        if state in ("failed", "closed"):
            viewer.scope.cancel()  # the pump ends and closes the viewer

    async def _close(self, viewer: _Viewer, why: str) -> None:
        if self.viewers.pop(viewer.id, None) is None:
            return
        viewer.scope.cancel()
        assert self._loop is not None
        shared = self._streams.get(viewer.stream)
        if shared is not None:
            shared.viewers.discard(viewer.id)
            if shared.opus is not None and viewer.audio is not None:
                self._loop.post(shared.opus.tracks.discard, viewer.audio)
            if not shared.viewers:
                shared.opus_scope.cancel()
                shared.transcode_scope.cancel()
                del self._streams[viewer.stream]
        with trio.move_on_after(5):
            await self._loop.run(viewer.pc.close())
        log.info("webrtc.viewer_removed stream=%s viewer=%s why=%s", viewer.stream, viewer.id, why)

    async def _pump(self, viewer: _Viewer, shared: _Stream) -> None:
        """One viewer's Bus subscription -> its track."""
        assert self._loop is not None
        post = self._loop.post
        prefix = b""
        why = "ended"
        with (
            viewer.scope,
            self.buses.subscribe(viewer.bus, max_queue=_SUB_QUEUE, label=viewer.label) as sub,
        ):
            try:
                while True:
                    event = await sub.receive()
                    if isinstance(event, ConfigChanged) and event.config.kind is Kind.VIDEO:
                        if event.config.codec is not Codec.H264:
                            why = f"codec changed to {event.config.codec.value}"
                            break
                        avc = parse_avc_config(event.config.data)
                        prefix = viewer.prefix = keyframe_prefix(avc.sps, avc.pps)
                    elif isinstance(event, PacketReceived) and event.packet.kind is Kind.VIDEO:
                        packet = event.packet
                        viewer.last_pts_ms = packet.pts_ms
                        post(viewer.track.push, shared.cache.get(packet, prefix), packet.keyframe)
            except SubscriberCutOffError:
                why = "cut off (too far behind)"
            except trio.EndOfChannel:
                why = "stream closed"
        with trio.CancelScope(shield=True):
            await self._close(viewer, why if viewer.state not in ("failed", "closed") else viewer.state)

    async def _transcode(self, transcoder: StreamTranscoder, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await transcoder.run()
            except Exception:  # the transcode's viewers lose their picture; the stream and others don't
                log.exception("webrtc.transcode_failed source=%s", transcoder.source)

    async def _audio_pump(self, stream: str, shared: _Stream, feed: OpusFeed) -> None:
        """The stream's AAC -> the loop thread's `OpusFeed` (transcoded there once for every viewer)."""
        assert self._loop is not None
        post = self._loop.post
        with (
            shared.opus_scope,
            self.buses.subscribe(stream, max_queue=_SUB_QUEUE, label="webrtc-opus:aac") as sub,
        ):
            try:
                while True:
                    event = await sub.receive()
                    if isinstance(event, ConfigChanged) and event.config.kind is Kind.AUDIO:
                        if event.config.codec is Codec.AAC:
                            post(feed.configure, event.config.data)
                    elif isinstance(event, PacketReceived) and event.packet.codec is Codec.AAC:
                        post(feed.feed, event.packet.payload, event.packet.pts_ms)
            except (SubscriberCutOffError, trio.EndOfChannel):
                pass

    async def _watch(self) -> None:
        """Every few seconds: each viewer's figures, and hang up on those that never connected."""
        assert self._loop is not None
        while True:
            await trio.sleep(_STATS_EVERY_S)
            with trio.move_on_after(_STATS_EVERY_S):
                self._loop_tasks = await self._loop.run(loop_tasks())
            now = trio.current_time()
            for viewer in list(self.viewers.values()):
                if viewer.state != "connected":
                    if now - viewer.created > CONNECT_TIMEOUT_S:
                        await self._close(viewer, "never connected")
                    continue
                with trio.move_on_after(_STATS_EVERY_S):
                    figures = await self._loop.run(stats(viewer.pc))
                    before = viewer.figures.get("bytes_sent", 0.0)
                    at = viewer.figures.get("at", now)
                    if now > at:
                        viewer.bitrate_bps = int((figures["bytes_sent"] - before) * 8 / (now - at))
                    figures["at"] = now
                    viewer.figures = figures


def _rtt_ms(rtt_s: object) -> int | None:
    """The round-trip time aiortc measured, in ms; None before the first receiver report."""
    return round(rtt_s * 1000) if isinstance(rtt_s, int | float) and rtt_s >= 0 else None
