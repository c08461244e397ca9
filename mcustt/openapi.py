"""The OpenAPI 3.1 document of the REST API (``GET /openapi.json``), built in code.

Every schema comes from :mod:`mcustt.wire`: request bodies from the pydantic models the
handlers validate with, responses and event frames from the TypedDicts the handlers'
builders return, so the document cannot drift from what the server accepts or sends.
This module adds what only a document has: operations, parameters, security, errors.
``tests/test_openapi.py`` checks it with openapi-spec-validator and fuzzes the live
server against it with schemathesis. :mod:`mcustt.docs_page` renders it as HTML.
WebSockets are outside OpenAPI; they are listed under ``x-websockets``.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import __version__, wire
from mcustt.state import app_state
from mcustt.subtitles import FORMATS

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"

# -- small builders -------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STR: Schema = {"type": "string"}

#: What each error status means across the API (§15).
ERRORS: dict[int, str] = {
    400: "Malformed body, bad parameter or bad format (`BAD_REQUEST`).",
    401: "Missing or invalid tenant key, token, owner secret or admin token, or a "
    "credential of a kind this operation does not accept.",
    403: "Admin API disabled (`ADMIN_DISABLED`), or a browser `Origin` outside the "
    "tenant's allowed origins (`ORIGIN_FORBIDDEN`), or a signed URL that is not valid "
    "(`SIGNED_URL_INVALID`).",
    404: "Unknown tenant, session or job (another tenant's session is 404 too).",
    405: "Not supported on this resource (see `Allow`).",
    409: "The session has ended (`SESSION_ENDED`), or another producer is connected "
    "(`ALREADY_CONNECTED`).",
    413: "The body is too large.",
    415: "Wrong `Content-Type`.",
    422: "The `Idempotency-Key` was used before with a different body.",
    410: "A signed URL past its expiry (`SIGNED_URL_EXPIRED`): ask for a new one.",
    429: "Rate-limited, or a tenant cap reached (`SESSION_CAP`). Honour `Retry-After`.",
    502: "The summarizer or the text-to-speech engine failed for good "
    "(`SUMMARIZER_FAILED`, `TTS_FAILED`).",
    503: "The summarizer is not configured (`SUMMARIZER_UNCONFIGURED`), or text to speech "
    "cannot run (`TTS_UNAVAILABLE`, e.g. espeak-ng not installed), or this node is "
    "draining (`NODE_DRAINING`: another node answers), or the database is unreachable "
    "(`STORE_UNAVAILABLE`, any operation that reads or writes it). Honour `Retry-After`.",
}

RETRY_AFTER: Schema = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def _error(status: int) -> Schema:
    doc: Schema = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status in (429, 503):
        doc["headers"] = {"Retry-After": RETRY_AFTER}
    if status == 405:
        doc["headers"] = {"Allow": {"description": "The methods it supports.", "schema": STR}}
    return doc


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(model: type[BaseModel], *, required: bool, description: str = "") -> Schema:
    doc: Schema = {
        "required": required,
        "content": {"application/json": {"schema": _ref(model.__name__)}},
    }
    if description:
        doc["description"] = description
    return doc


def _path_param(name: str, description: str, prefix: str = "") -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        # Ids are base62 (sessions) or prefixed base62 (tn_…, job_…). Pinning the
        # alphabet also keeps generated ids free of `/`, `.` and `%`, which would route
        # to another path rather than exercise this one.
        "schema": {"type": "string", "pattern": f"^{prefix}[A-Za-z0-9_-]{{1,64}}$"},
    }


SESSION_ID = _path_param("session_id", "The session id (`sessionId`).")
TENANT_ID = _path_param("tenant_id", "The tenant id (`tenantId`, `tn_…`).")
JOB_ID = _path_param("job_id", "The job id (`jobId`, `job_…`).")

# -- security ----------------------------------------------------------------------------

SECURITY_SCHEMES: dict[str, Schema] = {
    "tenantKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-tenant-key",
        "description": "The tenant API key (`sk_mcustt_…`). Long-lived and secret: "
        "server-to-server only, never in a browser.",
    },
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's admin token (`MCUSTT_ADMIN_TOKEN`). Unset: the "
        "admin API answers 403 `ADMIN_DISABLED`.",
    },
    "readTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "t",
        "description": "A read-only embed or subscribe token (JWT, ~8 h) for one session.",
    },
    "readTokenQueryAlt": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same read-only token under the name the WebSocket uses.",
    },
    "readTokenBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The same read-only token as `Authorization: Bearer`.",
    },
    "ingestTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A single-use ingest token (JWT, ~12 h), burned on connect.",
    },
    "ingestTokenBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The same ingest token as `Authorization: Bearer` (WHIP clients).",
    },
    "tenantKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "api_key",
        "description": "The tenant API key as `?api_key=` (seed 000's `/v1/...` only).",
    },
    "tenantBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The tenant API key as `Authorization: Bearer` (the webhook and "
        "trigger endpoints, for automation tools).",
    },
    "ownerSecret": {
        "type": "apiKey",
        "in": "header",
        "name": "x-owner-secret",
        "description": "The session's owner secret (from session creation). Usually sent "
        "as the JSON body field `ownerSecret`; this header is the equivalent for clients "
        "that prefer not to send a body.",
    },
}

TENANT: list[Schema] = [{"tenantKey": []}]
ADMIN: list[Schema] = [{"adminBearer": []}]
READ: list[Schema] = [{"readTokenQuery": []}, {"readTokenQueryAlt": []}, {"readTokenBearer": []}]
OWNER: list[Schema] = [{"ownerSecret": []}]

# -- schemas (from mcustt.wire) ---------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    """pydantic's generator without per-field titles (``"title": "Sessionid"`` says
    nothing the property name does not)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _components() -> dict[str, Schema]:
    """Every request body, response document and event frame of :mod:`mcustt.wire`,
    by name; what they share (``BrandInfo``, ``SummaryContent``…) once."""
    out: dict[str, Schema] = {}
    shapes: list[type[Any]] = [*wire.REQUEST_BODIES, *wire.RESPONSES, *wire.EVENTS]
    for shape in shapes:
        schema = TypeAdapter(shape).json_schema(ref_template=REF, schema_generator=_Generator)
        out.update(schema.pop("$defs", {}))
        out[shape.__name__] = schema
    return out


# -- operations --------------------------------------------------------------------------------


