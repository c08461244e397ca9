"""Summary and batch endpoints (§11, §12): the REST layer over :mod:`mcustt.jobs`."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import wire
from mcustt.api import check_browser_origin, require_tenant, session_access
from mcustt.bodies import read_json, validate
from mcustt.errors import BadRequest, NotFound, Unprocessable
from mcustt.jobs import batch_lines, job_json, run_batch
from mcustt.state import AppState, app_state
from mcustt.store.models import Job
from mcustt.summarizers import SummarizerUnavailable
from mcustt.wire import BatchRequest, ErrorCode, SummarizeBody

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
    # Like the state, transcript and stream: a browser page may read it only from the
    # tenant's allowed origins.
    await check_browser_origin(request, creds.session)
    summary = await state.repo.get_summary(creds.session.id)
    if summary is not None and summary.status == "ready":
        ready: wire.Summary = {
            "status": "ready",
            "model": summary.model,
            "lang": summary.lang,
            # The job runner stores the summarizer's SummaryContent.to_json() here.
            "content": cast(wire.SummaryContent, summary.content),
            "fromSeq": summary.from_seq,
            "toSeq": summary.to_seq,
            "updatedAt": summary.updated_at,
        }
        return JSONResponse(ready)
    await require_summarizer(state)
    failed = summary is not None and summary.status == "failed"
    doc: wire.SummaryPending = {"status": "failed" if failed else "pending"}
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
        creds.session, from_seq=window.fromSeq, to_seq=window.toSeq, prompt=window.prompt
    )
    accepted: wire.SummarizeAccepted = {
        "status": "pending",
        "jobId": job.id,
        "poll": f"/api/sessions/{creds.session.id}/summary",
    }
    return JSONResponse(accepted, status_code=202)


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
        return JSONResponse(await run_batch(state.summarizer, payload))
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
    accepted: wire.JobAccepted = {
        "jobId": job.id,
        "status": job.status,
        "poll": f"/api/jobs/{job.id}",
    }
    return JSONResponse(accepted, status_code=202)


async def _idempotent_job(
    state: AppState, tenant_id: str, key: str | None, digest: str, payload: dict[str, Any]
) -> tuple[Job, bool]:
    """The job for this key (created now, or the one a previous request created)."""
    if key is not None:
        existing = await state.jobs.by_idempotency_key(tenant_id, key)
        if existing is not None:
            return _same_body(existing, digest), False
    job, created = await state.jobs.enqueue(
        tenant_id=tenant_id,
        kind="batch_summary",
        payload=payload,
        idempotency_key=key,
        request_hash=digest,
        # A small keyed request runs inline at once; the queue only picks it up if
        # that run died with its process.
        run_after=time.time() + 60 if _is_small(payload) else 0.0,
    )
    # Not created: a concurrent duplicate inserted the same key first; answer with its job.
    return (job, True) if created else (_same_body(job, digest), False)


def _is_small(payload: dict[str, Any]) -> bool:
    return (
        sum(len(line.text) for line in batch_lines(validate(BatchRequest, payload))) <= INLINE_CHARS
    )


def _same_body(job: Job, digest: str) -> Job:
    if job.request_hash != digest:
        raise Unprocessable(
            "this Idempotency-Key was used with a different body",
            code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    return job


async def get_job(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    job = await state.jobs.get(request.path_params["job_id"])
    if job is None or job.tenant_id != tenant.id:
        raise NotFound("no such job", code=ErrorCode.JOB_NOT_FOUND)
    return JSONResponse(job_json(job))
