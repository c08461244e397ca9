"""``/transcribe``: the Jitsi bridge (the opus-transcriber-proxy protocol), issue 14.

A Jitsi videobridge exports a conference's audio to one WebSocket: every participant's
Opus packets, tagged ``<endpointId>-<ssrc>``, as JSON messages. This adapter turns each
tag into a participant track of the meeting's mcustt session (one pipeline per track,
through the same claim and pipeline API as a participant-bound ``/ws/stt`` producer) and
sends each track's transcripts back in the proxy's ``transcription-result`` shape.

What the peers send, as read in their sources (public repositories, read 2026-12-02):

* jitsi/jitsi-videobridge, ``jvb/src/main/kotlin/org/jitsi/videobridge/export/``:
  ``MediaJsonSerializer.kt`` (commit 01e29a61) and the older ``MediaJsonEncoder.kt``
  (7417a4a7), ``Exporter.kt`` (3b6016ba), ``ExporterWrapper.kt`` (02c92e84). A ``start``
  per SSRC (tag ``"$endpointId-$ssrc"``, ``mediaFormat`` = the payload type's
  ``PayloadTypeEncoding.name``, i.e. ``"OPUS"``, 48000, 2 channels, optional
  ``parameters``; ``customParameters.endpointId``), then a ``media`` per RTP packet:
  ``chunk`` = the extended RTP sequence number (it starts anywhere, not at 0),
  ``timestamp`` = RTP time at 48 kHz relative to the exporter's start, ``payload`` =
  base64 of the RTP payload (one Opus packet). The URL and optional HTTP headers come
  from Jicofo (``jicofo.transcription.url-template`` with ``{{MEETING_ID}}``, and
  ``jicofo.transcription.http-headers``, jitsi/jicofo reference.conf 00e73cc1).
* Jitsi's mediajson library, ``org.jitsi.mediajson`` ``MediaJson.kt`` (the version with
  ``Start.timestamp``, ``Stop``/``MediaInfo``, ``Media.audioLevel``/``vad``, ``InfoEvent``,
  ``SourcesEvent``, ``SessionEndEvent``) and its ``MediaJsonTest.kt``: the top-level
  ``sequenceNumber``, ``chunk`` and ``timestamp`` are serialized as strings and parsed
  from strings or numbers; ``ping``/``pong`` carry an int ``id``; ``stop`` ends one tag's
  stream; ``session-end``, ``sources`` and ``info`` may come from the bridge; unknown
  properties are ignored.
* jitsi/opus-transcriber-proxy ``README.md`` (04f48e3a), ``src/transcriberproxy.ts``
  (01de848d) and ``src/OutgoingConnection.ts`` (02bbf814, be6dda05): query
  ``sessionId``, ``sendBack``, ``sendBackInterim``, ``lang`` (and ``encoding``,
  ``provider``, ignored here); ``ping`` answered ``{"event":"pong","id":N}`` (the id
  only when it is a number); results ``{"transcript":[{"confidence"?,"text"}],
  "is_interim","message_id","type":"transcription-result","event":"transcription-result",
  "participant":{"id","ssrc"?},"timestamp","language"?}``, the participant parsed from
  the tag with ``^([0-9a-fA-F]+)-([0-9]+)$``. The proxy drops media of a tag with no
  ``start``; here it starts the track implicitly (and logs it).

Decisions: the participant (speaker) id is the endpoint id, so a participant whose SSRC
changes keeps one speaker and one track (the new SSRC's packets get a new decoder);
results go back only with ``sendBack=true`` (interims only with ``sendBackInterim=true``),
as the proxy does. A refused connection is accepted and closed with a close code and a
reason naming the error code (the videobridge logs close status and reason; an upgrade
refused with an HTTP status shows there only as a failed upgrade). Nothing a peer sends
ends the socket except a frame over 1 MB (1009) or ``session-end``; every other problem
is logged (at a bounded rate) and skipped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from mcustt import bridges, wire
from mcustt.admission import NodeDraining
from mcustt.bodies import loads
from mcustt.errors import (
    BadRequest,
    Conflict,
    DailyCapReached,
    FrameTooLarge,
    MCUSTTError,
    RateLimited,
    Unauthorized,
)
from mcustt.events import dumps
from mcustt.ingest.audio import MAX_FRAME_BYTES
from mcustt.ingest.opus import OpusDecoder, ReorderBuffer
from mcustt.ingest.websocket import check_daily_cap
from mcustt.pipeline import SessionPipeline
from mcustt.state import AppState, app_state
from mcustt.store.models import BridgeKey, Session, Tenant
from mcustt.tokens import random_id
from mcustt.wire import CloseCode, CloseReason, ErrorCode, ProducerEvent
from mcustt.wsutil import close

log = structlog.get_logger(__name__)

#: results and pongs queued for a bridge that is not reading, before they are dropped
OUTBOX = 1000
#: tracks one bridge socket may open (a conference's speaking participants)
MAX_TRACKS = 100
#: a base64 payload larger than this is not one Opus packet (at most 1275 bytes a frame,
#: 120 ms a packet)
MAX_PAYLOAD_CHARS = 16 * 1024
#: a tag (and a meeting id) longer than this is refused
MAX_TAG_CHARS = 200
#: complaints logged per socket per minute (a broken peer must not flood the log)
COMPLAINTS_PER_MINUTE = 20
#: a track whose claim was refused (its previous socket still holds it, the tenant is
#: at its ingest cap) is tried again after this; its media is dropped meanwhile
RETRY_CLAIM_S = 1.0

_TAG = re.compile(r"^([0-9a-fA-F]+)-([0-9]+)$")
_PARTICIPANT_ID = re.compile(wire.PARTICIPANT_ID_PATTERN)
_LANG = re.compile(wire.LANG_PATTERN)
_INT = re.compile(r"^-?[0-9]{1,19}$")


def participant_of(tag: str, endpoint_id: object = None) -> tuple[str, str | None]:
    """(participant id, ssrc) of a tag, as the proxy parses it; the ``start`` message's
    ``customParameters.endpointId`` wins when it is a valid id. An id the ``speaker``
    column cannot hold becomes a stable digest of the tag."""
    match = _TAG.match(tag)
    pid, ssrc = (match[1], match[2]) if match else (tag, None)
    if isinstance(endpoint_id, str) and _PARTICIPANT_ID.match(endpoint_id):
        pid = endpoint_id
    if not _PARTICIPANT_ID.match(pid):
        pid = "t_" + hashlib.sha256(tag.encode()).hexdigest()[:16]
    return pid, ssrc


def as_int(value: object) -> int | None:
    """A mediajson number: an int, or a string of digits (how the videobridge sends
    ``chunk``, ``timestamp`` and ``sequenceNumber``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    return None


def decode_run(decoder: OpusDecoder, items: list[bytes | None]) -> list[bytes]:
    """PCM for packets in order; each run of lost ones (``None``) is one gap of silence
    (capped by :data:`mcustt.ingest.opus.MAX_GAP_MS`)."""
    out: list[bytes] = []
    lost = 0
    for item in items:
        if item is None:
            lost += 1
            continue
        if lost:
            out.append(decoder.conceal(lost))
            lost = 0
        out.append(decoder.decode(item))
    if lost:
        out.append(decoder.conceal(lost))
    return [pcm for pcm in out if pcm]


def flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Options:
    meeting: str
    send_back: bool
    send_back_interim: bool
    lang: str | None


class Complaints:
    """Logs a peer's problems at a bounded rate, counting what it had to leave out."""

    def __init__(self, per_minute: int = COMPLAINTS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.logged = 0
        self.suppressed = 0
        self.total = 0

    def __call__(self, event: str, **fields: Any) -> None:
        self.total += 1
        now = time.monotonic()
        if now - self.window >= 60:
            if self.suppressed:
                log.warning("jitsi bridge complaints suppressed", count=self.suppressed)
            self.window, self.logged, self.suppressed = now, 0, 0
        if self.logged >= self.per_minute:
            self.suppressed += 1
            return
        self.logged += 1
        log.warning(event, **fields)


@dataclass
class Track:
    """One participant of the meeting, as this socket feeds it."""

    participant: wire.Speaker
    ssrc: str | None
    channels: int = 2
    pipeline: SessionPipeline | None = None
    producer_id: str = ""
    #: monotonic time before which a refused claim is not retried
    retry_at: float = 0.0
    supported: bool = True
    #: per tag (an SSRC change starts a new stream): its decoder and reorder window
    streams: dict[str, tuple[OpusDecoder, ReorderBuffer]] = field(default_factory=dict)
    current_tag: str = ""
    #: the id of the line being spoken (its interims and final share it)
    message_id: str | None = None
    watcher: asyncio.Task[None] | None = None
    dropped: int = 0


async def transcribe_endpoint(ws: WebSocket) -> None:
    state = app_state(ws)
    query = ws.query_params
    try:
        state.gate.admit_producer()  # issue 13: draining or saturated: another node
        await state.limiter.hit("ws_upgrade", state.client_ip(ws))
        state.gate.expect_producer()
        secret = query.get("key")
        if not secret:
            scheme, _, value = ws.headers.get("authorization", "").partition(" ")
            secret = value.strip() if scheme.lower() == "bearer" else None
        key, tenant = await state.bridges.authenticate(secret)
        options = parse_options(dict(query))
        await check_daily_cap(state, tenant)
        structlog.contextvars.bind_contextvars(tenant_id=tenant.id)
        session = await state.bridges.resolve(tenant, options.meeting, lang=options.lang)
    except MCUSTTError as exc:
        log.info("jitsi bridge refused", code=exc.code)
        await ws.accept()
        await close(ws, exc.close_code, f"{exc.code}: {exc.message}")
        return
    structlog.contextvars.bind_contextvars(session_id=session.id)
    await ws.accept()
    await BridgeConnection(state, ws, key, tenant, session, options).run()


def parse_options(query: dict[str, str]) -> Options:
    meeting = query.get("sessionId") or ""
    if not meeting or len(meeting) > MAX_TAG_CHARS or not meeting.isprintable():
        raise BadRequest(
            f"sessionId (the meeting id) is required: 1 to {MAX_TAG_CHARS} printable characters"
        )
    lang = query.get("lang") or None
    if lang is not None and (len(lang) > 35 or not _LANG.match(lang)):
        log.info("jitsi bridge: lang ignored (not a language code)")
        lang = None
    return Options(
        meeting=meeting,
        send_back=flag(query.get("sendBack")),
        send_back_interim=flag(query.get("sendBackInterim")),
        lang=lang,
    )


class BridgeConnection:
    def __init__(
        self,
        state: AppState,
        ws: WebSocket,
        key: BridgeKey,
        tenant: Tenant,
        session: Session,
        options: Options,
    ) -> None:
        self.state = state
        self.ws = ws
        self.key = key
        self.tenant = tenant
        self.session = session
        self.options = options
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX)
        self.dropped = 0
        self.tracks: dict[str, Track] = {}
        #: tag → participant id
        self.tags: dict[str, str] = {}
        self.complain = Complaints()
        #: set to (close code, reason) when something other than the peer ends the socket
        self.stop_with: tuple[int, str] | None = None
        self.stopped = asyncio.Event()
        self.closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        state = self.state
        sender = asyncio.create_task(self._send_loop(), name=f"jitsi-send-{self.session.id}")
        keeper = asyncio.create_task(self._keep(), name=f"jitsi-keep-{self.session.id}")
        rx = asyncio.create_task(self._rx(), name=f"jitsi-rx-{self.session.id}")
        stop = asyncio.create_task(self.stopped.wait(), name=f"jitsi-stop-{self.session.id}")
        code: int = CloseCode.NORMAL
        reason = ""
        await state.bridges.renew(self.tenant.id, self.options.meeting)
        log.info("jitsi bridge connected", meeting_chars=len(self.options.meeting))
        try:
            done, _ = await asyncio.wait({rx, keeper, stop}, return_when=asyncio.FIRST_COMPLETED)
            if rx in done and not rx.cancelled() and rx.exception() is not None:
                exc = rx.exception()
                if isinstance(exc, MCUSTTError):
                    code, reason = exc.close_code, exc.code
                elif not isinstance(exc, WebSocketDisconnect):
                    log.error("jitsi bridge receive failed", error=repr(exc))
                    code, reason = CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL
            if self.stop_with is not None:
                code, reason = self.stop_with
        finally:
            self.closing = True
            for task in (rx, keeper, stop):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for track in list(self.tracks.values()):
                try:
                    await self._close_track(track)
                except Exception as exc:  # one track's failure must not keep the others
                    log.error("jitsi track release failed", error=repr(exc))
            with contextlib.suppress(asyncio.QueueFull):
                self.outbox.put_nowait(None)
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(sender), timeout=5)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            await close(self.ws, code, reason)
            with contextlib.suppress(Exception):
                fresh = await state.sessions.get(self.session.id)
                if fresh is not None and fresh.status == "live":
                    await state.bridges.disconnected(
                        self.tenant.id, self.options.meeting, self.session
                    )
            log.info(
                "jitsi bridge disconnected",
                code=code,
                reason=reason,
                tracks=len(self.tracks),
                dropped=self.dropped,
                complaints=self.complain.total,
            )

    def stop(self, code: int, reason: str) -> None:
        if self.stop_with is None:
            self.stop_with = (code, reason)
        self.stopped.set()

    async def _keep(self) -> None:
        """Renew the meeting's lease; notice a revoked credential or an ended session."""
        key_hash = self.key.key_hash
        while True:
            await asyncio.sleep(bridges.LEASE_RENEW_S)
            with contextlib.suppress(Exception):
                if not await self.state.bridges.still_valid(self.key.id, key_hash):
                    self.stop(CloseCode.POLICY_VIOLATION, ErrorCode.BRIDGE_KEY_REVOKED)
                    return
                fresh = await self.state.sessions.get(self.session.id)
                if fresh is None or fresh.status != "live":
                    self.stop(CloseCode.NORMAL, CloseReason.SESSION_ENDED)
                    return
                await self.state.bridges.renew(self.tenant.id, self.options.meeting)

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            await self.ws.send_text(dumps(message))

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            # The bridge is not reading: finals are persisted and on every viewer's feed.
            self.dropped += 1

    # -- receiving -------------------------------------------------------------------------

    async def _rx(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                if len(data) > MAX_FRAME_BYTES:
                    raise FrameTooLarge(f"frame of {len(data)} bytes exceeds 1 MB")
                self.complain("jitsi bridge: binary frame skipped", bytes=len(data))
                continue
            if len(text) > MAX_FRAME_BYTES:
                raise FrameTooLarge(f"message of {len(text)} characters exceeds 1 MB")
            try:
                msg = loads(text)
            except BadRequest as exc:
                self.complain("jitsi bridge: malformed JSON skipped", error=exc.message[:200])
                continue
            if not isinstance(msg, dict):
                self.complain("jitsi bridge: message is not a JSON object")
                continue
            await self._handle(msg)
            if self.stopped.is_set():
                return

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("event")
        if kind == "media":
            await self._media(msg.get("media"))
        elif kind == "ping":
            pong: wire.JitsiPong = {"event": "pong"}
            ping_id = msg.get("id")
            if isinstance(ping_id, int) and not isinstance(ping_id, bool) and abs(ping_id) < 2**63:
                pong["id"] = ping_id
            self.send(cast(dict[str, Any], pong))
        elif kind == "start":
            await self._start(msg.get("start"))
        elif kind == "stop":
            await self._stop(msg.get("stop"))
        elif kind == "session-end":
            log.info("jitsi bridge: session-end received")
            for track in list(self.tracks.values()):
                await self._close_track(track)
            fresh = await self.state.sessions.get(self.session.id)
            if fresh is not None:
                await self.state.pipelines.end_session(fresh, reason="jitsi-session-end")
            self.stop(CloseCode.NORMAL, CloseReason.SESSION_ENDED)
        elif kind in ("info", "sources", "pong"):
            log.debug("jitsi bridge: informational message", kind=kind)
        else:
            shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
            self.complain("jitsi bridge: unknown event skipped", kind=shown)

    async def _start(self, start: object) -> None:
        if not isinstance(start, dict):
            self.complain("jitsi bridge: start without a start object")
            return
        tag = start.get("tag")
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS:
            self.complain("jitsi bridge: start without a usable tag")
            return
        fmt = start.get("mediaFormat")
        fmt = fmt if isinstance(fmt, dict) else {}
        encoding = fmt.get("encoding")
        channels = as_int(fmt.get("channels"))
        custom = start.get("customParameters")
        custom = custom if isinstance(custom, dict) else {}
        track = self._track_for(tag, endpoint_id=custom.get("endpointId"), name=custom.get("name"))
        if track is None:
            return
        if channels in (1, 2):
            track.channels = channels
        if isinstance(encoding, str) and encoding.lower() != "opus":
            track.supported = False
            self.complain(
                "jitsi bridge: unsupported encoding, track skipped", encoding=encoding[:40]
            )
            return
        track.supported = True
        await self._ensure_open(track)

    async def _stop(self, stop: object) -> None:
        tag = stop.get("tag") if isinstance(stop, dict) else None
        pid = self.tags.get(tag) if isinstance(tag, str) else None
        if pid is None:
            self.complain("jitsi bridge: stop for an unknown tag")
            return
        track = self.tracks.get(pid)
        if track is not None and track.current_tag == tag:
            # The participant's stream ended: finalize what it said (a later start or
            # media of the participant opens the track again).
            await self._close_track(track)
            self.tracks.pop(pid, None)

    async def _media(self, media: object) -> None:
        if not isinstance(media, dict):
            self.complain("jitsi bridge: media without a media object")
            return
        tag, payload = media.get("tag"), media.get("payload")
        if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_CHARS:
            self.complain("jitsi bridge: media without a usable tag")
            return
        if not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_CHARS:
            self.complain("jitsi bridge: media without a usable payload")
            return
        try:
            packet = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.complain("jitsi bridge: payload is not base64")
            return
        pid = self.tags.get(tag)
        track = self.tracks.get(pid) if pid is not None else None
        if track is None:
            self.complain("jitsi bridge: media before start; starting the track", tag=tag[:80])
            track = self._track_for(tag, endpoint_id=None, name=None)
            if track is None:
                return
        if not track.supported or not packet:
            return
        if not await self._ensure_open(track):
            track.dropped += 1
            return
        pipeline = track.pipeline
        assert pipeline is not None
        decoder, reorder = self._stream(track, tag)
        chunk = as_int(media.get("chunk"))
        ready: list[bytes | None] = [packet] if chunk is None else reorder.push(chunk, packet)
        for pcm in decode_run(decoder, ready):
            await pipeline.push(pcm)

    def _stream(self, track: Track, tag: str) -> tuple[OpusDecoder, ReorderBuffer]:
        stream = track.streams.get(tag)
        if stream is None:
            # A new SSRC of the participant: a fresh decoder state (the old one is kept
            # while its late packets may still come, a handful at most).
            if len(track.streams) >= 4:
                track.streams.pop(next(iter(track.streams)))
            stream = (OpusDecoder(channels=track.channels), ReorderBuffer())
            track.streams[tag] = stream
        track.current_tag = tag
        return stream

    def _track_for(self, tag: str, *, endpoint_id: object, name: object) -> Track | None:
        pid = self.tags.get(tag)
        if pid is None:
            pid, _ = participant_of(tag, endpoint_id)
        _, ssrc = participant_of(tag)
        track = self.tracks.get(pid)
        if track is None:
            if len(self.tracks) >= MAX_TRACKS:
                self.complain("jitsi bridge: too many tracks, tag skipped", limit=MAX_TRACKS)
                return None
            shown = name if isinstance(name, str) and 0 < len(name) <= 100 else pid
            track = Track(participant={"id": pid, "name": shown}, ssrc=ssrc)
            self.tracks[pid] = track
        if tag not in self.tags:
            if len(self.tags) >= 4 * MAX_TRACKS:
                self.complain("jitsi bridge: too many tags, tag skipped", limit=4 * MAX_TRACKS)
                return None
            self.tags[tag] = pid
        track.ssrc = ssrc
        return track

    # -- tracks ----------------------------------------------------------------------------

    async def _ensure_open(self, track: Track) -> bool:
        """The track's pipeline is running (claimed and opened now if need be)."""
        if track.pipeline is not None:
            return True
        if self.closing or time.monotonic() < track.retry_at:
            return False
        state, pid = self.state, track.participant["id"]
        producer_id = "prod_" + random_id(12)
        try:
            session = await state.sessions.claim_producer(
                self.session.id,
                jti=None,
                producer_id=producer_id,
                tenant=self.tenant,
                participant_id=pid,
            )
            pipeline = await state.pipelines.open(
                session,
                self.tenant,
                producer_id,
                lambda event: self._on_event(track, event),
                participant=track.participant,
            )
        except (Conflict, RateLimited) as exc:
            if exc.code == ErrorCode.SESSION_ENDED:
                self.stop(CloseCode.NORMAL, CloseReason.SESSION_ENDED)
                return False
            # The participant's previous socket still holds the track (a reconnect
            # before its release reached the database), or the tenant is at its cap.
            track.retry_at = time.monotonic() + (
                RETRY_CLAIM_S if exc.code == ErrorCode.ALREADY_CONNECTED else 30.0
            )
            self.complain("jitsi bridge: track not claimed yet", code=exc.code)
            return False
        except (DailyCapReached, Unauthorized) as exc:
            self.stop(exc.close_code, exc.code)
            return False
        except MCUSTTError as exc:
            track.retry_at = time.monotonic() + 30.0
            self.complain("jitsi bridge: track could not open", code=exc.code)
            return False
        track.pipeline, track.producer_id = pipeline, producer_id
        # Packets dropped while the track was closed are not loss: start the numbering
        # afresh rather than fill the gap with silence.
        track.streams.clear()
        track.watcher = asyncio.create_task(
            self._watch(track, pipeline), name=f"jitsi-track-{self.session.id}"
        )
        log.info("jitsi track opened", participant_id=pid, tracks=len(self.tracks))
        return True

    async def _watch(self, track: Track, pipeline: SessionPipeline) -> None:
        """A track's pipeline stopped by itself: the session ended elsewhere, the
        daily cap, or the recognizer failed."""
        await pipeline.finished.wait()
        if self.closing or track.pipeline is not pipeline:
            return
        failure = pipeline.failure
        if failure is None:
            self.stop(CloseCode.NORMAL, CloseReason.SESSION_ENDED)
        elif isinstance(failure, DailyCapReached):
            await self.state.pipelines.end_session(self.session, reason="daily-cap")
            self.stop(failure.close_code, failure.code)
        elif isinstance(failure, NodeDraining):
            # issue 13: this node is draining: 1012, the bridge reconnects elsewhere
            self.stop(failure.close_code, failure.code)
        else:
            self.stop(CloseCode.INTERNAL_ERROR, CloseReason.PIPELINE_STOPPED)

    async def _close_track(self, track: Track) -> None:
        """Finalize the track (its last words are persisted and sent back) and release
        its claim; the session stays live."""
        pipeline, track.pipeline = track.pipeline, None
        watcher, track.watcher = track.watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if pipeline is None:
            return
        with contextlib.suppress(Exception):
            for decoder, reorder in track.streams.values():
                tail = b"".join(decode_run(decoder, reorder.flush())) + decoder.flush()
                if tail and not pipeline.finished.is_set():
                    await pipeline.push(tail)
        track.streams.clear()
        await self.state.pipelines.release(pipeline, track.producer_id)

    # -- results ---------------------------------------------------------------------------

    def _on_event(self, track: Track, event: ProducerEvent) -> None:
        if event["type"] == "session-end":
            self.stop(CloseCode.NORMAL, CloseReason.SESSION_ENDED)
            return
        if event["type"] != "transcript" or not self.options.send_back:
            return
        transcript = event  # (narrowed by its type)
        final = transcript["isFinal"]
        if not final and not self.options.send_back_interim:
            return
        if track.message_id is None:
            track.message_id = uuid.uuid4().hex
        participant: wire.JitsiParticipant = {"id": track.participant["id"]}
        if track.ssrc is not None:
            participant["ssrc"] = track.ssrc
        speaker = transcript.get("speaker")
        name = speaker["name"] if speaker else track.participant["name"]
        if name != participant["id"]:
            participant["name"] = name
        result: wire.JitsiTranscriptionResult = {
            "type": "transcription-result",
            "event": "transcription-result",
            "is_interim": not final,
            "transcript": [{"text": transcript["text"]}],
            "participant": participant,
            "language": transcript["lang"],
            "message_id": track.message_id,
            "timestamp": transcript["ts"],
        }
        if final:
            track.message_id = None
        self.send(cast(dict[str, Any], result))