#: operations that answer without the database (the rest may answer 503
#: ``STORE_UNAVAILABLE`` while it is unreachable: issue 13)
NO_DATABASE = frozenset({"healthz", "readyz", "metrics", "openapi", "docs", "tryPage"})


def _op(
    op_id: str,
    summary: str,
    *,
    tag: str,
    security: list[Schema],
    ok: dict[int, Schema],
    errors: tuple[int, ...] = (),
    params: list[Schema] | None = None,
    body: Schema | None = None,
    description: str = "",
    links: dict[str, Schema] | None = None,
) -> Schema:
    responses: dict[str, Schema] = {str(status): doc for status, doc in ok.items()}
    if op_id not in NO_DATABASE and 503 not in errors and 503 not in ok:
        errors = (*errors, 503)  # issue 13: STORE_UNAVAILABLE while the database is down
    for status in errors:
        responses[str(status)] = _error(status)
    if links:
        first = next(iter(ok))
        responses[str(first)] = {**responses[str(first)], "links": links}
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _session_links() -> dict[str, Schema]:
    """From a created session to the operations on it (used by stateful testing)."""
    sid = {"session_id": "$response.body#/sessionId"}
    owner = {"ownerSecret": "$response.body#/ownerSecret"}
    return {
        "GetSession": {"operationId": "getSession", "parameters": sid},
        "GetTranscript": {"operationId": "getTranscript", "parameters": sid},
        "GetSummary": {"operationId": "getSummary", "parameters": sid},
        "MintEmbedToken": {"operationId": "mintEmbedToken", "parameters": sid},
        "MintIngestToken": {
            "operationId": "mintIngestToken",
            "parameters": sid,
            "requestBody": owner,
        },
        "EndSession": {"operationId": "endSession", "parameters": sid},
        "ListSpeakers": {"operationId": "listSpeakers", "parameters": sid},
        "SetSpeakerName": {"operationId": "setSpeakerName", "parameters": sid},
    }


