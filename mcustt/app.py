"""The ASGI application: routes, middleware, error envelope, and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mcustt import api, logs
from mcustt.config import Settings
from mcustt.errors import MCUSTTError, error_response
from mcustt.state import AppState

log = structlog.get_logger(__name__)

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


class RequestContext:
    """Pure ASGI middleware (safe for SSE and WebSockets): a request id bound to every
    log line, an access log without query strings, and request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given if given.isprintable() and given else uuid.uuid4().hex[:16]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope["type"] == "http":
                state: AppState | None = getattr(scope["app"].state, "mcustt", None)
                if state is not None and status:
                    state.metrics.http_requests.labels(scope["method"], str(status)).inc()
                log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope["path"],  # never the query string: it may hold a token
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )


async def mcustt_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MCUSTTError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        message = f"no route for {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", path=request.url.path)
    return JSONResponse(
        {"error": {"code": "INTERNAL", "message": "internal server error"}}, status_code=500
    )


def routes() -> list[Any]:
    from mcustt import docs_page, openapi, summary_api, viewers, webui
    from mcustt.ingest import websocket as ingest_ws
    from mcustt.ingest import whip

    return [
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/docs", docs_page.docs_page, methods=["GET"]),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", api.metrics),
        Route("/api/admin/tenants", api.create_tenant, methods=["POST"]),
        Route("/api/admin/tenants", api.list_tenants, methods=["GET"]),
        Route("/api/admin/tenants/{tenant_id}", api.get_tenant, methods=["GET"]),
        Route("/api/admin/tenants/{tenant_id}", api.update_tenant, methods=["PATCH"]),
        Route("/api/admin/tenants/{tenant_id}/disable", api.disable_tenant, methods=["POST"]),
        Route("/api/admin/tenants/{tenant_id}/rotate-key", api.rotate_tenant_key, methods=["POST"]),
        Route("/api/sessions", api.create_session, methods=["POST"]),
        Route("/api/sessions", api.list_sessions, methods=["GET"]),
        Route("/api/sessions/{session_id}", api.get_session, methods=["GET"]),
        Route("/api/sessions/{session_id}", api.end_session, methods=["DELETE"]),
        Route("/api/sessions/{session_id}/embed-token", api.mint_embed_token, methods=["POST"]),
        Route("/api/sessions/{session_id}/ingest-token", api.mint_ingest_token, methods=["POST"]),
        Route("/api/sessions/{session_id}/transcript", api.transcript, methods=["GET"]),
        Route("/api/sessions/{session_id}/summary", summary_api.get_summary, methods=["GET"]),
        Route("/api/sessions/{session_id}/summarize", summary_api.summarize, methods=["POST"]),
        Route("/api/sessions/{session_id}/stream", viewers.sse_stream, methods=["GET"]),
        Route("/api/transcribe-summary", summary_api.transcribe_summary, methods=["POST"]),
        Route("/api/jobs/{job_id}", summary_api.get_job, methods=["GET"]),
        Route("/api/webrtc", whip.whip_post, methods=["POST"]),
        Route("/api/webrtc/{resource_id}", whip.whip_delete, methods=["DELETE"]),
        Route("/api/webrtc/{resource_id}", whip.whip_patch, methods=["PATCH"]),
        WebSocketRoute("/ws/stt", ingest_ws.ingest_endpoint),
        WebSocketRoute("/ws/subscribe", viewers.subscribe_endpoint),
        Route("/embed/{session_id}", webui.embed_page, methods=["GET"]),
        Mount("/embed-assets", app=webui.assets(), name="embed-assets"),
    ]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state: AppState = app.state.mcustt
    await startup(state)
    try:
        yield
    finally:
        await shutdown(state)


