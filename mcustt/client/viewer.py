"""The viewer: one session's events from ``/ws/subscribe``, resuming after a disconnect
with ``lastSeq`` so every final is yielded exactly once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from mcustt import wire
from mcustt.client.errors import RateLimited, ServerError, StreamClosed, Unauthorized, Unavailable
from mcustt.client.sockets import Event, SessionAPI, backoff, open_socket

__all__ = ["Viewer"]


@dataclass
class Viewer:
    """Events of one session from ``/ws/subscribe``, resuming after disconnects.

    ``async for event in client.viewer(session_id): ...`` ends after ``session-end``.
    Finals are yielded once each, in seq order: a reconnect asks for ``lastSeq`` (the
    last final seen) and anything at or below it is dropped. A correction of a final
    already yielded comes as an event with :attr:`~Event.is_revised` (same ``seq``, the
    new ``text``); a resumed viewer also gets the corrections it missed that way.
    """

    client: SessionAPI
    session_id: str
    token: str | None = None
    last_seq: int | None = 0
    max_reconnect_attempts: int = 20
    reconnects: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _ws: ClientConnection | None = field(default=None, init=False, repr=False)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    async def _mint(self) -> str:
        tokens = await self.client.embed_token(self.session_id)
        return tokens["subscribeToken"]

    async def _connect(self) -> ClientConnection:
        if self.token is None:
            self.token = await self._mint()
        query = {"token": self.token}
        if self.last_seq is not None:
            query["lastSeq"] = str(self.last_seq)
        return await open_socket(f"{self.client.ws_url}/ws/subscribe?{urlencode(query)}")

    async def events(self) -> AsyncIterator[Event]:
        attempt = 0
        reminted = False
        while not self._closed:
            try:
                ws = await self._connect()
            except Unauthorized:
                # An expired token: mint another if the client can (tenant key), once.
                if self.client.tenant_key is None or reminted:
                    raise
                self.token, reminted = None, True
                continue
            except (
                RateLimited,
                Unavailable,
                ServerError,
                OSError,
                InvalidHandshake,
                TimeoutError,
            ) as exc:
                if attempt >= self.max_reconnect_attempts:
                    raise
                retry = getattr(exc, "retry_after", None)
                await asyncio.sleep(retry if retry is not None else backoff(attempt))
                attempt += 1
                continue
            self._ws = ws
            try:
                async for raw in ws:
                    event = Event(json.loads(raw))
                    if (
                        event.is_transcript
                        and not event.is_revised
                        and event.seq is not None
                        and self.last_seq is not None
                        and event.seq <= self.last_seq
                        # a speaker's interim may carry a seq another speaker's final
                        # took meanwhile (participant tracks): the server filters those
                        and (event.is_final or "speaker" not in event.data)
                    ):
                        continue  # a final already yielded (or its stale interim)
                    if event.is_final and event.seq is not None:
                        self.last_seq = event.seq
                    attempt, reminted = 0, False
                    yield event
                    if event.type == "session-end":
                        return
            except ConnectionClosed:
                pass
            finally:
                await ws.close()
            if ws.close_code == wire.CloseCode.UNSUPPORTED_DATA:
                raise StreamClosed(
                    wire.ErrorCode.BAD_REQUEST,
                    ws.close_reason or "closed",
                    close_code=wire.CloseCode.UNSUPPORTED_DATA,
                )
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(backoff(attempt))
            attempt += 1
