"""WebSocket helpers shared by the ingest and subscribe sockets."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketState

from mcustt.errors import MCUSTTError, error_response


async def reject(ws: WebSocket, exc: MCUSTTError) -> None:
    """Refuse an upgrade with the contract's HTTP status and error envelope."""
    await ws.send_denial_response(error_response(exc))


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close once, bounded in time (a stuck peer must not hold the handler)."""
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    # A close reason is limited to 123 bytes by RFC 6455.
    reason = reason.encode()[:123].decode(errors="ignore")
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason), timeout=2)
