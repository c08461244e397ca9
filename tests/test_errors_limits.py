"""The error envelope (§15), per-IP rate limits (§16), health and metrics (§14)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
from conftest import Running, create_pg_database, drop_pg_database, make_settings, run_server
from prometheus_client.parser import text_string_to_metric_families
from rest_helpers import ADMIN_HEADERS, client, create_session, create_tenant, error_of, jwt_claims

from mcustt import tenants, wire
from mcustt.errors import RateLimited
from mcustt.store.db import migrate
from mcustt.store.models import Session

# -- the envelope ---------------------------------------------------------------------------


async def test_every_error_uses_the_envelope(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"], "content-type": "application/json"}

        error_of(await c.get("/api/nothing-here"), 404, "NOT_FOUND")
        error_of(await c.post("/api/sessions/x/nothing"), 404, "NOT_FOUND")
        r = await c.put("/api/sessions", headers=key)
        error_of(r, 405, "METHOD_NOT_ALLOWED")
        assert "POST" in r.headers.get("allow", "")
        error_of(await c.delete("/api/admin/tenants", headers=ADMIN_HEADERS), 405)

        for raw in (b"{", b'{"title": "x",}', b"\xff\xfe", b"nul"):
            r = await c.post("/api/sessions", content=raw, headers=key)
            err = error_of(r, 400, "BAD_REQUEST")
            assert "JSON" in err["message"], err
        for raw in (b"[]", b'"a string"', b"42", b"null", b'[{"title": "x"}]'):
            r = await c.post("/api/sessions", content=raw, headers=key)
            err = error_of(r, 400, "BAD_REQUEST")
            assert "object" in err["message"], err
            r = await c.post("/api/admin/tenants", content=raw, headers=ADMIN_HEADERS)
            error_of(r, 400, "BAD_REQUEST")
        # Nothing was created by any of them.
        r = await c.get("/api/sessions", headers=key)
        assert r.json()["sessions"] == []

        error_of(await c.get("/api/sessions/abc"), 401)
        error_of(await c.get("/api/sessions/abc", headers=key), 404, "SESSION_NOT_FOUND")
        r = await c.get("/api/jobs/job_nope", headers=key)
        error_of(r, 404)


# -- rate limits ------------------------------------------------------------------------------


async def post_session(c: httpx.AsyncClient, key: str, xff: str | None = None) -> httpx.Response:
    headers = {"x-tenant-key": key}
    if xff is not None:
        headers["x-forwarded-for"] = xff
    return await c.post("/api/sessions", json={}, headers=headers)


def limited(r: httpx.Response) -> None:
    err = error_of(r, 429, "RATE_LIMITED")
    assert "rate limit" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 61


async def test_create_session_rate_limit(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, rate_create_session="3/minute")
    async with run_server(settings) as srv, client(srv) as c:
        t = await create_tenant(c)
        for _ in range(3):
            assert (await post_session(c, t["apiKey"])).status_code == 201
        limited(await post_session(c, t["apiKey"]))
        # The budget is per IP, not per tenant: another tenant from here waits too.
        other = await create_tenant(c)
        limited(await post_session(c, other["apiKey"]))
        # Other endpoints are not limited by it.
        r = await c.get("/api/sessions", headers={"x-tenant-key": t["apiKey"]})
        assert r.status_code == 200 and len(r.json()["sessions"]) == 3


async def test_spoofed_forwarded_for_does_not_bypass_the_limit(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, rate_create_session="3/minute")  # no trusted proxy
    async with run_server(settings) as srv, client(srv) as c:
        t = await create_tenant(c)
        for i in range(3):
            r = await post_session(c, t["apiKey"], xff=f"203.0.113.{i}")
            assert r.status_code == 201
        limited(await post_session(c, t["apiKey"], xff="198.51.100.7"))
        limited(await post_session(c, t["apiKey"]))


async def test_forwarded_for_from_a_trusted_proxy_gives_each_client_a_budget(
    sqlite_url: str,
) -> None:
    settings = make_settings(
        sqlite_url, rate_create_session="3/minute", trusted_proxies=["127.0.0.1/32"]
    )
    async with run_server(settings) as srv, client(srv) as c:
        t = await create_tenant(c)
        for _ in range(3):
            assert (await post_session(c, t["apiKey"], xff="203.0.113.1")).status_code == 201
        limited(await post_session(c, t["apiKey"], xff="203.0.113.1"))
        # Another client behind the same proxy has its own budget.
        assert (await post_session(c, t["apiKey"], xff="203.0.113.2")).status_code == 201
        # A client cannot escape by prepending its own XFF: the proxy appends the real
        # address, and only the right-most untrusted hop counts.
        limited(await post_session(c, t["apiKey"], xff="10.9.9.9, 203.0.113.1"))
        # The proxy's own requests (no XFF) are one more client.
        assert (await post_session(c, t["apiKey"])).status_code == 201


async def test_two_nodes_on_redis_share_one_budget(sqlite_url: str, redis_url: str) -> None:
    prefix = "t" + uuid.uuid4().hex[:10]
    common: dict[str, Any] = {
        "rate_create_session": "3/minute",
        "redis_url": redis_url,
        "redis_prefix": prefix,
    }
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(run_server(make_settings(sqlite_url, **common)))
        b = await stack.enter_async_context(run_server(make_settings(sqlite_url, **common)))
        ca = await stack.enter_async_context(client(a))
        cb = await stack.enter_async_context(client(b))
        t = await create_tenant(ca)
        assert (await post_session(ca, t["apiKey"])).status_code == 201
        assert (await post_session(cb, t["apiKey"])).status_code == 201
        assert (await post_session(ca, t["apiKey"])).status_code == 201
        limited(await post_session(cb, t["apiKey"]))
        limited(await post_session(ca, t["apiKey"]))


async def test_concurrent_ingest_cap_holds_under_simultaneous_connects(db_url: str) -> None:
    async with run_server(make_settings(db_url, max_concurrent_ingest=2)) as srv:
        async with client(srv) as c:
            t = await create_tenant(c)
            docs = [await create_session(c, t["apiKey"]) for _ in range(6)]
        tenant = await tenants.find(srv.state.db, t["tenantId"])
        assert tenant is not None

        async def claim(doc: wire.SessionCreated) -> Session:
            return await srv.state.sessions.claim_producer(
                doc["sessionId"],
                jti=jwt_claims(doc["ingestToken"])["jti"],
                producer_id="prod_" + doc["sessionId"],
                tenant=tenant,
            )

        results = await asyncio.gather(*(claim(d) for d in docs), return_exceptions=True)
        admitted = [r for r in results if isinstance(r, Session)]
        refused = [r for r in results if not isinstance(r, Session)]
        assert len(admitted) == 2, results
        assert all(isinstance(e, RateLimited) and e.code == "INGEST_CAP" for e in refused)
        # All RateLimited (asserted above); the isinstance narrows for the type checker.
        assert all(isinstance(e, RateLimited) and e.headers.get("Retry-After") for e in refused)
        # A refusal does not burn the token: once a producer leaves, a refused one gets in.
        first = admitted[0]
        await srv.state.sessions.release_producer(first.id, first.producer_id or "")
        waiting = next(d for d in docs if d["sessionId"] not in {a.id for a in admitted})
        assert (await claim(waiting)).id == waiting["sessionId"]


# -- health and metrics -----------------------------------------------------------------------


async def test_healthz_and_readyz(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        r = await c.get("/readyz")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "ready"
        assert {"database", "recognizer", "summarizer"} <= set(doc["checks"])
        assert set(doc["checks"].values()) == {"ok"}


async def test_readyz_names_an_unusable_summarizer(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, summarizer="openai", openai_api_key=None)
    async with run_server(settings) as srv, client(srv) as c:
        assert (await c.get("/healthz")).status_code == 200  # alive, just not ready
        r = await c.get("/readyz")
        assert r.status_code == 503, r.text
        doc = r.json()
        assert doc["status"] == "unready"
        assert doc["checks"]["database"] == "ok"
        assert doc["checks"]["summarizer"].startswith("failed")
        assert "OPENAI_API_KEY" in doc["checks"]["summarizer"]


async def test_readyz_names_a_lost_database() -> None:
    url = create_pg_database()
    try:
        migrate(url)
        async with run_server(make_settings(url)) as srv, client(srv) as c:
            assert (await c.get("/readyz")).status_code == 200
            drop_pg_database(url)
            r = await c.get("/readyz")
            assert r.status_code == 503, r.text
            checks = r.json()["checks"]
            assert checks["database"].startswith("failed"), checks
            assert checks["summarizer"] == "ok"
            assert (await c.get("/healthz")).status_code == 200
    finally:
        drop_pg_database(url)


async def test_metrics_need_the_admin_token(sqlite_server: Running) -> None:
    async with client(sqlite_server) as c:
        error_of(await c.get("/metrics"), 401)
        error_of(await c.get("/metrics", headers={"authorization": "Bearer nope"}), 401)
        t = await create_tenant(c)
        error_of(await c.get("/metrics", headers={"x-tenant-key": t["apiKey"]}), 401)
        for _ in range(2):
            await create_session(c, t["apiKey"])
        r = await c.get("/metrics", headers=ADMIN_HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    created = families["mcustt_sessions_created"].samples
    assert [s.value for s in created if s.name == "mcustt_sessions_created_total"] == [2.0]
    requests = families["mcustt_http_requests"].samples
    statuses = {s.labels["status"] for s in requests if s.name.endswith("_total")}
    assert {"201", "401"} <= statuses
