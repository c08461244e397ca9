"""Session summary rows: pending while a job makes them, then ready or failed."""

from __future__ import annotations

import time

from mcustt import wire
from mcustt.store.db import Database
from mcustt.store.models import Session, Summary
from mcustt.store.webhooks import iso, record_event, summary_ready_data
from mcustt.wire import SummaryContent


class SummaryQueries:
    db: Database

    async def get_summary(self, session_id: str) -> Summary | None:
        async with self.db.session() as s:
            return await s.get(Summary, session_id)

    async def mark_summary_pending(self, session_id: str) -> None:
        """Create the row, or reset it to pending (a regeneration): clears any error.

        A previous summary's content stays in the row (and ``updated_at`` keeps dating
        it): should the regeneration fail, :meth:`mark_summary_failed` serves it again."""
        now = time.time()
        async with self.db.session() as s:
            summary = await s.get(Summary, session_id)
            if summary is None:
                summary = Summary(session_id=session_id, updated_at=now)
            summary.status = "pending"
            summary.error = None
            if summary.content is None:
                summary.updated_at = now
            s.add(summary)
            await s.commit()

    async def save_summary(
        self,
        session_id: str,
        *,
        model: str,
        lang: str,
        content: SummaryContent,
        from_seq: int | None,
        to_seq: int | None,
    ) -> None:
        """Store a ready summary (creating the row if needed)."""
        async with self.db.session() as s:
            summary = await s.get(Summary, session_id) or Summary(
                session_id=session_id, updated_at=time.time()
            )
            summary.status = "ready"
            summary.model = model
            summary.lang = lang
            summary.content = dict(content)
            summary.error = None
            summary.from_seq = from_seq
            summary.to_seq = to_seq
            summary.updated_at = time.time()
            s.add(summary)
            session = await s.get(Session, session_id)
            if session is not None:  # webhooks (issue 16): stored with the summary
                await record_event(
                    s,
                    tenant_id=session.tenant_id,
                    event="summary.ready",
                    session_id=session_id,
                    data=summary_ready_data(session, summary),
                )
            await s.commit()

    async def mark_summary_failed(self, session_id: str, error: str) -> None:
        """Record why it failed; a session without a summary row is left without one.

        A failed regeneration does not take away a summary that was ready: the row is
        ready again with its previous content (the failure is the job's to report)."""
        async with self.db.session() as s:
            summary = await s.get(Summary, session_id)
            if summary is None:
                return
            if summary.content is not None:
                summary.status = "ready"
                summary.error = None
            else:
                summary.status = "failed"
                summary.error = error
                summary.updated_at = time.time()
            s.add(summary)
            session = await s.get(Session, session_id)
            if session is not None:  # webhooks (issue 16): even when a ready one stays
                failed: wire.WebhookSummaryFailedData = {
                    "sessionId": session_id,
                    "sessionTitle": session.title,
                    "error": error,
                    "createdAt": iso(time.time()),
                }
                await record_event(
                    s,
                    tenant_id=session.tenant_id,
                    event="summary.failed",
                    session_id=session_id,
                    data=failed,
                )
            await s.commit()
