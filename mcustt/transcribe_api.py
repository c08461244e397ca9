"""``POST /api/transcribe`` (issue 15): the REST layer over :mod:`mcustt.transcribe`.

A multipart upload (the file in the part ``file``, options as form fields) or a JSON body
with ``audio_url``. Files up to ``transcribe_inline_s`` of audio are answered inline
(200, the transcript); longer ones, and any request with an ``Idempotency-Key``, become
a durable ``transcription`` job (202 + ``GET /api/jobs/:id``) whose file waits in the
database, so any node can run it. A keyed short file still runs at once and answers
200; a retry with the key gets the stored result.

The edge (:mod:`mcustt.edge`) lets this one route's body grow to the file cap; a JSON
body here is still held to the ordinary 2 MB cap while it is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mcustt import wire
from mcustt.api import require_tenant
from mcustt.bodies import MAX_BODY, read_json, validate
from mcustt.errors import (
    BadRequest,
    MCUSTTError,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from mcustt.state import AppState, app_state
from mcustt.store.models import Job, Tenant
from mcustt.tokens import random_id
from mcustt.transcribe import AudioSource, FileOptions, fetch_audio_url, probe
from mcustt.wire import ErrorCode, TranscribeRequest

#: Form fields a multipart request may carry besides ``file`` (more are refused).
MAX_FORM_FIELDS = 200
#: The largest non-file form field (keywords may be 100 x 100 characters).
MAX_FIELD_BYTES = 64 * 1024
#: Multipart framing and form fields on top of the file itself.
FORM_OVERHEAD = 1024 * 1024
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def max_request_bytes(max_file_bytes: int) -> int:
    """The body cap of this route (the edge applies it)."""
    return max_file_bytes + FORM_OVERHEAD


async def transcribe(request: Request) -> Response:
    state = app_state(request)
    tenant = await require_tenant(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= 255):
        raise BadRequest("Idempotency-Key must be 1-255 characters")
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    with tempfile.TemporaryDirectory(prefix="mcustt-upload-") as tmp:
        if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            req, upload, name, digest = await _read_form(request, Path(tmp))
        elif ctype in ("", "application/json") or ctype.endswith("+json"):
            req = validate(TranscribeRequest, await _read_small_json(request))
            upload, name, digest = None, None, _request_digest(req)
        else:
            raise UnsupportedMediaType(
                "send the file as multipart/form-data (part `file`) or JSON with audio_url"
            )
        if upload is None and not req.audio_url:
            raise BadRequest(
                "send a file (multipart/form-data, part `file`) or a JSON body with audio_url"
            )
        if upload is not None and req.audio_url:
            raise BadRequest("send either a file or audio_url, not both")
        options = FileOptions(
            language_hints=req.hints(),
            enable_diarization=req.enable_diarization,
            title=req.title,
            reduce_noise=req.reduce_noise,
            keywords=list(req.keywords or []),
        )
        state.transcriber.check_options(options)
        if key is not None:
            existing = await state.jobs.by_idempotency_key(tenant.id, key)
            if existing is not None:
                return await _answer(state, _same_body(existing, digest))
        if upload is None:
            assert req.audio_url is not None
            upload = await fetch_audio_url(req.audio_url, state.settings, dest_dir=Path(tmp))
            name = _url_name(req.audio_url)
        audio_ms = await _probe(state, upload)
        await state.transcriber.check_cap(tenant, audio_ms)
        inline = audio_ms <= state.settings.transcribe_inline_s * 1000
        if key is None and inline:
            result = await state.transcriber.transcribe(
                tenant, AudioSource(upload, name=name), options
            )
            return JSONResponse(result)
        job = await _enqueue(state, tenant, upload, name, options, key, digest, inline=inline)
        return await _answer(state, job, run_now=inline)


async def _probe(state: AppState, path: Path) -> int:
    """The audio's length in ms (400 when it is not audio or too long)."""
    # The probe is FFmpeg work: off the event loop.
    info = await asyncio.to_thread(probe, path, max_audio_s=state.settings.transcribe_max_audio_s)
    return info.duration_ms


async def _enqueue(
    state: AppState,
    tenant: Tenant,
    path: Path,
    name: str | None,
    options: FileOptions,
    key: str | None,
    digest: str,
    *,
    inline: bool,
) -> Job:
    """Store the file and queue its job (or, when a concurrent duplicate with the same
    key won, drop ours and answer with that one)."""
    audio_id = "aud_" + random_id(20)
    await state.repo.store_file_audio(audio_id, path)
    session_id = random_id(10)
    try:
        job, created = await state.jobs.enqueue(
            tenant_id=tenant.id,
            kind="transcription",
            session_id=session_id,
            payload={
                "audioId": audio_id,
                "sessionId": session_id,
                "name": name,
                "inline": inline,
                "options": options.to_json(),
            },
            idempotency_key=key,
            request_hash=digest,
            # A short keyed file runs inline at once; the queue only picks it up if that
            # run died with its process.
            run_after=time.time() + 60 if inline else 0.0,
        )
    except BaseException:
        await state.repo.delete_file_audio(audio_id)
        raise
    if not created:
        await state.repo.delete_file_audio(audio_id)
        return _same_body(job, digest)
    return job


