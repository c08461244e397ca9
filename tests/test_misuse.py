"""The misuse matrix: every credential a caller might bring, against every session
endpoint. Each is either accepted or refused with 401 / 404 in the error envelope;
another tenant's key gets 404 (never 403) so session ids don't leak, and a refused call
changes nothing."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import pytest_asyncio
from conftest import Running, make_settings, run_server
from rest_helpers import client, create_session, create_tenant, error_of, jwt_claims
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mcustt import tenants, wire
from mcustt.errors import Conflict, Unauthorized
from mcustt.store.db import migrate
from mcustt.store.models import Session

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """One server for the whole matrix (each case makes its own session)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('misuse')}/misuse.db"
    migrate(url)
    async with run_server(make_settings(url, rate_create_session="100000/minute")) as running:
        yield running


@dataclass
class World:
    owner: wire.TenantWithKey  # the tenant that owns the target session
    stranger: wire.TenantWithKey  # another tenant
    other: wire.SessionCreated  # another session of the owner tenant


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(srv: Running) -> World:
    async with client(srv) as c:
        owner = await create_tenant(c, maxSessions=100_000)
        stranger = await create_tenant(c, maxSessions=100_000)
        other = await create_session(c, owner["apiKey"])
    return World(owner, stranger, other)


# -- credentials ---------------------------------------------------------------------------

Request = dict[str, Any]  # httpx keyword arguments carrying one credential


def bearer(token: str) -> Request:
    return {"headers": {"authorization": f"Bearer {token}"}}


def secret(doc: wire.SessionCreated) -> Request:
    return {"json": {"ownerSecret": doc["ownerSecret"]}}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def expired_token(srv: Running, doc: wire.SessionCreated) -> str:
    issuer = copy.copy(srv.state.issuer)
    issuer.read_ttl_s = -120
    claims = jwt_claims(doc["embedToken"])
    token, _ = issuer.mint(doc["sessionId"], claims["tid"], "embed")
    return token


def flipped_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    # A middle character: the last one may only carry padding bits.
    i = len(sig) // 2
    sig = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1 :]
    return f"{head}.{payload}.{sig}"


def retarget(token: str, session_id: str) -> str:
    """Another session's valid token with its ``sub`` rewritten, signature kept."""
    head, _, sig = token.split(".")
    claims = jwt_claims(token) | {"sub": session_id}
    return f"{head}.{b64(claims)}.{sig}"


def forged(doc: wire.SessionCreated, *, key: str, alg: str) -> str:
    claims = jwt_claims(doc["embedToken"])
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 3600}
    return jwt.encode(claims, key, algorithm=alg)


CREDENTIALS: dict[str, Callable[[Running, World, wire.SessionCreated], Request]] = {
    "owner tenant key": lambda s, w, d: {"headers": {"x-tenant-key": w.owner["apiKey"]}},
    "other tenant key": lambda s, w, d: {"headers": {"x-tenant-key": w.stranger["apiKey"]}},
    "embed token": lambda s, w, d: bearer(d["embedToken"]),
    "subscribe token": lambda s, w, d: bearer(d["subscribeToken"]),
    "ingest token": lambda s, w, d: bearer(d["ingestToken"]),
    "owner secret": lambda s, w, d: secret(d),
    "other session's embed token": lambda s, w, d: bearer(w.other["embedToken"]),
    "other session's owner secret": lambda s, w, d: secret(w.other),
    "expired embed token": lambda s, w, d: bearer(expired_token(s, d)),
    "tampered signature": lambda s, w, d: bearer(flipped_signature(d["embedToken"])),
    "tampered payload": lambda s, w, d: bearer(retarget(w.other["embedToken"], d["sessionId"])),
    # PyJWT takes "" as "no key" for alg none (and refuses any other key).
    "unsigned (alg none)": lambda s, w, d: bearer(forged(d, key="", alg="none")),
    "signed with another secret": lambda s, w, d: bearer(forged(d, key="x" * 48, alg="HS256")),
    "bogus tenant key": lambda s, w, d: {"headers": {"x-tenant-key": "sk_mcustt_" + "A" * 43}},
    "no credential": lambda s, w, d: {},
}  # fmt: skip

