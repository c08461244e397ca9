"""Caption health (issue 17): the node's latency histograms and the session's own p50/p95,
on a real server with the real sphinx engine and real viewers (WebSocket and SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import ADMIN, Running, make_settings, new_session, new_tenant, read_wav, run_server
from prometheus_client.parser import text_string_to_metric_families
from wsclients import Collected, collect, producer, stream_pcm

from mcustt.caption_health import percentile, stored_latency


@pytest.fixture
async def srv(db_url: str) -> AsyncIterator[Running]:
    # (admission control off: a busy CI machine's loop lag must not refuse the producer)
    settings = make_settings(db_url, recognizer="sphinx", max_loop_lag_ms=0)
    async with run_server(settings) as running:
        # (sphinx's workers start slowly on a busy machine: wait until it listens)
        for _ in range(600):
            if running.server.started:
                break
            await asyncio.sleep(0.1)
        yield running


async def scrape(srv: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    async with srv.client() as c:
        r = await c.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def count(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((f"{name}_count", tuple(sorted(labels.items()))), 0.0)


async def sse_finals(url: str, into: list[dict[str, Any]]) -> None:
    """Read an SSE stream until it ends, keeping its final transcript events."""
    async with httpx.AsyncClient(timeout=None) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "transcript":
                data = json.loads(line[6:])
                if data.get("isFinal"):
                    into.append(data)


async def test_histograms_and_session_figures_after_finals(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    sid = s["sessionId"]
    before = await scrape(srv)
    # Viewers on both transports, connected before any speech: every final is live.
    ws_viewer = await websockets.connect(f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}")
    seen_ws = Collected()
    ws_task = asyncio.create_task(collect(ws_viewer, seen_ws))
    seen_sse: list[dict[str, Any]] = []
    sse_url = f"{srv.url}/api/sessions/{sid}/stream?token={s['subscribeToken']}"
    sse_task = asyncio.create_task(sse_finals(sse_url, seen_sse))
    try:
        for _ in range(100):  # both viewers joined the hub
            if srv.state.hub.count(sid) >= 2:
                break
            await asyncio.sleep(0.05)
        assert srv.state.hub.count(sid) >= 2
        # two sentences around a long pause, at real-time pace (as a microphone would)
        pcm = read_wav("pause_en.wav")
        async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=True)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 30)
        finals = got.finals
        assert len(finals) >= 2, got.messages
        await asyncio.wait_for(ws_task, 10)
        await asyncio.wait_for(sse_task, 10)
    finally:
        ws_task.cancel()
        sse_task.cancel()
        with contextlib.suppress(BaseException):
            await ws_viewer.close()
    assert [f["seq"] for f in seen_ws.finals] == [f["seq"] for f in finals]
    assert [f["seq"] for f in seen_sse] == [f["seq"] for f in finals]
    # The wire shape is untouched: no internal timing field reaches a viewer.
    assert set(seen_ws.finals[0]) <= set(finals[0]) | {"speaker"}

    after = await scrape(srv)

    def grew(name: str, **labels: str) -> float:
        return count(after, name, **labels) - count(before, name, **labels)

    n = len(finals)
    # one observation per final that came after the VAD's end of its utterance (all of
    # sphinx's today; a final an engine makes on its own endpoint has no end to time)
    observed = grew("mcustt_caption_final_seconds")
    assert 0 < observed <= n
    # each final, once per live viewer and transport
    assert grew("mcustt_caption_delivery_seconds", transport="ws") == n
    assert grew("mcustt_caption_delivery_seconds", transport="sse") == n
    assert grew("mcustt_caption_first_interim_seconds") >= 1
    interims = len(got.interims)
    assert grew("mcustt_caption_interim_interval_seconds") >= interims - 2 * n
    # every observation lands in a bucket (the +Inf bucket equals the count)
    inf = after[("mcustt_caption_final_seconds_bucket", (("le", "+Inf"),))]
    assert inf == count(after, "mcustt_caption_final_seconds")

    # The session's own figures, as an operator reads them.
    async with srv.client() as c:
        r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
    assert r.status_code == 200
    latency = r.json()["latency"]
    assert latency is not None, r.json()
    assert latency["finals"] == observed
    assert isinstance(latency["finalP50Ms"], int)
    assert 0 <= latency["finalP50Ms"] <= latency["finalP95Ms"]
    assert latency["firstInterimP50Ms"] is not None
    assert latency["firstInterimP50Ms"] <= latency["firstInterimP95Ms"]
    # the end of speech is measured before the VAD's trailing silence, so the hangover
    # the engine waited for is part of the figure (well above zero)
    assert latency["finalP95Ms"] > 0

    # A viewer catching up later replays the finals: not live delivery, not counted.
    late = Collected()
    async with websockets.connect(
        f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&lastSeq=0"
    ) as v:
        await asyncio.wait_for(collect(v, late), 10)
    assert [f["seq"] for f in late.finals] == [f["seq"] for f in finals]
    again = await scrape(srv)
    assert count(again, "mcustt_caption_delivery_seconds", transport="ws") == count(
        after, "mcustt_caption_delivery_seconds", transport="ws"
    )


async def test_a_new_session_has_no_figures(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        async with srv.client() as c:
            r = await c.get(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
        assert r.status_code == 200
        assert r.json()["latency"] is None


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_stored_figures_from_another_version_are_ignored() -> None:
    assert stored_latency(None) is None
    assert stored_latency({"finalP50Ms": "fast"}) is None
    doc = stored_latency({"finalP50Ms": 120, "finals": 3, "updatedAt": 1.5})
    assert doc is not None
    assert doc["finalP50Ms"] == 120 and doc["finalP95Ms"] is None and doc["finals"] == 3
