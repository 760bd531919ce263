"""The OpenAPI 3.1 document served at ``GET /api/openapi.json``, written by hand.

It describes every endpoint of the web child, whichever module serves it (this one, ``auth``,
``actions``, ``recordings``, ``snapshots``, ``metrics``, the relay's ``/api/streams`` and the page), with
the JSON shapes those modules produce. Errors are RFC 9457 problem documents (``Problem``). Stream names
are ``app/key``: two path parameters, ``{app}`` and ``{key}``. A change to a JSON shape belongs here too;
``tests/integration/test_web_api.py`` runs schemathesis against this document and the real process.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

Schema = dict[str, Any]

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    # Additional properties stay allowed: subsystems add fields, clients ignore what they don't know.
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> Schema:
    return {"description": description, "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _binary(media_type: str, description: str) -> Schema:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


_STREAM_PARAMS = [
    {
        "name": "app",
        "in": "path",
        "required": True,
        "description": "the stream's app (its name is app/key)",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "examples": ["live"]},
        "example": "live",
    },
    {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "the stream's key",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "examples": ["cam"]},
        "example": "cam",
    },
]

_FILE_PARAM = {
    "name": "file",
    "in": "path",
    "required": True,
    "description": "a recording's id as GET /api/recordings lists it: app/key/NAME.flv",
    "schema": {"type": "string"},
    "example": "live/cam/20260101-000000-000001.flv",
}

_UNAUTHORIZED = _problem("not logged in, or an unknown API token (web.public = false)")
_ACTION_REFUSALS = {
    "401": _problem("not logged in and no API token"),
    "403": _problem("no X-CSRF-Token matching the session, or no password set (the detail says how)"),
    "421": _problem("the Host header is not one of the device's names (DNS rebinding protection)"),
}
_ACTION_SECURITY: list[dict[str, list[str]]] = [{"session": [], "csrf": []}, {"bearer": []}]
_READ_SECURITY: list[dict[str, list[str]]] = [{}, {"session": []}, {"bearer": []}]


def _schemas() -> dict[str, Schema]:
    child: Schema = _obj(
        {
            "name": _STR,
            "state": {"enum": ["starting", "running", "backoff", "stopping", "stopped", "failed"]},
            "critical": _BOOL,
            "restart": {"enum": ["permanent", "transient", "temporary"]},
            "ready": _BOOL,
            "ever_ready": _BOOL,
            "ok": _BOOL,
            "healthy": _BOOL,
            "degraded": _BOOL,
            "restarts": {**_INT, "description": "automatic restarts since the process started"},
            "last_error": _nullable(_STR),
            "last_error_trace": {"type": "array", "items": _STR},
            "last_error_at": _nullable(_NUM),
            "uptime_s": _nullable(_NUM),
            "next_restart_in_s": _nullable(_NUM),
            "down_for_s": _nullable(_NUM),
            "grace_s": _NUM,
            "children": _nullable(_ref("Supervisor")),
        },
        {
            "manual_restarts": {**_INT, "description": "restarts asked for (API, config reload)"},
            "last_restart_requested_at": _nullable(_NUM),
        },
    )
    supervisor = _obj(
        {
            "name": _STR,
            "strategy": {"enum": ["one_for_one", "rest_for_one", "dynamic"]},
            "taken_at": _NUM,
            "escalated": _nullable(_STR),
            "healthy": _BOOL,
            "degraded": _BOOL,
            "failing": {"type": "array", "items": _STR},
            "children": {"type": "array", "items": _ref("Child")},
        }
    )
    subscriber = _obj(
        {
            "protocol": {**_STR, "description": "rtmp, rtmp-push, record, internal, ..."},
            "name": _STR,
            "delivered": _INT,
            "dropped": _INT,
            "lag_ms": _NUM,
            "queued": _INT,
        }
    )
    stream = _obj(
        {
            "name": {**_STR, "description": "app/key (app/<secret> when the key is an RTMP secret)"},
            "live": _BOOL,
            "publisher": _nullable(
                {
                    "type": "object",
                    "description": "rtmp: protocol, address, since; the camera: protocol, source, device, "
                    "encoder",
                    "properties": {"protocol": _STR},
                }
            ),
            "video": _nullable(
                {
                    "type": "object",
                    "description": "codec facts from the sequence header: codec, profile, level, width, "
                    "height, fps, ...",
                    "properties": {"codec": _STR, "width": _INT, "height": _INT},
                }
            ),
            "audio": _nullable({"type": "object", "properties": {"codec": _STR}}),
            "bitrate_bps": _NUM,
            "packets_in": _INT,
            "bytes_in": _INT,
            "subscribers": {"type": "array", "items": _ref("Subscriber")},
        }
    )
    return {
        "Problem": _obj(
            {"type": _STR, "title": _STR, "status": _INT},
            {"detail": _STR, "instance": _STR},
        ),
        "Health": _obj(
            {"status": {"enum": ["ok", "starting", "unhealthy", "failed"]}},
            {
                "failing": {"type": "array", "items": _STR},
                "degraded": {"type": "array", "items": _STR},
            },
        ),
        "Status": _obj(
            {
                "version": _STR,
                "device": _STR,
                "uptime_s": _NUM,
                "healthy": _BOOL,
                "supervisor": _ref("Supervisor"),
                "routes": {
                    "type": "array",
                    "items": _obj({"path": _STR, "methods": {"type": "array", "items": _STR}, "owner": _STR}),
                },
            },
            {
                "state_dir": _STR,
                "capture": _nullable({"type": "object", "description": "the camera: source, encoder, ..."}),
                "config": {"type": "object", "description": "the effective config, secrets masked"},
                "buses": {"type": "array", "items": {"type": "object"}},
                "pushes": {"type": "array", "items": {"type": "object"}},
                "cloud": _nullable({"type": "object"}),
                "webrtc": {
                    "type": "object",
                    "description": 'WHEP viewers and WHIP publishers, or {"state": "off", "reason": ...}',
                },
                "process": _obj({"trio_tasks": _INT, "threads": _INT, "rss_bytes": _INT}),
            },
        ),
        "Supervisor": supervisor,
        "Child": child,
        "Subscriber": subscriber,
        "Stream": stream,
        "Streams": _obj({"streams": {"type": "array", "items": _ref("Stream")}}),
        "Recording": _obj(
            {
                "file": _STR,
                "stream": _STR,
                "size_bytes": _INT,
                "duration_s": _nullable(_NUM),
                "started": _nullable(_STR),
                "download_url": _STR,
                "mp4_url": _STR,
            }
        ),
        "Recordings": _obj(
            {
                "recordings": {"type": "array", "items": _ref("Recording")},
                "disk": _obj(
                    {"used_bytes": _INT, "free_bytes": _INT, "total_bytes": _INT, "recordings_bytes": _INT}
                ),
            }
        ),
        "Session": _obj(
            {
                "logged_in": _BOOL,
                "csrf": _nullable(_STR),
                "password_set": _BOOL,
                "how_to_set": {**_STR, "description": "how to set a password; empty when one is set"},
            },
            {"public": _BOOL},
        ),
        "Login": _obj({"password": {"type": "string", "minLength": 1}}),
        "LoggedIn": _obj({"csrf": {**_STR, "description": "send it as X-CSRF-Token with each action"}}),
        "RecordAction": _obj({"action": {"enum": ["start", "stop"]}}),
        "RecordState": _obj(
            {"stream": _STR, "wanted": _BOOL, "recording": _BOOL},
            {
                "segment": _nullable(_STR),
                "segment_bytes": _INT,
                "bytes_written": _INT,
                "segments_written": _INT,
                "packets_dropped": _INT,
                "error": _nullable(_STR),
            },
        ),
        "Restarted": _obj(
            {"child": _STR, "deferred": _BOOL},
            {"state": _nullable(_ref("Child"))},
        ),
        "KeyframeRequested": _obj({"stream": _STR, "requested": _BOOL}),
    }


_WHEP_OFFER: Schema = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
_WHEP_RESPONSES: dict[str, Schema] = {
    "201": {
        "description": "the SDP answer; Location is the session's URL, /whep/sessions/ID/SECRET (PATCH it "
        "with trickle ICE, DELETE it to hang up: the URL is the session's credential)",
        "content": {"application/sdp": {"schema": {"type": "string"}}},
        "headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}},
    },
    "400": _problem("not an offer this server can answer"),
    "404": _problem("no live stream with video"),
    "415": _problem("not application/sdp"),
    "422": _problem("the stream's codec cannot go to WebRTC as it is (not H.264, or B-frames)"),
    "503": _problem('"disabled: extra not installed", or webrtc.max_viewers reached'),
}


_WHIP_RESPONSES: dict[str, Schema] = {
    "201": {
        "description": "the SDP answer; Location is the session's URL, /whip/sessions/ID/SECRET (PATCH it "
        "with trickle ICE, DELETE it to stop: the URL is the session's credential)",
        "content": {"application/sdp": {"schema": {"type": "string"}}},
        "headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}},
    },
    "400": _problem("not an offer this server can answer (it must offer H.264, packetization-mode 1)"),
    "404": _problem("no such app (rtmp.apps)"),
    "409": _problem("the camera's stream, or a stream that already has a publisher"),
    "415": _problem("not application/sdp"),
    "503": _problem('"disabled: extra not installed"'),
}


_WHEP_OPTIONS: Schema = {
    "summary": "WHEP: what the endpoint accepts (Accept-Post / Accept-Patch); no CORS for other origins",
    "security": [{}],
    "responses": {"204": {"description": "the Allow and Accept-* headers"}, "503": _problem("disabled")},
}


def _session_path(kind: str, who: str, end: str) -> Schema:
    """A WHEP or WHIP session resource: trickle ICE in, DELETE to end; its URL is its credential."""
    return {
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": _STR},
            {"name": "secret", "in": "path", "required": True, "schema": _STR},
        ],
        "patch": {
            "summary": f"{kind}: trickle ICE (RFC 8840): the {who}'s candidates",
            "security": [{}],
            "requestBody": {
                "required": True,
                "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}},
            },
            "responses": {
                "204": {"description": "applied"},
                "400": _problem("not a trickle-ice-sdpfrag"),
                "404": _problem("no such session"),
                "412": _problem("If-Match is not the session's ETag"),
                "415": _problem("not application/trickle-ice-sdpfrag"),
                "422": _problem("an ICE restart (not supported: start a new session)"),
                "503": _problem('"disabled: extra not installed"'),
            },
        },
        "delete": {
            "summary": f"{kind}: {end} (the session's URL is its credential)",
            "security": [{}],
            "responses": {
                "200": {"description": "ended"},
                "404": _problem("no such session"),
                "503": _problem('"disabled: extra not installed"'),
            },
        },
        "options": _WHEP_OPTIONS,
    }


def _paths() -> dict[str, Schema]:
    def watch(summary: str, responses: dict[str, Schema], **more: Any) -> Schema:
        # Like an RTMP play: with play secrets in rtmp.auth for the app, one of them as the bearer token
        # (or a session / API token); without, what a read needs.
        return {
            "summary": summary,
            "description": "With rtmp.auth play secrets for the stream's app, send one as "
            "Authorization: Bearer SECRET (a session or an API token also works).",
            "security": _READ_SECURITY,
            "responses": {**responses, "401": _UNAUTHORIZED},
            **more,
        }

    def read(summary: str, responses: dict[str, Schema], **more: Any) -> Schema:
        return {
            "summary": summary,
            "security": _READ_SECURITY,
            "responses": {**responses, "401": _UNAUTHORIZED},
            **more,
        }

    def action(summary: str, responses: dict[str, Schema], **more: Any) -> Schema:
        return {
            "summary": summary,
            "security": _ACTION_SECURITY,
            "responses": {**responses, **_ACTION_REFUSALS},
            **more,
        }

    unknown_stream = _problem("no such stream")
    return {
        "/api/health": {
            "get": {
                "summary": "Health of the supervision tree (for systemd, load balancers, monitoring)",
                "security": [{}],
                "responses": {
                    "200": _json(_ref("Health"), "healthy; non-critical children that are down listed"),
                    "503": _json(_ref("Health"), "starting, unhealthy (critical children down) or failed"),
                },
            }
        },
        "/api/status": {
            "get": read(
                "Version, uptime, device, supervision tree, effective config",
                {"200": _json(_ref("Status"), "the appliance's state")},
            )
        },
        "/api/streams": {
            "get": read("Every stream", {"200": _json(_ref("Streams"), "publisher, codecs, subscribers")})
        },
        "/api/streams/{app}/{key}": {
            "parameters": _STREAM_PARAMS,
            "get": read(
                "One stream (an item of GET /api/streams)",
                {"200": _json(_ref("Stream"), "the stream"), "404": unknown_stream},
            ),
        },
        "/api/streams/{app}/{key}/snapshot.jpg": {
            "parameters": _STREAM_PARAMS,
            "get": read(
                "The stream's newest keyframe as a JPEG",
                {
                    "200": _binary("image/jpeg", "the picture"),
                    "400": _problem("bad width"),
                    "404": unknown_stream,
                    "501": _problem("a video codec snapshots can't decode"),
                    "503": _problem("no keyframe yet (no publisher, or none since it joined); Retry-After"),
                },
                parameters=[
                    {
                        "name": "width",
                        "in": "query",
                        "required": False,
                        "description": "scale down to this width (never up)",
                        "schema": {"type": "integer", "minimum": 16, "maximum": 4096},
                    }
                ],
            ),
        },
        "/api/streams/{app}/{key}/record": {
            "parameters": _STREAM_PARAMS,
            "post": action(
                "Start or stop recording the stream (until the next reload of [record])",
                {
                    "200": _json(_ref("RecordState"), "the stream's recording state"),
                    "400": _problem('the body is not {"action": "start"|"stop"}'),
                    "404": unknown_stream,
                    "409": _problem("the recorder is not running"),
                },
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RecordAction")}},
                },
            ),
        },
        "/api/streams/{app}/{key}/keyframe": {
            "parameters": _STREAM_PARAMS,
            "post": action(
                "Ask the stream's encoder for a keyframe (the camera's stream only)",
                {
                    "202": _json(_ref("KeyframeRequested"), "asked (rate-limited to one a second)"),
                    "404": unknown_stream,
                    "409": _problem("nobody to ask: an RTMP publisher, or no encoder running"),
                },
            ),
        },
        "/api/children/{path}/restart": {
            "parameters": [
                {
                    "name": "path",
                    "in": "path",
                    "required": True,
                    "description": "the child's path in the tree: capture, recorder, egress/push:NAME, ...",
                    "schema": {"type": "string", "pattern": "^[^/]+(/[^/]+)*$"},
                    "example": "capture",
                }
            ],
            "post": action(
                "Restart a subsystem (it does not count towards its restart intensity)",
                {
                    "200": _json(_ref("Restarted"), "restarted; its state once back"),
                    "202": _json(_ref("Restarted"), "web itself: restarts right after this answer"),
                    "404": _problem("no such child"),
                    "409": _problem("the appliance is starting or stopping"),
                },
            ),
        },
        "/api/recordings": {
            "get": read("Finished recordings, newest first", {"200": _json(_ref("Recordings"), "the list")})
        },
        "/api/recordings/{file}": {
            "parameters": [_FILE_PARAM],
            "get": read(
                "Download a recording (FLV)",
                {
                    "200": _binary("video/x-flv", "the file, as an attachment"),
                    "400": _problem("not a recording's id"),
                    "404": _problem("no such recording"),
                },
            ),
        },
        "/api/recordings/{file}/mp4": {
            "parameters": [_FILE_PARAM],
            "get": read(
                "A recording remuxed to fragmented MP4 on the fly (no re-encode), for <video>",
                {
                    "200": _binary("video/mp4", "the MP4, streamed while it is made"),
                    "400": _problem("not a recording's id"),
                    "404": _problem("no such recording"),
                    "422": _problem("the file can't be remuxed"),
                },
            ),
        },
        "/api/events": {
            "get": read(
                "Live updates as server-sent events (status, streams); reconnect with Last-Event-ID",
                {"200": _binary("text/event-stream", "an endless event stream")},
            )
        },
        "/metrics": {
            "get": read(
                "Prometheus metrics (text exposition format)",
                {"200": _binary("text/plain", "streams, children, watchdog, capture, board")},
            )
        },
        "/": {
            "get": {
                "summary": "The status page",
                "security": [{}],
                "responses": {"200": _binary("text/html", "the page")},
            }
        },
        "/static/{file}": {
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": _STR}],
            "get": {
                "summary": "The page's scripts and styles",
                "security": [{}],
                "responses": {"200": {"description": "the file"}, "404": _problem("no such file")},
            },
        },
        "/whep/cam": {
            "post": watch(
                "WHEP: watch the camera (an SDP offer in, the answer out; draft-ietf-wish-whep)",
                _WHEP_RESPONSES,
                requestBody=_WHEP_OFFER,
            ),
            "options": _WHEP_OPTIONS,
        },
        "/whep/{app}/{key}": {
            "parameters": [
                {"name": "app", "in": "path", "required": True, "schema": _STR},
                {"name": "key", "in": "path", "required": True, "schema": _STR},
            ],
            "post": watch("WHEP: watch a stream", _WHEP_RESPONSES, requestBody=_WHEP_OFFER),
            "options": _WHEP_OPTIONS,
        },
        "/whep/sessions/{id}/{secret}": _session_path("WHEP", "viewer", "hang up"),
        "/whip/{app}/{key}": {
            "parameters": [
                {"name": "app", "in": "path", "required": True, "schema": _STR},
                {"name": "key", "in": "path", "required": True, "schema": _STR},
            ],
            "post": {
                "summary": "WHIP (RFC 9725): publish H.264 + Opus into APP/KEY (played over RTMP and WHEP)",
                "description": "With rtmp.auth publish secrets for the app, send one as "
                "Authorization: Bearer SECRET (a session or an API token also works); without, open like "
                "an RTMP publish.",
                "security": _READ_SECURITY,
                "requestBody": _WHEP_OFFER,
                "responses": {
                    **_WHIP_RESPONSES,
                    "401": _UNAUTHORIZED,
                },
            },
            "options": _WHEP_OPTIONS,
        },
        "/whip/sessions/{id}/{secret}": _session_path("WHIP", "publisher", "stop publishing"),
        "/watch/{stream}": {
            "parameters": [{"name": "stream", "in": "path", "required": True, "schema": _STR}],
            "get": {
                "summary": "The WHEP player page for a stream (app/key, or cam for the camera)",
                "security": [{}],
                "responses": {"200": _binary("text/html", "the player")},
            },
        },
        "/api/openapi.json": {
            "get": read("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")}),
        },
        "/api/session": {
            "get": {
                "summary": "Whether this browser is logged in, its CSRF token, and whether a password is set",
                "security": [{}],
                "responses": {"200": _json(_ref("Session"), "the session state")},
            }
        },
        "/api/login": {
            "post": {
                "summary": "Log in: sets the appliance_session cookie (HttpOnly, SameSite=Strict)",
                "security": [{}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Login")}}},
                "responses": {
                    "200": _json(_ref("LoggedIn"), "logged in; the cookie is set"),
                    "400": _problem('the body is not {"password": "..."}'),
                    "401": _problem("wrong password"),
                    "403": _problem("no password is set (the detail says how to set one)"),
                    "413": _problem("the body is too large"),
                    "429": _problem("too many wrong passwords from this address; Retry-After says when"),
                },
            }
        },
        "/api/logout": {
            "post": {
                "summary": "Log out: ends the cookie's session",
                "security": [{}],
                "responses": {"204": {"description": "logged out (or was not logged in)"}},
            }
        },
    }


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the web API.

    Args:
        version: the appliance's version (``info.version``).

    Returns:
        A JSON-ready dict (a fresh one each call).
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "appliance web API",
            "version": version,
            "description": "The edge streaming appliance's status, streams, recordings and actions. "
            "Reads are public unless web.public = false; actions need a session (POST /api/login, then "
            "X-CSRF-Token) or Authorization: Bearer API_TOKEN. Errors are RFC 9457 problem documents.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "appliance_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "one of web.api_tokens"},
            },
        },
    }
