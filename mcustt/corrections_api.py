"""Corrections endpoints (issue 16): the REST layer over :mod:`mcustt.corrections`.

``PATCH /api/sessions/:id/lines/:seq`` takes the tenant key or the owner secret (like
``summarize``); ``GET`` also takes a read token (like the transcript). A read token never
corrects (401 ``WRONG_TOKEN_SCOPE``).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import wire
from mcustt.api import check_browser_origin, session_access
from mcustt.bodies import read_json, validate
from mcustt.errors import BadRequest
from mcustt.state import app_state
from mcustt.wire import LineRevisionBody

_SEQ = re.compile(r"[0-9]{1,10}")


def _seq(request: Request) -> int:
    """The line's seq from the path: ASCII digits within 0..``wire.MAX_SEQ`` (a larger
    number would overflow the seq column's type on PostgreSQL)."""
    raw = request.path_params["seq"]
    if not _SEQ.fullmatch(raw) or int(raw) > wire.MAX_SEQ:
        raise BadRequest(f"seq must be an integer from 0 to {wire.MAX_SEQ}")
    return int(raw)


async def get_line(request: Request) -> Response:
    state = app_state(request)
    seq = _seq(request)
    creds = await session_access(request, request.path_params["session_id"], tenant=True, read=True)
    # Like the transcript: a browser page may read it only from the allowed origins.
    await check_browser_origin(request, creds.session)
    return JSONResponse(await state.corrections.line(creds.session, seq))


async def revise_line(request: Request) -> Response:
    state = app_state(request)
    seq = _seq(request)
    body = await read_json(request, optional=False)
    correction = validate(LineRevisionBody, body)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True, body=body
    )
    # session_access admits only these two kinds here (a read token is 401).
    author: wire.RevisionAuthor = "tenant" if creds.kind == "tenant" else "owner"
    doc = await state.corrections.revise(creds.session, seq, correction.text.strip(), author=author)
    return JSONResponse(doc)
