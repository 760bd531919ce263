// Drives Debian's Chromium (headless, via playwright-core: no browser download) against a running
// appliance's status page, for tests/integration/test_web_page.py.
//
//   node status_page.mjs '{"url": "...", "stream": "live/cam", "child": "capture", "screenshot": "x.png",
//                          "password": "..." (optional: also log in and press the page's Restart button),
//                          "recording": true (optional: a recording is expected; play it in the page)}'
//
// Output: one JSON object per line on stdout. {"event": "ready", "manual_restarts": N} once the stream is
// listed (the test then restarts the child through the API); at the end {"event": "done", ...} with what
// the page showed, or {"event": "error", "message": ...} and exit code 1. Timeouts are generous: this
// checks behaviour, never speed.
import { launchChromium } from "./chromium.mjs";

const opts = JSON.parse(process.argv[2] || "{}");
const WAIT_MS = opts.wait_ms || 30000;
const out = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");

const consoleErrors = [];
const pageErrors = [];
let browser;
let page;

const rowCell = (field) => `#children tr[data-path="${opts.child}"] td[data-field="${field}"]`;
const cardField = (field) => `#stream-list article[data-stream="${opts.stream}"] [data-field="${field}"]`;
const readInt = async (selector) => Number.parseInt(await page.textContent(selector), 10);

async function waitAbove(selector, floor) {
  await page.waitForFunction(
    ([sel, n]) => Number.parseInt(document.querySelector(sel)?.textContent ?? "", 10) > n,
    [selector, floor],
    { timeout: WAIT_MS },
  );
  return readInt(selector);
}

