"""A real HTTP receiver for webhooks and callbacks, on 127.0.0.1 and a free port.

A small HTTP/1.1 server on asyncio streams (no framework): it records every request
(method, path, lower-cased headers, body, the status it answered) and answers 200, or
500 (any status) to the first N requests when told to. Use it as::

    async with WebhookReceiver(fail_first=2) as rx:
        ...register rx.url("/hook") as a webhook or callback URL...
        got = await rx.wait_for(1)              # the first 2xx-answered request
        rx.verify(got[0], secret)               # Standard Webhooks signature check
        assert got[0].json()["type"] == "session.ended"

``rx.requests`` holds every attempt (failed ones too), ``rx.delivered`` the ones answered
2xx. ``fail_next(n, status)`` makes the next ``n`` requests fail; ``respond_with``
sets the status of every later request (e.g. 410). Requests are answered with
``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from standardwebhooks import Webhook

#: Largest body recorded (a webhook is small; this only bounds a misbehaving sender).
MAX_BODY = 4 * 1024 * 1024


@dataclass
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver:
    """See the module doc. ``fail_first``: answer the first N requests ``fail_status``;
    ``delay_s``: hold every answer back this long (``max_concurrent`` then shows how
    many requests overlapped)."""

    def __init__(
        self, *, fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0
    ) -> None:
        self.requests: list[Received] = []
        #: how long each answer is held back (to observe concurrent deliveries)
        self.delay_s = delay_s
        #: the most requests that were being answered at once
        self.max_concurrent = 0
        #: the same, per request path (one receiver can stand for several endpoints)
        self.max_concurrent_by_path: dict[str, int] = {}
        self._in_flight = 0
        self._in_flight_by_path: dict[str, int] = {}
        self._fail_left = fail_first
        self._fail_status = fail_status
        self._status = 200
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- behaviour ---------------------------------------------------------------------

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status``."""
        self._fail_left, self._fail_status = n, status

    def respond_with(self, status: int) -> None:
        """Answer every later request (after any pending failures) with ``status``."""
        self._status = status

    # -- what arrived ------------------------------------------------------------------

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(
        self, count: int, *, path: str | None = None, timeout: float = 30.0
    ) -> list[Received]:
        """The first ``count`` delivered (2xx-answered) requests (to ``path`` if given),
        once that many have arrived; TimeoutError otherwise."""

        def done() -> bool:
            return len(self._matching(path)) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(done)
        return self._matching(path)[:count]

    def _matching(self, path: str | None) -> list[Received]:
        return [r for r in self.delivered if path is None or r.path == path]

    @staticmethod
    def verify(received: Received, secret: str) -> Any:
        """The body, parsed, if its Standard Webhooks signature is valid for ``secret``
        (``standardwebhooks.WebhookVerificationError`` otherwise)."""
        return Webhook(secret).verify(received.body, received.headers)

    # -- the server --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = min(int(headers.get("content-length", "0") or 0), MAX_BODY)
            body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            self._in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self._in_flight)
            here = self._in_flight_by_path[path] = self._in_flight_by_path.get(path, 0) + 1
            self.max_concurrent_by_path[path] = max(self.max_concurrent_by_path.get(path, 0), here)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self._in_flight -= 1
                self._in_flight_by_path[path] -= 1
            if self._fail_left > 0:
                self._fail_left -= 1
                status = self._fail_status
            else:
                status = self._status
            async with self._changed:
                self.requests.append(Received(method, path, headers, body, status))
                self._changed.notify_all()
            reply = b"ok" if status < 300 else b"nope"
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: {len(reply)}\r\n"
                "content-type: text/plain\r\nconnection: close\r\n\r\n".encode()
                + reply
            )
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            pass  # a client that went away or sent garbage: nothing to record
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
