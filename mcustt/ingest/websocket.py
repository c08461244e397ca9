"""``/ws/stt``: the MCU's PCM16 socket (§4, §5).

Admission happens before the upgrade is accepted, so every refusal is an HTTP status
with the error envelope (401 / 403 / 404 / 409 / 429). After that, transport problems
become the contract's close codes and everything else is the pipeline's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from mcustt import events, speakers, tenants
from mcustt.bodies import loads, validate
from mcustt.errors import (
    BadRequest,
    DailyCapReached,
    FrameTooLarge,
    MCUSTTError,
    RateLimited,
    Unauthorized,
)
from mcustt.ingest.audio import MAX_CONTROL_BYTES, check_frame
from mcustt.ingest.ogg import OPUS_RATES, OpusIngest
from mcustt.pipeline import SessionPipeline
from mcustt.state import AppState, app_state
from mcustt.store.models import Session, Tenant
from mcustt.tokens import random_id
from mcustt.wire import (
    CloseCode,
    CloseReason,
    ErrorCode,
    ProducerEvent,
    ReadyEvent,
    SessionCreate,
    Speaker,
    parse_language_hints,
)
from mcustt.words import wants_words
from mcustt.wsutil import close, reject

log = structlog.get_logger(__name__)

#: events queued for a producer that is not reading its socket, before echoes are dropped
OUTBOX = 1000


@dataclass
class Admission:
    session: Session
    tenant: Tenant
    producer_id: str
    ready: ReadyEvent
    #: the participant a participant-bound token feeds (None: the mixed producer)
    participant: Speaker | None = None


async def count_attempt(
    state: AppState, *, token: str | None, tenant_key: str | None, client_ip: str
) -> None:
    """Count an ingest attempt against the per-IP limits, before any other work.

    The cheapest check comes first, so that a flood of garbage (bad tokens, unparsable
    offers) is counted and then refused with 429 rather than parsed and verified. An
    attempt that would create its own session (zero-ceremony: a tenant key and no
    token) also spends from ``create_session``, as ``POST /api/sessions`` does.

    Even before that, a node that is draining or saturated refuses (503, issue 13):
    that costs nothing, and the producer is better served by another node at once.
    """
    state.gate.admit_producer()
    await state.limiter.hit("ws_upgrade", client_ip)
    if not token and tenant_key:
        await state.limiter.hit("create_session", client_ip)
    state.gate.expect_producer()


async def admit(
    state: AppState,
    *,
    token: str | None,
    tenant_key: str | None,
    origin: str | None,
    query: dict[str, str],
) -> Admission:
    """Check credentials, origin and caps and claim the producer slot, or raise the
    refusal. The caller has counted the attempt (:func:`count_attempt`).

    Shared by ``/ws/stt`` and WHIP: the same token rules, caps and 409. Every check
    comes before the token is burned, the session created or the producer claimed,
    so a refused attempt leaves its token usable.
    """
    producer_id = "prod_" + random_id(12)
    own = state.settings.public_url
    if token:
        claims = state.issuer.verify(token, scopes={"ingest"})
        tenant = await tenants.find(state.db, claims.tenant_id)
        if tenant is None or tenant.disabled:
            raise Unauthorized(
                "the tenant of this token is disabled or gone", code=ErrorCode.TENANT_DISABLED
            )
        # A browser (it sends Origin) on a page the tenant does not allow (§15).
        tenants.check_origin(tenant, origin, own=own)
        await check_daily_cap(state, tenant)
        # issue 15: ?language_hints on a token socket replaces the session's hints for
        # this connection; checked before the token is burned.
        hints = query_hints(query)
        state.recognizer.check_languages(hints)
        session = await state.sessions.claim_producer(
            claims.session_id,
            jti=claims.jti,
            producer_id=producer_id,
            tenant=tenant,
            participant_id=claims.participant_id,
        )
        if hints:
            session.language_hints = hints
        ready: ReadyEvent = {"type": "ready", "sessionId": session.id}
        if claims.participant_id is not None:
            # A participant's track: its name (from the token) is the speaker's name,
            # unless the owner named it already (the events carry the name as it is now).
            token_named = events.speaker(
                claims.participant_id, claims.participant_name or claims.participant_id
            )
            try:
                participant = await speakers.track_connected(
                    state.repo, state.hub, session.id, token_named
                )
            except Exception:
                await state.sessions.release_producer(session.id, producer_id, token_named["id"])
                raise
            return Admission(session, tenant, producer_id, ready, participant)
    elif tenant_key:
        # Zero-ceremony (§3 option B): the socket creates its own session.
        tenant = await tenants.authenticate(state.db, tenant_key)
        body = validate(
            SessionCreate,
            {
                "sourceLang": query.get("sourceLang") or None,
                "autoDetect": query.get("autoDetect", "true").lower() not in ("false", "0", "no"),
                "title": query.get("title") or None,
                "languageHints": query_hints(query) or None,
                "reduceNoise": _flag(query, "reduceNoise") or _flag(query, "reduce_noise"),
                # issue 17: absent: the tenant's default
                "profanityFilter": query.get("profanityFilter") or None,
            },
        )
        return await admit_new(state, tenant, body, origin=origin)
    else:
        raise Unauthorized(
            "send ?token=INGEST_TOKEN or an x-tenant-key header", code=ErrorCode.UNAUTHORIZED
        )
    return Admission(session, tenant, producer_id, ready)


async def admit_new(
    state: AppState,
    tenant: Tenant,
    body: SessionCreate,
    *,
    origin: str | None,
    session_id: str | None = None,
) -> Admission:
    """A tenant-key producer's own new session (zero-ceremony ``/ws/stt``, the compatible
    stream): origin and daily cap checked, the session created from ``body`` (with the
    id ``session_id`` when the caller derives one), the producer slot claimed."""
    producer_id = "prod_" + random_id(12)
    state.recognizer.check_languages(body.hints())
    tenants.check_origin(tenant, origin, own=state.settings.public_url)
    await check_daily_cap(state, tenant)
    created, doc = await state.sessions.create(
        tenant,
        title=body.title,
        source_lang=body.sourceLang,
        auto_detect=body.autoDetect,
        language_hints=body.hints(),
        keywords=body.keywords,
        reduce_noise=body.reduceNoise,
        profanity_filter=body.profanityFilter,
        session_id=session_id,
    )
    state.metrics.sessions_created.inc()
    session = await state.sessions.claim_producer(
        created.id, jti=None, producer_id=producer_id, tenant=tenant
    )
    ready: ReadyEvent = {
        "type": "ready",
        "sessionId": doc["sessionId"],
        "embedUrl": doc["embedUrl"],
        "embedToken": doc["embedToken"],
        "subscribeUrl": doc["subscribeUrl"],
        "subscribeToken": doc["subscribeToken"],
        "ownerSecret": doc["ownerSecret"],
    }
    return Admission(session, tenant, producer_id, ready)


async def admit_existing(
    state: AppState, tenant: Tenant, session_id: str, *, origin: str | None
) -> Admission:
    """A tenant-key producer continuing one of the tenant's live sessions (the
    compatible stream's ``session_id``): another tenant's session is 404, an ended one
    409, one with a producer connected 409, as for a token."""
    producer_id = "prod_" + random_id(12)
    await state.sessions.get_for_tenant(tenant, session_id)
    tenants.check_origin(tenant, origin, own=state.settings.public_url)
    await check_daily_cap(state, tenant)
    session = await state.sessions.claim_producer(
        session_id, jti=None, producer_id=producer_id, tenant=tenant
    )
    ready: ReadyEvent = {"type": "ready", "sessionId": session.id}
    return Admission(session, tenant, producer_id, ready)


def query_hints(query: dict[str, str]) -> list[str]:
    """Candidate languages of a socket URL (issue 15): ``language_hints`` (or
    ``languageHints``) as ``ko,en``, else the legacy single ``language_hint``.

    Raises:
        BadRequest: a code that is not a language code.
    """
    raw = query.get("language_hints") or query.get("languageHints") or query.get("language_hint")
    try:
        return parse_language_hints(raw[:2000] if raw else None)
    except ValueError as exc:
        raise BadRequest(f"language_hints: {exc}") from None


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class AudioOptions:
    """How a ``/ws/stt`` producer's binary frames are encoded (issue 15)."""

    encoding: str = "pcm16"
    channels: int = 2

    @classmethod
    def from_query(cls, query: dict[str, str]) -> AudioOptions:
        """``?encoding=pcm16`` (default, the contract's frames) or ``?encoding=opus``
        (raw packets or OGG/Opus), with ``sample_rate`` (an Opus rate, informational:
        Opus carries its own timing) and ``channels`` (1 or 2, raw packets).

        Raises:
            BadRequest: an unknown encoding, rate or channel count.
        """
        encoding = query.get("encoding", "pcm16").lower()
        if encoding in ("pcm", "pcm16", "linear16"):
            return cls()
        if encoding != "opus":
            raise BadRequest("encoding must be pcm16 (the default) or opus")
        rate = query.get("sample_rate", "48000")
        if rate != "auto" and (not rate.isdigit() or int(rate) not in OPUS_RATES):
            raise BadRequest(
                "sample_rate for opus is one of 8000, 12000, 16000, 24000, 48000 (or auto)"
            )
        channels = query.get("channels", "2")
        if channels not in ("1", "2"):
            raise BadRequest("channels for opus is 1 or 2")
        return cls(encoding="opus", channels=int(channels))


