"""aiortc's side of a viewer: tracks of pre-encoded media, the shared Opus feed, peer connections.

Everything here runs on the loop thread (`loop.py`). A track's ``recv()`` returns an ``av.Packet``, so
aiortc's RTCRtpSender packs it as it is (``H264Encoder.pack``, ``OpusEncoder.pack``): nothing is decoded
or encoded per viewer. The ``av.Packet``s are made once per Bus packet and shared by every viewer's track
(packing only reads them).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp

from appliance.media.webrtc.negotiation import TrickleCandidate, sdp_profile
from appliance.media.webrtc.opus import OPUS_RATE, OpusTranscoder

__all__ = [
    "PEER_CONNECTIONS",
    "AvPacket",
    "OpusFeed",
    "OpusTrack",
    "PassthroughTrack",
    "add_candidates",
    "answer",
    "loop_tasks",
    "restrict_host_addresses",
    "stats",
]

if TYPE_CHECKING:
    AvPacket = av.Packet[Any]  # generic in PyAV's stubs (over its stream type), not at run time
else:
    AvPacket = av.Packet
# Every peer connection made here (viewers, publishers, pushes) while it is alive: a leak shows as growth.
PEER_CONNECTIONS: weakref.WeakSet[Any] = weakref.WeakSet()
TRACK_QUEUE = 64  # access units waiting for the sender; when full, the viewer waits for a keyframe

# aioice logs every candidate pair check at INFO: noise in the appliance's one-line-per-event log.
logging.getLogger("aioice").setLevel(logging.WARNING)

_original_host_addresses = aioice.ice.get_host_addresses
_host_addresses: list[str] = []


def _host_addresses_hook(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if not _host_addresses:
        return _original_host_addresses(use_ipv4, use_ipv6)
    return [a for a in _host_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates on `addresses` only (empty: every interface, aioice's default).

    aioice has no setting for it: its module-level address discovery is wrapped, once.
    """
    _host_addresses[:] = addresses
    aioice.ice.get_host_addresses = _host_addresses_hook


