"""WHEP viewers (draft-ietf-wish-whep): one RTCPeerConnection per viewer, each fed from the stream's Bus
by its own subscription, H.264 passed through (no decode, no re-encode).

Trio side (`WhepService`): the HTTP handlers and, per viewer, a pump task that reads its Bus subscription
and posts Annex-B access units to the viewer's track on the asyncio thread. A slow viewer's subscription
drops to the next keyframe (the Bus's bounded queue); it never slows the camera or other viewers.
Asyncio side: aiortc. Its sender packs pre-encoded `av.Packet`s as they are (`H264Encoder.pack`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aioice.ice
import av
import trio
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from starlette.requests import Request
from starlette.responses import Response

from appliance.bus import BusRegistry, SubscriberCutOffError
from appliance.media.bus_events import ConfigChanged, PacketReceived
from appliance.media.h264 import parse_avc_config
from appliance.media.packets import Codec, Kind
from appliance.media.webrtc.annexb import avcc_to_annexb, profile_level_id
from appliance.media.webrtc.loop import AsyncioThread
from appliance.media.webrtc.opus import OPUS_RATE, OpusTranscoder
from appliance.web.app import problem
from appliance.web.routes import RouteRegistry

__all__ = ["WhepService"]

log = logging.getLogger("appliance.webrtc")

_TRACK_QUEUE = 64  # access units waiting on the asyncio side; when full, the viewer waits for a keyframe
_MAX_OFFER = 64 * 1024


class _PassthroughTrack(MediaStreamTrack):
    """A video track whose frames are already encoded: `recv` hands aiortc Annex-B access units."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(_TRACK_QUEUE)
        self._need_key = True

    def push(self, data: bytes, pts_90k: int, keyframe: bool) -> None:
        """On the loop thread: queue one access unit, dropping to the next keyframe when full."""
        if self._need_key and not keyframe:
            return
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_key = True
            return
        self._need_key = False
        self._queue.put_nowait((data, pts_90k))

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        data, pts = await self._queue.get()
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = Fraction(1, 90000)
        return packet


class _OpusTrack(MediaStreamTrack):
    """An audio track of Opus packets encoded once per stream (`OpusTranscoder`), shared by its viewers."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(_TRACK_QUEUE)

    def push(self, data: bytes, pts_48k: int) -> None:
        """On the loop thread: queue one packet; a viewer too slow to take it loses it (audio never waits)."""
        if not self._queue.full():
            self._queue.put_nowait((data, pts_48k))

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        data, pts = await self._queue.get()
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = Fraction(1, OPUS_RATE)
        return packet


@dataclass
class _Viewer:
    id: str
    stream: str
    pc: Any
    track: _PassthroughTrack
    audio: _OpusTrack | None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    packets: int = 0


@dataclass
class _AudioFeed:
    """One stream's AAC -> Opus transcode, running while the stream has WebRTC viewers."""

    viewers: set[str] = field(default_factory=set)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    packets: int = 0