async def check_daily_cap(state: AppState, tenant: Tenant) -> None:
    used = await state.usage.total(tenant.id)
    if used >= tenant.daily_minutes_cap * 60_000:
        raise RateLimited(
            f"the tenant's daily audio cap of {tenant.daily_minutes_cap} minutes is reached",
            code=ErrorCode.DAILY_CAP_REACHED,
            retry_after=3600,
        )


async def ingest_endpoint(ws: WebSocket) -> None:
    state = app_state(ws)
    token, tenant_key = ws.query_params.get("token"), ws.headers.get("x-tenant-key")
    try:
        await count_attempt(
            state, token=token, tenant_key=tenant_key, client_ip=state.client_ip(ws)
        )
        audio = AudioOptions.from_query(dict(ws.query_params))
        wants_words(ws.query_params.get("words"))  # issue 17: a bad value, before accept
        admission = await admit(
            state,
            token=token,
            tenant_key=tenant_key,
            origin=ws.headers.get("origin"),
            query=dict(ws.query_params),
        )
    except MCUSTTError as exc:
        await reject(ws, exc)
        return
    structlog.contextvars.bind_contextvars(
        session_id=admission.session.id, tenant_id=admission.tenant.id
    )
    await ws.accept()
    opus = OpusIngest(channels=audio.channels) if audio.encoding == "opus" else None
    await IngestConnection(state, ws, admission, opus=opus).run()


