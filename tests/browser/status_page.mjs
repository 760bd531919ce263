// Drives Debian's Chromium (headless, via playwright-core: no browser download) against a running
// appliance's status page, for tests/integration/test_web_page.py.
//
//   node status_page.mjs '{"url": "...", "stream": "live/cam", "child": "capture", "screenshot": "x.png",
//                          "password": "..." (optional: also log in and press the page's Restart button),
//                          "recording": true (optional: a recording is expected; play it in the page),
//                          "live": ["live/cam", ...] (optional: play these streams' live previews, stop
//                                  them by their button and by hiding the page),
//                          "live_screenshot": "y.png" (optional: the page while they play),
//                          "live_off": true (optional: only read the Live button of the stream: WebRTC is off)}'
//
// Output: one JSON object per line on stdout. {"event": "ready", "manual_restarts": N} once the stream is
// listed (the test then restarts the child through the API); at the end {"event": "done", ...} with what
// the page showed, or {"event": "error", "message": ...} and exit code 1. Timeouts are generous: this
// checks behaviour, never speed.
import { launchChromium, loopbackOnly } from "./chromium.mjs";

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

// --- the live previews -----------------------------------------------------------------------------
// A card's Live button frames /watch/{stream}?embed (the WHEP player); Stop, or the page being hidden,
// removes the frame, whose pagehide DELETEs the session. What counts is what the appliance lists:
// GET /api/streams shows a viewer as a subscriber with protocol "webrtc".
const card = (name) => `#stream-list article[data-stream="${name}"]`;

async function webrtcSubscribers(name) {
  const doc = await (await page.request.get(`${opts.url}api/streams`)).json();
  const st = doc.streams.find((s) => s.name === name);
  return st ? st.subscribers.filter((s) => s.protocol === "webrtc").length : 0;
}

// Polls /api/streams (every 200 ms, up to 10 s) until `name` has `want` webrtc subscribers; the last count.
async function settleSubscribers(name, want) {
  let n = await webrtcSubscribers(name);
  for (let i = 0; i < 50 && n !== want; i++) {
    await new Promise((r) => setTimeout(r, 200));
    n = await webrtcSubscribers(name);
  }
  return n;
}

async function button(name) {
  return page.$eval(`${card(name)} button.live`, (b) => ({ text: b.textContent, pressed: b.getAttribute("aria-pressed"),
    disabled: b.disabled, title: b.title }));
}

// Inside a card's frame: frames decoded (requestVideoFrameCallback) while currentTime advances, the
// picture's size, and the addresses of the selected ICE candidate pair.
async function playing(name) {
  const handle = await page.waitForSelector(`${card(name)} .preview iframe`, { timeout: WAIT_MS });
  const inner = await handle.contentFrame();
  await inner.waitForSelector("body.embed video", { timeout: WAIT_MS });
  const shown = await inner.evaluate((ms) => new Promise((resolve) => {
    const v = document.querySelector("video");
    let frames = 0;
    let first = null;
    const timer = setTimeout(() => resolve({ error: "no frames", frames, time: v.currentTime }), ms);
    const onFrame = () => {
      frames += 1;
      if (first === null) first = v.currentTime;
      if (frames >= 15 && v.currentTime - first > 0.5) {
        clearTimeout(timer);
        resolve({ width: v.videoWidth, height: v.videoHeight, frames, advanced: v.currentTime > first });
      } else {
        v.requestVideoFrameCallback(onFrame);
      }
    };
    v.requestVideoFrameCallback(onFrame);
  }), WAIT_MS);
  const pair = await inner.evaluate(async () => {
    if (!window.player.pc) return null; // not connected (the state below says why)
    const reports = [...(await window.player.pc.getStats()).values()];
    const byId = Object.fromEntries(reports.map((r) => [r.id, r]));
    const transport = reports.find((r) => r.type === "transport");
    const p = byId[transport?.selectedCandidatePairId];
    return p ? [byId[p.localCandidateId]?.address, byId[p.remoteCandidateId]?.address] : null;
  });
  const player = await inner.evaluate(() => ({ state: document.body.dataset.state,
    message: document.getElementById("message").textContent, connects: window.player.connects }));
  return { ...shown, pair, player };
}

