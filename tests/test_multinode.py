"""Two server processes sharing PostgreSQL and Redis: any node serves any viewer."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets
from conftest import ADMIN, make_settings, new_session, new_tenant, read_wav, run_server, spawn_node
from sse import read_sse
from wsclients import Collected, collect, producer, silence, stream_pcm

RECOGNIZER = "sphinx"
EXPECTED = {"decided", "migration"}  # words pocketsphinx gets right in standup_en


async def _tenant(node: Any) -> dict[str, Any]:
    async with node.client() as c:
        r = await c.post(
            "/api/admin/tenants",
            json={"name": "Two nodes"},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_viewers_on_node_b_see_producer_on_node_a(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {
        "MCUSTT_DATABASE_URL": pg_url,
        "MCUSTT_REDIS_URL": redis_url,
        "MCUSTT_REDIS_PREFIX": "mn" + uuid.uuid4().hex[:8],
        "MCUSTT_RECOGNIZER": RECOGNIZER,
        "MCUSTT_RECOGNIZER_WORKERS": "1",
    }
    async with spawn_node(env, tmp_path / "a.log") as a, spawn_node(env, tmp_path / "b.log") as b:
        t = await _tenant(a)
        async with a.client() as c:
            s = (
                await c.post("/api/sessions", json={}, headers={"x-tenant-key": t["apiKey"]})
            ).json()
        # viewers on node B (tokens minted by node A verify there: shared JWT secret)
        ws_view = asyncio.create_task(_ws_view(b.ws_url, s["subscribeToken"]))
        sse_view = asyncio.create_task(_sse_view(b.url, s["sessionId"], s["embedToken"]))
        await asyncio.sleep(0.5)
        pcm = read_wav("standup_en.wav")
        async with producer(f"{a.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=False, frame=3200)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 60)
        ws_seen = await asyncio.wait_for(ws_view, 30)
        sse_seen = await asyncio.wait_for(sse_view, 30)
        finals = [(m["seq"], m["text"]) for m in got.finals]
        assert len(finals) >= 3
        assert [(m["seq"], m["text"]) for m in ws_seen.finals] == finals
        assert [(e["seq"], e["text"]) for e in sse_seen] == finals
        words = set(re.findall(r"[\w']+", " ".join(text for _, text in finals).lower()))
        assert words >= EXPECTED, finals
        assert ws_seen.messages[-1]["type"] == "session-end"
        # B reports the session A ended
        async with b.client() as c:
            state = (
                await c.get(
                    f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
                )
            ).json()
        assert state["status"] == "ended" and state["lineCount"] == len(finals)


async def _ws_view(ws_url: str, token: str) -> Collected:
    async with websockets.connect(f"{ws_url}/ws/subscribe?token={token}&lastSeq=0") as ws:
        return await collect(ws, Collected())


async def _sse_view(url: str, sid: str, token: str) -> list[dict[str, Any]]:
    out = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as c,
        c.stream("GET", f"/api/sessions/{sid}/stream?t={token}") as r,
    ):
        async for ev in read_sse(r):
            if ev.event == "transcript" and ev.data["isFinal"]:
                out.append(ev.data)
            if ev.event == "session-end":
                break
    return out


async def test_redis_drop_loses_nothing_persisted(sqlite_url: str, redis_url: str) -> None:
    settings = make_settings(
        sqlite_url, recognizer="scripted:ScriptedRecognizer", redis_url=redis_url
    )
    async with run_server(settings) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        viewer = asyncio.create_task(_ws_view(srv.ws_url, s["subscribeToken"]))
        await asyncio.sleep(0.3)
        pcm = read_wav("hello_en.wav") + silence(700)
        admin = aioredis.Redis.from_url(redis_url)
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            for i in range(6):
                await stream_pcm(ws, pcm, realtime=False, frame=3200)
                while len(got.finals) < i + 1:
                    await asyncio.sleep(0.01)
                if i == 2:
                    # Cut every pub/sub connection: the node must reconnect and resync.
                    await admin.client_kill_filter(_type="pubsub")
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 20)
        await admin.aclose()
        seen = await asyncio.wait_for(viewer, 20)
        assert (
            [m["seq"] for m in seen.finals] == [m["seq"] for m in got.finals] == list(range(1, 7))
        )
        assert seen.messages[-1]["type"] == "session-end"
