"""Durable jobs in the database: session summaries, batch summaries, documents, and
whatever kinds other services register (file transcriptions, issue 15).

A job is claimed by one worker at a time with a lease; the worker renews the lease
while it runs; a job left ``running`` by a dead process becomes claimable again when
its lease passes, and completion is fenced on the lease owner so a worker that lost its
lease cannot overwrite the new owner's result (the queries: :mod:`mcustt.store.jobs`).
This module holds the rules: what each kind of job does, retries and their back-off,
and what a failure means for the session's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast

import structlog

from mcustt import logs, wire
from mcustt.bodies import validate
from mcustt.captions import Filter, filter_summary
from mcustt.errors import BadRequest, MCUSTTError
from mcustt.metrics import Metrics
from mcustt.outages import log_failure
from mcustt.store.models import Document, Job, Session
from mcustt.store.repo import Repo
from mcustt.summarizers import Line, Summarizer, SummarizerError, SummarizerUnavailable
from mcustt.tokens import random_id
from mcustt.wire import BatchRequest, ErrorCode

log = structlog.get_logger(__name__)

WORKERS = 2


def internal_failure(job: Job) -> str:
    """What a client reads when a job failed on our side: a stable code and message that
    name the job, whose id leads an operator to the logged cause."""
    return (
        f"{ErrorCode.INTERNAL}: the {'summary' if job.kind == 'session_summary' else 'job'}"
        f" could not be made because of a server error (job {job.id}); try again later"
    )


def job_json(job: Job) -> wire.Job:
    return {
        "jobId": job.id,
        "kind": job.kind,
        "status": job.status,
        # The JSON column holds what _execute returned for the job's kind.
        "result": cast("wire.SessionSummaryResult | wire.BatchResult | None", job.result),
        "error": job.error,
        "attempts": job.attempts,
        "createdAt": job.created_at,
        "updatedAt": job.updated_at,
    }


# -- batch summaries (§12) ------------------------------------------------------------------


def batch_lines(req: BatchRequest) -> list[Line]:
    if req.subtitles:
        return [
            Line(text=s.text, speaker=s.speaker, ts=s.ts) for s in req.subtitles if s.text.strip()
        ]
    if req.text and req.text.strip():
        return [Line(text=t) for t in req.text.splitlines() if t.strip()]
    raise BadRequest("send subtitles[] or text")


async def run_batch(summarizer: Summarizer, payload: dict[str, Any]) -> wire.BatchResult:
    """The work of one batch request (inline, or as a job)."""
    req = validate(BatchRequest, payload)
    lines = batch_lines(req)
    lang = req.sourceLang or "en-US"
    result: wire.BatchResult = {"language": lang}
    if "transcript" in req.want:
        result["transcript"] = "\n".join(
            f"{line.speaker}: {line.text}" if line.speaker else line.text for line in lines
        )
    if "summary" in req.want:
        summary = await summarizer.summarize(lines, lang=lang)
        # to_json builds exactly the wire's SummaryContent (it predates the wire types).
        result["summary"] = summary.content.to_json()
        result["model"] = summary.model
    return result


# -- the runner --------------------------------------------------------------------------------


class JobRunner:
    """The node's job workers, and the enqueue/claim/run API the REST layer uses.

    Args:
        repo: the store.
        summarizer: what session and batch summaries are made with.
        lease_s: how long a claim holds without renewal (a dead worker's job is taken
            over after it).
        poll_s: how often an idle worker looks for due jobs (an enqueue on this node
            wakes it at once).
        metrics: ``jobs`` counts finished jobs.
        node_id: prefixes lease owners, so logs show which node ran a job.
    """

    def __init__(
        self,
        repo: Repo,
        summarizer: Summarizer,
        *,
        lease_s: float,
        poll_s: float,
        metrics: Metrics,
        node_id: str,
    ) -> None:
        self.repo = repo
        self.summarizer = summarizer
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.metrics = metrics
        self.node_id = node_id
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        #: kinds run by another service (issue 15: ``transcription``), see :meth:`register`
        self._handlers: dict[str, Callable[[Job], Awaitable[Mapping[str, object]]]] = {}

    def register(
        self, kind: wire.JobKind, handler: Callable[[Job], Awaitable[Mapping[str, object]]]
    ) -> None:
        """Run jobs of ``kind`` with ``handler`` (its result is the job's result; a 4xx
        :class:`MCUSTTError` fails the job at once, anything else is retried)."""
        self._handlers[kind] = handler

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
        kind: wire.JobKind,
        payload: dict[str, Any],
        session_id: str | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        run_after: float = 0.0,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job. Returns it and True; or, when the tenant already has a job with
        this ``idempotency_key`` (a concurrent duplicate), that job and False."""
        now = time.time()
        job, created = await self.repo.insert_job(
            Job(
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
        )
        if created:
            self._wake.set()
        return job, created

    async def enqueue_session_summary(
        self,
        session: Session,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        prompt: str | None = None,
    ) -> Job:
        """Mark the session's summary pending and queue its (re)generation (``prompt``:
        the caller's extra instruction, issue 16)."""
        await self.repo.mark_summary_pending(session.id)
        payload: dict[str, Any] = {"sessionId": session.id, "fromSeq": from_seq, "toSeq": to_seq}
        if prompt is not None:
            payload["prompt"] = prompt
        job, _ = await self.enqueue(
            tenant_id=session.tenant_id,
            kind="session_summary",
            session_id=session.id,
            payload=payload,
        )
        return job

    async def enqueue_document(
        self,
        session: Session,
        *,
        prompt: str,
        callback_url: str | None = None,
        callback_secret: str | None = None,
    ) -> Document:
        """A pending document of the session and the ``document`` job that writes it
        (issue 16), stored together."""
        now = time.time()
        doc = Document(
            id="doc_" + random_id(20),
            tenant_id=session.tenant_id,
            session_id=session.id,
            prompt=prompt,
            callback_url=callback_url,
            callback_secret=callback_secret,
            created_at=now,
            updated_at=now,
        )
        job = Job(
            id="job_" + random_id(20),
            tenant_id=session.tenant_id,
            kind="document",
            session_id=session.id,
            payload={"docId": doc.id, "sessionId": session.id},
            created_at=now,
            updated_at=now,
        )
        await self.repo.insert_document(doc, job)
        self._wake.set()
        return doc

    async def get(self, job_id: str) -> Job | None:
        return await self.repo.get_job(job_id)

    async def by_idempotency_key(self, tenant_id: str, key: str) -> Job | None:
        return await self.repo.job_by_idempotency_key(tenant_id, key)

    # -- claim and run ------------------------------------------------------------------

    async def claim(self) -> tuple[Job, str] | None:
        """Take one due job (queued, or running with an expired lease)."""
        return await self._claim(None)

    async def claim_one(self, job_id: str) -> tuple[Job, str] | None:
        """Take a specific queued job now (an inline run), if nobody has it."""
        return await self._claim(job_id)

    async def _claim(self, job_id: str | None) -> tuple[Job, str] | None:
        owner = f"{self.node_id}:{random_id(6)}"
        job = await self.repo.claim_job(owner, lease_s=self.lease_s, job_id=job_id)
        # None: nothing due, or another worker won the race (the loop tries again).
        return None if job is None else (job, owner)

    async def _loop(self) -> None:
        while True:
            try:
                claimed = await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "job claim failed", exc)
                claimed = None
            if claimed is None:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose the
                # shutdown's cancel when the wake-up lands at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
                continue
            try:
                await self.run(*claimed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Recording the outcome failed (the database went away): the lease
                # expires and the job is taken again; this worker lives on.
                log_failure(log, "job bookkeeping failed", exc, job_id=claimed[0].id)

    async def run(self, job: Job, owner: str) -> None:
        bound = log.bind(job_id=job.id, kind=job.kind, tenant_id=job.tenant_id)
        heartbeat = asyncio.create_task(self._heartbeat(job.id, owner))
        try:
            result = await self._execute(job)
        except (SummarizerError, SummarizerUnavailable) as exc:
            # The summarizer's own report, written for clients (scrubbed all the same:
            # a plug-in may quote its upstream).
            await self._finish(job, owner, status="failed", error=logs.scrub(exc.message))
            bound.warning("job failed", error=exc.message)
        except asyncio.CancelledError:
            raise  # shutdown: the lease expires and another worker takes it
        except Exception as exc:
            if isinstance(exc, MCUSTTError) and exc.status_code < 500:
                # The input is at fault (a 4xx): it fails the same on every attempt.
                bound.warning("job failed", error=exc.message)
                error = f"{exc.code}: {logs.scrub(exc.message)}"
                await self._finish(job, owner, status="failed", error=error)
                return
            final = job.attempts >= job.max_attempts
            # The exception (on PostgreSQL: the SQL and its parameters) is for the log
            # alone; the job and the summary get a stable code and message.
            bound.exception("job attempt failed", attempt=job.attempts, final=final)
            if final:
                await self._finish(job, owner, status="failed", error=internal_failure(job))
            else:
                await self.repo.requeue_job(
                    job.id, owner, run_after=time.time() + 2.0**job.attempts
                )
        else:
            await self._finish(job, owner, status="ready", result=result)
            bound.info("job done")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, job_id: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.repo.renew_job_lease(job_id, owner, lease_s=self.lease_s)

    async def _finish(
        self,
        job: Job,
        owner: str,
        *,
        status: Literal["ready", "failed"],
        result: Mapping[str, object] | None = None,
        error: str | None = None,
    ) -> None:
        done = await self.repo.finish_job(job.id, owner, status=status, result=result, error=error)
        if not done:
            log.warning("job lease lost before completion; result discarded", job_id=job.id)
            return
        self.metrics.jobs.labels(job.kind, status).inc()
        if job.kind == "session_summary" and status == "failed":
            await self.repo.mark_summary_failed(str(job.payload["sessionId"]), error or "failed")
        if job.kind == "document" and status == "failed":
            # Its callback (if any) reports the failure; a no-op if already completed.
            await self.repo.finish_document(str(job.payload["docId"]), error=error or "failed")

    async def _execute(self, job: Job) -> Mapping[str, object]:
        if job.kind == "session_summary":
            return await self._session_summary(job)
        if job.kind == "batch_summary":
            return await run_batch(self.summarizer, job.payload)
        if job.kind == "document":
            return await self._document(job)
        handler = self._handlers.get(job.kind)
        if handler is not None:
            return await handler(job)
        raise ValueError(f"unknown job kind {job.kind!r}")

    async def _session_summary(self, job: Job) -> wire.SessionSummaryResult:
        sid = str(job.payload["sessionId"])
        session = await self.repo.get_session(sid)
        if session is None:
            raise SummarizerError("the session no longer exists")
        rows = await self.repo.lines(
            sid, from_seq=job.payload.get("fromSeq"), to_seq=job.payload.get("toSeq")
        )
        # Summarizers attribute by name ("Priya: I'll write the migration" -> owner
        # Priya): lines of participant tracks carry their speaker's current name.
        names = await self.repo.speaker_names(sid) if any(r.speaker for r in rows) else {}
        lines = [
            Line(
                text=r.text,
                seq=r.seq,
                ts=r.ts / 1000,
                lang=r.lang,
                speaker=names.get(r.speaker, r.speaker) if r.speaker else None,
            )
            for r in rows
        ]
        lang = session.detected_lang or session.source_lang
        prompt = job.payload.get("prompt")
        result = await self.summarizer.summarize(
            lines, lang=lang, prompt=prompt if isinstance(prompt, str) else None
        )
        if session.profanity_filter not in (None, "off"):
            # issue 17: the lines are filtered already, but a model writes its own words
            tenant = await self.repo.get_tenant(session.tenant_id)
            keywords = wire.merge_keywords(session.keywords, tenant.keywords if tenant else None)
            flt = Filter(session.profanity_filter, keywords)
            result = dataclasses.replace(result, content=filter_summary(result.content, flt))
        doc: wire.SessionSummaryResult = {
            "model": result.model,
            "lang": result.lang,
            "content": result.content.to_json(),
            "fromSeq": rows[0].seq if rows else None,
            "toSeq": rows[-1].seq if rows else None,
        }
        await self.repo.save_summary(
            sid,
            model=result.model,
            lang=result.lang,
            content=doc["content"],
            from_seq=doc["fromSeq"],
            to_seq=doc["toSeq"],
        )
        return doc

    async def _document(self, job: Job) -> wire.MeetingDocument:
        doc = await self.repo.document_by_id(str(job.payload["docId"]))
        if doc is None:
            raise SummarizerError("the document no longer exists")
        if doc.status == "pending":
            session = await self.repo.get_session(doc.session_id)
            if session is None:
                raise SummarizerError("the session no longer exists")
            rows = await self.repo.lines(doc.session_id)
            lines = [
                Line(text=r.text, seq=r.seq, ts=r.ts / 1000, lang=r.lang, speaker=r.speaker)
                for r in rows
            ]
            lang = session.detected_lang or session.source_lang
            written = await self.summarizer.write_document(lines, doc.prompt, lang=lang)
            # False: an earlier run of this job (whose lease expired) completed it first.
            await self.repo.finish_document(doc.id, markdown=written.markdown, model=written.model)
            doc = await self.repo.document_by_id(doc.id) or doc
        return document_json(doc)


def document_json(doc: Document) -> wire.MeetingDocument:
    """A document as ``GET /api/sessions/:id/documents/:docId`` shows it."""
    out: wire.MeetingDocument = {
        "docId": doc.id,
        "sessionId": doc.session_id,
        "status": doc.status,
        "prompt": doc.prompt,
        "createdAt": doc.created_at,
        "updatedAt": doc.updated_at,
    }
    if doc.markdown is not None:
        out["markdown"] = doc.markdown
    if doc.model:
        out["model"] = doc.model
    if doc.error:
        out["error"] = doc.error
    return out
