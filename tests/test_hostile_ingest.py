"""Hostile input on the ingest surfaces (issue 12): ``/ws/stt`` and ``POST /api/webrtc``.

The invariant: no control frame, query or upgrade header makes the server answer 5xx
or drop the connection without a close frame; origins and rate limits are enforced
before a token is burned, a session created or an offer parsed. On both databases.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import websockets
from conftest import ADMIN, Running, make_settings, new_session, new_tenant, run_server
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from whipclient import close, make_offer

from mcustt.ingest.audio import MAX_CONTROL_BYTES
from mcustt.wire import CloseCode, ErrorCode

ALLOWED = "https://captions.example"
EVIL = "https://evil.example"
SDP = {"content-type": "application/sdp"}
#: high enough that the property tests are never rate limited (each example connects)
UNLIMITED = {"rate_ws_upgrade": "100000/minute", "rate_create_session": "100000/minute"}
#: what the server may close an ingest socket with after a frame (never 1006 or 1011)
CONTRACT_CLOSES = {
    CloseCode.NORMAL,  # stop
    CloseCode.UNSUPPORTED_DATA,  # not PCM16
    1007,  # a text frame that is not UTF-8: the WebSocket layer's own close (RFC 6455)
    CloseCode.MESSAGE_TOO_BIG,  # over 1 MB / a control message over 8 KB
}


def refusal(exc: pytest.ExceptionInfo[websockets.InvalidStatus]) -> tuple[int, str]:
    """The status and envelope code of a refused upgrade."""
    response = exc.value.response
    return response.status_code, json.loads(response.body)["error"]["code"]


async def allow_only(srv: Running, tenant_id: str, origins: list[str]) -> None:
    async with srv.client() as c:
        r = await c.patch(
            f"/api/admin/tenants/{tenant_id}",
            json={"allowedOrigins": origins},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
    assert r.status_code == 200, r.text


async def session_ids(srv: Running, key: str) -> list[str]:
    async with srv.client() as c:
        r = await c.get("/api/sessions", headers={"x-tenant-key": key})
    assert r.status_code == 200, r.text
    return [s["sessionId"] for s in r.json()["sessions"]]


async def first_message(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return message


# -- class 7: /ws/stt enforces the tenant's allowed origins --------------------------------


async def test_ingest_socket_refuses_foreign_origin_before_burning(db_url: str) -> None:
    async with run_server(make_settings(db_url)) as srv:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        doc = await new_session(srv, key)
        await allow_only(srv, tenant["tenantId"], [ALLOWED])
        url = f"{srv.ws_url}/ws/stt?token={doc['ingestToken']}"

        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, origin=websockets.Origin(EVIL))
        assert refusal(refused) == (403, ErrorCode.ORIGIN_FORBIDDEN)
        session = await srv.stored_session(doc["sessionId"])
        assert session.producer_id is None and session.ingest_jti is not None  # not burned

        # Zero-ceremony from a foreign origin: refused before a session is created.
        before = await session_ids(srv, key)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"{srv.ws_url}/ws/stt",
                origin=websockets.Origin(EVIL),
                additional_headers={"x-tenant-key": key},
            )
        assert refusal(refused) == (403, ErrorCode.ORIGIN_FORBIDDEN)
        assert await session_ids(srv, key) == before

        # The same token still works from an allowed page.
        async with websockets.connect(url, origin=websockets.Origin(ALLOWED)) as ws:
            assert (await first_message(ws))["type"] == "ready"


async def test_ingest_socket_without_origin_is_not_a_browser(db_url: str) -> None:
    """An MCU sends no Origin: the tenant's list does not apply to it."""
    async with run_server(make_settings(db_url)) as srv:
        tenant = await new_tenant(srv, allowedOrigins=[ALLOWED])
        doc = await new_session(srv, tenant["apiKey"])
        async with websockets.connect(f"{srv.ws_url}/ws/stt?token={doc['ingestToken']}") as ws:
            assert (await first_message(ws))["type"] == "ready"


# -- class 8: every ingest surface counts before it works -----------------------------------


async def test_zero_ceremony_socket_counts_as_session_creation(db_url: str) -> None:
    async with run_server(make_settings(db_url, rate_create_session="3/minute")) as srv:
        tenant = await new_tenant(srv)
        key = tenant["apiKey"]
        for _ in range(3):
            async with websockets.connect(
                f"{srv.ws_url}/ws/stt", additional_headers={"x-tenant-key": key}
            ) as ws:
                assert (await first_message(ws))["type"] == "ready"
        assert len(await session_ids(srv, key)) == 3

        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"{srv.ws_url}/ws/stt", additional_headers={"x-tenant-key": key}
            )
        assert refusal(refused) == (429, ErrorCode.RATE_LIMITED)
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert len(await session_ids(srv, key)) == 3  # no 4th session
        # One budget with POST /api/sessions.
        async with srv.client() as c:
            r = await c.post("/api/sessions", json={}, headers={"x-tenant-key": key})
        assert r.status_code == 429


