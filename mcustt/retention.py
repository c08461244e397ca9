"""Periodic housekeeping: prune ended sessions after the retention period (§16), and end
sessions that were abandoned (never streamed to, or left without a producer for longer
than an ingest token lives) so they stop counting against the tenant's maxSessions."""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import delete
from sqlmodel import col, select

from mcustt.state import AppState
from mcustt.store.models import Job, Session, Summary, TranscriptLine

log = structlog.get_logger(__name__)


async def prune(state: AppState, *, now: float | None = None) -> int:
    """Delete sessions ended more than ``retention_days`` ago, with their data."""
    now = time.time() if now is None else now
    cutoff = now - state.settings.retention_days * 86400
    async with state.db.session() as s:
        rows = await s.exec(
            select(Session.id)
            .where(col(Session.status) == "ended", col(Session.ended_at) < cutoff)
            .limit(1000)
        )
        ids = list(rows.all())
        if not ids:
            return 0
        await s.exec(delete(TranscriptLine).where(col(TranscriptLine.session_id).in_(ids)))
        await s.exec(delete(Summary).where(col(Summary.session_id).in_(ids)))
        await s.exec(delete(Job).where(col(Job.session_id).in_(ids)))
        await s.exec(delete(Session).where(col(Session.id).in_(ids)))
        await s.commit()
    log.info("pruned ended sessions", count=len(ids))
    return len(ids)


async def end_abandoned(state: AppState, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    idle_cutoff = now - state.settings.ingest_token_ttl_s
    async with state.db.session() as s:
        rows = await s.exec(
            select(Session).where(
                col(Session.status) == "live",
                col(Session.updated_at) < idle_cutoff,
                (col(Session.producer_lease_until).is_(None))
                | (col(Session.producer_lease_until) < now),
            )
        )
        stale = list(rows.all())
    for session in stale:
        await state.pipelines.end_session(session, reason="abandoned")
    return len(stale)


async def retention_loop(state: AppState) -> None:
    while True:
        try:
            await end_abandoned(state)
            while await prune(state) > 0:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention pass failed; will retry")
        await asyncio.sleep(state.settings.retention_interval_s)
