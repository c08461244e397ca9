"""An async Python client for an mcustt server: REST, a producer and a viewer.

::

    async with Client("http://127.0.0.1:8000", tenant_key=KEY) as client:
        session = await client.create_session(title="Standup")
        async with client.producer(session) as producer:
            await producer.send_file("meeting.mp4")   # any audio/video PyAV can decode
            await producer.stop()                     # ends the session
        print(await client.transcript(session["sessionId"], "srt"))
        print((await client.summary(session["sessionId"], wait=True))["content"]["tldr"])

* :class:`Client` wraps every REST endpoint; an error answer raises a
  :class:`MCUSTTClientError` subclass carrying the envelope's ``code``.
* :class:`Producer` streams PCM16 16 kHz mono in 20 ms frames to ``/ws/stt``, paced in
  real time or as fast as the server reads, and survives a dropped socket: it mints a
  fresh single-use ingest token with the owner secret and reconnects, continuing from
  the frame that failed; the server continues the session's seq.
* :class:`Viewer` follows ``/ws/subscribe`` and resumes with ``lastSeq`` after a
  disconnect, so every final is yielded exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, cast, overload
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

__all__ = [
    "DEFAULT_URL",
    "BadRequest",
    "Client",
    "Conflict",
    "Event",
    "Forbidden",
    "MCUSTTClientError",
    "NotFound",
    "Producer",
    "RateLimited",
    "ServerError",
    "StreamClosed",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "Viewer",
    "audio_duration",
    "decode_audio",
    "read_wav",
]

DEFAULT_URL = "http://127.0.0.1:8000"
SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2
FRAME_MS = 20
FRAME_BYTES = BYTES_PER_SECOND * FRAME_MS // 1000  # 640: the contract's ideal frame

Format = Literal["json", "srt", "vtt", "txt"]

# -- errors ---------------------------------------------------------------------------------


class MCUSTTClientError(Exception):
    """An error answer from the server (or a socket closed for good).

    ``status`` is the HTTP status (0 for a socket closed after it was open), ``code``
    the envelope's machine-readable code, ``message`` its explanation.
    """

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class BadRequest(MCUSTTClientError):
    """400: malformed body, parameter or format."""


class Unauthorized(MCUSTTClientError):
    """401: missing or invalid credential, or one this operation does not accept."""


class Forbidden(MCUSTTClientError):
    """403: admin API disabled, or origin not allowed."""


class NotFound(MCUSTTClientError):
    """404: no such tenant, session or job (for these credentials)."""


class Conflict(MCUSTTClientError):
    """409: the session ended, or another producer is connected."""


class Unprocessable(MCUSTTClientError):
    """422: e.g. an Idempotency-Key reused with another body."""


class RateLimited(MCUSTTClientError):
    """429: rate limit or tenant cap; ``retry_after`` says how long to wait."""


class Unavailable(MCUSTTClientError):
    """503: summarizer unconfigured, capacity; ``retry_after`` says how long to wait."""


class ServerError(MCUSTTClientError):
    """Any other 5xx."""


class StreamClosed(MCUSTTClientError):
    """The ingest socket closed for good (bad audio, daily cap, too many failed
    reconnects). ``close_code`` is the WebSocket close code when there was one."""

    def __init__(self, code: str, message: str, *, close_code: int | None = None) -> None:
        super().__init__(0, code, message)
        self.close_code = close_code


_BY_STATUS: dict[int, type[MCUSTTClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


def error_from(status: int, body: bytes, headers: httpx.Headers | None = None) -> MCUSTTClientError:
    """The typed exception for an error answer (REST, or a refused WebSocket upgrade)."""
    code, message = f"HTTP_{status}", body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        envelope = json.loads(body)["error"]
        code, message = str(envelope["code"]), str(envelope["message"])
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else MCUSTTClientError)
    retry = _retry_after(headers.get("retry-after")) if headers is not None else None
    return cls(status, code, message, retry_after=retry)


# -- documents (the JSON the server answers; see /openapi.json) --------------------------------


class Brand(TypedDict):
    brandName: str
    accentColor: str | None
    logoUrl: str | None


class Tenant(TypedDict):
    tenantId: str
    name: str
    maxSessions: int
    dailyMinutesCap: int
    brand: Brand
    allowedOrigins: list[str]
    disabled: bool
    keyPrefix: str
    createdAt: float
    updatedAt: float


class TenantWithKey(Tenant):
    apiKey: str
    note: str


class ReadTokens(TypedDict):
    embedToken: str
    embedUrl: str
    subscribeToken: str
    subscribeUrl: str


class IngestToken(TypedDict):
    ingestToken: str
    ingestUrl: str


class SessionCreated(ReadTokens, IngestToken):
    sessionId: str
    ownerSecret: str
    brand: Brand


class SessionState(TypedDict):
    sessionId: str
    status: Literal["live", "ended"]
    title: str | None
    sourceLang: str
    autoDetect: bool
    detectedLang: str | None
    detectedLangName: str | None
    lineCount: int
    lastSeq: int
    ingestConnected: bool
    subscribers: int
    summaryStatus: Literal["none", "pending", "ready", "failed"]
    audioSeconds: float
    createdAt: float
    endedAt: float | None
    endReason: str | None
    brand: Brand | None


class SessionListItem(TypedDict):
    sessionId: str
    title: str | None
    status: Literal["live", "ended"]
    createdAt: float
    endedAt: float | None
    lastSeq: int


class TranscriptLine(TypedDict):
    seq: int
    lang: str
    text: str
    ts: int
    startMs: int
    endMs: int


class Transcript(TypedDict):
    sessionId: str
    lineCount: int
    lines: list[TranscriptLine]


class ActionItem(TypedDict):
    owner: str | None
    task: str


class SummaryContent(TypedDict):
    tldr: str
    decisions: list[str]
    actionItems: list[ActionItem]
    qa: list[str]


class Summary(TypedDict, total=False):
    """``status`` is ``ready`` (with the rest), ``pending`` or ``failed`` (with ``error``)."""

    status: Literal["ready", "pending", "failed"]
    model: str | None
    lang: str | None
    content: SummaryContent
    fromSeq: int | None
    toSeq: int | None
    updatedAt: float
    error: str


class SummarizeAccepted(TypedDict):
    status: str
    jobId: str
    poll: str


class BatchResult(TypedDict, total=False):
    language: str
    transcript: str
    summary: SummaryContent
    model: str


class JobAccepted(TypedDict):
    jobId: str
    status: Literal["queued", "running", "ready", "failed"]
    poll: str


class Job(TypedDict):
    jobId: str
    kind: str
    status: Literal["queued", "running", "ready", "failed"]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    createdAt: float
    updatedAt: float


class Subtitle(TypedDict, total=False):
    text: str
    ts: float
    speaker: str


@dataclass(frozen=True)
class Event:
    """One server event: ``transcript``, ``language``, ``session-end``, ``error``…

    ``replayed`` marks finals the producer fetched from the transcript because the
    socket that carried them had dropped.
    """

    data: dict[str, Any]
    replayed: bool = False

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def is_transcript(self) -> bool:
        return self.type == "transcript"

    @property
    def is_final(self) -> bool:
        return self.is_transcript and bool(self.data.get("isFinal"))

    @property
    def text(self) -> str:
        return str(self.data.get("text", ""))

    @property
    def seq(self) -> int | None:
        seq = self.data.get("seq")
        return seq if isinstance(seq, int) else None

    @property
    def lang(self) -> str | None:
        lang = self.data.get("lang")
        return lang if isinstance(lang, str) else None


EventCallback = Callable[[Event], object]


async def _call(callback: EventCallback | None, event: Event) -> None:
    if callback is not None:
        result = callback(event)
        if inspect.isawaitable(result):
            await result


def _backoff(attempt: int) -> float:
    """0.25 s doubling to 5 s, with jitter so many clients do not reconnect in step."""
    return float(min(5.0, 0.25 * 2.0**attempt) * (0.8 + 0.4 * random.random()))


# -- the REST client ------------------------------------------------------------------------------


class Client:
    """REST client. Use as ``async with Client(...) as client`` (or call :meth:`aclose`).

    ``tenant_key`` authorizes tenant operations; ``admin_token`` the admin ones.
    Operations on one session also accept a read token (``token=``) or the owner
    secret (``owner_secret=``) where the server does. ``http`` lets the caller bring
    its own ``httpx.AsyncClient`` (with ``base_url`` set; it is not closed here).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        tenant_key: str | None = None,
        admin_token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_key = tenant_key
        self.admin_token = admin_token
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    @property
    def ws_url(self) -> str:
        """The base URL with ws/wss: sockets go where REST goes, whatever public URL the
        server believes it has (a proxy or port mapping may differ)."""
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://") :]
        return "ws://" + self.base_url.removeprefix("http://")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # -- plumbing --

    def _auth(self, kind: Literal["tenant", "admin"]) -> dict[str, str]:
        if kind == "admin":
            if not self.admin_token:
                raise ValueError("this operation needs admin_token")
            return {"authorization": f"Bearer {self.admin_token}"}
        if not self.tenant_key:
            raise ValueError("this operation needs tenant_key")
        return {"x-tenant-key": self.tenant_key}

    def _session_auth(
        self, *, token: str | None = None, owner_secret: str | None = None
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Headers and body for an operation on one session: an explicit read token or
        owner secret wins, else the tenant key."""
        if owner_secret:
            return {}, {"ownerSecret": owner_secret}
        if token:
            return {"authorization": f"Bearer {token}"}, None
        return self._auth("tenant"), None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        response = await self.http.request(
            method, path, headers=headers, json=json_body, params=params
        )
        if response.status_code >= 400:
            raise error_from(response.status_code, response.content, response.headers)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    # -- admin: tenants --

    async def create_tenant(
        self,
        name: str,
        *,
        max_sessions: int | None = None,
        daily_minutes_cap: int | None = None,
        brand: dict[str, str | None] | None = None,
        allowed_origins: list[str] | None = None,
    ) -> TenantWithKey:
        """Create a tenant (admin). The returned ``apiKey`` is shown only this once."""
        body: dict[str, Any] = {"name": name}
        for key, value in (
            ("maxSessions", max_sessions),
            ("dailyMinutesCap", daily_minutes_cap),
            ("brand", brand),
            ("allowedOrigins", allowed_origins),
        ):
            if value is not None:
                body[key] = value
        doc = await self._json(
            "POST", "/api/admin/tenants", headers=self._auth("admin"), json_body=body
        )
        return cast(TenantWithKey, doc)

    async def list_tenants(self) -> list[Tenant]:
        doc = await self._json("GET", "/api/admin/tenants", headers=self._auth("admin"))
        return cast(list[Tenant], doc["tenants"])

    async def get_tenant(self, tenant_id: str) -> Tenant:
        path = f"/api/admin/tenants/{tenant_id}"
        return cast(Tenant, await self._json("GET", path, headers=self._auth("admin")))

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        max_sessions: int | None = None,
        daily_minutes_cap: int | None = None,
        brand: dict[str, str | None] | None = None,
        allowed_origins: list[str] | None = None,
        disabled: bool | None = None,
    ) -> Tenant:
        """Change the given fields (admin); ``None`` leaves a field as it is."""
        body = {
            key: value
            for key, value in (
                ("name", name),
                ("maxSessions", max_sessions),
                ("dailyMinutesCap", daily_minutes_cap),
                ("brand", brand),
                ("allowedOrigins", allowed_origins),
                ("disabled", disabled),
            )
            if value is not None
        }
        path = f"/api/admin/tenants/{tenant_id}"
        doc = await self._json("PATCH", path, headers=self._auth("admin"), json_body=body)
        return cast(Tenant, doc)

    async def rotate_key(self, tenant_id: str) -> TenantWithKey:
        """A new API key for the tenant (admin); the old one stops working at once."""
        path = f"/api/admin/tenants/{tenant_id}/rotate-key"
        return cast(TenantWithKey, await self._json("POST", path, headers=self._auth("admin")))

    async def disable_tenant(self, tenant_id: str) -> Tenant:
        path = f"/api/admin/tenants/{tenant_id}/disable"
        return cast(Tenant, await self._json("POST", path, headers=self._auth("admin")))

    # -- sessions --

    async def create_session(
        self,
        *,
        title: str | None = None,
        source_lang: str | None = None,
        auto_detect: bool = True,
    ) -> SessionCreated:
        """A live session: ids, tokens, URLs and the owner secret (shown once)."""
        body: dict[str, Any] = {"autoDetect": auto_detect}
        if title is not None:
            body["title"] = title
        if source_lang is not None:
            body["sourceLang"] = source_lang
        doc = await self._json(
            "POST", "/api/sessions", headers=self._auth("tenant"), json_body=body
        )
        return cast(SessionCreated, doc)

    async def list_sessions(
        self, status: Literal["live", "ended"] | None = None
    ) -> list[SessionListItem]:
        params = {"status": status} if status else None
        doc = await self._json("GET", "/api/sessions", headers=self._auth("tenant"), params=params)
        return cast(list[SessionListItem], doc["sessions"])

    async def get_session(self, session_id: str, *, token: str | None = None) -> SessionState:
        headers, _ = self._session_auth(token=token)
        doc = await self._json("GET", f"/api/sessions/{session_id}", headers=headers)
        return cast(SessionState, doc)

    async def end_session(
        self, session_id: str, *, owner_secret: str | None = None
    ) -> SessionState:
        """End the session (idempotent); the summary is then generated."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        doc = await self._json(
            "DELETE", f"/api/sessions/{session_id}", headers=headers, json_body=body
        )
        return cast(SessionState, doc)

    async def embed_token(self, session_id: str, *, owner_secret: str | None = None) -> ReadTokens:
        """Fresh read-only embed and subscribe tokens (tenant key or owner secret)."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        path = f"/api/sessions/{session_id}/embed-token"
        doc = await self._json("POST", path, headers=headers, json_body=body or {})
        return cast(ReadTokens, doc)

    async def ingest_token(self, session_id: str, owner_secret: str) -> IngestToken:
        """A fresh single-use ingest token (owner secret only), replacing an unused one."""
        path = f"/api/sessions/{session_id}/ingest-token"
        doc = await self._json("POST", path, json_body={"ownerSecret": owner_secret})
        return cast(IngestToken, doc)

    # -- transcript and summary --

    @overload
    async def transcript(
        self, session_id: str, format: Literal["json"] = "json", *, token: str | None = None
    ) -> Transcript: ...

    @overload
    async def transcript(
        self, session_id: str, format: Literal["srt", "vtt", "txt"], *, token: str | None = None
    ) -> str: ...

    async def transcript(
        self, session_id: str, format: Format = "json", *, token: str | None = None
    ) -> Transcript | str:
        """The transcript: a :class:`Transcript` for ``json``, else the file's text."""
        headers, _ = self._session_auth(token=token)
        response = await self._request(
            "GET",
            f"/api/sessions/{session_id}/transcript",
            headers=headers,
            params={"format": format},
        )
        if format == "json":
            return cast(Transcript, response.json())
        return response.text

    async def summary(
        self,
        session_id: str,
        *,
        wait: bool = False,
        max_wait: float = 120.0,
        poll_interval: float = 0.5,
        token: str | None = None,
    ) -> Summary:
        """The summary document. With ``wait``, poll until it is ``ready`` or ``failed``
        (``TimeoutError`` after ``max_wait`` s; a live session's summary stays pending)."""
        headers, _ = self._session_auth(token=token)
        path = f"/api/sessions/{session_id}/summary"
        deadline = time.monotonic() + max_wait
        while True:
            doc = cast(Summary, await self._json("GET", path, headers=headers))
            if not wait or doc.get("status") in ("ready", "failed"):
                return doc
            if time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"summary of {session_id} still {doc.get('status')}")
            await asyncio.sleep(poll_interval)

    async def summarize(
        self,
        session_id: str,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        owner_secret: str | None = None,
    ) -> SummarizeAccepted:
        """Force (re)generation of the summary, optionally of a seq window."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        payload: dict[str, Any] = dict(body or {})
        if from_seq is not None:
            payload["fromSeq"] = from_seq
        if to_seq is not None:
            payload["toSeq"] = to_seq
        path = f"/api/sessions/{session_id}/summarize"
        doc = await self._json("POST", path, headers=headers, json_body=payload)
        return cast(SummarizeAccepted, doc)

    # -- batch --

    async def transcribe_summary(
        self,
        *,
        subtitles: Iterable[Subtitle] | None = None,
        text: str | None = None,
        source_lang: str | None = None,
        want: Iterable[Literal["summary", "transcript"]] = ("summary",),
        idempotency_key: str | None = None,
        wait: bool = False,
        max_wait: float = 300.0,
    ) -> BatchResult | JobAccepted:
        """Summarize subtitles or text. Small inputs answer inline (:class:`BatchResult`);
        large ones (or keyed ones still running) answer a :class:`JobAccepted`. With
        ``wait``, a job is polled and its result returned, so the answer is always a
        :class:`BatchResult`."""
        body: dict[str, Any] = {"want": list(want)}
        if subtitles is not None:
            body["subtitles"] = list(subtitles)
        if text is not None:
            body["text"] = text
        if source_lang is not None:
            body["sourceLang"] = source_lang
        headers = self._auth("tenant")
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        response = await self._request(
            "POST", "/api/transcribe-summary", headers=headers, json_body=body
        )
        doc = response.json()
        if response.status_code != 202:
            return cast(BatchResult, doc)
        accepted = cast(JobAccepted, doc)
        if not wait:
            return accepted
        job = await self.wait_job(accepted["jobId"], max_wait=max_wait)
        if job["status"] != "ready" or job["result"] is None:
            raise MCUSTTClientError(0, "JOB_FAILED", job["error"] or "the job failed")
        return cast(BatchResult, job["result"])

    async def job(self, job_id: str) -> Job:
        doc = await self._json("GET", f"/api/jobs/{job_id}", headers=self._auth("tenant"))
        return cast(Job, doc)

    async def wait_job(
        self, job_id: str, *, max_wait: float = 300.0, poll_interval: float = 0.5
    ) -> Job:
        """Poll a job until it is ``ready`` or ``failed``."""
        deadline = time.monotonic() + max_wait
        while True:
            job = await self.job(job_id)
            if job["status"] in ("ready", "failed"):
                return job
            if time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            await asyncio.sleep(poll_interval)

    # -- streaming --

    def producer(
        self,
        session: SessionCreated | None = None,
        *,
        realtime: bool = True,
        on_event: EventCallback | None = None,
        source_lang: str | None = None,
        auto_detect: bool | None = None,
        title: str | None = None,
    ) -> Producer:
        """A producer for ``session`` (from :meth:`create_session`), or without one a
        zero-ceremony producer whose socket creates its own session with the tenant key
        (``source_lang``, ``auto_detect`` and ``title`` apply to that session)."""
        return Producer(
            self,
            session,
            realtime=realtime,
            on_event=on_event,
            source_lang=source_lang,
            auto_detect=auto_detect,
            title=title,
        )

    def viewer(
        self, session_id: str, *, token: str | None = None, last_seq: int | None = 0
    ) -> Viewer:
        """A viewer of the session's events. Without ``token`` one is minted with the
        tenant key (and re-minted if it expires). ``last_seq=0`` replays every final
        from the start; ``None`` follows live events only."""
        return Viewer(self, session_id, token=token, last_seq=last_seq)


# -- audio sources -----------------------------------------------------------------------------


def read_wav(path: str | Path) -> bytes:
    """The PCM16 16 kHz mono samples of a WAV file in that format (else decoded and
    resampled with PyAV)."""
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (
            SAMPLE_RATE,
            1,
            2,
            "NONE",
        ):
            return w.readframes(w.getnframes())
    return b"".join(decode_audio(path))


def _native_wav(path: Path) -> bool:
    """Whether the file is a WAV already in the wire format (no decoding needed)."""
    try:
        with wave.open(str(path), "rb") as w:
            return (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
    except (wave.Error, EOFError):
        return False


def decode_audio(path: str | Path, *, chunk_seconds: float = 1.0) -> Iterator[bytes]:
    """Decode the first audio stream of any file PyAV (FFmpeg) reads — wav, mp3, ogg,
    m4a, a video's soundtrack… — to PCM16 16 kHz mono, in chunks of about
    ``chunk_seconds``. Blocking: run it in a thread from async code."""
    import av  # lazily: PyAV is slow to import and only file sources need it

    want = max(FRAME_BYTES, int(chunk_seconds * BYTES_PER_SECOND) // 2 * 2)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pending = bytearray()

        def take(frames: list[Any]) -> None:
            for f in frames:
                # The plane is padded to an alignment; only samples * 2 bytes are audio.
                pending.extend(bytes(f.planes[0])[: f.samples * 2])

        for frame in container.decode(stream):
            take(resampler.resample(frame))
            while len(pending) >= want:
                yield bytes(pending[:want])
                del pending[:want]
        take(resampler.resample(None))  # the resampler's delayed tail
        if pending:
            yield bytes(pending)


def audio_duration(path: str | Path) -> float | None:
    """The duration in seconds of an audio/video file, when its container says."""
    path = Path(path)
    if _native_wav(path):
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000  # AV_TIME_BASE units
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except Exception:  # any unreadable file: the duration is simply unknown
        return None
    return None


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's PCM, read (WAV) or decoded (anything else) off the event loop."""
    if _native_wav(path):
        pcm = await asyncio.to_thread(read_wav, path)
        for offset in range(0, len(pcm), BYTES_PER_SECOND):
            yield pcm[offset : offset + BYTES_PER_SECOND]
        return
    chunks = decode_audio(path)
    done = object()
    while True:
        chunk = await asyncio.to_thread(next, chunks, done)
        if chunk is done:
            return
        yield cast(bytes, chunk)


