"""Job rows: inserted (at most once per idempotency key), claimed under a lease, and
completed or requeued only by the lease's owner.

A claim takes one due job: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent
workers skip each other's candidate instead of queueing behind it; on SQLite, whose
writes are serialized anyway, the conditional UPDATE alone decides. Every later write
is fenced on ``lease_owner``, so a worker that lost its lease cannot overwrite the new
owner's result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from mcustt import wire
from mcustt.store.db import Database
from mcustt.store.models import Job
from mcustt.store.webhooks import iso, record_event


async def _record_job_finished(s: AsyncSession, job_id: str) -> None:
    """The ``job.finished`` webhook event (issue 16), in the completing transaction; a
    session summary reports ``summary.ready``/``summary.failed`` instead."""
    job = await s.get(Job, job_id, populate_existing=True)
    if job is None or job.kind == "session_summary":
        return
    data: wire.WebhookJobFinishedData = {
        "jobId": job.id,
        "kind": job.kind,
        "status": job.status,
        "sessionId": job.session_id,
        "error": job.error,
        "createdAt": iso(job.updated_at),
    }
    await record_event(
        s, tenant_id=job.tenant_id, event="job.finished", session_id=job.session_id, data=data
    )


class JobQueries:
    db: Database

    async def insert_job(self, job: Job) -> tuple[Job, bool]:
        """Insert ``job``; True when inserted. When a job of the tenant already holds its
        idempotency key (a concurrent duplicate won the insert), that job and False."""
        try:
            async with self.db.session() as s:
                s.add(job)
                await s.commit()
        except IntegrityError:
            if job.idempotency_key is None:
                raise
            existing = await self.job_by_idempotency_key(job.tenant_id, job.idempotency_key)
            if existing is None:
                raise
            return existing, False
        return job, True

    async def get_job(self, job_id: str) -> Job | None:
        async with self.db.session() as s:
            return await s.get(Job, job_id)

    async def job_by_idempotency_key(self, tenant_id: str, key: str) -> Job | None:
        async with self.db.session() as s:
            rows = await s.exec(
                select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
            )
            return rows.first()

    async def claim_job(
        self, owner: str, *, lease_s: float, job_id: str | None = None
    ) -> Job | None:
        """Take a job for ``owner`` for ``lease_s``: the oldest due one (queued and due,
        or running with an expired lease), or, given ``job_id``, that job if still
        queued (an inline run). None when there is none, or another worker won it."""
        now = time.time()
        due = (
            or_(
                (col(Job.status) == "queued") & (col(Job.run_after) <= now),
                (col(Job.status) == "running") & (col(Job.lease_until) < now),
            )
            if job_id is None
            else col(Job.status) == "queued"
        )
        async with self.db.session() as s:
            if job_id is None:
                query = select(Job.id).where(due).order_by(col(Job.created_at)).limit(1)
                if not self.db.sqlite:
                    query = query.with_for_update(skip_locked=True)
                job_id = (await s.exec(query)).first()
                if job_id is None:
                    return None
            result = await s.exec(
                update(Job)
                .where(col(Job.id) == job_id, due)
                .values(
                    status="running",
                    lease_until=now + lease_s,
                    lease_owner=owner,
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
            )
            await s.commit()
            if result.rowcount != 1:
                return None
            return await s.get(Job, job_id, populate_existing=True)

    async def renew_job_lease(self, job_id: str, owner: str, *, lease_s: float) -> bool:
        """Extend the lease by ``lease_s`` from now, if ``owner`` still holds it."""
        async with self.db.session() as s:
            result = await s.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.lease_owner) == owner)
                .values(lease_until=time.time() + lease_s)
            )
            await s.commit()
            return bool(result.rowcount == 1)

    async def finish_job(
        self,
        job_id: str,
        owner: str,
        *,
        status: Literal["ready", "failed"],
        result: Mapping[str, object] | None = None,
        error: str | None = None,
    ) -> bool:
        """Complete the job, if ``owner`` still holds its lease (False: it lost it, and
        nothing was written)."""
        async with self.db.session() as s:
            done = await s.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.lease_owner) == owner)
                .values(
                    status=status,
                    result=dict(result) if result is not None else None,
                    error=error,
                    lease_until=None,
                    updated_at=time.time(),
                )
            )
            finished = done.rowcount == 1
            if finished:
                await _record_job_finished(s, job_id)
            await s.commit()
            return bool(finished)

    async def requeue_job(self, job_id: str, owner: str, *, run_after: float) -> bool:
        """Put the job back in the queue, due at ``run_after``, if ``owner`` holds it."""
        async with self.db.session() as s:
            result = await s.exec(
                update(Job)
                .where(col(Job.id) == job_id, col(Job.lease_owner) == owner)
                .values(status="queued", lease_until=None, run_after=run_after)
            )
            await s.commit()
            return bool(result.rowcount == 1)
