"""A GStreamer webrtcbin WHEP client, run by the system python3 (PyGObject; not the project's venv).

    /usr/bin/python3 tests/gst/whep_client.py URL SECONDS

It offers to receive H.264 video and Opus audio, restricts its ICE host candidates to 127.0.0.1 (libnice's
local address list, via webrtcbin's ICE agent) and drops any other candidate from both descriptions, POSTs
the offer (non-trickle), plays what arrives into counting sinks for SECONDS, reads the selected candidate
pair from webrtcbin's stats and DELETEs the session. Prints one JSON object: frames decoded, video size,
audio buffers, selected pair addresses, or an error.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402


def loopback_only(sdp: str) -> str:
    lines = sdp.replace("\r\n", "\n").split("\n")
    keep = [line for line in lines if not line.startswith("a=candidate:") or " 127.0.0.1 " in line]
    return "\r\n".join(line for line in keep if line) + "\r\n"


def main() -> int:
    url, seconds = sys.argv[1], float(sys.argv[2])
    Gst.init(None)
    result: dict[str, object] = {"frames": 0, "audio_buffers": 0, "width": None, "height": None}
    loop = GLib.MainLoop()
    pipe = Gst.Pipeline.new("whep")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipe.add(webrtc)
    agent = webrtc.get_property("ice-agent")
    agent.emit("add-local-ip-address", "127.0.0.1")
    for caps in (
        "application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000,"
        "packetization-mode=(string)1,profile-level-id=(string)42e01f",
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000",
    ):
        webrtc.emit(
            "add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY, Gst.Caps.from_string(caps)
        )

    def on_video(sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        s = sample.get_caps().get_structure(0)
        result["width"], result["height"] = s.get_value("width"), s.get_value("height")
        result["frames"] = int(result["frames"]) + 1  # type: ignore[call-overload]
        return Gst.FlowReturn.OK

    def on_audio(sink: Gst.Element) -> Gst.FlowReturn:
        sink.emit("pull-sample")
        result["audio_buffers"] = int(result["audio_buffers"]) + 1  # type: ignore[call-overload]
        return Gst.FlowReturn.OK

    def on_decoded(_dbin: Gst.Element, pad: Gst.Pad) -> None:
        name = pad.get_current_caps().get_structure(0).get_name()
        video = name.startswith("video")
        chain = "videoconvert ! video/x-raw,format=I420" if video else "audioconvert"
        bin_ = Gst.parse_bin_from_description(
            f"queue ! {chain} ! appsink name=sink emit-signals=true sync=false", True
        )
        pipe.add(bin_)
        bin_.sync_state_with_parent()
        bin_.get_by_name("sink").connect("new-sample", on_video if video else on_audio)
        pad.link(bin_.get_static_pad("sink"))

    def on_pad(_element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        dbin = Gst.ElementFactory.make("decodebin")
        dbin.connect("pad-added", on_decoded)
        pipe.add(dbin)
        dbin.sync_state_with_parent()
        pad.link(dbin.get_static_pad("sink"))

    webrtc.connect("pad-added", on_pad)
    session: dict[str, str] = {}

    def fail(message: str) -> None:
        result["error"] = message
        loop.quit()

    def post_offer() -> bool:
        if webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return True  # poll again
        # DTLS client: webrtcbin's certificate is RSA, and as the DTLS server it finds no cipher in common
        # with aiortc's ECDSA-only client hello; as the client it offers both, so the handshake works.
        offer = loopback_only(webrtc.get_property("local-description").sdp.as_text())
        offer = offer.replace("a=setup:actpass", "a=setup:active")
        request = urllib.request.Request(url, data=offer.encode(), method="POST",
                                         headers={"Content-Type": "application/sdp"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                if resp.status != 201:
                    fail(f"POST answered {resp.status}")
                    return False
                session["location"] = urllib.parse.urljoin(url, resp.headers["Location"])
                answer = loopback_only(resp.read().decode())
        except (urllib.error.URLError, OSError) as e:
            fail(f"POST failed: {e}")
            return False
        _, sdp = GstSdp.SDPMessage.new_from_text(answer)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", desc, Gst.Promise.new())
        GLib.timeout_add(int(seconds * 1000), finish)
        return False

    def finish() -> bool:
        promise = Gst.Promise.new()
        webrtc.emit("get-stats", None, promise)
        promise.wait()
        stats = promise.get_reply()
        candidates: dict[str, dict[str, object]] = {}
        pairs: list[dict[str, object]] = []

        def each(_field: int, value: object, _data: object) -> bool:
            if isinstance(value, Gst.Structure):
                kind = value.get_name()
                fields = {value.nth_field_name(i): value.get_value(value.nth_field_name(i))
                          for i in range(value.n_fields())}  # fmt: skip
                if kind in ("local-candidate", "remote-candidate"):
                    candidates[str(fields.get("id"))] = {
                        "kind": kind,
                        **{k: str(v) for k, v in fields.items()},
                    }
                elif kind == "candidate-pair":
                    pairs.append({k: str(v) for k, v in fields.items()})
            return True

        stats.foreach(each, None)
        result["pairs"] = [
            (candidates.get(p.get("local-candidate-id", ""), {}).get("address"),
             candidates.get(p.get("remote-candidate-id", ""), {}).get("address"))
            for p in pairs
        ]  # fmt: skip
        result["candidates"] = sorted({str(c.get("address")) for c in candidates.values()})
        if "location" in session:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(session["location"], method="DELETE"), timeout=10
                ).close()
                result["deleted"] = True
            except (urllib.error.URLError, OSError) as e:
                result["deleted"] = f"DELETE failed: {e}"
        loop.quit()
        return False

    def on_offer(promise: Gst.Promise, _data: object) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None and reply.has_field("offer") else None
        if offer is None:
            fail(f"create-offer failed: {reply.to_string() if reply is not None else 'no reply'}")
            return
        webrtc.emit("set-local-description", offer, Gst.Promise.new())
        GLib.timeout_add(100, post_offer)

    def on_negotiation(_element: Gst.Element) -> None:
        webrtc.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    webrtc.connect("on-negotiation-needed", on_negotiation)
    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _b, m: fail(str(m.parse_error()[0])))
    GLib.timeout_add(int((seconds + 60) * 1000), lambda: fail("timed out") or False)
    pipe.set_state(Gst.State.PLAYING)
    loop.run()
    pipe.set_state(Gst.State.NULL)
    print(json.dumps(result))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
