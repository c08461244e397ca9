"""Sessions over REST (§3 option A, §9, §10): create, read, tokens, end, caps, transcripts."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import srt
import webvtt
from conftest import Running
from rest_helpers import ADMIN_HEADERS, client, create_session, create_tenant, error_of, jwt_claims
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mcustt import wire
from mcustt.config import Settings

CREATE_KEYS = {
    "sessionId",
    "ingestToken",
    "ingestUrl",
    "embedToken",
    "embedUrl",
    "subscribeToken",
    "subscribeUrl",
    "ownerSecret",
    "brand",
}
STATE_KEYS = {
    "sessionId",
    "status",
    "sourceLang",
    "autoDetect",
    "detectedLang",
    "detectedLangName",
    "lineCount",
    "ingestConnected",
    "subscribers",
    "summaryStatus",
}


async def ws_status(url: str) -> int:
    """101 if the socket opens (then closed at once), else the refusal's HTTP status."""
    try:
        async with connect(url, open_timeout=10) as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready", ready
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_create_session_returns_everything_option_a_promises(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c, brand={"brandName": "Acme Live", "accentColor": "#0b5"})
        doc = await create_session(
            c, t["apiKey"], title="Board call", sourceLang="es-ES", autoDetect=False
        )
    assert set(doc) >= CREATE_KEYS, CREATE_KEYS - set(doc)
    sid = doc["sessionId"]
    assert re.fullmatch(r"[A-Za-z0-9]{10}", sid), sid
    assert doc["ingestUrl"] == f"{server.ws_url}/ws/stt?token={doc['ingestToken']}"
    assert doc["embedUrl"] == f"{server.url}/embed/{sid}#t={doc['embedToken']}"
    assert doc["subscribeUrl"] == f"{server.ws_url}/ws/subscribe?token={doc['subscribeToken']}"
    assert doc["brand"] == {"brandName": "Acme Live", "accentColor": "#0b5", "logoUrl": None}
    tokens = {doc["ingestToken"], doc["embedToken"], doc["subscribeToken"], doc["ownerSecret"]}
    assert len(tokens) == 4
    assert len(doc["ownerSecret"]) >= 32
    for token, scope in [(doc["ingestToken"], "ingest"), (doc["embedToken"], "embed")]:
        claims = jwt_claims(token)
        assert claims["sub"] == sid and claims["scope"] == scope
        assert claims["tid"] == t["tenantId"]

    async with client(server) as c:
        r = await c.get(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
    assert r.status_code == 200, r.text
    state = r.json()
    assert set(state) >= STATE_KEYS, STATE_KEYS - set(state)
    assert state["sessionId"] == sid
    assert state["status"] == "live"
    assert state["title"] == "Board call"
    assert state["sourceLang"] == "es-ES"
    assert state["autoDetect"] is False
    assert state["detectedLang"] is None and state["detectedLangName"] is None
    assert state["lineCount"] == 0
    assert state["ingestConnected"] is False
    assert state["subscribers"] == 0
    assert state["summaryStatus"] == "pending"  # made when the session ends (§9)


async def test_defaults_and_body_validation(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        r = await c.post("/api/sessions", headers=key)  # no body at all: every field optional
        assert r.status_code == 201, r.text
        state = (await c.get(f"/api/sessions/{r.json()['sessionId']}", headers=key)).json()
        assert (state["sourceLang"], state["autoDetect"], state["title"]) == ("en-US", True, None)
        for body, field in [
            ({"sourceLang": "english please"}, "sourceLang"),
            ({"autoDetect": "sometimes"}, "autoDetect"),
            ({"title": "x" * 501}, "title"),
        ]:
            r = await c.post("/api/sessions", json=body, headers=key)
            assert field in error_of(r, 400, "BAD_REQUEST")["message"]
        listed = (await c.get("/api/sessions", headers=key)).json()["sessions"]
        assert len(listed) == 1, "a rejected body created a session"


def test_public_https_url_gives_wss_urls() -> None:
    settings = Settings(public_url="https://captions.example.com/")
    assert settings.public_ws_url == "wss://captions.example.com"


async def test_embed_token_with_tenant_key_or_owner_secret(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        minted = []
        credentials: list[dict[str, Any]] = [
            {"headers": {"x-tenant-key": t["apiKey"]}},
            {"json": {"ownerSecret": doc["ownerSecret"]}},
        ]
        for kwargs in credentials:
            r = await c.post(f"/api/sessions/{sid}/embed-token", **kwargs)
            assert r.status_code == 200, r.text
            fresh = r.json()
            assert fresh["embedUrl"] == f"{server.url}/embed/{sid}#t={fresh['embedToken']}"
            assert fresh["subscribeUrl"].startswith(f"{server.ws_url}/ws/subscribe?token=")
            assert "ingestToken" not in fresh and "ownerSecret" not in fresh
            minted += [fresh["embedToken"], fresh["subscribeToken"]]
        assert len(set(minted) | {doc["embedToken"], doc["subscribeToken"]}) == 6
        # Every minted token reads the session (and the earlier ones keep working).
        for token in [*minted, doc["embedToken"]]:
            r = await c.get(f"/api/sessions/{sid}", params={"t": token})
            assert r.status_code == 200, r.text
            r = await c.get(
                f"/api/sessions/{sid}/transcript", headers={"authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200, r.text


async def test_ingest_token_rotation_replaces_the_unused_token(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        r = await c.post(f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": "wrong"})
        error_of(r, 401)
        r = await c.post(
            f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": doc["ownerSecret"]}
        )
        assert r.status_code == 200, r.text
        fresh = r.json()
        assert fresh["ingestToken"] != doc["ingestToken"]
        assert fresh["ingestUrl"] == f"{server.ws_url}/ws/stt?token={fresh['ingestToken']}"
        assert jwt_claims(fresh["ingestToken"])["sub"] == sid

    # The replaced token is refused; the new one connects once, and only once.
    assert await ws_status(doc["ingestUrl"]) == 401
    assert await ws_status(fresh["ingestUrl"]) == 101
    assert await ws_status(fresh["ingestUrl"]) == 401

    async with client(server) as c:
        r = await c.delete(f"/api/sessions/{sid}", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200
        r = await c.post(
            f"/api/sessions/{sid}/ingest-token", json={"ownerSecret": doc["ownerSecret"]}
        )
        error_of(r, 409, "SESSION_ENDED")


@pytest.mark.parametrize("how", ["tenant key", "owner secret"])
async def test_delete_ends_the_session_and_keeps_its_transcript(server: Running, how: str) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        await server.state.repo.append_final(
            sid,
            seq=1,
            text="Hello there.",
            lang="en-US",
            ts=1,
            start_ms=0,
            end_ms=900,
            audio_ms=900,
        )
        cred: dict[str, Any] = (
            {"headers": {"x-tenant-key": t["apiKey"]}}
            if how == "tenant key"
            else {"json": {"ownerSecret": doc["ownerSecret"]}}
        )
        r = await c.request("DELETE", f"/api/sessions/{sid}", **cred)
        assert r.status_code == 200, r.text
        ended = r.json()
        assert ended["status"] == "ended"
        assert ended["endedAt"] is not None
        assert ended["summaryStatus"] in ("pending", "ready")
        # Idempotent: a second DELETE answers the same state.
        r = await c.request("DELETE", f"/api/sessions/{sid}", **cred)
        assert r.status_code == 200 and r.json()["status"] == "ended"
        assert r.json()["endedAt"] == ended["endedAt"]

        r = await c.get(f"/api/sessions/{sid}", params={"t": doc["embedToken"]})
        assert r.status_code == 200 and r.json()["status"] == "ended"
        assert r.json()["lineCount"] == 1
        r = await c.get(f"/api/sessions/{sid}/transcript", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200
        assert [line["text"] for line in r.json()["lines"]] == ["Hello there."]
    # An ended session takes no producer.
    assert await ws_status(doc["ingestUrl"]) in (401, 409)


async def test_max_sessions_cap(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c, maxSessions=2)
        key = {"x-tenant-key": t["apiKey"]}
        first = await create_session(c, t["apiKey"])
        await create_session(c, t["apiKey"])
        r = await c.post("/api/sessions", json={}, headers=key)
        err = error_of(r, 429, "SESSION_CAP")
        assert "maxSessions" in err["message"]
        assert int(r.headers["retry-after"]) > 0
        # Another tenant is not affected.
        other = await create_tenant(c, maxSessions=1)
        await create_session(c, other["apiKey"])
        # Ending a session frees its slot.
        r = await c.delete(f"/api/sessions/{first['sessionId']}", headers=key)
        assert r.status_code == 200
        await create_session(c, t["apiKey"])
        error_of(await c.post("/api/sessions", json={}, headers=key), 429)
        # Raising the cap takes effect at once.
        r = await c.patch(
            f"/api/admin/tenants/{t['tenantId']}", json={"maxSessions": 3}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 200
        await create_session(c, t["apiKey"])


async def test_simultaneous_creates_cannot_overshoot_the_cap(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c, maxSessions=3)
        key = {"x-tenant-key": t["apiKey"]}
        results = await asyncio.gather(
            *(c.post("/api/sessions", json={}, headers=key) for _ in range(10))
        )
        assert sorted(r.status_code for r in results) == [201] * 3 + [429] * 7
        for r in results:
            if r.status_code == 429:
                error_of(r, 429, "SESSION_CAP")
        r = await c.get("/api/sessions", params={"status": "live"}, headers=key)
        assert len(r.json()["sessions"]) == 3


async def test_browsers_outside_the_tenants_origins_cannot_read(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c, allowedOrigins=["https://intranet.acme.example"])
        doc = await create_session(c, t["apiKey"])
        sid = doc["sessionId"]
        token = {"t": doc["embedToken"]}
        for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/transcript"):
            r = await c.get(path, params=token, headers={"origin": "https://evil.example"})
            error_of(r, 403, "ORIGIN_FORBIDDEN")
            r = await c.get(path, params=token, headers={"origin": "https://intranet.acme.example"})
            assert r.status_code == 200, r.text
            r = await c.get(path, params=token)  # not a browser: no Origin
            assert r.status_code == 200, r.text


async def test_list_sessions_shows_only_the_tenants_own(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        a, b = await create_tenant(c), await create_tenant(c)
        live = await create_session(c, a["apiKey"], title="live one")
        ended = await create_session(c, a["apiKey"], title="ended one")
        theirs = await create_session(c, b["apiKey"])
        key = {"x-tenant-key": a["apiKey"]}
        await c.delete(f"/api/sessions/{ended['sessionId']}", headers=key)
        r = await c.get("/api/sessions", headers=key)
        ids = {s["sessionId"]: s["status"] for s in r.json()["sessions"]}
        assert ids == {live["sessionId"]: "live", ended["sessionId"]: "ended"}
        assert theirs["sessionId"] not in r.text
        r = await c.get("/api/sessions", params={"status": "live"}, headers=key)
        assert [s["sessionId"] for s in r.json()["sessions"]] == [live["sessionId"]]
        error_of(await c.get("/api/sessions", params={"status": "weird"}, headers=key), 400)
        error_of(await c.get("/api/sessions"), 401)


# -- transcripts (§10) ------------------------------------------------------------------

LINES = [
    # seq, text, start_ms, end_ms
    (1, "Good morning, everyone.", 1_000, 2_500),
    (2, "The   proposal\nis approved.", 3_000, 5_250),
    (3, "Next --> billing.", 3_723_456, 3_723_456),  # zero length: still a visible cue
]


async def session_with_lines(srv: Running) -> tuple[wire.TenantWithKey, wire.SessionCreated]:
    async with client(srv) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
        # Another session's lines must not leak into this transcript.
        other = await create_session(c, t["apiKey"])
    await srv.state.repo.append_final(
        other["sessionId"], seq=1, text="Other meeting.", lang="en-US", ts=5, start_ms=0,
        end_ms=10, audio_ms=10,
    )  # fmt: skip
    for seq, text, start, end in LINES:
        await srv.state.repo.append_final(
            doc["sessionId"], seq=seq, text=text, lang="en-US", ts=1_700_000_000_000 + seq,
            start_ms=start, end_ms=end, audio_ms=end,
        )  # fmt: skip
    return t, doc


async def test_transcript_json_and_txt(server: Running) -> None:
    t, doc = await session_with_lines(server)
    sid = doc["sessionId"]
    async with client(server) as c:
        r = await c.get(f"/api/sessions/{sid}/transcript", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["sessionId"] == sid and body["lineCount"] == 3
        assert [(x["seq"], x["lang"], x["text"], x["ts"]) for x in body["lines"]] == [
            (seq, "en-US", text, 1_700_000_000_000 + seq) for seq, text, _, _ in LINES
        ]
        r = await c.get(
            f"/api/sessions/{sid}/transcript", params={"format": "txt", "t": doc["embedToken"]}
        )
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text.splitlines() == [
            "Good morning, everyone.",
            "The proposal is approved.",
            "Next -> billing.",
        ]
        state = (await c.get(f"/api/sessions/{sid}", params={"t": doc["embedToken"]})).json()
        assert state["lineCount"] == 3


async def test_transcript_srt_and_vtt_parse_as_subtitles(server: Running) -> None:
    t, doc = await session_with_lines(server)
    sid = doc["sessionId"]
    key = {"x-tenant-key": t["apiKey"]}
    async with client(server) as c:
        r_srt = await c.get(
            f"/api/sessions/{sid}/transcript", params={"format": "srt"}, headers=key
        )
        r_vtt = await c.get(
            f"/api/sessions/{sid}/transcript", params={"format": "vtt"}, headers=key
        )
    assert r_srt.status_code == 200 and r_vtt.status_code == 200
    assert r_srt.headers["content-type"].startswith("application/x-subrip")
    assert r_vtt.headers["content-type"].startswith("text/vtt")
    assert f'filename="{sid}.srt"' in r_srt.headers["content-disposition"]

    subs = list(srt.parse(r_srt.text))
    assert [s.index for s in subs] == [1, 2, 3]
    assert [s.content for s in subs] == [
        "Good morning, everyone.",
        "The proposal is approved.",
        "Next -> billing.",
    ]
    assert subs[0].start == timedelta(seconds=1) and subs[0].end == timedelta(seconds=2.5)
    assert subs[1].start == timedelta(seconds=3) and subs[1].end == timedelta(seconds=5.25)
    assert subs[2].start == timedelta(hours=1, minutes=2, seconds=3.456)
    assert subs[2].end > subs[2].start

    cues = webvtt.from_buffer(io.StringIO(r_vtt.text)).captions
    assert [c.text for c in cues] == [s.content for s in subs]
    assert [(c.start, c.end) for c in cues[:2]] == [
        ("00:00:01.000", "00:00:02.500"),
        ("00:00:03.000", "00:00:05.250"),
    ]
    assert cues[2].start == "01:02:03.456" and cues[2].end > cues[2].start


async def test_transcript_of_an_empty_session_and_bad_format(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
        url = f"/api/sessions/{doc['sessionId']}/transcript"
        key = {"x-tenant-key": t["apiKey"]}
        r = await c.get(url, params={"format": "srt"}, headers=key)
        assert r.status_code == 200 and list(srt.parse(r.text)) == []
        r = await c.get(url, params={"format": "vtt"}, headers=key)
        assert r.status_code == 200
        assert webvtt.from_buffer(io.StringIO(r.text)).captions == []
        r = await c.get(url, headers=key)
        assert r.json() == {"sessionId": doc["sessionId"], "lineCount": 0, "lines": []}
        for bad in ("pdf", "SRT", ""):
            r = await c.get(url, params={"format": bad}, headers=key)
            assert "format" in error_of(r, 400, "BAD_REQUEST")["message"]
