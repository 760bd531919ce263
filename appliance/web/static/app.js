// The appliance's status page. No framework, no build step, nothing from other sites.
// Live data comes from the server-sent events of api/events (one "status" snapshot a second); text from
// the device is only ever set through textContent or attributes, never parsed as HTML.
// Every URL is relative, so the page works however the device is reached (IP, name, a proxy's prefix).
"use strict";

const PLOT_SPAN_S = 300; // the plot shows the last 5 minutes
const SPARK_POINTS = 60;
const PREVIEW_EVERY_MS = 3000;
const RECORDINGS_EVERY_MS = 10000;

const state = {
  csrf: null, loggedIn: false, passwordSet: false, status: null,
  history: [], // {time, cpu_percent, bitrate_bps: {stream: bps}}
  cards: new Map(), // stream name -> its card's elements
  source: null, retryTimer: null,
};

// -- helpers ------------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

// A stream or child path as URL path segments: each one escaped, the slashes kept.
const pathUrl = (path) => path.split("/").map(encodeURIComponent).join("/");
// The server's links are absolute paths ("/api/..."); make them relative to where the page was loaded.
const relative = (url) => (url.startsWith("/") ? "." + url : url);

function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function fmtBitrate(bps) {
  if (bps === null || bps === undefined) return "–";
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${Math.round(bps)} bit/s`;
}

function say(text, kind) {
  const m = $("message");
  m.hidden = !text;
  m.dataset.kind = kind || "info";
  setText(m, text || "");
}

// -- live feed ----------------------------------------------------------------------------------------

function setConn(kind, text) {
  const c = $("conn");
  c.dataset.state = kind;
  setText(c, text);
}

function connect() {
  clearTimeout(state.retryTimer);
  if (state.source) state.source.close();
  const es = new EventSource("api/events");
  state.source = es;
  setConn("connecting", "connecting…");
  es.onopen = () => setConn("live", "live");
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (an HTTP error, say): try again ourselves, a little later.
      setConn("down", "disconnected, retrying in 5 s");
      state.retryTimer = setTimeout(connect, 5000);
    } else {
      setConn("connecting", "reconnecting…");
    }
  };
  es.addEventListener("history", (ev) => {
    const points = JSON.parse(ev.data);
    const known = new Set(state.history.map((p) => p.time));
    state.history.push(...points.filter((p) => !known.has(p.time)));
    state.history.sort((a, b) => a.time - b.time);
  });
  es.addEventListener("status", (ev) => {
    const s = JSON.parse(ev.data);
    state.status = s;
    state.history.push({
      time: s.time,
      cpu_percent: s.system.cpu_percent,
      bitrate_bps: Object.fromEntries(s.streams.map((x) => [x.name, x.bitrate_bps])),
    });
    const cutoff = s.time - PLOT_SPAN_S - 5;
    while (state.history.length && state.history[0].time < cutoff) state.history.shift();
    render(s);
  });
}

// -- rendering ----------------------------------------------------------------------------------------

function render(s) {
  setText($("device"), s.device);
  document.title = `${s.device} · appliance`;
  const health = s.health.status === "ok" && (s.health.degraded || []).length ? "degraded" : s.health.status;
  const hb = $("health");
  hb.dataset.state = health;
  setText(hb, health);
  hb.title = [...(s.health.failing || []), ...(s.health.degraded || [])].join(", ");
  renderOverview(s);
  renderChildren(s.children);
  renderStreams(s);
  renderNetwork(s.system.network || []);
  drawPlot();
}

function renderOverview(s) {
  const sys = s.system;
  setText($("f-board"), s.board.model || "unknown");
  setText($("f-version"), s.version);
  setText($("f-uptime"), fmtDuration(s.uptime_s));
  setText($("f-cpu"), sys.cpu_percent === null ? "–" : `${sys.cpu_percent.toFixed(1)} % of ${sys.cpus} CPUs`);
  const mem = sys.memory;
  setText($("f-memory"), mem ? `${fmtBytes(mem.used_bytes)} of ${fmtBytes(mem.total_bytes)} (${mem.percent} %)` : "–");
  setText($("f-load"), sys.load ? sys.load.map((x) => x.toFixed(2)).join(" ") : "–");
  setText($("f-temperature"), sys.temperature_c === null ? "not available" : `${sys.temperature_c.toFixed(1)} °C`);
  setText($("f-throttling"), sys.throttling === null ? "not available" : String(sys.throttling));
  const disk = sys.disk;
  setText($("f-disk"), disk
    ? `${fmtBytes(disk.free_bytes)} free of ${fmtBytes(disk.total_bytes)}; recordings ${fmtBytes(disk.recordings_bytes)}`
    : "–");
}

function renderChildren(rows) {
  const body = $("children");
  const byPath = new Map([...body.children].map((tr) => [tr.dataset.path, tr]));
  const keep = new Set();
  for (const c of rows) {
    keep.add(c.path);
    let tr = byPath.get(c.path);
    if (!tr) {
      tr = el("tr", { dataset: { path: c.path } },
        el("td", { class: "name" }), el("td", {}, el("span", { class: "badge" })), el("td", { class: "num" }),
        el("td", { class: "num", dataset: { field: "restarts" } }),
        el("td", { class: "num", dataset: { field: "manual_restarts" } }),
        el("td", { class: "error" }),
        el("td", {}, el("button", { type: "button", class: "act", onclick: () => restartChild(c.path) }, "Restart")));
      body.append(tr);
    }
    const [name, st, up, restarts, manual, err] = tr.children;
    setText(name, "\u2003".repeat(c.depth) + c.name);
    name.title = c.critical ? "critical: the device is unhealthy while it is down" : "";
    const badge = st.firstChild;
    badge.className = `badge state-${c.state}`;
    setText(badge, c.state + (c.next_restart_in_s !== null ? ` (${Math.ceil(c.next_restart_in_s)} s)` : ""));
    setText(up, c.uptime_s !== null ? fmtDuration(c.uptime_s) : c.down_for_s !== null ? `down ${fmtDuration(c.down_for_s)}` : "–");
    setText(restarts, c.restarts);
    setText(manual, c.manual_restarts);
    setText(err, c.last_error ? `${c.last_error} (${fmtDuration(c.last_error_ago_s)} ago)` : "");
  }
  for (const [path, tr] of byPath) if (!keep.has(path)) tr.remove();
  updateActions();
}

function subscribersByProtocol(subs) {
  const counts = {};
  for (const x of subs || []) counts[x.protocol] = (counts[x.protocol] || 0) + 1;
  const parts = Object.entries(counts).sort().map(([p, n]) => `${p} ${n}`);
  return parts.length ? parts.join(" · ") : "none";
}

function describePublisher(p) {
  if (!p) return "none";
  if (p.protocol === "capture") return `camera (${p.source}${p.device ? " " + p.device : ""}, ${p.encoder})`;
  if (p.protocol === "rtmp") return `RTMP from ${p.address}`;
  return p.protocol;
}

function makeCard(name) {
  const fields = {};
  const dl = el("dl", {});
  for (const [key, label] of [["codec", "Codec"], ["resolution", "Resolution"], ["fps", "Frame rate"],
    ["bitrate", "Bitrate"], ["publisher", "Publisher"], ["subscribers", "Subscribers"], ["recording", "Recording"]]) {
    fields[key] = el("dd", { dataset: { field: key } });
    dl.append(el("dt", {}, label), fields[key]);
  }
  const spark = el("canvas", { class: "spark", width: 240, height: 28, "aria-label": `bitrate of ${name}, last minute` });
  const img = el("img", { alt: `preview of ${name}`, hidden: true });
  const noPreview = el("span", {}, "no preview yet");
  const preview = el("div", { class: "preview" }, img, noPreview);
  const record = el("button", { type: "button", class: "act", onclick: () => toggleRecord(name) }, "Record");
  const keyframe = el("button", { type: "button", class: "act", onclick: () => requestKeyframe(name) }, "Keyframe");
  // Live: the preview becomes the WHEP player (/watch, framed); watching is a read, no login needed.
  const live = el("button", { type: "button", class: "live", "aria-pressed": "false", onclick: () => toggleLive(name) }, "Live");
  const card = el("article", { class: "card", dataset: { stream: name } }, preview,
    el("div", { class: "info" }, el("h3", {}, name), dl, spark, el("div", { class: "actions" }, live, record, keyframe)));
  const entry = { card, fields, spark, img, noPreview, preview, record, live, player: null, loading: false, hasVideo: false };
  img.addEventListener("load", () => { entry.loading = false; img.hidden = false; noPreview.hidden = true; });
  img.addEventListener("error", () => { entry.loading = false; img.hidden = true; noPreview.hidden = false; });
  return entry;
}

function renderStreams(s) {
  const list = $("stream-list");
  const seen = new Set();
  for (const st of s.streams) {
    seen.add(st.name);
    let c = state.cards.get(st.name);
    if (!c) {
      c = makeCard(st.name);
      state.cards.set(st.name, c);
      list.append(c.card);
    }
    const v = st.video, a = st.audio;
    setText(c.fields.codec, [v && `${v.codec}${v.profile ? " " + v.profile : ""}`, a && a.codec].filter(Boolean).join(" + ") || "–");
    setText(c.fields.resolution, v && v.width ? `${v.width}x${v.height}` : "–");
    setText(c.fields.fps, v && v.fps ? `${v.fps} fps` : "–");
    setText(c.fields.bitrate, fmtBitrate(st.bitrate_bps));
    setText(c.fields.publisher, describePublisher(st.publisher));
    setText(c.fields.subscribers, subscribersByProtocol(st.subscribers));
    const rec = (s.recording || {})[st.name];
    c.recording = !!(rec && rec.wanted);
    setText(c.fields.recording, !rec ? "off" : rec.error ? `stopped: ${rec.error}` : rec.recording ? "recording" : rec.wanted ? "waiting" : "off");
    setText(c.record, c.recording ? "Stop recording" : "Record");
    c.hasVideo = !!v && !st.name.includes("<");
    drawSpark(c.spark, st.name);
  }
  for (const [name, c] of state.cards) if (!seen.has(name)) { stopLive(c); c.card.remove(); state.cards.delete(name); }
  $("no-streams").hidden = s.streams.length > 0;
  updateLive(s);
  updateActions();
}

function stopLive(c) {
  if (!c.player) return;
  c.player.remove(); // its pagehide DELETEs the WHEP session
  c.player = null;
  c.preview.classList.remove("playing");
  c.live.setAttribute("aria-pressed", "false");
  setText(c.live, "Live");
}

function toggleLive(name) {
  const c = state.cards.get(name);
  if (!c) return;
  if (c.player) { stopLive(c); return; }
  c.player = el("iframe", { src: `watch/${pathUrl(name)}?embed`, title: `live ${name}`, allow: "autoplay; fullscreen" });
  c.preview.append(c.player);
  c.preview.classList.add("playing");
  c.live.setAttribute("aria-pressed", "true");
  setText(c.live, "Stop live");
}

function updateLive(s) {
  const rtc = s.webrtc || {};
  const why = rtc.state === "running" ? "" : `WebRTC is off: ${rtc.reason || rtc.state || "unknown"}`;
  for (const c of state.cards.values()) {
    c.live.disabled = !!why || !c.hasVideo;
    c.live.title = why || (c.hasVideo ? "play it live over WebRTC (WHEP)" : "no video");
    if (c.live.disabled) stopLive(c);
  }
}

// A hidden page holds no viewers: live previews stop and are not restarted by themselves.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) for (const c of state.cards.values()) stopLive(c);
});

function refreshPreviews() {
  for (const [name, c] of state.cards) {
    if (!c.hasVideo || c.loading || c.player || document.hidden) continue;
    c.loading = true;
    c.img.src = `api/streams/${pathUrl(name)}/snapshot.jpg?width=320&t=${Date.now()}`;
  }
}

function renderNetwork(ifaces) {
  const body = $("interfaces");
  body.replaceChildren(...ifaces.map((i) => el("tr", {},
    el("td", {}, i.name),
    el("td", {}, i.state),
    el("td", {}, ...i.addresses.flatMap((a, k) => [k ? el("br") : null,
      `${a.address}/${a.prefix}${a.scope && a.scope !== "global" ? ` (${a.scope})` : ""}`]),
      i.default_gateway ? el("div", { class: "hint" }, `default route via ${i.default_gateway}`) : null),
    el("td", { class: "num" }, fmtBitrate(i.rx_bps)),
    el("td", { class: "num" }, fmtBitrate(i.tx_bps)))));
}

// -- plots --------------------------------------------------------------------------------------------

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * ratio), h = Math.round(canvas.clientHeight * ratio);
  if (w && h && (canvas.width !== w || canvas.height !== h)) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, w: canvas.clientWidth, h: canvas.clientHeight };
}

function drawSpark(canvas, name) {
  const { ctx, w, h } = fitCanvas(canvas);
  ctx.clearRect(0, 0, w, h);
  const pts = state.history.slice(-SPARK_POINTS).map((p) => p.bitrate_bps[name] || 0);
  if (pts.length < 2) return;
  const max = Math.max(...pts, 1);
  ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--accent");
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  pts.forEach((v, i) => {
    const x = (i / (SPARK_POINTS - 1)) * w, y = h - 2 - (v / max) * (h - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

function drawPlot() {
  const canvas = $("plot");
  const { ctx, w, h } = fitCanvas(canvas);
  const css = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 70, r: 44, t: 8, b: 20 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const pts = state.history;
  const now = pts.length ? pts[pts.length - 1].time : 0;
  const x = (t) => pad.l + pw * (1 - (now - t) / PLOT_SPAN_S);
  const total = (p) => Object.values(p.bitrate_bps).reduce((a, b) => a + (b || 0), 0);
  const maxBps = Math.max(1e5, ...pts.map(total)) * 1.1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = css.getPropertyValue("--muted");
  ctx.strokeStyle = css.getPropertyValue("--line");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(fmtBitrate((maxBps * (4 - i)) / 4), pad.l - 6, y + 4);
    ctx.textAlign = "left"; ctx.fillText(`${(100 * (4 - i)) / 4} %`, pad.l + pw + 6, y + 4);
  }
  ctx.textAlign = "center";
  for (let m = 0; m <= 5; m++) ctx.fillText(m ? `-${m} min` : "now", pad.l + pw * (1 - m / 5), h - 4);
  const line = (value, color, max) => {
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    let started = false, prevT = null;
    for (const p of pts) {
      const v = value(p);
      // A gap (no page open, server restarted): lift the pen instead of drawing across it.
      if (v === null || v === undefined || (prevT !== null && p.time - prevT > 5)) started = false;
      prevT = p.time;
      if (v === null || v === undefined || now - p.time > PLOT_SPAN_S) continue;
      const px = x(p.time), py = pad.t + ph * (1 - Math.min(v, max) / max);
      started ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
      started = true;
    }
    ctx.stroke();
  };
  line(total, css.getPropertyValue("--accent"), maxBps);
  line((p) => p.cpu_percent, css.getPropertyValue("--cpu"), 100);
}

// -- recordings ---------------------------------------------------------------------------------------

async function loadRecordings() {
  let doc;
  try {
    const r = await fetch("api/recordings", { credentials: "same-origin" });
    if (!r.ok) throw new Error((await problemText(r)) || `HTTP ${r.status}`);
    doc = await r.json();
  } catch (e) {
    setText($("rec-summary"), `recordings unavailable: ${e.message}`);
    return;
  }
  const recs = doc.recordings || [];
  const disk = doc.disk || {};
  setText($("rec-summary"), `${recs.length} recording${recs.length === 1 ? "" : "s"}` +
    (disk.recordings_bytes !== undefined ? `, ${fmtBytes(disk.recordings_bytes)}` : "") +
    (disk.free_bytes !== undefined ? `; ${fmtBytes(disk.free_bytes)} free` : ""));
  if (!recs.length) {
    $("rec-list").replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "hint" },
      "No recordings yet: record.streams in the config, or Record on a stream, makes them.")));
    return;
  }
  $("rec-list").replaceChildren(...recs.slice(0, 100).map((r) => el("tr", { dataset: { file: r.file } },
    el("td", {}, r.started || "–"),
    el("td", {}, r.stream),
    el("td", { class: "num" }, r.duration_s === null ? "–" : fmtDuration(r.duration_s)),
    el("td", { class: "num" }, fmtBytes(r.size_bytes)),
    el("td", {},
      el("button", { type: "button", onclick: () => play(r) }, "Play"), " ",
      el("a", { href: relative(r.download_url), download: r.file.split("/").pop() }, "Download")))));
}

function play(r) {
  const v = $("player");
  v.hidden = false;
  v.src = relative(r.mp4_url);
  v.title = r.file;
  v.play().catch(() => {});
}

// -- login and actions --------------------------------------------------------------------------------

async function problemText(r) {
  try {
    const doc = await r.json();
    return doc.detail || doc.title || "";
  } catch {
    return "";
  }
}

async function loadSession() {
  try {
    const r = await fetch("api/session", { credentials: "same-origin", cache: "no-store" });
    const s = await r.json();
    state.loggedIn = !!s.logged_in;
    state.csrf = s.csrf || null;
    state.passwordSet = !!s.password_set;
    $("nopass").hidden = state.passwordSet;
    setText($("nopass"), state.passwordSet ? "" : `Actions need a password. ${s.how_to_set || "Run `appliance passwd` on the device."}`);
  } catch {
    state.loggedIn = false;
  }
  $("login").hidden = !state.passwordSet || state.loggedIn;
  $("who").hidden = !state.loggedIn;
  updateActions();
}

function updateActions() {
  const why = state.loggedIn ? "" : state.passwordSet ? "log in first" : "no password set: run `appliance passwd`";
  for (const b of document.querySelectorAll("button.act")) {
    b.disabled = !state.loggedIn;
    b.title = why;
  }
}

async function act(url, body, what) {
  say(`${what}…`);
  try {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf || "" },
      body: JSON.stringify(body || {}),
    });
    if (r.status === 401) await loadSession();
    if (!r.ok) throw new Error((await problemText(r)) || `HTTP ${r.status}`);
    say(`${what}: done`);
    return true;
  } catch (e) {
    say(`${what}: ${e.message}`, "error");
    return false;
  }
}

const restartChild = (path) => act(`api/children/${pathUrl(path)}/restart`, null, `restart ${path}`);
const requestKeyframe = (name) => act(`api/streams/${pathUrl(name)}/keyframe`, null, `keyframe for ${name}`);

async function toggleRecord(name) {
  const c = state.cards.get(name);
  const action = c && c.recording ? "stop" : "start";
  if (await act(`api/streams/${pathUrl(name)}/record`, { action }, `${action} recording ${name}`)) {
    setTimeout(loadRecordings, 1500);
  }
}

async function login(ev) {
  ev.preventDefault();
  const input = $("password");
  try {
    const r = await fetch("api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ password: input.value }),
    });
    if (!r.ok) {
      const wait = r.headers.get("Retry-After");
      throw new Error(((await problemText(r)) || `HTTP ${r.status}`) + (wait ? ` (retry in ${wait} s)` : ""));
    }
    input.value = "";
    say("logged in");
  } catch (e) {
    say(`login: ${e.message}`, "error");
  }
  await loadSession();
}

async function logout() {
  await fetch("api/logout", { method: "POST", credentials: "same-origin" }).catch(() => {});
  say("logged out");
  await loadSession();
}

// -- start --------------------------------------------------------------------------------------------

$("login").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
window.addEventListener("resize", () => drawPlot());
loadSession();
loadRecordings();
connect();
setInterval(refreshPreviews, PREVIEW_EVERY_MS);
setInterval(loadRecordings, RECORDINGS_EVERY_MS);
setTimeout(refreshPreviews, 500);