ENDPOINTS = {
    # name: (method, path)
    "GET session": ("GET", "/api/sessions/{sid}"),
    "POST embed-token": ("POST", "/api/sessions/{sid}/embed-token"),
    "POST ingest-token": ("POST", "/api/sessions/{sid}/ingest-token"),
    "DELETE session": ("DELETE", "/api/sessions/{sid}"),
    "GET transcript": ("GET", "/api/sessions/{sid}/transcript"),
}
NAMES = list(ENDPOINTS)
_401 = dict.fromkeys(NAMES, 401)

#: What each credential may do (the contract's §2 and §9); everything else is refused.
EXPECTED: dict[str, dict[str, int]] = {
    "owner tenant key": _401
    | {"GET session": 200, "POST embed-token": 200, "DELETE session": 200, "GET transcript": 200},
    "other tenant key": _401
    | {"GET session": 404, "POST embed-token": 404, "DELETE session": 404, "GET transcript": 404},
    "embed token": _401 | {"GET session": 200, "GET transcript": 200},
    "subscribe token": _401 | {"GET session": 200, "GET transcript": 200},
    "owner secret": _401
    | {"POST embed-token": 200, "POST ingest-token": 200, "DELETE session": 200},
}

CASES = [
    pytest.param(cred, endpoint, EXPECTED.get(cred, _401)[endpoint], id=f"{cred}-{endpoint}")
    for cred in CREDENTIALS
    for endpoint in ENDPOINTS
]


@pytest.mark.parametrize(("cred", "endpoint", "status"), CASES)
async def test_credential_matrix(
    srv: Running, world: World, cred: str, endpoint: str, status: int
) -> None:
    async with client(srv) as c:
        doc = await create_session(c, world.owner["apiKey"])
        sid = doc["sessionId"]
        method, path = ENDPOINTS[endpoint]
        r = await c.request(method, path.format(sid=sid), **CREDENTIALS[cred](srv, world, doc))

    if status != 200:
        err = error_of(r, status)
        if status == 404:
            assert err["code"] == "SESSION_NOT_FOUND"
        # A refused call changed nothing: still live, the ingest token still the same.
        fresh = await srv.state.sessions.get(sid)
        assert fresh is not None and fresh.status == "live"
        assert fresh.ingest_jti == jwt_claims(doc["ingestToken"])["jti"]
        return

    assert r.status_code == 200, r.text
    body = r.json()
    if endpoint == "GET session":
        assert body["sessionId"] == sid and body["status"] == "live"
    elif endpoint == "POST embed-token":
        assert jwt_claims(body["embedToken"])["sub"] == sid
        assert jwt_claims(body["subscribeToken"])["sub"] == sid
    elif endpoint == "POST ingest-token":
        assert jwt_claims(body["ingestToken"])["sub"] == sid
        fresh = await srv.state.sessions.get(sid)
        assert fresh is not None
        assert fresh.ingest_jti == jwt_claims(body["ingestToken"])["jti"]
    elif endpoint == "DELETE session":
        assert body["status"] == "ended"
    else:
        assert body["sessionId"] == sid and body["lines"] == []


@pytest.mark.parametrize("query", ["t", "token"])
async def test_read_tokens_also_work_in_the_query(srv: Running, world: World, query: str) -> None:
    async with client(srv) as c:
        doc = await create_session(c, world.owner["apiKey"])
        sid = doc["sessionId"]
        for token in (doc["embedToken"], doc["subscribeToken"]):
            r = await c.get(f"/api/sessions/{sid}", params={query: token})
            assert r.status_code == 200, r.text
            r = await c.get(f"/api/sessions/{sid}/transcript", params={query: token})
            assert r.status_code == 200, r.text
        # ...and a token in the query cannot end the session.
        r = await c.delete(f"/api/sessions/{sid}", params={query: doc["embedToken"]})
        error_of(r, 401)
        # ...and another session's token opens nothing here.
        r = await c.get(f"/api/sessions/{sid}", params={query: world.other["embedToken"]})
        error_of(r, 401)