// What the page looks like when it is hidden (another tab, a minimised window). Headless Chromium never
// hides a page by itself, so the document's visibility is overridden and the event the browser would
// send is dispatched; `false` puts the real (visible) state back.
async function setHidden(hidden) {
  await page.evaluate((h) => {
    if (h) {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    } else {
      delete document.hidden;
      delete document.visibilityState;
    }
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

// POST /whep/{stream} only: a session's DELETE goes out untouched (an intercepted keepalive request from a
// frame being removed is aborted, which would hide whether the player's own DELETE arrives).
const whepOffers = (url) => url.pathname.startsWith("/whep/") && !url.pathname.startsWith("/whep/sessions/");

async function checkLive(names) {
  // Every offer and answer through the page (the framed players' too) keeps 127.0.0.1 candidates only.
  await page.route(whepOffers, async (route) => {
    const request = route.request();
    if (request.method() !== "POST") return route.continue();
    const response = await route.fetch({ postData: loopbackOnly(request.postData() || "") });
    const where = response.headers().location;
    if (response.status() === 201 && where) sessions.push(new URL(where, request.url()).href);
    return route.fulfill({ response, body: loopbackOnly(await response.text()) });
  });
  // The sessions the players were given (201 Location) and the DELETEs they sent. A frame being removed
  // sends its DELETE as a keepalive request, which outlives the frame: Playwright reports it as aborted
  // (the frame's side went away), but it reaches the appliance.
  const sessions = [];
  const deletes = [];
  const onRequest = (r) => { if (r.method() === "DELETE") deletes.push(r.url()); };
  page.on("request", onRequest);
  const result = { started: {}, subscribers_while_live: {} };
  // Several at once: every stream's preview plays side by side.
  for (const name of names) {
    await page.waitForSelector(`${card(name)} button.live:not([disabled])`, { timeout: WAIT_MS });
    await page.click(`${card(name)} button.live`);
    result.started[name] = { button: await button(name), ...(await playing(name)) };
  }
  for (const name of names) result.subscribers_while_live[name] = await settleSubscribers(name, 1);
  if (opts.live_screenshot) await page.screenshot({ path: opts.live_screenshot, fullPage: true });

  // Stop the first one: its frame goes and so does its viewer; the others keep playing.
  const [first, ...others] = names;
  await page.click(`${card(first)} button.live`);
  result.after_stop = {
    button: await button(first),
    iframe_gone: (await page.$(`${card(first)} .preview iframe`)) === null,
    subscribers: Object.fromEntries(await Promise.all(names.map(async (n) => [n, await settleSubscribers(n, n === first ? 0 : 1)]))),
    others_playing: Object.fromEntries(await Promise.all(others.map(async (n) => [n, (await playing(n)).width ?? null]))),
  };

  // Start it again, then hide the page: every preview stops (no viewers held by a forgotten tab), and
  // showing the page again does not restart them.
  await page.click(`${card(first)} button.live`);
  await playing(first);
  const beforeHide = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await settleSubscribers(n, 1)])));
  await setHidden(true);
  const hiddenFrames = await page.$$eval("#stream-list .preview iframe", (fs) => fs.length);
  await setHidden(false);
  result.hidden = {
    subscribers_before: beforeHide,
    frames: hiddenFrames,
    subscribers: Object.fromEntries(await Promise.all(names.map(async (n) => [n, await settleSubscribers(n, 0)]))),
    buttons: Object.fromEntries(await Promise.all(names.map(async (n) => [n, await button(n)]))),
    frames_after_shown: await page.$$eval("#stream-list .preview iframe", (fs) => fs.length),
  };
  await page.unroute(whepOffers);
  page.off("request", onRequest);
  result.sessions = sessions;
  result.deletes = deletes;
  return result;
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
  if (opts.live_off) {
    // The button says why it cannot play (its title), and does nothing.
    await page.waitForSelector(`${card(opts.stream)} button.live[disabled]`, { timeout: WAIT_MS });
    await page.click(`${card(opts.stream)} button.live`, { force: true });
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
    out({ event: "done", resolution, button: await button(opts.stream),
      frames: await page.$$eval("#stream-list .preview iframe", (fs) => fs.length),
      console_errors: consoleErrors, page_errors: pageErrors });
    return;
  }
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
  const live = opts.live ? await checkLive(opts.live) : null;
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
