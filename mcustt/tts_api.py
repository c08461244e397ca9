"""Text-to-speech endpoints (issue 16): the REST layer over :mod:`mcustt.speech`.

* ``POST /api/tts``, ``GET /api/tts/voices``, ``GET /api/tts/:id`` (the tenant key, as
  ``X-Tenant-Key`` or ``Authorization: Bearer``, like the webhook endpoints);
* ``GET /media/tts/:id.ogg?exp=&sig=``: the signed URL, no credential;
* ``POST /v1/tts``: seed 000's endpoint (``?api_key=``, ``{session_id, message_id,
  text}`` as JSON, ``{"audio_url", "error"}`` back).
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import tenants, wire
from mcustt.api import bind, tenant_of
from mcustt.bodies import loads, parse_body, validate
from mcustt.errors import MCUSTTError, NotFound, Unauthorized
from mcustt.speech import ID_PATTERN, audio_json
from mcustt.state import app_state
from mcustt.tts import TTSError, TTSUnavailable
from mcustt.wire import ErrorCode, TtsBody, V1TtsBody

log = structlog.get_logger(__name__)


async def create_tts(request: Request) -> Response:
    state = app_state(request)
    tenant = await tenant_of(request)
    # Per tenant: one tenant's backend behind many addresses is still one budget.
    await state.limiter.hit("tts", tenant.id)
    body = await parse_body(request, TtsBody, optional=False)
    spoken = await state.tts.speak(tenant, body.text, voice=body.voice)
    return JSONResponse(
        audio_json(spoken),
        status_code=201,
        headers={"Location": f"/api/tts/{spoken.row.id}"},
    )


async def list_voices(request: Request) -> Response:
    state = app_state(request)
    await tenant_of(request)
    engine = state.tts.synthesizer
    doc: wire.TtsVoices = {
        "engine": engine.name,
        "defaultVoice": engine.default_voice,
        "voices": list(await engine.voices()),
    }
    return JSONResponse(doc)


async def get_tts(request: Request) -> Response:
    state = app_state(request)
    tenant = await tenant_of(request)
    spoken = await state.tts.for_tenant(tenant, request.path_params["audio_id"])
    return JSONResponse(audio_json(spoken))


async def media(request: Request) -> Response:
    """The signed URL. The query string (the signature) is never logged."""
    state = app_state(request)
    audio_id = request.path_params["audio_id"]
    if not ID_PATTERN.fullmatch(audio_id):
        raise NotFound("no such audio", code=ErrorCode.TTS_AUDIO_NOT_FOUND)
    row = await state.tts.fetch(
        audio_id, request.query_params.get("exp"), request.query_params.get("sig")
    )
    remaining = max(0, int(row.expires_at - time.time()))
    return Response(
        row.audio,
        media_type="audio/ogg",
        headers={
            # The bytes under an id never change; "private": the URL is a credential,
            # so shared caches should not keep a copy past the client's own.
            "Cache-Control": f"private, max-age={remaining}, immutable",
            "ETag": f'"{row.id}"',
            "Content-Disposition": f'inline; filename="{row.id}.ogg"',
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- seed 000: POST /v1/tts ---------------------------------------------------------------

V1_MISSING_AUTH = "Missing authorization"
V1_INVALID_KEY = "Invalid API key"
V1_EMPTY = "Empty request body"
V1_INVALID_JSON = "Invalid JSON"
V1_MISSING_FIELDS = "Missing session_id, message_id, or text"
#: Seed 000 answers this with a 500; an engine failure is not the caller's input, and
#: we answer no input with a 5xx that means "our bug": 502 (the engine failed) or 503
#: (no engine), with the seed's text.
V1_TTS_FAILED = "TTS generation failed"
_FIELDS = ("session_id", "message_id", "text")


def _v1(status: int, error: str = "", *, url: str = "", retry_after: str | None = None) -> Response:
    doc: wire.V1TtsResponse = {"audio_url": url, "error": error}
    headers = {"Retry-After": retry_after} if retry_after else None
    return JSONResponse(doc, status_code=status, headers=headers)


async def v1_tts(request: Request) -> Response:
    """Seed 000's TTS: every answer is ``{"audio_url", "error"}``, never the envelope."""
    try:
        return await _v1_tts(request)
    except TTSUnavailable as exc:
        log.warning("tts.v1.unavailable", reason=exc.message)
        return _v1(503, V1_TTS_FAILED, retry_after=exc.headers.get("Retry-After", "60"))
    except TTSError as exc:
        log.warning("tts.v1.failed", reason=exc.message)
        return _v1(502, V1_TTS_FAILED)
    except MCUSTTError as exc:  # 400 (text, voice), 429: the message says what to do
        return _v1(exc.status_code, exc.message, retry_after=exc.headers.get("Retry-After"))


async def _v1_tts(request: Request) -> Response:
    state = app_state(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if "protobuf" in content_type:
        return _v1(
            415,
            "application/x-protobuf is not supported here: send the same fields as JSON "
            '(Content-Type: application/json, {"session_id", "message_id", "text"})',
        )
    key = request.query_params.get("api_key")
    if not key:
        return _v1(401, V1_MISSING_AUTH)
    try:
        tenant = await tenants.authenticate(state.db, key)
    except Unauthorized:
        return _v1(401, V1_INVALID_KEY)
    bind(tenant_id=tenant.id)
    await state.limiter.hit("tts", tenant.id)
    raw = await request.body()
    if not raw.strip():
        return _v1(400, V1_EMPTY)
    try:
        data = loads(raw)
    except MCUSTTError:
        return _v1(400, V1_INVALID_JSON)
    if not isinstance(data, dict):
        return _v1(400, V1_INVALID_JSON)
    values = [data.get(name) for name in _FIELDS]
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        return _v1(400, V1_MISSING_FIELDS)
    if not all(isinstance(v, str) for v in values):
        return _v1(400, "session_id, message_id and text must be strings")
    body = validate(V1TtsBody, {name: data[name] for name in _FIELDS})
    spoken = await state.tts.speak(
        tenant, body.text, session_id=body.session_id, message_id=body.message_id
    )
    return _v1(200, url=spoken.url)
