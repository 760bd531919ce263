"""An aiortc WHIP publisher, run as its own process by tests/integration/test_whip.py.

    python whip_publish.py '{"url": "http://127.0.0.1:PORT/whip/live/KEY", "seconds": 8, "token": null}'

Publishes a moving 320x240 picture at 15 fps (aiortc encodes it: H.264, preferred over VP8 in the offer)
and a 440 Hz tone (Opus), with host candidates on 127.0.0.1 only. Prints JSON lines: {"event": "answer",
"status": ..., "location": ...} after the POST (and exits when it is not 201), {"event": "connected",
"pair": [local, remote]} once ICE has a pair, and {"event": "done", "delete": status} after publishing for
`seconds` and hanging up (DELETE, unless "delete" is false: then the peer connection just closes).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

FPS = 15
RATE = 48000
SAMPLES = 960


def loopback_only(sdp: str) -> str:
    keep = [
        line
        for line in sdp.splitlines()
        if not (line.startswith("a=candidate:") and line.split()[4] != "127.0.0.1")
    ]
    return "\r\n".join(keep) + "\r\n"


def http(
    method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Picture(MediaStreamTrack):
    """Moving diagonal bands, paced at FPS."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.start = time.monotonic()

    async def recv(self) -> av.VideoFrame:
        due = self.start + self.count / FPS
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(frame.planes):
            row = bytes((x + self.count * 8 + n * 40) % 256 for x in range(plane.line_size))
            plane.update(row * (plane.buffer_size // plane.line_size))
        frame.pts, frame.time_base = self.count * (90000 // FPS), fractions.Fraction(1, 90000)
        self.count += 1
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz sine, 20 ms frames, paced."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0
        self.start = time.monotonic()

    async def recv(self) -> av.AudioFrame:
        due = self.start + self.samples / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        values = (int(8000 * math.sin(2 * math.pi * 440 * (self.samples + i) / RATE)) for i in range(SAMPLES))
        frame.planes[0].update(struct.pack(f"<{SAMPLES}h", *values))
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.samples, fractions.Fraction(1, RATE)
        self.samples += SAMPLES
        return frame


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def main(opts: dict[str, Any]) -> None:
    pc = RTCPeerConnection()
    video = pc.addTransceiver(Picture(), direction="sendonly")
    capabilities = RTCRtpSender.getCapabilities("video")
    assert capabilities is not None
    video.setCodecPreferences([c for c in capabilities.codecs if c.mimeType in ("video/H264", "video/rtx")])
    if not opts.get("no_audio"):
        pc.addTransceiver(Tone(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if opts.get("token"):
        headers["Authorization"] = "Bearer " + opts["token"]
    offer = loopback_only(pc.localDescription.sdp).encode()
    status, got, body = await asyncio.to_thread(http, "POST", opts["url"], offer, headers)
    location = urllib.parse.urljoin(opts["url"], got.get("location", "")) if status == 201 else None
    emit(event="answer", status=status, location=location, body=body.decode(errors="replace")[:300])
    if status != 201:
        await pc.close()
        return
    await pc.setRemoteDescription(RTCSessionDescription(sdp=loopback_only(body.decode()), type="answer"))
    for _ in range(100):
        if pc.connectionState == "connected":
            break
        await asyncio.sleep(0.1)
    pair: list[str] = []
    for t in pc.getTransceivers():
        for p in t.sender.transport.transport._connection._nominated.values():
            pair = [p.local_candidate.host, p.remote_candidate.host]
    emit(event="connected", state=pc.connectionState, pair=pair)
    await asyncio.sleep(float(opts.get("seconds", 8)))
    deleted = None
    if opts.get("delete", True) and location is not None:
        deleted = (await asyncio.to_thread(http, "DELETE", location, None, {}))[0]
    await pc.close()
    emit(event="done", delete=deleted)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
