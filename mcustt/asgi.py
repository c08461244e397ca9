"""ASGI plumbing below the app: the outermost layer for long-lived viewer connections.

Kept apart from :mod:`mcustt.server` (which runs the app under uvicorn) so that the
viewer transports can use it without importing the app they are part of.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: Where :class:`Outermost` puts the server's own ``send`` callable in the scope.
RAW_SEND = "mcustt.raw_send"
#: Where an endpoint may leave the rest of its connection (see :class:`Outermost`).
DETACH = "mcustt.detach"

#: The rest of a connection: ``await tail(receive, send)``, with the server's own
#: receive and send.
Tail = Callable[[Any, Any], Awaitable[None]]


class Outermost:
    """The outermost ASGI layer, for the long-lived viewer connections (thousands a node).

    * ``scope[RAW_SEND]`` is the server's own ``send``. The caption fan-out writes every
      event to thousands of sockets; through the middleware stack each write takes five
      hops, all of which only ever act on ``http.response.start`` (request ids, CORS,
      error pages), so event frames and SSE body chunks are sent with this one instead.
      Middleware that must see response *bodies* (compression, say) would therefore not
      see those of the viewer streams.
    * An endpoint may put a :data:`Tail` in ``scope[DETACH]`` once its connection is set
      up (admitted, accepted or headers sent): when the app has returned, unwinding the
      middleware stack, whose frames and closures would otherwise be kept for the life
      of the connection, the connection goes on with ``await tail(receive, send)``. The
      stack's request log and error handling end there; the tail handles its errors.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = getattr(app, "state", None)  # the CLI demo and tests reach app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        scope[RAW_SEND] = send
        await self.app(scope, receive, send)
        tail: Tail | None = scope.pop(DETACH, None)
        if tail is not None:
            await tail(receive, send)


async def detach(scope: Any, tail: Tail, receive: Any, send: Any) -> None:
    """Leave the rest of the connection to :class:`Outermost` (the caller must return
    right after), or run it now when the app is served without that layer."""
    if RAW_SEND in scope:
        scope[DETACH] = tail
    else:
        await tail(receive, send)
