"""WHIP ingest (RFC 9725): a browser, OBS 30+ or any WHIP client publishes into a Bus over WebRTC.

Theory of operation
-------------------
``POST /whip/{app}/{key}`` with an SDP offer (``application/sdp``): the app must be one of ``rtmp.apps``,
the stream must not be the camera's and must have no publisher (else 409), and the client must present a
publish secret of the app as a bearer token when ``rtmp.auth`` sets any (as an RTMP publish must). aiortc,
on the webrtc child's loop thread (`loop.py`), answers with H.264 (packetization-mode 1) and Opus only;
``201`` carries the answer and ``Location: /whip/sessions/{id}/{secret}``, the session's credential for
``PATCH`` (trickle ICE) and ``DELETE``.

Media is never decoded on the video side. aiortc's receiver depacketizes RTP and assembles whole frames in
its jitter buffer, then hands each frame to its decoder thread through a queue; `_FrameTap` stands in for
that queue and takes the encoded frames instead (Annex-B access units, Opus packets), on the loop thread:

- video: `AnnexBTranslator` moves SPS/PPS out of band (an avcC `CodecConfig`) and length-prefixes the
  NAL units, as for a camera's own H.264; nothing is sent before the first parameter sets;
- audio: `OpusToAac` transcodes once for the stream (RTMP players and FLV recordings want AAC).

The ready `CodecConfig`/`Packet` items cross to trio (`AsyncioThread.to_trio`), which only hands them to
the stream's Bus producer: from there the stream is like any other (RTMP play, WHEP, recording).

Timestamps: each track's RTP clock (90 kHz, 48 kHz), anchored at the time its first frame arrived after
the session started, so audio and video share one timeline without RTCP sender reports.

Keyframes: browsers send a keyframe only when asked. The publisher is asked (RTCP PLI) when the stream has
had none for `KEYFRAME_EVERY_S`, so RTMP players and recordings joining later start within that, and when
a WHEP viewer of the stream asks (rate-limited to one a second).

The session ends on DELETE, when the connection fails or closes, when it does not connect within
`CONNECT_TIMEOUT_S`, or when an RTMP publisher replaces it (``rtmp.replace_publisher``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import queue
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from starlette.requests import Request
from starlette.responses import Response

from appliance.bus import (
    BusBusyError,
    BusError,
    BusRegistry,
    Producer,
    ProducerClosedError,
    ProducerEvictedError,
    validate_bus_name,
)
from appliance.media.capture.annexb import AnnexBTranslator
from appliance.media.meter import RateMeter
from appliance.media.packets import CodecConfig, Kind, Packet
from appliance.media.webrtc.loop import AsyncioThread
from appliance.media.webrtc.opus import OPUS_RATE, OpusToAac
from appliance.media.webrtc.sessions import created, offer_options, read_offer, session_options, trickle
from appliance.media.webrtc.tracks import PEER_CONNECTIONS
from appliance.web.app import problem
from appliance.web.auth import stream_access

__all__ = ["ANSWER_TIMEOUT_S", "CONNECT_TIMEOUT_S", "KEYFRAME_EVERY_S", "WhipIngest", "answer_timed_out"]

log = logging.getLogger("appliance.webrtc")

KEYFRAME_EVERY_S = 2.0
# aiortc gathers every candidate before it answers: an unreachable STUN/TURN server holds the answer up.
ANSWER_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 30.0
_PLI_MIN_INTERVAL_S = 1.0
_WATCH_EVERY_S = 0.5
_VIDEO_CLOCK = 90_000

Items = list[CodecConfig | Packet]


# -- on the loop thread -------------------------------------------------------------------------------


class _FrameTap:
    """Stands in for an aiortc receiver's decoder queue: encoded frames go to `on_frame` (called on the
    loop thread, where the receiver puts them) instead of a decoder. The receiver's decoder thread, which
    was started with this object as its input, idles in `get` on the real queue until the end-of-track
    ``None`` is forwarded to it."""

    def __init__(self, on_frame: Callable[[bytes, int], None]) -> None:
        self._on_frame = on_frame
        self._idle: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any) -> None:
        if item is None:
            self._idle.put(None)
            return
        _codec, frame = item
        self._on_frame(bytes(frame.data), int(frame.timestamp))

    def get(self) -> Any:
        return self._idle.get()


class _Depacketized:
    """One publisher's frames -> Bus items, on the loop thread (pure apart from PyAV's Opus decode)."""

    def __init__(self, started: float, deliver: Callable[[Items], None]) -> None:
        self._started = started
        self._deliver = deliver
        self._video = AnnexBTranslator()
        self._audio: OpusToAac | None = None
        self._origin_ms: dict[Kind, int] = {}
        self.errors = 0

    def _pts(self, kind: Kind, timestamp: int, clock: int) -> int:
        origin = self._origin_ms.get(kind)
        if origin is None:
            origin = self._origin_ms[kind] = round((time.monotonic() - self._started) * 1000)
        return origin + timestamp * 1000 // clock

    def on_video(self, data: bytes, timestamp: int) -> None:
        try:
            unit = self._video.translate(data, pts_ms=self._pts(Kind.VIDEO, timestamp, _VIDEO_CLOCK))
        except ValueError:
            self.errors += 1  # a broken access unit loses only itself
            return
        items = unit.items()
        if items:
            self._deliver(items)

    def on_audio(self, data: bytes, timestamp: int) -> None:
        first = self._audio is None
        if self._audio is None:
            self._audio = OpusToAac()
        out: Items = [self._audio.config] if first else []
        out += self._audio.feed(data, self._pts(Kind.AUDIO, timestamp, OPUS_RATE))
        if out:
            self._deliver(out)


def _preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """H.264 with packetization-mode 1 (every profile aiortc knows), or Opus."""
    capabilities = RTCRtpReceiver.getCapabilities(kind)
    codecs = capabilities.codecs if capabilities is not None else []
    if kind == "audio":
        return [c for c in codecs if c.mimeType == "audio/opus"]
    return [
        c for c in codecs if c.mimeType == "video/H264" and str(c.parameters.get("packetization-mode")) == "1"
    ]


async def _answer(
    offer: str,
    ice_servers: Sequence[RTCIceServer],
    media: _Depacketized,
    on_state: Callable[[str], None],
) -> tuple[Any, str, str, list[str]]:
    """A receiving peer connection for `offer`: returns (pc, SDP answer, its ICE ufrag, kinds taken).

    Raises:
        ValueError: The offer has no H.264 video this can take.
        Whatever aiortc raises for an offer it cannot answer (the connection is closed then).
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
    PEER_CONNECTIONS.add(pc)
    try:
        taps = {"video": _FrameTap(media.on_video), "audio": _FrameTap(media.on_audio)}
        for kind in ("video", "audio"):
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(_preferences(kind))
            # aiortc keeps the queue in a name-mangled attribute; its version is pinned in uv.lock.
            setattr(transceiver.receiver, "_RTCRtpReceiver__decoder_queue", taps[kind])  # noqa: B010

        @pc.on("connectionstatechange")
        def changed() -> None:
            on_state(pc.connectionState)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = pc.localDescription.sdp
        kinds = [str(t.kind) for t in pc.getTransceivers() if t.currentDirection == "recvonly"]
        if "video" not in kinds:
            raise ValueError("the offer has no H.264 video (packetization-mode 1): WHIP here takes H.264")
    except BaseException:
        await pc.close()
        raise
    ufrag = next((line[12:].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")), "")
    return pc, sdp, ufrag, kinds


async def _request_keyframe(pc: Any) -> bool:
    """Send a PLI for each video source of `pc`; False when there is none yet."""
    sent = False
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video":
            continue
        for source in transceiver.receiver.getSynchronizationSources():
            await transceiver.receiver._send_rtcp_pli(source.source)
            sent = True
    return sent


async def _remote_address(pc: Any) -> str | None:
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        conn = getattr(getattr(transport, "transport", None), "_connection", None)
        for pair in getattr(conn, "_nominated", {}).values():
            return f"{pair.remote_candidate.host}:{pair.remote_candidate.port}"
    return None


# -- on trio's thread ---------------------------------------------------------------------------------


def answer_timed_out() -> Response:
    """The 504 for an offer aiortc did not answer within `ANSWER_TIMEOUT_S`."""
    return problem(
        504,
        "Gateway Timeout",
        f"no answer within {ANSWER_TIMEOUT_S:g} s: gathering ICE candidates took too long "
        "(is every webrtc.ice_servers entry reachable?)",
    )


@dataclass
class _Publisher:
    id: str
    secret: str
    stream: str
    pc: Any
    producer: Producer
    media: _Depacketized
    ufrag: str
    kinds: list[str]
    created: float
    since: float  # wall clock, for the API
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    state: str = "new"
    address: str | None = None
    meter: RateMeter = field(default_factory=RateMeter)
    last_keyframe: float = float("-inf")
    last_pli: float = float("-inf")
    keyframes_requested: int = 0
    packets: int = 0


class WhipIngest:
    """The WHIP endpoints of the webrtc child.

    Args:
        buses: The Bus registry.
        loop: The child's asyncio loop thread (started).
        ice_servers: STUN/TURN servers for the answers.
        apps: The RTMP apps a stream may be published under (``rtmp.apps``, the current config's).
        reserved: Streams nobody may publish (the camera's).
        publish_secrets: An app's publish secrets (``rtmp.auth``); one must be presented when there are any.
    """

    def __init__(
        self,
        buses: BusRegistry,
        loop: AsyncioThread,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        apps: Callable[[], Sequence[str]] = lambda: ("live",),
        reserved: Callable[[], frozenset[str]] = frozenset,
        publish_secrets: Callable[[str], Sequence[str]] = lambda app: (),
    ) -> None:
        self.buses = buses
        self.loop = loop
        self.ice_servers = list(ice_servers)
        self.apps = apps
        self.reserved = reserved
        self.publish_secrets = publish_secrets
        self.publishers: dict[str, _Publisher] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the sessions' watchers until cancelled; then end every session."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for publisher in list(self.publishers.values()):
                    await self._close(publisher, "stopping")

    def by_stream(self, stream: str) -> _Publisher | None:
        return next((p for p in self.publishers.values() if p.stream == stream), None)

    def describe(self) -> dict[str, dict[str, object]]:
        """Each WHIP-published stream's publisher, by Bus name, for ``GET /api/streams``."""
        now = trio.current_time()
        return {
            p.stream: {
                "protocol": "whip",
                "address": p.address,
                "since": p.since,
                "session": p.id,
                "state": p.state,
                "bitrate_bps": p.meter.bps(now),
                "keyframes_requested": p.keyframes_requested,
                "tracks": p.kinds,
            }
            for p in self.publishers.values()
        }

    def request_keyframe(self, stream: str) -> bool:
        """Ask the stream's WHIP publisher for a keyframe (a WHEP viewer's PLI); rate-limited. False when
        WHIP does not publish `stream`."""
        publisher = self.by_stream(stream)
        if publisher is None:
            return False
        self._pli(publisher, trio.current_time())
        return True

    # -- HTTP ---------------------------------------------------------------------------------------

    async def offer(self, request: Request) -> Response:
        """``POST`` (and ``OPTIONS``) ``/whip/{app}/{key}``."""
        if request.method == "OPTIONS":
            return offer_options()
        app, key = request.path_params["app"], request.path_params["key"]
        stream = f"{app}/{key}"
        if app not in self.apps():
            return problem(404, "Not Found", f"no app {app!r}: rtmp.apps = {list(self.apps())}")
        refusal = stream_access(request, self.publish_secrets(app), role="publish")
        if refusal is not None:
            return refusal
        if stream in self.reserved():
            why = f"{stream} is this device's camera stream; publish under another key"
            return problem(409, "Conflict", why)
        offer = await read_offer(request)
        if isinstance(offer, Response):
            return offer
        try:
            validate_bus_name(stream)
            producer = self.buses.publish(stream, replace=False)
        except BusBusyError:
            return problem(409, "Conflict", f"{stream} is already being published")
        except (BusError, ValueError) as e:
            return problem(400, "Bad Request", f"bad stream name {stream!r}: {e}")
        assert self._nursery is not None
        session_id = secrets.token_hex(6)
        loop = self.loop

        def deliver(items: Items) -> None:  # on the loop thread
            loop.to_trio(self._deliver, session_id, items)

        def on_state(state: str) -> None:  # on the loop thread
            loop.to_trio(self._on_state, session_id, state)

        media = _Depacketized(time.monotonic(), deliver)
        answered = None
        try:
            with trio.move_on_after(ANSWER_TIMEOUT_S):
                answered = await loop.run(_answer(offer, self.ice_servers, media, on_state))
        except Exception as e:  # aiortc's errors have no common base; any of them means this offer
            producer.close()
            return problem(400, "Bad Request", f"cannot answer this offer: {e}")
        if answered is None:
            producer.close()
            return answer_timed_out()
        pc, sdp, ufrag, kinds = answered
        publisher = _Publisher(
            id=session_id,
            secret=secrets.token_urlsafe(18),
            stream=stream,
            pc=pc,
            producer=producer,
            media=media,
            ufrag=ufrag,
            kinds=kinds,
            created=trio.current_time(),
            since=time.time(),
        )
        self.publishers[session_id] = publisher
        self._nursery.start_soon(self._watch, publisher)
        log.info("whip.publish stream=%s session=%s tracks=%s", stream, session_id, ",".join(kinds))
        return created(sdp, "whip", publisher.id, publisher.secret, publisher.ufrag)

    async def session(self, request: Request) -> Response:
        """``PATCH``, ``DELETE`` and ``OPTIONS`` ``/whip/sessions/{id}/{secret}``."""
        if request.method == "OPTIONS":
            return session_options()
        publisher = self.publishers.get(request.path_params["id"])
        if publisher is None or not hmac.compare_digest(publisher.secret, request.path_params["secret"]):
            return problem(404, "Not Found", "no such session")
        if request.method == "DELETE":
            await self._close(publisher, "deleted")
            return Response(status_code=200)
        return await trickle(
            request,
            loop=self.loop,
            pc=publisher.pc,
            session_id=publisher.id,
            ufrag=publisher.ufrag,
            event="whip.trickle",
        )

    # -- sessions -----------------------------------------------------------------------------------

    def _deliver(self, session_id: str, items: Items) -> None:
        publisher = self.publishers.get(session_id)
        if publisher is None:
            return  # closed meanwhile
        now = trio.current_time()
        try:
            for item in items:
                if isinstance(item, CodecConfig):
                    publisher.producer.send_config(item)
                    continue
                publisher.producer.send_packet(item)
                publisher.meter.add(now, len(item.payload))
                publisher.packets += 1
                if item.kind is Kind.VIDEO and item.keyframe:
                    publisher.last_keyframe = now
        except (ProducerEvictedError, ProducerClosedError):
            publisher.state = "replaced"
            publisher.scope.cancel()  # its watcher closes it

    def _on_state(self, session_id: str, state: str) -> None:
        publisher = self.publishers.get(session_id)
        if publisher is None:
            return
        publisher.state = state
        log.info("whip.state session=%s state=%s", session_id, state)
        if state in ("failed", "closed"):
            publisher.scope.cancel()

    def _pli(self, publisher: _Publisher, now: float) -> None:
        if now - publisher.last_pli < _PLI_MIN_INTERVAL_S or publisher.state != "connected":
            return
        publisher.last_pli = now
        publisher.keyframes_requested += 1
        pc = publisher.pc
        self.loop.post(lambda: asyncio.ensure_future(_request_keyframe(pc)))

    async def _watch(self, publisher: _Publisher) -> None:
        """A session's upkeep: the connect timeout, keyframes every `KEYFRAME_EVERY_S`, its address."""
        why = "ended"
        with publisher.scope:
            while True:
                await trio.sleep(_WATCH_EVERY_S)
                now = trio.current_time()
                if publisher.state != "connected":
                    if now - publisher.created > CONNECT_TIMEOUT_S:
                        why = "never connected"
                        break
                    continue
                if publisher.address is None:
                    publisher.address = await self.loop.run(_remote_address(publisher.pc))
                if now - max(publisher.last_keyframe, publisher.created) >= KEYFRAME_EVERY_S:
                    self._pli(publisher, now)
        if publisher.state in ("failed", "closed", "replaced"):
            why = publisher.state
        with trio.CancelScope(shield=True):
            await self._close(publisher, why)

    async def _close(self, publisher: _Publisher, why: str) -> None:
        if self.publishers.pop(publisher.id, None) is None:
            return
        publisher.scope.cancel()
        publisher.producer.close()
        with trio.move_on_after(5):
            await self.loop.run(publisher.pc.close())
        log.info(
            "whip.unpublish stream=%s session=%s why=%s packets=%d",
            publisher.stream,
            publisher.id,
            why,
            publisher.packets,
        )