def _paths() -> dict[str, Schema]:
    sessions = "Sessions"
    tenant_or_read = TENANT + READ
    tenant_or_owner = TENANT + OWNER
    owner_body = _body(
        wire.OwnerSecretBody,
        required=False,
        description='`{"ownerSecret": "…"}` when not using the tenant key.',
    )
    fmt = {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
    }
    # issue 17: how subtitle cues are cut
    cue_params = [
        {
            "name": "maxLineChars",
            "in": "query",
            "required": False,
            "description": "srt/vtt: characters a cue line holds at most.",
            "schema": {"type": "integer", "minimum": 10, "maximum": 200, "default": 42},
        },
        {
            "name": "maxLines",
            "in": "query",
            "required": False,
            "description": "srt/vtt: lines a cue holds at most.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 5, "default": 2},
        },
    ]
    transcript_ok = {
        "description": "The transcript. `json` is structured (each line with its "
        "`confidence` and `words`: word timings, null when none were recorded); `srt` and "
        "`vtt` are subtitle files cut by word times: cues of at most `maxLines` lines of "
        "at most `maxLineChars` characters, 1 to 7 s each, never overlapping, at most 20 "
        "characters a second where the speech allows, a new cue on a speaker change; "
        "`txt` is one line per final. Lines of participant tracks name their speaker "
        "(current name): `speaker` in json, a voice span `<v Name>` in vtt, a `Name: ` "
        "prefix in srt (on a turn's first cue) and txt.",
        "content": {
            "application/json": {"schema": _ref("Transcript")},
            "application/x-subrip": {"schema": STR},
            "text/vtt": {"schema": STR},
            "text/plain": {"schema": STR},
        },
    }
    tenant_id_links = {
        "GetTenant": {
            "operationId": "getTenant",
            "parameters": {"tenant_id": "$response.body#/tenantId"},
        }
    }
    return {
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness",
                tag="Operations",
                security=[],
                ok={200: _json(_ref("Health"), "The process is up.")},
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness of the database, Redis, recognizer and summarizer",
                tag="Operations",
                security=[],
                ok={
                    200: _json(
                        _ref("Readiness"),
                        "The database, recognizer and summarizer answer (a failed `redis` "
                        "is reported here: the node still captions, fan-out between nodes "
                        "resumes when Redis is back).",
                    ),
                    503: _json(
                        _ref("Readiness"),
                        "The database, recognizer or summarizer failed (`checks` names "
                        "it), or the node is draining "
                        "(status `draining`, after SIGTERM).",
                    ),
                },
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                tag="Operations",
                security=ADMIN,
                ok={
                    200: {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                errors=(401, 403),
            )
        },
        "/api/admin/tenants": {
            "post": _op(
                "createTenant",
                "Create a tenant; its API key is returned once",
                tag="Admin",
                security=ADMIN,
                body=_body(wire.TenantCreate, required=True),
                ok={201: _json(_ref("TenantWithKey"), "Created.")},
                errors=(400, 401, 403),
                links=tenant_id_links,
            ),
            "get": _op(
                "listTenants",
                "List tenants (keys are never shown, only their prefix)",
                tag="Admin",
                security=ADMIN,
                ok={200: _json(_ref("TenantList"), "Every tenant, oldest first.")},
                errors=(401, 403),
            ),
        },
        "/api/admin/tenants/{tenant_id}": {
            "parameters": [TENANT_ID],
            "get": _op(
                "getTenant",
                "Read a tenant",
                tag="Admin",
                security=ADMIN,
                ok={200: _json(_ref("Tenant"), "The tenant.")},
                errors=(401, 403, 404),
            ),
            "patch": _op(
                "updateTenant",
                "Update name, caps, brand, allowed origins or disabled",
                tag="Admin",
                security=ADMIN,
                body=_body(wire.TenantUpdate, required=True),
                ok={200: _json(_ref("Tenant"), "The updated tenant.")},
                errors=(400, 401, 403, 404),
            ),
        },
        "/api/admin/tenants/{tenant_id}/disable": {
            "parameters": [TENANT_ID],
            "post": _op(
                "disableTenant",
                "Disable a tenant: its key, tokens and owner secrets stop working",
                tag="Admin",
                security=ADMIN,
                ok={200: _json(_ref("Tenant"), "The disabled tenant.")},
                errors=(401, 403, 404),
            ),
        },
        "/api/admin/tenants/{tenant_id}/rotate-key": {
            "parameters": [TENANT_ID],
            "post": _op(
                "rotateTenantKey",
                "Replace a tenant's API key (the old one dies at once)",
                tag="Admin",
                security=ADMIN,
                ok={200: _json(_ref("TenantWithKey"), "The tenant and its new key (shown once).")},
                errors=(401, 403, 404),
            ),
        },
        "/api/sessions": {
            "post": _op(
                "createSession",
                "Create a session: ids, tokens, URLs, owner secret, brand",
                tag=sessions,
                security=TENANT,
                body=_body(wire.SessionCreate, required=False),
                ok={201: _json(_ref("SessionCreated"), "Created. `ownerSecret` is shown once.")},
                errors=(400, 401, 429, 503),
                links=_session_links(),
            ),
            "get": _op(
                "listSessions",
                "The tenant's sessions, newest first (at most 500)",
                tag=sessions,
                security=TENANT,
                params=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["live", "ended"]},
                    }
                ],
                ok={200: _json(_ref("SessionList"), "The sessions.")},
                errors=(400, 401),
            ),
        },
        "/api/sessions/{session_id}": {
            "parameters": [SESSION_ID],
            "get": _op(
                "getSession",
                "Session state",
                tag=sessions,
                security=tenant_or_read,
                ok={200: _json(_ref("SessionState"), "The state document.")},
                errors=(401, 403, 404),
            ),
            "delete": _op(
                "endSession",
                "End the session (idempotent); the summary is generated",
                tag=sessions,
                security=tenant_or_owner,
                body=owner_body,
                description="Transcript and summary are retained until the retention period.",
                ok={200: _json(_ref("SessionState"), "The state after ending.")},
                errors=(400, 401, 404),
            ),
        },
        "/api/sessions/{session_id}/embed-token": {
            "parameters": [SESSION_ID],
            "post": _op(
                "mintEmbedToken",
                "Fresh read-only embed and subscribe tokens and URLs",
                tag=sessions,
                security=tenant_or_owner,
                body=owner_body,
                ok={200: _json(_ref("ReadTokens"), "Fresh tokens.")},
                errors=(400, 401, 404),
            ),
        },
        "/api/sessions/{session_id}/ingest-token": {
            "parameters": [SESSION_ID],
            "post": _op(
                "mintIngestToken",
                "Fresh single-use ingest token to reconnect a producer",
                tag=sessions,
                security=tenant_or_owner,
                body=_body(
                    wire.IngestTokenRequest,
                    required=False,
                    description='`{"ownerSecret": "…"}` when not using the tenant key; '
                    '`participant: {"id", "name"}` binds the token to that participant\'s '
                    "track.",
                ),
                description="Replaces any unused ingest token (of the same participant, "
                "for a participant-bound one). The mixed producer's token: owner secret "
                "only (the tenant key is refused, 401 `WRONG_CREDENTIAL`); a "
                "participant-bound token: owner secret or tenant key.",
                ok={200: _json(_ref("IngestToken"), "A fresh ingest token.")},
                errors=(400, 401, 404, 409),
            ),
        },
        "/api/sessions/{session_id}/transcript": {
            "parameters": [SESSION_ID],
            "get": _op(
                "getTranscript",
                "The transcript as json, srt, vtt or txt",
                tag="Transcripts",
                security=tenant_or_read,
                params=[fmt, *cue_params],
                ok={200: transcript_ok},
                errors=(400, 401, 403, 404),
            ),
        },
        "/api/sessions/{session_id}/stream": {
            "parameters": [SESSION_ID],
            "get": _op(
                "streamCaptions",
                "Server-Sent Events caption feed (powers the embed page)",
                tag="Transcripts",
                security=READ,
                params=[
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Replay finals after this seq.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                    },
                    {
                        "name": "lastEventId",
                        "in": "query",
                        "required": False,
                        "description": "The same, for clients that cannot set headers.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                    },
                    WORDS_PARAM,
                ],
                description="Events `ready`, `transcript` (finals carry `id: seq`; a "
                'correction of a final, `"revised": true`, carries none), '
                "`language`, `speaker` (a participant was named), `session-end`, `error`; "
                "a keepalive comment every 15 s.",
                ok={
                    200: {
                        "description": "An event stream until the session ends.",
                        "content": {"text/event-stream": {"schema": STR}},
                    }
                },
                errors=(400, 401, 403, 404, 429),
            ),
        },
        "/api/sessions/{session_id}/summary": {
            "parameters": [SESSION_ID],
            "get": _op(
                "getSummary",
                "The meeting summary",
                tag="Summaries",
                security=tenant_or_read,
                ok={
                    200: _json(_ref("Summary"), "Ready."),
                    202: _json(_ref("SummaryPending"), "Not ready: pending or failed."),
                },
                errors=(401, 403, 404, 503),
            ),
        },
        "/api/sessions/{session_id}/summarize": {
            "parameters": [SESSION_ID],
            "post": _op(
                "summarize",
                "Force (re)generation of the summary, optionally of a seq window",
                tag="Summaries",
                security=tenant_or_owner,
                body=_body(wire.SummarizeBody, required=False),
                ok={202: _json(_ref("SummarizeAccepted"), "Queued; poll the summary.")},
                errors=(400, 401, 404, 429, 503),
            ),
        },
        "/api/transcribe-summary": {
            "post": _op(
                "transcribeSummary",
                "Summarize subtitles or text you already have (no audio)",
                tag="Summaries",
                security=TENANT,
                params=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "A retried request with the same key and body "
                        "returns the same job or result instead of running again.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 255,
                            "pattern": "^[A-Za-z0-9_.:-]+$",
                        },
                    }
                ],
                body=_body(wire.BatchRequest, required=True),
                description="Inputs up to 12,000 characters are answered inline (200); "
                "larger ones become a job (202) to poll at `/api/jobs/:id`.",
                ok={
                    200: _json(_ref("BatchResult"), "The result, inline."),
                    202: _json(_ref("JobAccepted"), "Queued as a job."),
                },
                errors=(400, 401, 422, 429, 502, 503),
            ),
        },
        "/api/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": _op(
                "getJob",
                "Poll an async job",
                tag="Summaries",
                security=TENANT,
                ok={200: _json(_ref("Job"), "The job; `result` once `ready`.")},
                errors=(401, 404),
            ),
        },
        "/api/webrtc": {
            "post": _op(
                "whipPublish",
                "WHIP: send a WebRTC audio track (SDP offer in, SDP answer out)",
                tag="Ingest",
                security=[{"ingestTokenQuery": []}, {"ingestTokenBearer": []}, *TENANT],
                params=[
                    {
                        "name": name,
                        "in": "query",
                        "required": False,
                        "description": "Zero-ceremony (tenant key) only: the new session's " + name,
                        "schema": schema,
                    }
                    for name, schema in (
                        ("sourceLang", {"type": "string", "pattern": wire.LANG_PATTERN}),
                        ("autoDetect", {"type": "boolean"}),
                        ("title", {"type": "string", "maxLength": 500}),
                    )
                ],
                body={
                    "required": True,
                    "content": {"application/sdp": {"schema": STR}},
                    "description": "The SDP offer with every ICE candidate (no trickle).",
                },
                description="Ingest-only: transcripts go to `/ws/subscribe` or the SSE feed "
                "with the `X-Subscribe-Token` of the answer. Opus (or PCMU/PCMA) at any "
                "rate; the server decodes to 16 kHz mono.",
                ok={
                    201: {
                        "description": "The SDP answer.",
                        "headers": {
                            "Location": {
                                "description": "The resource to DELETE to hang up.",
                                "required": True,
                                "schema": STR,
                            },
                            "X-Session-Id": {"required": True, "schema": STR},
                            "X-Subscribe-Token": {"required": True, "schema": STR},
                        },
                        "content": {"application/sdp": {"schema": STR}},
                    }
                },
                errors=(400, 401, 403, 404, 409, 413, 415, 429, 503),
            ),
        },
        "/api/webrtc/{resource_id}": {
            "parameters": [
                {
                    "name": "resource_id",
                    "in": "path",
                    "required": True,
                    "description": "From the `Location` of the answer; it is the capability.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                }
            ],
            "delete": _op(
                "whipHangUp",
                "WHIP: hang up (the session ends once the last final is persisted)",
                tag="Ingest",
                security=[],
                ok={204: {"description": "Hung up."}},
                errors=(404, 503),
            ),
            "patch": _op(
                "whipPatch",
                "WHIP trickle ICE / ICE restart: not supported",
                tag="Ingest",
                security=[],
                ok={},
                errors=(404, 405),
            ),
        },
        "/embed/{session_id}": {
            "parameters": [SESSION_ID],
            "get": _op(
                "embedPage",
                "The embeddable caption page",
                tag="Embed",
                security=[],
                description="The embed token rides in the URL fragment (`#t=…`), so it "
                "never reaches the server. Options: `?theme=light|dark|auto&fontSize=N"
                "&lines=N&title=0`.",
                ok={200: {"description": "HTML.", "content": {"text/html": {"schema": STR}}}},
                errors=(404,),  # an id no session can have (an unknown one gets the page)
            ),
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                tag="Operations",
                security=[],
                ok={200: _json({"type": "object"}, "OpenAPI 3.1.")},
            )
        },
        "/docs": {
            "get": _op(
                "docs",
                "This document as an HTML page",
                tag="Operations",
                security=[],
                ok={200: {"description": "HTML.", "content": {"text/html": {"schema": STR}}}},
            )
        },
        **_try_paths(),
        **_corrections_paths(),
        **_webhooks_paths(),
        **_tts_paths(),
        **_transcribe_paths(),
        **_compat_paths(),
        **_meeting_ai_paths(),
        **_speaker_paths(),
        **_bridge_paths(),
    }


