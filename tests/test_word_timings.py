"""Word timings and confidence of finals (issue 17), from real speech through sphinx:
live (producer, subscriber, SSE; per connection with ``?words=1`` or for the whole
session with ``words: true``), replay (``lastSeq``, ``Last-Event-ID``) and exports."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import Running, make_settings, new_session, new_tenant, read_wav, run_server
from sse import read_sse
from wsclients import Collected, collect, producer, silence, stream_pcm

TIMING = ("startMs", "endMs", "confidence")


@pytest.fixture
async def sphinx_server(db_url: str) -> AsyncIterator[Running]:
    async with run_server(
        make_settings(db_url, recognizer="sphinx", recognizer_workers=1, max_loop_lag_ms=0)
    ) as srv:
        yield srv


def check_final(final: dict[str, Any], *, words: bool) -> None:
    """Every final has its timing fields; its words (when sent) are its text's words,
    in order, inside the final's span, in session time."""
    assert isinstance(final["startMs"], int) and final["startMs"] <= final["endMs"], final
    assert "confidence" in final and final["confidence"] is None  # sphinx gives none
    if not words:
        assert "words" not in final, final
        return
    ws = final["words"]
    assert [w["text"] for w in ws] == final["text"].split(), final
    assert all(set(w) == {"text", "startMs", "endMs", "confidence"} for w in ws)
    for a, b in itertools.pairwise(ws):
        assert a["startMs"] <= b["startMs"] and a["endMs"] <= b["startMs"] + 10, final
    for w in ws:
        assert final["startMs"] <= w["startMs"] <= w["endMs"] <= final["endMs"], final
        assert w["confidence"] is None


async def subscriber(url: str) -> tuple[Any, Collected, asyncio.Task[Collected]]:
    ws = await websockets.connect(url)
    got = Collected()
    return ws, got, asyncio.create_task(collect(ws, got))


async def sse_finals(srv: Running, sid: str, token: str, **params: str) -> list[dict[str, Any]]:
    """The SSE feed of an ended session, read to its end: its finals (with their ids)."""
    out = []
    async with (
        httpx.AsyncClient(base_url=srv.url, timeout=30) as c,
        c.stream("GET", f"/api/sessions/{sid}/stream", params={"t": token, **params}) as response,
    ):
        assert response.status_code == 200
        async for ev in read_sse(response):
            if ev.event == "transcript" and ev.data["isFinal"]:
                assert ev.id == str(ev.data["seq"])
                out.append({"type": "transcript", **ev.data})
            if ev.event == "session-end":
                break
    return out


async def speak(srv: Running, url: str, wav: str, *, end: bool) -> Collected:
    async with producer(url) as (ws, got, task):
        await stream_pcm(ws, read_wav(wav) + silence(800), realtime=False)
        if end:
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 60)
        else:
            # Leave without ending the session: wait for the finals, then hang up.
            await ws.send(json.dumps({"type": "ping", "ts": 1}))
            for _ in range(600):
                if got.finals and any(m["type"] == "pong" for m in got.messages):
                    break
                await asyncio.sleep(0.05)
    return got


