"""The OpenAPI 3.1 document of the REST API, built in code, and a readable page of it.

Request bodies come from the pydantic models the handlers validate with
(:mod:`mcustt.schemas`), so the document cannot drift from what the server accepts;
response shapes are written here next to the handlers' JSON (the handlers build plain
dicts, so there is no model to reuse). ``tests/test_openapi.py`` checks the document
with openapi-spec-validator and fuzzes the live server against it with schemathesis.

``GET /openapi.json`` serves the document; ``GET /docs`` renders it as plain HTML on
the server (no JavaScript, no CDN), so it works offline and behind strict CSPs.
WebSockets are outside OpenAPI; they are listed under ``x-websockets`` and on the page.
"""

from __future__ import annotations

import copy
import html
import json
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mcustt import __version__, schemas
from mcustt.subtitles import FORMATS

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"

# -- small builders -------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """An object whose properties are all required unless named in ``optional``."""
    return {
        "type": "object",
        "properties": props,
        "required": [name for name in props if name not in optional],
    }


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "number", "description": "unix seconds"}

#: What each error status means across the API (§15).
ERRORS: dict[int, str] = {
    400: "Malformed body, bad parameter or bad format (`BAD_REQUEST`).",
    401: "Missing or invalid tenant key, token, owner secret or admin token, or a "
    "credential of a kind this operation does not accept.",
    403: "Admin API disabled (`ADMIN_DISABLED`), or a browser `Origin` outside the "
    "tenant's allowed origins (`ORIGIN_FORBIDDEN`).",
    404: "Unknown tenant, session or job (another tenant's session is 404 too).",
    405: "Not supported on this resource (see `Allow`).",
    409: "The session has ended (`SESSION_ENDED`), or another producer is connected "
    "(`ALREADY_CONNECTED`).",
    413: "The body is too large.",
    415: "Wrong `Content-Type`.",
    422: "The `Idempotency-Key` was used before with a different body.",
    429: "Rate-limited, or a tenant cap reached (`SESSION_CAP`). Honour `Retry-After`.",
    502: "The summarizer failed for good (`SUMMARIZER_FAILED`).",
    503: "The summarizer is not configured (`SUMMARIZER_UNCONFIGURED`). Honour `Retry-After`.",
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

# -- response schemas ------------------------------------------------------------------------


def _response_schemas() -> dict[str, Schema]:
    brand = _obj(
        {
            "brandName": STR,
            "accentColor": _nullable(STR),
            "logoUrl": _nullable(STR),
        }
    )
    tenant = _obj(
        {
            "tenantId": STR,
            "name": STR,
            "maxSessions": INT,
            "dailyMinutesCap": INT,
            "brand": _ref("BrandInfo"),
            "allowedOrigins": {"type": "array", "items": STR},
            "disabled": BOOL,
            "keyPrefix": {**STR, "description": "The key's first characters, to tell keys apart."},
            "createdAt": TIME,
            "updatedAt": TIME,
        }
    )
    with_key = {
        "allOf": [
            _ref("Tenant"),
            _obj(
                {
                    "apiKey": {**STR, "description": "The tenant API key. Shown once."},
                    "note": {"const": "shown once"},
                }
            ),
        ]
    }
    read_tokens = _obj(
        {
            "embedToken": STR,
            "embedUrl": {**STR, "description": "`/embed/:id#t=…`, for an iframe."},
            "subscribeToken": STR,
            "subscribeUrl": {**STR, "description": "`ws(s)://…/ws/subscribe?token=…`."},
        }
    )
    ingest = _obj(
        {
            "ingestToken": {**STR, "description": "Single-use ingest token (JWT, ~12 h)."},
            "ingestUrl": {**STR, "description": "`ws(s)://…/ws/stt?token=…`."},
        }
    )
    created = {
        "allOf": [
            _ref("IngestToken"),
            _ref("ReadTokens"),
            _obj(
                {
                    "sessionId": STR,
                    "ownerSecret": {
                        **STR,
                        "description": "Ends the session and mints ingest tokens. Shown once.",
                    },
                    "brand": _ref("BrandInfo"),
                }
            ),
        ]
    }
    status = {"type": "string", "enum": ["live", "ended"]}
    state = _obj(
        {
            "sessionId": STR,
            "status": status,
            "title": _nullable(STR),
            "sourceLang": STR,
            "autoDetect": BOOL,
            "detectedLang": _nullable(STR),
            "detectedLangName": _nullable(STR),
            "lineCount": INT,
            "lastSeq": {**INT, "description": "Seq of the last final line (0: none yet)."},
            "ingestConnected": BOOL,
            "subscribers": INT,
            "summaryStatus": {"type": "string", "enum": ["none", "pending", "ready", "failed"]},
            "audioSeconds": NUM,
            "createdAt": TIME,
            "endedAt": _nullable(TIME),
            "endReason": _nullable(STR),
            "brand": _nullable(_ref("BrandInfo")),
        }
    )
    listed = _obj(
        {
            "sessions": {
                "type": "array",
                "items": _obj(
                    {
                        "sessionId": STR,
                        "title": _nullable(STR),
                        "status": status,
                        "createdAt": TIME,
                        "endedAt": _nullable(TIME),
                        "lastSeq": INT,
                    }
                ),
            }
        }
    )
    line = _obj(
        {
            "seq": INT,
            "lang": STR,
            "text": STR,
            "ts": {**INT, "description": "Wall clock of the final, unix milliseconds."},
            "startMs": {**INT, "description": "Start in the session's audio, ms."},
            "endMs": {**INT, "description": "End in the session's audio, ms."},
        }
    )
    transcript = _obj(
        {"sessionId": STR, "lineCount": INT, "lines": {"type": "array", "items": line}}
    )
    content = _obj(
        {
            "tldr": STR,
            "decisions": {"type": "array", "items": STR},
            "actionItems": {
                "type": "array",
                "items": _obj({"owner": _nullable(STR), "task": STR}),
            },
            "qa": {"type": "array", "items": STR},
        }
    )
    summary = _obj(
        {
            "status": {"const": "ready"},
            "model": _nullable(STR),
            "lang": _nullable(STR),
            "content": _ref("SummaryContent"),
            "fromSeq": _nullable(INT),
            "toSeq": _nullable(INT),
            "updatedAt": TIME,
        }
    )
    summary_pending = _obj(
        {"status": {"type": "string", "enum": ["pending", "failed"]}, "error": STR},
        optional=("error",),
    )
    summarize_accepted = _obj(
        {"status": {"const": "pending"}, "jobId": STR, "poll": STR},
    )
    job_status = {"type": "string", "enum": ["queued", "running", "ready", "failed"]}
    batch_result = _obj(
        {
            "language": STR,
            "transcript": {**STR, "description": "With `want` including `transcript`."},
            "summary": _ref("SummaryContent"),
            "model": STR,
        },
        optional=("transcript", "summary", "model"),
    )
    job_accepted = _obj({"jobId": STR, "status": job_status, "poll": STR})
    job = _obj(
        {
            "jobId": STR,
            "kind": STR,
            "status": job_status,
            "result": _nullable({"type": "object"}),
            "error": _nullable(STR),
            "attempts": INT,
            "createdAt": TIME,
            "updatedAt": TIME,
        }
    )
    error = _obj(
        {
            "error": _obj(
                {
                    "code": {**STR, "description": "Machine-readable, e.g. `SESSION_NOT_FOUND`."},
                    "message": {**STR, "description": "Human-readable, says what to fix."},
                }
            )
        }
    )
    return {
        "Error": error,
        "BrandInfo": brand,
        "Tenant": tenant,
        "TenantWithKey": with_key,
        "TenantList": _obj({"tenants": {"type": "array", "items": _ref("Tenant")}}),
        "ReadTokens": read_tokens,
        "IngestToken": ingest,
        "SessionCreated": created,
        "SessionState": state,
        "SessionList": listed,
        "Transcript": transcript,
        "SummaryContent": content,
        "Summary": summary,
        "SummaryPending": summary_pending,
        "SummarizeAccepted": summarize_accepted,
        "BatchResult": batch_result,
        "JobAccepted": job_accepted,
        "Job": job,
        "Health": _obj({"status": {"const": "ok"}}),
        "Readiness": _obj(
            {
                "status": {"type": "string", "enum": ["ready", "unready"]},
                "checks": {
                    "type": "object",
                    "additionalProperties": STR,
                    "description": "`ok` or `failed: reason`, per dependency.",
                },
            }
        ),
    }


# -- request schemas (from the pydantic models) -----------------------------------------------


def _branch(schema: Schema) -> Schema:
    """The non-null branch of an ``X | None`` property (or the property itself)."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return option  # type: ignore[no-any-return]
    return schema


def _request_schemas() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    models: list[type[BaseModel]] = [
        schemas.TenantCreate,
        schemas.TenantUpdate,
        schemas.SessionCreate,
        schemas.OwnerSecretBody,
        schemas.SummarizeBody,
        schemas.BatchRequest,
    ]
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    # The models' field validators are code, not JSON Schema; state the same rules
    # here so clients (and generated test data) see them.
    lang = {"pattern": schemas._LANG.pattern, "examples": ["en-US"]}
    _branch(out["SessionCreate"]["properties"]["sourceLang"]).update(lang)
    _branch(out["BatchRequest"]["properties"]["sourceLang"]).update(lang)
    _branch(out["Brand"]["properties"]["accentColor"]).update(
        {"pattern": schemas._COLOR.pattern, "examples": ["#0b5"]}
    )
    _branch(out["Brand"]["properties"]["logoUrl"]).update({"pattern": "^https?://"})
    origin = {"type": "string", "pattern": r"^(\*|https?://[^/\s]+)$"}
    for name in ("TenantCreate", "TenantUpdate"):
        _branch(out[name]["properties"]["allowedOrigins"])["items"] = origin
    want = out["BatchRequest"]["properties"]["want"]
    want["items"] = {"type": "string", "enum": ["summary", "transcript"]}
    want["minItems"] = 1
    batch = out["BatchRequest"]
    batch["description"] = "Either `subtitles`, or `text` (one subtitle per line)."
    # Neither (or only blank text) is 400 "send subtitles[] or text".
    batch["anyOf"] = [
        {"required": ["subtitles"], "properties": {"subtitles": {"type": "array", "minItems": 1}}},
        {"required": ["text"], "properties": {"text": {"type": "string", "pattern": r"\S"}}},
    ]
    out["OwnerSecretBody"]["description"] = (
        "`ownerSecret` proves ownership when no `x-tenant-key` is sent."
    )
    return out


# -- operations --------------------------------------------------------------------------------


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
    }


def _paths() -> dict[str, Schema]:
    sessions = "Sessions"
    tenant_or_read = TENANT + READ
    tenant_or_owner = TENANT + OWNER
    owner_body = _body(
        schemas.OwnerSecretBody,
        required=False,
        description='`{"ownerSecret": "…"}` when not using the tenant key.',
    )
    fmt = {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
    }
    transcript_ok = {
        "description": "The transcript. `json` is structured; `srt` and `vtt` are subtitle "
        "files with cue times from the audio offsets; `txt` is one line per final.",
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
                    200: _json(_ref("Readiness"), "Every dependency answers."),
                    503: _json(_ref("Readiness"), "A dependency failed; `checks` names it."),
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
                body=_body(schemas.TenantCreate, required=True),
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
                body=_body(schemas.TenantUpdate, required=True),
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
                body=_body(schemas.SessionCreate, required=False),
                ok={201: _json(_ref("SessionCreated"), "Created. `ownerSecret` is shown once.")},
                errors=(400, 401, 429),
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
                security=OWNER,
                body=owner_body,
                description="Replaces any unused ingest token. Owner secret only: the "
                "tenant key is refused (401 `WRONG_CREDENTIAL`).",
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
                params=[fmt],
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
                ],
                description="Events `ready`, `transcript` (finals carry `id: seq`), "
                "`language`, `session-end`, `error`; a keepalive comment every 15 s.",
                ok={
                    200: {
                        "description": "An event stream until the session ends.",
                        "content": {"text/event-stream": {"schema": STR}},
                    }
                },
                errors=(400, 401, 403, 404),
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
                errors=(401, 404, 503),
            ),
        },
        "/api/sessions/{session_id}/summarize": {
            "parameters": [SESSION_ID],
            "post": _op(
                "summarize",
                "Force (re)generation of the summary, optionally of a seq window",
                tag="Summaries",
                security=tenant_or_owner,
                body=_body(schemas.SummarizeBody, required=False),
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
                body=_body(schemas.BatchRequest, required=True),
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
                        ("sourceLang", {"type": "string", "pattern": schemas._LANG.pattern}),
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
                errors=(405,),
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
    }


WEBSOCKETS: list[Schema] = [
    {
        "path": "/ws/stt",
        "summary": "Producer socket: PCM16 16 kHz mono in, transcript events out",
        "auth": "`?token=INGEST_TOKEN` (single-use), or an `x-tenant-key` header "
        "(zero-ceremony: the socket creates its session; `?sourceLang=&autoDetect=&title=`)",
        "send": 'binary PCM16 frames of 20-100 ms; `{"type":"ping"}`; `{"type":"stop"}`',
        "receive": "`ready`, `transcript` (interim and final, with seq), `language`, "
        "`pong`, `error`, `session-end`",
        "close": "1000 stop/idle/ended, 1003 bad audio, 1008 daily cap, 1009 too large, "
        "1011 recognizer failure; upgrade refusals are HTTP 401/404/409/429",
    },
    {
        "path": "/ws/subscribe",
        "summary": "Read-only event socket",
        "auth": "`?token=SUBSCRIBE_OR_EMBED_TOKEN`; `&lastSeq=N` replays finals after N",
        "send": "nothing (a binary frame closes 1003)",
        "receive": "`transcript`, `language`, `session-end`",
        "close": "1000 session ended, 1008 `SLOW_CONSUMER` (reconnect with lastSeq)",
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
            {"name": "Admin", "description": "Operator-only tenant provisioning."},
            {"name": "Embed", "description": "The caption iframe."},
            {"name": "Operations", "description": "Health, metrics, this document."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": {**_request_schemas(), **_response_schemas()},
            "securitySchemes": copy.deepcopy(SECURITY_SCHEMES),
        },
        "x-websockets": copy.deepcopy(WEBSOCKETS),
    }
    if public_url:
        doc["servers"] = [{"url": public_url.rstrip("/")}]
    return doc


# -- HTTP ----------------------------------------------------------------------------------------


def _public_url(request: Request) -> str:
    from mcustt.api import app_state

    return app_state(request).settings.public_url


async def openapi_json(request: Request) -> Response:
    return JSONResponse(build(_public_url(request)))


async def docs_page(request: Request) -> Response:
    return HTMLResponse(render_html(build(_public_url(request))))


# -- the HTML page ---------------------------------------------------------------------------------

METHODS = ("get", "post", "put", "patch", "delete")

CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2rem auto;padding:0 1rem;
color:#1b1f24}
h1{margin-bottom:0}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}
code,pre{font:13px ui-monospace,monospace;background:#f4f5f7;border-radius:4px}
code{padding:0 .25rem}pre{padding:.6rem;overflow:auto;max-height:24rem}
section.op{border:1px solid #ddd;border-radius:8px;padding:.4rem 1rem;margin:1rem 0}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.delete{color:#c22}
table{border-collapse:collapse;margin:.5rem 0}td,th{text-align:left;padding:.15rem .6rem;
border-bottom:1px solid #eee;vertical-align:top}
details summary{cursor:pointer}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _md(text: str) -> str:
    """Escape, then render the only markdown the document uses: `code`."""
    parts = _e(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _schema_name(schema: Schema) -> str:
    """A link to a named schema, or the inline schema's type."""
    ref = schema.get("$ref")
    if not ref:
        return f"<code>{_e(schema.get('type', 'object'))}</code>"
    name = _e(ref.rsplit("/", 1)[-1])
    return f'<a href="#schema-{name}">{name}</a>'


BEARER_LABELS = {
    "adminBearer": "admin bearer",
    "readTokenBearer": "read token as bearer",
    "ingestTokenBearer": "ingest token as bearer",
}


def _security_text(security: list[Schema], schemes: dict[str, Schema]) -> str:
    if not security:
        return "none"
    names = []
    for requirement in security:
        for name in requirement:
            scheme = schemes[name]
            if scheme["type"] == "apiKey":
                where = {"header": "header", "query": "query"}[scheme["in"]]
                names.append(f"<code>{_e(scheme['name'])}</code> {where}")
            else:
                names.append(BEARER_LABELS.get(name, "bearer"))
    return " or ".join(names)


def _operation_html(path: str, method: str, op: Schema, doc: dict[str, Any]) -> str:
    schemes = doc["components"]["securitySchemes"]
    rows = [
        f'<section class="op" id="{_e(op["operationId"])}">',
        f'<h3><span class="m {method}">{method}</span> <code>{_e(path)}</code></h3>',
        f"<p>{_md(op['summary'])}</p>",
    ]
    if op.get("description"):
        rows.append(f"<p>{_md(op['description'])}</p>")
    rows.append(f"<p><b>Auth:</b> {_security_text(op['security'], schemes)}</p>")
    params = doc["paths"][path].get("parameters", []) + op.get("parameters", [])
    if params:
        rows.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
        for p in params:
            rows.append(
                f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                f"<td><code>{_e(json.dumps(p['schema']))}</code></td></tr>"
            )
        rows.append("</table>")
    body = op.get("requestBody")
    if body:
        need = "required" if body.get("required") else "optional"
        for media, spec in body["content"].items():
            rows.append(
                f"<p><b>Body</b> ({need}, <code>{_e(media)}</code>): "
                f"{_schema_name(spec['schema'])}</p>"
            )
    rows.append("<table><tr><th>status</th><th>meaning</th><th>content</th></tr>")
    for status, resp in op["responses"].items():
        content = ", ".join(
            f"<code>{_e(media)}</code> {_schema_name(spec['schema'])}"
            for media, spec in resp.get("content", {}).items()
        )
        rows.append(
            f"<tr><td>{_e(status)}</td><td>{_md(resp['description'])}</td><td>{content}</td></tr>"
        )
    rows.append("</table></section>")
    return "\n".join(rows)


def render_html(doc: dict[str, Any]) -> str:
    """The whole document as one self-contained page."""
    info = doc["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{_e(info['title'])} API</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(info['title'])} API <small>{_e(info['version'])}</small></h1>",
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1)</p>',
    ]
    out += [f"<p>{_md(p)}</p>" for p in info["description"].split("\n\n")]
    out.append("<h2>Contents</h2><ul>")
    ops_by_tag: dict[str, list[tuple[str, str, Schema]]] = {t["name"]: [] for t in doc["tags"]}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                ops_by_tag[item[method]["tags"][0]].append((path, method, item[method]))
    for tag in doc["tags"]:
        out.append(f'<li><a href="#tag-{_e(tag["name"])}">{_e(tag["name"])}</a><ul>')
        for path, method, op in ops_by_tag[tag["name"]]:
            out.append(
                f'<li><a href="#{_e(op["operationId"])}">{method.upper()} {_e(path)}</a></li>'
            )
        out.append("</ul></li>")
    out.append('<li><a href="#websockets">WebSockets</a></li>')
    out.append('<li><a href="#schemas">Schemas</a></li></ul>')
    out.append("<h2>Authentication</h2><table><tr><th>scheme</th><th>how</th></tr>")
    for name, scheme in doc["components"]["securitySchemes"].items():
        how = (
            f"<code>{_e(scheme['name'])}</code> in {scheme['in']}"
            if scheme["type"] == "apiKey"
            else "<code>Authorization: Bearer …</code>"
        )
        out.append(f"<tr><td>{_e(name)}</td><td>{how}<br>{_md(scheme['description'])}</td></tr>")
    out.append("</table>")
    for tag in doc["tags"]:
        out.append(f'<h2 id="tag-{_e(tag["name"])}">{_e(tag["name"])}</h2>')
        out.append(f"<p>{_md(tag['description'])}</p>")
        out += [_operation_html(path, m, op, doc) for path, m, op in ops_by_tag[tag["name"]]]
    out.append('<h2 id="websockets">WebSockets</h2>')
    for ws in doc.get("x-websockets", []):
        out.append(
            f'<section class="op"><h3><span class="m">ws</span> <code>{_e(ws["path"])}'
            f"</code></h3><p>{_md(ws['summary'])}</p><table>"
        )
        for key in ("auth", "send", "receive", "close"):
            out.append(f"<tr><th>{key}</th><td>{_md(ws[key])}</td></tr>")
        out.append("</table></section>")
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in doc["components"]["schemas"].items():
        out.append(
            f'<details id="schema-{_e(name)}"><summary><code>{_e(name)}</code></summary>'
            f"<pre>{_e(json.dumps(schema, indent=2))}</pre></details>"
        )
    out.append("</body></html>")
    return "\n".join(out)
