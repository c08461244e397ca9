"""Hostile input on the viewer and credential surfaces (issue 12), on both databases.

Replay positions past 64 bits, validly signed tokens with claims of the wrong type,
stream opens past the rate limit, a broken replay, and WHIP resource ids in the access
log: each must be an answer in the envelope (or a close frame), never a 5xx, a cut
connection or a capability in a log line.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import websockets
from conftest import Running, make_settings, run_server
from rest_helpers import client, create_session, create_tenant, error_of, jwt_claims
from sse import read_sse
from test_logs import capture, records

from mcustt import wire

SECRET = "hostile-test-secret-" + "x" * 32
TOO_BIG = [str(wire.MAX_SEQ + 1), str(2**63), str(2**64), "9" * 30, "9" * 5000]
NOT_DIGITS = ["-1", "+1", "1_0", "1.0", "0x10", "1e3"]


@pytest.fixture
async def srv(db_url: str) -> AsyncIterator[Running]:
    async with run_server(make_settings(db_url, jwt_secret=SECRET)) as running:
        yield running


async def a_session(srv: Running, **tenant: Any) -> wire.SessionCreated:
    async with client(srv) as c:
        t = await create_tenant(c, **tenant)
        return await create_session(c, t["apiKey"])


async def open_sse(c: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """Open a stream; read the body only if it is not one (a wrong 200 cannot hang us)."""
    async with c.stream("GET", url, **kwargs) as r:
        if r.status_code != 200:
            await r.aread()
        return r


async def refused_upgrade(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and envelope of a refused WebSocket upgrade."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, open_timeout=10, **kwargs):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


# -- class 4: integers without bounds ---------------------------------------------------


async def test_replay_positions_past_64_bits_are_400(srv: Running) -> None:
    s = await a_session(srv)
    base = f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}"
    stream = f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}"
    async with client(srv) as c:
        for bad in TOO_BIG + NOT_DIGITS + ["١٢"]:
            status, doc = await refused_upgrade(f"{base}&lastSeq={quote(bad)}")
            assert (status, doc["error"]["code"]) == (400, "BAD_REQUEST"), bad
            r = await open_sse(c, stream, params={"lastEventId": bad})
            error_of(r, 400, "BAD_REQUEST")
        for bad in TOO_BIG + NOT_DIGITS:
            r = await open_sse(c, stream, headers={"Last-Event-ID": bad})
            error_of(r, 400, "BAD_REQUEST")

        # The largest position is a position: nothing after it to replay, then live.
        top = str(wire.MAX_SEQ)
        async with websockets.connect(f"{base}&lastSeq={top}", open_timeout=10) as ws:
            await ws.send("ping")  # text is ignored: the socket is simply open
        async with c.stream("GET", stream, headers={"Last-Event-ID": top}) as r:
            assert r.status_code == 200
            first = await anext(read_sse(r))
            assert first.event == "ready"


async def test_a_failing_replay_closes_with_a_frame(
    srv: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever breaks behind a viewer, it is told (1011 / an SSE error), not cut off."""
    s = await a_session(srv)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("SELECT * FROM transcript_lines -- internal detail")

    monkeypatch.setattr(srv.state.repo, "lines_after", broken)
    async with websockets.connect(
        f"{srv.ws_url}/ws/subscribe?token={s['subscribeToken']}&lastSeq=0", open_timeout=10
    ) as ws:
        with pytest.raises(websockets.ConnectionClosedError):
            await ws.recv()
        assert ws.close_code == wire.CloseCode.INTERNAL_ERROR
        assert ws.close_reason and ws.close_reason.startswith("INTERNAL")
        assert "SELECT" not in ws.close_reason
    url = f"/api/sessions/{s['sessionId']}/stream?t={s['embedToken']}&lastEventId=0"
    async with client(srv) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        got = [ev async for ev in read_sse(r)]
    assert [ev.event for ev in got] == ["ready", "error"]
    assert got[1].data["code"] == "INTERNAL" and got[1].data["fatal"] is True
    assert "SELECT" not in json.dumps(got[1].data)


# -- class 10: unexpected but signed claims ----------------------------------------------

#: Claims a token signed with the server's own secret may carry; each is a 401.
BAD_CLAIMS: list[dict[str, Any]] = [
    {"scope": 123},
    {"scope": ["embed"]},
    {"scope": {"embed": True}},
    {"scope": None},
    {"sub": 123},
    {"sub": ["x"]},
    {"sub": "abc\x00def"},
    {"sub": "s" * 5000},
    {"tid": None},
    {"tid": 7},
    {"tid": "tn_\x00"},
    {"jti": None},
    {"jti": 5},
    {"jti": "j\x00"},
    {"exp": "tomorrow"},
    {"exp": str(int(time.time()) + 3600)},
    {"exp": 2**70},
    {"exp": float("inf")},
    {"iat": float("inf")},
]


