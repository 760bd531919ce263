// Opens the WHEP player page (/watch/{stream}) in tabs of Debian's headless Chromium (playwright-core) and
// checks that each decodes the stream's H.264 and that the picture moves, for tests/integration/test_webrtc.py.
//
//   node watch.mjs '{"url": "http://127.0.0.1:PORT", "stream": "cam", "tabs": 3}'
//
// Network rule: ICE stays on 127.0.0.1. Chromium gathers host candidates on every interface, so the offer and
// the answer pass through a filter that drops every candidate but 127.0.0.1, and the selected pair is read
// back from getStats. Output: one JSON line, {"event": "done", "tabs": [...]} or {"event": "error", ...}.
import { launchChromium, loopbackOnly } from "./chromium.mjs";

const opts = JSON.parse(process.argv[2] || "{}");
const WAIT_MS = opts.wait_ms || 30000;
const out = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");


async function watch(context, n) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.route("**/whep/**", async (route) => {
    const request = route.request();
    if (request.method() !== "POST") return route.continue();
    const response = await route.fetch({ postData: loopbackOnly(request.postData() || "") });
    const body = await response.text();
    return route.fulfill({ response, body: loopbackOnly(body) });
  });
  await page.goto(`${opts.url}/watch/${opts.stream}`);
  await page.waitForSelector('body[data-state="playing"]', { timeout: WAIT_MS });
  await page.waitForFunction(() => {
    const v = document.getElementById("video");
    return v.videoWidth > 0 && v.readyState >= 2 && v.currentTime > 0.5;
  }, null, { timeout: WAIT_MS });
  // The picture moves: hash the pixels of a few frames drawn into a canvas, half a second apart.
  const hashes = await page.evaluate(async () => {
    const v = document.getElementById("video");
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const seen = [];
    for (let i = 0; i < 6; i += 1) {
      ctx.drawImage(v, 0, 0);
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let h = 2166136261;
      let lit = 0;
      for (let j = 0; j < data.length; j += 4) {
        h = Math.imul(h ^ data[j] ^ (data[j + 1] << 8) ^ (data[j + 2] << 16), 16777619) >>> 0;
        if (data[j] + data[j + 1] + data[j + 2] > 60) lit += 1;
      }
      seen.push({ hash: h, lit });
      await new Promise((r) => setTimeout(r, 500));
    }
    return seen;
  });
  const stats = await page.evaluate(async () => {
    const reports = [...(await window.player.pc.getStats()).values()];
    const byId = Object.fromEntries(reports.map((r) => [r.id, r]));
    const transport = reports.find((r) => r.type === "transport");
    const pair = byId[transport?.selectedCandidatePairId] ||
      reports.find((r) => r.type === "candidate-pair" && r.nominated && r.state === "succeeded");
    const video = reports.find((r) => r.type === "inbound-rtp" && r.kind === "video");
    const audio = reports.find((r) => r.type === "inbound-rtp" && r.kind === "audio");
    const codec = video && byId[video.codecId];
    return {
      local: pair && byId[pair.localCandidateId]?.address,
      remote: pair && byId[pair.remoteCandidateId]?.address,
      framesDecoded: video?.framesDecoded ?? 0,
      videoCodec: codec?.mimeType ?? null,
      audioPackets: audio?.packetsReceived ?? 0,
    };
  });
  const size = await page.evaluate(() => {
    const v = document.getElementById("video");
    return { width: v.videoWidth, height: v.videoHeight };
  });
  return { tab: n, ...size, ...stats, distinct: new Set(hashes.map((h) => h.hash)).size,
           lit: Math.max(...hashes.map((h) => h.lit)), errors };
}

let browser;
try {
  browser = await launchChromium(opts);
  const context = await browser.newContext();
  const tabs = await Promise.all(Array.from({ length: opts.tabs || 1 }, (_, n) => watch(context, n)));
  out({ event: "done", tabs });
  await browser.close();
} catch (err) {
  out({ event: "error", message: String(err && err.stack ? err.stack : err) });
  if (browser) await browser.close();
  process.exit(1);
}
