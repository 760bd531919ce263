// The npm `whip-whep` WHEP client (medooze's, trickle ICE over PATCH) in Debian's headless Chromium against
// the appliance's /whep endpoint, for tests/integration/test_webrtc_browser.py.
//
//   node whep_client.mjs '{"url": "http://127.0.0.1:PORT", "stream": "cam"}'
//
// The client runs in a page of the appliance's own origin (a test page served by playwright's router, so no
// CORS is involved), loaded from node_modules. ICE stays on 127.0.0.1: the offer, the answer and every
// trickled candidate pass through a filter that drops all others. Output: one JSON line.
import { readFileSync } from "node:fs";
import { launchChromium, loopbackOnly } from "./chromium.mjs";

const opts = JSON.parse(process.argv[2] || "{}");
const WAIT_MS = opts.wait_ms || 30000;
const out = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");
const clientJs = readFileSync(new URL("./node_modules/whip-whep/whep.js", import.meta.url), "utf8");


const PAGE = `<!doctype html><html><body><video id="video" autoplay playsinline muted></video>
<script type="module">
import { WHEPClient } from "/__whep_test/whep.js";
const loopbackOnly = (sdp) => sdp.split("\\r\\n")
  .filter((l) => !l.startsWith("a=candidate:") || l.includes(" 127.0.0.1 ")).join("\\r\\n");
window.start = async (stream) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const media = new MediaStream();
  pc.ontrack = (e) => media.addTrack(e.track);
  document.getElementById("video").srcObject = media;
  const client = new WHEPClient();
  client.onOffer = (offer) => loopbackOnly(offer);
  client.onAnswer = (answer) => loopbackOnly(answer);
  window.pc = pc;
  window.client = client;
  await client.view(pc, new URL("/whep/" + stream, location.href).href);
};
</script></body></html>`;

let browser;
try {
  browser = await launchChromium(opts);
  const page = await browser.newPage();
  const errors = [];
  const methods = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.route("**/__whep_test/**", (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path.endsWith("/whep.js")) {
      return route.fulfill({ contentType: "text/javascript", body: clientJs });
    }
    return route.fulfill({ contentType: "text/html", body: PAGE });
  });
  await page.route("**/whep/**", async (route) => {
    const request = route.request();
    methods.push(request.method());
    if (request.method() !== "PATCH") return route.continue();
    // A trickled candidate that is not loopback is dropped (answered as the server would: 204).
    const body = loopbackOnly(request.postData() || "");
    if (!body.includes("a=candidate:") && (request.postData() || "").includes("a=candidate:")) {
      return route.fulfill({ status: 204 });
    }
    return route.continue({ postData: body });
  });
  await page.goto(`${opts.url}/__whep_test/index.html`);
  await page.evaluate((stream) => window.start(stream), opts.stream);
  await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v.videoWidth > 0 && v.currentTime > 1;
  }, null, { timeout: WAIT_MS });
  const stats = await page.evaluate(async () => {
    const reports = [...(await window.pc.getStats()).values()];
    const byId = Object.fromEntries(reports.map((r) => [r.id, r]));
    const transport = reports.find((r) => r.type === "transport");
    const pair = byId[transport?.selectedCandidatePairId];
    const video = reports.find((r) => r.type === "inbound-rtp" && r.kind === "video");
    const v = document.getElementById("video");
    return {
      local: pair && byId[pair.localCandidateId]?.address,
      remote: pair && byId[pair.remoteCandidateId]?.address,
      framesDecoded: video?.framesDecoded ?? 0,
      width: v.videoWidth,
      height: v.videoHeight,
    };
  });
  await page.evaluate(() => window.client.stop());
  out({ event: "done", ...stats, methods, errors });
  await browser.close();
} catch (err) {
  out({ event: "error", message: String(err && err.stack ? err.stack : err) });
  if (browser) await browser.close();
  process.exit(1);
}
