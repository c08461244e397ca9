"""``POST /v1/stt``: seed 000's (BizCrush's) file STT, a thin adapter over
:class:`mcustt.transcribe.FileTranscriber`.

The seed's request (``audio_url``, ``session_id``, ``enable_diarization``,
``language_hints`` / legacy ``language_hint``) and response (``text``,
``detected_language``, ``confidence``, ``utterances[]``) field for field, its error texts
and statuses for the key and the body; the answer is synchronous, as the seed's is (it
says to allow 600 s). Added: ``session_id`` in the answer is the file's mcustt session
(transcript with speakers, summary, embed page), and ``diarization`` says whether
speakers were told apart and if not why.

Errors are the seed's JSON error body ``{"success": false, "error", "code"}``: ``error``
is the seed's text where it has one (``Missing authorization``, ``Invalid API key``,
``Empty request body``, ``Invalid JSON``, ``Missing audio_url``), else mcustt's message
(a refused URL, an unsupported language, a file that is not audio); ``code`` is mcustt's
error code. A transcription that fails in the engine is a 502/503, not the seed's bare
500: no input makes mcustt answer 500.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import compat, wire
from mcustt.api import bind
from mcustt.bodies import validate
from mcustt.errors import MCUSTTError
from mcustt.state import app_state
from mcustt.transcribe import AudioSource, FileOptions, fetch_audio_url

log = structlog.get_logger(__name__)


def v1_error(status: int, error: str, code: str, headers: dict[str, str] | None = None) -> Response:
    doc: wire.V1Error = {"success": False, "error": error, "code": code}
    return JSONResponse(doc, status_code=status, headers=headers)


async def v1_stt(request: Request) -> Response:
    try:
        return await _v1_stt(request)
    except compat.V1Refused as exc:
        return v1_error(exc.status, exc.error, exc.code)
    except MCUSTTError as exc:
        return v1_error(exc.status_code, exc.message, exc.code, exc.headers or None)


async def _v1_stt(request: Request) -> Response:
    state = app_state(request)
    tenant = await compat.v1_tenant(state, request.query_params.get("api_key"))
    bind(tenant_id=tenant.id)
    # A file becomes a session: the same per-address budget as creating one.
    await state.limiter.hit("create_session", state.client_ip(request))
    data = compat.json_object(await request.body())
    if data.get("audio_url") in (None, ""):
        raise compat.V1Refused(400, compat.MISSING_AUDIO_URL)
    body = validate(wire.V1SttBody, data)
    options = FileOptions(
        language_hints=body.hints(),
        enable_diarization=body.enable_diarization,
        title=body.session_id,
    )
    # Refuse what cannot be served before downloading anything.
    state.transcriber.check_options(options)
    await state.transcriber.check_cap(tenant)
    path = await fetch_audio_url(body.audio_url, state.settings)
    try:
        name = body.audio_url.rsplit("/", 1)[-1].split("?", 1)[0] or None
        result = await state.transcriber.transcribe(tenant, AudioSource(path, name=name), options)
    finally:
        path.unlink(missing_ok=True)
    bind(session_id=result["sessionId"])
    doc: wire.V1SttResponse = {
        "text": result["text"],
        "detected_language": result["detected_language"],
        "confidence": result["confidence"],
        "utterances": [
            {
                "speaker": u["speaker"],
                "text": u["text"],
                "start_ms": u["start_ms"],
                "end_ms": u["end_ms"],
                "confidence": u["confidence"],
                "language": u["language"],
            }
            for u in result["utterances"]
        ],
        "session_id": result["sessionId"],
        "diarization": result["diarization"],
    }
    return JSONResponse(doc)
