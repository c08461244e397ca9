"""``wss /v1/stt/stream``: seed 000's (BizCrush's) live STT socket, a thin transport over
the session pipeline.

The seed's protocol: ``?api_key=…&format=json[&reduce_noise=true][&language_hints=ko,en]``;
a first text frame ``{"encoding": "pcm16"|"opus", "session_id"?, "language_hints"?}``;
the answer ``{"connected": true}``; binary audio; results
``{"chunk": {"id", "session_id", "text", "is_final"}}``. An authentication failure closes
with 1008, as the seed says; since a BizCrush client only reads close codes, every other
refusal is a close too (with mcustt's close code and the reason in words), after the
upgrade is accepted.

Everything else is ``/ws/stt``'s: the same per-IP attempt counting, admission (origin,
daily cap, session cap, the single producer claim), pipeline, idle timeout and release
(:mod:`mcustt.ingest.websocket`); this module only translates frames. The session is an
ordinary mcustt session (embed, subscribe, transcript, summary when it ends: ``stop``,
``DELETE``, or the retention sweep of abandoned sessions).

``session_id``: the seed lets the client name its session (``"my-session"``). Here an id
of one of the tenant's own sessions continues that session (it must be live, with no
producer connected); any other name is mapped to a session id derived from the tenant
and the name, so reconnecting with the same name continues the same session, and two
tenants' names never meet. Chunks carry the name the client gave (else the session id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketState

from mcustt import compat, events
from mcustt.bodies import loads, validate
from mcustt.errors import BadRequest, Conflict, FrameTooLarge, MCUSTTError
from mcustt.ingest.audio import MAX_CONTROL_BYTES
from mcustt.ingest.ogg import OpusIngest
from mcustt.ingest.websocket import (
    Admission,
    IngestConnection,
    admit_existing,
    admit_new,
    count_attempt,
)
from mcustt.pipeline import SessionPipeline
from mcustt.state import AppState, app_state
from mcustt.store.models import Tenant
from mcustt.wire import (
    CloseCode,
    ErrorCode,
    ProducerEvent,
    SessionCreate,
    V1ChunkEvent,
    V1Connected,
    V1StreamStart,
    parse_language_hints,
)
from mcustt.wsutil import close

log = structlog.get_logger(__name__)

#: how long the client has to send its start frame after the upgrade
START_TIMEOUT_S = 10.0
PROTOBUF_REFUSED = (
    "protobuf frames are not supported: add format=json to the URL for JSON text frames"
)
START_FIRST = 'send the JSON start frame first, e.g. {"encoding": "pcm16"}'
#: how long a reconnect waits for this node's previous connection to the same session
#: to finish (finalize its last utterance, give up the producer claim)
HANDOVER_WAIT_S = 10.0
#: Sessions whose compatible connection on this node is finishing, and the event set
#: when it has let go. The seed's client closes and may reconnect at once with the same
#: ``session_id``: its close is answered before the server has finalized, so without
#: this the reconnect would find the producer slot still held. (Process-wide on purpose:
#: session ids are unique, and a connection outlives any one request.)
_finishing: dict[str, asyncio.Event] = {}


async def stream_endpoint(ws: WebSocket) -> None:
    state = app_state(ws)
    query = ws.query_params
    key = query.get("api_key")
    try:
        await count_attempt(state, token=None, tenant_key=key, client_ip=state.client_ip(ws))
    except MCUSTTError as exc:
        await refuse(ws, exc.close_code, exc.message)
        return
    try:
        tenant = await compat.v1_tenant(state, key)
    except compat.V1Refused as exc:
        # The seed: "WebSocket closed with code 1008 on authentication failure".
        await refuse(ws, CloseCode.POLICY_VIOLATION, exc.error)
        return
    structlog.contextvars.bind_contextvars(tenant_id=tenant.id)
    if query.get("format") != "json":
        await refuse(ws, CloseCode.UNSUPPORTED_DATA, PROTOBUF_REFUSED)
        return
    try:
        reduce_noise = _flag(query.get("reduce_noise"), "reduce_noise")
        query_hints = _hints(",".join(query.getlist("language_hints")))
    except BadRequest as exc:
        await refuse(ws, exc.close_code, exc.message)
        return
    await ws.accept()
    try:
        start = await read_start(ws)
        if start is None:
            return  # the client left before saying anything
        hints = start.language_hints or query_hints
        label = start.session_id
        admission = await admit_named(
            state,
            ws,
            tenant,
            label,
            validate(
                SessionCreate,
                {"title": label, "languageHints": hints, "reduceNoise": reduce_noise},
            ),
        )
    except MCUSTTError as exc:
        await refuse(ws, exc.close_code, exc.message)
        return
    structlog.contextvars.bind_contextvars(session_id=admission.session.id)
    await CompatConnection(
        state, ws, admission, encoding=start.encoding, label=label or admission.session.id
    ).run()


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` and ``reason`` (accepting first: a close before the upgrade
    would be an HTTP 403, and the seed's clients read close codes)."""
    if ws.application_state == WebSocketState.CONNECTING:
        await ws.accept()
    await close(ws, code, reason)


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0", "no"):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise BadRequest(f'{name} is "true" or "false"')


