"""What the producer and the viewer share: the event they yield, opening a socket (a
refused upgrade raises the same typed error as a REST answer), reconnect backoff, and
the few REST calls they need (:class:`SessionAPI`, which :class:`~mcustt.client.Client`
provides; a narrow protocol so the socket clients do not depend on the REST module)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from mcustt import wire
from mcustt.client.errors import error_from

MAX_FRAME = 2**22  # bytes, the largest server frame accepted (websockets' default: 1 MiB)
OPEN_TIMEOUT = 15.0


@dataclass(frozen=True)
class Event:
    """One server event: ``transcript``, ``language``, ``session-end``, ``error``…

    ``replayed`` marks finals the producer fetched from the transcript because the
    socket that carried them had dropped.
    """

    data: dict[str, Any]
    replayed: bool = False

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def is_transcript(self) -> bool:
        return self.type == "transcript"

    @property
    def is_final(self) -> bool:
        """A new final line (a correction of one is :attr:`is_revised` instead)."""
        return self.is_transcript and bool(self.data.get("isFinal")) and not self.is_revised

    @property
    def is_revised(self) -> bool:
        """A correction of the final :attr:`seq` already yielded: replace its text."""
        return self.is_transcript and self.data.get("revised") is True

    @property
    def text(self) -> str:
        return str(self.data.get("text", ""))

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def lang(self) -> str | None:
        lang = self.data.get("lang")
        return lang if isinstance(lang, str) else None


EventCallback = Callable[[Event], object]


async def call_back(callback: EventCallback | None, event: Event) -> None:
    """Run the caller's callback, plain or async."""
    if callback is not None:
        result = callback(event)
        if inspect.isawaitable(result):
            await result


def backoff(attempt: int) -> float:
    """0.25 s doubling to 5 s, with jitter so many clients do not reconnect in step."""
    return float(min(5.0, 0.25 * 2.0**attempt) * (0.8 + 0.4 * random.random()))


async def open_socket(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    """Connect; a refused upgrade raises the typed error its answer's envelope names."""
    try:
        return await connect(
            url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=MAX_FRAME
        )
    except InvalidStatus as exc:
        response = exc.response
        raise error_from(
            response.status_code,
            bytes(response.body or b""),
            httpx.Headers(dict(response.headers)),
        ) from None


class SessionAPI(Protocol):
    """The REST calls of the socket clients: where sockets go, and minting the tokens
    (and reading the transcript) that let them reconnect without losing a final."""

    @property
    def ws_url(self) -> str: ...

    @property
    def tenant_key(self) -> str | None: ...

    def tenant_headers(self) -> dict[str, str]: ...

    async def ingest_token(self, session_id: str, owner_secret: str) -> wire.IngestToken: ...

    async def embed_token(
        self, session_id: str, *, owner_secret: str | None = None
    ) -> wire.ReadTokens: ...

    async def transcript(
        self, session_id: str, format: Literal["json"] = "json", *, token: str | None = None
    ) -> wire.Transcript: ...
