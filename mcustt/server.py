"""Running the app under uvicorn, the same way for the CLI, tests and benchmarks."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from mcustt.config import Settings
from mcustt.ingest.audio import MAX_FRAME_BYTES


def uvicorn_options() -> dict[str, Any]:
    """The server options every mcustt process uses (benchmarks run bare ASGI apps under
    exactly these, so a comparison measures the app, not the server settings)."""
    return {
        # Frames up to the contract's 1 MB reach the app, which closes 1009 with a
        # reason; uvicorn itself closes anything larger (also 1009).
        "ws_max_size": MAX_FRAME_BYTES + 64 * 1024,
        "ws": "websockets-sansio",
        "access_log": False,  # our access log omits query strings, which carry tokens
        "log_config": None,
        "lifespan": "on",
        # uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 and rewrite the
        # client address before the app sees it; mcustt applies MCUSTT_TRUSTED_PROXIES
        # itself (a spoofed header must not buy a fresh rate-limit budget).
        "proxy_headers": False,
        "timeout_graceful_shutdown": 15,
    }


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


def uvicorn_config(settings: Settings, *, host: str, port: int, **extra: object) -> uvicorn.Config:
    from mcustt.app import create_app

    return uvicorn.Config(
        Outermost(create_app(settings)),
        host=host,
        port=port,
        **(uvicorn_options() | extra),
    )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    config = uvicorn_config(settings, host=host or settings.host, port=port or settings.port)
    # Everything imported so far lives as long as the process: keep it out of the
    # cyclic GC's full collections, which otherwise walk it again each time (a node
    # with thousands of viewers pays that while viewers join).
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()
