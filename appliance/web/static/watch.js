// The WHEP player at /watch/{stream}: one RTCPeerConnection that receives the stream's video and audio
// from POST /whep/{stream} (draft-ietf-wish-whep), non-trickle (the offer is sent once ICE gathering has
// finished), and reconnects with backoff when the connection fails or the appliance goes away.
// A play secret, when the stream needs one, is given as #token=SECRET (never sent to a log: fragments stay
// in the browser) and sent as a bearer token. No build step, no other sites, text via textContent only.
"use strict";

const stream = decodeURIComponent(location.pathname.replace(/^\/watch\//, "")) || "cam";
const endpoint = new URL(`/whep/${stream.split("/").map(encodeURIComponent).join("/")}`, location.href);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const video = document.getElementById("video");
// ?embed: inside the status page's live preview: the picture only.
if (new URLSearchParams(location.search).has("embed")) document.body.classList.add("embed");
const stateEl = document.getElementById("state");
const messageEl = document.getElementById("message");

const player = { pc: null, session: null, attempts: 0, connects: 0 };
window.player = player; // for diagnostics (and the browser tests' getStats)

function headers(extra) {
  const out = { ...extra };
  if (token) out.Authorization = `Bearer ${token}`;
  return out;
}

function show(state, text) {
  stateEl.dataset.state = state;
  stateEl.textContent = text || state;
  document.body.dataset.state = state;
}

function say(text) {
  messageEl.hidden = !text;
  messageEl.textContent = text || "";
}

function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); resolve(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") done();
    });
  });
}

async function problemText(res) {
  try {
    const doc = await res.json();
    return doc.detail || doc.title || `HTTP ${res.status}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

async function hangUp() {
  const { pc, session } = player;
  player.pc = null;
  player.session = null;
  if (pc) pc.close();
  if (session) {
    try {
      await fetch(session, { method: "DELETE", headers: headers(), keepalive: true });
    } catch {
      // The appliance is gone or restarting: its side ends the session when ICE times out.
    }
  }
}

let retryTimer = null;
function retry(why) {
  if (retryTimer) return;
  player.attempts += 1;
  const delay = Math.min(30000, 1000 * 2 ** Math.min(player.attempts - 1, 5));
  show("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s`);
  if (why) say(why);
  hangUp().finally(() => {
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, delay);
  });
}

async function connect() {
  show("connecting", "connecting…");
  const pc = new RTCPeerConnection();
  player.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const media = new MediaStream();
  video.srcObject = media;
  pc.addEventListener("track", (e) => media.addTrack(e.track));
  pc.addEventListener("connectionstatechange", () => {
    if (player.pc !== pc) return;
    if (pc.connectionState === "connected") {
      player.attempts = 0;
      player.connects += 1;
      show("playing", "live");
      say("");
    } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      retry("the connection was lost");
    } else if (pc.connectionState === "disconnected") {
      // ICE may come back by itself; give it a few seconds before starting over.
      setTimeout(() => { if (player.pc === pc && pc.connectionState === "disconnected") retry("no media"); }, 5000);
    }
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 3000);
    const res = await fetch(endpoint, {
      method: "POST",
      headers: headers({ "Content-Type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) {
      retry(`${stream}: ${await problemText(res)}`);
      return;
    }
    const where = res.headers.get("Location");
    player.session = where ? new URL(where, endpoint).href : null;
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  } catch (err) {
    retry(`${stream}: ${err && err.message ? err.message : err}`);
  }
}

document.getElementById("stream").textContent = stream;
document.title = `Watch ${stream}`;
window.addEventListener("pagehide", () => { hangUp(); });
connect();
