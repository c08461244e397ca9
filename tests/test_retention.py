"""Housekeeping (§16): ended sessions pruned after the retention period with all their
data; abandoned live sessions ended so they stop holding the tenant's session cap."""

from __future__ import annotations

import time
from typing import Any

from conftest import Running
from rest_helpers import client, create_session, create_tenant, error_of
from sqlalchemy import func, update
from sqlmodel import col, select

from mcustt import tenants
from mcustt.retention import Retention
from mcustt.store.models import Job, Session, Summary, TranscriptLine

DAY = 86400.0


def housekeeping(state: Any) -> Retention:
    """The node's housekeeping, built as the app builds it."""
    return Retention(
        state.repo,
        state.pipelines.end_session,
        retention_days=state.settings.retention_days,
        abandon_after_s=state.settings.ingest_token_ttl_s,
        interval_s=state.settings.retention_interval_s,
    )


async def add_lines(srv: Running, sid: str, n: int = 2) -> None:
    for seq in range(1, n + 1):
        await srv.state.repo.append_final(
            sid, seq=seq, text=f"line {seq}", lang="en-US", ts=seq, start_ms=seq * 1000,
            end_ms=seq * 1000 + 500, audio_ms=seq * 1000 + 500,
        )  # fmt: skip


async def counts(srv: Running, sid: str) -> dict[str, int]:
    async with srv.state.db.session() as s:
        out = {}
        for name, model, column in [
            ("sessions", Session, Session.id),
            ("lines", TranscriptLine, TranscriptLine.session_id),
            ("summaries", Summary, Summary.session_id),
            ("jobs", Job, Job.session_id),
        ]:
            n = await s.scalar(select(func.count()).select_from(model).where(column == sid))
            out[name] = int(n or 0)
        return out


async def set_times(srv: Running, sid: str, **values: Any) -> None:
    async with srv.state.db.session() as s:
        await s.exec(update(Session).where(col(Session.id) == sid).values(**values))
        await s.commit()


async def test_prune_deletes_old_ended_sessions_with_their_data(server: Running) -> None:
    now = time.time()
    async with client(server) as c:
        t = await create_tenant(c)
        key = {"x-tenant-key": t["apiKey"]}
        old = await create_session(c, t["apiKey"])
        recent = await create_session(c, t["apiKey"])
        live = await create_session(c, t["apiKey"])
        for doc in (old, recent, live):
            await add_lines(server, doc["sessionId"])
        for doc in (old, recent):
            r = await c.delete(f"/api/sessions/{doc['sessionId']}", headers=key)
            assert r.status_code == 200
        # The old one ended 31 days ago; the live one is as old but still live.
        await set_times(server, old["sessionId"], ended_at=now - 31 * DAY)
        await set_times(server, live["sessionId"], created_at=now - 60 * DAY)
        before = await counts(server, old["sessionId"])
        assert before["lines"] == 2 and before["summaries"] == 1 and before["jobs"] >= 1

        # (>= 1: on PostgreSQL the database is shared with other tests)
        assert await housekeeping(server.state).prune(now=now) >= 1

        assert await counts(server, old["sessionId"]) == dict.fromkeys(before, 0)
        for path in ("", "/transcript"):
            r = await c.get(f"/api/sessions/{old['sessionId']}{path}", headers=key)
            error_of(r, 404)
        for doc in (recent, live):
            r = await c.get(f"/api/sessions/{doc['sessionId']}/transcript", headers=key)
            assert r.status_code == 200 and r.json()["lineCount"] == 2

        # Once the recent one is as old, it goes too; the live one never does.
        await set_times(server, recent["sessionId"], ended_at=now - 30 * DAY - 60)
        assert await housekeeping(server.state).prune(now=now) >= 1
        error_of(await c.get(f"/api/sessions/{recent['sessionId']}", headers=key), 404)
        r = await c.get(f"/api/sessions/{live['sessionId']}/transcript", headers=key)
        assert r.status_code == 200 and r.json()["lineCount"] == 2


async def test_abandoned_sessions_are_ended_and_free_the_cap(server: Running) -> None:
    state = server.state
    ttl = state.settings.ingest_token_ttl_s
    async with client(server) as c:
        t = await create_tenant(c, maxSessions=3)
        key = {"x-tenant-key": t["apiKey"]}
        abandoned = await create_session(c, t["apiKey"])
        streaming = await create_session(c, t["apiKey"])
        fresh = await create_session(c, t["apiKey"])
        error_of(await c.post("/api/sessions", json={}, headers=key), 429)

        # Two sessions untouched for longer than an ingest token lives; one of them has
        # a producer connected right now (its lease is current).
        long_ago = time.time() - ttl - 60
        tenant = await tenants.find(state.db, t["tenantId"])
        assert tenant is not None
        await state.sessions.claim_producer(
            streaming["sessionId"], jti=None, producer_id="prod_test", tenant=tenant
        )
        for doc in (abandoned, streaming):
            await set_times(server, doc["sessionId"], updated_at=long_ago)

        assert await housekeeping(state).end_abandoned() >= 1  # PostgreSQL's database is shared

        r = await c.get(f"/api/sessions/{abandoned['sessionId']}", headers=key)
        assert r.json()["status"] == "ended"
        assert r.json()["endReason"] == "abandoned"
        assert r.json()["summaryStatus"] in ("pending", "ready")
        for doc in (streaming, fresh):
            r = await c.get(f"/api/sessions/{doc['sessionId']}", headers=key)
            assert r.json()["status"] == "live"
        # The slot it held is free again.
        await create_session(c, t["apiKey"])