class WhepService:
    """The webrtc child: WHEP endpoints over the Bus registry.

    Args:
        buses: The Bus registry.
        routes: Where the endpoints are registered (removed again when the child stops).
        camera: The camera's stream name (``/whep/cam``).
        ice_addresses: Host candidate addresses; empty: every interface.
        max_viewers: Further offers get 503.
        request_keyframe: Asks the camera's encoder for a keyframe (a new viewer of the camera).
    """

    def __init__(
        self,
        buses: BusRegistry,
        routes: RouteRegistry,
        *,
        camera: str,
        ice_addresses: tuple[str, ...] = (),
        max_viewers: int = 50,
        request_keyframe: Callable[[], object] | None = None,
    ) -> None:
        self.buses = buses
        self.routes = routes
        self.camera = camera
        self.ice_addresses = ice_addresses
        self.max_viewers = max_viewers
        self.request_keyframe = request_keyframe
        self.viewers: dict[str, _Viewer] = {}
        self._audio: dict[str, _AudioFeed] = {}
        self._loop: AsyncioThread | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.ice_addresses:
            addresses = list(self.ice_addresses)
            aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: addresses
        loop = self._loop = AsyncioThread()
        loop.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.routes.add_route("/whep/cam", self._post_cam, methods=["POST"], owner="webrtc")
                self.routes.add_route("/whep/sessions/{id}", self._delete, methods=["DELETE"], owner="webrtc")
                self.routes.add_route("/whep/{app}/{key}", self._post, methods=["POST"], owner="webrtc")
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.routes.remove_owner("webrtc")
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for viewer in list(self.viewers.values()):
                    await self._close(viewer)
            loop.stop()

    def describe(self) -> list[dict[str, object]]:
        return [
            {"id": v.id, "stream": v.stream, "state": v.pc.connectionState, "packets": v.packets}
            for v in self.viewers.values()
        ]

    async def _post_cam(self, request: Request) -> Response:
        return await self._offer(request, self.camera)

    async def _post(self, request: Request) -> Response:
        return await self._offer(request, f"{request.path_params['app']}/{request.path_params['key']}")

    async def _offer(self, request: Request, stream: str) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            return problem(415, "Unsupported Media Type", "want an SDP offer as application/sdp")
        offer = (await request.body())[: _MAX_OFFER + 1]
        if len(offer) > _MAX_OFFER or not offer.strip():
            return problem(400, "Bad Request", "want an SDP offer (at most 64 KiB)")
        bus = self.buses.get(stream)
        if bus is None or Kind.VIDEO not in bus.configs:
            return problem(404, "Not Found", f"no live stream {stream!r} with video")
        config = bus.configs[Kind.VIDEO]
        if config.codec is not Codec.H264:
            return problem(
                422, "Unprocessable Content", f"{stream} is {config.codec.value}; WHEP serves H.264"
            )
        if len(self.viewers) >= self.max_viewers:
            return problem(503, "Service Unavailable", f"webrtc.max_viewers ({self.max_viewers}) reached")
        profile = profile_level_id(parse_avc_config(config.data).sps[0])
        assert self._loop is not None and self._nursery is not None
        track = _PassthroughTrack()
        audio_config = bus.configs.get(Kind.AUDIO)
        audio = _OpusTrack() if audio_config is not None and audio_config.codec is Codec.AAC else None
        try:
            pc, answer = await self._loop.run(
                _answer(offer.decode("utf-8", "replace"), track, audio, profile)
            )
        except Exception as e:  # aiortc's errors have no common base; any of them means this offer
            return problem(400, "Bad Request", f"cannot answer this offer: {e}")
        viewer = _Viewer(id=secrets.token_urlsafe(12), stream=stream, pc=pc, track=track, audio=audio)
        self.viewers[viewer.id] = viewer
        self._nursery.start_soon(self._pump, viewer)
        if audio is not None:
            feed = self._audio.get(stream)
            if feed is None:
                feed = self._audio[stream] = _AudioFeed()
                self._nursery.start_soon(self._audio_pump, stream, feed)
            feed.viewers.add(viewer.id)
        if stream == self.camera and self.request_keyframe is not None:
            self.request_keyframe()
        log.info("webrtc.viewer_added stream=%s viewer=%s viewers=%d", stream, viewer.id, len(self.viewers))
        return Response(
            answer,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/whep/sessions/{viewer.id}"},
        )

    async def _delete(self, request: Request) -> Response:
        viewer = self.viewers.get(request.path_params["id"])
        if viewer is None:
            return problem(404, "Not Found", "no such session")
        viewer.scope.cancel()
        await self._close(viewer)
        return Response(status_code=200)

    async def _close(self, viewer: _Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is None:
            return
        viewer.scope.cancel()
        feed = self._audio.get(viewer.stream)
        if feed is not None:
            feed.viewers.discard(viewer.id)
            if not feed.viewers:
                feed.scope.cancel()
                del self._audio[viewer.stream]
        assert self._loop is not None
        await self._loop.run(viewer.pc.close(), limit_s=5)
        log.info("webrtc.viewer_removed stream=%s viewer=%s", viewer.stream, viewer.id)

    async def _pump(self, viewer: _Viewer) -> None:
        assert self._loop is not None
        loop = self._loop
        parameter_sets: tuple[bytes, ...] = ()
        with (
            viewer.scope,
            self.buses.subscribe(viewer.stream, max_queue=256, label=f"webrtc:{viewer.id}") as sub,
        ):
            try:
                while True:
                    event = await sub.receive()
                    if isinstance(event, ConfigChanged) and event.config.kind is Kind.VIDEO:
                        avc = parse_avc_config(event.config.data)
                        parameter_sets = (*avc.sps, *avc.pps)
                    elif isinstance(event, PacketReceived) and event.packet.kind is Kind.VIDEO:
                        packet = event.packet
                        data = avcc_to_annexb(packet.payload, parameter_sets if packet.keyframe else ())
                        loop.post(viewer.track.push, data, packet.pts_ms * 90, packet.keyframe)
                        viewer.packets += 1
                    if viewer.pc.connectionState in ("failed", "closed"):
                        break
            except (SubscriberCutOffError, trio.EndOfChannel):
                pass
        with trio.CancelScope(shield=True):
            await self._close(viewer)

    async def _audio_pump(self, stream: str, feed: _AudioFeed) -> None:
        """Transcode the stream's AAC to Opus once, for every viewer of it."""
        assert self._loop is not None
        loop = self._loop
        transcoder: OpusTranscoder | None = None
        with feed.scope, self.buses.subscribe(stream, max_queue=256, label="webrtc:opus") as sub:
            try:
                while True:
                    event = await sub.receive()
                    if isinstance(event, ConfigChanged) and event.config.kind is Kind.AUDIO:
                        transcoder = OpusTranscoder(event.config.data)
                    elif isinstance(event, PacketReceived) and event.packet.kind is Kind.AUDIO and transcoder:
                        for data, pts in transcoder.feed(event.packet.payload, event.packet.pts_ms):
                            feed.packets += 1
                            for viewer_id in feed.viewers:
                                viewer = self.viewers.get(viewer_id)
                                if viewer is not None and viewer.audio is not None:
                                    loop.post(viewer.audio.push, data, pts)
            except (SubscriberCutOffError, trio.EndOfChannel):
                pass


async def _answer(
    offer: str, track: _PassthroughTrack, audio: _OpusTrack | None, profile: str
) -> tuple[Any, str]:
    """On the loop thread: a peer connection that sends `track` as H.264 `profile` only (and `audio` as
    Opus)."""
    pc = RTCPeerConnection()
    if audio is not None:
        sound = pc.addTransceiver(audio, direction="sendonly")
        opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]
        sound.setCodecPreferences(opus)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    wanted = [
        c
        for c in codecs
        if c.mimeType == "video/H264"
        and c.parameters.get("packetization-mode") == "1"
        and str(c.parameters.get("profile-level-id", "")).lower() == profile.lower()
    ] or [c for c in codecs if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"]
    transceiver.setCodecPreferences([*wanted, *(c for c in codecs if c.mimeType == "video/rtx")])
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception:
        await pc.close()
        raise
    return pc, pc.localDescription.sdp
