// Time from a WHEP offer to the first decoded frame in headless Chromium, for bench/webrtc.py.
//
//   node first_frame.mjs '{"url": "http://127.0.0.1:PORT", "stream": "live/bench", "runs": 5}'
//
// Each run is a fresh page of the appliance's origin (no CORS): createOffer, wait for ICE gathering (no
// trickle), POST /whep/STREAM, set the answer, and wait for the <video>'s first requestVideoFrameCallback.
// ICE stays on 127.0.0.1 (offer and answer filtered). Output: one JSON line with each run's milliseconds.
import { launchChromium } from "./chromium.mjs";

const opts = JSON.parse(process.argv[2] || "{}");
const PAGE = `<!doctype html><html><body><video id="v" autoplay playsinline muted></video>
<script>
const loopbackOnly = (sdp) => sdp.split("\\r\\n")
  .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\\r\\n");
window.measure = async (stream) => {
  const t0 = performance.now();
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const media = new MediaStream();
  pc.ontrack = (e) => media.addTrack(e.track);
  const video = document.getElementById("v");
  video.srcObject = media;
  const first = new Promise((resolve) => video.requestVideoFrameCallback(() => resolve(performance.now())));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 1000);
  });
  const posted = performance.now();
  const res = await fetch("/whep/" + stream, {
    method: "POST", headers: { "Content-Type": "application/sdp" },
    body: loopbackOnly(pc.localDescription.sdp),
  });
  const answer = await res.text();
  const answered = performance.now();
  await pc.setRemoteDescription({ type: "answer", sdp: loopbackOnly(answer) });
  const t1 = await first;
  await fetch(res.headers.get("Location"), { method: "DELETE" });
  pc.close();
  return { total: t1 - t0, fromPost: t1 - posted, answer: answered - posted, size: [video.videoWidth, video.videoHeight] };
};
</script></body></html>`;

let browser;
try {
  browser = await launchChromium(opts);
  const runs = [];
  for (let i = 0; i < (opts.runs || 5); i++) {
    const page = await browser.newPage();
    await page.route("**/__first_frame/**", (route) => route.fulfill({ contentType: "text/html", body: PAGE }));
    await page.goto(`${opts.url}/__first_frame/index.html`);
    runs.push(await page.evaluate((stream) => window.measure(stream), opts.stream));
    await page.close();
  }
  process.stdout.write(JSON.stringify({ event: "done", runs }) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ event: "error", error: String(e) }) + "\n");
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