async def test_another_tenants_session_looks_like_no_session(srv: Running, world: World) -> None:
    """The stranger cannot tell an existing session of someone else from a made-up id."""
    async with client(srv) as c:
        doc = await create_session(c, world.owner["apiKey"])
        stranger = {"x-tenant-key": world.stranger["apiKey"]}
        for name, (method, path) in ENDPOINTS.items():
            if name == "POST ingest-token":
                continue  # tenant keys are refused there outright (401 either way)
            real = await c.request(method, path.format(sid=doc["sessionId"]), headers=stranger)
            fake = await c.request(method, path.format(sid="Zz9Zz9Zz9Z"), headers=stranger)
            assert error_of(real, 404)["code"] == error_of(fake, 404)["code"]
            assert real.json()["error"]["message"].replace(doc["sessionId"], "ID") == fake.json()[
                "error"
            ]["message"].replace("Zz9Zz9Zz9Z", "ID")


async def test_unknown_session_with_valid_credentials(srv: Running, world: World) -> None:
    async with client(srv) as c:
        doc = await create_session(c, world.owner["apiKey"])
        key = {"x-tenant-key": world.owner["apiKey"]}
        for method, path in ENDPOINTS.values():
            if "ingest-token" not in path:
                error_of(await c.request(method, path.format(sid="nope123456"), headers=key), 404)
        for path in (
            "/api/sessions/nope123456/embed-token",
            "/api/sessions/nope123456/ingest-token",
        ):
            r = await c.post(path, json={"ownerSecret": doc["ownerSecret"]})
            error_of(r, 404)
        # A valid token only ever opens its own session.
        r = await c.get("/api/sessions/nope123456", params={"t": doc["embedToken"]})
        error_of(r, 401)


# -- the single-use ingest token under concurrency ------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_concurrent_claims_with_one_token_admit_exactly_one(server: Running) -> None:
    async with client(server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])
    state = server.state
    sid = doc["sessionId"]
    jti = jwt_claims(doc["ingestToken"])["jti"]
    tenant = await tenants.find(state.db, t["tenantId"])
    assert tenant is not None

    async def claim(i: int) -> Session:
        return await state.sessions.claim_producer(sid, jti=jti, producer_id=f"p{i}", tenant=tenant)

    results = await asyncio.gather(*(claim(i) for i in range(10)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Session)]
    losers = [r for r in results if not isinstance(r, Session)]
    assert len(winners) == 1, results
    for exc in losers:
        assert isinstance(exc, Unauthorized | Conflict), repr(exc)
        if isinstance(exc, Unauthorized):
            assert exc.code == "TOKEN_BURNED"
    fresh = await state.sessions.get(sid)
    assert fresh is not None and fresh.producer_id == winners[0].producer_id

    # Burned for good: not even after the winner lets go.
    await state.sessions.release_producer(sid, winners[0].producer_id or "")
    with pytest.raises(Unauthorized) as caught:
        await claim(99)
    assert caught.value.code == "TOKEN_BURNED"
    try:
        async with connect(doc["ingestUrl"], open_timeout=10):
            raise AssertionError("a burned ingest token opened the socket")
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
        assert json.loads(exc.response.body or b"{}")["error"]["code"] == "TOKEN_BURNED"


@pytest.mark.asyncio(loop_scope="function")
async def test_concurrent_sockets_with_one_token_open_once(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c)
        doc = await create_session(c, t["apiKey"])

    async def open_once() -> int:
        try:
            async with connect(doc["ingestUrl"], open_timeout=10) as ws:
                assert json.loads(await ws.recv())["type"] == "ready"
                await asyncio.sleep(0.2)  # hold the slot while the others try
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    statuses = await asyncio.gather(*(open_once() for _ in range(10)))
    assert sorted(statuses)[0] == 101 and statuses.count(101) == 1, statuses
    assert set(statuses) <= {101, 401, 409}, statuses
