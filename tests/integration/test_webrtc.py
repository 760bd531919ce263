"""The webrtc subsystem without its extra: WHEP answers 503 "disabled: extra not installed" and the rest of
the appliance runs (the camera, the relay, the page)."""

from __future__ import annotations

from pathlib import Path

from tests.harness import http_get, raw_request
from tests.integration.rtmp_peers import camera_appliance

NO_AIORTC = Path(__file__).resolve().parents[1] / "fixtures" / "no_aiortc"


def test_without_the_extra_whep_is_503_and_everything_else_runs(tmp_path: Path) -> None:
    app = camera_appliance(tmp_path, env={"PYTHONPATH": str(NO_AIORTC)})
    try:
        base = app.web_url()
        app.wait_healthy(base)
        assert app.event("webrtc.off")["reason"] == "disabled: extra not installed"
        status, _headers, body = raw_request(base, "/whep/cam", "POST")
        assert status == 503 and b"disabled: extra not installed" in body
        streams = http_get(base + "/api/streams")[1]["streams"]
        assert any(s["name"] == "live/cam" for s in streams)
        children = {
            c["name"]: c["state"] for c in http_get(base + "/api/status")[1]["supervisor"]["children"]
        }
        assert children["webrtc"] == "running" and children["capture"] == "running"
    finally:
        assert app.stop() == 0