# -- corrections (issue 16)


def _corrections_paths() -> dict[str, Schema]:
    seq = {
        "name": "seq",
        "in": "path",
        "required": True,
        "description": "The line's seq (from a final transcript event or the transcript).",
        "schema": {"type": "integer", "minimum": 0, "maximum": wire.MAX_SEQ},
    }
    return {
        "/api/sessions/{session_id}/lines/{seq}": {
            "parameters": [SESSION_ID, seq],
            "get": _op(
                "getLine",
                "One transcript line: its current text, the original and every correction",
                tag="Transcripts",
                security=TENANT + READ,
                ok={200: _json(_ref("LineDetail"), "The line.")},
                errors=(400, 401, 403, 404),
            ),
            "patch": _op(
                "reviseLine",
                "Correct a final line (stored as a revision; the original is kept)",
                tag="Transcripts",
                security=TENANT + OWNER,
                body=_body(wire.LineRevisionBody, required=True),
                description="Live viewers (`/ws/subscribe`, the SSE feed, the embed page) "
                'get a `transcript` event with the same `seq`, `"revised": true` and the '
                "new text at once, on every node; exports, replays, summaries and questions "
                "use the corrected text from then on; the `line.revised` webhook event is "
                "sent. Works during and after the session. A read token cannot correct "
                "(401 `WRONG_TOKEN_SCOPE`); an unknown seq is 404 `LINE_NOT_FOUND`.",
                ok={200: _json(_ref("LineDetail"), "The line, with this correction last.")},
                errors=(400, 401, 404, 413),
            ),
        },
    }


# -- webhooks and triggers (issue 16)

#: The webhook and trigger endpoints take the tenant key in either header.
TENANT_OR_BEARER: list[Schema] = [{"tenantKey": []}, {"tenantBearer": []}]


