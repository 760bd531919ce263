// Shared by the browser scripts: Debian's Chromium, headless, launched the one way these tests need it.
//
// As root there is no user-namespace sandbox to use (--no-sandbox); the rest keeps Chromium off the network
// (component updates, safe-browsing lists, sync...), which this machine does not have, and lets WebRTC use
// 127.0.0.1 candidates with real addresses (no mDNS names) so ICE can be kept on loopback.
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
  "--disable-domain-reliability",
  "--disable-breakpad",
  "--metrics-recording-only",
  "--safebrowsing-disable-auto-update",
  "--autoplay-policy=no-user-gesture-required",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
];

export function launchChromium(opts = {}) {
  return chromium.launch({
    executablePath: opts.chromium || "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
  });
}

// The network rule: an SDP (or a trickle-ICE fragment) with every candidate but 127.0.0.1 dropped.
export function loopbackOnly(text) {
  return text
    .split("\r\n")
    .filter((line) => !line.startsWith("a=candidate:") || line.includes(" 127.0.0.1 "))
    .join("\r\n");
}