async def _answer(state: AppState, job: Job, *, run_now: bool = False) -> Response:
    """A short keyed file's result (run now when it was just queued), else 202."""
    inline = bool(job.payload.get("inline"))
    if inline:
        if run_now:
            claimed = await state.jobs.claim_one(job.id)
            if claimed is not None:
                await state.jobs.run(*claimed)
        fresh = await state.jobs.get(job.id)
        assert fresh is not None
        if fresh.status == "ready" and fresh.result is not None:
            return JSONResponse(fresh.result)
        if fresh.status == "failed" and fresh.error:
            code, _, message = fresh.error.partition(": ")
            if code in ErrorCode.__members__ and code != ErrorCode.INTERNAL:
                # The job failed on its input: the same 4xx a request without a key gets.
                raise MCUSTTError(message, code=ErrorCode(code), status_code=400)
        job = fresh
    accepted: wire.JobAccepted = {
        "jobId": job.id,
        "status": job.status,
        "poll": f"/api/jobs/{job.id}",
    }
    return JSONResponse(accepted, status_code=202)


def _same_body(job: Job, digest: str) -> Job:
    if job.kind != "transcription" or job.request_hash != digest:
        raise Unprocessable(
            "this Idempotency-Key was used with a different body",
            code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    return job


# -- reading the request ---------------------------------------------------------------------


async def _read_small_json(request: Request) -> dict[str, Any]:
    """The JSON body, held to the ordinary body cap although the edge lets this route's
    bodies (uploads) be larger."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge(f"a JSON body is capped at {MAX_BODY} bytes; upload files as form")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise PayloadTooLarge(f"a JSON body is capped at {MAX_BODY} bytes")
    # Cached where Request.body() looks, so the shared reader parses it.
    request._body = bytes(raw)
    return await read_json(request, optional=False)


async def _read_form(
    request: Request, tmp: Path
) -> tuple[TranscribeRequest, Path | None, str | None, str]:
    """The form's options, the uploaded file copied to ``tmp`` (None: no file part), its
    name, and the digest of the request (options and file bytes) for Idempotency-Key."""
    try:
        form = await request.form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
    except MCUSTTError:
        raise  # the edge's 413
    except HTTPException as exc:
        raise BadRequest(f"malformed multipart body: {exc.detail}") from None
    except (ValueError, KeyError, UnicodeDecodeError, AssertionError) as exc:
        raise BadRequest(f"malformed multipart body: {type(exc).__name__}") from None
    try:
        req = validate(TranscribeRequest, _form_fields(form))
        upload = form.get("file")
        if upload is not None and not isinstance(upload, UploadFile):
            raise BadRequest("the part `file` must be a file upload, not a text field")
        hasher = hashlib.sha256(_canonical(req).encode())
        if upload is None:
            return req, None, None, hasher.hexdigest()
        dest = tmp / "upload"
        await _copy(upload, dest, hasher)
        name = (upload.filename or "").strip()[:500] or None
        return req, dest, name, hasher.hexdigest()
    finally:
        await form.close()


def _form_fields(form: FormData) -> dict[str, Any]:
    """Form fields as the JSON body's fields: booleans parsed, repeated
    ``language_hints``/``keywords`` as lists (one ``language_hints`` may be "ko,en")."""
    fields: dict[str, Any] = {}
    for name in set(form.keys()):
        if name == "file":
            continue
        values = form.getlist(name)
        if any(not isinstance(v, str) for v in values):
            raise BadRequest(f"the form field {name!r} must be text, not a file")
        texts = [str(v) for v in values]
        if name == "keywords":
            fields[name] = texts
        elif name == "language_hints":
            fields[name] = texts[0] if len(texts) == 1 else texts
        elif len(texts) > 1:
            raise BadRequest(f"the form field {name!r} is given more than once")
        elif name in ("enable_diarization", "reduce_noise"):
            value = texts[0].strip().lower()
            if value not in _TRUE | _FALSE:
                raise BadRequest(f"{name} must be true or false, not {texts[0][:20]!r}")
            fields[name] = value in _TRUE
        else:
            fields[name] = texts[0]
    return fields


async def _copy(upload: UploadFile, dest: Path, hasher: Any) -> None:
    """Copy the spooled upload to ``dest`` in a thread (hashing it on the way)."""

    def copy() -> None:
        upload.file.seek(0)
        with dest.open("wb") as out:
            while True:
                block = upload.file.read(1024 * 1024)
                if not block:
                    return
                hasher.update(block)
                out.write(block)

    await asyncio.to_thread(copy)


def _canonical(req: TranscribeRequest) -> str:
    doc = req.model_dump(mode="json")
    doc["language_hints"], doc["language_hint"] = req.hints(), None
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _request_digest(req: TranscribeRequest) -> str:
    return hashlib.sha256(_canonical(req).encode()).hexdigest()


def _url_name(url: str) -> str | None:
    last = unquote(urlsplit(url).path.rsplit("/", 1)[-1]).strip()
    return last[:500] or None
