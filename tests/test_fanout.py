"""Fan-out: replay without gap or duplicate, SSE, slow viewers, origin policy."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from conftest import Running, make_settings, new_session, new_tenant, read_wav, run_server
from sse import read_sse
from wsclients import Collected, collect, producer, silence, stream_pcm

from mcustt import wire

SCRIPTED = "scripted:ScriptedRecognizer"
UTTERANCES = 10


@pytest.fixture
async def srv(db_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, recognizer=SCRIPTED)) as running:
        yield running


async def produce(
    srv: Running, s: wire.SessionCreated, count: int, progress: asyncio.Queue[int]
) -> None:
    """Stream `count` utterances (one final each), paced, then stop."""
    pcm = read_wav("hello_en.wav") + silence(700)
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
        for i in range(count):
            await stream_pcm(ws, pcm, realtime=False, frame=3200)
            while len(got.finals) < i + 1:
                await asyncio.sleep(0.01)
            await progress.put(i + 1)
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 20)


async def ws_viewer(srv: Running, s: wire.SessionCreated, last_seq: int | None) -> Collected:
    url = f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}"
    if last_seq is not None:
        url += f"&lastSeq={last_seq}"
    async with websockets.connect(url) as ws:
        return await asyncio.wait_for(collect(ws, Collected()), 60)


async def sse_viewer(
    srv: Running, s: wire.SessionCreated, last_id: int | None, *, header: bool
) -> list[Any]:
    url = f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}"
    headers = {}
    if last_id is not None:
        if header:
            headers["Last-Event-ID"] = str(last_id)
        else:
            url += f"&lastEventId={last_id}"
    out = []
    async with srv.client() as c, c.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        async for ev in read_sse(r):
            out.append(ev)
            if ev.event == "session-end":
                break
    return out


def assert_exactly_once(seqs: list[int], after: int, total: int) -> None:
    assert seqs == list(range(after + 1, total + 1)), seqs


async def test_replay_with_concurrent_finals(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    progress: asyncio.Queue[int] = asyncio.Queue()
    prod = asyncio.create_task(produce(srv, s, UTTERANCES, progress))
    viewers: list[tuple[str, int, asyncio.Task[Any]]] = []
    viewers.append(("ws", 0, asyncio.create_task(ws_viewer(srv, s, 0))))
    viewers.append(("sse-header", 0, asyncio.create_task(sse_viewer(srv, s, 0, header=True))))
    while (await progress.get()) < 4:
        pass
    # mid-stream: finals are still being produced while these replay
    viewers.append(("ws", 2, asyncio.create_task(ws_viewer(srv, s, 2))))
    viewers.append(("sse-header", 3, asyncio.create_task(sse_viewer(srv, s, 3, header=True))))
    viewers.append(("sse-query", 1, asyncio.create_task(sse_viewer(srv, s, 1, header=False))))
    await prod
    # after the end: the replay of what is left, then session-end
    viewers.append(("ws", UTTERANCES, asyncio.create_task(ws_viewer(srv, s, UTTERANCES))))
    viewers.append(("ws", 7, asyncio.create_task(ws_viewer(srv, s, 7))))
    viewers.append(("sse-header", 5, asyncio.create_task(sse_viewer(srv, s, 5, header=True))))
    for kind, after, task in viewers:
        result = await task
        if kind == "ws":
            assert result.messages[-1]["type"] == "session-end"
            assert_exactly_once([m["seq"] for m in result.finals], after, UTTERANCES)
        else:
            assert result[0].event == "ready" and result[-1].event == "session-end"
            finals = [e for e in result if e.event == "transcript" and e.data["isFinal"]]
            assert_exactly_once([e.data["seq"] for e in finals], after, UTTERANCES)
            assert all(e.id == str(e.data["seq"]) for e in finals)  # SSE id: <seq>
            assert all(
                e.id is None for e in result if e.event == "transcript" and not e.data["isFinal"]
            )


async def test_live_viewer_sees_interim_then_final_same_as_producer(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    viewer = asyncio.create_task(ws_viewer(srv, s, None))
    await asyncio.sleep(0.2)
    pcm = read_wav("hello_en.wav")
    async with producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws, got, task):
        await stream_pcm(ws, pcm, realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 10)
    seen = await viewer
    producer_events = [
        m for m in got.messages if m["type"] in ("transcript", "language", "session-end")
    ]
    assert seen.messages == producer_events  # the same frames as the ingest socket
    kinds = [(m["type"], m.get("isFinal")) for m in seen.messages]
    assert kinds.index(("transcript", False)) < kinds.index(("transcript", True))


async def test_binary_frame_on_subscribe_closes_1003(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    async with websockets.connect(f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}") as ws:
        await ws.send(b"\x00\x01")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1003


async def test_subscribe_upgrade_errors(srv: Running) -> None:
    t = await new_tenant(srv, allowedOrigins=["https://good.example"])
    s = await new_session(srv, t["apiKey"])
    base = f"{srv.ws_url}/ws/subscribe"
    cases = [
        (base, {}, 401),
        (f"{base}?token=nope", {}, 401),
        (f"{base}?token={s['ingestToken']}", {}, 401),  # wrong scope
        (f"{base}?token={s['subscribeToken']}&lastSeq=abc", {}, 400),
        (f"{base}?token={s['subscribeToken']}", {"Origin": "https://evil.example"}, 403),
    ]
    for url, headers, status in cases:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        assert refused.value.response.status_code == status, url
    async with websockets.connect(
        f"{base}?token={s['subscribeToken']}", additional_headers={"Origin": "https://good.example"}
    ):
        pass
    async with srv.client() as c:
        r = await c.get(
            f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}",
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "ORIGIN_FORBIDDEN"
        r = await c.get(f"/api/sessions/OTHER12345/stream?t={s['embedToken']}")
        assert r.status_code == 401
        # the embed page may only be framed by the tenant's origins
        r = await c.get(f"/embed/{s['sessionId']}")
        assert "frame-ancestors 'self' https://good.example" in r.headers["content-security-policy"]


async def _stuck_viewer(srv: Running, token: str) -> socket.socket:
    """A WebSocket viewer that completes the handshake and then never reads.

    Non-blocking: the server under test runs in this same event loop.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    port = int(srv.url.rsplit(":", 1)[1])
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(
        sock,
        (
            f"GET /ws/subscribe?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode(),
    )
    head = await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
    assert b"101" in head.split(b"\r\n")[0]
    return sock


async def test_slow_viewer_is_dropped_without_delaying_others(sqlite_url: str) -> None:
    async with run_server(
        make_settings(sqlite_url, recognizer=SCRIPTED, viewer_queue_size=16)
    ) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        stuck = await _stuck_viewer(srv, s["subscribeToken"])
        fast_url = f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}"
        received: list[float] = []
        count = 400
        async with websockets.connect(fast_url) as fast:
            await asyncio.sleep(0.2)
            assert srv.state.hub.count(s["sessionId"]) == 2
            big = "word " * 2000  # 10 KB events fill the stuck viewer's buffers fast
            sent_at: list[float] = []

            async def read_fast() -> None:
                for _ in range(count):
                    json.loads(await fast.recv())
                    received.append(time.monotonic())

            reader = asyncio.create_task(read_fast())
            for i in range(count):
                sent_at.append(time.monotonic())
                await srv.state.hub.publish(
                    s["sessionId"],
                    {
                        "type": "transcript",
                        "text": big,
                        "isFinal": False,
                        "seq": i + 1,
                        "lang": "en-US",
                        "ts": 0,
                    },
                )
                await asyncio.sleep(0.001)  # a (very) busy live session
            await asyncio.wait_for(reader, 30)
            # the stuck viewer was kicked; the fast one got everything, promptly
            lag = max(r - s for r, s in zip(received, sent_at, strict=True))
            assert lag < 2.0, lag
            for _ in range(100):
                if srv.state.hub.count(s["sessionId"]) == 1:
                    break
                await asyncio.sleep(0.05)
            assert srv.state.hub.count(s["sessionId"]) == 1
            assert srv.state.metrics.viewers_kicked._value.get() == 1
        stuck.close()