# -- the producer ------------------------------------------------------------------------------

_FATAL_CLOSE = {1003, 1008, 1009}  # bad audio / policy (daily cap) / too large: retrying won't help


class Producer:
    """Streams PCM16 16 kHz mono to ``/ws/stt`` and reports the server's events.

    Use ``async with client.producer(session) as p:``, send audio with
    :meth:`send_pcm`, :meth:`send_wav`, :meth:`send_file` or :meth:`send_chunks`, then
    :meth:`stop` to end the session. Events reach ``on_event`` and :meth:`events`;
    :attr:`finals` keeps every final, in seq order.

    A dropped socket (network, idle timeout, server restart) is reconnected with a
    fresh ingest token minted with the owner secret; sending resumes with the frame
    that failed, and finals the dead socket never delivered are fetched from the
    transcript (marked ``replayed``), so :attr:`finals` has no gap.
    """

    def __init__(
        self,
        client: Client,
        session: SessionCreated | None = None,
        *,
        realtime: bool = True,
        on_event: EventCallback | None = None,
        source_lang: str | None = None,
        auto_detect: bool | None = None,
        title: str | None = None,
        max_reconnect_attempts: int = 10,
    ) -> None:
        self.client = client
        self.realtime = realtime
        self.on_event = on_event
        self.session_id: str | None = session["sessionId"] if session else None
        self.owner_secret: str | None = session["ownerSecret"] if session else None
        self.ready: dict[str, Any] = {}
        self.finals: list[Event] = []
        self.reconnects = 0
        self.bytes_sent = 0
        self.max_reconnect_attempts = max_reconnect_attempts
        self._token: str | None = session["ingestToken"] if session else None
        self._query = {
            k: v
            for k, v in (
                ("sourceLang", source_lang),
                ("autoDetect", None if auto_detect is None else str(auto_detect).lower()),
                ("title", title),
            )
            if v is not None
        }
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._buffer = bytearray()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._finished = False
        self._failure: MCUSTTClientError | None = None
        self._closing = False
        self._clock: float | None = None  # real-time pacing: when frame 0 was due
        self._paced = 0  # frames sent since the clock was set
        self._read_token: str | None = None

    # -- lifecycle --

    async def __aenter__(self) -> Producer:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ended(self) -> bool:
        """Whether the session has ended (``session-end`` seen)."""
        return self._ended.is_set()

    @property
    def seconds_sent(self) -> float:
        return self.bytes_sent / BYTES_PER_SECOND

    async def connect(self) -> None:
        """Open the socket (done by ``async with``); waits for ``ready``."""
        await self._ensure_connected()

    async def close(self) -> None:
        """Close the socket without ending the session (see :meth:`stop`)."""
        self._closing = True
        reader, ws = self._reader, self._ws
        if ws is not None:
            await ws.close()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, 5)
        self._finish()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._queue.put_nowait(None)

    # -- sending audio --

    async def send(self, pcm: bytes) -> None:
        """Queue PCM16 bytes; every whole 20 ms frame is sent now, the rest kept."""
        self._buffer += pcm
        while len(self._buffer) >= FRAME_BYTES:
            frame = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            await self._send_frame(frame)

    async def flush(self) -> None:
        """Send the kept partial frame (an even number of bytes: PCM16 samples)."""
        tail = bytes(self._buffer[: len(self._buffer) // 2 * 2])
        self._buffer.clear()
        if tail:
            await self._send_frame(tail)

    async def send_pcm(
        self, pcm: bytes, *, progress: Callable[[float], object] | None = None
    ) -> None:
        """Send raw PCM16 16 kHz mono (no WAV header), all of it."""
        await self.send_chunks([pcm], progress=progress)

    async def send_wav(
        self, path: str | Path, *, progress: Callable[[float], object] | None = None
    ) -> None:
        """Send a WAV file (resampled with PyAV unless already 16 kHz mono PCM16)."""
        await self.send_pcm(await asyncio.to_thread(read_wav, path), progress=progress)

    async def send_file(
        self, path: str | Path, *, progress: Callable[[float], object] | None = None
    ) -> None:
        """Send any audio or video file: decoded and resampled to 16 kHz mono with PyAV
        while streaming. ``progress`` gets the seconds of audio sent so far."""
        await self.send_chunks(_file_chunks(Path(path)), progress=progress)

    async def send_chunks(
        self,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        *,
        progress: Callable[[float], object] | None = None,
    ) -> None:
        """Send PCM16 chunks of any size, reframed to 20 ms, then the last partial frame."""
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                await self._send_reporting(chunk, progress)
        else:
            for chunk in chunks:
                await self._send_reporting(chunk, progress)
        await self.flush()
        if progress is not None:
            progress(self.seconds_sent)

    async def _send_reporting(
        self, chunk: bytes, progress: Callable[[float], object] | None
    ) -> None:
        if progress is None:
            await self.send(chunk)
            return
        # Report every ~100 ms of audio: smooth bars without a callback per frame.
        step = FRAME_BYTES * 5
        for offset in range(0, len(chunk), step):
            await self.send(chunk[offset : offset + step])
            progress(self.seconds_sent)

    async def _send_frame(self, frame: bytes) -> None:
        if self.realtime:
            await self._pace()
        while True:
            ws = await self._ensure_connected()
            try:
                await ws.send(frame)
                break
            except ConnectionClosed:
                # The reader sees the same close and reconnects; wait for it and send
                # this frame again on the new socket (at most 20 ms is sent twice).
                await self._reconnected(ws)
        self.bytes_sent += len(frame)
        self._paced += 1

    async def _pace(self) -> None:
        now = time.monotonic()
        if self._clock is None:
            self._clock, self._paced = now, 0
        due = self._clock + self._paced * FRAME_MS / 1000
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:
            # Far behind (a reconnect, a stall): restart the clock instead of bursting.
            self._clock, self._paced = now, 0

    # -- ending --

    async def stop(self, max_wait: float = 60.0) -> None:
        """Send the rest of the audio, then ``{"type":"stop"}``; returns after
        ``session-end`` (the last final is in :attr:`finals`) and closes the socket."""
        await self.flush()
        deadline = time.monotonic() + max_wait
        try:
            while not self._ended.is_set():
                try:
                    ws = await self._ensure_connected()
                except Conflict:
                    break  # ended meanwhile (_ensure_connected marked it)
                try:
                    await ws.send(json.dumps({"type": "stop"}))
                except ConnectionClosed:
                    await self._reconnected(ws)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no session-end after stop")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_ended_or_dropped(ws), remaining)
                if not self._ended.is_set() and time.monotonic() >= deadline:
                    raise TimeoutError("no session-end after stop")
            await self._catch_up()
        finally:
            await self.close()

    async def _wait_ended_or_dropped(self, ws: ClientConnection) -> None:
        ended = asyncio.ensure_future(self._ended.wait())
        dropped = asyncio.ensure_future(ws.wait_closed())
        try:
            await asyncio.wait({ended, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (ended, dropped):
                fut.cancel()
        if not self._ended.is_set():
            # Dropped before session-end: the reader reconnects (or learns it ended).
            await self._reconnected(ws)

    # -- events --

    async def events(self) -> AsyncIterator[Event]:
        """Every event from the server until the producer finishes (one consumer)."""
        while (event := await self._queue.get()) is not None:
            yield event
        self._queue.put_nowait(None)  # later calls end at once too

    async def _emit(self, event: Event) -> None:
        if event.is_final:
            seq = event.seq
            last = self.finals[-1].seq if self.finals else 0
            if seq is not None and last is not None and seq <= last:
                return  # already have it (replayed from the transcript)
            self.finals.append(event)
        if event.type == "session-end":
            self._ended.set()
        self._queue.put_nowait(event)
        await _call(self.on_event, event)

    async def _catch_up(self) -> None:
        """Finals persisted while no socket could deliver them, from the transcript."""
        if self.session_id is None:
            return
        last = (self.finals[-1].seq or 0) if self.finals else 0
        try:
            token = await self._reading_token()
            doc = await self.client.transcript(self.session_id, token=token)
        except (MCUSTTClientError, httpx.HTTPError):
            return  # best effort: the viewer and the transcript have every final anyway
        for line in doc["lines"]:
            if line["seq"] > last:
                data = {"type": "transcript", "isFinal": True, **line}
                await self._emit(Event(data, replayed=True))

    async def _reading_token(self) -> str | None:
        if self.client.tenant_key:
            return None  # the tenant key reads the transcript
        if self._read_token is None and self.session_id and self.owner_secret:
            tokens = await self.client.embed_token(self.session_id, owner_secret=self.owner_secret)
            self._read_token = tokens["subscribeToken"]
        return self._read_token

    # -- the socket --

    async def _reconnected(self, dead: ClientConnection) -> None:
        """Wait until the reader has dealt with ``dead`` (reconnected, or failed)."""
        with contextlib.suppress(Exception):
            await dead.wait_closed()
        reader = self._reader
        if reader is not None and self._ws is dead:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(reader)

    async def _ensure_connected(self) -> ClientConnection:
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            ws = self._ws
            if ws is not None and ws.state is State.OPEN:
                return ws
            if self._ended.is_set():
                raise Conflict(409, "SESSION_ENDED", "the session has ended")
            if self._closing:
                raise StreamClosed("CLOSED", "the producer is closed")
            reconnects = self.reconnects
            ws = await self._open_with_retries()
            if self.reconnects > reconnects:
                # Before the new socket's events (they wait in its buffer), so finals
                # stay in seq order: the dead socket's last ones are persisted by now
                # (the server releases a producer only after finalizing its audio).
                await self._catch_up()
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws), name="mcustt-producer-reader")
            return ws

    async def _open_with_retries(self) -> ClientConnection:
        reconnecting = self._ws is not None
        attempt = 0
        while True:
            if self._closing:
                raise StreamClosed("CLOSED", "the producer is closed")
            try:
                ws = await self._open()
                if reconnecting:
                    self.reconnects += 1
                return ws
            except MCUSTTClientError as exc:
                if exc.code == "SESSION_ENDED":
                    self._ended.set()  # ended elsewhere (DELETE, daily cap): nothing to resume
                    raise
                if attempt >= self.max_reconnect_attempts:
                    raise
                if exc.code in ("TOKEN_BURNED", "TOKEN_EXPIRED") and self.owner_secret:
                    delay = 0.0  # the next attempt mints a fresh token
                elif exc.code == "ALREADY_CONNECTED" or isinstance(
                    exc, RateLimited | Unavailable | ServerError
                ):
                    # ALREADY_CONNECTED: the server has not yet released our dead
                    # socket's claim (it does once the pipeline has finalized).
                    delay = exc.retry_after if exc.retry_after is not None else _backoff(attempt)
                else:
                    raise
            except (OSError, InvalidHandshake, TimeoutError, httpx.TransportError) as exc:
                # Unreachable or restarting server (the socket, or minting its token).
                if attempt >= self.max_reconnect_attempts:
                    raise StreamClosed("CONNECT_FAILED", f"cannot reach the server: {exc}") from exc
                delay = _backoff(attempt)
            attempt += 1
            await asyncio.sleep(min(delay, 10.0))

    async def _open(self) -> ClientConnection:
        """One connection attempt; returns after the server's ``ready``."""
        headers: dict[str, str] = {}
        if self.session_id is None:
            # Zero-ceremony: the tenant key opens a socket that creates the session.
            headers = self.client._auth("tenant")
            url = f"{self.client.ws_url}/ws/stt"
            if self._query:
                url += "?" + urlencode(self._query)
        else:
            if self._token is None:
                if not self.owner_secret:
                    raise StreamClosed("NO_OWNER_SECRET", "cannot mint an ingest token")
                minted = await self.client.ingest_token(self.session_id, self.owner_secret)
                self._token = minted["ingestToken"]
            url = f"{self.client.ws_url}/ws/stt?{urlencode({'token': self._token})}"
            # Single-use: whatever happens next, this token is spent.
            self._token = None
        try:
            ws = await connect(url, additional_headers=headers, open_timeout=15, max_size=2**22)
        except InvalidStatus as exc:
            response = exc.response
            raise error_from(
                response.status_code,
                bytes(response.body or b""),
                httpx.Headers(dict(response.headers)),
            ) from None
        try:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 15))
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise StreamClosed("NO_READY", f"no ready message: {exc!r}") from None
        if ready.get("type") != "ready":
            await ws.close()
            if ready.get("type") == "error":
                raise StreamClosed(str(ready.get("code")), str(ready.get("message")))
            raise StreamClosed("NO_READY", f"expected ready, got {ready!r}")
        self.ready = ready
        self.session_id = ready.get("sessionId") or self.session_id
        self.owner_secret = ready.get("ownerSecret") or self.owner_secret
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        """Read one socket's events; when it closes, decide: done, fatal, or reconnect."""
        fatal: dict[str, Any] | None = None
        try:
            async for raw in ws:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "error" and data.get("fatal"):
                    fatal = data
                await self._emit(Event(data))
        except ConnectionClosed:
            pass
        except Exception as exc:  # a broken callback must not hang the sender
            self._failure = StreamClosed("CLIENT_ERROR", repr(exc))
            await ws.close()
        code = ws.close_code
        if self._failure is not None or self._ended.is_set() or self._closing:
            self._finish()
            return
        if code in _FATAL_CLOSE or (fatal is not None and code != 1011):
            reason = (fatal or {}).get("code") or ws.close_reason or "CLOSED"
            message = (fatal or {}).get("message") or f"socket closed with {code}"
            self._failure = StreamClosed(str(reason), str(message), close_code=code)
            self._finish()
            return
        # Idle timeout, a network drop, a restarting server: reconnect now, so events
        # keep coming even when no audio is being sent.
        try:
            await self._ensure_connected()
        except Exception as exc:  # whatever stops the reconnect is the producer's failure
            if not self._ended.is_set() and self._failure is None:
                self._failure = (
                    exc
                    if isinstance(exc, MCUSTTClientError)
                    else StreamClosed("RECONNECT_FAILED", repr(exc))
                )
            self._finish()


