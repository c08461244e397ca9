"""REST endpoints (§9-§14). Thin: parse, authorize, call a service, shape the answer."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import structlog
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mcustt import sessions, speakers, subtitles, tenants, wire
from mcustt.bodies import parse_body, read_json, validate
from mcustt.errors import BadRequest, Forbidden, MCUSTTError, Unauthorized
from mcustt.sessions import Credentials
from mcustt.state import app_state
from mcustt.store.models import Session, Tenant
from mcustt.wire import ErrorCode, OwnerSecretBody, SessionCreate, TenantCreate, TenantUpdate

log = structlog.get_logger(__name__)


def bind(**ids: str) -> None:
    structlog.contextvars.bind_contextvars(**ids)


# -- credentials -------------------------------------------------------------------


def require_admin(request: Request) -> None:
    token = app_state(request).settings.admin_token
    if not token:
        raise Forbidden(
            "the admin API is disabled: set MCUSTT_ADMIN_TOKEN to enable it",
            code=ErrorCode.ADMIN_DISABLED,
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("missing admin bearer token", code=ErrorCode.MISSING_ADMIN_TOKEN)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("invalid admin token", code=ErrorCode.INVALID_ADMIN_TOKEN)


async def require_tenant(conn: HTTPConnection) -> Tenant:
    tenant = await tenants.authenticate(app_state(conn).db, conn.headers.get("x-tenant-key"))
    bind(tenant_id=tenant.id)
    return tenant


async def tenant_of(request: HTTPConnection) -> Tenant:
    """The tenant of ``X-Tenant-Key``, or of ``Authorization: Bearer <tenant key>`` (what
    automation tools send): the endpoints that no read token can use (webhooks, TTS)."""
    if "x-tenant-key" not in request.headers:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            tenant = await tenants.authenticate(app_state(request).db, key.strip())
            bind(tenant_id=tenant.id)
            return tenant
    return await require_tenant(request)


def read_token(conn: HTTPConnection) -> str | None:
    """A read token from ``?t=``, ``?token=`` or ``Authorization: Bearer``."""
    token = conn.query_params.get("t") or conn.query_params.get("token")
    if token:
        return token
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return None


async def session_access(
    request: Request,
    session_id: str,
    *,
    tenant: bool = False,
    read: bool = False,
    owner: bool = False,
    body: dict[str, Any] | None = None,
) -> Credentials:
    """Authorize a call on one session with whichever credential the caller brought.

    A credential of a kind the endpoint does not accept is 401, like a wrong one.
    """
    bind(session_id=session_id)
    creds = await _session_credentials(
        request, session_id, tenant=tenant, read=read, owner=owner, body=body
    )
    # Whichever credential was used, the session's lines name its tenant too.
    bind(tenant_id=creds.session.tenant_id)
    return creds


async def _session_credentials(
    request: Request,
    session_id: str,
    *,
    tenant: bool,
    read: bool,
    owner: bool,
    body: dict[str, Any] | None,
) -> Credentials:
    state = app_state(request)
    if "x-tenant-key" in request.headers:
        if not tenant:
            raise Unauthorized("a tenant key cannot be used here", code=ErrorCode.WRONG_CREDENTIAL)
        t = await require_tenant(request)
        return Credentials("tenant", await state.sessions.get_for_tenant(t, session_id))
    secret = None
    if owner:
        if body is None:
            body = await read_json(request)
        secret = validate(OwnerSecretBody, body).ownerSecret or request.headers.get(
            "x-owner-secret"
        )
    if secret:
        return Credentials("owner", await state.sessions.get_with_owner_secret(session_id, secret))
    token = read_token(request)
    if token:
        if not read:
            raise Unauthorized(
                "a read-only token cannot do this; use the tenant key or owner secret",
                code=ErrorCode.WRONG_TOKEN_SCOPE,
            )
        session = await state.sessions.get_with_read_token(session_id, token)
        return Credentials("read", session)
    accepted = [
        name
        for name, ok in (
            ("x-tenant-key", tenant),
            ("a read token", read),
            ("ownerSecret", owner),
        )
        if ok
    ]
    raise Unauthorized(
        "missing credentials: send " + " or ".join(accepted), code=ErrorCode.UNAUTHORIZED
    )


# -- health (§14) --------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    ok: wire.Health = {"status": "ok"}
    return JSONResponse(ok)


async def readyz(request: Request) -> Response:
    state = app_state(request)
    checks: dict[str, str] = {}

    async def probe(name: str, coro: Any) -> None:
        try:
            await coro
            checks[name] = "ok"
        except MCUSTTError as exc:  # written for operators ("set OPENAI_API_KEY")
            checks[name] = f"failed: {exc.message}"
        except Exception as exc:  # readiness reports any failure, whatever its type
            # A driver's own text may carry a URL or a statement: to the log, not to
            # whoever can reach /readyz.
            log.warning("readiness check failed", check=name, error=repr(exc))
            checks[name] = f"failed: {type(exc).__name__} (details in the server log)"

    await probe("database", state.db.ping())
    if state.settings.redis_url:
        await probe("redis", state.hub.broker.check())
    await probe("recognizer", state.recognizer.check())
    await probe("summarizer", state.summarizer.check())
    # Redis is reported, not required (§14 names the database, STT and summarizer):
    # every node shares it, so a 503 for it would take every node out of the balancer
    # at once, while a node without it still captions (its fan-out waits in the outbox).
    ready = all(v == "ok" for k, v in checks.items() if k != "redis")
    doc: wire.Readiness = {"status": "ready" if ready else "unready", "checks": checks}
    if state.gate.draining:
        # issue 13: SIGTERM: balancers stop sending new work here while it drains.
        doc["status"], ready = "draining", False
    return JSONResponse(doc, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    require_admin(request)
    state = app_state(request)
    state.metrics.viewers.set(state.hub.total_viewers)
    state.metrics.tasks.set(len(asyncio.all_tasks()))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- admin: tenants (§13) ---------------------------------------------------------------


async def create_tenant(request: Request) -> Response:
    require_admin(request)
    state = app_state(request)
    body = await parse_body(request, TenantCreate, optional=False)
    tenant, key = await tenants.create(state.db, state.settings, body)
    log.info("tenant created", tenant_id=tenant.id)
    return JSONResponse(tenants.tenant_with_key(tenant, key), status_code=201)


async def list_tenants(request: Request) -> Response:
    require_admin(request)
    rows = await tenants.list_all(app_state(request).db)
    listed: wire.TenantList = {"tenants": [tenants.tenant_json(t) for t in rows]}
    return JSONResponse(listed)


async def get_tenant(request: Request) -> Response:
    require_admin(request)
    t = await tenants.get(app_state(request).db, request.path_params["tenant_id"])
    return JSONResponse(tenants.tenant_json(t))


async def update_tenant(request: Request) -> Response:
    require_admin(request)
    body = await parse_body(request, TenantUpdate, optional=False)
    t = await tenants.update(app_state(request).db, request.path_params["tenant_id"], body)
    return JSONResponse(tenants.tenant_json(t))


async def disable_tenant(request: Request) -> Response:
    require_admin(request)
    t = await tenants.update(
        app_state(request).db, request.path_params["tenant_id"], TenantUpdate(disabled=True)
    )
    return JSONResponse(tenants.tenant_json(t))


async def rotate_tenant_key(request: Request) -> Response:
    require_admin(request)
    t, key = await tenants.rotate_key(app_state(request).db, request.path_params["tenant_id"])
    log.info("tenant key rotated", tenant_id=t.id)
    return JSONResponse(tenants.tenant_with_key(t, key))


# -- sessions (§9) ------------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    state = app_state(request)
    state.gate.admit_session()  # issue 13: 503 NODE_DRAINING while this node drains
    await state.limiter.hit("create_session", state.client_ip(request))
    tenant = await require_tenant(request)
    body = await parse_body(request, SessionCreate)
    hints = body.hints()
    state.recognizer.check_languages(hints)  # 400 UNSUPPORTED_LANGUAGE, never wrong captions
    session, doc = await state.sessions.create(
        tenant,
        title=body.title,
        source_lang=body.sourceLang,
        auto_detect=body.autoDetect,
        language_hints=hints,
        keywords=body.keywords,
        reduce_noise=body.reduceNoise,
        profanity_filter=body.profanityFilter,
        words=body.words,
    )
    state.metrics.sessions_created.inc()
    bind(session_id=session.id)
    log.info("session created")
    return JSONResponse(doc, status_code=201)


async def list_sessions(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    status = request.query_params.get("status")
    if status not in (None, "live", "ended"):
        raise BadRequest("status must be live or ended")
    rows = await state.sessions.list_for_tenant(tenant, status=status)
    listed: wire.SessionList = {"sessions": [sessions.list_item(s) for s in rows]}
    return JSONResponse(listed)


async def get_session(request: Request) -> Response:
    state = app_state(request)
    sid = request.path_params["session_id"]
    creds = await session_access(request, sid, tenant=True, read=True)
    await check_browser_origin(request, creds.session)
    doc = await state.sessions.state(creds.session, subscribers=state.hub.count(sid))
    return JSONResponse(doc)


async def mint_embed_token(request: Request) -> Response:
    state = app_state(request)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True
    )
    return JSONResponse(state.sessions.read_tokens(creds.session))


async def mint_ingest_token(request: Request) -> Response:
    state = app_state(request)
    payload = await read_json(request)
    body = validate(wire.IngestTokenRequest, payload)
    # The mixed producer's token stays owner-secret only (the contract); the tenant key
    # may mint participant-bound ones too (an MCU integration holds only the key).
    creds = await session_access(
        request,
        request.path_params["session_id"],
        tenant=body.participant is not None,
        owner=True,
        body=payload,
    )
    participant = body.participant
    if participant is not None and participant.name is not None:
        # The name as every caption will show it (one line, no control characters).
        participant = wire.Participant(
            id=participant.id, name=speakers.display_name(participant.name)
        )
    return JSONResponse(
        await state.sessions.rotate_ingest_token(creds.session, participant=participant)
    )


async def end_session(request: Request) -> Response:
    state = app_state(request)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True
    )
    await state.pipelines.end_session(creds.session, reason="deleted")
    doc = await state.sessions.state(creds.session, subscribers=state.hub.count(creds.session.id))
    return JSONResponse(doc)


async def transcript(request: Request) -> Response:
    state = app_state(request)
    sid = request.path_params["session_id"]
    fmt = request.query_params.get("format", "json")
    if fmt not in subtitles.FORMATS:
        raise BadRequest(f"format must be one of {', '.join(subtitles.FORMATS)}")
    rules = subtitles.CueRules.from_query(request.query_params)  # issue 17: 400 if bad
    creds = await session_access(request, sid, tenant=True, read=True)
    await check_browser_origin(request, creds.session)
    lines = await state.repo.lines(sid)
    # Lines of participant tracks are shown under their speaker's current name.
    names = await state.repo.speaker_names(sid) if any(line.speaker for line in lines) else {}
    if fmt == "json":
        return JSONResponse(subtitles.to_json(sid, lines, names))
    if fmt == "txt":
        body = subtitles.to_txt(lines, names)
    else:
        # Cutting cues is CPU work in proportion to the transcript: off the event loop.
        export = subtitles.to_srt if fmt == "srt" else subtitles.to_vtt
        body = await asyncio.to_thread(export, lines, names, rules)
    return PlainTextResponse(
        body,
        media_type=subtitles.FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{sid}.{fmt}"'},
    )


async def check_browser_origin(conn: HTTPConnection, session: Session) -> None:
    """Apply the tenant's allowed origins to a browser request (one with Origin)."""
    origin = conn.headers.get("origin")
    if not origin:
        return
    tenant = await tenants.find(app_state(conn).db, session.tenant_id)
    if tenant is not None:
        tenants.check_origin(tenant, origin, own=app_state(conn).settings.public_url)
