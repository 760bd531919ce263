"""An aiortc WHEP client, run as its own process by tests/integration/test_webrtc.py (asyncio stays out
of the test process and out of the appliance's code outside appliance/media/webrtc).

    python whep_client.py '{"url": "http://127.0.0.1:PORT/whep/cam", "viewers": 3, "frames": 30,
                            "rounds": 1, "token": null}'

Each viewer has its own RTCPeerConnection with host candidates on 127.0.0.1 only; candidates of other
addresses are dropped from the offer and from the answer. A viewer sends its offer (POST), trickles its
candidate again (PATCH), receives `frames` video frames and some audio, reads the selected candidate
pair, and hangs up (DELETE). `rounds` > 1 repeats connect/disconnect (churn) without waiting for frames
after the first round. With "wait_for_stream", a 404 is retried for up to 10 s. With "pli", a viewer
sends an RTCP PLI after its frames and receives as many again. The last stdout line is
JSON: {"event": "done", "viewers": [...]}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def loopback_only(sdp: str) -> str:
    keep = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and line.split()[4] != "127.0.0.1":
            continue
        keep.append(line)
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


def selected_pair(pc: RTCPeerConnection) -> list[str]:
    for t in pc.getTransceivers():
        conn = t.receiver.transport.transport._connection
        for pair in conn._nominated.values():
            return [pair.local_candidate.host, pair.remote_candidate.host]
    return []


async def view(opts: dict[str, Any], want_frames: int) -> dict[str, Any]:
    url = opts["url"]
    auth = {"Authorization": "Bearer " + opts["token"]} if opts.get("token") else {}
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    tracks: dict[str, Any] = {}

    @pc.on("track")
    def on_track(track: Any) -> None:
        tracks[track.kind] = track

    await pc.setLocalDescription(await pc.createOffer())
    offer = loopback_only(pc.localDescription.sdp)
    for _ in range(100 if opts.get("wait_for_stream") else 1):  # a player that retries until it's live
        status, headers, body = await asyncio.to_thread(
            http, "POST", url, offer.encode(), {"Content-Type": "application/sdp", **auth}
        )
        if status != 404:
            break
        await asyncio.sleep(0.1)
    out: dict[str, Any] = {"post": status}
    if status != 201:
        out["problem"] = body.decode(errors="replace")
        await pc.close()
        return out
    location = urllib.parse.urljoin(url, headers["location"])
    out["location_is_session"] = "/whep/sessions/" in location
    out["etag"] = headers.get("etag")
    out["content_type"] = headers.get("content-type")
    answer = loopback_only(body.decode())
    out["answer_h264"] = [
        ln for ln in answer.splitlines() if ln.startswith("a=fmtp:") and "profile-level-id" in ln
    ]
    out["answer_video_codecs"] = sorted(
        {ln.split()[1].split("/")[0] for ln in answer.splitlines() if ln.startswith("a=rtpmap:")}
    )
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    mid = pc.getTransceivers()[0].mid
    candidate = next(ln for ln in offer.splitlines() if ln.startswith("a=candidate:"))
    ufrag = next(ln for ln in offer.splitlines() if ln.startswith("a=ice-ufrag:"))
    pwd = next(ln for ln in offer.splitlines() if ln.startswith("a=ice-pwd:"))
    fragment = f"{ufrag}\r\n{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n{candidate}\r\n"
    out["patch"] = (
        await asyncio.to_thread(
            http,
            "PATCH",
            location,
            fragment.encode(),
            {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": out["etag"] or "*"},
        )
    )[0]
    digests: list[str] = []
    sizes: set[tuple[int, int]] = set()
    audio = 0
    if want_frames:
        for _ in range(200):
            if "video" in tracks:
                break
            await asyncio.sleep(0.05)
        video = tracks["video"]
        for _ in range(want_frames):
            frame = await asyncio.wait_for(video.recv(), 20)
            sizes.add((frame.width, frame.height))
            digests.append(hashlib.sha256(bytes(frame.reformat(format="gray").planes[0])).hexdigest())
        if opts.get("pli"):
            # Picture loss, as a browser reports it: the appliance answers with a keyframe (its encoder's,
            # or the GOP cache's), and decoding goes on.
            receiver = pc.getTransceivers()[0].receiver
            for source in receiver.getSynchronizationSources():
                await receiver._send_rtcp_pli(source.source)
            for _ in range(want_frames):
                frame = await asyncio.wait_for(video.recv(), 20)
                digests.append(hashlib.sha256(bytes(frame.reformat(format="gray").planes[0])).hexdigest())
            out["frames_after_pli"] = want_frames
        if "audio" in tracks:
            for _ in range(10):
                frame = await asyncio.wait_for(tracks["audio"].recv(), 20)
                out["audio_rate"] = frame.sample_rate
                audio += 1
        out["pair"] = selected_pair(pc)
    else:
        for _ in range(400):
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        out["state"] = pc.connectionState
    out["sizes"] = sorted(sizes)
    out["distinct_frames"] = len(set(digests))
    out["audio_frames"] = audio
    out["delete_without_secret"] = (
        await asyncio.to_thread(http, "DELETE", location.rsplit("/", 1)[0] + "/wrong", None, {})
    )[0]
    out["delete"] = (await asyncio.to_thread(http, "DELETE", location, None, {}))[0]
    out["delete_again"] = (await asyncio.to_thread(http, "DELETE", location, None, {}))[0]
    await pc.close()
    return out


async def main(opts: dict[str, Any]) -> None:
    results = []
    for round_ in range(opts.get("rounds", 1)):
        frames = opts.get("frames", 30) if round_ == 0 else 0
        results += await asyncio.gather(*(view(opts, frames) for _ in range(opts.get("viewers", 1))))
    print(json.dumps({"event": "done", "viewers": results}), flush=True)


if __name__ == "__main__":
    import urllib.parse

    asyncio.run(main(json.loads(sys.argv[1])))