def _webhooks_paths() -> dict[str, Schema]:
    tag = "Webhooks"
    webhook_id = _path_param("webhook_id", "The webhook endpoint id (`wh_…`).")
    delivery_id = _path_param("delivery_id", "The delivery id (`dlv_…`).")
    one = (401, 404)
    return {
        "/api/webhooks": {
            "post": _op(
                "createWebhook",
                "Register a webhook endpoint",
                tag=tag,
                security=TENANT_OR_BEARER,
                body=_body(wire.WebhookCreate, required=True),
                description="The URL must be `http(s)` and resolve to public addresses only "
                "(400 `URL_NOT_ALLOWED` otherwise, unless the operator set "
                "`MCUSTT_ALLOW_PRIVATE_URLS`). The answer carries the signing `secret` "
                "(`whsec_…`) once. Deliveries follow Standard Webhooks (`webhook-id`, "
                "`webhook-timestamp`, `webhook-signature`); see `WebhookPayload`.",
                ok={201: _json(_ref("WebhookCreated"), "The endpoint, with its secret.")},
                errors=(400, 401, 409, 413, 415),
                links={
                    name: {
                        "operationId": op_id,
                        "parameters": {"webhook_id": "$response.body#/id"},
                    }
                    for name, op_id in (
                        ("GetWebhook", "getWebhook"),
                        ("ListWebhookDeliveries", "listWebhookDeliveries"),
                        ("RotateWebhookSecret", "rotateWebhookSecret"),
                        ("DeleteWebhook", "deleteWebhook"),
                    )
                },
            ),
            "get": _op(
                "listWebhooks",
                "The tenant's webhook endpoints (no secrets)",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: _json(_ref("WebhookList"), "The endpoints, newest first.")},
                errors=(401,),
            ),
        },
        "/api/webhooks/{webhook_id}": {
            "parameters": [webhook_id],
            "get": _op(
                "getWebhook",
                "One webhook endpoint (no secret)",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: _json(_ref("WebhookEndpoint"), "The endpoint.")},
                errors=one,
            ),
            "delete": _op(
                "deleteWebhook",
                "Delete a webhook endpoint and its delivery log",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={204: {"description": "Deleted."}},
                errors=one,
            ),
        },
        "/api/webhooks/{webhook_id}/rotate-secret": {
            "parameters": [webhook_id],
            "post": _op(
                "rotateWebhookSecret",
                "Replace the signing secret (the old one signs nothing from now on)",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: _json(_ref("WebhookCreated"), "The endpoint, with its new secret.")},
                errors=one,
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries": {
            "parameters": [webhook_id],
            "get": _op(
                "listWebhookDeliveries",
                "The endpoint's delivery log (newest first, at most 100)",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: _json(_ref("WebhookDeliveryList"), "The deliveries.")},
                errors=one,
            ),
        },
        "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": {
            "parameters": [webhook_id, delivery_id],
            "post": _op(
                "redeliverWebhook",
                "Send a delivery again (same event, same `webhook-id`)",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={202: _json(_ref("WebhookDeliveryInfo"), "Queued again.")},
                errors=(401, 404, 409),
            ),
        },
        "/api/triggers/session-ended": {
            "get": _op(
                "triggerSessionEnded",
                "Polling trigger: recently ended sessions",
                tag=tag,
                security=TENANT_OR_BEARER,
                description="Newest first, at most 50; `id` is the `session.ended` "
                "event's id (the deduplication key).",
                ok={
                    200: _json(
                        {"type": "array", "items": _ref("TriggerSessionEnded")},
                        "The latest ended sessions.",
                    )
                },
                errors=(401,),
            ),
        },
        "/api/triggers/summary-ready": {
            "get": _op(
                "triggerSummaryReady",
                "Polling trigger: recently made summaries",
                tag=tag,
                security=TENANT_OR_BEARER,
                description="Newest first, at most 50; `id` is the `summary.ready` "
                "event's id (the deduplication key); `markdownBody` is the summary as "
                "Markdown.",
                ok={
                    200: _json(
                        {"type": "array", "items": _ref("TriggerSummaryReady")},
                        "The latest summaries.",
                    )
                },
                errors=(401,),
            ),
        },
    }


# -- meeting AI: ask and documents (issue 16)


def _meeting_ai_paths() -> dict[str, Schema]:
    doc_id = _path_param("doc_id", "The document id (`docId`, `doc_…`).")
    return {
        "/api/sessions/{session_id}/ask": {
            "parameters": [SESSION_ID],
            "post": _op(
                "ask",
                "Ask a question about a meeting (during or after it)",
                tag="Summaries",
                security=TENANT + OWNER,
                body=_body(wire.AskBody, required=True),
                description="Answered from the transcript so far, with the lines it rests "
                "on as `citations`. With a language model (`MCUSTT_SUMMARIZER=openai`) the "
                "answer is written by it; on the embedded engine it quotes the best-matching "
                'lines (BM25) and says so, with `"extractive": true`; when no line matches, '
                "the answer says so and `citations` is empty. Rate-limited like `summarize`.",
                ok={200: _json(_ref("Answer"), "The answer and its citations.")},
                errors=(400, 401, 404, 413, 429, 502, 503),
            ),
        },
        "/api/sessions/{session_id}/documents": {
            "parameters": [SESSION_ID],
            "post": _op(
                "createDocument",
                "Write a markdown document from the transcript with a custom prompt",
                tag="Summaries",
                security=TENANT + OWNER,
                body=_body(wire.DocumentBody, required=True),
                description="Queued as a durable job. Poll the document, or give "
                "`callbackUrl`: the result (`DocumentCallback`) is POSTed there when done, "
                "signed like webhooks with the `callbackSecret` of this response and "
                "retried. Needs a language model: the embedded engine answers 503 "
                "`SUMMARIZER_UNCONFIGURED`. A `callbackUrl` the address guard refuses is "
                "400 `URL_NOT_ALLOWED`.",
                ok={202: _json(_ref("DocumentAccepted"), "Queued; poll the document.")},
                errors=(400, 401, 404, 413, 429, 503),
            ),
        },
        "/api/sessions/{session_id}/documents/{doc_id}": {
            "parameters": [SESSION_ID, doc_id],
            "get": _op(
                "getDocument",
                "Poll a document",
                tag="Summaries",
                security=TENANT + OWNER,
                ok={200: _json(_ref("MeetingDocument"), "Pending, ready or failed.")},
                errors=(401, 404),
            ),
        },
    }


# -- try-it page (issue 16)


def _try_paths() -> dict[str, Schema]:
    return {
        "/try": {
            "get": _op(
                "tryPage",
                "The interactive try-it page",
                tag="Embed",
                security=[],
                description="Paste a tenant key (kept in the page's memory only), create a "
                "session, send the microphone (WHIP) or a file (`/ws/stt`), watch the "
                "captions, download the transcript, read the summary, ask, fix a line.",
                ok={200: {"description": "HTML.", "content": {"text/html": {"schema": STR}}}},
            )
        },
    }


