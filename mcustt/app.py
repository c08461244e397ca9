"""The ASGI application: routes, middleware, error envelope, and the lifespan."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mcustt import (
    api,
    bridges_api,
    compat_api,  # the compatible /v1/stt (issue 15)
    corrections_api,  # corrections (issue 16)
    docs_page,
    logs,
    meeting_ai_api,  # ask and documents (issue 16)
    openapi,
    speakers_api,
    summary_api,
    transcribe_api,  # file transcription (issue 15)
    tts_api,  # text to speech (issue 16)
    viewers,
    webhooks_api,  # webhooks and triggers (issue 16)
    webui,
)
from mcustt.config import Settings
from mcustt.edge import Edge
from mcustt.errors import MCUSTTError, error_response
from mcustt.ingest import compat_stream, jitsi, whip
from mcustt.ingest import websocket as ingest_ws
from mcustt.ingest.whip import WhipManager
from mcustt.outages import StoreGuard
from mcustt.state import AppState, open_state
from mcustt.wire import HTTP_STATUS_CODES, ErrorCode

log = structlog.get_logger(__name__)


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
    code = HTTP_STATUS_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
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
        {"error": {"code": ErrorCode.INTERNAL, "message": "internal server error"}},
        status_code=500,
    )


def routes() -> list[BaseRoute]:
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
        Route("/api/sessions/{session_id}/ask", meeting_ai_api.ask, methods=["POST"]),
        Route(
            "/api/sessions/{session_id}/documents",
            meeting_ai_api.create_document,
            methods=["POST"],
        ),
        Route(
            "/api/sessions/{session_id}/documents/{doc_id}",
            meeting_ai_api.get_document,
            methods=["GET"],
        ),
        Route("/api/sessions/{session_id}/lines/{seq}", corrections_api.get_line, methods=["GET"]),
        Route(
            "/api/sessions/{session_id}/lines/{seq}", corrections_api.revise_line, methods=["PATCH"]
        ),
        Route("/api/sessions/{session_id}/stream", viewers.sse_stream, methods=["GET"]),
        Route("/api/transcribe", transcribe_api.transcribe, methods=["POST"]),
        Route("/api/sessions/{session_id}/speakers", speakers_api.list_speakers, methods=["GET"]),
        Route(
            "/api/sessions/{session_id}/speakers/{speaker_id}",
            speakers_api.put_speaker,
            methods=["PUT"],
        ),
        Route("/api/transcribe-summary", summary_api.transcribe_summary, methods=["POST"]),
        Route("/api/jobs/{job_id}", summary_api.get_job, methods=["GET"]),
        Route("/api/tts", tts_api.create_tts, methods=["POST"]),
        Route("/api/tts/voices", tts_api.list_voices, methods=["GET"]),
        Route("/api/tts/{audio_id}", tts_api.get_tts, methods=["GET"]),
        Route("/media/tts/{audio_id}.ogg", tts_api.media, methods=["GET"]),
        Route("/v1/tts", tts_api.v1_tts, methods=["POST"]),
        Route("/v1/stt", compat_api.v1_stt, methods=["POST"]),
        Route("/api/webhooks", webhooks_api.create_webhook, methods=["POST"]),
        Route("/api/webhooks", webhooks_api.list_webhooks, methods=["GET"]),
        Route("/api/webhooks/{webhook_id}", webhooks_api.get_webhook, methods=["GET"]),
        Route("/api/webhooks/{webhook_id}", webhooks_api.delete_webhook, methods=["DELETE"]),
        Route(
            "/api/webhooks/{webhook_id}/rotate-secret",
            webhooks_api.rotate_secret,
            methods=["POST"],
        ),
        Route(
            "/api/webhooks/{webhook_id}/deliveries",
            webhooks_api.list_deliveries,
            methods=["GET"],
        ),
        Route(
            "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            webhooks_api.redeliver,
            methods=["POST"],
        ),
        Route("/api/triggers/session-ended", webhooks_api.trigger_session_ended, methods=["GET"]),
        Route("/api/triggers/summary-ready", webhooks_api.trigger_summary_ready, methods=["GET"]),
        Route("/api/webrtc", whip.whip_post, methods=["POST"]),
        Route("/api/webrtc/{resource_id}", whip.whip_delete, methods=["DELETE"]),
        Route("/api/webrtc/{resource_id}", whip.whip_patch, methods=["PATCH"]),
        WebSocketRoute("/ws/stt", ingest_ws.ingest_endpoint),
        WebSocketRoute("/ws/subscribe", viewers.subscribe_endpoint),
        WebSocketRoute("/v1/stt/stream", compat_stream.stream_endpoint),
        # the Jitsi bridge (issue 14): the opus-transcriber-proxy protocol
        WebSocketRoute("/transcribe", jitsi.transcribe_endpoint),
        Route("/api/bridges", bridges_api.create_bridge_key, methods=["POST"]),
        Route("/api/bridges", bridges_api.list_bridge_keys, methods=["GET"]),
        Route("/api/bridges/{bridge_id}", bridges_api.revoke_bridge_key, methods=["DELETE"]),
        Route("/api/jitsi/meetings/{meeting_id}", bridges_api.get_jitsi_meeting, methods=["GET"]),
        Route("/embed/{session_id}", webui.embed_page, methods=["GET"]),
        Route("/try", webui.try_page, methods=["GET"]),
        Mount("/embed-assets", app=webui.assets(), name="embed-assets"),
    ]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start every service, serve, then stop in reverse order (see
    :func:`mcustt.state.open_state`); WebRTC peers are hung up first of all."""
    settings: Settings = app.state.settings
    async with open_state(settings) as state:
        peers = WhipManager(state)
        app.state.mcustt, app.state.whip = state, peers
        log.info(
            "mcustt started",
            node_id=state.node_id,
            recognizer=settings.recognizer,
            summarizer=settings.summarizer,
            broker=state.hub.broker.name,
        )
        try:
            yield
        finally:
            await peers.aclose()
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
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
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
        # Inside CORS (a refusal still carries its headers), before every route: body
        # cap and impossible ids (see mcustt.edge).
        Middleware(
            Edge,
            # File uploads may be larger than other bodies (still capped): issue 15.
            large_bodies={
                "/api/transcribe": transcribe_api.max_request_bytes(settings.transcribe_max_bytes)
            },
        ),
        # issue 13: a request or upgrade the unreachable database failed is 503
        # STORE_UNAVAILABLE with Retry-After (innermost: CORS, request id, metrics apply)
        Middleware(StoreGuard),
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
    app.state.settings = settings
    return app
