"""Summary and batch endpoints (§11, §12)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt.api import app_state, require_tenant, session_access
from mcustt.errors import BadRequest, NotFound, Unprocessable
from mcustt.jobs import job_json
from mcustt.schemas import BatchRequest, SummarizeBody, read_json, validate
from mcustt.state import AppState
from mcustt.store.models import Job, Summary
from mcustt.summarizers import Line, SummarizerUnavailable

INLINE_CHARS = 12_000


async def require_summarizer(state: AppState) -> None:
    """503 when the configured summarizer cannot run (§15)."""
    try:
        await state.summarizer.check()
    except SummarizerUnavailable as exc:
        exc.headers.setdefault("Retry-After", "60")
        raise


async def get_summary(request: Request) -> Response:
    state = app_state(request)
    creds = await session_access(request, request.path_params["session_id"], tenant=True, read=True)
    async with state.db.session() as s:
        summary = await s.get(Summary, creds.session.id)
    if summary is not None and summary.status == "ready":
        return JSONResponse(
            {
                "status": "ready",
                "model": summary.model,
                "lang": summary.lang,
                "content": summary.content,
                "fromSeq": summary.from_seq,
                "toSeq": summary.to_seq,
                "updatedAt": summary.updated_at,
            }
        )
    await require_summarizer(state)
    doc: dict[str, Any] = {"status": summary.status if summary else "pending"}
    if summary is not None and summary.error:
        doc["error"] = summary.error
    return JSONResponse(doc, status_code=202)


async def summarize(request: Request) -> Response:
    state = app_state(request)
    await state.limiter.hit("summarize", state.client_ip(request))
    body = await read_json(request)
    window = validate(SummarizeBody, body)
    if window.fromSeq is not None and window.toSeq is not None and window.fromSeq > window.toSeq:
        raise BadRequest("fromSeq must not be greater than toSeq")
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True, body=body
    )
    await require_summarizer(state)
    job = await state.jobs.enqueue_session_summary(
        creds.session, from_seq=window.fromSeq, to_seq=window.toSeq
    )
    return JSONResponse(
        {"status": "pending", "jobId": job.id, "poll": f"/api/sessions/{creds.session.id}/summary"},
        status_code=202,
    )


def batch_lines(req: BatchRequest) -> list[Line]:
    if req.subtitles:
        return [
            Line(text=s.text, speaker=s.speaker, ts=s.ts) for s in req.subtitles if s.text.strip()
        ]
    if req.text and req.text.strip():
        return [Line(text=t) for t in req.text.splitlines() if t.strip()]
    raise BadRequest("send subtitles[] or text")


async def run_batch(state: AppState, payload: dict[str, Any]) -> dict[str, Any]:
    """The work of one batch request (inline, or as a job)."""
    req = validate(BatchRequest, payload)
    lines = batch_lines(req)
    lang = req.sourceLang or "en-US"
    result: dict[str, Any] = {"language": lang}
    if "transcript" in req.want:
        result["transcript"] = "\n".join(
            f"{line.speaker}: {line.text}" if line.speaker else line.text for line in lines
        )
    if "summary" in req.want:
        summary = await state.summarizer.summarize(lines, lang=lang)
        result["summary"] = summary.content.to_json()
        result["model"] = summary.model
    return result


async def transcribe_summary(request: Request) -> Response:
    state = app_state(request)
    await state.limiter.hit("summarize", state.client_ip(request))
    tenant = await require_tenant(request)
    payload = await read_json(request, optional=False)
    req = validate(BatchRequest, payload)
    lines = batch_lines(req)
    if "summary" in req.want:
        await require_summarizer(state)
    size = sum(len(line.text) for line in lines)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255):
        raise BadRequest("Idempotency-Key must be 1-255 characters")
    if key is None and size <= INLINE_CHARS:
        return JSONResponse(await run_batch(state, payload))
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    job, created = await _idempotent_job(state, tenant.id, key, digest, payload)
    if size <= INLINE_CHARS:
        # Small, with a key: run now, once; a retry with the key gets the stored result.
        if created:
            claimed = await state.jobs.claim_one(job.id)
            if claimed is not None:
                await state.jobs.run(*claimed)
        fresh = await state.jobs.get(job.id)
        assert fresh is not None
        if fresh.status == "ready" and fresh.result is not None:
            return JSONResponse(fresh.result)
        job = fresh
    return JSONResponse(
        {"jobId": job.id, "status": job.status, "poll": f"/api/jobs/{job.id}"}, status_code=202
    )


async def _idempotent_job(
    state: AppState, tenant_id: str, key: str | None, digest: str, payload: dict[str, Any]
) -> tuple[Job, bool]:
    """The job for this key (created now, or the one a previous request created)."""
    if key is not None:
        existing = await _job_by_key(state, tenant_id, key)
        if existing is not None:
            return _same_body(existing, digest), False
    try:
        job = await state.jobs.enqueue(
            tenant_id=tenant_id,
            kind="batch_summary",
            payload=payload,
            idempotency_key=key,
            request_hash=digest,
            # A small keyed request runs inline at once; the queue only picks it up if
            # that run died with its process.
            run_after=time.time() + 60 if _is_small(payload) else 0.0,
        )
    except IntegrityError:
        # A concurrent duplicate inserted the same key first: answer with its job.
        assert key is not None
        existing = await _job_by_key(state, tenant_id, key)
        assert existing is not None
        return _same_body(existing, digest), False
    return job, True


def _is_small(payload: dict[str, Any]) -> bool:
    return (
        sum(len(line.text) for line in batch_lines(validate(BatchRequest, payload))) <= INLINE_CHARS
    )


def _same_body(job: Job, digest: str) -> Job:
    if job.request_hash != digest:
        raise Unprocessable(
            "this Idempotency-Key was used with a different body", code="IDEMPOTENCY_KEY_REUSED"
        )
    return job


async def _job_by_key(state: AppState, tenant_id: str, key: str) -> Job | None:
    async with state.db.session() as s:
        rows = await s.exec(
            select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
        )
        return rows.first()


async def get_job(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    job = await state.jobs.get(request.path_params["job_id"])
    if job is None or job.tenant_id != tenant.id:
        raise NotFound("no such job", code="JOB_NOT_FOUND")
    return JSONResponse(job_json(job))