def _speaker_paths() -> dict[str, Schema]:
    """Speaker names (issue 14)."""
    speaker_id = {
        "name": "speaker_id",
        "in": "path",
        "required": True,
        "description": "The participant id (the one its ingest token was minted for).",
        "schema": {"type": "string", "pattern": wire.PARTICIPANT_ID_PATTERN},
    }
    return {
        "/api/sessions/{session_id}/speakers": {
            "parameters": [SESSION_ID],
            "get": _op(
                "listSpeakers",
                "The session's named speakers",
                tag="Transcripts",
                security=TENANT + READ,
                ok={200: _json(_ref("SpeakerList"), "Every named speaker, by id.")},
                errors=(401, 403, 404),
            ),
        },
        "/api/sessions/{session_id}/speakers/{speaker_id}": {
            "parameters": [SESSION_ID, speaker_id],
            "put": _op(
                "setSpeakerName",
                "Set or change a speaker's display name",
                tag="Transcripts",
                security=TENANT + OWNER,
                body=_body(wire.SpeakerNameBody, required=True),
                description="Live or after the end. Viewers get a `speaker` event and "
                "rename the lines they show; exports, replays and summaries use the "
                "current name.",
                ok={200: _json(_ref("Speaker"), "The speaker as now named.")},
                errors=(400, 401, 404),
            ),
        },
    }


def _bridge_paths() -> dict[str, Schema]:
    """The Jitsi bridge's credentials and meetings (issue 14)."""
    bridges = "Jitsi bridge"
    bridge_id = _path_param("bridge_id", "The bridge credential id (`brg_…`).")
    meeting_id = {
        "name": "meeting_id",
        "in": "path",
        "required": True,
        "description": "The Jitsi meeting id (the bridge's `sessionId`).",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.@:-]{1,200}$"},
    }
    return {
        "/api/bridges": {
            "post": _op(
                "createBridgeKey",
                "Mint a Jitsi bridge credential",
                tag=bridges,
                security=TENANT,
                body=_body(wire.BridgeKeyCreate, required=False),
                description="The credential (`brk_…`) is shown once, with the URL to "
                "configure as Jicofo's `transcription.url-template`. It opens `/transcribe` "
                "for this tenant and nothing else.",
                ok={201: _json(_ref("BridgeKeyWithSecret"), "The credential (shown once).")},
                errors=(400, 401),
            ),
            "get": _op(
                "listBridgeKeys",
                "The tenant's bridge credentials (without secrets)",
                tag=bridges,
                security=TENANT,
                ok={200: _json(_ref("BridgeKeyList"), "Oldest first, revoked ones too.")},
                errors=(401,),
            ),
        },
        "/api/bridges/{bridge_id}": {
            "parameters": [bridge_id],
            "delete": _op(
                "revokeBridgeKey",
                "Revoke a bridge credential",
                tag=bridges,
                security=TENANT,
                description="New connections with it are refused at once; sockets open "
                "with it are closed (1008 `BRIDGE_KEY_REVOKED`) within 10 s. Idempotent.",
                ok={200: _json(_ref("BridgeKeyInfo"), "The credential, revoked.")},
                errors=(401, 404),
            ),
        },
        "/api/jitsi/meetings/{meeting_id}": {
            "parameters": [meeting_id],
            "get": _op(
                "getJitsiMeeting",
                "The session a Jitsi meeting feeds",
                tag=bridges,
                security=TENANT,
                description="With fresh embed and subscribe tokens and URLs.",
                ok={200: _json(_ref("JitsiSessionInfo"), "The meeting's session.")},
                errors=(401, 404),
            ),
        },
    }


# -- text to speech (issue 16)


def _transcribe_paths() -> dict[str, Schema]:
    """File transcription (issue 15)."""
    body = _body(
        wire.TranscribeRequest,
        required=True,
        description="A file as multipart/form-data (part `file`, options as fields), or "
        "JSON with `audio_url`.",
    )
    body["content"]["multipart/form-data"] = {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "The audio."},
                "language_hints": {"type": "string", "maxLength": 2000, "examples": ["ko,en"]},
                "enable_diarization": {"type": "boolean"},
                "title": {"type": "string", "maxLength": 500},
                "reduce_noise": {"type": "boolean"},
                "keywords": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {"type": "string", "minLength": 1, "maxLength": 100},
                },
            },
        }
    }
    return {
        "/api/transcribe": {
            "post": _op(
                "transcribeFile",
                "Transcribe an audio file (upload or audio_url), with speakers",
                tag="Files",
                security=TENANT,
                params=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "A retried request with the same key and body "
                        "returns the same job or result instead of running again.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                body=body,
                description="Any format FFmpeg (PyAV) decodes. Files up to "
                "`MCUSTT_TRANSCRIBE_INLINE_S` of audio (60 s) are answered inline (200); "
                "longer ones, and keyed long ones, become a `transcription` job (202) to poll "
                "at `/api/jobs/:id`. `audio_url`: http(s) only, public addresses only "
                "(unless `MCUSTT_ALLOW_PRIVATE_URLS`), redirects checked at every hop, "
                "capped at `MCUSTT_TRANSCRIBE_MAX_BYTES` and `MCUSTT_TRANSCRIBE_FETCH_TIMEOUT_S`. "
                "The file becomes an ended session (`endReason` `file`).",
                ok={
                    200: _json(_ref("FileTranscript"), "The transcript, inline."),
                    202: _json(_ref("JobAccepted"), "Queued as a job."),
                },
                errors=(400, 401, 413, 415, 422, 429, 503),
            ),
        },
    }


