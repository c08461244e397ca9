"""Speaker names (issue 14): ``PUT/GET /api/sessions/:id/speakers``, the live ``speaker``
event on ``/ws/subscribe`` and SSE, names in replays, exports (json, srt, vtt, txt) and
the summary's owners. On SQLite and PostgreSQL.

Lines of participant tracks are written through the store (``append_final(speaker=…)``,
what the pipelines call) and live events through the hub (what the pipelines publish):
the audio path itself is the tracks tests' subject.
"""

from __future__ import annotations

import asyncio
import html
import io
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import srt
import websockets
import webvtt
from conftest import Running, new_session, new_tenant
from rest_helpers import client, create_session, create_tenant, error_of, wait_job
from rich.console import Console
from sse import SSE, read_sse

from mcustt import events, wire
from mcustt.client import errors
from mcustt.client.cli import Captions
from mcustt.client.rest import Client
from mcustt.client.sockets import Event
from mcustt.errors import BadRequest
from mcustt.speakers import display_name, speaker_id, track_connected
from mcustt.store.models import TranscriptLine

NOW = 1_700_000_000_000


async def add_line(
    srv: Running,
    sid: str,
    text: str,
    *,
    speaker: str | None,
    start_ms: int = 0,
    end_ms: int = 0,
) -> TranscriptLine:
    """A final as a track's pipeline persists it (the store allocates the seq)."""
    return await srv.state.repo.append_final(
        sid,
        text=text,
        lang="en-US",
        ts=NOW,
        start_ms=start_ms,
        end_ms=end_ms,
        audio_ms=end_ms,
        speaker=speaker,
    )


def who(name: str, speaker_id: str) -> wire.Speaker:
    return {"id": speaker_id, "name": name}


# -- PUT and GET ------------------------------------------------------------------------------


