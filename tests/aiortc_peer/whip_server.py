"""A WHIP endpoint (RFC 9725) backed by aiortc, run as its own process by tests/integration/test_whip_push.py:
the remote end of the appliance's WHIP push. A test double for the cloud service, but the media stack is a
real peer: aiortc depacketizes, decrypts and DECODES what arrives.

    python whip_server.py '{"port": PORT, "token": "SECRET"}'

- ``POST /whip/NAME`` with ``Content-Type: application/sdp`` and ``Authorization: Bearer SECRET``: a
  receive-only peer connection (host candidates on 127.0.0.1 only) answers; ``201`` with the answer and
  ``Location: /session/ID``. A wrong or missing token: ``401`` (problem+json), another content type: ``415``.
- ``POST /redirect/NAME``: ``307`` to ``/whip/NAME`` (RFC 9725 lets an endpoint redirect the POST).
- ``DELETE /session/ID``: ends that session (``200``; ``404`` for an unknown one).

stdout, one JSON object a line: {"event": "listening"}; {"event": "post", "path", "status"} for every POST;
{"event": "offer", "session", "h264_fmtp": [...], "codecs": [...]} for an accepted offer; every second for
each live session {"event": "frames", "session", "state", "video_frames", "distinct_frames", "sizes",
"audio_frames", "audio_rate", "pair": [local host, remote host]}; {"event": "deleted", "session"}.
It runs until killed (SIGTERM or SIGKILL: the tests use both).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import json
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def loopback_only(sdp: str) -> str:
    keep = [
        line
        for line in sdp.splitlines()
        if not (line.startswith("a=candidate:") and line.split()[4] != "127.0.0.1")
    ]
    return "\r\n".join(keep) + "\r\n"


@dataclass
class Session:
    pc: RTCPeerConnection
    video_frames: int = 0
    digests: set[str] = field(default_factory=set)
    sizes: set[tuple[int, int]] = field(default_factory=set)
    audio_frames: int = 0
    audio_rate: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def pair(self) -> list[str]:
        for t in self.pc.getTransceivers():
            transport = t.receiver.transport
            if transport is None:
                continue
            for p in transport.transport._connection._nominated.values():
                return [p.local_candidate.host, p.remote_candidate.host]
        return []


class Endpoint:
    def __init__(self, token: str) -> None:
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.sessions: dict[str, Session] = {}

    async def consume(self, session: Session, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame: Any = await track.recv()
                if track.kind == "video":
                    session.video_frames += 1
                    session.sizes.add((frame.width, frame.height))
                    gray = bytes(frame.reformat(format="gray").planes[0])
                    session.digests.add(hashlib.sha256(gray).hexdigest())
                else:
                    session.audio_frames += 1
                    session.audio_rate = frame.sample_rate
        except MediaStreamError:
            return

    async def answer(self, offer: str) -> tuple[str, str]:
        pc = RTCPeerConnection()
        session = Session(pc)
        sid = uuid.uuid4().hex[:12]

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            session.tasks.append(asyncio.ensure_future(self.consume(session, track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=loopback_only(offer), type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.sessions[sid] = session
        lines = offer.splitlines()
        emit(
            event="offer",
            session=sid,
            h264_fmtp=[ln for ln in lines if ln.startswith("a=fmtp:") and "profile-level-id" in ln],
            codecs=sorted({ln.split()[1].split("/")[0] for ln in lines if ln.startswith("a=rtpmap:")}),
            directions=[ln[2:] for ln in lines if ln in ("a=sendonly", "a=recvonly", "a=sendrecv")],
        )
        return sid, loopback_only(pc.localDescription.sdp)

    async def delete(self, sid: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        await session.pc.close()
        emit(event="deleted", session=sid)
        return True

    async def report(self) -> None:
        while True:
            await asyncio.sleep(1)
            for sid, s in list(self.sessions.items()):
                emit(
                    event="frames",
                    session=sid,
                    state=s.pc.connectionState,
                    video_frames=s.video_frames,
                    distinct_frames=len(s.digests),
                    sizes=sorted(s.sizes),
                    audio_frames=s.audio_frames,
                    audio_rate=s.audio_rate,
                    pair=s.pair(),
                )

    def call(self, coro: Any) -> Any:
        """From an HTTP thread: run `coro` on the aiortc loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)


def handler(endpoint: Endpoint) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = self.post(body)
            emit(event="post", path=self.path, status=status)

        def post(self, body: bytes) -> int:
            if self.path.startswith("/redirect/"):
                self.reply(307, headers={"Location": "/whip/" + self.path.split("/", 2)[2]})
                return 307
            if not self.path.startswith("/whip/"):
                self.reply(404)
                return 404
            if self.headers.get("Authorization") != f"Bearer {endpoint.token}":
                problem = json.dumps({"title": "Unauthorized", "detail": "wrong bearer token"}).encode()
                self.reply(401, problem, {"Content-Type": "application/problem+json"})
                return 401
            if self.headers.get("Content-Type") != "application/sdp":
                self.reply(415)
                return 415
            sid, sdp = endpoint.call(endpoint.answer(body.decode()))
            self.reply(201, sdp.encode(), {"Content-Type": "application/sdp", "Location": f"/session/{sid}"})
            return 201

        def do_DELETE(self) -> None:
            sid = self.path.removeprefix("/session/")
            self.reply(200 if endpoint.call(endpoint.delete(sid)) else 404)

    return Handler


def main(opts: dict[str, Any]) -> None:
    endpoint = Endpoint(opts["token"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", opts["port"]), handler(endpoint))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emit(event="listening", port=server.server_address[1])
    endpoint.loop.run_until_complete(endpoint.report())


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
