"""REST for the Jitsi bridge (issue 14): the tenant's bridge credentials and meetings.

Thin, like :mod:`mcustt.api`: authorize with the tenant key, call
:class:`mcustt.bridges.BridgeService`, shape the answer.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt.api import require_tenant
from mcustt.bodies import parse_body
from mcustt.errors import NotFound
from mcustt.state import app_state
from mcustt.wire import BridgeKeyCreate, ErrorCode

log = structlog.get_logger(__name__)

#: longest id a path may name (ids are ``brg_`` + 12; meetings are Jicofo's ids)
_MAX_ID = 200


async def create_bridge_key(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    body = await parse_body(request, BridgeKeyCreate)
    doc = await state.bridges.mint(tenant, body.name)
    log.info("bridge credential minted", bridge_id=doc["id"])
    return JSONResponse(doc, status_code=201)


async def list_bridge_keys(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    return JSONResponse(await state.bridges.list(tenant))


async def revoke_bridge_key(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    bridge_id = request.path_params["bridge_id"]
    if len(bridge_id) > _MAX_ID:
        raise NotFound("no such bridge credential", code=ErrorCode.BRIDGE_KEY_NOT_FOUND)
    doc = await state.bridges.revoke(tenant, bridge_id)
    log.info("bridge credential revoked", bridge_id=doc["id"])
    return JSONResponse(doc)


async def get_jitsi_meeting(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    meeting = request.path_params["meeting_id"]
    if len(meeting) > _MAX_ID or not meeting.isprintable():
        raise NotFound("no such Jitsi meeting", code=ErrorCode.JITSI_SESSION_NOT_FOUND)
    return JSONResponse(await state.bridges.info(tenant, meeting))
