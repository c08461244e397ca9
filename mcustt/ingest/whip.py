"""WebRTC ingest over WHIP (RFC 9725): ``POST /api/webrtc`` (§5b).

A browser or app POSTs an SDP offer carrying an audio track (Opus); the answer comes
back in the 201 with ``Location: /api/webrtc/{resourceId}``. aiortc decodes the track;
each frame is resampled to PCM16 16 kHz mono and pushed into the same
:class:`~mcustt.pipeline.SessionPipeline` ``/ws/stt`` feeds (same seq, persistence,
caps, producer claim). WHIP is ingest-only: transcripts reach the producer through
``/ws/subscribe`` or SSE with the ``X-Subscribe-Token`` of the 201.

A POST, cheapest check first, so that nothing is burned or claimed for a request that
was going to fail anyway:

0. The per-IP rate limits (429), as on ``/ws/stt``
   (:func:`~mcustt.ingest.websocket.count_attempt`): every POST counts, garbage too,
   before its body is read or its token verified.
1. 415 unless ``application/sdp``; 413 over 64 KB; 400 unless the offer parses and
   sends audio in a codec we decode (Opus, PCMU, PCMA).
2. Credentials checked without burning them (token signature, tenant key), then the
   tenant's allowed origins for browsers (403).
3. Negotiation: remote description, answer, ICE gathering (non-trickle: the answer
   carries every candidate). 400 if aiortc refuses the offer.
4. :func:`~mcustt.ingest.websocket.admit`, unchanged: single-use token burn (or the
   zero-ceremony session), origin, caps, the atomic producer claim (401 / 403 / 404 /
   409 / 429, as on ``/ws/stt``).
5. The pipeline opens (the registry renews the claim from here on) and a supervisor
   task owns the peer until it is gone.

Lifetime, decided by the supervisor (first cause wins):

* the peer hangs up (its track ends: RTCP BYE; the connection closes: DTLS
  close_notify), the connection fails after having connected, or ``DELETE`` on the
  resource: the session ENDS, as on the ``stop`` control message of ``/ws/stt``.
  WHIP has no in-band "stop": hanging up is the only way a WHIP client can say it is
  done, and a failed connection cannot be resumed by the same resource either (no
  ICE restart here), so a summary is produced rather than a session left live forever.
* the peer never connects within ``webrtc_connect_timeout_s``, its audio stops for
  ``ingest_idle_timeout_s``, or the consumer crashes: the peer is closed and the claim
  released, the session stays live (resumable with a fresh ingest token), as a dropped
  ``/ws/stt`` socket.
* the pipeline stops on its own (session ended elsewhere, engine failure, daily cap):
  the peer is closed; on the daily cap the session ends, as on ``/ws/stt``.
* server shutdown: peers are closed and claims released; sessions stay live.

Either way the connection is closed first and the frames already decoded are drained
into the pipeline before it is finalized. The last ~80 ms before a hang-up are lost:
aiortc's audio jitter buffer holds 4 packets until later ones push them out, and none
come; in practice that is trailing silence.

``DELETE /api/webrtc/{resourceId}`` needs no other credential: as RFC 9725 allows,
the resource URL is the capability (RFC 9725 clients that send their Bearer token
again are fine too). It is 192 random bits, handed only to the poster in
``Location``, and dies with the peer; the access log drops it from the path
(:func:`mcustt.logs.scrub`), as it drops tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError
from starlette.requests import Request
from starlette.responses import Response

from mcustt import tenants
from mcustt.errors import (
    BadRequest,
    DailyCapReached,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from mcustt.ingest.audio import PcmResampler
from mcustt.ingest.websocket import Admission, admit, count_attempt
from mcustt.pipeline import SessionPipeline
from mcustt.state import AppState
from mcustt.store.models import Tenant
from mcustt.wire import ErrorCode, ProducerEvent

log = structlog.get_logger(__name__)

SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024  # a browser's audio offer is 3-6 KB, with every candidate
DECODABLE = {"opus", "pcmu", "pcma"}  # aiortc's audio decoders
CLOSE_TIMEOUT_S = 5.0  # RTCPeerConnection.close() sends BYE / close_notify: bounded
DRAIN_TIMEOUT_S = 2.0  # frames decoded before the hang-up still reach the pipeline
SHUTDOWN_TIMEOUT_S = 15.0

#: Causes that end the session (see the module docstring); every other one releases.
ENDING = frozenset({"track-ended", "peer-closed", "peer-failed", "deleted"})


# -- gathering on chosen addresses --------------------------------------------------------
#
# aioice gathers host candidates on every interface address *except* 127.0.0.1 (see
# aioice.ice.get_host_addresses), so a server reachable only on loopback (tests, a box
# behind a local TURN/proxy) answers with no usable candidate. aioice has no option for
# this, and aiortc builds its aioice.Connection privately, so the module function is
# wrapped, once, by one that returns the addresses pinned in a ContextVar, and aioice's
# own answer when none are pinned. A ContextVar rather than a patch-and-restore under
# a lock: gathering runs in tasks that asyncio.gather() creates from the caller's
# context, so concurrent offers with different pins (or none) cannot see each other's,
# and no offer waits for another's gathering.

_PINNED: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "mcustt_webrtc_host_addresses", default=None
)
_aioice_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    pinned = _PINNED.get()
    if pinned is None:
        return _aioice_host_addresses(use_ipv4, use_ipv6)
    return [a for a in pinned if (use_ipv6 if ":" in a else use_ipv4)]


def _install_host_address_hook() -> None:
    if aioice.ice.get_host_addresses is not _host_addresses:
        setattr(aioice.ice, "get_host_addresses", _host_addresses)  # noqa: B010


@contextlib.contextmanager
def gather_on(addresses: Sequence[str]) -> Iterator[None]:
    """Within the block, aioice gathers host candidates on exactly ``addresses``
    (an empty sequence: aioice's own choice). Wrap ``setLocalDescription``."""
    if not addresses:
        yield
        return
    _install_host_address_hook()
    token = _PINNED.set(tuple(addresses))
    try:
        yield
    finally:
        _PINNED.reset(token)


# -- offer checks ---------------------------------------------------------------------------


def check_offer(text: str) -> None:
    """400 unless ``text`` is an SDP offer that sends audio we can decode.

    aiortc's parser accepts almost anything (``"garbage"`` parses to no media), so the
    shape is checked here, before a credential is touched.
    """
    if not text.lstrip().startswith("v=0"):
        raise BadRequest("the body is not an SDP offer (it must start with v=0)")
    try:
        description = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError...
        raise BadRequest(f"unparsable SDP offer: {exc!r}") from None
    audio = [
        m
        for m in description.media
        if m.kind == "audio" and m.port != 0 and (m.direction or "sendrecv") in SENDING
    ]
    if not audio:
        raise BadRequest("the offer sends no audio: add an audio track (WHIP ingest is audio)")
    if not any(c.name.lower() in DECODABLE for m in audio for c in m.rtp.codecs):
        raise BadRequest("the offer's audio has no Opus, PCMU or PCMA codec")


SENDING = ("sendrecv", "sendonly")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _read_offer(request: Request) -> str:
    if _media_type(request) != SDP:
        raise UnsupportedMediaType(f"send the SDP offer with Content-Type: {SDP}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise PayloadTooLarge(f"an SDP offer is at most {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the SDP offer is not UTF-8 text") from None


def _ingest_token(request: Request) -> str | None:
    """``?token=`` (the contract) or ``Authorization: Bearer`` (RFC 9725 clients: OBS,
    GStreamer's whipsink)."""
    token = request.query_params.get("token")
    if token:
        return token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


# -- peers ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Peer:
    """One WHIP resource: a peer connection feeding one session's pipeline."""

    id: str
    pc: Any  # RTCPeerConnection
    track: Any  # the remote audio MediaStreamTrack
    admission: Admission
    pipeline: SessionPipeline
    done: asyncio.Future[str]
    log: Any
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    last_frame: float = field(default_factory=time.monotonic)
    frames: int = 0
    task: asyncio.Task[None] | None = None

    def finish(self, cause: str) -> None:
        """Ask the supervisor to wind down; the first cause wins."""
        if not self.done.done():
            self.done.set_result(cause)

    def on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and not self.connected.is_set():
            self.last_frame = time.monotonic()  # the idle clock starts on connect
            self.connected.set()
            self.log.info("webrtc producer connected")
        elif state in ("failed", "closed"):
            self.finish(f"peer-{state}")


class WhipManager:
    """Every WHIP peer connection of this node, and the tasks that own them."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.peers: dict[str, Peer] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # Built once: a bad MCUSTT_ICE_SERVERS fails at startup, not on the first call.
        # An empty list stays empty (aiortc's default would be a public STUN server).
        self._ice_servers = [RTCIceServer(**s) for s in state.settings.ice_servers]
        self._addresses = tuple(state.settings.webrtc_host_addresses)
        self._closing = False

    # -- POST ---------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        if self._closing:
            raise Unavailable("the server is shutting down", retry_after=5)
        state = self.state
        token, tenant_key = _ingest_token(request), request.headers.get("x-tenant-key")
        await count_attempt(
            state, token=token, tenant_key=tenant_key, client_ip=state.client_ip(request)
        )
        offer = await _read_offer(request)
        check_offer(offer)
        started = time.perf_counter()
        await self._precheck(request, token, tenant_key)
        checked = time.perf_counter()
        pc, track, answer = await self._negotiate(offer)
        negotiated = time.perf_counter()
        try:
            admission = await admit(
                state,
                token=token,
                tenant_key=tenant_key,
                origin=request.headers.get("origin"),
                query=dict(request.query_params),
            )
        except BaseException:
            await _close_pc(pc)
            raise
        session = admission.session
        structlog.contextvars.bind_contextvars(session_id=session.id, tenant_id=session.tenant_id)
        try:
            # Ingest-only: the producer's copy of each event is dropped; viewers get
            # them from the hub (/ws/subscribe, SSE) like everyone else.
            pipeline = await state.pipelines.open(
                session,
                admission.tenant,
                admission.producer_id,
                _drop,
                participant=admission.participant,
            )
        except BaseException:
            await _close_pc(pc)
            await state.sessions.release_producer(
                session.id,
                admission.producer_id,
                admission.participant["id"] if admission.participant else None,
            )
            raise
        peer = Peer(
            id=secrets.token_urlsafe(24),
            pc=pc,
            track=track,
            admission=admission,
            pipeline=pipeline,
            done=asyncio.get_running_loop().create_future(),
            log=log.bind(
                session_id=session.id,
                tenant_id=session.tenant_id,
                producer_id=admission.producer_id,
            ),
        )
        pc.on("connectionstatechange", peer.on_state)
        peer.on_state()  # a state reached while admit() ran
        self.peers[peer.id] = peer
        peer.task = asyncio.create_task(self._supervise(peer), name=f"whip-{session.id}")
        self.tasks.add(peer.task)
        peer.task.add_done_callback(self.tasks.discard)
        if self._closing:
            peer.finish("shutdown")  # aclose() began while this offer was being answered
        peer.log.info(
            "webrtc offer answered",
            candidates=answer.count("a=candidate:"),
            # where an answer's time goes: credentials, aiortc (gathering), admit + open
            precheck_ms=round((checked - started) * 1000, 1),
            negotiate_ms=round((negotiated - checked) * 1000, 1),
            admit_ms=round((time.perf_counter() - negotiated) * 1000, 1),
        )
        return Response(
            answer,
            status_code=201,
            media_type=SDP,
            headers={
                "Location": f"/api/webrtc/{peer.id}",
                "X-Session-Id": session.id,
                "X-Subscribe-Token": state.sessions.read_tokens(session)["subscribeToken"],
            },
        )

    async def _precheck(self, request: Request, token: str | None, tenant_key: str | None) -> None:
        """Refuse bad credentials and foreign browser origins before anything is
        negotiated, burned or claimed. admit() checks everything again, atomically."""
        tenant: Tenant | None
        if token:
            claims = self.state.issuer.verify(token, scopes={"ingest"})
            tenant = await tenants.find(self.state.db, claims.tenant_id)
        elif tenant_key:
            tenant = await tenants.authenticate(self.state.db, tenant_key)
        else:
            raise Unauthorized(
                "send ?token=INGEST_TOKEN or an x-tenant-key header", code=ErrorCode.UNAUTHORIZED
            )
        if tenant is not None:
            tenants.check_origin(
                tenant, request.headers.get("origin"), own=self.state.settings.public_url
            )

    async def _negotiate(self, offer: str) -> tuple[Any, Any, str]:
        """Apply the offer, answer it with every candidate gathered.

        Returns (peer connection, remote audio track, answer SDP).
        """
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except Exception as exc:  # aiortc: ValueError, OperationError...
                raise BadRequest(f"cannot accept this offer: {exc}") from None
            track = None
            for transceiver in pc.getTransceivers():
                if track is None and transceiver.kind == "audio" and transceiver.receiver.track:
                    track = transceiver.receiver.track
                else:
                    # One audio track is transcribed. Anything else (video, a second
                    # audio) is answered inactive, so it is neither sent nor decoded.
                    transceiver.direction = "inactive"
            if track is None:
                raise BadRequest("the offer sends no audio track")
            with gather_on(self._addresses):
                # aiortc gathers inside setLocalDescription; after it the description
                # holds every candidate (WHIP without trickle ICE).
                await pc.setLocalDescription(await pc.createAnswer())
            answer: str = pc.localDescription.sdp
            if "a=candidate:" not in answer:
                # e.g. MCUSTT_WEBRTC_HOST_ADDRESSES names an address this host lacks
                # (aioice logs the bind error): refuse before the token is burned.
                log.error("webrtc answer has no ICE candidate", pinned=self._addresses)
                raise Unavailable(
                    "the server has no network address to receive WebRTC on", retry_after=30
                )
        except BaseException:
            await _close_pc(pc)
            raise
        return pc, track, answer

    # -- DELETE -------------------------------------------------------------------------

    async def hang_up(self, resource_id: str) -> None:
        peer = self.peers.get(resource_id)
        if peer is None:
            raise NotFound("no such WebRTC resource (it ended, or never existed)")
        peer.finish("deleted")
        if peer.task is not None:
            # 204 once the last final is persisted and the session has ended.
            await asyncio.shield(peer.task)

    # -- the peer's life ------------------------------------------------------------------

    async def _supervise(self, peer: Peer) -> None:
        # Named by the producer id: the resource id is a capability, kept out of dumps.
        name = peer.admission.producer_id
        consumer = asyncio.create_task(self._consume(peer), name=f"whip-audio-{name}")
        watchdog = asyncio.create_task(self._watch(peer), name=f"whip-watch-{name}")
        cause = "cancelled"
        try:
            cause = await asyncio.shield(peer.done)
        finally:
            await self._wind_down(peer, cause, consumer, watchdog)

    async def _wind_down(
        self, peer: Peer, cause: str, consumer: asyncio.Task[None], watchdog: asyncio.Task[None]
    ) -> None:
        state, admission = self.state, peer.admission
        ever_connected = peer.connected.is_set()
        try:
            watchdog.cancel()
            # Closing the connection stops the receiver; its track then ends after the
            # frames already decoded, which the consumer still pushes.
            await _close_pc(peer.pc)
            if ever_connected and not consumer.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(consumer), DRAIN_TIMEOUT_S)
            for task in (consumer, watchdog):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            failure = peer.pipeline.failure
            if cause in ENDING and not ever_connected:
                cause = "never-connected"  # nothing was ingested: keep the session
            if cause in ENDING and admission.participant is not None:
                # One participant hanging up does not end everyone's session: only
                # its track is finalized (by release() below).
                cause = "participant-left"
            if cause in ENDING:
                # As `stop` on /ws/stt: end_session() finalizes the pipeline (the last
                # final is persisted and published), marks the session ended,
                # publishes session-end and queues the summary; release() then frees
                # the claim.
                await state.pipelines.end_session(admission.session, reason="whip-ended")
            elif isinstance(failure, DailyCapReached):
                await state.pipelines.end_session(admission.session, reason="daily-cap")
            await state.pipelines.release(peer.pipeline, admission.producer_id)
            peer.log.info(
                "webrtc producer gone",
                cause=cause,
                session_ended=cause in ENDING or isinstance(failure, DailyCapReached),
                frames=peer.frames,
                audio_ms=peer.pipeline.audio_ms,
            )
        except Exception:
            peer.log.exception("webrtc cleanup failed", cause=cause)
            # Whatever went wrong, never keep the claim: the producer could not resume.
            with contextlib.suppress(Exception):
                await state.pipelines.release(peer.pipeline, admission.producer_id)
        finally:
            self.peers.pop(peer.id, None)

    async def _consume(self, peer: Peer) -> None:
        """Decoded frames → PCM16 16 kHz mono → the pipeline, until the track ends."""
        resampler = PcmResampler()
        pipeline = peer.pipeline
        try:
            while True:
                try:
                    frame = await peer.track.recv()
                except MediaStreamError:
                    tail = resampler.flush()
                    if tail:
                        await pipeline.push(tail)
                    peer.finish("track-ended")
                    return
                peer.frames += 1
                peer.last_frame = time.monotonic()
                pcm = resampler.convert(frame)
                if pcm:
                    await pipeline.push(pcm)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Loudly: a consumer that dies quietly looks like a producer gone silent.
            peer.log.exception("webrtc audio consumer crashed", frames=peer.frames)
            peer.finish("consumer-crashed")

    async def _watch(self, peer: Peer) -> None:
        """Connect timeout, idle timeout, and the pipeline stopping on its own."""
        settings = self.state.settings
        pipeline = peer.pipeline
        # The pipeline may stop before the peer has connected (the session ended
        # elsewhere; on a loaded machine the server's side of a connection can lag the
        # client's by seconds): the peer is hung up then, not at the connect timeout.
        try:
            async with asyncio.timeout(settings.webrtc_connect_timeout_s):
                await _first_set(peer.connected, pipeline.finished)
        except TimeoutError:
            peer.finish("connect-timeout")
            return
        while not pipeline.finished.is_set():
            remaining = peer.last_frame + settings.ingest_idle_timeout_s - time.monotonic()
            if remaining <= 0:
                peer.finish("idle")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pipeline.finished.wait(), remaining)
        peer.finish("pipeline-failed" if pipeline.failure is not None else "session-ended")

    # -- shutdown ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Hang up every peer; their pipelines are finalized and claims released (the
        sessions stay live: a restart is not the producer's decision)."""
        self._closing = True
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        # A loop, not one pass: a POST that was past its _closing check registers its
        # peer late, and hangs it up itself on seeing _closing.
        while self.tasks:
            for peer in list(self.peers.values()):
                peer.finish("shutdown")
            _, pending = await asyncio.wait(
                list(self.tasks), timeout=max(0.0, deadline - time.monotonic())
            )
            if pending:
                log.warning("webrtc peers did not wind down in time", peers=len(pending))
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                return


async def _first_set(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set. The waiters are owned here and gone when
    this returns (or is cancelled)."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _drop(event: ProducerEvent) -> None:
    """A WHIP producer has no channel for events: it reads them on /ws/subscribe or SSE."""


async def _close_pc(pc: Any) -> None:
    try:
        await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("webrtc close failed", error=repr(exc))


# -- Starlette handlers ---------------------------------------------------------------------


def _manager(request: Request) -> WhipManager:
    # Set by the app's lifespan next to the services (mcustt.app), for as long as it serves.
    whip = getattr(request.app.state, "whip", None)
    if not isinstance(whip, WhipManager):
        raise Unavailable("WebRTC ingest is not running on this node", retry_after=5)
    return whip


async def whip_post(request: Request) -> Response:
    return await _manager(request).publish(request)


async def whip_delete(request: Request) -> Response:
    await _manager(request).hang_up(request.path_params["resource_id"])
    return Response(status_code=204)


async def whip_patch(request: Request) -> Response:
    raise MethodNotAllowed(
        "trickle ICE and ICE restarts are not supported: the answer carries every "
        "candidate; to reconnect, DELETE this resource and POST a new offer",
        headers={"Allow": "DELETE"},
    )
