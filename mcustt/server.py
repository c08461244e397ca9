"""Running the app under uvicorn, the same way for the CLI, tests and benchmarks."""

from __future__ import annotations

import gc
import socket
from typing import Any

import uvicorn

from mcustt.app import create_app
from mcustt.asgi import Outermost
from mcustt.config import Settings
from mcustt.ingest.audio import MAX_FRAME_BYTES
from mcustt.state import AppState


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


class Server(uvicorn.Server):
    """uvicorn's server, telling the app's hub when it starts shutting down (uvicorn
    gives the app no other sign before open responses have ended)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # The lifespan has run: the services exist (unless start-up failed).
        state = getattr(getattr(self.config.app, "state", None), "mcustt", None)
        if isinstance(state, AppState):
            state.hub.watch_exit(lambda: self.should_exit)


def uvicorn_config(settings: Settings, *, host: str, port: int, **extra: object) -> uvicorn.Config:
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
    Server(config).run()