def signed(token: str, **claims: Any) -> str:
    """``token``'s claims with ``claims`` over them, signed with the server's secret."""
    merged = jwt_claims(token) | {"exp": int(time.time()) + 3600} | claims
    return jwt.encode(merged, SECRET, algorithm="HS256")


def invalid_token(r: httpx.Response) -> None:
    assert error_of(r, 401)["code"] in ("INVALID_TOKEN", "TOKEN_EXPIRED"), r.text


async def test_signed_tokens_with_wrong_claim_types_are_401(srv: Running) -> None:
    s = await a_session(srv)
    sid = s["sessionId"]
    async with client(srv) as c:
        # Sanity: the forging works (an untouched re-signed token is accepted).
        r = await c.get(f"/api/sessions/{sid}", params={"t": signed(s["embedToken"])})
        assert r.status_code == 200, r.text
        for claims in BAD_CLAIMS:
            read = signed(s["embedToken"], **claims)
            for path in ("", "/transcript", "/summary"):
                invalid_token(await c.get(f"/api/sessions/{sid}{path}", params={"t": read}))
            invalid_token(await open_sse(c, f"/api/sessions/{sid}/stream", params={"t": read}))
            status, doc = await refused_upgrade(f"{srv.ws_url}/ws/subscribe?token={read}")
            assert status == 401 and doc["error"]["code"] in ("INVALID_TOKEN", "TOKEN_EXPIRED")
            ingest = signed(s["ingestToken"], **claims)
            status, doc = await refused_upgrade(f"{srv.ws_url}/ws/stt?token={ingest}")
            assert status == 401 and doc["error"]["code"] in ("INVALID_TOKEN", "TOKEN_EXPIRED")
        # Nothing refused changed the session: its real ingest token still works.
        async with websockets.connect(
            f"{srv.ws_url}/ws/stt?token={s['ingestToken']}", open_timeout=10
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"


# -- class 7 (summary part): allowedOrigins on GET …/summary -----------------------------


async def test_summary_honours_allowed_origins(srv: Running) -> None:
    s = await a_session(srv, allowedOrigins=["https://good.example"])
    url = f"/api/sessions/{s['sessionId']}/summary"
    async with client(srv) as c:
        r = await c.get(url, params={"t": s["embedToken"]}, headers={"Origin": "https://evil.test"})
        error_of(r, 403, "ORIGIN_FORBIDDEN")
        r = await c.get(
            url, params={"t": s["embedToken"]}, headers={"Origin": "https://good.example"}
        )
        assert r.status_code == 202 and r.json() == {"status": "pending"}
        # No Origin: not a browser page; the token decides, as on the state endpoint.
        assert (await c.get(url, params={"t": s["embedToken"]})).status_code == 202


# -- class 8 (SSE part): stream opens are rate-limited ---------------------------------------


async def test_sse_opens_spend_the_stream_budget_before_any_check(db_url: str) -> None:
    settings = make_settings(db_url, jwt_secret=SECRET, rate_ws_upgrade="3/minute")
    async with run_server(settings) as srv, client(srv) as c:
        # Opens with no token, or one that is garbage, still count: the limit comes first.
        for params in ({}, {"t": "garbage"}, {"t": "x.y.z"}):
            error_of(await open_sse(c, "/api/sessions/nosuchsess1/stream", params=params), 401)
        r = await open_sse(c, "/api/sessions/nosuchsess1/stream")
        error_of(r, 429, "RATE_LIMITED")
        assert int(r.headers["retry-after"]) >= 1
        # One budget for opening a stream, whichever transport: the socket is refused too.
        status, doc = await refused_upgrade(f"{srv.ws_url}/ws/subscribe?token=garbage")
        assert (status, doc["error"]["code"]) == (429, "RATE_LIMITED")


# -- class 9: capabilities in logs ----------------------------------------------------------


async def test_whip_resource_ids_never_reach_the_log(srv: Running) -> None:
    resource = "Rsrc" + "q7" * 12
    with capture() as captured:
        async with client(srv) as c:
            assert (await c.delete(f"/api/webrtc/{resource}")).status_code == 404
            r = await c.patch(
                f"/api/webrtc/{resource}",
                content=b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
                headers={"content-type": "application/trickle-ice-sdpfrag"},
            )
            assert r.status_code >= 400
    assert resource not in captured.getvalue()
    paths = [x["path"] for x in records(captured) if x["event"] == "request"]
    assert paths.count("/api/webrtc/…") == 2, paths
