"""The HTTP side WHEP and WHIP share (draft-ietf-wish-whep, RFC 9725): reading an offer, the 201 with the
answer, the session resource's OPTIONS and its trickle-ICE PATCH (RFC 8840).

A session's URL, ``/{whep,whip}/sessions/{id}/{secret}``, is its credential: whoever created it holds it.
aiortc gathers every local candidate before it answers, so a PATCH only applies the client's candidates and
sends nothing back; new ICE credentials (an ICE restart) are refused with 422.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from appliance.media.webrtc.loop import AsyncioThread
from appliance.media.webrtc.negotiation import SdpFragmentError, etag, parse_sdpfrag
from appliance.media.webrtc.tracks import add_candidates
from appliance.web.app import problem

__all__ = ["SDP", "SDPFRAG", "created", "offer_options", "read_offer", "session_options", "trickle"]

log = logging.getLogger("appliance.webrtc")

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_BODY = 64 * 1024


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def offer_options() -> Response:
    """CORS preflight and discovery for the offer endpoint; no Access-Control-Allow-Origin: other sites
    get nothing."""
    return Response(status_code=204, headers={"Accept-Post": SDP, "Allow": "POST, OPTIONS"})


def session_options() -> Response:
    return Response(status_code=204, headers={"Accept-Patch": SDPFRAG, "Allow": "PATCH, DELETE, OPTIONS"})


async def read_offer(request: Request) -> str | Response:
    """The request's SDP offer, or the 415/400 problem to answer."""
    if _content_type(request) != SDP:
        return problem(415, "Unsupported Media Type", "want an SDP offer as application/sdp")
    offer = (await request.body())[: MAX_BODY + 1]
    if len(offer) > MAX_BODY or not offer.strip():
        return problem(400, "Bad Request", "want an SDP offer (at most 64 KiB)")
    return offer.decode("utf-8", "replace")


def created(sdp: str, kind: str, session_id: str, secret: str, ufrag: str) -> Response:
    """The 201: the answer, the session's URL (``/KIND/sessions/ID/SECRET``) and its ETag."""
    return Response(
        sdp,
        status_code=201,
        media_type=SDP,
        headers={"Location": f"/{kind}/sessions/{session_id}/{secret}", "ETag": etag(session_id, ufrag)},
    )


async def trickle(
    request: Request, *, loop: AsyncioThread, pc: Any, session_id: str, ufrag: str, event: str
) -> Response:
    """A PATCH: apply the client's candidates to `pc`; 204 with the ETag, or the problem."""
    if _content_type(request) != SDPFRAG:
        return problem(415, "Unsupported Media Type", f"want {SDPFRAG}")
    tag = etag(session_id, ufrag)
    match = request.headers.get("if-match")
    if match is not None and match.strip() not in ("*", tag):
        return problem(412, "Precondition Failed", "If-Match is not this session's ETag")
    try:
        fragment = parse_sdpfrag((await request.body())[:MAX_BODY].decode("utf-8", "replace"))
    except SdpFragmentError as e:
        return problem(400, "Bad Request", f"not a trickle-ice-sdpfrag: {e}")
    remote = _remote_ufrag(pc)
    if fragment.ufrag is not None and remote is not None and fragment.ufrag != remote:
        return problem(422, "Unprocessable Content", "ICE restarts are not supported: start a new session")
    taken = await loop.run(add_candidates(pc, fragment.candidates))
    log.info("%s session=%s candidates=%d taken=%d", event, session_id, len(fragment.candidates), taken)
    return Response(status_code=204, headers={"ETag": tag})


def _remote_ufrag(pc: Any) -> str | None:
    description = pc.remoteDescription
    if description is None:
        return None
    for line in description.sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return str(line[12:].strip())
    return None
