"""A minimal SSE reader for tests (the wire format, parsed by the spec's rules)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSE:
    event: str
    data: dict[str, Any]
    id: str | None


async def read_sse(response: httpx.Response) -> AsyncIterator[SSE]:
    event = "message"
    data: list[str] = []
    ident: str | None = None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SSE(event, json.loads("\n".join(data)), ident)
            event, data, ident = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ident = value