def _tts_paths() -> dict[str, Schema]:
    tag = "Text to speech"
    audio_id = _path_param("audio_id", "The audio id (`id`, `tts_…`).")
    audio = _json(_ref("TtsAudio"), "The stored file and its signed URL.")
    retry = {"Retry-After": RETRY_AFTER}

    def v1_answer(description: str, **extra: Schema) -> Schema:
        return {**_json(_ref("V1TtsResponse"), description), **extra}

    v1 = _op(
        "v1Tts",
        "Seed 000 compatible text to speech: `{session_id, message_id, text}` in, "
        "`{audio_url, error}` out",
        tag=tag,
        security=[{"tenantKeyQuery": []}],
        body=_body(wire.V1TtsBody, required=True),
        description='Every answer is `{"audio_url", "error"}`: 400 `Empty request body`, '
        "`Invalid JSON`, `Missing session_id, message_id, or text`; 401 `Missing "
        "authorization`, `Invalid API key`; 415 for `application/x-protobuf` (JSON only); "
        "502 or 503 `TTS generation failed` when the engine fails or cannot run (seed 000 "
        "says 500; no answer of ours is a 5xx that reads as a server bug).",
        ok={200: v1_answer("`audio_url` set, `error` empty.")},
    )
    v1["responses"] = {
        "200": v1_answer("`audio_url` set, `error` empty."),
        "400": v1_answer("A bad body: `error` says what."),
        "401": v1_answer("`Missing authorization` or `Invalid API key`."),
        "413": _error(413),
        "415": v1_answer("Protobuf is not taken: send JSON."),
        "429": v1_answer("Rate-limited, per tenant.", headers=retry),
        "502": v1_answer("`TTS generation failed`: the engine failed."),
        "503": v1_answer("`TTS generation failed`: the engine cannot run.", headers=retry),
    }
    return {
        "/api/tts": {
            "post": _op(
                "createTts",
                "Speak text: an OGG/Opus file, stored, at a signed URL that expires",
                tag=tag,
                security=TENANT_OR_BEARER,
                body=_body(wire.TtsBody, required=True),
                description="The engine is `MCUSTT_TTS` (espeak-ng embedded, or OpenAI). "
                "`audioUrl` needs no credential until `expiresAt` (`MCUSTT_TTS_URL_TTL_S`, "
                "7 days); `GET /api/tts/:id` gives it again. An unknown voice is 400 "
                "`UNKNOWN_VOICE` naming the voices. Rate-limited per tenant "
                "(`MCUSTT_RATE_TTS`).",
                ok={201: {**audio, "headers": {"Location": {"schema": STR, "required": True}}}},
                errors=(400, 401, 413, 429, 502, 503),
                links={
                    "GetTts": {
                        "operationId": "getTts",
                        "parameters": {"audio_id": "$response.body#/id"},
                    }
                },
            )
        },
        "/api/tts/voices": {
            "get": _op(
                "listTtsVoices",
                "The voices of this server's text-to-speech engine",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: _json(_ref("TtsVoices"), "The engine, its default voice, its voices.")},
                errors=(401, 503),
            )
        },
        "/api/tts/{audio_id}": {
            "parameters": [audio_id],
            "get": _op(
                "getTts",
                "One of the tenant's audio files, with its signed URL",
                tag=tag,
                security=TENANT_OR_BEARER,
                ok={200: audio},
                errors=(401, 404),
            ),
        },
        "/media/tts/{audio_id}.ogg": {
            "parameters": [
                audio_id,
                {
                    "name": "exp",
                    "in": "query",
                    "required": True,
                    "description": "Expiry, unix seconds (part of the signed URL).",
                    "schema": STR,
                },
                {
                    "name": "sig",
                    "in": "query",
                    "required": True,
                    "description": "The URL's signature (HMAC-SHA256, base64url).",
                    "schema": STR,
                },
            ],
            "get": _op(
                "getTtsAudio",
                "The audio file of a signed URL (no credential: the URL is one)",
                tag=tag,
                security=[],
                ok={
                    200: {
                        "description": "OGG/Opus.",
                        "headers": {
                            "Cache-Control": {"schema": STR, "required": True},
                            "ETag": {"schema": STR, "required": True},
                        },
                        "content": {
                            "audio/ogg": {"schema": {"type": "string", "format": "binary"}}
                        },
                    }
                },
                errors=(403, 404, 410),
            ),
        },
        "/v1/tts": {"post": v1},
    }


def _compat_paths() -> dict[str, Schema]:
    """Seed 000's file STT, ``POST /v1/stt`` (issue 15)."""
    retry = {"Retry-After": RETRY_AFTER}

    def v1_error(description: str, **extra: Schema) -> Schema:
        return {**_json(_ref("V1Error"), description), **extra}

    op = _op(
        "v1Stt",
        "Seed 000 compatible file STT: an `audio_url` in, the transcript with speakers out",
        tag="Files",
        security=[{"tenantKeyQuery": []}],
        body=_body(wire.V1SttBody, required=True),
        description="BizCrush's `/v1/stt`, field for field: answered when the file is "
        "transcribed (allow minutes for long files). Adds `session_id` (the file's ended "
        "mcustt session) and `diarization` to the seed's response. Errors are the seed's "
        '`{"success": false, "error", "code"}` with its texts: 401 `Missing '
        "authorization`, `Invalid API key`; 400 `Empty request body`, `Invalid JSON`, "
        "`Missing audio_url`, and a clear message for a refused URL, an unsupported "
        "language or a file that is not audio.",
        ok={200: _json(_ref("V1SttResponse"), "The transcript.")},
    )
    op["responses"] = {
        "200": _json(_ref("V1SttResponse"), "The transcript."),
        "400": v1_error("A bad body, URL, language or file: `error` says what."),
        "401": v1_error("`Missing authorization` or `Invalid API key`."),
        "413": _error(413),
        "429": v1_error("Rate-limited, or the tenant's daily audio cap.", headers=retry),
        "502": v1_error("The recognizer failed."),
        "503": v1_error("The recognizer cannot run now.", headers=retry),
    }
    return {"/v1/stt": {"post": op}}


#: issue 17: a connection asks for the word timings of finals
WORDS_PARAM: Schema = {
    "name": "words",
    "in": "query",
    "required": False,
    "description": "`1`: finals carry their word timings (`words`); a session created "
    "with `words: true` gives them to every connection.",
    "schema": {"type": "string", "enum": ["1", "0", "true", "false", "yes", "no"]},
}

