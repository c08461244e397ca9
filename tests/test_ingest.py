"""/ws/stt: the contract's socket behaviour, end to end through the real sphinx
recognizer and through a deterministic one (whose exact output lets tests check
offsets and languages). Recognition quality itself is in test_ingest_speech.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from conftest import Running, make_settings, new_session, new_tenant, read_wav, run_server
from wsclients import producer, silence, stream_pcm

from mcustt import wire

SCRIPTED = "scripted:ScriptedRecognizer"


@pytest.fixture(params=[SCRIPTED, "sphinx"], ids=["scripted", "sphinx"])
def recognizer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def srv(db_url: str, recognizer: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, recognizer=recognizer)) as running:
        yield running


async def _ready(srv: Running, **tenant: Any) -> tuple[wire.TenantWithKey, wire.SessionCreated]:
    t = await new_tenant(srv, **tenant)
    return t, await new_session(srv, t["apiKey"])


def stt(srv: Running, token: str) -> str:
    return f"{srv.ws_url}/ws/stt?token={token}"


async def test_stream_stop_persists_finals_in_order(srv: Running) -> None:
    t, s = await _ready(srv)
    pcm = read_wav("pause_en.wav")  # two sentences around an 8 s pause
    async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
        await stream_pcm(ws, pcm, realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 20)
    assert got.messages[0] == {"type": "ready", "sessionId": s["sessionId"]}
    finals = got.finals
    assert [f["seq"] for f in finals] == [1, 2], got.messages
    # every final is preceded by an interim of the same seq, and session-end is last
    for f in finals:
        first_interim = next(i for i, m in enumerate(got.messages) if m.get("seq") == f["seq"])
        assert got.messages[first_interim]["isFinal"] is False
    assert got.messages[-1]["type"] == "session-end"
    assert got.close_code == 1000
    async with srv.client() as c:
        doc = (
            await c.get(
                f"/api/sessions/{s['sessionId']}/transcript", headers={"x-tenant-key": t["apiKey"]}
            )
        ).json()
    assert [line["seq"] for line in doc["lines"]] == [1, 2]
    # the pause is not speech: the second line starts after it (offsets in session audio)
    assert doc["lines"][1]["startMs"] > 10_000 > doc["lines"][0]["endMs"]
    state = await srv.stored_session(s["sessionId"])
    assert state.status == "ended"


async def test_ping_and_bad_control_are_not_fatal(srv: Running) -> None:
    _, s = await _ready(srv)
    async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
        await ws.send(json.dumps({"type": "ping", "ts": 12345}))
        await ws.send("{not json")
        await ws.send(json.dumps({"type": "dance"}))
        await ws.send(json.dumps([1, 2]))
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 10)
    assert got.messages[1] == {"type": "pong", "ts": 12345}
    errors = [m for m in got.messages if m["type"] == "error"]
    assert len(errors) == 3 and not any(e["fatal"] for e in errors)
    assert errors[1]["code"] == "UNKNOWN_CONTROL"
    assert got.close_code == 1000


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", 1003, "INVALID_AUDIO_FORMAT"),
        (b"\x01\x02\x03", 1003, "INVALID_AUDIO_FORMAT"),
        (b"\x00" * (1024 * 1024 + 2), 1009, "FRAME_TOO_LARGE"),
        (json.dumps({"type": "ping", "pad": "x" * 9000}), 1009, "FRAME_TOO_LARGE"),
    ],
    ids=["riff", "odd", "over-1MB", "control-over-8KB"],
)
async def test_bad_frames_close_with_contract_codes(
    sqlite_url: str, recognizer: str, frame: bytes | str, code: int, reason: str
) -> None:
    async with run_server(make_settings(sqlite_url, recognizer=recognizer)) as srv:
        t, s = await _ready(srv)
        pcm = read_wav("hello_en.wav")
        async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
            await stream_pcm(ws, pcm, realtime=False)
            await ws.send(frame)
            await asyncio.wait_for(task, 10)
        assert (got.close_code, got.close_reason) == (code, reason)
        fatal = [m for m in got.messages if m["type"] == "error"]
        assert fatal and fatal[-1]["fatal"] is True
        # what was accepted before the bad frame is not lost
        lines = await srv.state.repo.lines(s["sessionId"])
        assert len(lines) == 1 and lines[0].text == got.finals[0]["text"]
        # the session is still live: the producer can come back
        assert (await srv.stored_session(s["sessionId"])).status == "live"


async def test_reconnect_continues_seq(srv: Running) -> None:
    t, s = await _ready(srv)
    pcm = read_wav("hello_en.wav")
    async with producer(stt(srv, s["ingestToken"])) as (ws, got1, task):
        await stream_pcm(ws, pcm, realtime=False)
        await ws.send(silence(1000))
    # the server finalizes the dropped producer's utterance, then frees the slot
    for _ in range(200):
        if not (await srv.stored_session(s["sessionId"])).producer_id:
            break
        await asyncio.sleep(0.05)
    # the used token is burned
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(stt(srv, s["ingestToken"]))
    assert refused.value.response.status_code == 401
    async with srv.client() as c:
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
        )
    assert r.status_code == 200
    async with producer(stt(srv, r.json()["ingestToken"])) as (ws, got2, task):
        await stream_pcm(ws, pcm, realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 10)
    # the first producer hung up mid-utterance: its final was persisted on the way out
    assert [f["seq"] for f in got2.finals] == [2]
    lines = await srv.state.repo.lines(s["sessionId"])
    assert [(ln.seq) for ln in lines] == [1, 2]
    assert lines[1].start_ms >= lines[0].end_ms  # session audio time continues too


async def test_second_producer_gets_409(srv: Running) -> None:
    _, s = await _ready(srv)
    async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
        await asyncio.sleep(0.1)
        async with srv.client() as c:
            r = await c.post(
                f"/api/sessions/{s['sessionId']}/ingest-token",
                json={"ownerSecret": s["ownerSecret"]},
            )
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(stt(srv, r.json()["ingestToken"]))
        assert refused.value.response.status_code == 409
        body = json.loads(refused.value.response.body)
        assert body["error"]["code"] == "ALREADY_CONNECTED"


async def test_idle_timeout_keeps_session_resumable(sqlite_url: str, recognizer: str) -> None:
    async with run_server(
        make_settings(sqlite_url, recognizer=recognizer, ingest_idle_timeout_s=1.0)
    ) as srv:
        _, s = await _ready(srv)
        async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
            await ws.send(silence(100))
            for _ in range(3):  # pings are not audio: they do not keep it open
                await ws.send(json.dumps({"type": "ping", "ts": 1}))
                await asyncio.sleep(0.4)
            await asyncio.wait_for(task, 5)
        assert (got.close_code, got.close_reason) == (1000, "IDLE_TIMEOUT")
        assert (await srv.stored_session(s["sessionId"])).status == "live"
        async with srv.client() as c:
            r = await c.post(
                f"/api/sessions/{s['sessionId']}/ingest-token",
                json={"ownerSecret": s["ownerSecret"]},
            )
        async with producer(stt(srv, r.json()["ingestToken"])) as (ws, got, task):
            await asyncio.sleep(0.1)
        assert got.messages[0]["type"] == "ready"


async def test_ended_session_cannot_be_ingested(srv: Running) -> None:
    t, s = await _ready(srv)
    async with srv.client() as c:
        await c.delete(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]})
        r = await c.post(
            f"/api/sessions/{s['sessionId']}/ingest-token", json={"ownerSecret": s["ownerSecret"]}
        )
    assert r.status_code == 409
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(stt(srv, s["ingestToken"]))
    assert refused.value.response.status_code == 409


async def test_delete_while_streaming_ends_producer(srv: Running) -> None:
    t, s = await _ready(srv)
    pcm = read_wav("hello_en.wav")
    async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
        await stream_pcm(ws, pcm[: len(pcm) // 2], realtime=False)
        async with srv.client() as c:
            r = await c.delete(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
        assert r.json()["status"] == "ended"
        await asyncio.wait_for(task, 10)
    # the half utterance was finalized and persisted before the end
    assert got.finals and got.messages[-1]["type"] == "session-end"
    assert got.close_code == 1000
    assert len(await srv.state.repo.lines(s["sessionId"])) == len(got.finals)


async def test_zero_ceremony_creates_session(srv: Running) -> None:
    t = await new_tenant(srv)
    url = f"{srv.ws_url}/ws/stt?sourceLang=es-ES&autoDetect=false"
    async with producer(url, additional_headers={"x-tenant-key": t["apiKey"]}) as (ws, got, task):
        await stream_pcm(ws, read_wav("hola_es.wav"), realtime=False)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(task, 10)
    ready = got.messages[0]
    assert ready["type"] == "ready"
    assert {"sessionId", "embedUrl", "subscribeUrl", "ownerSecret"} <= set(ready)
    assert ready["embedUrl"].startswith(f"{srv.url}/embed/{ready['sessionId']}#t=")
    if srv.settings.recognizer == SCRIPTED:
        assert got.finals[0]["lang"] == "es-ES"  # pocketsphinx only knows en-US
    session = await srv.stored_session(ready["sessionId"])
    assert (session.source_lang, session.auto_detect) == ("es-ES", False)


async def test_bad_credentials_refused_before_upgrade(srv: Running) -> None:
    t, s = await _ready(srv)
    for url, headers, status in [
        (f"{srv.ws_url}/ws/stt", {}, 401),
        (stt(srv, "garbage"), {}, 401),
        (stt(srv, s["subscribeToken"]), {}, 401),  # a read token never ingests
        (f"{srv.ws_url}/ws/stt", {"x-tenant-key": "sk_mcustt_nope"}, 401),
    ]:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers)
        assert refused.value.response.status_code == status
        assert "error" in json.loads(refused.value.response.body)


async def test_concurrent_ingest_cap(sqlite_url: str, recognizer: str) -> None:
    async with run_server(
        make_settings(sqlite_url, recognizer=recognizer, max_concurrent_ingest=1)
    ) as srv:
        t = await new_tenant(srv)
        a = await new_session(srv, t["apiKey"])
        b = await new_session(srv, t["apiKey"])
        async with producer(stt(srv, a["ingestToken"])) as (ws, got, task):
            await asyncio.sleep(0.1)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(stt(srv, b["ingestToken"]))
            assert refused.value.response.status_code == 429
            assert json.loads(refused.value.response.body)["error"]["code"] == "INGEST_CAP"
        await asyncio.sleep(0.2)
        # the token was not burned by the refusal, and the slot is free again
        async with producer(stt(srv, b["ingestToken"])) as (ws, got, task):
            await asyncio.sleep(0.1)
        assert got.messages[0]["type"] == "ready"


async def test_daily_cap_ends_session(sqlite_url: str, recognizer: str) -> None:
    async with run_server(make_settings(sqlite_url, recognizer=recognizer)) as srv:
        t, s = await _ready(srv, dailyMinutesCap=1)
        speech = read_wav("hello_en.wav")
        async with producer(stt(srv, s["ingestToken"])) as (ws, got, task):
            for _ in range(14):  # ~69 s of audio, over the 1 minute cap
                await stream_pcm(ws, speech, realtime=False, frame=3200)
            await asyncio.wait_for(task, 120)
        fatal = [m for m in got.messages if m["type"] == "error"]
        assert fatal[-1]["code"] == "DAILY_CAP_REACHED" and fatal[-1]["fatal"]
        assert got.messages[-1]["type"] == "session-end"
        assert got.close_code == 1008
        session = await srv.stored_session(s["sessionId"])
        assert session.status == "ended" and session.end_reason == "daily-cap"
        # finals emitted before the cap are persisted
        assert len(await srv.state.repo.lines(s["sessionId"])) == len(got.finals) >= 10
        # and the tenant cannot start another stream today
        s2 = await new_session(srv, t["apiKey"])
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(stt(srv, s2["ingestToken"]))
        assert refused.value.response.status_code == 429
