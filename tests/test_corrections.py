"""Corrections of final lines (issue 16), through the public API on SQLite and PostgreSQL.

A producer streams speech into ``/ws/stt`` (a scripted recognizer makes one final per
utterance), then ``PATCH /api/sessions/:id/lines/:seq`` corrects a line: the revision is
stored with the original kept, live viewers (``/ws/subscribe``, SSE, the embed page in
Chromium) get it at once as a ``revised`` transcript event, replays and exports carry
the corrected text, a later summary uses it, and it works after the session ended too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from rest_helpers import error_of, wait_job
from sqlmodel import col, select
from sse import SSE, read_sse
from websockets.asyncio.client import ClientConnection
from wsclients import Collected, collect, silence, stream_pcm

from mcustt import wire
from mcustt.store.models import WebhookEvent

SCRIPTED = "scripted:ScriptedRecognizer"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="module")
def utterance() -> bytes:
    """One utterance: speech, then enough silence for the VAD to end it."""
    return read_wav("hello_en.wav") + silence(700)


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Live:
    """A live session with a connected producer."""

    srv: Running | Any
    key: str
    doc: wire.SessionCreated
    ws: ClientConnection
    got: Collected
    task: asyncio.Task[Collected]
    pcm: bytes

    @property
    def sid(self) -> str:
        return self.doc["sessionId"]

    async def say(self, count: int = 1) -> None:
        """``count`` more finals, each persisted and echoed before this returns."""
        want = len(self.got.finals) + count
        for _ in range(count):
            await stream_pcm(self.ws, self.pcm, realtime=False, frame=3200)
        await until(lambda: len(self.got.finals) >= want, f"final {want}")

    async def stop(self) -> None:
        await self.ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(self.task, 20)


@contextlib.asynccontextmanager
async def live_session(srv: Any, pcm: bytes, *, lines: int, **tenant: Any) -> AsyncIterator[Live]:
    if isinstance(srv, Running):
        t = await new_tenant(srv, **tenant)
        doc = await new_session(srv, t["apiKey"], title="Corrections")
    else:  # a spawned node
        async with srv.client() as c:
            r = await c.post(
                "/api/admin/tenants",
                json={"name": "Corrections"},
                headers={"authorization": f"Bearer {ADMIN}"},
            )
            t = r.json()
            doc = (
                await c.post("/api/sessions", json={}, headers={"x-tenant-key": t["apiKey"]})
            ).json()
    ws = await websockets.connect(f"{srv.ws_url}/ws/stt?token={doc['ingestToken']}", max_size=None)
    got = Collected()
    task = asyncio.create_task(collect(ws, got))
    live = Live(srv, t["apiKey"], doc, ws, got, task, pcm)
    try:
        await live.say(lines)
        yield live
    finally:
        await ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, recognizer=SCRIPTED)) as running:
        yield running


def patch(c: httpx.AsyncClient, sid: str, seq: int | str, body: Any, **headers: str) -> Any:
    return c.patch(f"/api/sessions/{sid}/lines/{seq}", json=body, headers=headers)


async def ws_viewer(
    ws_url: str, token: str, last_seq: int | None = 0, into: Collected | None = None
) -> Collected:
    query = f"token={token}" + (f"&lastSeq={last_seq}" if last_seq is not None else "")
    async with websockets.connect(f"{ws_url}/ws/subscribe?{query}") as ws:
        return await collect(ws, into if into is not None else Collected())


async def sse_viewer(url: str, sid: str, token: str, into: list[SSE], **headers: str) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as c,
        c.stream("GET", f"/api/sessions/{sid}/stream?t={token}", headers=headers) as r,
    ):
        assert r.status_code == 200
        async for ev in read_sse(r):
            into.append(ev)
            if ev.event == "session-end":
                return


def revised(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == "transcript" and m.get("revised")]


def new_finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        m
        for m in messages
        if m.get("type") == "transcript" and m["isFinal"] and not m.get("revised")
    ]


# -- storage, history, exports ----------------------------------------------------------------


async def test_correction_is_a_revision_and_the_original_is_kept(
    server: Running, utterance: bytes
) -> None:
    async with live_session(server, utterance, lines=2) as live, server.client() as c:
        first, second = live.got.finals
        tenant = {"x-tenant-key": live.key}
        before = time.time()
        r = await patch(c, live.sid, 1, {"text": "  Hello, world.  "}, **tenant)
        assert r.status_code == 200, r.text
        doc: wire.LineDetail = r.json()
        assert doc["seq"] == 1 and doc["text"] == "Hello, world." and doc["revision"] == 1
        assert doc["original"] == {"text": first["text"], "lang": first["lang"], "ts": first["ts"]}
        [rev] = doc["revisions"]
        assert rev["revision"] == 1 and rev["author"] == "tenant"
        assert rev["text"] == "Hello, world."
        assert before - 1 <= rev["createdAt"] <= time.time() + 1

        # A second correction, by the owner: both kept, oldest first.
        r = await patch(
            c, live.sid, 1, {"text": "Hello, whole world.", "ownerSecret": live.doc["ownerSecret"]}
        )
        assert r.status_code == 200, r.text
        assert r.json()["revision"] == 2

        # Read with the tenant key and with a read token: the same history.
        for headers in (tenant, {"authorization": f"Bearer {live.doc['embedToken']}"}):
            r = await c.get(f"/api/sessions/{live.sid}/lines/1", headers=headers)
            assert r.status_code == 200, r.text
            line = r.json()
            assert line["text"] == "Hello, whole world." and line["revision"] == 2
            assert line["original"]["text"] == first["text"]
            assert [(x["revision"], x["text"], x["author"]) for x in line["revisions"]] == [
                (1, "Hello, world.", "tenant"),
                (2, "Hello, whole world.", "owner"),
            ]
            assert line["startMs"] <= line["endMs"]
        untouched = (await c.get(f"/api/sessions/{live.sid}/lines/2", headers=tenant)).json()
        assert untouched["text"] == second["text"] and untouched["revision"] == 0
        assert untouched["revisions"] == []

        # Every export reads the corrected text; json says which line was corrected.
        t = (await c.get(f"/api/sessions/{live.sid}/transcript", headers=tenant)).json()
        assert [(x["seq"], x["text"], x.get("revised", False)) for x in t["lines"]] == [
            (1, "Hello, whole world.", True),
            (2, second["text"], False),
        ]
        for fmt in ("srt", "vtt", "txt"):
            r = await c.get(f"/api/sessions/{live.sid}/transcript?format={fmt}", headers=tenant)
            assert r.status_code == 200
            # The cues' words (issue 17 wraps and cuts cues anywhere between words).
            said = " ".join(
                line
                for line in r.text.splitlines()
                if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"
            )
            assert "Hello, whole world." in said and " ".join(second["text"].split()) in said
            assert first["text"] not in said.replace(second["text"], "")
        assert (
            await c.get(f"/api/sessions/{live.sid}/transcript?format=txt", headers=tenant)
        ).text == (f"Hello, whole world.\n{second['text']}\n")

    # The line.revised webhook event was stored with each correction (no secret in it).
    async with server.state.db.session() as s:
        rows = (
            await s.exec(
                select(WebhookEvent)
                .where(WebhookEvent.session_id == live.sid, WebhookEvent.type == "line.revised")
                .order_by(col(WebhookEvent.created_at))
            )
        ).all()
    assert [(e.data["seq"], e.data["revision"], e.data["author"]) for e in rows] == [
        (1, 1, "tenant"),
        (1, 2, "owner"),
    ]
    assert rows[0].data["previousText"] == first["text"] and rows[0].data["text"] == "Hello, world."
    assert rows[1].data["previousText"] == "Hello, world."
    assert live.doc["ownerSecret"] not in json.dumps([e.data for e in rows])


async def test_bad_inputs(server: Running, utterance: bytes) -> None:
    async with live_session(server, utterance, lines=1) as live, server.client() as c:
        tenant = {"x-tenant-key": live.key}
        ok = {"text": "fixed"}
        error_of(await patch(c, live.sid, 2, ok, **tenant), 404, "LINE_NOT_FOUND")
        error_of(await patch(c, live.sid, 0, ok, **tenant), 404, "LINE_NOT_FOUND")
        for seq in ("abc", "-1", "1.5", "+1", str(wire.MAX_SEQ + 1), "9" * 30, "\uff11"):
            error_of(await patch(c, live.sid, seq, ok, **tenant), 400)
            error_of(await c.get(f"/api/sessions/{live.sid}/lines/{seq}", headers=tenant), 400)
        for body in (
            {},
            {"text": ""},
            {"text": "   \n\t"},
            {"text": "x" * (wire.MAX_LINE_TEXT + 1)},
            {"text": 5},
            {"text": None},
            {"text": "nul \x00 inside"},
            ["text"],
        ):
            error_of(await patch(c, live.sid, 1, body, **tenant), 400)
        error_of(
            await c.patch(f"/api/sessions/{live.sid}/lines/1", content=b"{", headers=tenant), 400
        )
        r = await patch(c, live.sid, 1, {"text": "y" * wire.MAX_LINE_TEXT}, **tenant)
        assert r.status_code == 200 and r.json()["text"] == "y" * wire.MAX_LINE_TEXT

        # Credentials: a read token reads but never corrects; no credential, a wrong owner
        # secret, another tenant's key all fail; an unknown session is 404.
        read = {"authorization": f"Bearer {live.doc['embedToken']}"}
        error_of(await patch(c, live.sid, 1, ok, **read), 401, "WRONG_TOKEN_SCOPE")
        assert (await c.get(f"/api/sessions/{live.sid}/lines/1", headers=read)).status_code == 200
        sub = {"authorization": f"Bearer {live.doc['subscribeToken']}"}
        error_of(await patch(c, live.sid, 1, ok, **sub), 401, "WRONG_TOKEN_SCOPE")
        error_of(await patch(c, live.sid, 1, ok), 401)
        error_of(await patch(c, live.sid, 1, {**ok, "ownerSecret": "nope"}), 401)
        other = await new_tenant(server)
        error_of(
            await patch(c, live.sid, 1, ok, **{"x-tenant-key": other["apiKey"]}),
            404,
            "SESSION_NOT_FOUND",
        )
        error_of(
            await c.get(
                f"/api/sessions/{live.sid}/lines/1", headers={"x-tenant-key": other["apiKey"]}
            ),
            404,
        )
        error_of(await patch(c, "nosuchsess", 1, ok, **tenant), 404)
        other_session = await new_session(server, other["apiKey"])
        read_b = {"authorization": f"Bearer {other_session['embedToken']}"}
        error_of(await c.get(f"/api/sessions/{live.sid}/lines/1", headers=read_b), 401)
        # Nothing of that was stored: one correction only.
        line = (await c.get(f"/api/sessions/{live.sid}/lines/1", headers=tenant)).json()
        assert [x["revision"] for x in line["revisions"]] == [1]


# -- live viewers and replays -----------------------------------------------------------------


async def test_live_viewers_get_the_correction_and_replays_carry_it(
    server: Running, utterance: bytes
) -> None:
    async with live_session(server, utterance, lines=2) as live, server.client() as c:
        ws_seen = Collected()
        ws_task = asyncio.create_task(
            ws_viewer(server.ws_url, live.doc["subscribeToken"], last_seq=0, into=ws_seen)
        )
        sse_seen: list[SSE] = []
        sse_task = asyncio.create_task(
            sse_viewer(
                server.url, live.sid, live.doc["embedToken"], sse_seen, **{"last-event-id": "0"}
            )
        )
        # Both viewers have their replay of lines 1 and 2 (so they are on the hub).
        await until(lambda: len(ws_seen.finals) >= 2, "the WebSocket replay")
        await until(
            lambda: len([e for e in sse_seen if e.event == "transcript"]) >= 2, "the SSE replay"
        )
        r = await patch(c, live.sid, 1, {"text": "Corrected live."}, **{"x-tenant-key": live.key})
        assert r.status_code == 200, r.text
        # The SSE viewer gets it at once: same seq, revised, the new text, no id.
        await until(lambda: any(e.data.get("revised") for e in sse_seen), "the SSE correction")
        [fix] = [e for e in sse_seen if e.data.get("revised")]
        assert fix.event == "transcript" and fix.id is None
        assert (
            fix.data["seq"] == 1 and fix.data["text"] == "Corrected live." and fix.data["isFinal"]
        )
        # The seq stream goes on, gap-free, after the correction.
        await live.say(1)
        await live.stop()
        await asyncio.wait_for(ws_task, 20)
        await asyncio.wait_for(sse_task, 20)
        originals = [(m["seq"], m["text"]) for m in live.got.finals]
        assert [seq for seq, _ in originals] == [1, 2, 3]
        assert [(m["seq"], m["text"]) for m in new_finals(ws_seen.messages)] == originals
        [ws_fix] = revised(ws_seen.messages)
        assert ws_fix == {**fix.data, "type": "transcript"}
        assert ws_seen.messages.index(ws_fix) < ws_seen.messages.index(
            new_finals(ws_seen.messages)[2]
        )
        sse_finals = [
            e
            for e in sse_seen
            if e.event == "transcript" and e.data["isFinal"] and not e.data.get("revised")
        ]
        assert [(e.id, e.data["text"]) for e in sse_finals] == [(str(s), t) for s, t in originals]
        # The producer is not sent corrections (it made the lines; viewers follow them).
        assert not revised(live.got.messages)

        # Replays read the corrected text: once per seq, no revised duplicate.
        expected = [(1, "Corrected live."), originals[1], originals[2]]
        replay = await ws_viewer(server.ws_url, live.doc["subscribeToken"], last_seq=0)
        assert [(m["seq"], m["text"]) for m in new_finals(replay.messages)] == expected
        assert not revised(replay.messages)
        replayed_sse: list[SSE] = []
        await sse_viewer(
            server.url, live.sid, live.doc["embedToken"], replayed_sse, **{"last-event-id": "0"}
        )
        assert [
            (int(e.id or 0), e.data["text"]) for e in replayed_sse if e.event == "transcript"
        ] == expected
        # A viewer resuming after line 2 missed the correction of line 1: it gets it again
        # as a revised event, then the finals after 2.
        resumed = await ws_viewer(server.ws_url, live.doc["subscribeToken"], last_seq=2)
        assert [(m["seq"], m["text"], bool(m.get("revised"))) for m in resumed.messages[:-1]] == [
            (1, "Corrected live.", True),
            (3, originals[2][1], False),
        ]
        assert resumed.messages[-1]["type"] == "session-end"


async def test_after_the_session_ended_and_in_the_summary(
    server: Running, utterance: bytes
) -> None:
    async with live_session(server, utterance, lines=3) as live, server.client() as c:
        await live.stop()
        tenant = {"x-tenant-key": live.key}
        state = (await c.get(f"/api/sessions/{live.sid}", headers=tenant)).json()
        assert state["status"] == "ended"
        decision = "We decided to ship the billing migration on Friday."
        r = await patch(c, live.sid, 2, {"text": decision}, **tenant)
        assert r.status_code == 200, r.text
        r = await patch(c, live.sid, 2, {"text": decision, "ownerSecret": live.doc["ownerSecret"]})
        assert r.status_code == 200 and r.json()["revision"] == 2
        txt = (await c.get(f"/api/sessions/{live.sid}/transcript?format=txt", headers=tenant)).text
        assert txt.splitlines()[1] == decision
        # A later summary reads the corrected transcript.
        r = await c.post(f"/api/sessions/{live.sid}/summarize", json={}, headers=tenant)
        assert r.status_code == 202, r.text
        job = await wait_job(c, r.json()["jobId"], live.key)
        assert job["status"] == "ready", job
        summary = (await c.get(f"/api/sessions/{live.sid}/summary", headers=tenant)).json()
        assert "billing migration" in json.dumps(summary["content"]), summary
        # So does a question about the meeting: it cites the corrected line.
        r = await c.post(
            f"/api/sessions/{live.sid}/ask",
            json={"question": "When do we ship the billing migration?"},
            headers=tenant,
        )
        assert r.status_code == 200, r.text
        assert {"seq": 2, "text": decision} in [
            {"seq": x["seq"], "text": x["text"]} for x in r.json()["citations"]
        ], r.json()


async def test_concurrent_corrections_are_numbered_in_turn(
    server: Running, utterance: bytes
) -> None:
    async with live_session(server, utterance, lines=1) as live, server.client() as c:
        tenant = {"x-tenant-key": live.key}
        texts = [f"take {i}" for i in range(6)]
        results = await asyncio.gather(
            *(patch(c, live.sid, 1, {"text": t}, **tenant) for t in texts)
        )
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        line = (await c.get(f"/api/sessions/{live.sid}/lines/1", headers=tenant)).json()
        assert [x["revision"] for x in line["revisions"]] == list(range(1, 7))
        assert sorted(x["text"] for x in line["revisions"]) == sorted(texts)
        assert line["text"] == line["revisions"][-1]["text"]
    async with server.state.db.session() as s:
        rows = (
            await s.exec(
                select(WebhookEvent).where(
                    WebhookEvent.session_id == live.sid, WebhookEvent.type == "line.revised"
                )
            )
        ).all()
    # Each event's previous text is the text the one before it stored.
    chain = {e.data["revision"]: e.data for e in rows}
    for n in range(2, 7):
        assert chain[n]["previousText"] == chain[n - 1]["text"]


# -- the embed page in Chromium ----------------------------------------------------------------


@pytest.mark.browser
async def test_embed_page_replaces_the_line_in_place(sqlite_url: str, utterance: bytes) -> None:
    from browser import launch
    from playwright.async_api import expect

    async with (
        run_server(make_settings(sqlite_url, recognizer=SCRIPTED)) as srv,
        launch() as browser,
        live_session(srv, utterance, lines=2) as live,
        srv.client() as c,
    ):
        page = await (await browser.new_context(viewport={"width": 900, "height": 360})).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(live.doc["embedUrl"])
        lines = page.locator("#finals .line")
        first, second = (m["text"] for m in live.got.finals)
        await expect(page.locator("#state-text")).to_have_text("Live", timeout=10_000)
        await expect(lines).to_have_text([first, second], timeout=10_000)
        # Mark the element: the correction must change this very node, not add one.
        await page.evaluate("document.querySelector('#finals .line').dataset.probe = 'same'")

        r = await patch(
            c, live.sid, 1, {"text": "Hello world, corrected."}, **{"x-tenant-key": live.key}
        )
        assert r.status_code == 200, r.text
        await expect(lines).to_have_text(["Hello world, corrected.", second], timeout=10_000)
        assert await lines.count() == 2
        assert await lines.first.get_attribute("data-probe") == "same"
        assert await lines.first.get_attribute("data-seq") == "1"
        assert await lines.first.get_attribute("data-revised") == "true"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "embed-correction.png"))

        # The next final still arrives as a new line after it.
        await live.say(1)
        third = live.got.finals[2]["text"]
        await expect(lines).to_have_text(["Hello world, corrected.", second, third])
        assert not errors, errors


# -- two nodes ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
async def test_correction_via_node_a_reaches_a_viewer_on_node_b(
    pg_url: str, redis_url: str, tmp_path: Path, utterance: bytes
) -> None:
    env = {
        "MCUSTT_DATABASE_URL": pg_url,
        "MCUSTT_REDIS_URL": redis_url,
        "MCUSTT_REDIS_PREFIX": "co" + uuid.uuid4().hex[:8],
        "MCUSTT_RECOGNIZER": SCRIPTED,
    }
    async with (
        spawn_node(env, tmp_path / "a.log") as a,
        spawn_node(env, tmp_path / "b.log") as b,
        live_session(a, utterance, lines=2) as live,
        a.client() as c,
    ):
        view = asyncio.create_task(ws_viewer(b.ws_url, live.doc["subscribeToken"], last_seq=0))
        # Both finals replayed on B: the viewer is subscribed there.
        async with b.client() as cb:
            for _ in range(200):
                state = (
                    await cb.get(f"/api/sessions/{live.sid}", headers={"x-tenant-key": live.key})
                ).json()
                if state["subscribers"] >= 1:
                    break
                await asyncio.sleep(0.05)
        r = await patch(c, live.sid, 2, {"text": "Fixed on node A."}, **{"x-tenant-key": live.key})
        assert r.status_code == 200, r.text
        # Published (and acknowledged by Redis) before the answer: session-end, which the
        # stop publishes afterwards, reaches node B after it.
        await live.stop()
        seen = await asyncio.wait_for(view, 20)
    assert [m["seq"] for m in new_finals(seen.messages)] == [1, 2]
    [fix] = revised(seen.messages)
    assert fix["seq"] == 2 and fix["text"] == "Fixed on node A."
    assert seen.messages[-1]["type"] == "session-end"


# -- the Python client ------------------------------------------------------------------------


async def test_python_client_corrects_and_its_viewer_surfaces_the_correction(
    server: Running, utterance: bytes
) -> None:
    from mcustt.client import Client

    async with (
        live_session(server, utterance, lines=2) as live,
        Client(server.url, tenant_key=live.key) as client,
    ):
        seen: list[Any] = []

        async def follow() -> None:
            async for event in client.viewer(live.sid):
                seen.append(event)

        viewer = asyncio.create_task(follow())
        await until(lambda: len([e for e in seen if e.is_final]) == 2, "the viewer's replay")
        doc = await client.revise_line(live.sid, 2, "Second line, fixed.")
        assert (doc["revision"], doc["text"]) == (1, "Second line, fixed.")
        await until(lambda: any(e.is_revised for e in seen), "the correction")
        await live.stop()
        await asyncio.wait_for(viewer, 20)
        line = await client.line(live.sid, 2, token=live.doc["embedToken"])
        assert line["original"]["text"] == live.got.finals[1]["text"]
    [fix] = [e for e in seen if e.is_revised]
    assert (fix.seq, fix.text, fix.is_final) == (2, "Second line, fixed.", False)
    # Finals once each, in seq order; the correction did not count as one.
    assert [e.seq for e in seen if e.is_final] == [1, 2]
    assert seen[-1].type == "session-end"