async def startup(state: AppState) -> None:
    from mcustt.fanout import Hub
    from mcustt.ingest.whip import WhipManager
    from mcustt.jobs import JobRunner
    from mcustt.limits import RateLimiter
    from mcustt.pipeline import PipelineConfig, PipelineRegistry
    from mcustt.recognizers import load_recognizer
    from mcustt.retention import Retention
    from mcustt.sessions import SessionService
    from mcustt.store.db import Database, check_schema
    from mcustt.store.meta import jwt_secret
    from mcustt.store.repo import Repo
    from mcustt.summarizers import load_summarizer
    from mcustt.tokens import TokenIssuer
    from mcustt.usage import UsageMeter

    s = state.settings
    state.db = Database(s.database_url)
    await check_schema(state.db, migrate_on_start=s.migrate_on_start)
    state.repo = Repo(state.db)
    state.issuer = TokenIssuer(
        s.jwt_secret or await jwt_secret(state.db),
        ingest_ttl_s=s.ingest_token_ttl_s,
        read_ttl_s=s.read_token_ttl_s,
    )
    state.sessions = SessionService(state.repo, s, state.issuer)
    state.limiter = RateLimiter(s)
    state.hub = Hub(s)
    await state.hub.start()
    state.recognizer = load_recognizer(s)
    await state.recognizer.start()
    state.summarizer = load_summarizer(s)
    state.usage = UsageMeter(state.repo)
    state.spawn(state.usage.run(), "usage")
    state.jobs = JobRunner(
        state.repo,
        state.summarizer,
        lease_s=s.job_lease_s,
        poll_s=s.job_poll_s,
        metrics=state.metrics,
        node_id=state.node_id,
    )
    state.pipelines = PipelineRegistry(
        sessions=state.sessions,
        hub=state.hub,
        recognizer=state.recognizer,
        store=state.repo,
        usage=state.usage,
        metrics=state.metrics,
        config=PipelineConfig(
            vad_aggressiveness=s.vad_aggressiveness,
            max_utterance_ms=int(s.max_utterance_s * 1000),
        ),
        on_ended=state.jobs.enqueue_session_summary,
    )
    state.whip = WhipManager(state)
    state.jobs.start()
    retention = Retention(
        state.repo,
        state.pipelines.end_session,
        retention_days=s.retention_days,
        abandon_after_s=s.ingest_token_ttl_s,
        interval_s=s.retention_interval_s,
    )
    state.spawn(retention.run(), "retention")
    log.info(
        "mcustt started",
        node_id=state.node_id,
        recognizer=s.recognizer,
        summarizer=s.summarizer,
        broker=state.hub.broker.name,
    )


async def shutdown(state: AppState) -> None:
    # 1. Stop taking audio: hang up WebRTC peers and finalize live pipelines so every
    #    final already recognized is persisted.
    if state.whip is not None:
        await state.whip.aclose()
    if state.pipelines is not None:
        await state.pipelines.aclose()
    # 2. Stop background work; a job cut short is re-run after its lease by any node.
    if state.jobs is not None:
        await state.jobs.aclose()
    for task in list(state.tasks):
        task.cancel()
    for task in list(state.tasks):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    # Usage the pipelines counted since the last write (they are all finalized now).
    if state.usage is not None:
        await state.usage.aclose()
    # 3. Disconnect viewers, then engines and connections.
    if state.hub is not None:
        await state.hub.aclose()
    if state.recognizer is not None:
        await state.recognizer.aclose()
    if state.summarizer is not None:
        await state.summarizer.aclose()
    if state.limiter is not None:
        await state.limiter.aclose()
    if state.db is not None:
        await state.db.aclose()
    log.info("mcustt stopped", node_id=state.node_id)


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> Starlette:
    settings = settings or Settings.from_env()
    if configure_logs:
        logs.configure(settings.log_level)
    middleware = [
        Middleware(RequestContext),
        # Browser callers (embed page, WHIP pages on other origins) need CORS; no
        # cookies are used, so "*" grants nothing a credential-less request lacks.
        # The tenant's own origin list is enforced per endpoint (403).
        Middleware(
            CORSMiddleware,
            allow_origins=["*"],
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "Location",
                "X-Session-Id",
                "X-Subscribe-Token",
                "Retry-After",
                "X-Request-Id",
            ],
            max_age=600,
        ),
    ]
    if settings.trusted_proxies:
        # Outermost, so everything after it sees the real client (rate limits key on it).
        # uvicorn's own proxy_headers option stays off (it would trust 127.0.0.1 by
        # default); this trusts exactly MCUSTT_TRUSTED_PROXIES.
        middleware.insert(
            0, Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxy_networks)
        )
    app = Starlette(
        routes=routes(),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            MCUSTTError: mcustt_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
    app.state.mcustt = AppState(settings)
    return app
