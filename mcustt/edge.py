"""The request edge: what every request must pass before any route (or credential check)
sees it.

* **Bodies are capped while they are read** (:data:`mcustt.bodies.MAX_BODY`). A declared
  ``content-length`` over the cap is refused at once, without reading a byte; a chunked
  (or undeclared) body is counted as the app receives it, and the read that passes the
  cap raises :class:`~mcustt.errors.PayloadTooLarge` instead of handing the chunk over.
  So no route, even one that reads its body to find its credentials (``ownerSecret``),
  ever holds more than the cap. Once the 413 is sent, uvicorn reads the rest of the
  body and drops it unbuffered (the connection is not closed at once: closing a socket
  with unread bytes resets it, and the client might never read the 413).
  One exception: ``POST /api/transcribe`` (file uploads, issue 15) has the file cap
  (``MCUSTT_TRANSCRIBE_MAX_BYTES`` plus form overhead), counted the same way; its
  handler still holds a JSON body to the ordinary cap.
* **A path that holds a NUL is a 404.** No id can contain one (they are letters, digits
  and ``_``), and PostgreSQL refuses NUL in text, so such an id must never reach a
  query: an id that cannot exist is not found, on every route and on both databases.

Pure ASGI (no ``BaseHTTPMiddleware``), so SSE responses and WebSockets pass through
untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from mcustt.bodies import MAX_BODY
from mcustt.errors import MCUSTTError, NotFound, PayloadTooLarge, error_response
from mcustt.wire import CloseCode


def _declared_length(scope: Scope) -> int | None:
    """The request's ``content-length``, if it declares a valid one (uvicorn has already
    refused a malformed one, or framed the body by ``transfer-encoding``)."""
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(max_body: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {max_body} bytes")


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: MCUSTTError) -> None:
    """Answer ``exc`` in the contract's envelope (an upgrade is refused the same way)."""
    response = error_response(exc)
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            await WebSocket(scope, receive, send).send_denial_response(response)
        else:  # a server without the denial extension: refuse the upgrade bare
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        return
    await response(scope, receive, send)


class Edge:
    """Pure ASGI middleware: the checks above, before the routes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY,
        large_bodies: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        #: POST routes (exact paths) allowed a larger cap: file uploads (issue 15)
        self.large_bodies = dict(large_bodies or {})

    def _cap(self, scope: Scope) -> int:
        if scope.get("method") == "POST":
            return self.large_bodies.get(scope["path"], self.max_body)
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if "\x00" in path:
            shown = path.replace("\x00", "%00")
            await _refuse(scope, receive, send, NotFound(f"no route for {shown}"))
            return
        if scope["type"] == "websocket":  # an upgrade has no body
            await self.app(scope, receive, send)
            return
        max_body = self._cap(scope)
        declared = _declared_length(scope)
        if declared is not None and declared > max_body:
            await _refuse(scope, receive, send, _too_large(max_body))
            return
        await self._capped(scope, receive, send, max_body)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, max_body: int) -> None:
        received = 0
        over = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            if over:
                return await _past_cap()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    over = True  # the chunk is dropped here: the app never holds it
                    return await _past_cap()
            return message

        async def _past_cap() -> Message:
            if started:
                # A response is under way (a stream that ignores its body): it cannot
                # turn into a 413 any more, so the app is told the client has gone.
                return {"type": "http.disconnect"}
            raise _too_large(max_body)

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, send_wrapper)
        except PayloadTooLarge:
            # Raised by the receive above and not answered by the app's error handlers
            # (which normally turn it into the envelope): answer here if still possible.
            if not over or started:
                raise
            await _refuse(scope, receive, send, _too_large(max_body))