async def test_ended_session_viewer_gets_replay_and_end(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    for seq in (1, 2, 3):
        await srv.state.repo.append_final(
            s["sessionId"],
            seq=seq,
            text=f"line {seq}",
            lang="en-US",
            ts=0,
            start_ms=0,
            end_ms=1,
            audio_ms=0,
        )
    async with srv.client() as c:
        await c.delete(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]})
    got = await ws_viewer(srv, s, 1)
    assert [m.get("seq") for m in got.messages] == [2, 3, None]
    assert got.messages[-1]["type"] == "session-end"
    events = await sse_viewer(srv, s, 0, header=True)
    assert [e.event for e in events] == [
        "ready",
        "transcript",
        "transcript",
        "transcript",
        "session-end",
    ]
    assert events[0].data["status"] == "ended"


async def test_sse_stream_ends_when_the_server_shuts_down(sqlite_url: str) -> None:
    """uvicorn waits for open responses before the lifespan shutdown: the hub ends SSE
    streams (with a reason) as soon as the server starts shutting down, not 15 s later."""
    async with run_server(make_settings(sqlite_url)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        url = f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}"
        async with srv.client() as c, c.stream("GET", url) as r:
            events = read_sse(r)
            assert (await anext(events)).event == "ready"
            srv.server.should_exit = True  # what uvicorn's SIGTERM handler does
            started = time.monotonic()
            rest = [e async for e in events]
            assert time.monotonic() - started < 3
        assert [e.event for e in rest] == ["error"]
        assert rest[0].data["code"] == "SERVER_SHUTDOWN" and rest[0].data["fatal"] is True
        await asyncio.wait_for(srv.task, 10)  # and the server is not kept waiting