WEBSOCKETS: list[Schema] = [
    {
        "path": "/ws/stt",
        "summary": "Producer socket: PCM16 16 kHz mono in, transcript events out",
        "auth": "`?token=INGEST_TOKEN` (single-use), or an `x-tenant-key` header "
        "(zero-ceremony: the socket creates its session; `?sourceLang=&autoDetect=&title="
        "&reduceNoise=&profanityFilter=off|mask|remove`)",
        "options": "`?language_hints=ko,en` (≤ 3 candidate languages; legacy `language_hint`; "
        "one the recognizer cannot serve is HTTP 400 `UNSUPPORTED_LANGUAGE` at the upgrade); "
        "`?encoding=opus` (opt-in: one raw Opus packet per binary frame, or an OGG/Opus "
        "stream detected by its `OggS` start; `&sample_rate=` any Opus rate or `auto`, "
        "`&channels=1|2`); PCM16 stays the default; `&words=1`: finals on this socket "
        "carry their word timings (`words`)",
        "send": "binary PCM16 frames of 20-100 ms (or Opus with `?encoding=opus`); "
        '`{"type":"ping"}`; `{"type":"stop"}`',
        "receive": "`ready`, `transcript` (interim and final, with seq), `language`, "
        "`pong`, `error`, `session-end`",
        "close": "1000 stop/idle/ended, 1003 bad audio, 1008 daily cap, 1009 too large, "
        "1011 recognizer failure, 1012 the node is draining (after an `error` frame "
        "`NODE_DRAINING`: continue on another node with a fresh ingest token); upgrade "
        "refusals are HTTP 401/404/409/429, and 503 `NODE_DRAINING` / `NODE_OVERLOADED` "
        "(this node cannot take a producer now: try another, `Retry-After`); 1013 after "
        "an `error` frame `STORE_UNAVAILABLE` (the database was unreachable longer than "
        "the node keeps finals: reconnect once it is back; 503 `STORE_UNAVAILABLE` "
        "refuses upgrades meanwhile)",
    },
    {
        "path": "/v1/stt/stream",
        "summary": "Seed 000 compatible live STT: its JSON frames over the session pipeline",
        "auth": "`?api_key=TENANT_KEY&format=json` (no `format=json`: the seed's protobuf "
        "frames, refused with close 1003); `&reduce_noise=true`; `&language_hints=ko,en` "
        "(or repeated)",
        "options": 'first text frame `{"encoding": "pcm16"|"opus", "session_id"?, '
        '"language_hints"?}`; `session_id` names your session: one of your session ids '
        "continues it, any other name maps to one session per tenant and name",
        "send": "binary PCM16 16 kHz mono (640-byte frames), or Opus (raw packets or "
        "OGG/Opus) with `opus`",
        "receive": '`{"connected": true, "mcustt": {sessionId, …}}`, then '
        '`{"chunk": {"id", "session_id", "text", "is_final"}}` (`id` shared by an '
        'utterance\'s interims and its final), `{"error": {"code", "message"}}`',
        "close": "1008 `Missing authorization` / `Invalid API key` (the seed's), 1003 "
        "protobuf or a bad start frame, 1008 an ended or busy session, 1013 rate-limited; "
        "then as `/ws/stt`",
    },
    {
        "path": "/ws/subscribe",
        "summary": "Read-only event socket",
        "auth": "`?token=SUBSCRIBE_OR_EMBED_TOKEN`; `&lastSeq=N` replays finals after N; "
        "`&words=1`: finals carry their word timings (`words`)",
        "send": "nothing (a binary frame closes 1003)",
        "receive": "`transcript`, `language`, `speaker`, `session-end`; a correction of a "
        "final is a "
        '`transcript` with its seq and `"revised": true` (replace that line\'s text)',
        "close": "1000 session ended, 1008 `SLOW_CONSUMER` (reconnect with lastSeq), 1012 "
        "`NODE_DRAINING` (the node is going away: reconnect, to any node, with lastSeq); "
        "upgrade refusal 503 `NODE_DRAINING` while the node drains",
    },
    {
        "path": "/transcribe",
        "summary": "Jitsi videobridge export (the opus-transcriber-proxy protocol)",
        "auth": "`?key=BRIDGE_CREDENTIAL` (`brk_…`, `POST /api/bridges`) or "
        "`Authorization: Bearer`; `?sessionId=MEETING&sendBack=true&sendBackInterim=true"
        "&lang=…`",
        "send": '`{"event":"start","start":{"tag","mediaFormat"}}`, `{"event":"media",'
        '"media":{"tag","chunk","timestamp","payload"}}` (base64 Opus), '
        '`{"event":"ping","id":N}`, `stop`, `session-end`',
        "receive": '`{"type":"transcription-result","is_interim","transcript":[{"text"}],'
        '"participant":{"id","ssrc"?,"name"?},"language","message_id","timestamp"}`, '
        '`{"event":"pong","id":N}`',
        "close": "1000 bridge or session gone, 1003 bad query, 1008 credential refused "
        "(reason names the code), 1009 a frame over 1 MB, 1011 recognizer failure",
    },
]

DESCRIPTION = """\
Self-hostable, multi-tenant live captioning. Producers stream PCM16 16 kHz mono audio
over the `/ws/stt` WebSocket; viewers follow `/ws/subscribe`, the SSE feed or the
`/embed/:id` page; after the meeting the transcript (json, srt, vtt, txt) and a summary
are served here.

Every error is `{"error": {"code": "…", "message": "…"}}` with the HTTP status.

Credentials: the tenant API key (`x-tenant-key`, server-to-server), the operator's admin
bearer token (`/api/admin/*`, `/metrics`), read-only embed/subscribe tokens (`?t=`,
`?token=` or `Authorization: Bearer`), and a session's owner secret (JSON body field
`ownerSecret`, or the `x-owner-secret` header). Where an operation lists several, any
one of them is enough; a tenant key, when sent, is the one used.
"""


def build(public_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict each call)."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "mcustt",
            "version": __version__,
            "summary": "Live captioning for conferencing MCUs and browsers",
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "Sessions", "description": "Create, inspect and end sessions."},
            {"name": "Transcripts", "description": "Transcripts and the SSE feed."},
            {"name": "Summaries", "description": "Meeting summaries and batch summaries."},
            {"name": "Ingest", "description": "WebRTC (WHIP) ingest; WebSockets below."},
            {"name": "Files", "description": "Audio files transcribed, with speakers."},
            {"name": "Admin", "description": "Operator-only tenant provisioning."},
            {"name": "Embed", "description": "The caption iframe."},
            {"name": "Jitsi bridge", "description": "Bridge credentials and meetings."},
            {
                "name": "Text to speech",
                "description": "Speech from text, at signed URLs; seed 000's `/v1/tts`.",
            },
            {
                "name": "Webhooks",
                "description": "Webhook endpoints (Standard Webhooks signatures), their "
                "delivery log, and polling triggers for automation tools.",
            },
            {"name": "Operations", "description": "Health, metrics, this document."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _components(),
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
        "x-websockets": copy.deepcopy(WEBSOCKETS),
    }
    if public_url:
        doc["servers"] = [{"url": public_url.rstrip("/")}]
    return doc


# -- HTTP ----------------------------------------------------------------------------------------


async def openapi_json(request: Request) -> Response:
    return JSONResponse(build(app_state(request).settings.public_url))


#: The HTTP methods an OpenAPI path item may hold, in the order pages list them.
METHODS = ("get", "post", "put", "patch", "delete")