# -- the viewer --------------------------------------------------------------------------------


@dataclass
class Viewer:
    """Events of one session from ``/ws/subscribe``, resuming after disconnects.

    ``async for event in client.viewer(session_id): ...`` ends after ``session-end``.
    Finals are yielded once each, in seq order: a reconnect asks for ``lastSeq`` (the
    last final seen) and anything at or below it is dropped.
    """

    client: Client
    session_id: str
    token: str | None = None
    last_seq: int | None = 0
    max_reconnect_attempts: int = 20
    reconnects: int = field(default=0, init=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _ws: ClientConnection | None = field(default=None, init=False, repr=False)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    async def _mint(self) -> str:
        tokens = await self.client.embed_token(self.session_id)
        return tokens["subscribeToken"]

    async def _connect(self) -> ClientConnection:
        if self.token is None:
            self.token = await self._mint()
        query = {"token": self.token}
        if self.last_seq is not None:
            query["lastSeq"] = str(self.last_seq)
        url = f"{self.client.ws_url}/ws/subscribe?{urlencode(query)}"
        try:
            return await connect(url, open_timeout=15, max_size=2**22)
        except InvalidStatus as exc:
            response = exc.response
            raise error_from(
                response.status_code,
                bytes(response.body or b""),
                httpx.Headers(dict(response.headers)),
            ) from None

    async def events(self) -> AsyncIterator[Event]:
        attempt = 0
        reminted = False
        while not self._closed:
            try:
                ws = await self._connect()
            except Unauthorized:
                # An expired token: mint another if the client can (tenant key), once.
                if self.client.tenant_key is None or reminted:
                    raise
                self.token, reminted = None, True
                continue
            except (
                RateLimited,
                Unavailable,
                ServerError,
                OSError,
                InvalidHandshake,
                TimeoutError,
            ) as exc:
                if attempt >= self.max_reconnect_attempts:
                    raise
                retry = getattr(exc, "retry_after", None)
                await asyncio.sleep(retry if retry is not None else _backoff(attempt))
                attempt += 1
                continue
            self._ws = ws
            try:
                async for raw in ws:
                    event = Event(json.loads(raw))
                    if (
                        event.is_transcript
                        and event.seq is not None
                        and self.last_seq is not None
                        and event.seq <= self.last_seq
                    ):
                        continue  # a final already yielded (or its stale interim)
                    if event.is_final and event.seq is not None:
                        self.last_seq = event.seq
                    attempt, reminted = 0, False
                    yield event
                    if event.type == "session-end":
                        return
            except ConnectionClosed:
                pass
            finally:
                await ws.close()
            if ws.close_code == 1003:
                raise StreamClosed("BAD_REQUEST", ws.close_reason or "closed", close_code=1003)
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(_backoff(attempt))
            attempt += 1
