"""N WHEP viewers in one aiortc process, for bench/webrtc.py: they count frames without decoding them
(each receiver's decoder queue is tapped, as the appliance's WHIP ingest does), so the viewers' own CPU
stays small next to the appliance's.

    python whep_viewers.py '{"url": "http://127.0.0.1:PORT/whep/live/bench", "viewers": 20,
                            "warmup": 5, "seconds": 15}'

Prints {"event": "connected", ...} once every viewer's peer connection is connected, then, after `warmup`
and `seconds`, {"event": "done", "fps": [per viewer video frames/s over the window], "audio_pps": [...],
"pairs": [...]} and hangs up (DELETE).
"""

from __future__ import annotations

import asyncio  # noqa: TID251 (an aiortc peer in a process of its own, like tests/aiortc_peer/)
import json
import queue
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Tap:
    """Stands in for a receiver's decoder queue: counts whole frames, decodes nothing."""

    def __init__(self) -> None:
        self.frames = 0
        self._idle: queue.Queue[Any] = queue.Queue()

    def put(self, item: Any) -> None:
        if item is None:
            self._idle.put(None)
        else:
            self.frames += 1

    def get(self) -> Any:
        return self._idle.get()


def loopback_only(sdp: str) -> str:
    keep = [
        ln for ln in sdp.splitlines() if not (ln.startswith("a=candidate:") and ln.split()[4] != "127.0.0.1")
    ]
    return "\r\n".join(keep) + "\r\n"


def http(
    method: str, url: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


async def viewer(url: str) -> tuple[RTCPeerConnection, Tap, Tap, str, float]:
    pc = RTCPeerConnection()
    taps = {"video": Tap(), "audio": Tap()}
    for kind in ("video", "audio"):
        t = pc.addTransceiver(kind, direction="recvonly")
        # RTCRtpReceiver's private queue (aiortc 1.16): whole frames arrive there after the jitter buffer.
        t.receiver._RTCRtpReceiver__decoder_queue = taps[kind]
    await pc.setLocalDescription(await pc.createOffer())
    offer = loopback_only(pc.localDescription.sdp).encode()
    t0 = time.monotonic()
    status, headers, body = await asyncio.to_thread(
        http, "POST", url, offer, {"Content-Type": "application/sdp"}
    )
    answered = time.monotonic() - t0
    assert status == 201, status
    await pc.setRemoteDescription(RTCSessionDescription(sdp=loopback_only(body.decode()), type="answer"))
    return pc, taps["video"], taps["audio"], urllib.parse.urljoin(url, headers["location"]), answered


def pair(pc: RTCPeerConnection) -> list[str]:
    for t in pc.getTransceivers():
        for p in t.receiver.transport.transport._connection._nominated.values():
            return [p.local_candidate.host, p.remote_candidate.host]
    return []


async def main(opts: dict[str, Any]) -> None:
    viewers = []
    for _ in range(opts["viewers"]):  # one after another, as viewers arrive; answers are timed
        viewers.append(await viewer(opts["url"]))
    deadline = time.monotonic() + 60
    while any(pc.connectionState != "connected" for pc, *_ in viewers):
        assert time.monotonic() < deadline, [pc.connectionState for pc, *_ in viewers]
        await asyncio.sleep(0.1)
    print(json.dumps({"event": "connected", "answer_s": [round(v[4], 3) for v in viewers]}), flush=True)
    await asyncio.sleep(opts["warmup"])
    v0 = [v[1].frames for v in viewers]
    a0 = [v[2].frames for v in viewers]
    await asyncio.sleep(opts["seconds"])
    fps = [round((v[1].frames - f) / opts["seconds"], 2) for v, f in zip(viewers, v0, strict=True)]
    pps = [round((v[2].frames - f) / opts["seconds"], 2) for v, f in zip(viewers, a0, strict=True)]
    pairs = [pair(v[0]) for v in viewers]
    for pc, _video, _audio, location, _ in viewers:
        await asyncio.to_thread(http, "DELETE", location, None, {})
        await pc.close()
    print(json.dumps({"event": "done", "fps": fps, "audio_pps": pps, "pairs": pairs}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