async def test_whip_counts_every_offer_before_reading_it(db_url: str) -> None:
    settings = make_settings(
        db_url, rate_ws_upgrade="3/minute", webrtc_host_addresses=["127.0.0.1"]
    )
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        doc = await new_session(srv, tenant["apiKey"])
        pc, offer = await make_offer()
        try:
            post = "/api/webrtc"
            # Garbage of every kind: each is refused, and each is counted.
            r = await c.post(post, params={"token": "nope"}, content="garbage", headers=SDP)
            assert r.status_code == 400, r.text
            r = await c.post(post, params={"token": "nope"}, content=offer, headers=SDP)
            assert r.status_code == 401, r.text
            r = await c.post(post, content=b"\xff\x00" * 10)
            assert r.status_code == 415, r.text
            # The budget is spent: even a good offer with a good token is refused, and
            # the token is not burned by it.
            r = await c.post(post, params={"token": doc["ingestToken"]}, content=offer, headers=SDP)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == ErrorCode.RATE_LIMITED
            assert int(r.headers["retry-after"]) >= 1
            r = await c.post(post, content="garbage", headers=SDP)
            assert r.status_code == 429, r.text
        finally:
            await close(pc)
        session = await srv.stored_session(doc["sessionId"])
        assert session.ingest_jti is not None and session.producer_id is None
        assert not srv.whip.peers


async def test_zero_ceremony_whip_counts_as_session_creation(db_url: str) -> None:
    settings = make_settings(
        db_url, rate_create_session="1/minute", webrtc_host_addresses=["127.0.0.1"]
    )
    async with run_server(settings) as srv, srv.client() as c:
        tenant = await new_tenant(srv)
        key = {"x-tenant-key": tenant["apiKey"]}
        r = await c.post("/api/sessions", json={}, headers=key)
        assert r.status_code == 201, r.text
        r = await c.post("/api/webrtc", content="garbage", headers=SDP | key)
        assert r.status_code == 429, r.text
        assert len(await session_ids(srv, tenant["apiKey"])) == 1


# -- the invariant, by property: control frames -------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
TYPES = st.sampled_from(["ping", "stop", "dance", "", "PING"]) | st.text(max_size=12)
CONTROL_OBJECTS = st.fixed_dictionaries({"type": TYPES}, optional={"ts": JSON_VALUES}).map(
    json.dumps
)
PATHOLOGICAL = st.sampled_from(
    [
        '{"type":"ping","ts":NaN}',
        '{"type":"ping","ts":Infinity}',
        '{"type":"ping","ts":-Infinity}',
        '{"type":"stop","ts":NaN}',
        '{"type":"ping","ts":1e400}',
        '{"type":"ping","ts":-1e99999}',
        '{"type":"ping","ts":' + "9" * 4300 + "}",
        '{"type":"ping","ts":' + "9" * 4301 + "}",
        '{"type":"ping","ts":' + "9" * 8000 + "}",
        '{"type":"ping","ts":' + "[" * 900 + "]" * 900 + "}",
        "[1, 2]",
        '"ping"',
        "null",
        "",
        "{not json",
        '{"type":"ping"}' + " " * (MAX_CONTROL_BYTES - 15),  # exactly 8 KB
        '{"type":"ping"}' + " " * (MAX_CONTROL_BYTES - 14),  # 8 KB + 1
    ]
)
NESTED = st.integers(1, 5000).flatmap(
    lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])
)
SIZED = st.integers(MAX_CONTROL_BYTES - 2, MAX_CONTROL_BYTES + 2).map(lambda n: "é" * (n // 2))


class Utf8Invalid(bytes):
    """A text frame whose payload is not UTF-8 (sent as-is)."""


FRAMES = st.one_of(
    CONTROL_OBJECTS,
    PATHOLOGICAL,
    NESTED,
    SIZED,
    st.text(max_size=200),
    st.binary(max_size=4000),
    st.sampled_from([b"\xff\xfe", b"{\xc3(}", b'{"type":"ping","ts":"\xed\xa0\x80"}']).map(
        Utf8Invalid
    ),
)


@pytest.fixture
async def open_server(db_url: str) -> AsyncIterator[tuple[Running, str]]:
    """A server (each database) and a tenant key without session or rate caps."""
    async with run_server(make_settings(db_url, **UNLIMITED)) as srv:
        tenant = await new_tenant(srv, maxSessions=100_000)
        yield srv, tenant["apiKey"]


def _not_json(name: str) -> Any:
    raise AssertionError(f"the server sent {name}, which a browser's JSON.parse refuses")


def strict_json(raw: str | bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw, parse_constant=_not_json)
    return message


async def probe(
    ws: ClientConnection, frame: str | bytes
) -> tuple[list[dict[str, Any]], int | None]:
    """Send ``frame``, then a ping; collect what comes back until that ping's pong.

    Returns (the messages, the close code if the server closed instead). Every message
    must be JSON a browser can parse (no ``NaN``, which a naive echo of ``ts`` sends).
    """
    marker = "probe-" + uuid.uuid4().hex
    got: list[dict[str, Any]] = []
    try:
        if isinstance(frame, Utf8Invalid):
            await ws.send(bytes(frame), text=True)
        else:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "ping", "ts": marker}))
        while True:
            message = strict_json(await asyncio.wait_for(ws.recv(), 10))
            got.append(message)
            if message == {"type": "pong", "ts": marker}:
                return got, None
    except websockets.ConnectionClosed:
        pass
    # The server's close must have arrived: wait for the closing handshake to finish.
    await asyncio.wait_for(ws.wait_closed(), 10)
    return got, ws.close_code


