"""Participant tracks (issue 14): one producer per participant, names on every caption.

Two participants talk over each other on ``/ws/stt`` (real speech, pocketsphinx): each
track has its own VAD and recognizer stream, their finals share the session's gap-free
seq, every transcript event names its speaker, and every consumer (the producers'
sockets, ``/ws/subscribe``, SSE) holds both live lines at once and gets each final once.
Plus the per-participant claim (409), tokens, caps, a WHIP participant, and the mixed
producer next to participants.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import websockets
from conftest import (
    ADMIN,
    Running,
    make_settings,
    new_session,
    new_tenant,
    read_wav,
    run_server,
    spawn_node,
)
from sse import read_sse
from websockets.asyncio.client import ClientConnection
from whipclient import close, publish, wait_connected
from wsclients import FRAME, producer, silence

from mcustt import events, wire
from mcustt.events import Event
from mcustt.fanout import Follow, Viewer
from mcustt.store.models import TranscriptLine
from mcustt.store.repo import Repo

#: words pocketsphinx reliably hears in each fixture (checked on both databases)
PRIYA_WORDS = {"weekly"}  # hello_en: "Hello everyone, welcome to the weekly planning call."
# standup_en 6.0-11.5 s: "The billing page is ready for review. We decided to ship it on
# Friday." Endpointing (issue 17) ends the first sentence at its pause, and sphinx then hears
# "friday" as "cry": "decided" is the word it gets right on its own.
OMAR_WORDS = {"decided"}
OMAR_SLICE = slice(6_000 * 32, 11_500 * 32)  # PCM16 16 kHz: 32 bytes a millisecond


@pytest.fixture
async def srv(db_url: str) -> AsyncIterator[Running]:
    settings = make_settings(db_url, recognizer="sphinx", recognizer_workers=2)
    async with run_server(settings) as running:
        yield running


async def mint(
    c: httpx.AsyncClient,
    s: wire.SessionCreated,
    participant: dict[str, str] | None,
    *,
    tenant_key: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {}
    headers = {}
    if tenant_key is not None:
        headers["x-tenant-key"] = tenant_key
    else:
        body["ownerSecret"] = s["ownerSecret"]
    if participant is not None:
        body["participant"] = participant
    return await c.post(f"/api/sessions/{s['sessionId']}/ingest-token", json=body, headers=headers)


async def token_for(srv: Running, s: wire.SessionCreated, pid: str, name: str) -> str:
    async with srv.client() as c:
        r = await mint(c, s, {"id": pid, "name": name})
    assert r.status_code == 200, r.text
    token: str = r.json()["ingestToken"]
    return token


async def paced(ws: ClientConnection, pcm: bytes, *, speed: float) -> None:
    """Send PCM in 20 ms frames at ``speed`` times real time."""
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(pcm), FRAME)):
        await ws.send(pcm[offset : offset + FRAME])
        delay = start + (i + 1) * FRAME / 32000 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class LiveLines:
    """What a caption display does: one live line per speaker, replaced by its final."""

    def __init__(self) -> None:
        self.live: dict[str, str] = {}
        self.most = 0
        self.finals: list[dict[str, Any]] = []

    def feed(self, event: dict[str, Any]) -> None:
        who = (event.get("speaker") or {}).get("id", "")
        if event["isFinal"]:
            self.live.pop(who, None)
            self.finals.append(event)
        else:
            self.live[who] = event["text"]
            self.most = max(self.most, len(self.live))


async def ws_viewer(srv: Running, s: wire.SessionCreated) -> LiveLines:
    lines = LiveLines()
    url = f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&lastSeq=0"
    async with websockets.connect(url) as ws:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "transcript":
                lines.feed(event)
            elif event["type"] == "session-end":
                break
    return lines


async def sse_viewer(srv: Running, s: wire.SessionCreated) -> LiveLines:
    lines = LiveLines()
    url = f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}"
    async with (
        srv.client() as c,
        c.stream("GET", url, headers={"Last-Event-ID": "0"}) as r,
    ):
        assert r.status_code == 200
        async for ev in read_sse(r):
            if ev.event == "transcript":
                lines.feed(ev.data)
            elif ev.event == "session-end":
                break
    return lines


def words_of(finals: list[dict[str, Any]], speaker: str) -> set[str]:
    said = " ".join(f["text"] for f in finals if f["speaker"]["id"] == speaker)
    return set(re.findall(r"[\w']+", said.lower()))


async def test_two_participants_talking_over_each_other(srv: Running) -> None:
    t = await new_tenant(srv)
    s = await new_session(srv, t["apiKey"], title="standup")
    sid = s["sessionId"]
    priya = await token_for(srv, s, "p1", "Priya")
    omar = await token_for(srv, s, "omar@example.com", "Omar")
    viewers = [
        asyncio.create_task(ws_viewer(srv, s)),
        asyncio.create_task(sse_viewer(srv, s)),
    ]
    await asyncio.sleep(0.5)  # both viewers joined (lastSeq 0 would replay finals anyway)

    priya_pcm = read_wav("hello_en.wav") + silence(600)
    omar_pcm = read_wav("standup_en.wav")[OMAR_SLICE] + silence(600)
    async with (
        producer(f"{srv.ws_url}/ws/stt?token={priya}") as (ws1, got1, task1),
        producer(f"{srv.ws_url}/ws/stt?token={omar}") as (ws2, got2, task2),
    ):
        # both talk at once: pacing at 1.5x real time keeps both lines live together
        await asyncio.gather(paced(ws1, priya_pcm, speed=1.5), paced(ws2, omar_pcm, speed=1.5))
        async with srv.client() as c:
            r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
        assert r.json()["ingestConnected"] is True and r.json()["status"] == "live"
        # One participant's stop ends its own track, not everyone's session.
        for ws in (ws1, ws2):
            await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(asyncio.gather(task1, task2), 60)
    for got in (got1, got2):
        assert got.messages[0] == {"type": "ready", "sessionId": sid}
        assert got.close_code == 1000 and got.close_reason == "STOP"
        assert "session-end" not in got.types()
    assert (await srv.stored_session(sid)).status == "live"

    # The ingest sockets: each its own track's events only, with its speaker.
    for got, speaker in ((got1, {"id": "p1", "name": "Priya"}), (got2, None)):
        transcripts = got.finals + got.interims
        assert transcripts
        if speaker is not None:
            assert all(m["speaker"] == speaker for m in transcripts)
    assert all(m["speaker"]["id"] == "omar@example.com" for m in got2.finals + got2.interims)
    assert got2.finals[0]["speaker"]["name"] == "Omar"

    async with srv.client() as c:
        r = await c.delete(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200, r.text
    ws_lines, sse_lines = await asyncio.wait_for(asyncio.gather(*viewers), 30)

    finals = got1.finals + got2.finals
    finals.sort(key=lambda f: f["seq"])
    print("finals:", [(f["seq"], f["speaker"]["name"], f["text"]) for f in finals])
    # One gap-free seq across both tracks, each final once.
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    assert words_of(finals, "p1") >= PRIYA_WORDS
    assert words_of(finals, "omar@example.com") >= OMAR_WORDS
    for lines in (ws_lines, sse_lines):
        # each final once, in seq order, as the producers got them (SSE drops `type`)
        assert [f["seq"] for f in lines.finals] == [f["seq"] for f in finals]
        assert [(f["text"], f["speaker"]) for f in lines.finals] == [
            (f["text"], f["speaker"]) for f in finals
        ]
        # both speakers' live lines were up at the same moment, neither overwriting
        assert lines.most == 2
        assert lines.live == {}  # every live line became a final

    # Persisted with the speaker; the transcript names it.
    stored = await srv.state.repo.lines(sid)
    assert [(ln.seq, ln.speaker) for ln in stored] == [
        (f["seq"], f["speaker"]["id"]) for f in finals
    ]
    assert await srv.state.repo.speaker_names(sid) == {"p1": "Priya", "omar@example.com": "Omar"}


async def test_claims_and_tokens_per_participant(db_url: str) -> None:
    async with run_server(make_settings(db_url)) as srv, srv.client() as c:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        # The tenant key may mint a participant-bound token; a name defaults to the id.
        r = await mint(c, s, {"id": "p1"}, tenant_key=t["apiKey"])
        assert r.status_code == 200, r.text
        p1_old = r.json()["ingestToken"]
        assert r.json()["ingestUrl"].endswith(p1_old)
        # ...but not the mixed producer's (owner secret only, as before).
        r = await mint(c, s, None, tenant_key=t["apiKey"])
        assert r.status_code == 401 and r.json()["error"]["code"] == "WRONG_CREDENTIAL"
        # A newer token of the same participant replaces its unused one; another
        # participant's token is untouched.
        p1 = (await mint(c, s, {"id": "p1", "name": "Priya"})).json()["ingestToken"]
        p2 = (await mint(c, s, {"id": "p2", "name": "Omar"})).json()["ingestToken"]
        for bad in (
            {"id": ""},
            {"id": "a b"},
            {"id": "x" * 65},
            {"id": "p3", "name": ""},
            {"id": "p3", "name": "n" * 101},
            {"id": "p3", "name": "\n\t "},
            {"name": "no id"},
        ):
            r = await mint(c, s, bad)
            assert r.status_code == 400, (bad, r.text)

        async def connect(token: str) -> int:
            try:
                async with websockets.connect(f"{srv.ws_url}/ws/stt?token={token}") as ws:
                    await ws.recv()  # ready
                    return 101
            except websockets.InvalidStatus as exc:
                return exc.response.status_code

        async with (
            producer(f"{srv.ws_url}/ws/stt?token={p1}") as (ws1, got1, _),
            producer(f"{srv.ws_url}/ws/stt?token={p2}") as (ws2, got2, _),
            producer(f"{srv.ws_url}/ws/stt?token={s['ingestToken']}") as (ws3, got3, _),
        ):
            # Two participants and the mixed producer at once: all admitted.
            await ws1.send(silence(100))
            await ws2.send(silence(100))
            await ws3.send(silence(100))
            await asyncio.sleep(0.2)
            for got in (got1, got2, got3):
                assert got.messages and got.messages[0]["type"] == "ready", got.messages
            assert await connect(p1_old) == 401  # replaced by the newer p1 token
            assert await connect(p1) == 401  # burned
            assert await connect(s["ingestToken"]) == 401  # the mixed one, burned too
        for got in (got1, got2, got3):
            assert got.close_code == 1000


async def test_already_connected_is_per_participant(db_url: str) -> None:
    async with run_server(make_settings(db_url)) as srv, srv.client() as c:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        p1 = (await mint(c, s, {"id": "p1", "name": "Priya"})).json()["ingestToken"]
        async with producer(f"{srv.ws_url}/ws/stt?token={p1}") as (ws1, got1, _):
            await ws1.send(silence(100))
            again = (await mint(c, s, {"id": "p1"})).json()["ingestToken"]
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(f"{srv.ws_url}/ws/stt?token={again}"):
                    pass
            assert refused.value.response.status_code == 409
            assert json.loads(refused.value.response.body)["error"]["code"] == "ALREADY_CONNECTED"
            # another participant is welcome meanwhile
            p2 = (await mint(c, s, {"id": "p2"})).json()["ingestToken"]
            async with producer(f"{srv.ws_url}/ws/stt?token={p2}") as (ws2, got2, _):
                await ws2.send(silence(100))
                await asyncio.sleep(0.2)
                assert got2.messages[0]["type"] == "ready"
        # p1 left: its refused token (still unused) now connects
        await asyncio.sleep(0.3)
        async with producer(f"{srv.ws_url}/ws/stt?token={again}") as (ws, got, _):
            await ws.send(silence(100))
            await asyncio.sleep(0.2)
            assert got.messages[0]["type"] == "ready"
        assert (await srv.state.repo.speaker_names(s["sessionId"]))["p1"] == "Priya"


async def test_each_track_counts_against_the_ingest_cap(db_url: str) -> None:
    async with (
        run_server(make_settings(db_url, max_concurrent_ingest=2)) as srv,
        srv.client() as c,
    ):
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        tokens = [(await mint(c, s, {"id": f"p{i}"})).json()["ingestToken"] for i in range(3)]
        async with (
            producer(f"{srv.ws_url}/ws/stt?token={tokens[0]}") as (ws1, _, _),
            producer(f"{srv.ws_url}/ws/stt?token={tokens[1]}") as (ws2, _, _),
        ):
            await ws1.send(silence(100))
            await ws2.send(silence(100))
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(f"{srv.ws_url}/ws/stt?token={tokens[2]}"):
                    pass
            assert refused.value.response.status_code == 429
            assert json.loads(refused.value.response.body)["error"]["code"] == "INGEST_CAP"


async def test_ending_the_session_ends_every_track(db_url: str) -> None:
    async with run_server(make_settings(db_url)) as srv, srv.client() as c:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        tokens = [(await mint(c, s, {"id": f"p{i}"})).json()["ingestToken"] for i in range(2)]
        async with (
            producer(f"{srv.ws_url}/ws/stt?token={tokens[0]}") as (ws1, got1, task1),
            producer(f"{srv.ws_url}/ws/stt?token={tokens[1]}") as (ws2, got2, task2),
        ):
            await ws1.send(silence(100))
            await ws2.send(silence(100))
            await asyncio.sleep(0.2)
            assert len(srv.state.pipelines) == 2
            r = await c.delete(
                f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]}
            )
            assert r.status_code == 200 and r.json()["status"] == "ended"
            await asyncio.wait_for(asyncio.gather(task1, task2), 20)
        for got in (got1, got2):
            assert got.types()[-1] == "session-end", got.messages
            assert got.close_reason == "SESSION_ENDED"
        assert len(srv.state.pipelines) == 0


async def test_tracks_on_two_nodes(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    """Priya's producer on node A, Omar's on node B, viewers on both: one gap-free seq
    allocated in the database, each final once on every node, and ending the session on
    A finalizes B's track (its producer gets session-end too)."""
    env = {
        "MCUSTT_DATABASE_URL": pg_url,
        "MCUSTT_REDIS_URL": redis_url,
        "MCUSTT_REDIS_PREFIX": "tr" + uuid.uuid4().hex[:8],
        "MCUSTT_RECOGNIZER": "sphinx",
        "MCUSTT_RECOGNIZER_WORKERS": "1",
    }
    async with spawn_node(env, tmp_path / "a.log") as a, spawn_node(env, tmp_path / "b.log") as b:
        async with a.client() as c:
            r = await c.post(
                "/api/admin/tenants",
                json={"name": "Two nodes"},
                headers={"authorization": f"Bearer {ADMIN}"},
            )
            key = r.json()["apiKey"]
            s = (await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})).json()
            priya = (await mint(c, s, {"id": "p1", "name": "Priya"})).json()["ingestToken"]
            omar = (await mint(c, s, {"id": "p2", "name": "Omar"})).json()["ingestToken"]
        viewers = [
            asyncio.create_task(ws_viewer_at(node.ws_url, s["subscribeToken"])) for node in (a, b)
        ]
        await asyncio.sleep(0.5)
        priya_pcm = read_wav("hello_en.wav") + silence(600)
        omar_pcm = read_wav("standup_en.wav")[OMAR_SLICE] + silence(600)
        async with (
            producer(f"{a.ws_url}/ws/stt?token={priya}") as (ws1, got1, task1),
            producer(f"{b.ws_url}/ws/stt?token={omar}") as (ws2, got2, task2),
        ):
            await asyncio.gather(paced(ws1, priya_pcm, speed=1.5), paced(ws2, omar_pcm, speed=1.5))
            await asyncio.sleep(1.0)  # the trailing silence ends both utterances
            async with a.client() as c:
                r = await c.delete(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": key})
                assert r.status_code == 200 and r.json()["status"] == "ended", r.text
            await asyncio.wait_for(asyncio.gather(task1, task2), 30)
        seen = await asyncio.wait_for(asyncio.gather(*viewers), 30)
    for got in (got1, got2):
        assert got.types()[-1] == "session-end", got.messages
    finals = sorted(got1.finals + got2.finals, key=lambda f: f["seq"])
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    assert words_of(finals, "p1") >= PRIYA_WORDS
    assert words_of(finals, "p2") >= OMAR_WORDS
    for lines in seen:
        assert [(f["seq"], f["text"], f["speaker"]) for f in lines.finals] == [
            (f["seq"], f["text"], f["speaker"]) for f in finals
        ]
        assert lines.live == {}


async def ws_viewer_at(ws_url: str, token: str) -> LiveLines:
    lines = LiveLines()
    async with websockets.connect(f"{ws_url}/ws/subscribe?token={token}&lastSeq=0") as ws:
        async for raw in ws:
            event = json.loads(raw)
            if event["type"] == "transcript":
                lines.feed(event)
            elif event["type"] == "session-end":
                break
    return lines


async def test_whip_participant_producer(sqlite_url: str) -> None:
    """A participant-bound token on WHIP feeds that participant's track; hanging up
    ends the track, not the session."""
    settings = make_settings(sqlite_url, recognizer="sphinx", webrtc_host_addresses=["127.0.0.1"])
    pcm = read_wav("hello_en.wav")
    async with run_server(settings) as srv, srv.client() as c:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        token = (await mint(c, s, {"id": "p1", "name": "Priya"})).json()["ingestToken"]
        viewer = asyncio.create_task(ws_viewer(srv, s))
        pub = await publish(c, pcm, token=token)
        assert pub.response.status_code == 201 and pub.session_id == s["sessionId"]
        try:
            await wait_connected(pub.pc)
            await asyncio.wait_for(pub.track.finished.wait(), len(pcm) / 32000 + 10)
            await asyncio.sleep(0.3)  # the last packets are in flight
            r = await c.delete(pub.location)
            assert r.status_code == 204, r.text
        finally:
            await close(pub.pc)
        deadline = time.monotonic() + 20
        while srv.state.pipelines.get(s["sessionId"], "p1") is not None:
            assert time.monotonic() < deadline, "the track was not released"
            await asyncio.sleep(0.05)
        assert (await srv.stored_session(s["sessionId"])).status == "live"
        r = await c.delete(f"/api/sessions/{s['sessionId']}", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200
        lines = await asyncio.wait_for(viewer, 30)
    assert lines.finals and all(f["speaker"] == {"id": "p1", "name": "Priya"} for f in lines.finals)
    assert words_of(lines.finals, "p1") >= PRIYA_WORDS
    stored = await srv.state.repo.lines(s["sessionId"])
    assert {ln.speaker for ln in stored} == {"p1"}


class _Lines:
    """The store as a viewer's replay reads it (a fake ``Repo``)."""

    def __init__(self, lines: list[TranscriptLine]) -> None:
        self.rows = lines

    async def lines_after(self, session_id: str, after: int, *, limit: int) -> list[TranscriptLine]:
        return [ln for ln in self.rows if ln.seq > after][:limit]

    async def speaker_names(self, session_id: str) -> dict[str, str]:
        return {"p1": "Priya", "p2": "Omar"}

    async def corrected_lines(
        self, session_id: str, *, after: int, upto: int, limit: int
    ) -> list[TranscriptLine]:
        return []  # nothing was corrected


def _final(seq: int, who: str) -> TranscriptLine:
    return TranscriptLine(
        session_id="s", seq=seq, text=f"line {seq}", lang="en-US", ts=0, start_ms=0, end_ms=0,
        speaker=who,
    )  # fmt: skip


def _event(seq: int, who: str, *, final: bool) -> Event:
    speaker = events.speaker(who, who)
    return Event.make(
        events.transcript(seq=seq, text="t", is_final=final, lang="en-US", ts=0, speaker=speaker)
    )


async def test_viewer_fills_a_gap_from_the_store_and_keeps_both_live_lines() -> None:
    """Node B's final 7 arrives before node A's final 6: the viewer replays 6 (and 7)
    from the store instead of dropping 6; interims are stale only once their own
    speaker's final is out, whatever the other speaker's finals took."""
    store = _Lines([_final(5, "p1")])
    viewer = Viewer("s", 100)
    follow = Follow(cast(Repo, store), viewer, last_seq=5, session_ended=_never)
    assert await follow.start(5) == []
    store.rows += [_final(6, "p1"), _final(7, "p2")]  # both persisted, then published
    viewer.queue.offer(_event(7, "p2", final=True))
    viewer.queue.offer(_event(6, "p1", final=True))
    viewer.queue.offer(_event(7, "p1", final=False))  # p1's next interim (a hint: 7)
    assert follow.take() == [] and follow.resync
    replayed = await follow.replay_missed()
    assert [e.seq for e in replayed if isinstance(e, Event)] == [6, 7]
    rest = follow.take()  # the live 7 and 6 are duplicates now; p1's interim is live
    assert [(e.seq, e.speaker, e.is_final) for e in rest if isinstance(e, Event)] == [
        (7, "p1", False)
    ]
    # p1's stale interim (its final 6 is out) is dropped, p2's (seq 8) kept
    viewer.queue.offer(_event(6, "p1", final=False))
    viewer.queue.offer(_event(8, "p2", final=False))
    assert [e.speaker for e in follow.take() if isinstance(e, Event)] == ["p2"]


async def _never() -> bool:
    return False


async def test_a_rename_reaches_the_live_track(db_url: str) -> None:
    """Renamed while its track is live: the track's later captions carry the new name."""
    settings = make_settings(db_url, recognizer="scripted:ScriptedRecognizer")
    pcm = read_wav("pause_en.wav")  # two sentences around an 8 s pause
    async with run_server(settings) as srv, srv.client() as c:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        token = (await mint(c, s, {"id": "p1", "name": "Priya"})).json()["ingestToken"]
        async with producer(f"{srv.ws_url}/ws/stt?token={token}") as (ws, got, task):
            await paced(ws, pcm[: 8_000 * 32], speed=50)
            deadline = time.monotonic() + 10
            while not got.finals:
                assert time.monotonic() < deadline, got.messages
                await asyncio.sleep(0.05)
            r = await c.put(
                f"/api/sessions/{s['sessionId']}/speakers/p1",
                json={"name": "Priya Patel"},
                headers={"x-tenant-key": t["apiKey"]},
            )
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.3)  # the speaker event reaches the track's keeper
            await paced(ws, pcm[8_000 * 32 :], speed=50)
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(task, 20)
    assert [f["speaker"]["name"] for f in got.finals] == ["Priya", "Priya Patel"]


async def test_the_store_allocates_gap_free_seqs_under_concurrency(db_url: str) -> None:
    """Finals of many tracks persisted at once: each gets its own seq, none skipped, and
    the session's last_seq and audio time (the furthest track's) follow."""
    async with run_server(make_settings(db_url)) as srv:
        t = await new_tenant(srv)
        s = await new_session(srv, t["apiKey"])
        repo = srv.state.repo

        async def final(i: int) -> int:
            line = await repo.append_final(
                s["sessionId"],
                text=f"line {i}",
                lang="en-US",
                ts=i,
                start_ms=i,
                end_ms=i + 1,
                audio_ms=1000 * (i % 7),
                speaker=f"p{i % 3}",
            )
            return line.seq

        seqs = await asyncio.gather(*(final(i) for i in range(24)))
        assert sorted(seqs) == list(range(1, 25))
        stored = await repo.lines(s["sessionId"])
        assert [ln.seq for ln in stored] == list(range(1, 25))
        assert {ln.speaker for ln in stored} == {"p0", "p1", "p2"}
        session = await srv.stored_session(s["sessionId"])
        assert session.last_seq == 24 and session.audio_ms == 6000
