"""Durable jobs in the database: session summaries and batch summaries.

A job is claimed by one worker at a time with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; a conditional UPDATE on SQLite, whose writes are serialized anyway). The
worker renews the lease while it runs; a job left ``running`` by a dead process becomes
claimable again when its lease passes, and completion is fenced on the lease owner so
a worker that lost its lease cannot overwrite the new owner's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from sqlalchemy import or_, update
from sqlmodel import col, select

from mcustt.state import AppState
from mcustt.store.models import Job, Session, Summary
from mcustt.summarizers import Line, SummarizerError, SummarizerUnavailable
from mcustt.tokens import random_id

log = structlog.get_logger(__name__)

WORKERS = 2


def job_json(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.id,
        "kind": job.kind,
        "status": job.status,
        "result": job.result,
        "error": job.error,
        "attempts": job.attempts,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
    }


class JobRunner:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def start(self, workers: int = WORKERS) -> None:
        for i in range(workers):
            self._workers.append(asyncio.create_task(self._loop(), name=f"jobs-{i}"))

    async def aclose(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        tenant_id: str,
        kind: str,
        payload: dict[str, Any],
        session_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        run_after: float = 0.0,
        job_id: str | None = None,
    ) -> Job:
        now = time.time()
        job = Job(
            id=job_id or "job_" + random_id(20),
            tenant_id=tenant_id,
            kind=kind,
            session_id=session_id,
            payload=payload,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            run_after=run_after,
            created_at=now,
            updated_at=now,
        )
        async with self.state.db.session() as s:
            s.add(job)
            await s.commit()
        self._wake.set()
        return job

    async def enqueue_session_summary(
        self, session: Session, *, from_seq: int | None = None, to_seq: int | None = None
    ) -> Job:
        """Mark the session's summary pending and queue its (re)generation."""
        now = time.time()
        async with self.state.db.session() as s:
            summary = await s.get(Summary, session.id)
            if summary is None:
                summary = Summary(session_id=session.id, updated_at=now)
            summary.status = "pending"
            summary.error = None
            summary.updated_at = now
            s.add(summary)
            await s.commit()
        return await self.enqueue(
            tenant_id=session.tenant_id,
            kind="session_summary",
            session_id=session.id,
            payload={"sessionId": session.id, "fromSeq": from_seq, "toSeq": to_seq},
        )

    async def get(self, job_id: str) -> Job | None:
        async with self.state.db.session() as s:
            return await s.get(Job, job_id)

    # -- claim and run ------------------------------------------------------------------

    async def claim(self) -> tuple[Job, str] | None:
        """Take one due job (queued, or running with an expired lease)."""
        now = time.time()
        due = or_(
            (col(Job.status) == "queued") & (col(Job.run_after) <= now),
            (col(Job.status) == "running") & (col(Job.lease_until) < now),
        )
        return await self._claim(due, None)

    async def claim_one(self, job_id: str) -> tuple[Job, str] | None:
        """Take a specific queued job now (an inline run), if nobody has it."""
        return await self._claim(col(Job.status) == "queued", job_id)

    async def _claim(self, due: Any, job_id: str | None) -> tuple[Job, str] | None:
        now = time.time()
        owner = f"{self.state.node_id}:{random_id(6)}"
        async with self.state.db.session() as s:
            if job_id is None:
                query = select(Job.id).where(due).order_by(col(Job.created_at)).limit(1)
                if not self.state.db.sqlite:
                    # Concurrent workers skip each other's candidate rows instead of
                    # queueing behind them.
                    query = query.with_for_update(skip_locked=True)
                job_id = (await s.exec(query)).first()
                if job_id is None:
                    return None
            result = await s.exec(
                update(Job)
                .where(col(Job.id) == job_id, due)
                .values(
                    status="running",
                    lease_until=now + self.state.settings.job_lease_s,
                    lease_owner=owner,
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
            )
            await s.commit()
            if result.rowcount != 1:
                return None  # another worker won the race; try again
            job = await s.get(Job, job_id, populate_existing=True)
        assert job is not None
        return job, owner

    async def _loop(self) -> None:
        while True:
            try:
                claimed = await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job claim failed")
                claimed = None
            if claimed is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self.state.settings.job_poll_s
                    )
                continue
            await self.run(*claimed)

    async def run(self, job: Job, owner: str) -> None:
        bound = log.bind(job_id=job.id, kind=job.kind, tenant_id=job.tenant_id)
        heartbeat = asyncio.create_task(self._heartbeat(job.id, owner))
        try:
            result = await self._execute(job)
        except (SummarizerError, SummarizerUnavailable) as exc:
            await self._finish(job, owner, status="failed", error=exc.message)
            bound.warning("job failed", error=exc.message)
        except asyncio.CancelledError:
            raise  # shutdown: the lease expires and another worker takes it
        except Exception as exc:
            final = job.attempts >= job.max_attempts
            bound.exception("job attempt failed", attempt=job.attempts, final=final)
            if final:
                await self._finish(
                    job, owner, status="failed", error=f"{type(exc).__name__}: {exc}"
                )
            else:
                await self._retry(job, owner, delay=2.0**job.attempts)
        else:
            await self._finish(job, owner, status="ready", result=result)
            bound.info("job done")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, job_id: str, owner: str) -> None:
        lease = self.state.settings.job_lease_s
        while True:
            await asyncio.sleep(lease / 3)
            async with self.state.db.session() as s:
                await s.exec(
                    update(Job)
                    .where(col(Job.id) == job_id, col(Job.lease_owner) == owner)
                    .values(lease_until=time.time() + lease)
                )
                await s.commit()

    async def _finish(
        self,
        job: Job,
        owner: str,
        *,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        async with self.state.db.session() as s:
            done = await s.exec(
                update(Job)
                .where(col(Job.id) == job.id, col(Job.lease_owner) == owner)
                .values(
                    status=status,
                    result=result,
                    error=error,
                    lease_until=None,
                    updated_at=time.time(),
                )
            )
            await s.commit()
        if done.rowcount != 1:
            log.warning("job lease lost before completion; result discarded", job_id=job.id)
            return
        self.state.metrics.jobs.labels(job.kind, status).inc()
        if job.kind == "session_summary" and status == "failed":
            await self._summary_failed(job, error or "failed")

    async def _retry(self, job: Job, owner: str, *, delay: float) -> None:
        async with self.state.db.session() as s:
            await s.exec(
                update(Job)
                .where(col(Job.id) == job.id, col(Job.lease_owner) == owner)
                .values(status="queued", lease_until=None, run_after=time.time() + delay)
            )
            await s.commit()

    async def _execute(self, job: Job) -> dict[str, Any]:
        if job.kind == "session_summary":
            return await self._session_summary(job)
        if job.kind == "batch_summary":
            from mcustt.summary_api import run_batch

            return await run_batch(self.state, job.payload)
        raise ValueError(f"unknown job kind {job.kind!r}")

    async def _session_summary(self, job: Job) -> dict[str, Any]:
        sid = str(job.payload["sessionId"])
        session = await self.state.sessions.get(sid)
        if session is None:
            raise SummarizerError("the session no longer exists")
        rows = await self.state.repo.lines(
            sid, from_seq=job.payload.get("fromSeq"), to_seq=job.payload.get("toSeq")
        )
        lines = [
            Line(text=r.text, seq=r.seq, ts=r.ts / 1000, lang=r.lang, speaker=r.speaker)
            for r in rows
        ]
        lang = session.detected_lang or session.source_lang
        result = await self.state.summarizer.summarize(lines, lang=lang)
        doc: dict[str, Any] = {
            "model": result.model,
            "lang": result.lang,
            "content": result.content.to_json(),
            "fromSeq": rows[0].seq if rows else None,
            "toSeq": rows[-1].seq if rows else None,
        }
        async with self.state.db.session() as s:
            summary = await s.get(Summary, sid) or Summary(session_id=sid, updated_at=time.time())
            summary.status = "ready"
            summary.model = result.model
            summary.lang = result.lang
            summary.content = doc["content"]
            summary.error = None
            summary.from_seq = doc["fromSeq"]
            summary.to_seq = doc["toSeq"]
            summary.updated_at = time.time()
            s.add(summary)
            await s.commit()
        return doc

    async def _summary_failed(self, job: Job, error: str) -> None:
        sid = str(job.payload["sessionId"])
        async with self.state.db.session() as s:
            summary = await s.get(Summary, sid)
            if summary is not None:
                summary.status = "failed"
                summary.error = error
                summary.updated_at = time.time()
                s.add(summary)
                await s.commit()
