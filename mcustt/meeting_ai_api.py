"""Meeting AI endpoints (issue 16): ask about a session, and documents written from its
transcript to a custom prompt. The REST layer over the summarizer seam
(:meth:`~mcustt.summarizers.Summarizer.ask`, ``write_document``) and the job runner.

Both are paid for like summaries: the same per-IP ``summarize`` rate limit, the same
credentials (the tenant key, or the session's owner secret), the same 503 when the
configured summarizer cannot run.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import netguard, wire
from mcustt.api import session_access
from mcustt.bodies import read_json, validate
from mcustt.errors import NotFound
from mcustt.jobs import document_json
from mcustt.state import AppState, app_state
from mcustt.store.models import Session
from mcustt.summarizers import Line, SummarizerUnavailable
from mcustt.summary_api import require_summarizer
from mcustt.webhooks import new_secret
from mcustt.wire import AskBody, DocumentBody, ErrorCode

#: what a document id can look like (anything else is simply not found, and never
#: reaches the database: a NUL in a path would be a PostgreSQL error)
_DOC_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


async def _lines(state: AppState, session: Session) -> list[Line]:
    """The session's transcript so far (corrections applied), as the summarizer takes it."""
    rows = await state.repo.lines(session.id)
    return [
        Line(text=r.text, seq=r.seq, ts=r.ts / 1000, lang=r.lang, speaker=r.speaker) for r in rows
    ]


async def ask(request: Request) -> Response:
    state = app_state(request)
    await state.limiter.hit("summarize", state.client_ip(request))
    body = await read_json(request)
    req = validate(AskBody, body)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True, body=body
    )
    await require_summarizer(state)
    session = creds.session
    lang = session.detected_lang or session.source_lang
    answer = await state.summarizer.ask(await _lines(state, session), req.question, lang=lang)
    return JSONResponse(answer.to_json())


async def create_document(request: Request) -> Response:
    state = app_state(request)
    await state.limiter.hit("summarize", state.client_ip(request))
    body = await read_json(request)
    req = validate(DocumentBody, body)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True, body=body
    )
    await require_summarizer(state)
    if not state.summarizer.writes_documents:
        # At once, rather than a job that can only fail: no language model, no document.
        raise SummarizerUnavailable(
            f"the {state.summarizer.name} summarizer cannot write documents; the operator "
            "must configure a language model (MCUSTT_SUMMARIZER=openai)"
        )
    secret: str | None = None
    if req.callbackUrl is not None:
        # Checked now so a refused URL is the caller's 400, not a silent failed delivery;
        # the delivery checks it again before every attempt (DNS may change).
        await netguard.check_url(req.callbackUrl, allow_private=state.settings.allow_private_urls)
        secret = new_secret()
    doc = await state.jobs.enqueue_document(
        creds.session, prompt=req.prompt, callback_url=req.callbackUrl, callback_secret=secret
    )
    accepted: wire.DocumentAccepted = {
        "docId": doc.id,
        "status": "pending",
        "poll": f"/api/sessions/{doc.session_id}/documents/{doc.id}",
    }
    if secret is not None:
        accepted["callbackSecret"] = secret
    return JSONResponse(accepted, status_code=202)


async def get_document(request: Request) -> Response:
    state = app_state(request)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True
    )
    doc_id = request.path_params["doc_id"]
    doc = (
        await state.repo.get_document(creds.session.id, doc_id)
        if _DOC_ID.fullmatch(doc_id)
        else None
    )
    if doc is None:
        raise NotFound("no such document", code=ErrorCode.DOCUMENT_NOT_FOUND)
    return JSONResponse(document_json(doc))
