"""The Python client's producer given several nodes (issue 13): it moves to the next
node when its node goes away or cannot be reached, and keeps live audio (bounded) while
it reconnects instead of blocking the source."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from conftest import ADMIN, Running, free_port, make_settings, read_wav, run_server

from mcustt import wire
from mcustt.client import Client, Producer

SCRIPTED = "scripted:ScriptedRecognizer"


@contextlib.asynccontextmanager
async def node(db_url: str) -> AsyncIterator[Running]:
    settings = make_settings(db_url, recognizer=SCRIPTED, max_loop_lag_ms=0, max_recognizer_load=0)
    async with run_server(settings) as srv:
        yield srv


async def tenant_key(srv: Running) -> str:
    async with Client(srv.url, admin_token=ADMIN) as admin:
        return (await admin.create_tenant("Failover"))["apiKey"]


def stored(doc: wire.Transcript) -> list[tuple[int, str]]:
    return [(line["seq"], line["text"]) for line in doc["lines"]]


async def test_producer_moves_to_the_next_node_when_its_node_stops(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Two nodes on one database; A shuts down mid-speech (its sockets close 1012):
    the producer continues the session on B, with no seq gap."""
    pcm = read_wav("standup_en.wav")
    half = len(pcm) // 2 // 640 * 640
    async with node(sqlite_url) as b:
        a_cm = node(sqlite_url)
        a = await a_cm.__aenter__()
        try:
            key = await tenant_key(a)
            async with Client(a.url, tenant_key=key) as c:
                session = await c.create_session()
                p = c.producer(session, realtime=False, failover=[b.url])
                await p.connect()
                await p.send_pcm(pcm[:half])
                for _ in range(1000):  # A has captioned the first three turns
                    if len(p.finals) >= 3:
                        break
                    await asyncio.sleep(0.01)
                await a_cm.__aexit__(None, None, None)  # A stops (drain or shutdown)
                await p.send_pcm(pcm[half:])
                await p.stop()
                assert p.failovers == 1 and p.client is c.node(b.url)
                assert p.ended
                doc = stored(await c.node(b.url).transcript(session["sessionId"]))
        finally:
            with contextlib.suppress(Exception):
                await a_cm.__aexit__(None, None, None)
    assert [seq for seq, _ in doc] == list(range(1, len(doc) + 1))
    assert [(e.seq, e.text) for e in p.finals] == doc
    assert len(doc) >= 7  # both halves of the standup were captioned


async def test_producer_skips_a_node_it_cannot_reach(sqlite_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with node(sqlite_url) as b:
        key = await tenant_key(b)
        async with Client(dead, tenant_key=key) as c:
            session = await c.node(b.url).create_session()
            async with c.producer(session, realtime=False, failover=[b.url]) as p:
                await p.send_pcm(read_wav("hello_en.wav"))
                await p.stop()
            assert p.client is c.node(b.url)
            assert p.finals


class Gated:
    """A node's REST whose ingest-token minting can be held (a slow reconnect)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.open = asyncio.Event()
        self.open.set()

    @property
    def ws_url(self) -> str:
        return self.client.ws_url

    @property
    def tenant_key(self) -> str | None:
        return self.client.tenant_key

    def tenant_headers(self) -> dict[str, str]:
        return self.client.tenant_headers()

    async def ingest_token(self, session_id: str, owner_secret: str) -> wire.IngestToken:
        await self.open.wait()
        return await self.client.ingest_token(session_id, owner_secret)

    async def embed_token(
        self, session_id: str, *, owner_secret: str | None = None
    ) -> wire.ReadTokens:
        return await self.client.embed_token(session_id, owner_secret=owner_secret)

    async def transcript(
        self, session_id: str, format: Literal["json"] = "json", *, token: str | None = None
    ) -> wire.Transcript:
        return await self.client.transcript(session_id, token=token)


async def test_live_audio_is_kept_while_reconnecting_and_bounded(sqlite_url: str) -> None:
    """A live (real-time) source is never blocked by a reconnect: its audio is kept,
    up to ``max_buffer_s`` (the oldest is dropped past that, and counted), and sent
    first on the new socket."""
    frame = bytes(640)  # 20 ms of silence
    async with node(sqlite_url) as srv:
        key = await tenant_key(srv)
        async with Client(srv.url, tenant_key=key) as c:
            session = await c.create_session()
            gated = Gated(c)
            p = Producer(gated, session, realtime=True, max_buffer_s=0.2)  # 10 frames
            await p.connect()
            for _ in range(25):
                await p.send(frame)
            gated.open.clear()  # the reconnect will wait for its token
            dead = p._ws
            assert dead is not None
            dead.transport.abort()  # a network drop
            await dead.wait_closed()

            async def live(frames: int) -> None:
                for _ in range(frames):
                    await p.send(frame)

            # would block forever if sending waited for the reconnect
            await asyncio.wait_for(live(50), 20)
            assert p.frames_dropped == 40 and p.reconnects == 0
            gated.open.set()
            for _ in range(500):
                if p._ws is not dead:  # the new socket is in place
                    break
                await asyncio.sleep(0.02)
            await live(5)
            await p.stop()
            assert p.reconnects == 1 and p.frames_dropped == 40
            # 25 before the drop, the 10 kept, 5 after
            assert p.bytes_sent == 40 * 640