async def test_per_connection_words_live_replay_and_export(sphinx_server: Running) -> None:
    srv = sphinx_server
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    sid, sub_url = s["sessionId"], s["subscribeUrl"].split("?")[0]
    plain = await subscriber(f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}")
    worded = await subscriber(f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&words=1")
    assert sub_url.endswith("/ws/subscribe")

    # First connection: the producer asks for words on its own socket.
    first = await speak(
        srv, f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&words=1", "hello_en.wav", end=False
    )
    assert first.finals
    for f in first.finals:
        check_final(f, words=True)
    # A reconnect (a new ingest token) goes on in session time, after the first audio.
    async with httpx.AsyncClient(base_url=srv.url) as c:
        # The producer that left holds its claim until its last final is stored.
        for _ in range(200):
            state = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
            if not state.json()["ingestConnected"]:
                break
            await asyncio.sleep(0.05)
        r = await c.post(
            f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
        )
        assert r.status_code == 200, r.text
        token = r.json()["ingestToken"]
    second = await speak(srv, f"{srv.ws_url}/ws/stt?token={token}", "hello_en.wav", end=True)
    assert second.finals
    for f in second.finals:
        check_final(f, words=False)  # this producer did not ask
    first_audio_ms = (len(read_wav("hello_en.wav")) + len(silence(800))) // 32
    assert all(f["startMs"] >= first_audio_ms - 50 for f in second.finals)

    live: dict[str, list[dict[str, Any]]] = {}
    for name, (_ws, got, task) in (("plain", plain), ("worded", worded)):
        await asyncio.wait_for(task, 30)  # session-end closes them
        live[name] = got.finals
    n = len(first.finals) + len(second.finals)
    assert [f["seq"] for f in live["worded"]] == list(range(1, n + 1))
    for f in live["plain"]:
        check_final(f, words=False)
    for f in live["worded"]:
        check_final(f, words=True)
    # the same finals, with and without their words
    assert [{k: v for k, v in f.items() if k != "words"} for f in live["worded"]] == live["plain"]
    # session time across the reconnect: the second connection's words come later
    last_first = live["worded"][len(first.finals) - 1]["words"][-1]["endMs"]
    assert live["worded"][len(first.finals)]["words"][0]["startMs"] >= last_first
    assert live["worded"][: len(first.finals)] == first.finals

    # Replay from the store carries exactly what live did.
    for params, want in (("&words=1", live["worded"]), ("", live["plain"])):
        ws, got, task = await subscriber(
            f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&lastSeq=0{params}"
        )
        await asyncio.wait_for(task, 30)
        assert got.finals == want
    assert await sse_finals(srv, sid, s["embedToken"], words="1", lastEventId="0") == live["worded"]
    assert await sse_finals(srv, sid, s["embedToken"], lastEventId="0") == live["plain"]

    # The json export always has them (and txt/srt/vtt are built from them).
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.get(f"/api/sessions/{sid}/transcript", headers={"x-tenant-key": t["apiKey"]})
    lines = r.json()["lines"]
    assert [(x["seq"], x["startMs"], x["endMs"], x["confidence"], x["words"]) for x in lines] == [
        (f["seq"], f["startMs"], f["endMs"], f["confidence"], f["words"]) for f in live["worded"]
    ]


async def test_a_session_created_with_words_gives_them_to_every_connection(
    sphinx_server: Running,
) -> None:
    srv = sphinx_server
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"], words=True)
    sid = s["sessionId"]
    async with httpx.AsyncClient(base_url=srv.url) as c:
        state = (await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})).json()
    assert state["words"] is True
    ws, sub, task = await subscriber(f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}")
    # A live SSE viewer too (no replay position: it sees only what comes live).
    sse_live = asyncio.create_task(sse_finals(srv, sid, s["embedToken"]))
    async with httpx.AsyncClient(base_url=srv.url) as c:
        for _ in range(200):
            state = (
                await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
            ).json()
            if state["subscribers"] >= 2:
                break
            await asyncio.sleep(0.05)
    got = await speak(
        srv, f"{srv.ws_url}/ws/stt?token={s['ingestToken']}", "hello_en.wav", end=True
    )
    await asyncio.wait_for(task, 30)
    assert got.finals and sub.finals == got.finals
    assert await asyncio.wait_for(sse_live, 30) == got.finals
    for f in got.finals:
        check_final(f, words=True)
    assert await sse_finals(srv, sid, s["embedToken"], lastEventId="0") == got.finals
    # interims never carry timings
    assert all(not set(TIMING) & set(m) for m in got.interims)


async def test_a_bad_words_value_is_refused_before_the_stream(sqlite_url: str) -> None:
    async with run_server(make_settings(sqlite_url, max_loop_lag_ms=0)) as srv:
        await _bad_words(srv)


async def _bad_words(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"])
    for url in (
        f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&words=maybe",
        f"{srv.ws_url}/ws/stt?token={s['ingestToken']}&words=2",
    ):
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(url):
                pass
        assert err.value.response.status_code == 400
        assert b"words" in err.value.response.body
    async with httpx.AsyncClient(base_url=srv.url) as c:
        r = await c.get(
            f"/api/sessions/{s['sessionId']}/stream", params={"t": s["embedToken"], "words": "x"}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST"