def expected_close(frame: str | bytes) -> set[int]:
    """The close codes the contract allows after ``frame`` (empty: it must stay open)."""
    if isinstance(frame, Utf8Invalid):
        return {1007}
    if isinstance(frame, bytes):
        if len(frame) % 2 or frame[:4] == b"RIFF":
            return {CloseCode.UNSUPPORTED_DATA}
        return set()
    if len(frame.encode()) > MAX_CONTROL_BYTES:
        return {CloseCode.MESSAGE_TOO_BIG}
    if "stop" in frame:
        return {CloseCode.NORMAL, -1}  # -1: a stop with a bad payload is a non-fatal error
    return set()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=4))
# The review's findings, every run (whatever the generator happens to draw).
@example(frames=["[" * 4000 + "]" * 4000])
@example(frames=['{"type":"ping","ts":NaN}', '{"type":"ping","ts":1e400}', "[1]", '"x"'])
@example(frames=['{"type":"ping","ts":' + "9" * 5000 + "}"])
@example(frames=['{"type":"ping","ts":' + "[" * 900 + "]" * 900 + "}"])
@example(frames=['{"type":"ping"}' + " " * (MAX_CONTROL_BYTES - 14)])  # 8 KB + 1
@example(frames=[Utf8Invalid(b"{\xc3(}")])
async def test_control_frames_never_drop_the_connection(
    open_server: tuple[Running, str], frames: list[str | bytes]
) -> None:
    srv, key = open_server
    async with websockets.connect(
        f"{srv.ws_url}/ws/stt", additional_headers={"x-tenant-key": key}, max_size=None
    ) as ws:
        assert (await first_message(ws))["type"] == "ready"
        for frame in frames:
            got, code = await probe(ws, frame)
            allowed = expected_close(frame)
            errors = [m for m in got if m["type"] == "error"]
            if code is None:
                assert allowed <= {CloseCode.NORMAL, -1}, (frame[:80], got)
                assert not any(e["fatal"] for e in errors), got
                assert all(
                    e["code"] in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_CONTROL) for e in errors
                ), got
                assert all(m["type"] in ("ready", "pong", "error") for m in got), got
                continue
            assert code in CONTRACT_CLOSES, (code, ws.close_reason, frame[:80])
            assert code in allowed, (code, ws.close_reason, frame[:80])
            if code in (CloseCode.UNSUPPORTED_DATA, CloseCode.MESSAGE_TOO_BIG):
                assert errors and errors[-1]["fatal"], got  # the reason, before the close
            if code == CloseCode.NORMAL:
                assert got and got[-1]["type"] == "session-end", got
            return


# -- the invariant, by property: the upgrade's query and headers ----------------------------

QUERY_TEXT = st.text(max_size=600) | st.sampled_from(["\x00", "a\x00b", "en-US\x00", "é" * 501])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    title=QUERY_TEXT,
    source_lang=st.none() | QUERY_TEXT,
    auto_detect=st.none() | st.text(max_size=10),
    origin=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
)
@example(title="a\x00b", source_lang=None, auto_detect=None, origin=None)
@example(title="", source_lang="en-US\x00", auto_detect="\x00", origin="null")
async def test_zero_ceremony_query_is_refused_cleanly(
    open_server: tuple[Running, str],
    title: str,
    source_lang: str | None,
    auto_detect: str | None,
    origin: str | None,
) -> None:
    """Whatever the query (NUL, over-long, not a language), the upgrade is accepted
    or refused with a 4xx envelope, never a 5xx."""
    srv, key = open_server
    query = {"title": title}
    if source_lang is not None:
        query["sourceLang"] = source_lang
    if auto_detect is not None:
        query["autoDetect"] = auto_detect
    headers = {"x-tenant-key": key}
    if origin is not None:
        headers["origin"] = origin
    try:
        async with websockets.connect(
            f"{srv.ws_url}/ws/stt?{urlencode(query)}", additional_headers=headers
        ) as ws:
            assert (await first_message(ws))["type"] == "ready"
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        assert 400 <= status < 500, (status, exc.response.body)
        assert json.loads(exc.response.body)["error"]["code"]
