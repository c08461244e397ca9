"""Viewer transports: ``/ws/subscribe`` (§6) and the SSE feed (§7).

Both run :func:`mcustt.fanout.follow` (replay, then live, each final once) and differ
only in framing: WebSocket viewers get the event's JSON text as published, SSE viewers
its SSE encoding, each made once per node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from mcustt import events, tenants
from mcustt.api import app_state, error_response, read_token
from mcustt.errors import BadRequest, MCUSTTError, NotFound, Unauthorized
from mcustt.fanout import Viewer, follow
from mcustt.state import AppState
from mcustt.store.models import Session
from mcustt.wsutil import close, reject

log = structlog.get_logger(__name__)


def _seq_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < 0:
        raise BadRequest(f"{name} must be >= 0")
    return value


async def authorize_viewer(
    state: AppState, conn: HTTPConnection, token: str | None, session_id: str | None
) -> Session:
    """A read token for an existing session, from an allowed origin."""
    if not token:
        raise Unauthorized("missing read token", code="UNAUTHORIZED")
    claims = state.issuer.verify(token, scopes={"embed", "subscribe"})
    if session_id is not None and claims.session_id != session_id:
        raise Unauthorized("this token is for another session", code="INVALID_TOKEN")
    session = await state.sessions.get(claims.session_id)
    if session is None:
        raise NotFound("no such session", code="SESSION_NOT_FOUND")
    tenant = await tenants.find(state.db, session.tenant_id)
    if tenant is None or tenant.disabled:
        raise Unauthorized("the tenant of this session is disabled", code="TENANT_DISABLED")
    tenants.check_origin(tenant, conn.headers.get("origin"), own=state.settings.public_url)
    structlog.contextvars.bind_contextvars(session_id=session.id, tenant_id=tenant.id)
    return session


def _ended(state: AppState, session_id: str) -> Callable[[], Awaitable[bool]]:
    async def ended() -> bool:
        fresh = await state.sessions.get(session_id)
        return fresh is None or fresh.status == "ended"

    return ended


# -- /ws/subscribe ------------------------------------------------------------------


async def subscribe_endpoint(ws: WebSocket) -> None:
    state = app_state(ws)
    try:
        await state.limiter.hit("ws_upgrade", state.client_ip(ws))
        last_seq = _seq_param(ws.query_params.get("lastSeq"), "lastSeq")
        session = await authorize_viewer(state, ws, ws.query_params.get("token"), None)
    except MCUSTTError as exc:
        await reject(ws, exc)
        return
    viewer = await state.hub.join(session.id)
    relay: asyncio.Task[None] | None = None
    try:
        await ws.accept()
        relay = asyncio.create_task(_relay(state, ws, viewer, last_seq), name=f"relay-{session.id}")

        # A kick (slow viewer) cancels a send that may be stuck on a full TCP buffer.
        def kick(_reason: str) -> None:
            if relay is not None:
                relay.cancel()

        viewer.on_kick = kick
        reader = asyncio.create_task(_read_until_close(ws), name=f"viewer-rx-{session.id}")
        done, _ = await asyncio.wait({relay, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in (relay, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
        if viewer.kicked:
            state.metrics.viewers_kicked.inc()
            await close(ws, 1008, viewer.kicked.split(":")[0])
        elif reader in done and not reader.cancelled() and reader.exception() is None:
            code, reason = reader.result()
            await close(ws, code, reason)
        else:
            await close(ws, 1000, "SESSION_ENDED")
    finally:
        await state.hub.leave(viewer)


async def _relay(state: AppState, ws: WebSocket, viewer: Viewer, last_seq: int | None) -> None:
    async for event in follow(
        state.repo, viewer, last_seq=last_seq, session_ended=_ended(state, viewer.session_id)
    ):
        await ws.send_text(event.raw)


async def _read_until_close(ws: WebSocket) -> tuple[int, str]:
    """Subscribe sockets are read-only: binary closes 1003; text is ignored (ping ok)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return 1000, ""
        if message.get("bytes") is not None:
            return 1003, "BAD_REQUEST: subscribe sockets are read-only"


# -- SSE ----------------------------------------------------------------------------


async def sse_stream(request: Request) -> Response:
    state = app_state(request)
    session_id = request.path_params["session_id"]
    try:
        last_seq = _seq_param(
            request.headers.get("last-event-id") or request.query_params.get("lastEventId"),
            "Last-Event-ID",
        )
        session = await authorize_viewer(state, request, read_token(request), session_id)
    except MCUSTTError as exc:
        return error_response(exc)

    async def stream() -> AsyncIterator[ServerSentEvent | bytes]:
        # Joined inside the generator: a client gone before the first byte leaks nothing.
        viewer = await state.hub.join(session.id)
        try:
            ready = await state.sessions.state(session, subscribers=state.hub.count(session.id))
            yield ServerSentEvent(data=events.dumps(ready), event="ready")
            async for event in follow(
                state.repo, viewer, last_seq=last_seq, session_ended=_ended(state, session.id)
            ):
                if viewer.kicked:
                    break
                yield event.sse
            if viewer.kicked:
                state.metrics.viewers_kicked.inc()
                yield ServerSentEvent(
                    data=events.dumps(events.error("SLOW_CONSUMER", viewer.kicked, fatal=True)),
                    event="error",
                )
        finally:
            await state.hub.leave(viewer)

    return EventSourceResponse(
        stream(),
        ping=state.settings.sse_ping_s,
        send_timeout=30,
        headers={
            # Proxies (nginx and friends) must pass events through as they come.
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
        },
    )