async function main() {
  browser = await launchChromium(opts);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("console", (msg) => {
    // A snapshot that is not there yet (503 until the first keyframe) is logged as a failed load; that is
    // the page's normal retry, not an error of the page.
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => pageErrors.push(String(err)));

  await page.goto(opts.url, { waitUntil: "load" });
  await page.waitForSelector(`#conn[data-state="live"]`, { timeout: WAIT_MS });
  await page.waitForFunction(
    (sel) => /^\d+x\d+$/.test(document.querySelector(sel)?.textContent ?? ""),
    cardField("resolution"),
    { timeout: WAIT_MS },
  );
  const resolution = await page.textContent(cardField("resolution"));
  const streams = await page.$$eval("#stream-list article", (cards) => cards.map((c) => c.dataset.stream));
  await page.waitForSelector(rowCell("manual_restarts"), { timeout: WAIT_MS });
  const before = await readInt(rowCell("manual_restarts"));
  // Survives only if the page is never reloaded: the counts below must arrive through the live feed.
  await page.evaluate(() => { window.__noReload = "still here"; });
  out({ event: "ready", manual_restarts: before, resolution });

  const afterApi = await waitAbove(rowCell("manual_restarts"), before);
  const noReload = (await page.evaluate(() => window.__noReload)) === "still here";

  let afterClick = null;
  let loggedIn = false;
  if (opts.password) {
    await page.fill("#password", opts.password);
    await page.click("#login button[type=submit]");
    await page.waitForSelector("#who:not([hidden])", { timeout: WAIT_MS });
    loggedIn = true;
    const button = `#children tr[data-path="${opts.child}"] button.act`;
    await page.waitForSelector(`${button}:not([disabled])`, { timeout: WAIT_MS });
    await page.click(button);
    afterClick = await waitAbove(rowCell("manual_restarts"), afterApi);
  }

  // The preview is refreshed every few seconds; wait for one that decoded (the camera sends a keyframe
  // every 2 s, and a restart just above means a fresh one is needed).
  const previewLoaded = await page
    .waitForFunction(
      (sel) => {
        const img = document.querySelector(sel);
        return img && !img.hidden && img.complete && img.naturalWidth > 0;
      },
      `#stream-list article[data-stream="${opts.stream}"] .preview img`,
      { timeout: WAIT_MS },
    )
    .then(() => true, () => false);
  // A recording listed, played in the page's <video> (the FLV remuxed to MP4 by the server).
  let video = null;
  if (opts.recording) {
    await page.waitForSelector("#rec-list tr[data-file] button", { timeout: WAIT_MS });
    await page.click("#rec-list tr[data-file] button");
    video = await page
      .waitForFunction(() => {
        const v = document.querySelector("#player");
        return v.readyState >= 2 && v.videoWidth > 0 ? { width: v.videoWidth, height: v.videoHeight } : null;
      }, null, { timeout: WAIT_MS })
      .then((handle) => handle.jsonValue(), () => page.evaluate(() => ({ error: document.querySelector("#player").error?.message ?? "not ready" })));
  }
  // The live preview: the card's Live button frames /watch (WHEP); the stream then lists a webrtc
  // subscriber, and stopping it hangs up (the subscriber goes). ICE on 127.0.0.1 (Chromium's flags and
  // the appliance's webrtc.ice_addresses).
  let live = null;
  if (opts.live) {
    const card = `#stream-list article[data-stream="${opts.stream}"]`;
    const webrtcSubscribers = async () => {
      const doc = await (await page.request.get(`${opts.url}api/streams`)).json();
      const st = doc.streams.find((s) => s.name === opts.stream);
      return st ? st.subscribers.filter((s) => s.protocol === "webrtc") : [];
    };
    await page.waitForSelector(`${card} button.live:not([disabled])`, { timeout: WAIT_MS });
    await page.click(`${card} button.live`);
    const frame = page.frameLocator(`${card} .preview iframe`);
    await frame.locator("body.embed video").waitFor({ timeout: WAIT_MS });
    const handle = await page.waitForSelector(`${card} .preview iframe`);
    const inner = await handle.contentFrame();
    const playing = await inner.waitForFunction(() => {
      const v = document.querySelector("video");
      return v && v.videoWidth > 0 && v.currentTime > 1 ? { width: v.videoWidth, height: v.videoHeight } : null;
    }, null, { timeout: WAIT_MS }).then((h) => h.jsonValue());
    const pair = await inner.evaluate(async () => {
      const reports = [...(await window.player.pc.getStats()).values()];
      const byId = Object.fromEntries(reports.map((r) => [r.id, r]));
      const transport = reports.find((r) => r.type === "transport");
      const p = byId[transport?.selectedCandidatePairId];
      return p ? [byId[p.localCandidateId]?.address, byId[p.remoteCandidateId]?.address] : null;
    });
    const whileLive = await webrtcSubscribers();
    await page.click(`${card} button.live`);
    let afterStop = whileLive;
    for (let i = 0; i < 50 && afterStop.length; i++) {
      await new Promise((r) => setTimeout(r, 200));
      afterStop = await webrtcSubscribers();
    }
    live = { playing, pair, subscribers_while_live: whileLive.length, subscribers_after_stop: afterStop.length,
      iframe_gone: (await page.$(`${card} .preview iframe`)) === null };
  }
  const state = await page.textContent(`#children tr[data-path="${opts.child}"] .badge`);
  // Let the plot gather a few more points before the picture.
  await page.waitForFunction(() => document.querySelectorAll("#interfaces tr").length > 0, null, { timeout: WAIT_MS });
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  out({
    event: "done",
    streams,
    resolution,
    fps: await page.textContent(cardField("fps")),
    codec: await page.textContent(cardField("codec")),
    publisher: await page.textContent(cardField("publisher")),
    manual_restarts: { before, after_api: afterApi, after_click: afterClick },
    child_state: state,
    logged_in: loggedIn,
    no_reload: noReload,
    connection: await page.getAttribute("#conn", "data-state"),
    health: await page.textContent("#health"),
    temperature: await page.textContent("#f-temperature"),
    throttling: await page.textContent("#f-throttling"),
    interfaces: await page.$$eval("#interfaces tr td:first-child", (tds) => tds.map((t) => t.textContent)),
    preview_loaded: previewLoaded,
    recordings: await page.$$eval("#rec-list tr[data-file]", (trs) => trs.map((t) => t.dataset.file)),
    video,
    live,
    console_errors: consoleErrors,
    page_errors: pageErrors,
    screenshot: opts.screenshot,
  });
}

try {
  await main();
} catch (err) {
  if (page && opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true }).catch(() => {});
  out({ event: "error", message: String(err && err.stack ? err.stack : err), console_errors: consoleErrors, page_errors: pageErrors });
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
