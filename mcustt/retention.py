"""Periodic housekeeping: prune ended sessions after the retention period (§16), and end
sessions that were abandoned (never streamed to, or left without a producer for longer
than an ingest token lives) so they stop counting against the tenant's maxSessions, and
delete text-to-speech audio whose signed URLs have expired."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from mcustt.outages import log_failure
from mcustt.store.models import Session
from mcustt.store.repo import Repo

log = structlog.get_logger(__name__)

#: Sessions deleted per transaction (a pass repeats until none is left).
PRUNE_BATCH = 1000


class EndSession(Protocol):
    """Ends a session the way a client's DELETE does (the pipeline registry's
    ``end_session``): finalize, mark ended, publish, queue the summary."""

    async def __call__(self, session: Session, *, reason: str) -> None: ...


class Retention:
    """The housekeeping loop of one node (every node runs one; the queries are safe to
    race: a second deleter finds nothing, and ending a session is idempotent).

    Args:
        repo: the store.
        end_session: how an abandoned session is ended.
        retention_days: ended sessions older than this are deleted with their data.
        abandon_after_s: a live session untouched this long, with no producer, is ended.
        interval_s: the pause between passes.
    """

    def __init__(
        self,
        repo: Repo,
        end_session: EndSession,
        *,
        retention_days: float,
        abandon_after_s: float,
        interval_s: float,
    ) -> None:
        self.repo = repo
        self.end_session = end_session
        self.retention_days = retention_days
        self.abandon_after_s = abandon_after_s
        self.interval_s = interval_s

    async def prune(self, *, now: float | None = None) -> int:
        """Delete (a batch of) sessions ended more than ``retention_days`` ago, with
        their data; returns how many went."""
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * 86400
        count = await self.repo.delete_ended_sessions(ended_before=cutoff, limit=PRUNE_BATCH)
        if count:
            log.info("pruned ended sessions", count=count)
        return count

    async def prune_tts_audio(self, *, now: float | None = None) -> int:
        """Delete (a batch of) text-to-speech files past their ``expires_at`` (their
        signed URLs have expired with them); returns how many went."""
        now = time.time() if now is None else now
        count = await self.repo.delete_expired_tts_audio(now=now, limit=PRUNE_BATCH)
        if count:
            log.info("pruned expired tts audio", count=count)
        return count

    async def end_abandoned(self, *, now: float | None = None) -> int:
        now = time.time() if now is None else now
        stale = await self.repo.abandoned_sessions(idle_before=now - self.abandon_after_s, now=now)
        for session in stale:
            await self.end_session(session, reason="abandoned")
        return len(stale)

    async def run(self) -> None:
        """Passes until cancelled; a failed pass is logged and retried next interval."""
        while True:
            try:
                await self.end_abandoned()
                while await self.prune() > 0:
                    pass
                while await self.prune_tts_audio() > 0:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "retention pass failed; will retry", exc)
            await asyncio.sleep(self.interval_s)
