"""Small WebSocket clients for tests: a producer that streams PCM and a collector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

FRAME = 640  # 20 ms of PCM16 16 kHz mono


@dataclass
class Collected:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "transcript" and m["isFinal"]]

    @property
    def interims(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "transcript" and not m["isFinal"]]

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


async def collect(ws: ClientConnection, into: Collected) -> Collected:
    try:
        async for raw in ws:
            into.messages.append(json.loads(raw))
    except websockets.ConnectionClosed:
        pass
    into.close_code = ws.close_code
    into.close_reason = ws.close_reason or ""
    return into


async def stream_pcm(
    ws: ClientConnection, pcm: bytes, *, realtime: bool, frame: int = FRAME
) -> None:
    """Send PCM in frames; at real-time pace (20 ms a frame) or as fast as accepted."""
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), frame)):
        await ws.send(pcm[offset : offset + frame])
        if realtime:
            delay = start + (i + 1) * frame / 32000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def producer(
    url: str, **kwargs: Any
) -> AsyncIterator[tuple[ClientConnection, Collected, asyncio.Task[Collected]]]:
    """Connect, start collecting everything the server sends."""
    ws = await websockets.connect(url, max_size=None, **kwargs)
    got = Collected()
    task = asyncio.create_task(collect(ws, got))
    try:
        yield ws, got, task
    finally:
        await ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (16 * ms)