class PassthroughTrack(MediaStreamTrack):
    """A video track whose frames are already encoded: Annex-B access units as ``av.Packet``s."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[AvPacket] = asyncio.Queue(TRACK_QUEUE)
        self._need_key = True
        self.dropped = 0

    def push(self, packet: AvPacket, keyframe: bool) -> None:
        """Queue one access unit; when the sender is this far behind, drop to the next keyframe."""
        if self._need_key and not keyframe:
            self.dropped += 1
            return
        if self._queue.full():
            self.dropped += self._queue.qsize() + 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_key = True
            return
        self._need_key = False
        self._queue.put_nowait(packet)

    def resync(self, keyframe: AvPacket) -> None:
        """A viewer lost picture (PLI/FIR) and there is no encoder to ask: what is queued goes, `keyframe`
        (the GOP cache's, re-timed just after what was sent) goes next, then deltas are dropped until the
        stream's next keyframe, as they reference pictures the viewer lacks."""
        self.dropped += self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(keyframe)
        self._need_key = True

    async def recv(self) -> AvPacket:
        return await self._queue.get()


class OpusTrack(MediaStreamTrack):
    """An audio track of Opus packets from the stream's `OpusFeed`."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[AvPacket] = asyncio.Queue(TRACK_QUEUE)

    def push(self, packet: AvPacket) -> None:
        """Queue one packet; a viewer too slow to take it loses it (audio never waits)."""
        if not self._queue.full():
            self._queue.put_nowait(packet)

    async def recv(self) -> AvPacket:
        return await self._queue.get()


class OpusFeed:
    """One stream's AAC -> Opus transcode, on the loop thread, fanned out to its viewers' audio tracks.

    Created when the stream gets its first WebRTC viewer with audio, dropped with its last.
    """

    def __init__(self) -> None:
        self.tracks: set[OpusTrack] = set()
        self._transcoder: OpusTranscoder | None = None
        self.packets = 0
        self.errors = 0

    def configure(self, asc: bytes) -> None:
        self._transcoder = OpusTranscoder(asc)

    def feed(self, payload: bytes, pts_ms: int) -> None:
        if self._transcoder is None or not self.tracks:
            return
        try:
            out = self._transcoder.feed(payload, pts_ms)
        except av.FFmpegError:
            self.errors += 1  # one bad access unit: the next decodes on its own
            return
        for data, pts in out:
            packet = av.Packet(data)
            packet.pts = pts
            packet.time_base = Fraction(1, OPUS_RATE)
            self.packets += 1
            for track in self.tracks:
                track.push(packet)


def _h264_preferences(plid: str) -> list[RTCRtpCodecCapability]:
    """Capabilities for H.264 of the stream's profile only (packetization-mode 1), adding the stream's
    exact profile-level-id to aiortc's codec table when it lacks the profile (it has only baseline and
    constrained baseline)."""
    profile = sdp_profile(plid)
    video: list[RTCRtpCodecParameters] = CODECS["video"]

    def same(c: RTCRtpCodecParameters) -> bool:
        if c.mimeType != "video/H264" or str(c.parameters.get("packetization-mode")) != "1":
            return False
        try:
            return sdp_profile(str(c.parameters.get("profile-level-id", ""))) == profile
        except ValueError:
            return False

    if not any(same(c) for c in video):
        used = {c.payloadType for c in video}
        pt = next(p for p in range(96, 128) if p not in used)
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=list(video[0].rtcpFeedback),
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": plid,
                },
            )
        )
    return [
        RTCRtpCodecCapability(mimeType=c.mimeType, clockRate=c.clockRate, parameters=dict(c.parameters))
        for c in video
        if same(c)
    ]


async def answer(
    offer: str,
    video: PassthroughTrack,
    audio: OpusTrack | None,
    plid: str,
    ice_servers: Sequence[RTCIceServer],
    on_keyframe_request: Callable[[], None],
    on_state: Callable[[str], None],
) -> tuple[Any, str, str]:
    """A peer connection that sends `video` as H.264 of profile `plid` only (and `audio` as Opus).

    Returns:
        (the peer connection, the SDP answer, its ICE ufrag).

    Raises:
        Whatever aiortc raises for an offer it cannot answer (the connection is closed then).
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
    PEER_CONNECTIONS.add(pc)
    try:
        if audio is not None:
            sound = pc.addTransceiver(audio, direction="sendonly")
            opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/opus"]
            sound.setCodecPreferences(opus)
        picture = pc.addTransceiver(video, direction="sendonly")
        picture.setCodecPreferences(_h264_preferences(plid))
        # PLI and FIR reach the sender's _send_keyframe, which only means something to its own encoder;
        # here there is none, so the request goes to the stream instead.
        picture.sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]

        @pc.on("connectionstatechange")
        def changed() -> None:
            on_state(pc.connectionState)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException:
        await pc.close()
        raise
    sdp = pc.localDescription.sdp
    ufrag = next((line[12:].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")), "")
    return pc, sdp, ufrag


async def loop_tasks() -> int:
    """How many asyncio tasks the loop has (aiortc's per-connection tasks): a leak shows as growth."""
    return len(asyncio.all_tasks())


async def add_candidates(pc: Any, candidates: Sequence[TrickleCandidate]) -> int:
    """Apply trickled remote candidates; returns how many were taken (late or odd ones are skipped)."""
    taken = 0
    mids = [t.mid for t in pc.getTransceivers()]
    for c in candidates:
        try:
            candidate = candidate_from_sdp(c.candidate)
            candidate.sdpMid = c.mid if c.mid is not None else mids[c.mline_index]
            candidate.sdpMLineIndex = c.mline_index
            await pc.addIceCandidate(candidate)
            taken += 1
        except Exception:  # a malformed or late candidate only loses itself
            continue
    return taken


async def stats(pc: Any) -> dict[str, Any]:
    """The figures `GET /api/streams` shows for a viewer: video bytes and packets sent, packets the viewer
    reported lost, its round-trip time (s)."""
    report = await pc.getStats()
    out: dict[str, Any] = {"bytes_sent": 0.0, "packets_sent": 0.0, "packets_lost": 0.0, "rtt_s": -1.0}
    for s in report.values():
        if s.type == "outbound-rtp" and s.kind == "video":
            out["bytes_sent"] += s.bytesSent
            out["packets_sent"] += s.packetsSent
        elif s.type == "remote-inbound-rtp" and s.kind == "video":
            out["packets_lost"] += s.packetsLost or 0
            if s.roundTripTime is not None:  # None until the viewer's first receiver report
                out["rtt_s"] = s.roundTripTime
    pair = _selected_pair(pc)
    if pair is not None:
        out["pair"] = pair
    return out


def _selected_pair(pc: Any) -> str | None:
    for t in pc.getTransceivers():
        ice = t.sender.transport.transport if t.sender.transport is not None else None
        conn = getattr(ice, "_connection", None)
        nominated = getattr(conn, "_nominated", {}) if conn is not None else {}
        for pair in nominated.values():
            local, remote = pair.local_candidate, pair.remote_candidate
            return f"{local.host}:{local.port} -> {remote.host}:{remote.port}"
    return None
