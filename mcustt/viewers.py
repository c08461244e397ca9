"""Viewer transports: ``/ws/subscribe`` (§6) and the SSE feed (§7).

Both run :class:`mcustt.fanout.Follow` (replay, then live, each final once) and differ
only in framing: WebSocket viewers get the event's JSON text as published, SSE viewers
its SSE encoding, each made once per node (and so is the ASGI message that carries it).

A node holds thousands of these, so each costs as little as it can: a relay task with a
shallow stack sends the events (woken once per batch, no coroutine per event), the
connection's own task just waits for the peer to leave, and SSE keep-alive pings and
the shutdown signal come from one hub-wide timer and watcher, not tasks or timers per
viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from mcustt import events, tenants, wire
from mcustt.api import read_token
from mcustt.asgi import detach
from mcustt.errors import BadRequest, MCUSTTError, NotFound, Unauthorized, error_response
from mcustt.events import Event
from mcustt.fanout import PING, Viewer, relay
from mcustt.state import AppState, app_state
from mcustt.store.models import Session
from mcustt.wire import CloseCode, CloseReason, ErrorCode, ErrorEvent
from mcustt.words import wants_words
from mcustt.wsutil import reject

log = structlog.get_logger(__name__)

#: What a viewer is told when its stream fails on our side (the cause is only logged).
_FAILED = "the caption stream failed on the server; reconnect to resume"


_SEQ = re.compile(r"[0-9]{1,19}")


def _seq_param(raw: str | None, name: str) -> int | None:
    """A replay position from the query or a header, checked before any work is done:
    ASCII digits only (``int`` would also take ``+1``, ``1_0`` and other scripts' digits)
    and within 0..``wire.MAX_SEQ`` (a larger number would overflow in the replay query,
    after the stream started)."""
    if raw is None or raw == "":
        return None
    if not _SEQ.fullmatch(raw):
        raise BadRequest(f"{name} must be an integer from 0 to {wire.MAX_SEQ}")
    value = int(raw)
    if value > wire.MAX_SEQ:
        raise BadRequest(f"{name} must be an integer from 0 to {wire.MAX_SEQ}")
    return value


async def authorize_viewer(
    state: AppState, conn: HTTPConnection, token: str | None, session_id: str | None
) -> Session:
    """A read token for an existing session, from an allowed origin."""
    if not token:
        raise Unauthorized("missing read token", code=ErrorCode.UNAUTHORIZED)
    claims = state.issuer.verify(token, scopes={"embed", "subscribe"})
    if session_id is not None and claims.session_id != session_id:
        raise Unauthorized("this token is for another session", code=ErrorCode.INVALID_TOKEN)
    session = await state.sessions.get(claims.session_id)
    if session is None:
        raise NotFound("no such session", code=ErrorCode.SESSION_NOT_FOUND)
    tenant = await tenants.find(state.db, session.tenant_id)
    if tenant is None or tenant.disabled:
        raise Unauthorized("the tenant of this session is disabled", code=ErrorCode.TENANT_DISABLED)
    tenants.check_origin(tenant, conn.headers.get("origin"), own=state.settings.public_url)
    structlog.contextvars.bind_contextvars(session_id=session.id, tenant_id=tenant.id)
    return session


#: An ASGI send that is a coroutine function (uvicorn's), as :class:`mcustt.asgi.Outermost`
#: hands it over.
RawSend = Callable[[Message], Coroutine[Any, Any, None]]


async def _not_running(message: Message) -> None:
    raise RuntimeError("the connection has not started")


class _Connection:
    """A viewer connection once it is set up, detached from the middleware stack (see
    :class:`mcustt.asgi.Outermost`): a relay task sends the events (see
    :func:`mcustt.fanout.relay`) while the connection's own task waits for the peer to
    leave. Whichever side ends first ends the other."""

    __slots__ = ("last_seq", "reading", "relay", "send", "state", "task", "viewer", "words")

    def __init__(
        self, state: AppState, viewer: Viewer, last_seq: int | None, *, words: bool = False
    ) -> None:
        self.state = state
        self.viewer = viewer
        self.last_seq = last_seq
        #: issue 17: finals keep their word timings (the session's ``words`` or ``?words=1``)
        self.words = words
        #: the server's own send (uvicorn's is a coroutine function, so the hub may start
        #: a send eagerly); set by :meth:`run` before the relay starts
        self.send: RawSend = _not_running
        self.relay: asyncio.Task[None] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.reading = False

    # transport specifics ---------------------------------------------------------------

    def send_item(self, item: Event | object) -> Coroutine[Any, Any, None]:
        """The coroutine that sends one item (an ASGI send: the hub may run it eagerly)."""
        raise NotImplementedError

    async def read(self, receive: Receive) -> tuple[int, str] | None:
        """Until the peer leaves; returns how to close (None: nothing to send)."""
        raise NotImplementedError

    async def ended(self) -> None:
        """The relay ended the stream (``session-end`` sent, or the viewer was kicked)."""
        raise NotImplementedError

    async def close(self, code: int, reason: str) -> None:
        """The peer left or broke the rules (only after the relay stopped)."""

    async def failed(self) -> None:
        """The relay failed (a bug, the store gone): end the stream the transport's way."""
        raise NotImplementedError

    # the common part -----------------------------------------------------------------

    async def session_ended(self) -> bool:
        fresh = await self.state.sessions.get(self.viewer.session_id)
        return fresh is None or fresh.status == "ended"

    async def run(self, receive: Receive, send: RawSend) -> None:
        state, viewer = self.state, self.viewer
        self.send = send
        task = self.task = asyncio.current_task()
        assert task is not None
        relay = self.relay = asyncio.create_task(self._relay(), name="viewer-relay")
        try:
            self.reading = True
            relay.add_done_callback(self._relay_done)
            try:
                result = await self.read(receive)
            except asyncio.CancelledError:
                if not relay.done():
                    raise
                # The relay finished the stream: a peer that never reads or answers
                # must not hold the connection open.
                task.uncancel()
                result = None
            finally:
                self.reading = False
                relay.remove_done_callback(self._relay_done)
            viewer.close()  # the relay notices at once
            await asyncio.wait({relay}, timeout=2)
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
            if result is not None:
                await self.close(*result)
        finally:
            if not relay.done():
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay
            await state.hub.leave(viewer)

    def _relay_done(self, _relay: object) -> None:
        if self.reading and self.task is not None:
            self.task.cancel()

    async def _relay(self) -> None:
        viewer = self.viewer
        try:
            # OSError: the server's send reports a socket gone; the reading side sees it.
            with contextlib.suppress(OSError, WebSocketDisconnect):
                await relay(
                    self.state.repo,
                    viewer,
                    last_seq=self.last_seq,
                    session_ended=self.session_ended,
                    send=self.send_item,
                )
        except Exception:
            # Whatever broke, the viewer gets a close frame (or an SSE error event), not a
            # connection cut mid-stream; the details stay in the log.
            log.exception("viewer relay failed", session_id=viewer.session_id)
            if not viewer.closed:
                await self.failed()
            await self.state.hub.leave(viewer)
            return
        if viewer.closed:
            return
        if viewer.kicked and viewer.kicked.startswith(CloseReason.SLOW_CONSUMER):
            # (a drain's or a shutdown's kick is not a viewer falling behind)
            self.state.metrics.viewers_kicked.inc()
        await self.ended()
        await self.state.hub.leave(viewer)

    async def _send(self, message: dict[str, Any]) -> None:
        """Send a closing message, bounded in time (a stuck peer must not hold us)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send(message), 2)


# -- /ws/subscribe ------------------------------------------------------------------


async def subscribe_endpoint(ws: WebSocket) -> None:
    state = app_state(ws)
    try:
        state.gate.admit_viewer()  # issue 13: a draining node sends viewers elsewhere
        await state.limiter.hit("ws_upgrade", state.client_ip(ws))
        last_seq = _seq_param(ws.query_params.get("lastSeq"), "lastSeq")
        session = await authorize_viewer(state, ws, ws.query_params.get("token"), None)
        session_id = session.id
        words = wants_words(ws.query_params.get("words"), session_default=session.words)
    except MCUSTTError as exc:
        await reject(ws, exc)
        return
    if last_seq:
        state.metrics.viewer_resumes.inc()  # a reconnect (issue 13: caption health)
    viewer = await state.hub.join(session_id)
    try:
        await ws.accept()
    except BaseException:
        await state.hub.leave(viewer)
        raise
    conn = _WsConnection(state, viewer, last_seq, words=words)
    await detach(ws.scope, conn.run, ws.receive, ws.send)


class _WsConnection(_Connection):
    __slots__ = ()

    def send_item(self, item: Event | object) -> Coroutine[Any, Any, None]:
        # Only events reach a WebSocket viewer (the hub pings SSE viewers alone).
        event = cast(Event, item)
        return self.send((event if self.words else event.without_words()).ws_message)

    async def read(self, receive: Receive) -> tuple[int, str] | None:
        """Subscribe sockets are read-only: binary closes 1003; text is ignored (ping ok)."""
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return None
            if message.get("bytes") is not None:
                return CloseCode.UNSUPPORTED_DATA, "BAD_REQUEST: subscribe sockets are read-only"

    async def ended(self) -> None:
        kicked = self.viewer.kicked
        if kicked:
            code = kicked.split(":")[0]
            # issue 13: a node going away says "restarting" (1012): resume elsewhere.
            restart = code in (ErrorCode.NODE_DRAINING, ErrorCode.SERVER_SHUTDOWN)
            await self.close(
                CloseCode.SERVICE_RESTART if restart else CloseCode.POLICY_VIOLATION, code
            )
        else:
            await self.close(CloseCode.NORMAL, CloseReason.SESSION_ENDED)

    async def failed(self) -> None:
        await self.close(CloseCode.INTERNAL_ERROR, f"{ErrorCode.INTERNAL}: {_FAILED}")

    async def close(self, code: int, reason: str) -> None:
        # A close reason is limited to 123 bytes by RFC 6455.
        reason = reason.encode()[:123].decode(errors="ignore")
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


# -- SSE ----------------------------------------------------------------------------

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "Connection": "keep-alive",
    # Proxies (nginx and friends) must pass events through as they come.
    "X-Accel-Buffering": "no",
}


async def sse_stream(request: Request) -> Response:
    state = app_state(request)
    session_id = request.path_params["session_id"]
    try:
        # Opening a stream spends from the same per-IP budget as a WebSocket upgrade (a
        # viewer either way), counted before the token or the database is looked at.
        state.gate.admit_viewer()  # issue 13: a draining node sends viewers elsewhere
        await state.limiter.hit("ws_upgrade", state.client_ip(request))
        last_seq = _seq_param(
            request.headers.get("last-event-id") or request.query_params.get("lastEventId"),
            "Last-Event-ID",
        )
        session = await authorize_viewer(state, request, read_token(request), session_id)
        words = wants_words(request.query_params.get("words"), session_default=session.words)
    except MCUSTTError as exc:
        return error_response(exc)
    if last_seq:
        state.metrics.viewer_resumes.inc()  # a reconnect (issue 13: caption health)
    return EventStream(state, session, last_seq, words=words)


def _sse_body(data: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": True}


class EventStream(Response):
    """``text/event-stream`` of one session: ``ready``, then the replay and live events.

    Lighter than a generic streaming response: no task group, no timer or timeout per
    event. Keep-alive comments come every ``sse_ping_s`` from the hub's one timer; a
    viewer that cannot keep up is kicked by the hub (its mailbox is bounded), which also
    cancels a send stuck on a full socket. Once the headers and ``ready`` are out, the
    stream detaches from the middleware stack (the request is logged then).
    """

    media_type = "text/event-stream"

    def __init__(
        self, state: AppState, session: Session, last_seq: int | None, *, words: bool = False
    ) -> None:
        self.words = words
        # Not Response.__init__: that would add "content-length: 0" for the empty body.
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)
        self.state = state
        self.session: Session | None = session
        self.last_seq = last_seq

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state, session = self.state, self.session
        assert session is not None, "an EventStream is sent once"
        self.session = None
        # Joined here, not earlier: a client gone before the first byte leaks nothing.
        viewer = await state.hub.join(session.id, pings=True)
        try:
            ready = await state.sessions.state(session, subscribers=state.hub.count(session.id))
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send(
                _sse_body(b"event: ready\r\ndata: " + events.dumps(ready).encode() + b"\r\n\r\n")
            )
        except BaseException:
            await state.hub.leave(viewer)
            raise
        conn = _SseConnection(state, viewer, self.last_seq, words=self.words)
        await detach(scope, conn.run, receive, send)


class _SseConnection(_Connection):
    __slots__ = ()

    def send_item(self, item: Event | object) -> Coroutine[Any, Any, None]:
        if item is PING:
            stamp = datetime.now(UTC).isoformat(sep=" ")
            return self.send(_sse_body(f": ping - {stamp}\r\n\r\n".encode()))
        event = cast(Event, item)
        return self.send((event if self.words else event.without_words()).sse_message)

    async def read(self, receive: Receive) -> tuple[int, str] | None:
        # Returns when the client leaves, or at once once the relay completed the
        # response (uvicorn then reports a disconnect).
        while (await receive())["type"] != "http.disconnect":
            pass
        return None

    async def ended(self) -> None:
        kicked = self.viewer.kicked
        if kicked:
            await self._error(events.error(kicked.split(":")[0], kicked, fatal=True))
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def failed(self) -> None:
        await self._error(events.error(ErrorCode.INTERNAL, _FAILED, fatal=True))
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _error(self, error: ErrorEvent) -> None:
        body = b"event: error\r\ndata: " + events.dumps(error).encode() + b"\r\n\r\n"
        await self._send(_sse_body(body))
