"""The producer: streams audio to ``/ws/stt`` and survives a dropped socket (see
:class:`Producer`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

from mcustt import wire
from mcustt.client.audio import BYTES_PER_SECOND, FRAME_BYTES, Pacer, file_chunks, read_wav
from mcustt.client.errors import (
    ClientCode,
    Conflict,
    MCUSTTClientError,
    RateLimited,
    ServerError,
    StreamClosed,
    Unavailable,
)
from mcustt.client.sockets import (
    Event,
    EventCallback,
    SessionAPI,
    backoff,
    call_back,
    open_socket,
)

__all__ = ["Producer"]

# Bad audio, policy (credentials, daily cap), too large: retrying would not help.
_FATAL_CLOSE = {
    wire.CloseCode.UNSUPPORTED_DATA,
    wire.CloseCode.POLICY_VIOLATION,
    wire.CloseCode.MESSAGE_TOO_BIG,
}
# A fresh token fixes these at once (the owner secret mints one).
_TOKEN_SPENT = {wire.ErrorCode.TOKEN_BURNED, wire.ErrorCode.TOKEN_EXPIRED}
# The node went away (killed: 1006 from the kernel; failed; restarting or draining):
# with several nodes, the next connect goes to the next one (issue 13).
_NODE_GONE = {1006, wire.CloseCode.INTERNAL_ERROR, wire.CloseCode.SERVICE_RESTART}
#: how long a connect refused ALREADY_CONNECTED is retried: past the 30 s producer lease
#: of a node that died holding our claim (a server with node heartbeats frees it in ~6 s)
CLAIM_WAIT_S = 45.0


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

    ``failover``: other nodes of the same deployment (issue 13). When the node goes
    away (abnormal close 1006, 1011, 1012, an ``error`` frame ``NODE_DRAINING``, or it
    cannot be reached) the token is minted on, and the socket opened to, the next node
    in turn. Audio sent while no socket is open is kept (up to ``max_buffer_s``, the
    oldest dropped past that and counted in :attr:`frames_dropped`) and sent first on
    the new socket, so a live source is never blocked by a reconnect.
    """

    def __init__(
        self,
        client: SessionAPI,
        session: wire.SessionCreated | None = None,
        *,
        realtime: bool = True,
        on_event: EventCallback | None = None,
        source_lang: str | None = None,
        auto_detect: bool | None = None,
        title: str | None = None,
        max_reconnect_attempts: int = 10,
        failover: Sequence[SessionAPI] = (),
        max_buffer_s: float = 30.0,
    ) -> None:
        self.client = client
        #: the nodes in turn: the socket and its token go to ``self.client``, the current
        self._nodes: list[SessionAPI] = [client, *failover]
        self._node = 0
        self._switch_node = False
        #: times the producer moved to another node
        self.failovers = 0
        #: 20 ms frames dropped because the buffer was full during a long reconnect
        self.frames_dropped = 0
        self._backlog: deque[bytes] = deque(maxlen=max(1, int(max_buffer_s * 50)))
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
        self._pacer = Pacer()
        self._read_token: str | None = None

    # -- lifecycle --

    async def __aenter__(self) -> Producer:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
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
        await self.send_chunks(file_chunks(Path(path)), progress=progress)

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
            await self._pacer.wait()
        if self.realtime and self._reconnecting():
            # Live audio while the reader reconnects (maybe to another node): keep the
            # frame and return, so the source keeps its pace; it goes first on the new
            # socket. (Not realtime: the sender simply waits for the new socket.)
            self._keep(frame)
            self._pacer.sent()
            return
        while True:
            ws = await self._ensure_connected()
            try:
                await self._send_backlog(ws)
                await ws.send(frame)
                self.bytes_sent += len(frame)
                break
            except ConnectionClosed:
                # The reader sees the same close and reconnects; the frame goes on the
                # new socket (at most 20 ms the dead socket took may be sent twice).
                if self.realtime:
                    self._keep(frame)
                    break
                await self._reconnected(ws)
        self._pacer.sent()

    def _reconnecting(self) -> bool:
        ws = self._ws
        return (
            ws is not None
            and ws.state is not State.OPEN
            and self._failure is None
            and not self._closing
            and not self._ended.is_set()
        )

    def _keep(self, frame: bytes) -> None:
        if len(self._backlog) == self._backlog.maxlen:
            self.frames_dropped += 1  # the deque drops the oldest
        self._backlog.append(frame)

    async def _send_backlog(self, ws: ClientConnection) -> None:
        """Send the audio kept while reconnecting, oldest first (as fast as accepted)."""
        while self._backlog:
            frame = self._backlog[0]
            await ws.send(frame)  # ConnectionClosed: the frame stays for the next socket
            self._backlog.popleft()
            self.bytes_sent += len(frame)

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
                    await self._send_backlog(ws)
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
        await call_back(self.on_event, event)

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
                raise Conflict(409, wire.ErrorCode.SESSION_ENDED, "the session has ended")
            if self._closing:
                raise StreamClosed(ClientCode.CLOSED, "the producer is closed")
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

    def _next_node(self) -> None:
        """Move to the next node (no-op with one): its REST mints, its socket ingests."""
        if len(self._nodes) > 1:
            self._node = (self._node + 1) % len(self._nodes)
            self.client = self._nodes[self._node]
            self.failovers += 1

    async def _open_with_retries(self) -> ClientConnection:
        reconnecting = self._ws is not None
        attempt = 0
        claim_deadline: float | None = None
        if self._switch_node:
            self._switch_node = False
            self._next_node()
        while True:
            if self._closing:
                raise StreamClosed(ClientCode.CLOSED, "the producer is closed")
            try:
                ws = await self._open()
                if reconnecting:
                    self.reconnects += 1
                return ws
            except MCUSTTClientError as exc:
                if exc.code == wire.ErrorCode.SESSION_ENDED:
                    self._ended.set()  # ended elsewhere (DELETE, daily cap): nothing to resume
                    raise
                if exc.code == wire.ErrorCode.ALREADY_CONNECTED:
                    # Our own dead socket's claim (released once the server finalized,
                    # or freed when its node is seen dead): poll it, ~1 s apart, for
                    # as long as a dead node's lease could hold it.
                    now = time.monotonic()
                    claim_deadline = claim_deadline or now + CLAIM_WAIT_S
                    if now >= claim_deadline:
                        raise
                    await asyncio.sleep(min(backoff(attempt), 1.0))
                    attempt = min(attempt + 1, 2)
                    continue
                if isinstance(exc, Unavailable | ServerError):
                    self._next_node()  # draining, overloaded or failing: try another
                if attempt >= self.max_reconnect_attempts:
                    raise
                if exc.code in _TOKEN_SPENT and self.owner_secret:
                    delay = 0.0  # the next attempt mints a fresh token
                elif exc.code == wire.ErrorCode.ALREADY_CONNECTED or isinstance(
                    exc, RateLimited | Unavailable | ServerError
                ):
                    # ALREADY_CONNECTED: the server has not yet released our dead
                    # socket's claim (it does once the pipeline has finalized).
                    delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                else:
                    raise
            except (OSError, InvalidHandshake, TimeoutError, httpx.TransportError) as exc:
                # Unreachable or restarting server (the socket, or minting its token).
                self._next_node()
                if attempt >= self.max_reconnect_attempts:
                    raise StreamClosed(
                        ClientCode.CONNECT_FAILED, f"cannot reach the server: {exc}"
                    ) from exc
                delay = backoff(attempt)
            attempt += 1
            await asyncio.sleep(min(delay, 10.0))

    async def _open(self) -> ClientConnection:
        """One connection attempt; returns after the server's ``ready``."""
        headers: dict[str, str] = {}
        if self.session_id is None:
            # Zero-ceremony: the tenant key opens a socket that creates the session.
            headers = self.client.tenant_headers()
            url = f"{self.client.ws_url}/ws/stt"
            if self._query:
                url += "?" + urlencode(self._query)
        else:
            if self._token is None:
                if not self.owner_secret:
                    raise StreamClosed(ClientCode.NO_OWNER_SECRET, "cannot mint an ingest token")
                minted = await self.client.ingest_token(self.session_id, self.owner_secret)
                self._token = minted["ingestToken"]
            url = f"{self.client.ws_url}/ws/stt?{urlencode({'token': self._token})}"
            # Single-use: whatever happens next, this token is spent.
            self._token = None
        ws = await open_socket(url, headers)
        try:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 15))
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise StreamClosed(ClientCode.NO_READY, f"no ready message: {exc!r}") from None
        if ready.get("type") != "ready":
            await ws.close()
            if ready.get("type") == "error":
                raise StreamClosed(str(ready.get("code")), str(ready.get("message")))
            raise StreamClosed(ClientCode.NO_READY, f"expected ready, got {ready!r}")
        self.ready = ready
        self.session_id = ready.get("sessionId") or self.session_id
        self.owner_secret = ready.get("ownerSecret") or self.owner_secret
        return ws

    async def _read(self, ws: ClientConnection) -> None:
        """Read one socket's events; when it closes, decide: done, fatal, or reconnect."""
        fatal: dict[str, Any] | None = None
        draining = False
        try:
            async for raw in ws:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    continue
                if data.get("type") == "error" and data.get("code") == wire.ErrorCode.NODE_DRAINING:
                    draining = True  # go elsewhere: not the stream's failure
                elif data.get("type") == "error" and data.get("fatal"):
                    fatal = data
                await self._emit(Event(data))
        except ConnectionClosed:
            pass
        except Exception as exc:  # a broken callback must not hang the sender
            self._failure = StreamClosed(ClientCode.CLIENT_ERROR, repr(exc))
            await ws.close()
        code = ws.close_code
        if self._failure is not None or self._ended.is_set() or self._closing:
            self._finish()
            return
        if code in _FATAL_CLOSE or (fatal is not None and code != wire.CloseCode.INTERNAL_ERROR):
            reason = (fatal or {}).get("code") or ws.close_reason or ClientCode.CLOSED
            message = (fatal or {}).get("message") or f"socket closed with {code}"
            self._failure = StreamClosed(str(reason), str(message), close_code=code)
            self._finish()
            return
        if draining or code in _NODE_GONE or code is None:
            self._switch_node = True  # the node is going or gone: the next one
        # Idle timeout, a network drop, a restarting server: reconnect now, so events
        # keep coming even when no audio is being sent.
        try:
            await self._ensure_connected()
        except Exception as exc:  # whatever stops the reconnect is the producer's failure
            if not self._ended.is_set() and self._failure is None:
                self._failure = (
                    exc
                    if isinstance(exc, MCUSTTClientError)
                    else StreamClosed(ClientCode.RECONNECT_FAILED, repr(exc))
                )
            self._finish()
