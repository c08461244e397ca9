"""Speaker endpoints (issue 14): the REST layer over :mod:`mcustt.speakers`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import speakers
from mcustt.api import check_browser_origin, session_access
from mcustt.bodies import read_json, validate
from mcustt.state import app_state
from mcustt.wire import SpeakerNameBody


async def put_speaker(request: Request) -> Response:
    state = app_state(request)
    participant = speakers.speaker_id(request.path_params["speaker_id"])
    body = await read_json(request, optional=False)
    name = speakers.display_name(validate(SpeakerNameBody, body).name)
    creds = await session_access(
        request, request.path_params["session_id"], tenant=True, owner=True, body=body
    )
    speaker = await speakers.rename(state.repo, state.hub, creds.session, participant, name)
    return JSONResponse(speaker)


async def list_speakers(request: Request) -> Response:
    state = app_state(request)
    creds = await session_access(request, request.path_params["session_id"], tenant=True, read=True)
    await check_browser_origin(request, creds.session)
    return JSONResponse(await speakers.listing(state.repo, creds.session))