def _hints(value: object) -> list[str]:
    try:
        return parse_language_hints(value)
    except ValueError as exc:
        raise BadRequest(f"language_hints: {exc}") from None


async def read_start(ws: WebSocket) -> V1StreamStart | None:
    """The start frame, or ``None`` when the client disconnected first.

    Raises:
        BadRequest: audio before it, no frame in time, or not the seed's JSON object.
    """
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=START_TIMEOUT_S)
    except TimeoutError:
        raise BadRequest(f"no start frame within {START_TIMEOUT_S:g} s; {START_FIRST}") from None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is None:
        raise BadRequest(START_FIRST)
    if len(text.encode()) > MAX_CONTROL_BYTES:
        raise FrameTooLarge("the start frame exceeds 8 KB")
    data = loads(text)
    if not isinstance(data, dict):
        raise BadRequest(START_FIRST)
    return validate(V1StreamStart, data)


def derived_session_id(tenant: Tenant, label: str) -> str:
    """The session id a client's own session name stands for: 10 letters and digits
    (the shape of every session id), a function of the tenant and the name only."""
    digest = hashlib.sha256(f"{tenant.id}\0{label}".encode()).digest()
    alnum = base64.b32encode(digest).decode().rstrip("=").lower()
    return alnum[:10]


async def admit_named(
    state: AppState, ws: WebSocket, tenant: Tenant, label: str | None, body: SessionCreate
) -> Admission:
    """Admit the producer to the session ``label`` names (see the module's docstring),
    through ``/ws/stt``'s admission: the same checks, caps and claim."""
    origin = ws.headers.get("origin")
    if label is None:
        return await admit_new(state, tenant, body, origin=origin)
    own = await state.sessions.get(label)
    if own is not None and own.tenant_id == tenant.id:
        return await admit_continued(state, tenant, label, origin=origin)
    session_id = derived_session_id(tenant, label)
    if await state.sessions.get(session_id) is not None:
        return await admit_continued(state, tenant, session_id, origin=origin)
    try:
        return await admit_new(state, tenant, body, origin=origin, session_id=session_id)
    except MCUSTTError:
        raise
    except Exception:
        # Two sockets named the same new session at once: the other one created it
        # (the insert hit its primary key), so this one is the second producer.
        if await state.sessions.get(session_id) is None:
            raise
        return await admit_existing(state, tenant, session_id, origin=origin)


async def admit_continued(
    state: AppState, tenant: Tenant, session_id: str, *, origin: str | None
) -> Admission:
    """:func:`admit_existing`, waiting for this node's previous connection to the session
    when it is still finishing (a reconnect right after a close); a producer that is
    really connected is refused at once."""
    try:
        return await admit_existing(state, tenant, session_id, origin=origin)
    except Conflict as exc:
        finishing = _finishing.get(session_id)
        if exc.code != ErrorCode.ALREADY_CONNECTED or finishing is None:
            raise
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finishing.wait(), timeout=HANDOVER_WAIT_S)
        return await admit_existing(state, tenant, session_id, origin=origin)


class CompatConnection(IngestConnection):
    """``/ws/stt``'s connection speaking the seed's frames. Audio is ``/ws/stt``'s too:
    PCM16 with the contract's checks, or Opus (raw packets or OGG/Opus, told apart by
    the first frame; the seed says mono) through the same decoder."""

    def __init__(
        self, state: AppState, ws: WebSocket, admission: Admission, *, encoding: str, label: str
    ) -> None:
        opus = OpusIngest(channels=1) if encoding == "opus" else None
        super().__init__(state, ws, admission, opus=opus)
        self.label = label

    def render(self, event: ProducerEvent) -> str | None:
        kind = event["type"]
        if kind == "ready":
            # ``/ws/stt``'s ready event is the seed's connection status.
            connected: V1Connected = {
                "connected": True,
                "mcustt": {k: str(v) for k, v in event.items() if k != "type"},
            }
            return events.dumps(connected)
        if kind == "transcript":
            ev: Any = event
            if ev.get("revised"):
                return None
            # Interims carry the seq their final will have: one id per utterance.
            chunk: V1ChunkEvent = {
                "chunk": {
                    "id": f"{self.session.id}-{ev['seq']}",
                    "session_id": self.label,
                    "text": ev["text"],
                    "is_final": bool(ev["isFinal"]),
                }
            }
            return events.dumps(chunk)
        if kind == "error":
            err: Any = event
            return events.dumps({"error": {"code": err["code"], "message": err["message"]}})
        return None  # language, pong, session-end: not in the seed's protocol

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            done = _finishing.pop(self.session.id, None)
            if done is not None:
                done.set()

    async def _receive_loop(self, pipeline: SessionPipeline) -> tuple[int, str, bool]:
        try:
            return await super()._receive_loop(pipeline)
        finally:
            # From here the connection only finalizes and lets go (see _finishing).
            _finishing.setdefault(self.session.id, asyncio.Event())
