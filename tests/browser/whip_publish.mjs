// Chromium publishes a moving canvas and a tone (its own WebRTC H.264 encoder and Opus) to the appliance's
// /whip endpoint with the npm `whip-whep` WHIP client, for tests/integration/test_whip.py.
//
//   node whip_publish.mjs '{"url": "http://127.0.0.1:PORT", "stream": "live/KEY", "seconds": 10, "token": null}'
//
// The client runs in a page of the appliance's own origin (served by playwright's router: no CORS). H.264 is
// the only video codec offered (setCodecPreferences), as the appliance takes nothing else. ICE stays on
// 127.0.0.1 (offer, answer and trickled candidates filtered). Output: JSON lines, {"event": "published", ...}
// once connected (codec, selected pair), then {"event": "done", ...} after `seconds` and the hang-up.
import { readFileSync } from "node:fs";
import { launchChromium, loopbackOnly } from "./chromium.mjs";

const opts = JSON.parse(process.argv[2] || "{}");
const out = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const clientJs = readFileSync(new URL("./node_modules/whip-whep/whip.js", import.meta.url), "utf8");

const PAGE = `<!doctype html><html><body>
<script type="module">
import { WHIPClient } from "/__whip_test/whip.js";
const loopbackOnly = (sdp) => sdp.split("\\r\\n")
  .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\\r\\n");
window.start = async (stream, token) => {
  // A moving canvas and an oscillator, not getUserMedia: with media permission granted Chromium gathers
  // candidates on every interface and may pair this machine's other address; without, it keeps to the
  // default route and, with --allow-loopback-in-peer-connection, to 127.0.0.1 (the network rule).
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = 240;
  const g = canvas.getContext("2d");
  let n = 0;
  setInterval(() => {
    g.fillStyle = "hsl(" + ((n * 7) % 360) + ", 80%, 50%)";
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = "#fff";
    g.fillRect((n * 4) % 320, 0, 40, 240);
    n += 1;
  }, 1000 / 15);
  const audio = new AudioContext({ sampleRate: 48000 });
  const tone = audio.createOscillator();
  tone.frequency.value = 440;
  const sink = audio.createMediaStreamDestination();
  tone.connect(sink);
  tone.start();
  const media = new MediaStream([...canvas.captureStream(15).getVideoTracks(), ...sink.stream.getAudioTracks()]);
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) {
    const t = pc.addTransceiver(track, { direction: "sendonly" });
    if (track.kind === "video") {
      const h264 = RTCRtpSender.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/H264");
      if (!h264.length) throw new Error("this Chromium cannot send H.264");
      t.setCodecPreferences(h264);
    }
  }
  const client = new WHIPClient();
  client.onOffer = (offer) => loopbackOnly(offer);
  client.onAnswer = (answer) => loopbackOnly(answer);
  window.pc = pc;
  window.client = client;
  await client.publish(pc, new URL("/whip/" + stream, location.href).href, token || undefined);
};
</script></body></html>`;

let browser;
try {
  browser = await launchChromium(opts);
  const page = await browser.newPage();
  const errors = [];
  const methods = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.route("**/__whip_test/**", (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path.endsWith("/whip.js")) {
      return route.fulfill({ contentType: "text/javascript", body: clientJs });
    }
    return route.fulfill({ contentType: "text/html", body: PAGE });
  });
  await page.route("**/whip/**", async (route) => {
    const request = route.request();
    methods.push(request.method());
    if (request.method() !== "PATCH") return route.continue();
    const body = loopbackOnly(request.postData() || "");
    if (!body.includes("a=candidate:") && (request.postData() || "").includes("a=candidate:")) {
      return route.fulfill({ status: 204 });
    }
    return route.continue({ postData: body });
  });
  await page.goto(`${opts.url}/__whip_test/index.html`);
  await page.evaluate(([stream, token]) => window.start(stream, token), [opts.stream, opts.token]);
  await page.waitForFunction(() => window.pc.connectionState === "connected", null, { timeout: 20000 });
  const stats = async () => page.evaluate(async () => {
    const reports = [...(await window.pc.getStats()).values()];
    const byId = Object.fromEntries(reports.map((r) => [r.id, r]));
    const transport = reports.find((r) => r.type === "transport");
    const pair = byId[transport?.selectedCandidatePairId];
    const video = reports.find((r) => r.type === "outbound-rtp" && r.kind === "video");
    const audio = reports.find((r) => r.type === "outbound-rtp" && r.kind === "audio");
    return {
      local: pair && byId[pair.localCandidateId]?.address,
      remote: pair && byId[pair.remoteCandidateId]?.address,
      videoCodec: video && byId[video.codecId]?.mimeType,
      audioCodec: audio && byId[audio.codecId]?.mimeType,
      framesEncoded: video?.framesEncoded ?? 0,
      encoder: video?.encoderImplementation,
    };
  });
  out({ event: "published", ...(await stats()) });
  await new Promise((r) => setTimeout(r, (opts.seconds || 10) * 1000));
  const last = await stats();
  await page.evaluate(() => window.client.stop());
  out({ event: "done", ...last, methods, errors });
} catch (e) {
  out({ event: "error", error: String(e) });
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