class IngestConnection:
    def __init__(
        self,
        state: AppState,
        ws: WebSocket,
        admission: Admission,
        *,
        opus: OpusIngest | None = None,
    ) -> None:
        self.state = state
        #: issue 15: ``?encoding=opus``: the decoder in front of the pipeline
        self.opus = opus
        self.ws = ws
        self.admission = admission
        self.session = admission.session
        self.outbox: asyncio.Queue[ProducerEvent | None] = asyncio.Queue(OUTBOX)
        self.dropped = 0
        self.pipeline: SessionPipeline | None = None
        self.last_audio = time.monotonic()
        self.stopping = False
        #: a participant's producer sent ``stop``: its track ends, the session does not
        self.participant_left = False
        self.session_ended = asyncio.Event()
        #: issue 17: finals keep their word timings on this socket (``?words=1``, or a
        #: session created with ``words: true``)
        self.words = wants_words(
            ws.query_params.get("words"), session_default=self.session.words, strict=False
        )

    def sink(self, event: ProducerEvent) -> None:
        if event["type"] == "session-end":
            self.session_ended.set()
        try:
            self.outbox.put_nowait(event)
        except asyncio.QueueFull:
            # The producer is not reading its socket. Finals are persisted and on the
            # subscribe socket; dropping its echo must not stall recognition.
            self.dropped += 1

    async def run(self) -> None:
        state, session = self.state, self.session
        sender = asyncio.create_task(self._send_loop(), name=f"ingest-send-{session.id}")
        close_code: int = CloseCode.NORMAL
        close_reason: str = ""
        ended = False
        try:
            self.sink(self.admission.ready)
            self.pipeline = await state.pipelines.open(
                session,
                self.admission.tenant,
                self.admission.producer_id,
                self.sink,
                participant=self.admission.participant,
            )
            log.info("producer connected")
            close_code, close_reason, ended = await self._receive_loop(self.pipeline)
        except MCUSTTError as exc:
            close_code, close_reason = exc.close_code, exc.code
            self.sink(events.error(exc.code, exc.message, fatal=True))
        finally:
            if self.pipeline is not None:
                await self.pipeline.close()  # finalize: the last final is persisted
                failure = self.pipeline.failure
                if failure is not None and not ended:
                    close_code, close_reason = failure.close_code, failure.code
                    self.sink(events.error(failure.code, failure.message, fatal=True))
                    if isinstance(failure, DailyCapReached):
                        await state.pipelines.end_session(session, reason="daily-cap")
                await state.pipelines.release(self.pipeline, self.admission.producer_id)
            # Flush what the producer is owed (last final, session-end), then close.
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(None)
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(sender), timeout=5)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            await close(self.ws, close_code, close_reason)
            log.info(
                "producer disconnected", code=close_code, reason=close_reason, dropped=self.dropped
            )

    async def _send_loop(self) -> None:
        while True:
            event = await self.outbox.get()
            if event is None:
                return
            text = self.render(event)
            if text is not None:
                await self.ws.send_text(text)

    def render(self, event: ProducerEvent) -> str | None:
        """The frame an event becomes on this socket (``None``: not sent). A subclass
        speaking another wire (the compatible stream) overrides this."""
        return events.dumps(event if self.words else events.without_words(event))

    async def audio(self, pipeline: SessionPipeline, data: bytes) -> None:
        """One binary frame: PCM16 (the contract's checks), pushed to the pipeline. A
        subclass with another audio encoding overrides this."""
        if self.opus is not None:
            # Opus has its own checks (packet and Ogg framing, see mcustt.ingest.ogg)
            pcm = self.opus.decode(data)
            if pcm:
                await pipeline.push(pcm)
            return
        check_frame(data)
        if data:
            await pipeline.push(data)

    async def _receive_loop(self, pipeline: SessionPipeline) -> tuple[int, str, bool]:
        """Returns (close code, reason, session ended).

        Frames are received by one plain loop (no task or timer per frame: this is the
        hot path); a watchdog task ends it on idle timeout or when the pipeline stops.
        """
        self.last_audio = time.monotonic()
        rx = asyncio.create_task(self._rx(pipeline), name=f"ingest-rx-{self.session.id}")
        wd = asyncio.create_task(self._watchdog(pipeline), name=f"ingest-wd-{self.session.id}")
        try:
            done, _ = await asyncio.wait({rx, wd}, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in (rx, wd):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task

    async def _rx(self, pipeline: SessionPipeline) -> tuple[int, str, bool]:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return CloseCode.NORMAL, "", False
            data = message.get("bytes")
            if data is not None:
                if data:
                    self.last_audio = time.monotonic()
                await self.audio(pipeline, data)
                continue
            if await self._control(message.get("text") or ""):
                return CloseCode.NORMAL, CloseReason.STOP, not self.participant_left

    async def _watchdog(self, pipeline: SessionPipeline) -> tuple[int, str, bool]:
        idle_s = self.state.settings.ingest_idle_timeout_s
        while True:
            remaining = self.last_audio + idle_s - time.monotonic()
            if remaining <= 0:
                # The session stays live: the producer may resume with a fresh token.
                return CloseCode.NORMAL, CloseReason.IDLE_TIMEOUT, False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pipeline.finished.wait(), timeout=remaining)
                break
        if pipeline.failure is not None:
            return CloseCode.INTERNAL_ERROR, CloseReason.PIPELINE_STOPPED, False
        if self.stopping:
            # Our own stop is ending the session; the receive loop reports it.
            await asyncio.Event().wait()
        # Ended from elsewhere (DELETE, another node): wait for the session-end event
        # so the producer gets it before the close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session_ended.wait(), timeout=10)
        return CloseCode.NORMAL, CloseReason.SESSION_ENDED, True

    async def _control(self, text: str) -> bool:
        """Handle a control message; True when it was ``stop`` (session ended)."""
        if len(text.encode()) > MAX_CONTROL_BYTES:
            raise FrameTooLarge("control message exceeds 8 KB")
        try:
            msg = parse_control(text)
        except BadRequest as exc:
            self.sink(events.error(ErrorCode.BAD_REQUEST, exc.message, fatal=False))
            return False
        kind = msg["type"]
        if kind == "ping":
            ts = msg.get("ts")
            if isinstance(ts, dict | list):
                # Echoed, a structure as deep as the parser allows could be deeper than
                # the encoder allows, and the send loop would die on it.
                self.sink(
                    events.error(ErrorCode.BAD_REQUEST, "a ping's ts is a number", fatal=False)
                )
                return False
            self.sink(events.pong(ts))
            return False
        if kind == "stop":
            if self.admission.participant is not None:
                # One participant leaving does not end everyone's session: its track
                # is finalized and its claim released; the session stays live.
                self.participant_left = True
                return True
            self.stopping = True
            await self.state.pipelines.end_session(self.session, reason="stop")
            return True
        self.sink(
            events.error(
                ErrorCode.UNKNOWN_CONTROL, f"unknown control message type {kind!r}", fatal=False
            )
        )
        return False


def parse_control(text: str) -> dict[str, Any]:
    """A control message: a JSON object with a string ``type``, else 400 (non-fatal).

    Strict JSON: ``NaN``/``Infinity`` and floats that overflow to them are refused
    (echoed in a pong they would be invalid JSON for the producer's parser); nesting
    too deep for the parser and integers past its digit limit are refused too rather
    than escaping as an error that ends the connection.
    """
    msg = loads(text)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BadRequest("a control message is a JSON object with a string 'type'")
    return msg