async def test_name_speakers_with_tenant_key_or_owner_secret(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        base = f"/api/sessions/{sid}/speakers"

        r = await c.put(f"{base}/p1", json={"name": "Priya"}, headers=key)
        assert r.status_code == 200, r.text
        assert r.json() == {"id": "p1", "name": "Priya"}
        # The owner secret in the body, and ids as MCUs spell them (Jitsi endpoint ids,
        # e-mail-like identities).
        r = await c.put(
            f"{base}/ab12cd34", json={"name": " Sam\n Lee ", "ownerSecret": doc["ownerSecret"]}
        )
        assert r.json() == {"id": "ab12cd34", "name": "Sam Lee"}  # one line, trimmed
        r = await c.put(f"{base}/sam@example.com", json={"name": "Sam L."}, headers=key)
        assert r.status_code == 200
        # Renaming replaces.
        r = await c.put(f"{base}/p1", json={"name": "Priya Patel"}, headers=key)
        assert r.json() == {"id": "p1", "name": "Priya Patel"}

        listed = {"sessionId": sid, "speakers": [
            {"id": "ab12cd34", "name": "Sam Lee"},
            {"id": "p1", "name": "Priya Patel"},
            {"id": "sam@example.com", "name": "Sam L."},
        ]}  # fmt: skip
        assert (await c.get(base, headers=key)).json() == listed
        # Viewers (read tokens) may list names too, not set them.
        r = await c.get(base, params={"t": doc["embedToken"]})
        assert r.status_code == 200 and r.json() == listed
        r = await c.get(base, headers={"authorization": f"Bearer {doc['subscribeToken']}"})
        assert r.json() == listed
        r = await c.put(f"{base}/p1", json={"name": "X"}, params={"t": doc["embedToken"]})
        error_of(r, 401, "WRONG_TOKEN_SCOPE")
        error_of(await c.put(f"{base}/p1", json={"name": "X"}), 401)
        r = await c.put(f"{base}/p1", json={"name": "X", "ownerSecret": "wrong"})
        error_of(r, 401)
        error_of(await c.get(base), 401)

        # Bad ids and names: 400 in the envelope, and nothing stored.
        for bad_id in ("a b", "x" * 65, "é", "a,b"):
            r = await c.put(f"{base}/{bad_id}", json={"name": "Priya"}, headers=key)
            error_of(r, 400, "BAD_REQUEST")
        bodies: list[Any] = [
            {},
            {"name": ""},
            {"name": "   "},
            {"name": "\n\t"},
            {"name": "\x01\x02"},
            {"name": "x" * 101},
            {"name": 5},
            {"name": None},
            {"name": "a\x00b"},
            [],
        ]
        for body in bodies:
            r = await c.put(f"{base}/p1", json=body, headers=key)
            error_of(r, 400, "BAD_REQUEST")
        error_of(await c.put(f"{base}/p1", content=b"{", headers=key), 400)
        assert (await c.get(base, headers=key)).json() == listed

        # Another tenant's key, or an unknown session: 404 (ids do not leak).
        other = await create_tenant(c)
        okey = {"x-tenant-key": other["apiKey"]}
        error_of(await c.put(f"{base}/p1", json={"name": "Eve"}, headers=okey), 404)
        error_of(await c.get(base, headers=okey), 404)
        r = await c.put("/api/sessions/NoSuchSess/speakers/p1", json={"name": "E"}, headers=key)
        error_of(r, 404)
        assert (await c.get(base, headers=key)).json() == listed

        # After the end: still named (exports use it).
        assert (await c.delete(f"/api/sessions/{sid}", headers=key)).status_code == 200
        r = await c.put(f"{base}/p1", json={"name": "Dr. Priya"}, headers=key)
        assert r.status_code == 200 and r.json() == {"id": "p1", "name": "Dr. Priya"}
        speakers = (await c.get(base, headers=key)).json()["speakers"]
        assert {"id": "p1", "name": "Dr. Priya"} in speakers
        # A session without speakers lists none.
        empty = await create_session(c, t["apiKey"])
        r = await c.get(f"/api/sessions/{empty['sessionId']}/speakers", headers=key)
        assert r.json() == {"sessionId": empty["sessionId"], "speakers": []}


async def test_a_track_connecting_keeps_a_name_set_before(server: Running) -> None:
    """The store API the tracks call when a participant connects: the token's name, or
    its id when it has none; an id never replaces a name the owner set."""
    repo = server.state.repo
    async with client(server) as c:
        t = await create_tenant(c)
        sid = (await create_session(c, t["apiKey"]))["sessionId"]
    await repo.upsert_speaker(sid, "p1", "p1")
    assert await repo.speaker_names(sid) == {"p1": "p1"}
    await repo.upsert_speaker(sid, "p1", "Priya")  # a named token: replaces the default
    await repo.upsert_speaker(sid, "p1", "p1")  # reconnect with an unnamed token: kept
    assert await repo.speaker_names(sid) == {"p1": "Priya"}
    await repo.set_speaker_name(sid, "p2", "Sam")
    await asyncio.gather(*(repo.upsert_speaker(sid, "p3", f"Name {i}") for i in range(5)))
    names = await repo.speaker_names(sid)
    assert names["p2"] == "Sam" and names["p3"].startswith("Name ")


# -- live: /ws/subscribe and SSE ---------------------------------------------------------------


@pytest.fixture
async def live(
    server: Running,
) -> AsyncIterator[tuple[Running, wire.TenantWithKey, wire.SessionCreated]]:
    async with client(server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
    yield server, t, doc


async def next_ws(ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return msg


async def next_sse(feed: AsyncIterator[SSE]) -> SSE:
    return await asyncio.wait_for(anext(feed), 10)


async def test_speaker_event_and_names_reach_viewers_live(
    live: tuple[Running, wire.TenantWithKey, wire.SessionCreated],
) -> None:
    srv, t, doc = live
    sid = doc["sessionId"]
    repo, hub = srv.state.repo, srv.state.hub
    key = {"x-tenant-key": t["apiKey"]}
    await repo.upsert_speaker(sid, "p1", "Priya")
    await add_line(srv, sid, "Hello everyone.", speaker="p1")
    await add_line(srv, sid, "From the room mic.", speaker=None)
    ws_url = f"{srv.ws_url}/ws/subscribe?token={doc['subscribeToken']}&lastSeq=0"
    async with (
        client(srv) as c,
        websockets.connect(ws_url) as ws,
        c.stream("GET", f"/api/sessions/{sid}/stream", params={"t": doc["embedToken"],
                                                               "lastEventId": 0}) as r,
    ):  # fmt: skip
        feed = read_sse(r)
        assert (await next_sse(feed)).event == "ready"
        # The replay names the speaker of each track's line; the mixed line has none.
        replay = [await next_ws(ws), await next_ws(ws)]
        assert replay[0]["speaker"] == who("Priya", "p1") and replay[0]["seq"] == 1
        assert "speaker" not in replay[1] and replay[1]["seq"] == 2
        sse_replay = [await next_sse(feed), await next_sse(feed)]
        assert [e.data.get("speaker") for e in sse_replay] == [who("Priya", "p1"), None]
        assert [e.id for e in sse_replay] == ["1", "2"]

        # Two people talk at once: both interims carry the seq the session gives next.
        priya, sam = who("Priya", "p1"), who("p2", "p2")
        for sp, text in ((priya, "So the plan"), (sam, "Wait I think")):
            await hub.publish(
                sid,
                events.transcript(
                    seq=3, text=text, is_final=False, lang="en-US", ts=NOW, speaker=sp
                ),
            )
        # The owner names the second speaker while both talk.
        r2 = await c.put(f"/api/sessions/{sid}/speakers/p2", json={"name": "Sam"}, headers=key)
        assert r2.json() == {"id": "p2", "name": "Sam"}
        # Sam finishes first: the final takes seq 3.
        line = await add_line(srv, sid, "Wait, I think we need one more day.", speaker="p2")
        assert line.seq == 3
        await hub.publish(sid, events.line_event(line, await repo.speaker_names(sid)))

        expected: list[tuple[str, Any]] = [
            ("transcript", ("p1", "So the plan", False, 3)),
            ("transcript", ("p2", "Wait I think", False, 3)),
            ("speaker", {"id": "p2", "name": "Sam"}),
            ("transcript", ("p2", "Wait, I think we need one more day.", True, 3)),
        ]

        def shape(kind: str, data: dict[str, Any]) -> tuple[str, Any]:
            if kind == "speaker":
                return kind, data["speaker"]
            return kind, (data["speaker"]["id"], data["text"], data["isFinal"], data["seq"])

        got_ws = [await next_ws(ws) for _ in expected]
        assert [shape(m["type"], m) for m in got_ws] == expected
        assert got_ws[2] == {"type": "speaker", "speaker": {"id": "p2", "name": "Sam"}}
        assert got_ws[3]["speaker"] == who("Sam", "p2")
        got_sse = [await next_sse(feed) for _ in expected]
        assert [shape(e.event, e.data) for e in got_sse] == expected
        # A speaker event is not a final: no SSE id (Last-Event-ID stays the last final).
        assert [e.id for e in got_sse] == [None, None, None, "3"]

    # A viewer joining later gets every line under the current names.
    async with client(srv) as c:
        await c.put(f"/api/sessions/{sid}/speakers/p1", json={"name": "Priya P."}, headers=key)
    async with websockets.connect(ws_url) as ws:
        replay = [await next_ws(ws) for _ in range(3)]
    assert [m.get("speaker") for m in replay] == [who("Priya P.", "p1"), None, who("Sam", "p2")]


# -- exports ---------------------------------------------------------------------------------


async def session_with_speakers(srv: Running) -> tuple[dict[str, str], str]:
    """Two participants talking over each other, an unnamed one, and a mixed line."""
    async with client(srv) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        sid = (await create_session(c, t["apiKey"]))["sessionId"]
        for pid, name in (("p1", "Priya"), ("p2", "Sam")):
            r = await c.put(f"/api/sessions/{sid}/speakers/{pid}", json={"name": name}, headers=key)
            assert r.status_code == 200
    # Finalized in this order (seq), spoken in another (start): Sam started while Priya
    # was still talking, and a third participant spoke first.
    await add_line(srv, sid, "I'll write the migration.", speaker="p1", start_ms=1000, end_ms=3000)
    await add_line(
        srv, sid, "We decided to ship on Friday.", speaker="p2", start_ms=2000, end_ms=4000
    )
    await add_line(srv, sid, "Tom & <Jerry> --> here.", speaker="p3", start_ms=200, end_ms=900)
    await add_line(srv, sid, "Room mic line.", speaker=None, start_ms=5000, end_ms=6000)
    await add_line(srv, sid, "And the tests.", speaker="p1", start_ms=6500, end_ms=7000)
    return key, sid


async def export(c: httpx.AsyncClient, sid: str, fmt: str, key: dict[str, str]) -> httpx.Response:
    r = await c.get(f"/api/sessions/{sid}/transcript", params={"format": fmt}, headers=key)
    assert r.status_code == 200, r.text
    return r


async def test_exports_name_speakers_and_split_cues(server: Running) -> None:
    key, sid = await session_with_speakers(server)
    async with client(server) as c:
        body = (await export(c, sid, "json", key)).json()
        assert [(x["seq"], x["text"], x.get("speaker")) for x in body["lines"]] == [
            (1, "I'll write the migration.", who("Priya", "p1")),
            (2, "We decided to ship on Friday.", who("Sam", "p2")),
            (3, "Tom & <Jerry> --> here.", who("p3", "p3")),  # unnamed: called by its id
            (4, "Room mic line.", None),
            (5, "And the tests.", who("Priya", "p1")),
        ]
        assert "speaker" not in body["lines"][3]

        txt = (await export(c, sid, "txt", key)).text
        assert txt.splitlines() == [
            "Priya: I'll write the migration.",
            "Sam: We decided to ship on Friday.",
            "p3: Tom & <Jerry> -> here.",
            "Room mic line.",
            "Priya: And the tests.",
        ]

        # srt: a new speaker is a new cue, in start order (issue 17: never on screen
        # together, so a cue that must stay up 1 s moves the next one a little).
        subs = list(srt.parse((await export(c, sid, "srt", key)).text))
        assert [s.index for s in subs] == [1, 2, 3, 4, 5]
        assert [s.content for s in subs] == [
            "p3: Tom & <Jerry> -> here.",
            "Priya: I'll write the migration.",
            "Sam: We decided to ship on Friday.",
            "Room mic line.",
            "Priya: And the tests.",
        ]
        starts = [s.start.total_seconds() for s in subs]
        assert starts == sorted(starts) == [0.2, 1.2, 2.2, 5.0, 6.5]
        # Overlapping speech: one cue after the other, each up for at least 1 s.
        assert all(a.end <= b.start for a, b in itertools.pairwise(subs))
        assert all((s.end - s.start).total_seconds() >= 1 for s in subs)

        # vtt: voice spans, escaped; cues numbered in order.
        vtt_text = (await export(c, sid, "vtt", key)).text
        cues = webvtt.from_buffer(io.StringIO(vtt_text)).captions
        assert [(cue.identifier, cue.voice, html.unescape(cue.text)) for cue in cues] == [
            ("1", "p3", "Tom & <Jerry> -> here."),
            ("2", "Priya", "I'll write the migration."),
            ("3", "Sam", "We decided to ship on Friday."),
            ("4", None, "Room mic line."),
            ("5", "Priya", "And the tests."),
        ]
        assert "<v Priya>I'll write the migration.</v>" in vtt_text
        assert "Tom &amp; &lt;Jerry> -> here." in vtt_text  # no stray tag, no "-->"
        assert all(cue.raw_text.count("<v ") <= 1 for cue in cues)  # one speaker a cue

        # A rename (after the end too) applies to everything already said; a name that
        # would break a voice tag is escaped.
        assert (await c.delete(f"/api/sessions/{sid}", headers=key)).status_code == 200
        r = await c.put(
            f"/api/sessions/{sid}/speakers/p2", json={"name": "Sam <Ops> & Co"}, headers=key
        )
        assert r.status_code == 200
        vtt_text = (await export(c, sid, "vtt", key)).text
        assert "<v Sam &lt;Ops&gt; &amp; Co>We decided to ship on Friday.</v>" in vtt_text
        cues = webvtt.from_buffer(io.StringIO(vtt_text)).captions
        assert html.unescape(cues[2].voice or "") == "Sam <Ops> & Co"
        txt = (await export(c, sid, "txt", key)).text
        assert "Sam <Ops> & Co: We decided to ship on Friday." in txt.splitlines()
        body = (await export(c, sid, "json", key)).json()
        assert body["lines"][1]["speaker"] == who("Sam <Ops> & Co", "p2")


async def test_exports_without_speakers_are_unchanged(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        sid = (await create_session(c, t["apiKey"]))["sessionId"]
        await add_line(server, sid, "First line.", speaker=None, start_ms=0, end_ms=1000)
        await add_line(server, sid, "Second line.", speaker=None, start_ms=1000, end_ms=2000)
        body = (await export(c, sid, "json", key)).json()
        assert all(
            set(x) == {"seq", "lang", "text", "ts", "startMs", "endMs", "confidence", "words"}
            for x in body["lines"]
        )
        assert (await export(c, sid, "txt", key)).text == "First line.\nSecond line.\n"
        # One speaker without a pause: the two short lines share a cue (issue 17).
        assert (await export(c, sid, "srt", key)).text == (
            "1\n00:00:00,000 --> 00:00:02,000\nFirst line. Second line.\n"
        )
        assert (await export(c, sid, "vtt", key)).text == (
            "WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\nFirst line. Second line.\n"
        )


# -- summary ------------------------------------------------------------------------------


async def test_summary_owners_come_from_who_said_it(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        for pid, name in (("p1", "Priya"), ("p2", "Sam"), ("p3", "Marcus")):
            await c.put(f"/api/sessions/{sid}/speakers/{pid}", json={"name": name}, headers=key)
        script = [
            ("p2", "The billing page is nearly done."),
            ("p2", "We decided to ship the billing page on Friday."),
            ("p1", "I'll write the migration for the invoices table."),
            ("p2", "Can you update the release notes?"),
            ("p3", "Sure, I can do that today."),
            ("p3", "I'm going to review the load test results tomorrow."),
        ]
        for pid, text in script:
            await add_line(server, sid, text, speaker=pid)
        r = await c.post(f"/api/sessions/{sid}/summarize", json={}, headers=key)
        assert r.status_code == 202, r.text
        job = await wait_job(c, r.json()["jobId"], t["apiKey"])
        assert job["status"] == "ready", job
        summary = (await c.get(f"/api/sessions/{sid}/summary", headers=key)).json()
    content = summary["content"]
    owners = {item["task"]: item["owner"] for item in content["actionItems"]}
    assert owners.get("Write the migration for the invoices table") == "Priya", owners
    assert owners.get("Update the release notes") == "Marcus", owners
    assert owners.get("Review the load test results tomorrow") == "Marcus", owners
    # Names, never participant ids.
    assert not {"p1", "p2", "p3"} & set(owners.values()), owners
    assert any("ship the billing page on friday" in d.lower() for d in content["decisions"]), (
        content
    )
    # The wire shape is the contract's.
    assert set(content) == {"tldr", "decisions", "actionItems", "qa"}
    assert all(set(item) == {"owner", "task"} for item in content["actionItems"])


def test_names_are_one_line_and_visible() -> None:
    assert display_name("  Priya \n Patel\t") == "Priya Patel"
    assert display_name("Zoë\u200b") == "Zoë\u200b"  # format characters are not control
    with pytest.raises(BadRequest):
        display_name("\x07\x1b")
    assert speaker_id("endpoint-1:a@b.c_d") == "endpoint-1:a@b.c_d"
    for bad in ("", "a/b", "a b", "x" * 65):
        with pytest.raises(BadRequest):
            speaker_id(bad)


def test_terminal_captions_keep_one_live_line_per_speaker() -> None:
    """``mcustt tail``: overlapping speakers are two live lines; finals and renames show
    names; a session without speakers prints as before."""
    console = Console(record=True, width=100, force_terminal=False)
    priya, sam = who("Priya", "p1"), who("p2", "p2")
    with Captions(console) as captions:
        for sp, text in ((priya, "So the plan"), (sam, "Wait I"), (priya, "So the plan is")):
            captions.on_event(Event(dict(events.transcript(
                seq=3, text=text, is_final=False, lang="en-US", ts=NOW, speaker=sp))))  # fmt: skip
        assert captions.interim.plain == "… Priya: So the plan is\n… p2: Wait I"
        captions.on_event(Event(dict(events.speaker_event("p2", "Sam"))))
        captions.on_event(Event(dict(events.transcript(
            seq=3, text="Wait, I disagree.", is_final=True, lang="en-US", ts=NOW, speaker=sam))))  # fmt: skip
        assert captions.interim.plain == "… Priya: So the plan is"
        captions.on_event(Event(dict(events.transcript(
            seq=4, text="Room mic.", is_final=True, lang="en-US", ts=NOW))))  # fmt: skip
    out = console.export_text()
    assert "3 en-US Sam: Wait, I disagree." in out
    assert "4 en-US Room mic." in out


async def test_python_client_names_and_lists_speakers(sqlite_server: Running) -> None:
    t = await new_tenant(sqlite_server)
    doc = await new_session(sqlite_server, t["apiKey"])
    sid = doc["sessionId"]
    async with Client(sqlite_server.url, t["apiKey"]) as api:
        assert await api.name_speaker(sid, "sam@example.com", "Sam") == who(
            "Sam", "sam@example.com"
        )
        named = await api.name_speaker(sid, "p1", "Priya", owner_secret=doc["ownerSecret"])
        assert named == who("Priya", "p1")
        listed = await api.speakers(sid, token=doc["embedToken"])
        assert listed["speakers"] == [who("Priya", "p1"), who("Sam", "sam@example.com")]
        with pytest.raises(errors.BadRequest):
            await api.name_speaker(sid, "a b", "X")
        with pytest.raises(errors.BadRequest):
            await api.name_speaker(sid, "p1", " ")


async def test_a_track_connecting_names_itself_as_stored(
    live: tuple[Running, wire.TenantWithKey, wire.SessionCreated],
) -> None:
    """What a participant's track uses on connect: the name as stored now (a name the
    owner set wins over an unnamed token), and viewers told when a token renames."""
    srv, t, doc = live
    sid = doc["sessionId"]
    repo, hub = srv.state.repo, srv.state.hub
    url = f"{srv.ws_url}/ws/subscribe?token={doc['subscribeToken']}"
    async with websockets.connect(url) as ws:
        assert await track_connected(repo, hub, sid, who("p1", "p1")) == who("p1", "p1")
        async with client(srv) as c:
            r = await c.put(
                f"/api/sessions/{sid}/speakers/p1",
                json={"name": "Priya"},
                headers={"x-tenant-key": t["apiKey"]},
            )
            assert r.status_code == 200
        assert await next_ws(ws) == {"type": "speaker", "speaker": who("Priya", "p1")}
        # The track reconnects with its unnamed token: it goes on as Priya, quietly.
        assert await track_connected(repo, hub, sid, who("p1", "p1")) == who("Priya", "p1")
        # A token naming the participant otherwise renames it, and viewers hear of it.
        assert await track_connected(repo, hub, sid, who("Priya P.", "p1")) == who("Priya P.", "p1")
        assert await next_ws(ws) == {"type": "speaker", "speaker": who("Priya P.", "p1")}
        # A new participant: nothing to rename.
        assert await track_connected(repo, hub, sid, who("Sam", "p2")) == who("Sam", "p2")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
    assert await repo.speaker_names(sid) == {"p1": "Priya P.", "p2": "Sam"}
