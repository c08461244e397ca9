"""Running the app under uvicorn, the same way for the CLI, tests and benchmarks."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import signal
import socket
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders

from mcustt.app import create_app
from mcustt.asgi import Outermost
from mcustt.config import Settings
from mcustt.drain import drain as drain_node
from mcustt.ingest.audio import MAX_FRAME_BYTES
from mcustt.state import AppState
from mcustt.wire import HTTP_STATUS_CODES, ErrorCode

#: The longest request target (path and query) a request may have: tokens in a query
#: are a few hundred bytes. Longer is 414.
MAX_TARGET_BYTES = 8 * 1024
#: The most bytes a request's head (request line and headers) may take. More is 431.
MAX_HEAD_BYTES = 16 * 1024
#: How long a refused connection is drained before it is closed (see HttpProtocol._linger).
LINGER_S = 2.0


def _refusal(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response in the contract's envelope, closing the connection:
    for requests refused before any ASGI app sees them."""
    code = HTTP_STATUS_CODES.get(status, ErrorCode.BAD_REQUEST)
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head.

    llhttp (under httptools) does not limit the headers, nor the request target below
    ~64 KB, and uvicorn accumulates both in memory. Here a target over
    :data:`MAX_TARGET_BYTES` is 414 and a head over :data:`MAX_HEAD_BYTES` is 431, in the
    envelope, and the connection is closed (see :meth:`_linger`). Every other request
    llhttp refuses gets the envelope too (400). A WebSocket upgrade goes through here
    first, so this also bounds what reaches the WebSocket protocol.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # until the head of the current request is complete
        self._head_bytes = 0
        self._header_bytes = 0
        self._refused: tuple[int, str] | None = None
        self._lingering = False

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: dropped unread
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_open and self._head_bytes > MAX_HEAD_BYTES:
            # Counted per read, so a head is refused within one read past the bound,
            # before llhttp or uvicorn have buffered more.
            self._refused = (431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that arrived whole in one read: its headers, counted exactly.
        self._header_bytes += len(name) + len(value) + 4
        if len(self.url) + self._header_bytes > MAX_HEAD_BYTES:
            self._refused = (431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
            raise ValueError("request head too large")
        super().on_header(name, value)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self._refused = (414, f"the request target is longer than {MAX_TARGET_BYTES} bytes")
            # Raised through llhttp: uvicorn answers a parser error with send_400_response.
            raise ValueError("request target too long")

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True  # the next bytes are the next request's head

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing() or self._lingering:
            return
        status, message = self._refused or (400, "invalid HTTP request")
        self.transport.write(_refusal(status, message))
        self._linger()

    def _linger(self) -> None:
        """Close after the answer, without losing it: closing a socket that still holds
        unread request bytes makes the kernel send a reset, and the client may then
        never read the answer. So our side is shut down (the client reads the answer,
        then EOF), what the client still sends is read and dropped, and the connection
        closes when the client closes or after :data:`LINGER_S` at most."""
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, answering an upgrade request that
    websockets itself refuses.

    websockets parses the upgrade request again, with its own limits (a line over 8 KB,
    more than 128 headers). uvicorn before 0.55 left such a request unanswered (it
    writes what websockets produces only once it sees a request event); 0.55 and later
    call :meth:`handle_handshake_exception`, which answers websockets' plain text. Either
    way the answer here is the contract's envelope (414, 431, or 400), then a close.
    """

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.handshake_initiated:  # the usual case: a request came through
            return
        if self.conn.handshake_exc is None or self.transport.is_closing():
            return
        self.handle_handshake_exception()  # uvicorn < 0.55 did not

    def handle_handshake_exception(self) -> None:
        exc = self.conn.handshake_exc
        self.conn.data_to_send()  # websockets' own plain-text answer: ours replaces it
        if isinstance(exc, RequestLineTooLong):
            status, message = 414, "the request line is too long"
        elif isinstance(exc, HeaderLineTooLong | TooManyHeaders):
            status, message = 431, "a header line is too long, or there are too many headers"
        else:
            status, message = 400, "invalid WebSocket upgrade request"
        self.handshake_complete = self.close_sent = True
        self.transport.write(_refusal(status, message))
        self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """The server options every mcustt process uses (benchmarks run bare ASGI apps under
    exactly these, so a comparison measures the app, not the server settings)."""
    return {
        # Frames up to the contract's 1 MB reach the app, which closes 1009 with a
        # reason; uvicorn itself closes anything larger (also 1009).
        "ws_max_size": MAX_FRAME_BYTES + 64 * 1024,
        "ws": WebSocketProtocol,
        "http": HttpProtocol,
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
    gives the app no other sign before open responses have ended), and draining the
    node on SIGTERM before uvicorn's shutdown closes the sockets (issue 13).

    SIGTERM runs :meth:`drain` (``MCUSTT_DRAIN_GRACE_S``), then the usual shutdown; the
    process then exits 0 (uvicorn would raise SIGTERM again once it is done, ending the
    process with the signal: a drained node stopped as asked). A second SIGTERM or a
    SIGINT during the drain cuts it short. SIGINT alone keeps uvicorn's behaviour.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_asked = False
        self._drain_task: asyncio.Task[None] | None = None

    def _app_state(self) -> AppState | None:
        state = getattr(getattr(self.config.app, "state", None), "mcustt", None)
        return state if isinstance(state, AppState) else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._loop = asyncio.get_running_loop()
        # The lifespan has run: the services exist (unless start-up failed).
        state = self._app_state()
        if state is not None:
            state.hub.watch_exit(lambda: self.should_exit)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: runs between two bytecodes of whatever the loop was doing,
        # so it only flips flags and hands the drain to the loop.
        loop = self._loop
        if sig == signal.SIGTERM and not self._drain_asked and not self.should_exit:
            self._drain_asked = True
            if loop is not None and self._app_state() is not None:
                loop.call_soon_threadsafe(self._start_drain)
            else:  # not started yet: nothing to drain
                self.should_exit = True
            return
        if self._drain_asked and loop is not None:
            loop.call_soon_threadsafe(self._cut_drain)
        if sig == signal.SIGTERM:
            self.should_exit = True  # not recorded: no SIGTERM raised again at the end
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.create_task(self.drain(), name="drain")

    def _cut_drain(self) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()

    async def drain(self) -> None:
        """Drain the node (see :mod:`mcustt.drain`), then let uvicorn shut down, with
        what is left of the grace period for its own wait on open connections."""
        state = self._app_state()
        try:
            if state is not None:
                grace = state.settings.drain_grace_s
                started = time.monotonic()
                await drain_node(state, grace_s=grace)
                left = grace - (time.monotonic() - started)
                self.config.timeout_graceful_shutdown = max(1, math.ceil(left))
        except Exception:
            structlog.get_logger(__name__).exception("drain failed")
        finally:
            self.should_exit = True


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
